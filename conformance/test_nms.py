"""Conformance of NMS, batched NMS and multi-class detection post-processing (SPEC.md NMS-*)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conformance.checks import assert_close, raises_value_error, tensor, to_numpy
from oracles import nms as oracle
from conformance.strategies_postprocess import (
    SAFE_THRESHOLDS,
    boxes_and_scores,
    integer_boxes,
)

pytestmark = pytest.mark.component("nms")

thresholds = st.sampled_from(SAFE_THRESHOLDS)


def _indices(x) -> list[int]:
    assert isinstance(x, torch.Tensor) and x.dtype == torch.int64, \
        f"expected an int64 index tensor, got {getattr(x, 'dtype', type(x))}"
    assert x.dim() == 1, f"expected a 1-D index tensor, got shape {tuple(x.shape)}"
    return x.tolist()


# --------------------------------------------------------------------------- nms
@pytest.mark.spec("NMS-1")
@given(data=boxes_and_scores(), thr=thresholds)
def test_nms_keeps_exactly_what_greedy_suppression_keeps(impl, device, data, thr):
    nms = impl.get("nms")
    boxes, scores = data
    kept = _indices(nms(tensor(boxes, device), tensor(scores, device), thr))
    assert kept == oracle.nms(boxes, scores, thr)


@pytest.mark.spec("NMS-1")
@given(data=boxes_and_scores(min_n=1), thr=thresholds)
def test_nms_agrees_with_greedy_suppression_in_float64(impl, device, data, thr):
    nms = impl.get("nms")
    boxes, scores = data
    kept = _indices(nms(tensor(boxes, device, torch.float64),
                        tensor(scores, device, torch.float64), thr))
    assert kept == oracle.nms(boxes, scores, thr)


@pytest.mark.spec("NMS-2")
@pytest.mark.parametrize("boxes, iou", [
    ([[0, 0, 4, 1], [0, 0, 2, 1]], 0.5),  # inter 2, union 4
    ([[0, 0, 4, 4], [0, 0, 4, 1]], 0.25),  # inter 4, union 16
    ([[10, 10, 14, 14], [10, 10, 14, 13]], 0.75),  # inter 12, union 16
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nms_keeps_a_box_at_exactly_the_threshold_and_drops_it_just_above(
        impl, device, boxes, iou, dtype):
    nms = impl.get("nms")
    b = tensor(boxes, device, dtype)
    s = tensor([0.9, 0.8], device, dtype)
    assert sorted(_indices(nms(b, s, iou))) == [0, 1]  # IoU == thr: not suppressed
    assert _indices(nms(b, s, iou - 1e-4)) == [0]  # IoU > thr: suppressed


@pytest.mark.spec("NMS-2")
def test_batched_nms_keeps_a_box_at_exactly_the_threshold(impl, device):
    batched_nms = impl.get("batched_nms")
    b = tensor([[0, 0, 4, 1], [0, 0, 2, 1], [0, 0, 4, 1]], device)
    s = tensor([0.9, 0.8, 0.7], device)
    idxs = tensor([0, 0, 1], device, torch.int64)
    assert sorted(_indices(batched_nms(b, s, idxs, 0.5))) == [0, 1, 2]
    assert sorted(_indices(batched_nms(b, s, idxs, 0.4999))) == [0, 2]


@pytest.mark.spec("NMS-3")
@given(data=boxes_and_scores(), thr=thresholds)
def test_nms_kept_boxes_do_not_overlap_and_dropped_boxes_are_covered(impl, device, data, thr):
    nms = impl.get("nms")
    boxes, scores = data
    kept = _indices(nms(tensor(boxes, device), tensor(scores, device), thr))
    assert len(set(kept)) == len(kept)
    assert all(scores[a] >= scores[b] for a, b in zip(kept, kept[1:]))
    for i, a in enumerate(kept):
        for b in kept[i + 1:]:
            assert oracle.iou(boxes[a], boxes[b]) <= thr
    for d in set(range(len(boxes))) - set(kept):
        assert any(oracle.iou(boxes[d], boxes[k]) > thr and scores[k] >= scores[d] for k in kept)


@pytest.mark.spec("NMS-4")
@given(boxes=integer_boxes(min_n=2, max_n=10), thr=thresholds, seed=st.integers(0, 2**16))
def test_nms_with_tied_scores_keeps_the_same_set(impl, device, boxes, thr, seed):
    nms = impl.get("nms")
    # Only two score values; tied boxes whose choice would depend on tie order
    # (a tied pair overlapping above thr) are removed from the draw.
    rng = np.random.default_rng(seed)
    scores = rng.integers(1, 3, size=len(boxes)).astype(np.float64) / 2
    keep_rows = []
    for i in range(len(boxes)):
        if all(scores[i] != scores[j] or oracle.iou(boxes[i], boxes[j]) <= thr for j in keep_rows):
            keep_rows.append(i)
    boxes, scores = boxes[keep_rows], scores[keep_rows]
    kept = _indices(nms(tensor(boxes, device), tensor(scores, device), thr))
    assert sorted(kept) == sorted(oracle.nms(boxes, scores, thr))
    assert all(scores[a] >= scores[b] for a, b in zip(kept, kept[1:]))


@pytest.mark.spec("NMS-S1")
@pytest.mark.strict_tier
def test_nms_breaks_score_ties_by_lower_index(impl, device):
    boxes = tensor([[0, 0, 10, 10], [20, 0, 30, 10], [0, 0, 10, 9], [40, 0, 50, 10]], device)
    scores = tensor([0.5, 0.5, 0.5, 0.7], device)
    idxs = tensor([0, 1, 0, 1], device, torch.int64)
    for name in ("nms", "nms_reference"):
        if impl.has(name):
            # Box 2 is tied with box 0 and overlaps it (IoU 0.9): box 0 wins.
            assert _indices(impl.get(name)(boxes, scores, 0.5)) == [3, 0, 1]
    assert _indices(impl.get("batched_nms")(boxes, scores, idxs, 0.5)) == [3, 0, 1]


@pytest.mark.spec("NMS-5")
def test_nms_of_no_boxes_is_empty_and_of_one_box_keeps_it(impl, device):
    nms = impl.get("nms")
    empty = nms(torch.zeros((0, 4), device=device), torch.zeros((0,), device=device), 0.5)
    assert _indices(empty) == []
    assert _indices(nms(tensor([[1, 2, 3, 4]], device), tensor([0.3], device), 0.5)) == [0]


@pytest.mark.spec("NMS-5")
def test_nms_threshold_one_keeps_every_box_even_duplicates(impl, device):
    nms = impl.get("nms")
    boxes = tensor([[0, 0, 5, 5]] * 3 + [[1, 1, 4, 4]], device)
    kept = _indices(nms(boxes, tensor([0.1, 0.4, 0.3, 0.2], device), 1.0))
    assert kept == [1, 2, 3, 0]


@pytest.mark.spec("NMS-6")
@pytest.mark.parametrize("case", ["boxes_shape", "scores_len", "nan_box", "inf_box",
                                  "nan_score", "scores_2d"])
def test_nms_rejects_malformed_input(impl, device, case):
    nms = impl.get("nms")
    boxes = tensor([[0, 0, 2, 2], [1, 1, 3, 3]], device)
    scores = tensor([0.5, 0.4], device)
    if case == "boxes_shape":
        boxes = tensor([[0, 0, 2], [1, 1, 3]], device)
    elif case == "scores_len":
        scores = tensor([0.5], device)
    elif case == "nan_box":
        boxes[1, 2] = float("nan")
    elif case == "inf_box":
        boxes[0, 0] = float("-inf")
    elif case == "nan_score":
        scores[0] = float("nan")
    elif case == "scores_2d":
        scores = scores[:, None]
    raises_value_error(nms, boxes, scores, 0.5)


@pytest.mark.spec("NMS-6")
def test_batched_nms_rejects_float_or_misshapen_categories(impl, device):
    batched_nms = impl.get("batched_nms")
    boxes = tensor([[0, 0, 2, 2], [1, 1, 3, 3]], device)
    scores = tensor([0.5, 0.4], device)
    raises_value_error(batched_nms, boxes, scores, tensor([0.0, 1.0], device), 0.5,
                       match="idxs")
    raises_value_error(batched_nms, boxes, scores, tensor([0, 1, 1], device, torch.int64), 0.5,
                       match="idxs")


@pytest.mark.spec("NMS-7")
@given(data=boxes_and_scores(max_n=20), thr=thresholds)
def test_nms_reference_and_fast_path_agree(impl, device, data, thr):
    nms, nms_reference = impl.get("nms"), impl.get("nms_reference")
    boxes, scores = data
    b, s = tensor(boxes, device), tensor(scores, device)
    assert _indices(nms_reference(b, s, thr)) == _indices(nms(b, s, thr))


@pytest.mark.spec("NMS-7")
def test_nms_reference_and_fast_path_agree_on_a_dense_cluster(impl, device):
    nms, nms_reference = impl.get("nms"), impl.get("nms_reference")
    gen = torch.Generator().manual_seed(7)
    xy = torch.randint(0, 60, (300, 2), generator=gen).float()
    wh = torch.randint(4, 30, (300, 2), generator=gen).float()
    b = torch.cat([xy, xy + wh], 1).to(device)
    s = torch.rand(300, generator=gen).to(device)
    assert _indices(nms_reference(b, s, 0.5011)) == _indices(nms(b, s, 0.5011))


# --------------------------------------------------------------------------- batched
@pytest.mark.spec("NMS-8")
@given(data=boxes_and_scores(max_n=18), thr=thresholds, seed=st.integers(0, 2**16))
def test_batched_nms_is_nms_within_each_category(impl, device, data, thr, seed):
    batched_nms = impl.get("batched_nms")
    boxes, scores = data
    idxs = np.random.default_rng(seed).integers(0, 4, size=len(boxes))
    kept = _indices(batched_nms(tensor(boxes, device), tensor(scores, device),
                                tensor(idxs, device, torch.int64), thr))
    assert kept == oracle.batched_nms(boxes, scores, idxs, thr)


@pytest.mark.spec("NMS-8")
def test_batched_nms_never_lets_categories_suppress_each_other(impl, device):
    batched_nms = impl.get("batched_nms")
    boxes = tensor([[0, 0, 10, 10]] * 4, device)
    scores = tensor([0.9, 0.8, 0.7, 0.6], device)
    kept = _indices(batched_nms(boxes, scores, tensor([3, 1, 3, 0], device, torch.int64), 0.5))
    assert kept == [0, 1, 3]
    empty = batched_nms(torch.zeros((0, 4), device=device), torch.zeros(0, device=device),
                        torch.zeros(0, dtype=torch.int64, device=device), 0.5)
    assert _indices(empty) == []


# The pair's float32 IoU is 0.50000006 (inter 2.0000005 / union 4.0000005), so NMS
# within category 1 drops box 1. Shifting category 1 by a coordinate offset (21 or
# 22 here) rounds 6.1 and 9.1 differently, which moves that IoU to <= 0.5.
NEAR_THRESHOLD_BOXES = [[6.1, 1, 9.1, 2], [7.1, 1, 10.1, 2], [20, 20, 21, 21]]


@pytest.mark.spec("NMS-8")
def test_batched_nms_decides_an_iou_one_rounding_above_the_threshold_as_within_a_category(
        impl, device):
    batched_nms = impl.get("batched_nms")
    boxes = tensor(NEAR_THRESHOLD_BOXES, device, torch.float32)
    scores = tensor([0.9, 0.8, 0.7], device, torch.float32)
    idxs = tensor([1, 1, 0], device, torch.int64)
    within_category_1 = _indices(impl.get("nms")(boxes[:2], scores[:2], 0.5))
    assert within_category_1 == [0]
    assert _indices(batched_nms(boxes, scores, idxs, 0.5)) == [0, 2]


@pytest.mark.spec("NMS-11")
@pytest.mark.flavour("detectron2")
def test_fast_rcnn_inference_suppresses_within_a_class_exactly_near_the_threshold(impl, device):
    fast_rcnn_inference = impl.get("fast_rcnn_inference")
    boxes = tensor(NEAR_THRESHOLD_BOXES, device, torch.float32)  # class-agnostic (R, 4)
    # Columns: class 0, class 1, background; rows 0 and 1 are class 1, row 2 class 0.
    scores = tensor([[0.0, 0.9, 0.1], [0.0, 0.8, 0.2], [0.7, 0.0, 0.3]], device, torch.float32)
    _, _, labels, rows = fast_rcnn_inference(boxes, scores, (100, 100), 0.05, 0.5, 100)
    assert rows.tolist() == [0, 2] and labels.tolist() == [1, 0]


@pytest.mark.spec("PROP-1")
@pytest.mark.flavour("mmdet")
def test_mmdet_rpn_proposals_suppress_within_a_level_exactly_near_the_threshold(impl, device):
    proposals = impl.get("mmdet_rpn_proposals")
    # Zero deltas decode each anchor to itself up to rounding; this pair's decoded
    # float32 IoU is one rounding above 0.5 (whole_level checks it), while
    # shifting it by the old span offset (21) rounds it down to 0.5.
    pair = [[0.4, 1, 5.4, 2], [0.4 + 5 / 3, 1, 0.4 + 5 / 3 + 5, 2]]
    anchors = [tensor(NEAR_THRESHOLD_BOXES[2:], device, torch.float32),
               tensor(pair, device, torch.float32)]
    scores = [tensor([0.7], device, torch.float32), tensor([0.9, 0.8], device, torch.float32)]
    deltas = [torch.zeros((1, 4), device=device), torch.zeros((2, 4), device=device)]
    out = proposals(scores, deltas, anchors, (100, 100), iou_threshold=0.5)
    whole_level = proposals(scores[1:], deltas[1:], anchors[1:], (100, 100), iou_threshold=0.5)
    assert whole_level[3].tolist() == [0]
    assert out[3].tolist() == [1, 0]  # anchor rows: the 0.9 box of level 1, then level 0


@pytest.mark.spec("PROP-4")
@pytest.mark.flavour("detectron2")
def test_find_top_rpn_proposals_suppress_within_a_level_exactly_near_the_threshold(
        impl, device):
    find_top = impl.get("find_top_rpn_proposals")
    proposals = [tensor(NEAR_THRESHOLD_BOXES[2:], device, torch.float32),
                 tensor(NEAR_THRESHOLD_BOXES[:2], device, torch.float32)]
    logits = [tensor([0.7], device, torch.float32), tensor([0.9, 0.8], device, torch.float32)]
    out = find_top(proposals, logits, (100, 100), nms_thresh=0.5)
    assert out[3].tolist() == [1, 0]  # anchor rows: the 0.9 box of level 1, then level 0
    assert out[2].tolist() == [1, 0]


def _has_method(fn) -> bool:
    try:
        return "method" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _near_threshold_case(gen, n, num_categories, device, dtype=torch.float32):
    """Boxes on a 0.1 grid (not exact in float32) and a threshold equal to one pair's IoU."""
    xy = torch.randint(0, 300, (n, 2), generator=gen).to(dtype) / 10
    wh = torch.randint(5, 120, (n, 2), generator=gen).to(dtype) / 10
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.rand(n, generator=gen).to(dtype)
    idxs = torch.randint(0, num_categories, (n,), generator=gen)
    i, j = torch.randint(0, n, (2,), generator=gen).tolist()
    a, b = boxes[i], boxes[j]
    w = (torch.minimum(a[2], b[2]) - torch.maximum(a[0], b[0])).clamp(min=0)
    h = (torch.minimum(a[3], b[3]) - torch.maximum(a[1], b[1])).clamp(min=0)
    area_a, area_b = (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
    iou = float((w * h) / (area_a + area_b - w * h))
    thr = iou if 0 < iou < 1 else 0.5
    return boxes.to(device), scores.to(device), idxs.to(device), thr


@pytest.mark.spec("NMS-S2")
@pytest.mark.strict_tier
@given(data=boxes_and_scores(max_n=18), thr=thresholds, seed=st.integers(0, 2**16))
def test_batched_nms_methods_agree_with_the_per_category_loop(impl, device, data, thr, seed):
    batched_nms = impl.get("batched_nms")
    if not _has_method(batched_nms):
        pytest.skip("batched_nms has no method option")
    boxes, scores = data
    idxs = tensor(np.random.default_rng(seed).integers(0, 4, size=len(boxes)), device, torch.int64)
    b, s = tensor(boxes, device), tensor(scores, device)
    loop = _indices(batched_nms(b, s, idxs, thr, method="loop"))
    assert _indices(batched_nms(b, s, idxs, thr)) == loop
    if device == "cpu":
        assert _indices(batched_nms(b, s, idxs, thr, method="blocks")) == loop


@pytest.mark.spec("NMS-S2")
@pytest.mark.strict_tier
@pytest.mark.parametrize("n, num_categories", [(60, 1), (400, 80), (700, 3), (2000, 9)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_nms_paths_agree_bit_for_bit_at_a_threshold_equal_to_some_iou(
        impl, device, n, num_categories, dtype):
    # Categories of a few boxes (decided together), and of several hundred (one
    # kernel call each); thresholds equal to a pair's IoU test the strict ">".
    batched_nms = impl.get("batched_nms")
    if not _has_method(batched_nms):
        pytest.skip("batched_nms has no method option")
    gen = torch.Generator().manual_seed(n + num_categories)
    for _ in range(3):
        boxes, scores, idxs, thr = _near_threshold_case(gen, n, num_categories, device, dtype)
        loop = batched_nms(boxes, scores, idxs, thr, method="loop")
        assert torch.equal(batched_nms(boxes, scores, idxs, thr), loop)
        if device == "cpu":
            assert torch.equal(batched_nms(boxes, scores, idxs, thr, method="blocks"), loop)


@pytest.mark.spec("NMS-S2")
@pytest.mark.strict_tier
def test_batched_nms_paths_agree_on_a_long_suppression_chain(impl, device):
    # Box k+1 overlaps box k by IoU 9/11 > 0.7, box k+2 by 8/12 < 0.7: greedy keeps
    # every other box, a decision chain as long as the category.
    batched_nms = impl.get("batched_nms")
    if not _has_method(batched_nms):
        pytest.skip("batched_nms has no method option")
    k = torch.arange(100, dtype=torch.float32)
    boxes = torch.stack([k, 0 * k, k + 10, 0 * k + 10], 1).to(device)
    scores = (1 - k / 100).to(device)
    idxs = torch.zeros(100, dtype=torch.int64, device=device)
    expected = list(range(0, 100, 2))
    assert _indices(batched_nms(boxes, scores, idxs, 0.7, method="loop")) == expected
    assert _indices(batched_nms(boxes, scores, idxs, 0.7)) == expected


@pytest.mark.spec("NMS-S3")
@pytest.mark.strict_tier
@given(data=boxes_and_scores(max_n=14, lo=-60, hi=-20), thr=thresholds,
       seed=st.integers(0, 2**16))
def test_batched_nms_handles_negative_coordinates(impl, device, data, thr, seed):
    batched_nms = impl.get("batched_nms")
    boxes, scores = data
    idxs = np.random.default_rng(seed).integers(0, 3, size=len(boxes))
    kept = _indices(batched_nms(tensor(boxes, device), tensor(scores, device),
                                tensor(idxs, device, torch.int64), thr))
    assert kept == oracle.batched_nms(boxes, scores, idxs, thr)


# --------------------------------------------------------------------------- multi-class
@st.composite
def per_class_detections(draw, max_rows=10, max_classes=3):
    rows = draw(st.integers(0, max_rows))
    classes = draw(st.integers(1, max_classes))
    agnostic = draw(st.booleans())
    width = 4 if agnostic else 4 * classes
    base = draw(integer_boxes(min_n=rows, max_n=rows, lo=-4, hi=24))
    jitter = np.array(draw(st.lists(st.integers(0, 2), min_size=rows * width,
                                    max_size=rows * width)), dtype=np.float64)
    boxes = np.tile(base, (1, width // 4)) + jitter.reshape(rows, width) * \
        np.tile([0, 0, 1, 1], width // 4)
    perm = draw(st.permutations(list(range(1, rows * (classes + 1) + 1))))
    scores = np.array(perm, dtype=np.float64).reshape(rows, classes + 1) / max(len(perm), 1)
    return boxes, scores


def _check_detections(result, expected):
    boxes, scores, labels, rows = result
    e_boxes, e_scores, e_labels, e_rows = expected
    assert to_numpy(rows).tolist() == e_rows.tolist()
    assert to_numpy(labels).tolist() == e_labels.tolist()
    assert labels.dtype == torch.int64 and rows.dtype == torch.int64
    assert_close(boxes, e_boxes, what="boxes")
    assert_close(scores, e_scores, what="scores")


@pytest.mark.spec("NMS-9")
@pytest.mark.flavour("mmdet")
@given(data=per_class_detections(), score_thr=st.sampled_from([0.0, 0.3, 0.55]),
       thr=thresholds, max_num=st.sampled_from([-1, 0, 3]))
def test_multiclass_nms_thresholds_then_suppresses_within_each_class(
        impl, device, data, score_thr, thr, max_num):
    multiclass_nms = impl.get("multiclass_nms")
    boxes, scores = data
    result = multiclass_nms(tensor(boxes, device), tensor(scores, device), score_thr, thr, max_num)
    _check_detections(result, oracle.multiclass_nms(boxes, scores, score_thr, thr, max_num))


@pytest.mark.spec("NMS-9")
@pytest.mark.flavour("mmdet")
def test_multiclass_nms_ignores_the_background_column_and_needs_strictly_greater(impl, device):
    multiclass_nms = impl.get("multiclass_nms")
    boxes = tensor([[0, 0, 10, 10], [50, 50, 60, 60]], device)
    # Columns: class 0, class 1, background. 0.5 is not > 0.5; background 0.99 never counts.
    scores = tensor([[0.5, 0.75, 0.99], [0.625, 0.25, 0.99]], device)
    out_boxes, out_scores, labels, rows = multiclass_nms(boxes, scores, 0.5, 0.5)
    assert labels.tolist() == [1, 0] and rows.tolist() == [0, 1]
    assert_close(out_scores, np.array([0.75, 0.625]))
    assert_close(out_boxes, np.array([[0, 0, 10, 10], [50, 50, 60, 60]], dtype=np.float64))


@pytest.mark.spec("NMS-9")
@pytest.mark.flavour("mmdet")
def test_multiclass_nms_max_num_zero_keeps_every_detection(impl, device):
    # mmdet bbox_nms.py cuts only `if max_num > 0` (2.11 and 3.3), so 0 means "no cap".
    multiclass_nms = impl.get("multiclass_nms")
    boxes = tensor([[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10]], device)
    scores = tensor([[0.9, 0.1, 0.0], [0.8, 0.7, 0.0], [0.6, 0.2, 0.0]], device)
    for max_num in (0, -1):
        _, out_scores, labels, rows = multiclass_nms(boxes, scores, 0.15, 0.5, max_num)
        assert rows.tolist() == [0, 1, 1, 2] and labels.tolist() == [0, 0, 1, 1]
        assert_close(out_scores, np.array([0.9, 0.8, 0.7, 0.2]))
    assert multiclass_nms(boxes, scores, 0.15, 0.5, 2)[3].tolist() == [0, 1]


@pytest.mark.spec("NMS-10")
def test_multiclass_postprocessing_with_no_candidates_is_empty(impl, device):
    boxes = tensor([[0, 0, 10, 10]], device)
    scores = tensor([[0.01, 0.02, 0.97]], device)
    results = []
    if impl.has("multiclass_nms") and impl.claims("mmdet"):
        results.append(impl.get("multiclass_nms")(boxes, scores, 0.05, 0.5, 100))
    if impl.has("fast_rcnn_inference") and impl.claims("detectron2"):
        results.append(impl.get("fast_rcnn_inference")(boxes, scores, (20, 20), 0.05, 0.5, 100))
    if not results:
        pytest.skip("neither multiclass_nms (mmdet) nor fast_rcnn_inference (detectron2)")
    for out_boxes, out_scores, labels, rows in results:
        assert tuple(out_boxes.shape) == (0, 4)
        assert tuple(out_scores.shape) == tuple(labels.shape) == tuple(rows.shape) == (0,)


@pytest.mark.spec("NMS-11")
@pytest.mark.flavour("detectron2")
@given(data=per_class_detections(), score_thr=st.sampled_from([0.05, 0.3, 0.55]),
       thr=thresholds, topk=st.sampled_from([-1, 2, 100]))
def test_fast_rcnn_inference_clips_thresholds_suppresses_and_keeps_top_k(
        impl, device, data, score_thr, thr, topk):
    fast_rcnn_inference = impl.get("fast_rcnn_inference")
    boxes, scores = data
    result = fast_rcnn_inference(tensor(boxes, device), tensor(scores, device), (18, 21),
                                 score_thr, thr, topk)
    expected = oracle.fast_rcnn_inference(boxes, scores, (18, 21), score_thr, thr, topk)
    _check_detections(result, expected)


@pytest.mark.spec("NMS-11")
@pytest.mark.flavour("detectron2")
def test_fast_rcnn_inference_drops_rows_with_non_finite_values(impl, device):
    fast_rcnn_inference = impl.get("fast_rcnn_inference")
    boxes = tensor([[0, 0, 10, 10], [1, 1, float("inf"), 9], [30, 30, 40, 40],
                    [50, 0, 60, 10]], device)
    scores = tensor([[0.9, 0.1], [0.95, 0.05], [float("nan"), 0.5], [0.6, 0.4]], device)
    out_boxes, out_scores, labels, rows = fast_rcnn_inference(boxes, scores, (100, 100),
                                                              0.05, 0.5, 100)
    assert rows.tolist() == [0, 3] and labels.tolist() == [0, 0]
    assert_close(out_scores, np.array([0.9, 0.6]))


@pytest.mark.spec("NMS-11")
@pytest.mark.flavour("detectron2")
def test_fast_rcnn_inference_clips_to_the_image_before_suppressing(impl, device):
    fast_rcnn_inference = impl.get("fast_rcnn_inference")
    # Unclipped IoU is 100/300 (kept at 0.5); clipped to width 10 both become [0,0,10,10].
    boxes = tensor([[-10, 0, 10, 10], [0, 0, 30, 10]], device)
    scores = tensor([[0.9, 0.1], [0.8, 0.2]], device)
    out_boxes, _, _, rows = fast_rcnn_inference(boxes, scores, (10, 10), 0.05, 0.5, 100)
    assert rows.tolist() == [0]
    assert_close(out_boxes, np.array([[0, 0, 10, 10]], dtype=np.float64))


@pytest.mark.spec("NMS-S3")
@pytest.mark.strict_tier
def test_batched_nms_keeps_boxes_an_upstream_offset_would_collide(impl, device):
    batched_nms = impl.get("batched_nms")
    # Max coordinate -10, so an offset of idx * (max + 1) = -9 per category moves
    # box 1 (category 1) exactly onto box 0 (category 0); both must survive.
    boxes = tensor([[-29, -29, -19, -19], [-20, -20, -10, -10]], device)
    kept = batched_nms(boxes, tensor([0.9, 0.8], device), tensor([0, 1], device, torch.int64), 0.5)
    assert _indices(kept) == [0, 1]


# --------------------------------------------------------------------------- edges
@pytest.mark.spec("IOU-V9")
@pytest.mark.parametrize("name", ["nms", "nms_reference", "batched_nms"])
def test_nms_rejects_coordinates_beyond_the_guaranteed_range(impl, device, name):
    # At 1e30 px float32 areas overflow to inf and IoU = inf / inf = NaN > thr is
    # False: the second box, identical to the first, would wrongly survive.
    fn = impl.get(name)
    boxes = tensor([[0.0, 0.0, 1e30, 1e30], [0.0, 0.0, 1e30, 1e30]], device)
    scores = tensor([0.9, 0.8], device)
    extra = (torch.zeros(2, dtype=torch.int64, device=device),) if name == "batched_nms" else ()
    raises_value_error(fn, boxes, scores, *extra, 0.5, match="boxes")


@pytest.mark.spec("NMS-12")
def test_nms_reference_is_memory_bounded(impl, device):
    from conformance.checks import peak_extra_bytes

    nms_reference = impl.get("nms_reference")
    n = 4000  # the (N, N) float32 IoU matrix alone would be 64 MB
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand((n, 2), generator=gen) * 4000
    boxes = torch.cat([xy, xy + 8 + torch.rand((n, 2), generator=gen) * 20], 1).to(device)
    scores = torch.rand(n, generator=gen).to(device)
    extra, keep = peak_extra_bytes(lambda: nms_reference(boxes, scores, 0.5), device)
    assert torch.equal(keep.cpu().sort().values, impl.get("nms")(boxes, scores, 0.5).cpu().sort().values)
    assert extra <= 16e6, f"nms_reference of {n} boxes raised the peak by {extra / 1e6:.1f} MB"
