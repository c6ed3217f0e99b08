"""Assignment, loss and post-processing workloads from the seeds."""

import pytest
import torch

from bench import workloads as W


def _same_gt_inds(a, b):
    a_inds = getattr(a, "gt_inds", a)
    b_inds = getattr(b, "gt_inds", b)
    assert torch.equal(a_inds.cpu(), b_inds.cpu()), "assignment differs from the reference"


@pytest.mark.parametrize("num_gts", [10, 100, 500])
def test_max_iou_assign_retinanet(bench_case, bench_device, num_gts):
    anchors = W.retinanet_anchors(bench_device)
    gts = W.random_gts(num_gts, bench_device)
    labels = torch.arange(num_gts, device=bench_device) % 80

    def make(m):
        assigner = m.MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0,
                                    ignore_iof_thr=-1)
        return lambda: assigner.assign(anchors, gts, gt_labels=labels)
    # output: gt_inds int64, max_overlaps float32, labels int64 per anchor
    bench_case(f"MaxIoU assign {num_gts} x 182403", make, check=_same_gt_inds,
               output_bytes=anchors.shape[0] * 20, rounds=3)


@pytest.mark.parametrize("num_gts", [10, 100, 500])
def test_detectron2_matcher(bench_case, bench_device, num_gts):
    anchors = W.retinanet_anchors(bench_device)
    gts = W.random_gts(num_gts, bench_device)

    def make(m):
        matcher = m.Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)
        pairwise_iou = m.pairwise_iou
        return lambda: matcher(pairwise_iou(gts, anchors))
    bench_case(f"detectron2 Matcher {num_gts} x 182403", make, rounds=3)


@pytest.mark.parametrize("num_gts", [10, 100, 500])
def test_torchvision_matcher(bench_case, bench_device, num_gts):
    anchors = W.retinanet_anchors(bench_device)
    gts = W.random_gts(num_gts, bench_device)

    def make(m):
        matcher = m.TorchvisionMatcher(0.5, 0.4, allow_low_quality_matches=True)
        box_iou = m.box_iou
        return lambda: matcher(box_iou(gts, anchors))
    bench_case(f"torchvision Matcher {num_gts} x 182403", make, check=_same_gt_inds, rounds=3)


@pytest.mark.parametrize("num_gts", [10, 50, 300])
def test_dynamic_soft_label_assign(bench_case, bench_device, num_gts):
    points = W.rtmdet_points(bench_device)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(points.shape[0], 80, generator=g).to(bench_device)
    gts = W.random_gts(num_gts, bench_device, height=640, width=640)
    labels = (torch.arange(num_gts) % 80).to(bench_device)
    ctr = points[:, :2]
    decoded = torch.cat([ctr - 20, ctr + 20], 1)

    def make(m):
        assigner = m.DynamicSoftLabelAssigner(soft_center_radius=3.0, topk=13, iou_weight=3.0)
        return lambda: assigner.assign(logits, decoded, points, gts, labels)
    bench_case(f"DSL assign {num_gts} x 8400 x 80", make, check=_same_gt_inds,
               rounds=3)


def test_sigmoid_focal_loss(bench_case, bench_device):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(182403, 80, generator=g).to(bench_device)
    labels = torch.full((182403,), 80, dtype=torch.long)
    labels[::97] = torch.arange(len(labels[::97])) % 80
    labels = labels.to(bench_device)

    def make(m):
        sigmoid_focal_loss = m.sigmoid_focal_loss  # looked up here, not inside the timed call
        return lambda: sigmoid_focal_loss(logits, labels, reduction="sum")
    bench_case("focal loss 182403 x 80", make, rounds=3)


def test_quality_focal_loss(bench_case, bench_device):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8400, 80, generator=g).to(bench_device)
    labels = torch.full((8400,), 80, dtype=torch.long)
    labels[::50] = torch.arange(len(labels[::50])) % 80
    scores = torch.rand(8400, generator=g)

    target = (labels.to(bench_device), scores.to(bench_device))

    def make(m):
        qfl = m.quality_focal_loss
        return lambda: qfl(logits, target, reduction="sum")
    bench_case("QFL 8400 x 80", make, rounds=5)


def test_giou_loss(bench_case, bench_device):
    anchors = W.retinanet_anchors(bench_device)

    def make(m):
        giou_loss = m.giou_loss  # looked up here, not inside the timed call
        shifted = anchors + 2.0
        return lambda: giou_loss(anchors, shifted, reduction="sum")
    bench_case("GIoU loss 182403", make, rounds=5)


@pytest.mark.parametrize("num", [1000, 5000, 30000])
def test_nms(bench_case, bench_device, num):
    boxes, scores = W.random_boxes_scores(num, bench_device)

    def make(m):
        nms = m.nms  # looked up here, not inside the timed call
        return lambda: nms(boxes, scores, 0.5)

    def same(a, b):
        assert set(a.tolist()) == set(b.tolist())
    bench_case(f"NMS {num}", make, check=same)


@pytest.mark.parametrize("num", [1000, 5000, 30000])
def test_batched_nms(bench_case, bench_device, num):
    boxes, scores = W.random_boxes_scores(num, bench_device)
    idxs = (torch.arange(num) % 80).to(bench_device)

    def make(m):
        batched_nms = m.batched_nms  # looked up here, not inside the timed call
        return lambda: batched_nms(boxes, scores, idxs, 0.5)

    def same(a, b):
        assert set(a.tolist()) == set(b.tolist())
    bench_case(f"batched NMS {num}", make, check=same)


@pytest.mark.parametrize("flavour", ["mmdet", "torchvision"])
def test_roi_align_fpn(bench_case, bench_device, flavour):
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(2, 256, 200 // 2 ** i, 304 // 2 ** i, generator=g).to(bench_device)
             for i in range(4)]
    boxes = W.random_gts(512, bench_device)
    rois = torch.cat([torch.arange(512, device=bench_device)[:, None].float() % 2, boxes], 1)

    # mmdet: aligned, adaptive sampling; torchvision's MultiScaleRoIAlign: legacy
    # alignment, 2x2 samples per bin, its own level mapping.
    aligned, ratio = (True, 0) if flavour == "mmdet" else (False, 2)

    def make(m):
        pooler = m.MultiLevelRoIPooler(7, scales=[1 / 4, 1 / 8, 1 / 16, 1 / 32],
                                       sampling_ratio=ratio, aligned=aligned, mapping=flavour)
        return lambda: pooler(feats, rois)

    def same(a, b):
        assert torch.allclose(a, b, atol=1e-4), "RoI features differ from the reference"
    bench_case(f"RoIAlign 512 RoIs, 4-level FPN ({flavour})", make, check=same,
               output_bytes=512 * 256 * 7 * 7 * 4, rounds=5)
