"""Conformance of RPN proposal selection, mmdet and detectron2 flavours (SPEC.md PROP-*).

The differential tests run in float64 so that decoding (exp) in the
implementation and in the oracle cannot disagree about an NMS decision.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conformance.checks import assert_close, raises_value_error, tensor, to_numpy
from oracles import proposals as oracle

pytestmark = pytest.mark.component("proposals")

IMAGE = (40, 48)  # (height, width)
F64 = torch.float64


@st.composite
def rpn_levels(draw, max_levels=3, max_per_level=12):
    """Per-level anchors (A,4), deltas (A,4), boxes (A,4) and distinct scores (A,)."""
    num_levels = draw(st.integers(1, max_levels))
    sizes = [draw(st.integers(0, max_per_level)) for _ in range(num_levels)]
    total = sum(sizes)
    ladder = np.array(draw(st.permutations(list(range(1, total + 1)))), dtype=np.float64)
    scores = np.split(ladder / max(total, 1), np.cumsum(sizes)[:-1])
    anchors, deltas, boxes = [], [], []
    for a in sizes:
        xy = np.array(draw(st.lists(st.tuples(st.integers(-8, 50), st.integers(-8, 42)),
                                    min_size=a, max_size=a)), dtype=np.float64).reshape(-1, 2)
        wh = np.array(draw(st.lists(st.tuples(st.integers(1, 24), st.integers(1, 24)),
                                    min_size=a, max_size=a)), dtype=np.float64).reshape(-1, 2)
        d = np.array(draw(st.lists(st.integers(-24, 24), min_size=4 * a, max_size=4 * a)),
                     dtype=np.float64).reshape(-1, 4) / 16
        anchors.append(np.concatenate([xy, xy + wh], axis=1))
        deltas.append(d)
        boxes.append(np.concatenate([xy, xy + wh], axis=1) + d * 4)  # may be degenerate
    return scores, deltas, anchors, boxes


def _t(arrays, device):
    return [tensor(a, device, F64) for a in arrays]


def _check_proposals(result, expected):
    boxes, scores, level_ids, rows = result
    e_boxes, e_scores, e_levels, e_rows = expected
    assert to_numpy(rows).tolist() == e_rows.tolist()
    assert to_numpy(level_ids).tolist() == e_levels.tolist()
    assert level_ids.dtype == torch.int64 and rows.dtype == torch.int64
    assert_close(boxes, e_boxes, what="boxes")
    assert_close(scores, e_scores, what="scores")


# --------------------------------------------------------------------------- mmdet
@pytest.mark.spec("PROP-1")
@pytest.mark.flavour("mmdet")
@given(levels=rpn_levels(), nms_pre=st.sampled_from([0, 3, 1000]),
       thr=st.sampled_from([0.5011, 0.7071]), min_size=st.sampled_from([0.0, 2.0, 6.5]),
       max_per_img=st.sampled_from([4, 1000]))
def test_mmdet_rpn_proposals_follow_the_mmdet_steps(impl, device, levels, nms_pre, thr,
                                                     min_size, max_per_img):
    mmdet_rpn_proposals = impl.get("mmdet_rpn_proposals")
    scores, deltas, anchors, _ = levels
    result = mmdet_rpn_proposals(_t(scores, device), _t(deltas, device), _t(anchors, device),
                                 IMAGE, nms_pre=nms_pre, iou_threshold=thr,
                                 min_bbox_size=min_size, max_per_img=max_per_img)
    _check_proposals(result, oracle.mmdet_rpn_proposals(
        scores, deltas, anchors, IMAGE, nms_pre, thr, min_size, max_per_img))


@pytest.mark.spec("PROP-1")
@pytest.mark.flavour("mmdet")
@given(levels=rpn_levels(max_levels=2))
def test_mmdet_rpn_proposals_apply_target_means_and_stds(impl, device, levels):
    mmdet_rpn_proposals = impl.get("mmdet_rpn_proposals")
    scores, deltas, anchors, _ = levels
    means, stds = (0.0, 0.0, 0.0, 0.0), (0.1, 0.1, 0.2, 0.2)
    result = mmdet_rpn_proposals(_t(scores, device), _t(deltas, device), _t(anchors, device),
                                 IMAGE, nms_pre=5, iou_threshold=0.7071, min_bbox_size=0.0,
                                 max_per_img=100, target_means=means, target_stds=stds)
    _check_proposals(result, oracle.mmdet_rpn_proposals(
        scores, deltas, anchors, IMAGE, 5, 0.7071, 0.0, 100, means, stds))


def _mmdet_one_level(impl, device, anchors, scores, **kw):
    fn = impl.get("mmdet_rpn_proposals")
    a = tensor(anchors, device, F64)
    return fn([tensor(scores, device, F64)], [torch.zeros_like(a)], [a], IMAGE, **kw)


@pytest.mark.spec("PROP-2")
@pytest.mark.flavour("mmdet")
def test_mmdet_min_bbox_size_keeps_a_side_equal_to_it(impl, device):
    anchors = [[0, 0, 4, 10], [10, 0, 13.5, 10], [20, 0, 20, 10]]  # widths 4, 3.5, 0
    kept = _mmdet_one_level(impl, device, anchors, [0.9, 0.8, 0.7], nms_pre=10,
                            iou_threshold=0.7, min_bbox_size=4.0, max_per_img=10)
    assert kept[3].tolist() == [0]
    kept = _mmdet_one_level(impl, device, anchors, [0.9, 0.8, 0.7], nms_pre=10,
                            iou_threshold=0.7, min_bbox_size=0.0, max_per_img=10)
    assert kept[3].tolist() == [0, 1, 2]  # min_bbox_size 0 keeps the zero-width box


_FLAT_ROW = [[0, 0, 4, 10], [10, 0, 13.5, 10], [50, 0, 60, 10]]  # widths 4, 3.5, then 0


@pytest.mark.spec("PROP-10")
@pytest.mark.flavour("mmdet")
def test_mmdet_3x_size_filter_is_strict_and_drops_border_flat_proposals(impl, device):
    # Row 2 lies beyond the width 48: clipped to [48, 0, 48, 10], zero width. mmdet 3.3
    # keeps w > min_bbox_size (rpn_head.py:278): at the configs' 0 it is dropped, and
    # min_bbox_size 3.5 drops the 3.5-wide row 1 too.
    kw = dict(nms_pre=10, iou_threshold=0.7, max_per_img=10, version="3.x")
    three = _mmdet_one_level(impl, device, _FLAT_ROW, [0.9, 0.8, 0.7], min_bbox_size=0.0, **kw)
    assert three[3].tolist() == [0, 1]
    three = _mmdet_one_level(impl, device, _FLAT_ROW, [0.9, 0.8, 0.7], min_bbox_size=3.5, **kw)
    assert three[3].tolist() == [0]


@pytest.mark.spec("PROP-10")
@pytest.mark.flavour("mmdet")
def test_mmdet_2x_size_filter_keeps_what_3x_drops(impl, device):
    # mmdet 2.11 keeps w >= min_bbox_size (rpn_head.py:225): the flat row survives at 0.
    kw = dict(nms_pre=10, iou_threshold=0.7, max_per_img=10, version="2.x")
    two = _mmdet_one_level(impl, device, _FLAT_ROW, [0.9, 0.8, 0.7], min_bbox_size=0.0, **kw)
    assert two[3].tolist() == [0, 1, 2]
    assert_close(two[0][2], np.array([48, 0, 48, 10], dtype=np.float64))
    two = _mmdet_one_level(impl, device, _FLAT_ROW, [0.9, 0.8, 0.7], min_bbox_size=4.0, **kw)
    assert two[3].tolist() == [0]


@pytest.mark.spec("PROP-10")
@pytest.mark.flavour("mmdet")
@given(levels=rpn_levels(), nms_pre=st.sampled_from([0, 3, 1000]),
       min_size=st.sampled_from([0.0, 2.0, 6.5]), max_per_img=st.sampled_from([4, 1000]))
def test_mmdet_3x_rpn_proposals_follow_the_mmdet_steps(impl, device, levels, nms_pre, min_size,
                                                        max_per_img):
    scores, deltas, anchors, _ = levels
    result = impl.get("mmdet_rpn_proposals")(
        _t(scores, device), _t(deltas, device), _t(anchors, device), IMAGE, nms_pre=nms_pre,
        iou_threshold=0.7071, min_bbox_size=min_size, max_per_img=max_per_img, version="3.x")
    _check_proposals(result, oracle.mmdet_rpn_proposals(
        scores, deltas, anchors, IMAGE, nms_pre, 0.7071, min_size, max_per_img, version="3.x"))


@pytest.mark.spec("PROP-3")
@pytest.mark.flavour("mmdet")
def test_mmdet_levels_do_not_suppress_each_other_and_top_k_is_per_level(impl, device):
    fn = impl.get("mmdet_rpn_proposals")
    same = tensor([[0, 0, 10, 10]] * 3, device, F64)
    scores = [tensor([0.9, 0.8, 0.7], device, F64), tensor([0.1, 0.2, 0.3], device, F64)]
    zeros = torch.zeros_like(same)
    out = fn(scores, [zeros, zeros], [same, same], IMAGE, nms_pre=2, iou_threshold=0.7,
             min_bbox_size=0.0, max_per_img=100)
    # Level 0 keeps its best (row 0); level 1's top-2 are rows 5 and 4, NMS keeps row 5.
    # Row 2 (0.7) beats every level-1 score but is outside level 0's top 2.
    assert out[3].tolist() == [0, 5]
    assert out[2].tolist() == [0, 1]


# --------------------------------------------------------------------------- detectron2
@pytest.mark.spec("PROP-4")
@pytest.mark.flavour("detectron2")
@given(levels=rpn_levels(), topk=st.sampled_from([0, 2, 5, 1000]),
       thr=st.sampled_from([0.5011, 0.7071]), min_size=st.sampled_from([0.0, 2.0, 6.5]),
       post=st.sampled_from([3, 1000]))
def test_find_top_rpn_proposals_follows_the_detectron2_steps(impl, device, levels, topk, thr,
                                                             min_size, post):
    find_top_rpn_proposals = impl.get("find_top_rpn_proposals")
    logits, _, _, boxes = levels
    result = find_top_rpn_proposals(_t(boxes, device), _t(logits, device), IMAGE,
                                    nms_thresh=thr, pre_nms_topk=topk, post_nms_topk=post,
                                    min_box_size=min_size, training=False)
    _check_proposals(result, oracle.find_top_rpn_proposals(
        boxes, logits, IMAGE, thr, topk, post, min_size, False))


def _d2(impl, device, levels_boxes, levels_logits, **kw):
    fn = impl.get("find_top_rpn_proposals")
    return fn([tensor(b, device, F64) for b in levels_boxes],
              [tensor(s, device, F64) for s in levels_logits], IMAGE, **kw)


@pytest.mark.spec("PROP-5")
@pytest.mark.flavour("detectron2")
def test_detectron2_min_box_size_is_strict_and_drops_empty_boxes(impl, device):
    boxes = [[0, 0, 4, 10], [10, 0, 14.5, 10], [20, 0, 20, 10], [60, 0, 70, 10]]
    logits = [3.0, 2.0, 1.0, 0.0]  # row 3 lies beyond the width 48: clipped to zero width
    out = _d2(impl, device, [boxes], [logits], nms_thresh=0.7, pre_nms_topk=10,
              post_nms_topk=10, min_box_size=4.0, training=False)
    assert out[3].tolist() == [1]
    out = _d2(impl, device, [boxes], [logits], nms_thresh=0.7, pre_nms_topk=10,
              post_nms_topk=10, min_box_size=0.0, training=False)
    assert out[3].tolist() == [0, 1]
    assert_close(out[0], np.array([[0, 0, 4, 10], [10, 0, 14.5, 10]], dtype=np.float64))


@pytest.mark.spec("PROP-9")
@pytest.mark.flavour("detectron2")
def test_detectron2_pre_nms_topk_zero_keeps_nothing(impl, device):
    # detectron2 proposal_utils.py takes topk(min(A, pre_nms_topk)): k = 0 selects no
    # anchor, unlike mmdet's nms_pre <= 0 (all anchors).
    boxes = [[0, 0, 10, 10], [20, 0, 30, 10], [0, 20, 10, 30]]
    out = _d2(impl, device, [boxes, boxes], [[3.0, 2.0, 1.0], [0.5, 0.4, 0.3]],
              nms_thresh=0.7, pre_nms_topk=0, post_nms_topk=10, min_box_size=0.0,
              training=False)
    assert tuple(out[0].shape) == (0, 4)
    assert out[3].tolist() == [] and out[2].tolist() == []
    out = _d2(impl, device, [boxes], [[3.0, 2.0, 1.0]], nms_thresh=0.7, pre_nms_topk=1,
              post_nms_topk=10, min_box_size=0.0, training=False)
    assert out[3].tolist() == [0]


@pytest.mark.spec("PROP-6")
@pytest.mark.flavour("detectron2")
def test_detectron2_non_finite_proposals_raise_in_training_and_are_dropped_otherwise(
        impl, device):
    boxes = [[0, 0, 10, 10], [20, 0, float("nan"), 10], [30, 0, 40, 10], [0, 20, 10, 30]]
    logits = [1.0, 2.0, float("inf"), 0.5]
    kw = dict(nms_thresh=0.7, pre_nms_topk=10, post_nms_topk=10, min_box_size=0.0)
    with pytest.raises(FloatingPointError):
        _d2(impl, device, [boxes], [logits], training=True, **kw)
    out = _d2(impl, device, [boxes], [logits], training=False, **kw)
    assert out[3].tolist() == [0, 3]


@pytest.mark.spec("PROP-3")
@pytest.mark.flavour("detectron2")
def test_detectron2_levels_do_not_suppress_each_other_and_top_k_is_per_level(impl, device):
    same = [[0, 0, 10, 10]] * 3
    out = _d2(impl, device, [same, same], [[0.9, 0.8, 0.7], [0.1, 0.2, 0.3]], nms_thresh=0.7,
              pre_nms_topk=2, post_nms_topk=100, min_box_size=0.0, training=False)
    assert out[3].tolist() == [0, 5]
    assert out[2].tolist() == [0, 1]


# --------------------------------------------------------------------------- shared
def _both_flavours(impl):
    runs = []
    if impl.has("mmdet_rpn_proposals") and impl.claims("mmdet"):
        fn = impl.get("mmdet_rpn_proposals")
        runs.append(lambda s, d, a, b, size, k: fn(s, d, a, size, nms_pre=1000,
                                                     iou_threshold=0.5011, min_bbox_size=0.0,
                                                     max_per_img=k))
    if impl.has("find_top_rpn_proposals") and impl.claims("detectron2"):
        fn2 = impl.get("find_top_rpn_proposals")
        runs.append(lambda s, d, a, b, size, k: fn2(b, s, size, nms_thresh=0.5011,
                                                    pre_nms_topk=1000, post_nms_topk=k,
                                                    min_box_size=0.0, training=False))
    if not runs:
        pytest.skip("no RPN proposal flavour implemented and claimed")
    return runs


@pytest.mark.spec("PROP-7")
@given(levels=rpn_levels(), k=st.integers(0, 6))
def test_proposals_are_few_sorted_and_inside_the_image(impl, device, levels, k):
    scores, deltas, anchors, boxes = levels
    for run in _both_flavours(impl):
        out_boxes, out_scores, level_ids, rows = run(_t(scores, device), _t(deltas, device),
                                                     _t(anchors, device), _t(boxes, device),
                                                     IMAGE, k)
        n = out_boxes.shape[0]
        assert n <= k and tuple(out_boxes.shape) == (n, 4)
        assert tuple(out_scores.shape) == tuple(level_ids.shape) == tuple(rows.shape) == (n,)
        s = to_numpy(out_scores)
        assert (np.diff(s) <= 0).all()
        b = to_numpy(out_boxes)
        assert (b[:, 0::2] >= 0).all() and (b[:, 0::2] <= IMAGE[1]).all()
        assert (b[:, 1::2] >= 0).all() and (b[:, 1::2] <= IMAGE[0]).all()


@pytest.mark.spec("PROP-8")
@pytest.mark.parametrize("case", ["level_count", "box_shape", "score_shape", "image_size"])
def test_proposal_functions_reject_malformed_levels(impl, device, case):
    ok_boxes = [tensor([[0, 0, 4, 4], [1, 1, 5, 5]], device, F64)]
    ok_scores = [tensor([0.5, 0.4], device, F64)]
    boxes, scores, size = ok_boxes, ok_scores, IMAGE
    if case == "level_count":
        boxes = ok_boxes * 2
    elif case == "box_shape":
        boxes = [ok_boxes[0][:, :3]]
    elif case == "score_shape":
        scores = [ok_scores[0][:1]]
    elif case == "image_size":
        size = (40,)
    tested = 0
    if impl.has("mmdet_rpn_proposals") and impl.claims("mmdet"):
        raises_value_error(impl.get("mmdet_rpn_proposals"), scores,
                           [torch.zeros_like(b) for b in boxes], boxes, size)
        tested += 1
    if impl.has("find_top_rpn_proposals") and impl.claims("detectron2"):
        raises_value_error(impl.get("find_top_rpn_proposals"), boxes, scores, size)
        tested += 1
    if not tested:
        pytest.skip("no RPN proposal flavour implemented and claimed")
