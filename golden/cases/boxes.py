"""Golden cases for box overlaps (component "iou", SPEC.md clauses IOU-*).

Small worked examples whose numbers can be checked by hand, and one canonical large
case: IoU of 100 fixed ground-truth boxes with the 182403 RetinaNet anchors of an
800 x 1216 image. The anchors are built with plain torch from their formula (in
``_inputs.py``, not with any implementation's anchor code), so this case depends on
box_iou alone.
"""

from __future__ import annotations

import numpy as np
import torch

from oracles import boxes as oracle
from golden.case import GoldenCase, sampled_rows
from golden.inputs import (FIRST_P3_ANCHOR, IMAGE_800x1216, OCTAVE_BASE_SCALE,
                                  RETINANET_RATIOS, RETINANET_STRIDES, SCALES_PER_OCTAVE,
                                  retinanet_anchors, sample_index)

# --------------------------------------------------------------------------- worked examples
# The boxes of mmdet's bbox_overlaps docstring; every number below is hand-computed.
MMDET_DOC_BOXES1 = [[0, 0, 10, 10], [10, 10, 20, 20], [32, 32, 38, 42]]
MMDET_DOC_BOXES2 = [[0, 0, 10, 20], [0, 10, 10, 19], [10, 10, 20, 20]]
HAND_IOU = [[0.5, 0, 0], [0, 0, 1], [0, 0, 0]]
HAND_IOF = [[1, 0, 0], [0, 0, 1], [0, 0, 0]]
HAND_GIOU = [  # iou - (enclosing - union) / enclosing
    [0.5, 0.0, -200 / 400],
    [-100 / 400, -10 / 200, 1.0],
    [-1336 / 1596, -1066 / 1216, -736 / 896],
]


def _run_mmdet_doc(impl, device):
    box_iou = impl.box_iou
    b1 = torch.tensor(MMDET_DOC_BOXES1, dtype=torch.float32, device=device)
    b2 = torch.tensor(MMDET_DOC_BOXES2, dtype=torch.float32, device=device)
    out = {}
    for mode in ("iou", "iof", "giou"):
        out[mode] = box_iou(b1, b2, mode=mode)
        out[f"{mode}_aligned"] = box_iou(b1, b2, mode=mode, is_aligned=True)
    # The same two sets as a batch of 2 (second item swapped): (2, 3, 3).
    out["iou_batched"] = box_iou(torch.stack([b1, b2]), torch.stack([b2, b1]))
    return out


def _check_mmdet_doc(outputs):
    for mode, table in (("iou", HAND_IOU), ("iof", HAND_IOF), ("giou", HAND_GIOU)):
        np.testing.assert_allclose(outputs[mode], table, atol=1e-6, err_msg=mode)
        np.testing.assert_allclose(outputs[f"{mode}_aligned"], np.diag(table), atol=1e-6)
        np.testing.assert_allclose(
            outputs[mode], oracle.box_iou(MMDET_DOC_BOXES1, MMDET_DOC_BOXES2, mode), atol=1e-6
        )
    np.testing.assert_allclose(outputs["iou_batched"], [HAND_IOU, np.transpose(HAND_IOU)],
                               atol=1e-6)


# detectron2's own unit-square test boxes: 0.25 / (1 + 1 - 0.25) = 1/7 for the last one.
D2_BOXES1 = [[0, 0, 1, 1], [0, 0, 1, 1]]
D2_BOXES2 = [[0, 0, 1, 1], [0, 0, 0.5, 1], [0, 0, 1, 0.5], [0, 0, 0.5, 0.5],
             [0.5, 0.5, 1, 1], [0.5, 0.5, 1.5, 1.5]]
D2_HAND_ROW = [1, 0.5, 0.5, 0.25, 0.25, 1 / 7]
TINY_SIDE = 2.0 ** -13  # area 2**-26 ~ 1.5e-8, below mmdet's eps = 1e-6


def _run_detectron2(impl, device):
    tiny = torch.tensor([[0, 0, TINY_SIDE, TINY_SIDE]], dtype=torch.float32, device=device)
    degenerate = torch.tensor([[3, 3, 3, 3], [0, 0, 2, 2], [2, 0, 4, 2]], dtype=torch.float32,
                              device=device)
    return {
        "unit_squares": impl.pairwise_iou(
            torch.tensor(D2_BOXES1, dtype=torch.float32, device=device),
            torch.tensor(D2_BOXES2, dtype=torch.float32, device=device)),
        "tiny_identical": impl.pairwise_iou(tiny, tiny),
        "point_and_touching": impl.pairwise_iou(degenerate, degenerate),
    }


