"""Golden cases of the assignment stage: RetinaNet, RPN and RTMDet training targets.

Inputs (anchors, points, gts, scores) are built here with plain torch from fixed
formulas or seeded generators; only the stage under test comes from the
implementation (plus its box coder for RetinaNet/RPN regression targets).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torchvision

from oracles import assignment as assign_oracle
from golden.case import GoldenCase, exact_sha256, sampled_rows

# --------------------------------------------------------------------------- inputs
RETINA_STRIDES = (8, 16, 32, 64, 128)
BATCH_HW = (1216, 800)  # padded batch (H, W), as in the seed's batch_input_shape


def _grid_anchors(base: torch.Tensor, stride: int, feat_hw) -> torch.Tensor:
    """mmdet grid: locations row-major, the base anchors innermost; centre offset 0."""
    h, w = feat_hw
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32) * stride,
                            torch.arange(w, dtype=torch.float32) * stride, indexing="ij")
    shifts = torch.stack([xs, ys, xs, ys], dim=-1).reshape(-1, 1, 4)
    return (shifts + base[None]).reshape(-1, 4)


def _base_anchors(size: float, scales, ratios) -> torch.Tensor:
    """mmdet base anchors: ratio outer, scale inner; h/w = ratio."""
    rows = []
    for r in ratios:
        for s in scales:
            w = size * s / math.sqrt(r)
            h = size * s * math.sqrt(r)
            rows.append([-0.5 * w, -0.5 * h, 0.5 * w, 0.5 * h])
    return torch.tensor(rows, dtype=torch.float32)


def _valid_flags(feat_hw, pad_hw, stride, per_location) -> torch.Tensor:
    h, w = feat_hw
    vh, vw = min(math.ceil(pad_hw[0] / stride), h), min(math.ceil(pad_hw[1] / stride), w)
    flags = torch.zeros(h, w, dtype=torch.bool)
    flags[:vh, :vw] = True
    return flags.reshape(-1, 1).expand(-1, per_location).reshape(-1)


def _anchor_levels(strides, scales, ratios, size_of_stride, pad_hw):
    anchors, flags = [], []
    for s in strides:
        feat = (math.ceil(BATCH_HW[0] / s), math.ceil(BATCH_HW[1] / s))
        base = _base_anchors(size_of_stride(s), scales, ratios)
        anchors.append(_grid_anchors(base, s, feat))
        flags.append(_valid_flags(feat, pad_hw, s, len(base)))
    return anchors, flags


SEED_LABELS = [74, 13, 13, 13, 13, 13, 13, 0, 0, 0, 0, 13, 0, 0, 0, 13, 13]


def _deterministic_gts(count: int, hw, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    h, w = hw
    xy = torch.rand(count, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8])
    wh = 8 + torch.rand(count, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3])
    return torch.round(torch.cat([xy, xy + wh], dim=1) * 8) / 8  # (count, 4), 1/8 px grid


def _retinanet_inputs(device):
    scales = [4 * 2 ** (i / 3) for i in range(3)]
    ratios = [0.5, 1.0, 2.0]
    img_shapes = [(800, 800), (1216, 800)]
    anchor_list, flag_list = [], []
    for hw in img_shapes:
        a, f = _anchor_levels(RETINA_STRIDES, scales, ratios, lambda s: s, hw)
        anchor_list.append([t.to(device) for t in a])
        flag_list.append([t.to(device) for t in f])
    gts0 = _deterministic_gts(17, (800, 800), seed=17)
    seed_box = torch.tensor([[400.4000, 884.4429, 524.7333, 961.1837]])
    gts1 = torch.cat([seed_box, _deterministic_gts(3, (1216, 800), seed=3)])
    gt_bboxes = [gts0.to(device), gts1.to(device)]
    gt_labels = [torch.tensor(SEED_LABELS, device=device),
                 torch.tensor([13, 0, 74, 5], device=device)]
    return anchor_list, flag_list, gt_bboxes, gt_labels, img_shapes


def _level_summary(prefix: str, levels) -> dict:
    out = {f"{prefix}_shapes": np.array([list(t.shape) for t in levels], dtype=np.int64)}
    return out


def _targets_summary(t) -> dict:
    out = {}
    out.update(_level_summary("labels", t.labels))
    out.update(_level_summary("bbox_targets", t.bbox_targets))
    for i, lab in enumerate(t.labels):
        out[f"labels_sha_level{i}"] = exact_sha256(lab)
    out["label_weight_sums"] = np.array([float(w.sum()) for w in t.label_weights])
    out["bbox_weight_sums"] = np.array([float(w.sum()) for w in t.bbox_weights])
    out["bbox_target_abs_sums"] = np.array([float(b.abs().sum()) for b in t.bbox_targets])
    flat_targets = torch.cat([b.reshape(-1, 4) for b in t.bbox_targets])
    flat_weights = torch.cat([w.reshape(-1, 4) for w in t.bbox_weights])
    out["positive_bbox_target_rows"] = sampled_rows(flat_targets[flat_weights[:, 0] > 0], 64)
    out["num_total"] = np.array([t.num_total_pos, t.num_total_neg], dtype=np.int64)
    out["gt_inds_sha"] = np.stack([exact_sha256(im.assign_result.gt_inds) for im in t.images])
    return out


# --------------------------------------------------------------------------- RetinaNet
def run_retinanet(impl, device):
    anchor_list, flag_list, gt_bboxes, gt_labels, img_shapes = _retinanet_inputs(device)
    assigner = impl.MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0)
    targets = impl.anchor_targets(anchor_list, flag_list, gt_bboxes, img_shapes,
                                  gt_labels_list=gt_labels, assigner=assigner, num_classes=80,
                                  box_coder=impl.DeltaXYWHBBoxCoder(), allowed_border=-1)
    return _targets_summary(targets)


def check_retinanet(out) -> None:
    # Shapes from the seed (16 -> 2 images) and upstream-semantics.md.
    assert out["labels_shapes"].tolist() == [[2, 136800], [2, 34200], [2, 8550], [2, 2223],
                                              [2, 630]]
    assert out["bbox_targets_shapes"][:, 1].sum() == 182403
    # Positive set and negative set agree with torchvision's Matcher (0.5, 0.4, low quality),
    # whose positive/negative sets equal mmdet's with min_pos_iou = 0.
    anchor_list, flag_list, gt_bboxes, _, _ = _retinanet_inputs("cpu")
    num_pos = num_neg = 0
    for anchors, flags, gts in zip(anchor_list, flag_list, gt_bboxes):
        valid = torch.cat(flags)
        quality = torchvision.ops.box_iou(gts.double(), torch.cat(anchors)[valid].double())
        matcher = torchvision.models.detection._utils.Matcher(0.5, 0.4,
                                                              allow_low_quality_matches=True)
        matches = matcher(quality)
        num_pos += max(int((matches >= 0).sum()), 1)
        num_neg += max(int((matches == -1).sum()), 1)
    assert out["num_total"].tolist() == [num_pos, num_neg], (out["num_total"], num_pos, num_neg)
    assert out["bbox_weight_sums"].sum() == 4 * (num_pos)  # both images have positives
    assert out["label_weight_sums"].sum() == num_pos + num_neg


# --------------------------------------------------------------------------- RPN
RPN_HW = (256, 320)


def _rpn_inputs(device):
    strides = (4, 8, 16, 32, 64)
    anchors, flags = [], []
    for s in strides:
        feat = (math.ceil(RPN_HW[0] / s), math.ceil(RPN_HW[1] / s))
        base = _base_anchors(s, [8.0], [0.5, 1.0, 2.0])
        anchors.append(_grid_anchors(base, s, feat).to(device))
        flags.append(_valid_flags(feat, RPN_HW, s, 3).to(device))
    gts = _deterministic_gts(6, RPN_HW, seed=6).to(device)
    return anchors, flags, gts


def run_rpn(impl, device):
    anchors, flags, gts = _rpn_inputs(device)
    targets = impl.anchor_targets(
        [anchors], [flags], [gts], [RPN_HW], gt_labels_list=None,
        assigner=impl.MaxIoUAssigner(pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3),
        sampler=impl.RandomSampler(256, 0.5, neg_pos_ub=-1, add_gt_as_proposals=False),
        num_classes=1, box_coder=impl.DeltaXYWHBBoxCoder(), allowed_border=-1,
        generator=torch.Generator().manual_seed(0))
    out = _targets_summary(targets)
    image = targets.images[0]
    out["pos_inds"] = image.pos_inds.cpu().numpy().astype(np.int64)
    out["neg_inds_sha"] = exact_sha256(image.neg_inds)
    return out


def check_rpn(out) -> None:
    anchors, flags, gts = _rpn_inputs("cpu")
    flat = torch.cat(anchors).double()
    overlaps = torchvision.ops.box_iou(gts.double(), flat)  # (G, N)
    best = overlaps.max(dim=0).values
    gt_max = overlaps.max(dim=1).values
    at_max = ((overlaps == gt_max[:, None]) & (gt_max[:, None] >= 0.3)).any(dim=0)
    positives = (best >= 0.7) | at_max
    negatives = (best < 0.3) & ~positives
    num_pos = min(int(positives.sum()), 128)
    num_neg = min(int(negatives.sum()), 256 - num_pos)
    pos_inds = out["pos_inds"]
    assert len(pos_inds) == num_pos and positives[torch.from_numpy(pos_inds)].all()
    assert out["num_total"].tolist() == [max(num_pos, 1), max(num_neg, 1)]
    labels = out["labels_shapes"]
    assert labels[:, 0].tolist() == [1] * 5 and labels[:, 1].sum() == flat.shape[0]


# --------------------------------------------------------------------------- RTMDet
RTM_HW = (640, 640)
RTM_STRIDES = (8, 16, 32)


def _rtmdet_inputs(device):
    priors, flags = [], []
    for s in RTM_STRIDES:
        h, w = RTM_HW[0] // s, RTM_HW[1] // s
        ys, xs = torch.meshgrid(torch.arange(h) * float(s), torch.arange(w) * float(s),
                                indexing="ij")
        stride = torch.full_like(xs, float(s))
        priors.append(torch.stack([xs, ys, stride, stride], -1).reshape(-1, 4).to(device))
        flags.append(torch.ones(h * w, dtype=torch.bool, device=device))
    g = torch.Generator().manual_seed(640)
    n = sum(p.shape[0] for p in priors)  # 8400
    scores = (torch.randn(1, n, 80, generator=g) * 2 - 4).to(device)
    flat = torch.cat(priors).cpu()
    extent = flat[:, 2:3] * (1 + 3 * torch.rand(n, 4, generator=g))
    decoded = torch.cat([flat[:, :2] - extent[:, :2], flat[:, :2] + extent[:, 2:]], 1)
    gts = _deterministic_gts(10, RTM_HW, seed=10).to(device)
    labels = torch.randint(0, 80, (10,), generator=g).to(device)
    return scores, decoded[None].to(device), priors, flags, gts, labels


def run_rtmdet(impl, device):
    scores, decoded, priors, flags, gts, labels = _rtmdet_inputs(device)
    targets = impl.rtmdet_targets(scores, decoded, [priors], [flags], [gts], [labels], [RTM_HW],
                                  num_classes=80)
    out = _targets_summary(targets)
    out["assign_metric_sums"] = np.array([float(m.sum()) for m in targets.assign_metrics])
    metrics = torch.cat([m.reshape(-1) for m in targets.assign_metrics])
    out["positive_assign_metrics"] = sampled_rows(metrics[metrics > 0], 64)
    return out


def check_rtmdet(out) -> None:
    # The full upstream (P, G, C) cost on the candidates, in float64 NumPy, then the
    # loop-based dynamic-k oracle: the positives and their metrics must agree.
    scores, decoded, priors, _, gts, labels = _rtmdet_inputs("cpu")
    flat = torch.cat(priors).double().numpy()
    x, y = flat[:, 0:1], flat[:, 1:2]
    g = gts.double().numpy()
    inside = ((x > g[:, 0]) & (y > g[:, 1]) & (x < g[:, 2]) & (y < g[:, 3])).any(axis=1)
    cand = np.nonzero(inside)[0]
    logits = scores[0].double().numpy()[cand]  # (V, C)
    boxes = decoded[0].double().numpy()[cand]
    ious = torchvision.ops.box_iou(torch.from_numpy(boxes), torch.from_numpy(g)).numpy()
    onehot = np.eye(80)[labels.numpy()]  # (G, C)
    soft = onehot[None] * ious[..., None]  # (V, G, C)
    sig = 1 / (1 + np.exp(-logits))[:, None, :]
    bce = np.maximum(logits[:, None], 0) - logits[:, None] * soft + np.log1p(
        np.exp(-np.abs(logits[:, None])))
    cls_cost = (bce * np.abs(soft - sig) ** 2).sum(-1)
    centre = (g[:, :2] + g[:, 2:]) / 2
    dist = np.sqrt(((flat[cand, None, :2] - centre[None]) ** 2).sum(-1)) / flat[cand, 2:3]
    cost = cls_cost - 3 * np.log(ious + 1e-7) + 10 ** (dist - 3)
    matched_gt, matched_iou = assign_oracle.dynamic_k_matching(cost, ious, 13)
    num_pos = int((matched_gt >= 0).sum())
    assert out["num_total"][0] == max(num_pos, 1), (out["num_total"], num_pos)
    assert abs(out["assign_metric_sums"].sum() - matched_iou.sum()) < 1e-3
    assert out["labels_shapes"].tolist() == [[1, 6400], [1, 1600], [1, 400]]


CASES = [
    GoldenCase(
        name="assignment_retinanet_batch_targets",
        component="targets",
        clause="TGT-3",
        producer="anchor_targets + MaxIoUAssigner(0.5, 0.4, 0) + DeltaXYWHBBoxCoder",
        flavour="mmdet",
        inputs={"batch_hw": list(BATCH_HW), "img_shapes": [[800, 800], [1216, 800]],
                "num_gts": [17, 4], "strides": list(RETINA_STRIDES), "num_classes": 80},
        run=run_retinanet,
        cross_checked="level shapes [2,136800]..[2,630] from the seed and upstream-semantics.md; "
                      "positive and negative counts against torchvision's Matcher(0.5, 0.4, "
                      "allow_low_quality_matches=True) on torchvision.ops.box_iou",
        cross_check=check_retinanet,
        exact=("labels_shapes", "bbox_targets_shapes", "labels_sha_level0", "labels_sha_level1",
               "labels_sha_level2", "labels_sha_level3", "labels_sha_level4", "num_total",
               "gt_inds_sha"),
        rtol=1e-5, atol=1e-3,
    ),
    GoldenCase(
        name="assignment_rpn_sampled_targets",
        component="targets",
        clause="TGT-5",
        producer="anchor_targets + MaxIoUAssigner(0.7, 0.3, 0.3) + RandomSampler(256, 0.5), "
                 "generator seed 0",
        flavour="mmdet",
        inputs={"img_hw": list(RPN_HW), "num_gts": 6, "strides": [4, 8, 16, 32, 64],
                "seed": 0},
        run=run_rpn,
        cross_checked="sampled positives are a subset of the positive set recomputed with "
                      "torchvision.ops.box_iou; counts follow min(#pos, 128), min(#neg, 256-pos)",
        cross_check=check_rpn,
        exact=("labels_shapes", "bbox_targets_shapes", "labels_sha_level0", "labels_sha_level1",
               "labels_sha_level2", "labels_sha_level3", "labels_sha_level4", "num_total",
               "gt_inds_sha", "pos_inds", "neg_inds_sha"),
        rtol=1e-5, atol=1e-3,
    ),
    GoldenCase(
        name="assignment_rtmdet_640_targets",
        component="targets",
        clause="TGT-8",
        producer="rtmdet_targets + DynamicSoftLabelAssigner(3.0, 13, 3.0)",
        flavour="mmdet",
        inputs={"img_hw": list(RTM_HW), "strides": list(RTM_STRIDES), "num_gts": 10,
                "num_classes": 80, "seed": 640},
        run=run_rtmdet,
        cross_checked="number of positives and sum of assign metrics against the upstream "
                      "(P, G, C) cost in float64 NumPy plus the loop-based dynamic-k oracle",
        cross_check=check_rtmdet,
        exact=("labels_shapes", "bbox_targets_shapes", "labels_sha_level0", "labels_sha_level1",
               "labels_sha_level2", "num_total", "gt_inds_sha"),
        rtol=1e-4, atol=1e-3,
    ),
]
