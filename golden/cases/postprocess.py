"""Golden cases for NMS, RPN proposal selection and RoI pooling.

* RoIAlign on the 5x5 ramp arange(25) with RoI [1, 1, 3, 3] and a 4x4 output,
  aligned and legacy (the numbers of detectron2's tests/layers/test_roi_align.py).
* RoI-to-level mapping at s = 112, 224, 448 and just below, in each flavour.
* Greedy NMS on 600 seeded random boxes (a dense cluster).
* One image's RPN proposals in the mmdet and detectron2 flavours: three FPN
  levels (16x16, 8x8, 4x4 locations x 3 anchors on a 64x64 image) with seeded
  deltas and scores; the detectron2 case has a few non-finite rows to drop.

Inputs are built with plain torch from fixed seeds; outputs are small enough to
store whole (kept indices exactly, boxes and scores with tolerance).
"""

from __future__ import annotations

import numpy as np
import torch
import torchvision

from oracles import nms as nms_oracle
from oracles import proposals as proposal_oracle
from oracles import roi as roi_oracle
from golden.case import GoldenCase

# --------------------------------------------------------------------------- RoIAlign
RAMP_ROW0 = {False: [7.5, 8.0, 8.5, 9.0], True: [4.5, 5.0, 5.5, 6.0]}


def run_roi_align_ramp(impl, device):
    fmap = torch.arange(25, dtype=torch.float32, device=device).reshape(1, 1, 5, 5)
    rois = torch.tensor([[0.0, 1.0, 1.0, 3.0, 3.0]], device=device)
    return {
        "unaligned": impl.roi_align(fmap, rois, 4, 1.0, 0, False)[0, 0],
        "aligned": impl.roi_align(fmap, rois, 4, 1.0, 0, True)[0, 0],
    }


def check_roi_align_ramp(out) -> None:
    fmap = torch.arange(25, dtype=torch.float32).reshape(1, 1, 5, 5)
    rois = torch.tensor([[0.0, 1.0, 1.0, 3.0, 3.0]])
    for key, aligned in (("unaligned", False), ("aligned", True)):
        # The published first row, a ramp of 2.5 per row and 0.5 per column...
        expected = RAMP_ROW0[aligned][0] + 2.5 * np.arange(4)[:, None] + 0.5 * np.arange(4)
        np.testing.assert_allclose(out[key][0], RAMP_ROW0[aligned], err_msg=key)
        np.testing.assert_allclose(out[key], expected, err_msg=key)
        # ...a live torchvision call, and the loop oracle.
        live = torchvision.ops.roi_align(fmap, rois, 4, 1.0, 0, aligned)[0, 0].numpy()
        np.testing.assert_allclose(out[key], live, err_msg=f"{key} vs torchvision")
        np.testing.assert_allclose(out[key], roi_oracle.roi_align(
            fmap.double().numpy(), rois.double().numpy(), 4, 4, 1.0, 0, aligned)[0, 0])


# --------------------------------------------------------------------------- levels
LEVEL_SIDES = [112.0, 224.0, 448.0, 112 - 1e-5, 224 - 1e-5, 448 - 1e-5,
               112 - 1e-3, 224 - 1e-3, 448 - 1e-3]
LEVEL_TABLE = {  # index from P2, by hand from the three formulas
    "mmdet": [1, 2, 3, 1, 2, 3, 0, 1, 2],
    # on float32 boxes (detectron2 structures/boxes.py:150): s - 1e-5 rounds back up
    "detectron2": [1, 2, 3, 1, 2, 3, 0, 1, 2],
    "torchvision": [1, 2, 3, 1, 2, 3, 0, 1, 2],
}


def run_roi_levels(impl, device):
    boxes = torch.tensor([[10.0, 20.0, 10.0 + s, 20.0 + s] for s in LEVEL_SIDES],
                         dtype=torch.float64, device=device)
    return {f: impl.map_rois_to_levels(boxes, f, 2, 5) for f in LEVEL_TABLE}