def _check_detectron2(outputs):
    np.testing.assert_allclose(outputs["unit_squares"], [D2_HAND_ROW, D2_HAND_ROW], atol=1e-6)
    np.testing.assert_allclose(outputs["tiny_identical"], [[1.0]], atol=1e-6)
    np.testing.assert_array_equal(outputs["point_and_touching"], np.diag([0.0, 1.0, 1.0]))
    np.testing.assert_allclose(outputs["unit_squares"],
                               oracle.pairwise_iou(D2_BOXES1, D2_BOXES2), atol=1e-6)


def _run_torchvision(impl, device):
    boxes = torch.tensor([[3, 3, 3, 3], [0, 0, 2, 2], [2, 0, 4, 2], [1, 1, 3, 3]],
                         dtype=torch.float32, device=device)
    return {"iou": impl.box_iou_torchvision(boxes, boxes)}


def _check_torchvision(outputs):
    import torchvision

    boxes = torch.tensor([[3, 3, 3, 3], [0, 0, 2, 2], [2, 0, 4, 2], [1, 1, 3, 3]],
                         dtype=torch.float64)
    live = torchvision.ops.box_iou(boxes, boxes).numpy()  # the upstream itself
    assert np.isnan(outputs["iou"][0, 0]) and np.isnan(live[0, 0])
    np.testing.assert_allclose(outputs["iou"], live, atol=1e-6, equal_nan=True)


# --------------------------------------------------------------------------- the large case
IMAGE_H, IMAGE_W = IMAGE_800x1216
STRIDES = tuple(RETINANET_STRIDES)
RATIOS = tuple(RETINANET_RATIOS)  # h / w
NUM_GTS = 100
NUM_SAMPLED_ANCHORS = 256


def fixed_gts() -> torch.Tensor:
    """(100, 4) float32 boxes inside the image, sides 8..512 px, on a 1/8 px grid."""
    g = torch.Generator().manual_seed(2024)
    u = torch.rand(NUM_GTS, 4, generator=g, dtype=torch.float64)
    w = 8 + u[:, 2] * 504
    h = 8 + u[:, 3] * 504
    x1 = u[:, 0] * (IMAGE_W - w)
    y1 = u[:, 1] * (IMAGE_H - h)
    boxes = torch.stack([x1, y1, x1 + w, y1 + h], dim=1)
    return (torch.floor(boxes * 8) / 8).float()


def _run_large(impl, device):
    anchors = retinanet_anchors().to(device)
    gts = fixed_gts().to(device)
    ious = impl.box_iou(gts, anchors)  # (100, 182403)
    idx = torch.as_tensor(sample_index(anchors.shape[0], NUM_SAMPLED_ANCHORS), device=ious.device)
    return {
        "shape": np.array(ious.shape, dtype=np.int64),
        "sampled_anchor_columns": ious.index_select(1, idx).T,  # (256, 100)
        "max_per_gt": ious.max(dim=1).values,  # (100,)
        "sum_per_gt": ious.sum(dim=1),  # (100,)
        "num_overlapping_per_gt": (ious > 0).sum(dim=1).to(torch.int64),  # (100,)
        "max_per_anchor_sampled": sampled_rows(ious.max(dim=0).values, 512),
    }


def _check_large(outputs):
    anchors = retinanet_anchors()
    # upstream-semantics.md: per-level counts, total and the first P3 anchor (mmdet).
    assert anchors.shape == (182403, 4)
    np.testing.assert_allclose(anchors[0].numpy(), FIRST_P3_ANCHOR,
                               atol=1e-4)
    a64 = anchors.double().numpy()
    g64 = fixed_gts().double().numpy()
    assert list(outputs["shape"]) == [NUM_GTS, 182403]

    # 1. Sampled anchors, every gt: the loop oracle, and torchvision's box_iou live.
    idx = sample_index(len(a64), NUM_SAMPLED_ANCHORS)
    looped = np.array([[oracle.overlap_pair(g, a64[j]) for g in g64] for j in idx])
    np.testing.assert_allclose(outputs["sampled_anchor_columns"], looped, rtol=1e-5, atol=1e-6)
    import torchvision

    live = torchvision.ops.box_iou(torch.from_numpy(a64[idx]), torch.from_numpy(g64)).numpy()
    np.testing.assert_allclose(outputs["sampled_anchor_columns"], live, rtol=1e-5, atol=1e-6)

    # 2. Per-gt summaries over all anchors: the vectorised float64 oracle, ten gts at a time.
    maxima, sums, counts, per_anchor = [], [], [], np.zeros(len(a64))
    for start in range(0, NUM_GTS, 10):
        block = oracle.box_iou_vectorised(g64[start:start + 10], a64)  # (10, 182403)
        maxima.append(block.max(1))
        sums.append(block.sum(1))
        counts.append((block > 0).sum(1))
        per_anchor = np.maximum(per_anchor, block.max(0))
    np.testing.assert_allclose(outputs["max_per_gt"], np.concatenate(maxima), atol=1e-6)
    np.testing.assert_allclose(outputs["sum_per_gt"], np.concatenate(sums), rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(outputs["num_overlapping_per_gt"], np.concatenate(counts))
    np.testing.assert_allclose(outputs["max_per_anchor_sampled"], sampled_rows(per_anchor, 512),
                               atol=1e-6)


# --------------------------------------------------------------------------- the cases
CASES = [
    GoldenCase(
        name="iou_mmdet_docstring_boxes",
        component="iou",
        clause="IOU-2",
        producer="box_iou",
        flavour="mmdet",
        inputs={"boxes1": MMDET_DOC_BOXES1, "boxes2": MMDET_DOC_BOXES2,
                "modes": ["iou", "iof", "giou"], "is_aligned": [False, True],
                "batched": "stack([b1, b2]) vs stack([b2, b1])"},
        run=_run_mmdet_doc,
        cross_checked="hand-computed IoU/IoF/GIoU tables for mmdet's bbox_overlaps docstring "
                      "boxes, and the loop oracle",
        cross_check=_check_mmdet_doc,
        atol=1e-6,
    ),
    GoldenCase(
        name="iou_detectron2_unit_squares",
        component="iou",
        clause="IOU-16",
        producer="pairwise_iou",
        flavour="detectron2",
        inputs={"boxes1": D2_BOXES1, "boxes2": D2_BOXES2, "tiny_side": TINY_SIDE,
                "degenerate": [[3, 3, 3, 3], [0, 0, 2, 2], [2, 0, 4, 2]]},
        run=_run_detectron2,
        cross_checked="hand-computed values (1, 1/2, 1/2, 1/4, 1/4, 1/7) of detectron2's "
                      "unit-square test, IoU 1 for identical tiny boxes, and the loop oracle",
        cross_check=_check_detectron2,
        atol=1e-6,
    ),
    GoldenCase(
        name="iou_torchvision_zero_union",
        component="iou",
        clause="IOU-17",
        producer="box_iou_torchvision",
        flavour="torchvision",
        inputs={"boxes": [[3, 3, 3, 3], [0, 0, 2, 2], [2, 0, 4, 2], [1, 1, 3, 3]]},
        run=_run_torchvision,
        cross_checked="a live torchvision.ops.box_iou call in float64 (NaN on zero union)",
        cross_check=_check_torchvision,
        atol=1e-6,
    ),
    GoldenCase(
        name="iou_retinanet_anchors_100_gts",
        component="iou",
        clause="IOU-2",
        producer="box_iou",
        flavour="mmdet",
        inputs={"image": [IMAGE_H, IMAGE_W], "strides": list(STRIDES), "ratios": list(RATIOS),
                "octave_base_scale": OCTAVE_BASE_SCALE, "scales_per_octave": SCALES_PER_OCTAVE,
                "center_offset": 0, "order": "location row-major, ratio outer, scale inner",
                "num_anchors": 182403, "gts": "100 boxes, torch.Generator seed 2024, "
                "sides 8..512 px, 1/8 px grid", "mode": "iou"},
        run=_run_large,
        cross_checked="loop oracle and live torchvision.ops.box_iou (float64) on 256 sampled "
                      "anchors x 100 gts; vectorised float64 oracle for per-gt max/sum/count "
                      "and per-anchor max; anchor count and first P3 anchor from "
                      "upstream-semantics.md",
        cross_check=_check_large,
        exact=("shape", "num_overlapping_per_gt"),
    ),
]