def check_roi_levels(out) -> None:
    for flavour, table in LEVEL_TABLE.items():
        np.testing.assert_array_equal(out[flavour], table, err_msg=flavour)
        oracle = [roi_oracle.fpn_level([10, 20, 10 + s, 20 + s], flavour) for s in LEVEL_SIDES]
        np.testing.assert_array_equal(out[flavour], oracle, err_msg=f"{flavour} vs oracle")


# --------------------------------------------------------------------------- NMS
def _cluster(seed: int, n: int):
    gen = torch.Generator().manual_seed(seed)
    xy = torch.randint(0, 80, (n, 2), generator=gen).float()
    wh = torch.randint(4, 40, (n, 2), generator=gen).float()
    scores = torch.randperm(n, generator=gen).float() / n  # distinct
    return torch.cat([xy, xy + wh], dim=1), scores


def run_nms_cluster(impl, device):
    boxes, scores = _cluster(11, 600)
    return {"kept": impl.nms(boxes.to(device), scores.to(device), 0.5011)}


def check_nms_cluster(out) -> None:
    boxes, scores = _cluster(11, 600)
    live = torchvision.ops.nms(boxes, scores, 0.5011).numpy()
    np.testing.assert_array_equal(out["kept"], live, err_msg="vs torchvision.ops.nms")
    np.testing.assert_array_equal(out["kept"], nms_oracle.nms(boxes.numpy(), scores.numpy(),
                                                              0.5011), err_msg="vs oracle")


# --------------------------------------------------------------------------- RPN
RPN_IMAGE = (64, 64)
RPN_LEVELS = [(16, 16, 4), (8, 8, 8), (4, 4, 16)]  # (rows, cols, stride)
RPN_SIZES = (1.0, 2.0, 4.0)  # anchor side = stride * size, square


def _rpn_inputs(seed: int):
    """Per-level anchors (A,4), deltas (A,4), scores (A,) as float32, plain torch."""
    gen = torch.Generator().manual_seed(seed)
    anchors, deltas, scores = [], [], []
    for rows, cols, stride in RPN_LEVELS:
        ys, xs = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
        centres = torch.stack([xs, ys], dim=-1).reshape(-1, 1, 2).float() * stride + stride / 2
        half = torch.tensor(RPN_SIZES).reshape(1, -1, 1) * stride / 2  # (1, 3, 1)
        level = torch.cat([centres - half, centres + half], dim=-1).reshape(-1, 4)  # (HWA, 4)
        anchors.append(level)
        deltas.append(torch.randn(level.shape, generator=gen) * 0.3)
        scores.append(torch.rand(level.shape[0], generator=gen))
    return anchors, deltas, scores


MMDET_RPN_CFG = dict(nms_pre=100, iou_threshold=0.7, min_bbox_size=2.0, max_per_img=150)


def run_mmdet_rpn(impl, device):
    anchors, deltas, scores = _rpn_inputs(5)
    out = impl.mmdet_rpn_proposals([s.to(device) for s in scores], [d.to(device) for d in deltas],
                                   [a.to(device) for a in anchors], RPN_IMAGE, **MMDET_RPN_CFG)
    boxes, kept_scores, level_ids, rows = out
    return {"boxes": boxes, "scores": kept_scores, "level_ids": level_ids,
            "anchor_indices": rows}


def check_mmdet_rpn(out) -> None:
    anchors, deltas, scores = _rpn_inputs(5)
    c = MMDET_RPN_CFG
    e = proposal_oracle.mmdet_rpn_proposals(
        [s.numpy() for s in scores], [d.numpy() for d in deltas], [a.numpy() for a in anchors],
        RPN_IMAGE, c["nms_pre"], c["iou_threshold"], c["min_bbox_size"], c["max_per_img"])
    np.testing.assert_array_equal(out["anchor_indices"], e[3])
    np.testing.assert_array_equal(out["level_ids"], e[2])
    np.testing.assert_allclose(out["boxes"], e[0], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out["scores"], e[1], rtol=1e-6)


D2_RPN_CFG = dict(nms_thresh=0.7, pre_nms_topk=100, post_nms_topk=150, min_box_size=0.0,
                  training=False)


def _d2_inputs():
    anchors, deltas, logits = _rpn_inputs(6)
    proposals = [a + d * 8 for a, d in zip(anchors, deltas)]  # stand-in for decoded boxes
    logits = [torch.logit(s) for s in logits]
    proposals[0][[3, 100]] = float("nan")  # dropped at inference
    logits[1][7] = float("inf")
    return proposals, logits


def run_detectron2_rpn(impl, device):
    proposals, logits = _d2_inputs()
    out = impl.find_top_rpn_proposals([p.to(device) for p in proposals],
                                      [s.to(device) for s in logits], RPN_IMAGE, **D2_RPN_CFG)
    boxes, kept_scores, level_ids, rows = out
    return {"boxes": boxes, "scores": kept_scores, "level_ids": level_ids,
            "anchor_indices": rows}


def check_detectron2_rpn(out) -> None:
    proposals, logits = _d2_inputs()
    c = D2_RPN_CFG
    e = proposal_oracle.find_top_rpn_proposals(
        [p.numpy() for p in proposals], [s.numpy() for s in logits], RPN_IMAGE,
        c["nms_thresh"], c["pre_nms_topk"], c["post_nms_topk"], c["min_box_size"], False)
    np.testing.assert_array_equal(out["anchor_indices"], e[3])
    np.testing.assert_array_equal(out["level_ids"], e[2])
    np.testing.assert_allclose(out["boxes"], e[0], rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(out["scores"], e[1], rtol=1e-6)


# --------------------------------------------------------------------------- multi-class NMS
def _same_class_iou_margin(boxes, labels, threshold) -> float:
    """Smallest |IoU - threshold| over same-class pairs (float64), to keep NMS tie-free."""
    boxes = np.asarray(boxes, dtype=np.float64)
    labels = np.asarray(labels)
    margin = np.inf
    for c in np.unique(labels):
        b = boxes[labels == c]
        lt = np.maximum(b[:, None, :2], b[None, :, :2])
        rb = np.minimum(b[:, None, 2:], b[None, :, 2:])
        inter = np.clip(rb - lt, 0, None).prod(-1)
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        union = area[:, None] + area[None, :] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
        off_diagonal = ~np.eye(len(b), dtype=bool)
        if off_diagonal.any():
            margin = min(margin, float(np.abs(iou[off_diagonal] - threshold).min()))
    return margin


def _live_class_wise(boxes, scores, score_threshold, iou_threshold, top):
    """Candidates (N, C, 4) / (N, C) -> kept (boxes, scores, labels, rows) via torchvision."""
    rows, labels = torch.nonzero(scores > score_threshold, as_tuple=True)
    cand = boxes[rows, labels].double()
    cand_scores = scores[rows, labels].double()
    keep = torchvision.ops.batched_nms(cand, cand_scores, labels, iou_threshold)
    if top >= 0:
        keep = keep[:top]
    return cand[keep], cand_scores[keep], labels[keep], rows[keep]


def _check_detections(out, expected, what, rtol=1e-6, atol=1e-5) -> None:
    boxes, scores, labels, rows = (np.asarray(e) for e in expected)
    np.testing.assert_array_equal(out["box_indices"], rows, err_msg=f"box_indices vs {what}")
    np.testing.assert_array_equal(out["labels"], labels, err_msg=f"labels vs {what}")
    np.testing.assert_allclose(out["boxes"], boxes, rtol=rtol, atol=atol, err_msg=f"boxes vs {what}")
    np.testing.assert_allclose(out["scores"], scores, rtol=rtol, err_msg=f"scores vs {what}")


MC_ROWS, MC_CLASSES = 300, 5
MC_CFG = dict(score_threshold=0.05, iou_threshold=0.5011, max_num=100)


def _multiclass_inputs():
    """300 rows of class-specific boxes (300, 4*5) and scores (300, 5+1), background last.

    Each row jitters one cluster box per class; scores are a permutation of k / 1800
    squared, so every score is distinct (no ties in the merged order).
    """
    gen = torch.Generator().manual_seed(22)
    xy = torch.rand(MC_ROWS, 1, 2, generator=gen) * 90
    wh = torch.rand(MC_ROWS, 1, 2, generator=gen) * 36 + 6
    jitter = torch.randn(MC_ROWS, MC_CLASSES, 4, generator=gen) * 2
    boxes = torch.cat([xy, xy + wh], dim=-1) + jitter  # (300, 5, 4)
    boxes[..., 2:] = torch.maximum(boxes[..., 2:], boxes[..., :2] + 1)  # x2 > x1, y2 > y1
    count = MC_ROWS * (MC_CLASSES + 1)
    scores = (torch.randperm(count, generator=gen).float() / count) ** 2
    return boxes.reshape(MC_ROWS, 4 * MC_CLASSES), scores.reshape(MC_ROWS, MC_CLASSES + 1)


def run_multiclass_nms(impl, device):
    boxes, scores = _multiclass_inputs()
    dets = impl.multiclass_nms(boxes.to(device), scores.to(device), **MC_CFG)
    out_boxes, out_scores, labels, rows = dets
    return {"boxes": out_boxes, "scores": out_scores, "labels": labels, "box_indices": rows}


def check_multiclass_nms(out) -> None:
    boxes, scores = _multiclass_inputs()
    c = MC_CFG
    per_class = boxes.reshape(MC_ROWS, MC_CLASSES, 4)
    fg = scores[:, :MC_CLASSES]
    assert len(torch.unique(scores)) == scores.numel(), "scores must be distinct"
    rows, labels = torch.nonzero(fg > c["score_threshold"], as_tuple=True)
    margin = _same_class_iou_margin(per_class[rows, labels].numpy(), labels.numpy(),
                                    c["iou_threshold"])
    assert margin > 1e-4, f"a same-class IoU is within {margin} of the threshold"
    assert len(out["labels"]) == c["max_num"], "max_num must cut the result"
    assert set(out["labels"].tolist()) == set(range(MC_CLASSES))
    assert np.all(np.diff(out["scores"]) < 0)
    live = _live_class_wise(per_class, fg, c["score_threshold"], c["iou_threshold"], c["max_num"])
    _check_detections(out, [t.numpy() for t in live], "torchvision.ops.batched_nms")
    _check_detections(out, nms_oracle.multiclass_nms(boxes.numpy(), scores.numpy(),
                                                     c["score_threshold"], c["iou_threshold"],
                                                     c["max_num"]), "the loop oracle")


# --------------------------------------------------------------------------- Fast R-CNN inference
FR_ROWS, FR_CLASSES = 200, 4
FR_IMAGE = (60, 80)  # (h, w)
FR_CFG = dict(score_threshold=0.05, nms_threshold=0.5, topk_per_image=100)
FR_NONFINITE = {"box NaN": (5, 9), "box -inf": (40, 2), "score +inf": (77, 1), "score NaN": (150, 4)}


def _fast_rcnn_inputs():
    """200 rows of per-class boxes (200, 4*4), many reaching outside the 80x60 image, and
    distinct scores (200, 4+1), background last; four rows carry a non-finite value."""
    gen = torch.Generator().manual_seed(31)
    xy = torch.rand(FR_ROWS, 1, 2, generator=gen) * torch.tensor([110.0, 90.0]) - 20
    wh = torch.rand(FR_ROWS, 1, 2, generator=gen) * 30 + 4
    jitter = torch.randn(FR_ROWS, FR_CLASSES, 4, generator=gen) * 1.5
    boxes = torch.cat([xy, xy + wh], dim=-1) + jitter  # (200, 4, 4)
    boxes[..., 2:] = torch.maximum(boxes[..., 2:], boxes[..., :2] + 1)
    boxes = boxes.reshape(FR_ROWS, 4 * FR_CLASSES)
    count = FR_ROWS * (FR_CLASSES + 1)
    scores = ((torch.randperm(count, generator=gen).float() / count) ** 2).reshape(FR_ROWS, -1)
    boxes[5, 9] = float("nan")
    boxes[40, 2] = float("-inf")
    scores[77, 1] = float("inf")
    scores[150, 4] = float("nan")  # in the background column: the row still goes
    return boxes, scores


def run_fast_rcnn_inference(impl, device):
    boxes, scores = _fast_rcnn_inputs()
    dets = impl.fast_rcnn_inference(boxes.to(device), scores.to(device), FR_IMAGE, **FR_CFG)
    out_boxes, out_scores, labels, rows = dets
    return {"boxes": out_boxes, "scores": out_scores, "labels": labels, "box_indices": rows}


def check_fast_rcnn_inference(out) -> None:
    boxes, scores = _fast_rcnn_inputs()
    c = FR_CFG
    h, w = FR_IMAGE
    finite = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
    assert torch.nonzero(~finite).flatten().tolist() == [5, 40, 77, 150]
    assert not np.isin(out["box_indices"], [5, 40, 77, 150]).any()
    rows = torch.nonzero(finite).flatten()
    per_class = torchvision.ops.clip_boxes_to_image(
        boxes[rows].reshape(-1, FR_CLASSES, 4), (h, w))  # (R', 4, 4)
    fg = scores[rows, :FR_CLASSES]
    assert len(torch.unique(fg)) == fg.numel(), "scores must be distinct"
    cand_rows, labels = torch.nonzero(fg > c["score_threshold"], as_tuple=True)
    margin = _same_class_iou_margin(per_class[cand_rows, labels].numpy(), labels.numpy(),
                                    c["nms_threshold"])
    assert margin > 1e-4, f"a same-class IoU is within {margin} of the threshold"
    # Clipping matters: some raw candidates reach outside the image, all kept boxes are inside.
    raw = boxes[rows].reshape(-1, FR_CLASSES, 4)[cand_rows, labels]
    assert bool(((raw[:, :2] < 0) | (raw[:, 2] > w)[:, None] | (raw[:, 3] > h)[:, None]).any())
    kept = out["boxes"]
    assert (kept[:, [0, 2]] >= 0).all() and (kept[:, [0, 2]] <= w).all()
    assert (kept[:, [1, 3]] >= 0).all() and (kept[:, [1, 3]] <= h).all()
    on_border = (kept[:, :2] == 0).any(1) | (kept[:, 2] == w) | (kept[:, 3] == h)
    assert on_border.any(), "some kept box must have been clipped"
    assert len(out["labels"]) == c["topk_per_image"], "topk_per_image must cut the result"
    assert np.all(np.diff(out["scores"]) < 0)
    live = _live_class_wise(per_class, fg, c["score_threshold"], c["nms_threshold"],
                            c["topk_per_image"])
    live = [t.numpy() for t in live]
    live[3] = rows.numpy()[live[3]]  # rows of the finite subset -> input rows
    _check_detections(out, live, "torchvision.ops.batched_nms")
    _check_detections(out, nms_oracle.fast_rcnn_inference(
        boxes.numpy(), scores.numpy(), FR_IMAGE, c["score_threshold"], c["nms_threshold"],
        c["topk_per_image"]), "the loop oracle")


CASES = [
    GoldenCase(
        name="roi_align_5x5_ramp",
        component="roi",
        clause="ROI-2",
        producer="roi_align(arange(25).reshape(1,1,5,5), [[0,1,1,3,3]], 4, 1.0, 0, aligned)",
        flavour="detectron2",
        inputs={"feature": "arange(25) as 1x1x5x5", "roi": [0, 1, 1, 3, 3], "output_size": 4,
                "spatial_scale": 1.0, "sampling_ratio": 0, "aligned": [False, True]},
        run=run_roi_align_ramp,
        cross_checked="detectron2 test_roi_align numbers (first rows 7.5.. / 4.5.., ramp 2.5 "
        "per row, 0.5 per column), a live torchvision.ops.roi_align call, the loop oracle",
        cross_check=check_roi_align_ramp,
    ),
    GoldenCase(
        name="roi_levels_boundaries",
        component="roi",
        clause="ROI-9",
        producer="map_rois_to_levels(boxes, flavour, 2, 5)",
        flavour="mmdet, detectron2, torchvision",
        inputs={"sides": LEVEL_SIDES, "dtype": "float64", "min_level": 2, "max_level": 5},
        run=run_roi_levels,
        cross_checked="hand-derived table from the three upstream formulas and the loop oracle",
        cross_check=check_roi_levels,
        exact=tuple(LEVEL_TABLE),
    ),
    GoldenCase(
        name="nms_cluster_600",
        component="nms",
        clause="NMS-1",
        producer="nms(boxes, scores, 0.5011)",
        flavour="torchvision",
        inputs={"seed": 11, "n": 600, "xy": "randint(0, 80)", "wh": "randint(4, 40)",
                "scores": "randperm(n) / n", "iou_threshold": 0.5011},
        run=run_nms_cluster,
        cross_checked="a live torchvision.ops.nms call and the loop oracle (identical indices)",
        cross_check=check_nms_cluster,
        exact=("kept",),
    ),
    GoldenCase(
        name="rpn_proposals_mmdet_64x64",
        component="proposals",
        clause="PROP-1",
        producer="mmdet_rpn_proposals(scores, deltas, anchors, (64, 64), nms_pre=100, "
        "iou_threshold=0.7, min_bbox_size=2.0, max_per_img=150)",
        flavour="mmdet",
        inputs={"seed": 5, "levels": RPN_LEVELS, "anchor_sizes": RPN_SIZES,
                "deltas": "randn * 0.3", "scores": "rand", **MMDET_RPN_CFG},
        run=run_mmdet_rpn,
        cross_checked="the loop oracle of the mmdet steps in float64 (same anchor indices)",
        cross_check=check_mmdet_rpn,
        exact=("level_ids", "anchor_indices"),
    ),
    GoldenCase(
        name="rpn_proposals_detectron2_64x64",
        component="proposals",
        clause="PROP-4",
        producer="find_top_rpn_proposals(proposals, logits, (64, 64), nms_thresh=0.7, "
        "pre_nms_topk=100, post_nms_topk=150, min_box_size=0.0, training=False)",
        flavour="detectron2",
        inputs={"seed": 6, "levels": RPN_LEVELS, "anchor_sizes": RPN_SIZES,
                "proposals": "anchors + randn * 2.4, rows 3 and 100 of level 0 NaN",
                "logits": "logit(rand), row 7 of level 1 +inf", **D2_RPN_CFG},
        run=run_detectron2_rpn,
        cross_checked="the loop oracle of the detectron2 steps in float64 (same anchor indices)",
        cross_check=check_detectron2_rpn,
        exact=("level_ids", "anchor_indices"),
    ),
    GoldenCase(
        name="multiclass_nms_mmdet",
        component="nms",
        clause="NMS-9",
        producer="multiclass_nms(bboxes (300, 20), scores (300, 6), score_threshold=0.05, "
        "iou_threshold=0.5011, max_num=100)",
        flavour="mmdet",
        inputs={"seed": 22, "rows": MC_ROWS, "classes": MC_CLASSES,
                "bboxes": "per row a cluster box xy rand*90, wh rand*36+6, plus randn*2 per class",
                "scores": "(randperm(1800) / 1800) ** 2, background last", **MC_CFG},
        run=run_multiclass_nms,
        cross_checked="a live torchvision.ops.batched_nms over the (row, class) candidates and the "
        "loop oracle (identical labels and box indices); distinct scores, same-class IoUs at "
        "least 1e-4 from the threshold",
        cross_check=check_multiclass_nms,
        exact=("labels", "box_indices"),
    ),
    GoldenCase(
        name="fast_rcnn_inference_detectron2",
        component="nms",
        clause="NMS-11",
        producer="fast_rcnn_inference(boxes (200, 16), scores (200, 5), (60, 80), "
        "score_threshold=0.05, nms_threshold=0.5, topk_per_image=100)",
        flavour="detectron2",
        inputs={"seed": 31, "rows": FR_ROWS, "classes": FR_CLASSES, "image_size": list(FR_IMAGE),
                "boxes": "per row xy rand*(110, 90)-20, wh rand*30+4, plus randn*1.5 per class",
                "scores": "(randperm(1000) / 1000) ** 2, background last",
                "non_finite": {k: list(v) for k, v in FR_NONFINITE.items()}, **FR_CFG},
        run=run_fast_rcnn_inference,
        cross_checked="finite-row filter, torchvision.ops.clip_boxes_to_image and a live "
        "torchvision.ops.batched_nms, and the loop oracle (identical labels and box indices); "
        "rows 5, 40, 77, 150 dropped; distinct scores, same-class IoUs at least 1e-4 from the "
        "threshold",
        cross_check=check_fast_rcnn_inference,
        exact=("labels", "box_indices"),
    ),
]
