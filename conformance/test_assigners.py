"""Conformance: assigners (SPEC.md "Assigners", ASG-*)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from conformance.checks import (
    assert_close,
    peak_extra_bytes,
    raises_value_error,
    tensor,
    to_numpy,
)
from oracles import assignment as oracle
from conformance.strategies_assignment import boxes, labels_for, overlap_matrices
from golden.inputs import retinanet_anchors, rtmdet_points

pytestmark = pytest.mark.component("assigners")

RETINANET = dict(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0)
RPN = dict(pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3)
RCNN = dict(pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5, match_low_quality=False)

# Option sets the differential test draws from (thresholds on the 1/8 grid, so the
# float32 comparisons are exact).
OPTION_SETS = [
    dict(pos_iou_thr=0.5, neg_iou_thr=0.375, min_pos_iou=0.0),
    dict(pos_iou_thr=0.75, neg_iou_thr=0.25, min_pos_iou=0.25),
    dict(pos_iou_thr=0.625, neg_iou_thr=(0.125, 0.5), min_pos_iou=0.0),
    dict(pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5, match_low_quality=False),
    dict(pos_iou_thr=0.75, neg_iou_thr=0.375, min_pos_iou=0.125, gt_max_assign_all=False),
]


def _assigner(impl, **options):
    return impl.get("MaxIoUAssigner")(**options)


def _assign(impl, device, overlaps, gt_labels=None, **options):
    labels = None if gt_labels is None else tensor(gt_labels, device, torch.int64)
    return _assigner(impl, **options).assign_wrt_overlaps(tensor(overlaps, device), labels)


def _gt_inds(result) -> list[int]:
    return to_numpy(result.gt_inds).astype(np.int64).tolist()


# --------------------------------------------------------------------------- mmdet MaxIoU
@pytest.mark.spec("ASG-2")
@given(overlap_matrices(), st.sampled_from(range(len(OPTION_SETS))), st.data())
def test_max_iou_assignment_matches_the_step_list_oracle(impl, device, overlaps, which, data):
    options = OPTION_SETS[which]
    gt_labels = labels_for(data.draw, overlaps.shape[0])
    result = _assign(impl, device, overlaps, gt_labels, **options)
    gt_inds, max_overlaps, labels = oracle.max_iou_assign(overlaps, gt_labels=gt_labels,
                                                          **options)
    assert _gt_inds(result) == gt_inds.tolist()
    assert to_numpy(result.labels).astype(np.int64).tolist() == labels.tolist()
    assert_close(result.max_overlaps, max_overlaps, impl, what="max_overlaps")
    assert int(result.num_gts) == overlaps.shape[0]


@pytest.mark.spec("ASG-1")
@given(overlap_matrices(min_gts=1, min_priors=1), st.data())
def test_labels_agree_with_gt_inds(impl, device, overlaps, data):
    gt_labels = labels_for(data.draw, overlaps.shape[0], num_classes=7)
    result = _assign(impl, device, overlaps, gt_labels, **RETINANET)
    gt_inds = np.array(_gt_inds(result))
    labels = to_numpy(result.labels).astype(np.int64)
    assert result.gt_inds.dtype == torch.int64 and result.labels.dtype == torch.int64
    assert set(gt_inds.tolist()) <= set(range(-1, overlaps.shape[0] + 1))
    pos = gt_inds > 0
    assert (labels[pos] == gt_labels[gt_inds[pos] - 1]).all()
    assert (labels[~pos] == -1).all()
    no_labels = _assign(impl, device, overlaps, None, **RETINANET)
    assert no_labels.labels is None


@pytest.mark.spec("ASG-3")
@given(overlap_matrices(min_gts=1, min_priors=1), st.sampled_from([0.25, 0.375, 0.5]))
def test_negatives_have_best_iou_below_the_negative_threshold(impl, device, overlaps, neg):
    result = _assign(impl, device, overlaps, pos_iou_thr=0.625, neg_iou_thr=neg,
                     min_pos_iou=0.0)
    gt_inds = np.array(_gt_inds(result))
    best = overlaps.max(axis=0)
    assert (best[gt_inds == 0] < neg).all()
    # Every prior below the threshold is negative unless the low-quality step took it.
    at_some_gt_max = (overlaps == overlaps.max(axis=1, keepdims=True)).any(axis=0)
    assert (gt_inds[(best < neg) & ~at_some_gt_max] == 0).all()


@pytest.mark.spec("ASG-3")
def test_tuple_negative_range_is_half_open(impl, device):
    overlaps = [[0.0, 0.125, 0.25, 0.375, 0.5]]
    result = _assign(impl, device, overlaps, pos_iou_thr=0.75, neg_iou_thr=(0.125, 0.375),
                     match_low_quality=False)
    assert _gt_inds(result) == [-1, 0, 0, -1, -1]


@pytest.mark.spec("ASG-4")
@given(overlap_matrices(min_gts=1))
def test_positives_from_the_threshold_step_have_iou_at_least_pos_thr(impl, device, overlaps):
    result = _assign(impl, device, overlaps, pos_iou_thr=0.5, neg_iou_thr=0.375,
                     match_low_quality=False)
    gt_inds = np.array(_gt_inds(result))
    best = overlaps.max(axis=0) if overlaps.shape[1] else np.zeros(0)
    assert ((gt_inds > 0) == (best >= 0.5)).all()
    pos = gt_inds > 0
    assert (gt_inds[pos] - 1 == overlaps.argmax(axis=0)[pos]).all()


@pytest.mark.spec("ASG-4")
@pytest.mark.parametrize("options, iou, expected", [
    (RETINANET, 0.4, -1),  # == neg thr: not negative, below pos: ignored
    (RETINANET, 0.5, 1),   # == pos thr: positive
    (RPN, 0.3, -1),        # == neg thr: ignored
    (RPN, 0.7, 1),
    (RCNN, 0.5, 1),
    (RCNN, 0.49, 0),
])
def test_threshold_boundaries_are_inclusive_for_positives_exclusive_for_negatives(
        impl, device, options, iou, expected):
    # Two priors: the probe and a better one, so the low-quality step does not touch
    # the probe (it is not at the gt's maximum).
    overlaps = [[iou, 0.9]]
    result = _assign(impl, device, overlaps, **options)
    assert _gt_inds(result)[0] == expected


@pytest.mark.spec("ASG-5")
def test_low_quality_match_assigns_every_tied_anchor(impl, device):
    overlaps = [[0.25, 0.25, 0.125, 0.0],
                [0.0, 0.125, 0.375, 0.375]]
    result = _assign(impl, device, overlaps, **RETINANET)
    assert _gt_inds(result) == [1, 1, 2, 2]


@pytest.mark.spec("ASG-5")
def test_low_quality_ties_go_to_the_later_gt_and_overwrite_positives(impl, device):
    # prior 0: best for gt0 (0.9 >= pos) but also gt1's maximum (0.6) -> gt1 (later) wins.
    overlaps = [[0.9, 0.1],
                [0.6, 0.2]]
    result = _assign(impl, device, overlaps, **RETINANET)
    assert _gt_inds(result) == [2, 0]
    # Both gts at their maximum on the same prior: the later gt wins.
    tied = [[0.3, 0.0], [0.3, 0.0]]
    assert _gt_inds(_assign(impl, device, tied, **RETINANET)) == [2, 0]


@pytest.mark.spec("ASG-5")
def test_low_quality_step_respects_min_pos_iou(impl, device):
    overlaps = [[0.25, 0.0], [0.0, 0.375]]
    result = _assign(impl, device, overlaps, pos_iou_thr=0.7, neg_iou_thr=0.2,
                     min_pos_iou=0.3)
    # gt0's best 0.25 < 0.3: prior 0 stays ignored (0.25 in [0.2, 0.7)); gt1 claims prior 1.
    assert _gt_inds(result) == [-1, 2]


@pytest.mark.spec("ASG-6")
def test_without_assign_all_only_the_first_argmax_prior_is_claimed(impl, device):
    overlaps = [[0.25, 0.25, 0.0],
                [0.0, 0.125, 0.125]]
    result = _assign(impl, device, overlaps, pos_iou_thr=0.5, neg_iou_thr=0.1,
                     min_pos_iou=0.0, gt_max_assign_all=False)
    # gt0 claims prior 0 only; gt1 claims its first argmax, prior 1 (later gt wins there
    # over nothing); prior 2 (0.125) is ignored.
    assert _gt_inds(result) == [1, 2, -1]


@pytest.mark.spec("ASG-7")
@given(overlap_matrices(min_gts=1, min_priors=1), st.sampled_from([0.0, 0.25, 0.5]))
def test_every_eligible_gt_keeps_its_best_priors_unless_a_later_gt_takes_them(
        impl, device, overlaps, min_pos_iou):
    result = _assign(impl, device, overlaps, pos_iou_thr=0.75, neg_iou_thr=0.25,
                     min_pos_iou=min_pos_iou)
    gt_inds = np.array(_gt_inds(result))
    for i, row in enumerate(overlaps):
        if row.max() >= min_pos_iou:
            at_max = row == row.max()
            assert (gt_inds[at_max] >= i + 1).all()
    # In particular the last eligible gt always owns a prior.
    eligible = np.nonzero(overlaps.max(axis=1) >= min_pos_iou)[0]
    if len(eligible):
        assert (gt_inds == eligible[-1] + 1).any()


@pytest.mark.spec("ASG-8")
@pytest.mark.parametrize("num_priors", [0, 5])
def test_no_gts_makes_every_prior_negative(impl, device, num_priors):
    result = _assign(impl, device, np.zeros((0, num_priors)), np.zeros(0, np.int64),
                     **RETINANET)
    assert _gt_inds(result) == [0] * num_priors
    assert_close(result.max_overlaps, np.zeros(num_priors), impl)
    assert to_numpy(result.labels).tolist() == [-1] * num_priors
    assert int(result.num_gts) == 0


@pytest.mark.spec("ASG-8")
def test_no_priors_gives_empty_results(impl, device):
    result = _assign(impl, device, np.zeros((3, 0)), np.array([1, 2, 3]), **RETINANET)
    assert result.gt_inds.shape == (0,) and result.max_overlaps.shape == (0,)
    assert result.labels.shape == (0,)
    assert int(result.num_gts) == 3
    boxes_result = _assigner(impl, **RETINANET).assign(
        torch.zeros((0, 4), device=device), tensor([[0, 0, 4, 4]], device))
    assert boxes_result.gt_inds.shape == (0,)


@pytest.mark.spec("ASG-9")
@given(boxes(min_size=1, max_size=6), boxes(min_size=1, max_size=3),
       boxes(min_size=1, max_size=2), st.booleans())
@settings(max_examples=20)
def test_ignored_anchors_are_exactly_those_over_ignore_iof_thr(impl, device, priors, gts,
                                                                ignore, wrt_candidates):
    thr = 0.5
    assigner = _assigner(impl, pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0,
                         ignore_iof_thr=thr, ignore_wrt_candidates=wrt_candidates)
    result = assigner.assign(tensor(priors, device), tensor(gts, device),
                             tensor(ignore, device))
    ignored = oracle.ignore_columns(priors, ignore, thr, wrt_candidates)
    overlaps = oracle.iou_matrix(gts, priors)
    overlaps[:, ignored] = -1
    expected, max_overlaps, _ = oracle.max_iou_assign(overlaps, 0.5, 0.4, 0.0)
    assert _gt_inds(result) == expected.tolist()
    assert_close(result.max_overlaps, max_overlaps, impl, atol=1e-5, rtol=1e-5)
    if not ignored.all():
        assert (np.array(_gt_inds(result))[ignored] == -1).all()


@pytest.mark.spec("ASG-9")
def test_ignore_boxes_are_unused_without_a_positive_ignore_iof_thr(impl, device):
    priors = tensor([[0, 0, 10, 10], [20, 20, 30, 30]], device)
    gts = tensor([[0, 0, 10, 10]], device)
    ignore = tensor([[20, 20, 30, 30]], device)
    result = _assigner(impl, **RETINANET).assign(priors, gts, ignore)
    assert _gt_inds(result) == [1, 0]
    with_ignore = _assigner(impl, ignore_iof_thr=0.5, **RETINANET).assign(priors, gts, ignore)
    assert _gt_inds(with_ignore) == [1, -1]
    assert_close(with_ignore.max_overlaps, [1.0, -1.0], impl)


@pytest.mark.spec("ASG-10")
@given(overlap_matrices(min_gts=1))
def test_max_overlaps_is_the_best_iou_of_each_prior(impl, device, overlaps):
    result = _assign(impl, device, overlaps, **RETINANET)
    expected = overlaps.max(axis=0) if overlaps.shape[1] else np.zeros(0)
    assert_close(result.max_overlaps, expected, impl)


@pytest.mark.spec("ASG-11")
@given(boxes(max_size=7), boxes(max_size=4), st.data())
@settings(max_examples=25)
def test_assign_on_boxes_equals_assign_on_their_iou_matrix(impl, device, priors, gts, data):
    gt_labels = labels_for(data.draw, len(gts))
    result = _assigner(impl, **RETINANET).assign(
        tensor(priors, device), tensor(gts, device), None, tensor(gt_labels, device, torch.int64))
    overlaps = oracle.iou_matrix(gts, priors)
    # Keep away from float32 rounding at the thresholds and ties.
    assume(np.all(np.abs(overlaps - 0.4) > 1e-4) and np.all(np.abs(overlaps - 0.5) > 1e-4))
    for col in overlaps.T:
        top = np.sort(col)[::-1]
        assume(len(top) < 2 or top[0] - top[1] > 1e-4 or top[0] == 0)
    for row in overlaps:
        if row.size:  # no priors: nothing can tie (empty priors have their own test)
            assume(np.sum(np.abs(row - row.max()) < 1e-4) == np.sum(row == row.max()))
    expected, max_overlaps, labels = oracle.max_iou_assign(overlaps, gt_labels=gt_labels,
                                                           **RETINANET)
    assert _gt_inds(result) == expected.tolist()
    assert to_numpy(result.labels).astype(np.int64).tolist() == labels.tolist()
    assert_close(result.max_overlaps, max_overlaps, impl)


@pytest.mark.spec("ASG-12")
@given(overlap_matrices(min_gts=1, max_gts=4, min_priors=1), st.randoms(use_true_random=False))
def test_permuting_gts_permutes_the_assignment(impl, device, overlaps, rnd):
    num_gts = overlaps.shape[0]
    for col in overlaps.T:  # no prior with tied best gts
        assume(np.sum(col == col.max()) == 1)
    at_max = overlaps == overlaps.max(axis=1, keepdims=True)
    assume((at_max.sum(axis=0) <= 1).all())  # no prior at two gts' maximum
    perm = list(range(num_gts))
    rnd.shuffle(perm)
    base = np.array(_gt_inds(_assign(impl, device, overlaps, **RETINANET)))
    permuted = np.array(_gt_inds(_assign(impl, device, overlaps[perm], **RETINANET)))
    # Row r of the permuted matrix is gt perm[r]: map 1-based indices back.
    mapped = np.where(permuted > 0, np.array(perm + [0])[np.maximum(permuted - 1, 0)] + 1,
                      permuted)
    assert mapped.tolist() == base.tolist()


@pytest.mark.spec("ASG-13")
@pytest.mark.flavour("mmdet")
def test_a_gt_with_zero_iou_everywhere_claims_every_prior(impl, device):
    overlaps = [[0.8, 0.0, 0.3],
                [0.0, 0.0, 0.0]]
    result = _assign(impl, device, overlaps, np.array([5, 9]), **RETINANET)
    assert _gt_inds(result) == [2, 2, 2]
    assert to_numpy(result.labels).tolist() == [9, 9, 9]
    # Degenerate (zero-area) gt box: IoU 0 with everything, same outcome on boxes.
    on_boxes = _assigner(impl, **RETINANET).assign(
        tensor([[0, 0, 10, 10], [50, 50, 60, 60]], device),
        tensor([[0, 0, 10, 10], [5, 5, 5, 5]], device))
    assert _gt_inds(on_boxes) == [2, 2]


@pytest.mark.spec("ASG-14")
def test_max_iou_assigner_rejects_bad_inputs(impl, device):
    assigner = _assigner(impl, **RETINANET)
    raises_value_error(assigner.assign_wrt_overlaps, tensor([0.5, 0.2], device))
    raises_value_error(assigner.assign_wrt_overlaps, tensor([[0.5, float("nan")]], device))
    raises_value_error(assigner.assign_wrt_overlaps, tensor([[0.5, 0.2]], device),
                       tensor([1, 2], device, torch.int64), match="gt_labels")
    raises_value_error(assigner.assign_wrt_overlaps, tensor([[0.5, 0.2]], device),
                       tensor([1.0], device), match="gt_labels")
    good = tensor([[0, 0, 4, 4]], device)
    raises_value_error(assigner.assign, tensor([[0, 0, 4]], device), good, match="bboxes")
    raises_value_error(assigner.assign, tensor([[0, 0, float("inf"), 4]], device), good,
                       match="bboxes")
    raises_value_error(assigner.assign, good, tensor([[0, 0, float("nan"), 4]], device),
                       match="gt_bboxes")
    if device.type != "cpu":
        raises_value_error(assigner.assign, good, good.cpu())
    raises_value_error(impl.get("MaxIoUAssigner"), pos_iou_thr=0.5, neg_iou_thr="0.4")
    raises_value_error(impl.get("MaxIoUAssigner"), pos_iou_thr=0.5, neg_iou_thr=(0.1, 0.2, 0.3))


# --------------------------------------------------------------------------- detectron2 Matcher
D2_SETTINGS = [
    ([0.375, 0.625], [0, -1, 1], True),
    ([0.5], [0, 1], False),
    ([0.25, 0.5], [0, -1, 1], False),
    ([0.125, 0.25, 0.75], [-1, 0, -1, 1], True),
]


@pytest.mark.spec("ASG-20")
@pytest.mark.flavour("detectron2")
@given(overlap_matrices(min_gts=1, min_priors=1), st.sampled_from(range(len(D2_SETTINGS))))
def test_detectron2_matcher_matches_the_oracle(impl, device, overlaps, which):
    thresholds, labels, low_quality = D2_SETTINGS[which]
    matcher = impl.get("Matcher")(thresholds, labels, allow_low_quality_matches=low_quality)
    matches, match_labels = matcher(tensor(overlaps, device))
    exp_matches, exp_labels = oracle.detectron2_match(overlaps, thresholds, labels, low_quality)
    assert to_numpy(matches).tolist() == exp_matches.tolist()
    assert to_numpy(match_labels).astype(np.int64).tolist() == exp_labels.tolist()
    assert matches.dtype == torch.int64 and match_labels.dtype == torch.int8


@pytest.mark.spec("ASG-20")
@pytest.mark.flavour("detectron2")
def test_detectron2_matcher_worked_example(impl, device):
    # The style of detectron2's own test: 3 gts x 4 priors, RPN thresholds.
    quality = [[0.1, 0.7, 0.3, 0.0],
               [0.0, 0.2, 0.0, 0.5],
               [0.4, 0.0, 0.3, 0.0]]
    matcher = impl.get("Matcher")([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=False)
    matches, labels = matcher(tensor(quality, device, torch.float64))
    assert to_numpy(matches).tolist() == [2, 0, 0, 1]
    assert to_numpy(labels).tolist() == [-1, 1, -1, -1]


@pytest.mark.spec("ASG-21")
@pytest.mark.flavour("detectron2")
def test_detectron2_low_quality_changes_labels_not_matches(impl, device):
    quality = [[0.9, 0.8, 0.0],
               [0.0, 0.8, 0.0]]
    matcher = impl.get("Matcher")([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)
    matches, labels = matcher(tensor(quality, device, torch.float64))
    assert to_numpy(matches).tolist() == [0, 0, 0]
    assert to_numpy(labels).tolist() == [1, 1, 0]
    # A gt with quality 0 everywhere makes every prior positive.
    zero_gt = [[0.9, 0.0], [0.0, 0.0]]
    _, labels = matcher(tensor(zero_gt, device, torch.float64))
    assert to_numpy(labels).tolist() == [1, 1]


@pytest.mark.spec("ASG-22")
@pytest.mark.flavour("detectron2")
def test_detectron2_matcher_without_gts_uses_the_first_label(impl, device):
    matcher = impl.get("Matcher")([0.3, 0.7], [-1, 0, 1])
    matches, labels = matcher(torch.zeros((0, 4), device=device))
    assert to_numpy(matches).tolist() == [0, 0, 0, 0]
    assert to_numpy(labels).tolist() == [-1, -1, -1, -1]
    matches, labels = matcher(torch.zeros((2, 0), device=device))
    assert matches.shape == (0,) and labels.shape == (0,)


@pytest.mark.spec("ASG-23")
@pytest.mark.flavour("detectron2")
def test_detectron2_matcher_rejects_bad_configuration_and_inputs(impl, device):
    Matcher = impl.get("Matcher")
    raises_value_error(Matcher, [0.7, 0.3], [0, -1, 1])
    raises_value_error(Matcher, [0.0, 0.7], [0, -1, 1])
    raises_value_error(Matcher, [0.3, 0.7], [0, 2, 1])
    raises_value_error(Matcher, [0.3, 0.7], [0, 1])
    matcher = Matcher([0.3, 0.7], [0, -1, 1])
    raises_value_error(matcher, tensor([[0.5, -0.1]], device))
    raises_value_error(matcher, tensor([0.5, 0.1], device))


# --------------------------------------------------------------------------- torchvision Matcher
@pytest.mark.spec("ASG-26")
@pytest.mark.flavour("torchvision")
@given(overlap_matrices(min_gts=1, min_priors=1), st.booleans(),
       st.sampled_from([(0.5, 0.375), (0.5, 0.5), (0.75, 0.25)]))
def test_torchvision_matcher_matches_the_oracle(impl, device, overlaps, low_quality, thr):
    high, low = thr
    matcher = impl.get("TorchvisionMatcher")(high, low, allow_low_quality_matches=low_quality)
    matches = matcher(tensor(overlaps, device))
    expected = oracle.torchvision_match(overlaps, high, low, low_quality)
    assert to_numpy(matches).tolist() == expected.tolist()


@pytest.mark.spec("ASG-26")
@pytest.mark.flavour("torchvision")
def test_torchvision_matcher_encodes_below_and_between(impl, device):
    quality = [[0.3, 0.4, 0.45, 0.5, 0.9]]
    matcher = impl.get("TorchvisionMatcher")(0.5, 0.4, allow_low_quality_matches=False)
    matches = matcher(tensor(quality, device))
    assert to_numpy(matches).tolist() == [-1, -2, -2, 0, 0]


@pytest.mark.spec("ASG-27")
@pytest.mark.flavour("torchvision")
def test_torchvision_low_quality_restores_the_argmax(impl, device):
    quality = [[0.3, 0.3, 0.1],
               [0.0, 0.35, 0.2]]
    matcher = impl.get("TorchvisionMatcher")(0.5, 0.4, allow_low_quality_matches=True)
    # prior 0 at gt0's max (0.3, tied with prior 1) -> argmax gt 0; prior 1 at gt1's
    # max -> argmax gt 1; prior 2 below low.
    assert to_numpy(matcher(tensor(quality, device))).tolist() == [0, 1, -1]


@pytest.mark.spec("ASG-28")
@pytest.mark.flavour("torchvision")
def test_torchvision_matcher_rejects_empty_matrices(impl, device):
    matcher = impl.get("TorchvisionMatcher")(0.5, 0.4)
    raises_value_error(matcher, torch.zeros((0, 3), device=device))
    raises_value_error(matcher, torch.zeros((2, 0), device=device))


# --------------------------------------------------------------------------- RTMDet DSL
@st.composite
def dsl_problems(draw, max_priors: int = 12, max_gts: int = 3, num_classes: int = 3):
    """Float64 inputs of a small DSL problem: scores, decoded boxes, priors, gts, labels."""
    n = draw(st.integers(0, max_priors))
    g = draw(st.integers(0, max_gts))
    stride = draw(st.sampled_from([4.0, 8.0]))
    xy = np.array(draw(st.lists(st.tuples(st.integers(0, 16), st.integers(0, 16)),
                                min_size=n, max_size=n)), dtype=np.float64).reshape(n, 2) * 2
    priors = np.concatenate([xy, np.full((n, 2), stride)], axis=1)
    decoded = boxes(min_size=n, max_size=n, extent=24, max_wh=16)
    gts = boxes(min_size=g, max_size=g, extent=24, max_wh=16)
    scores = np.array(draw(st.lists(st.integers(-24, 24), min_size=n * num_classes,
                                    max_size=n * num_classes)), dtype=np.float64)
    scores = scores.reshape(n, num_classes) / 8.0
    labels = labels_for(draw, g, num_classes)
    return scores, draw(decoded), priors, draw(gts), labels


def _dsl_inputs(device, problem):
    scores, decoded, priors, gts, labels = problem
    f64 = torch.float64
    return (tensor(scores, device, f64), tensor(decoded, device, f64), tensor(priors, device, f64),
            tensor(gts, device, f64), tensor(labels, device, torch.int64))


@pytest.mark.spec("ASG-31")
@given(dsl_problems(max_priors=8))
def test_dsl_cost_equals_the_full_class_sum(impl, device, problem):
    scores, decoded, priors, gts, labels = problem
    assume(len(priors) > 0 and len(gts) > 0)
    assigner = impl.get("DynamicSoftLabelAssigner")()
    cost = assigner.cost_matrix(*_dsl_inputs(device, problem))
    expected = oracle.dsl_cost(scores, decoded, priors, gts, labels)
    assert_close(cost, expected, impl, rtol=1e-9, atol=1e-9, what="cost")


@pytest.mark.spec("ASG-31")
def test_dsl_cost_with_many_classes_in_float32(impl, device):
    rng = np.random.default_rng(3)
    n, g, c = 6, 2, 80
    scores = rng.normal(size=(n, c)) * 3
    priors = np.concatenate([rng.integers(0, 32, size=(n, 2)), np.full((n, 2), 8)], 1)
    decoded = np.concatenate([priors[:, :2] - 6, priors[:, :2] + 7], 1)
    gts = np.array([[0, 0, 20, 24], [8, 4, 40, 30]], dtype=np.float64)
    labels = np.array([3, 79])
    assigner = impl.get("DynamicSoftLabelAssigner")()
    cost = assigner.cost_matrix(tensor(scores, device), tensor(decoded, device),
                                tensor(priors, device), tensor(gts, device),
                                tensor(labels, device, torch.int64))
    expected = oracle.dsl_cost(scores, decoded, priors, gts, labels)
    assert_close(cost, expected, impl, rtol=1e-4, atol=1e-3, what="cost")


@st.composite
def cost_and_iou_matrices(draw, max_cand: int = 10, max_gts: int = 4):
    v = draw(st.integers(1, max_cand))
    g = draw(st.integers(1, max_gts))
    cost = np.array(draw(st.lists(st.integers(0, 12), min_size=v * g, max_size=v * g)),
                    dtype=np.float64).reshape(v, g) / 4.0
    ious = np.array(draw(st.lists(st.integers(0, 8), min_size=v * g, max_size=v * g)),
                    dtype=np.float64).reshape(v, g) / 8.0
    return cost, ious


@pytest.mark.spec("ASG-32")
@given(cost_and_iou_matrices(), st.sampled_from([1, 3, 13]))
def test_dynamic_k_matching_matches_the_oracle(impl, device, matrices, topk):
    cost, ious = matrices
    # Ties in a gt's cost column leave the selection order open (strict tier only).
    for col in cost.T:
        assume(len(set(col.tolist())) == len(col))
    assigner = impl.get("DynamicSoftLabelAssigner")(topk=topk)
    matched_gt, matched_iou = assigner.dynamic_k_matching(
        tensor(cost, device, torch.float64), tensor(ious, device, torch.float64))
    exp_gt, exp_iou = oracle.dynamic_k_matching(cost, ious, topk)
    assert to_numpy(matched_gt).tolist() == exp_gt.tolist()
    assert_close(matched_iou, exp_iou, impl)


@pytest.mark.spec("ASG-32")
def test_dynamic_k_is_the_truncated_sum_of_top_ious_at_least_one(impl, device):
    # gt0: top-3 IoUs 0.9 + 0.8 + 0.7 = 2.4 -> k = 2; gt1: 0.1 + 0.1 + 0 -> k = 1.
    ious = [[0.9, 0.1], [0.8, 0.1], [0.7, 0.0], [0.6, 0.0]]
    cost = [[3.0, 9.0], [1.0, 9.0], [2.0, 9.0], [4.0, 0.5]]  # k = 3 would also take prior 0
    assigner = impl.get("DynamicSoftLabelAssigner")(topk=3)
    matched_gt, matched_iou = assigner.dynamic_k_matching(
        tensor(cost, device, torch.float64), tensor(ious, device, torch.float64))
    assert to_numpy(matched_gt).tolist() == [-1, 0, 0, 1]
    assert_close(matched_iou, [0.0, 0.8, 0.7, 0.0], impl)


@pytest.mark.spec("ASG-32")
def test_conflicts_go_to_the_lowest_cost_gt_over_all_gts(impl, device):
    # Prior 0 is chosen by gt0 and gt1 (k = 1 each); its cheapest gt is gt2, which
    # did not choose it, and upstream still moves it there.
    cost = [[1.0, 1.0, 0.5], [5.0, 5.0, 0.1]]
    ious = [[0.5, 0.5, 0.2], [0.1, 0.1, 0.3]]
    assigner = impl.get("DynamicSoftLabelAssigner")(topk=13)
    matched_gt, _ = assigner.dynamic_k_matching(tensor(cost, device, torch.float64),
                                                tensor(ious, device, torch.float64))
    assert to_numpy(matched_gt).tolist() == [2, 2]
    # Tied lowest cost: the first gt wins.
    cost = [[1.0, 1.0], [5.0, 5.0]]
    matched_gt, _ = assigner.dynamic_k_matching(tensor(cost, device, torch.float64),
                                                tensor([[0.5, 0.5], [0.1, 0.1]], device,
                                                       torch.float64))
    assert to_numpy(matched_gt).tolist()[0] == 0


@pytest.mark.spec("ASG-S1")
@pytest.mark.strict_tier
def test_equal_costs_are_selected_in_prior_order(impl, device):
    cost = [[1.0], [1.0], [1.0]]
    ious = [[0.6], [0.6], [0.1]]  # k = int(1.3) = 1
    assigner = impl.get("DynamicSoftLabelAssigner")()
    matched_gt, _ = assigner.dynamic_k_matching(tensor(cost, device, torch.float64),
                                                tensor(ious, device, torch.float64))
    assert to_numpy(matched_gt).tolist() == [0, -1, -1]


@pytest.mark.spec("ASG-33")
@given(dsl_problems(), st.sampled_from([2, 13]))
def test_dsl_assignment_matches_the_oracle(impl, device, problem, topk):
    scores, decoded, priors, gts, labels = problem
    assigner = impl.get("DynamicSoftLabelAssigner")(topk=topk)
    result = assigner.assign(*_dsl_inputs(device, problem))
    gt_inds, max_overlaps, exp_labels = oracle.dsl_assign(scores, decoded, priors, gts, labels,
                                                          topk=topk)
    assert _gt_inds(result) == gt_inds.tolist()
    assert to_numpy(result.labels).astype(np.int64).tolist() == exp_labels.tolist()
    assert_close(result.max_overlaps, max_overlaps, impl)


@pytest.mark.spec("ASG-30")
def test_dsl_candidates_need_the_point_strictly_inside(impl, device):
    # Prior 0 on the gt's left edge, prior 1 inside, prior 2 outside.
    priors = [[0.0, 5.0, 8.0, 8.0], [5.0, 5.0, 8.0, 8.0], [20.0, 20.0, 8.0, 8.0]]
    decoded = [[0.0, 0.0, 10.0, 10.0]] * 3
    gts = [[0.0, 0.0, 10.0, 10.0]]
    assigner = impl.get("DynamicSoftLabelAssigner")()
    result = assigner.assign(tensor(np.zeros((3, 2)), device), tensor(decoded, device),
                             tensor(priors, device), tensor(gts, device),
                             tensor([1], device, torch.int64))
    assert _gt_inds(result) == [0, 1, 0]
    assert to_numpy(result.labels).tolist() == [-1, 1, -1]
    assert_close(result.max_overlaps, [-1e8, 1.0, -1e8], impl)


@pytest.mark.spec("ASG-34")
@pytest.mark.parametrize("case", ["no_gts", "no_priors", "no_candidates"])
def test_dsl_empty_cases_give_an_all_negative_result(impl, device, case):
    priors = [[5.0, 5.0, 8.0, 8.0], [50.0, 50.0, 8.0, 8.0]]
    gts = [[0.0, 0.0, 10.0, 10.0]]
    if case == "no_priors":
        priors = np.zeros((0, 4))
    if case == "no_gts":
        gts = np.zeros((0, 4))
    if case == "no_candidates":
        gts = [[100.0, 100.0, 110.0, 110.0]]
    n, g = len(priors), len(gts)
    assigner = impl.get("DynamicSoftLabelAssigner")()
    result = assigner.assign(tensor(np.zeros((n, 2)), device),
                             tensor(np.tile([[0.0, 0.0, 10.0, 10.0]], (n, 1)), device),
                             tensor(priors, device), tensor(gts, device),
                             tensor(np.zeros(g), device, torch.int64))
    assert _gt_inds(result) == [0] * n
    assert to_numpy(result.labels).tolist() == [-1] * n
    assert_close(result.max_overlaps, np.zeros(n), impl)


@pytest.mark.spec("ASG-35")
def test_dsl_one_gt_may_hold_more_than_topk_positives(impl, device):
    # ASG-35's example (mmdet 3.3 gives the same gt_inds): gts 1 and 2 both select the
    # candidate at (2, 2), gt 3 the one at (4, 2); the shared one goes to its cheapest gt, 3.
    priors = [[0.0, 0.0, 4.0, 4.0]] * 6 + [[2.0, 2.0, 4.0, 4.0], [4.0, 2.0, 4.0, 4.0]]
    gts = [[0.0, 1.0, 1.0, 2.0], [0.0, 1.0, 1.0, 2.0], [0.0, 0.0, 7.0, 3.0]]
    result = impl.get("DynamicSoftLabelAssigner")(topk=1).assign(
        tensor(np.zeros((8, 3)), device), tensor([[0.0, 0.0, 1.0, 1.0]] * 8, device),
        tensor(priors, device), tensor(gts, device), tensor([0, 0, 0], device, torch.int64))
    assert _gt_inds(result) == [0, 0, 0, 0, 0, 0, 3, 3]


@pytest.mark.spec("ASG-35")
@given(dsl_problems(max_priors=14), st.sampled_from([1, 3, 13]))
def test_dsl_positives_are_candidates_and_each_gt_has_at_most_topk(impl, device, problem, topk):
    scores, decoded, priors, gts, labels = problem
    result = impl.get("DynamicSoftLabelAssigner")(topk=topk).assign(*_dsl_inputs(device, problem))
    gt_inds = np.array(_gt_inds(result))
    candidates = np.array([any(g[0] < p[0] < g[2] and g[1] < p[1] < g[3] for g in gts)
                           for p in priors], dtype=bool)
    assert not (gt_inds[~candidates] != 0).any()
    assert (gt_inds > 0).sum() <= topk * len(gts)  # one gt may hold more: see the next test
    if candidates.any() and len(gts):
        assert (gt_inds > 0).any()
    mo = to_numpy(result.max_overlaps)[gt_inds > 0]
    assert ((mo >= 0) & (mo <= 1)).all()


@pytest.mark.spec("ASG-36")
def test_dsl_rejects_bad_inputs(impl, device):
    assigner = impl.get("DynamicSoftLabelAssigner")()
    scores = tensor(np.zeros((2, 3)), device)
    decoded = tensor([[0, 0, 4, 4], [1, 1, 5, 5]], device)
    priors = tensor([[2, 2, 8, 8], [3, 3, 8, 8]], device)
    gts = tensor([[0, 0, 4, 4]], device)
    labels = tensor([1], device, torch.int64)
    raises_value_error(assigner.assign, scores[:1], decoded, priors, gts, labels,
                       match="pred_scores")
    raises_value_error(assigner.assign, scores, decoded[:, :3], priors, gts, labels,
                       match="decoded_bboxes")
    raises_value_error(assigner.assign, scores, decoded, priors, gts,
                       tensor([3], device, torch.int64), match="gt_labels")
    raises_value_error(assigner.assign, scores, decoded, priors, gts, tensor([1.0], device),
                       match="gt_labels")
    raises_value_error(assigner.assign, scores, decoded, priors,
                       tensor([[0, 0, float("nan"), 4]], device), labels, match="gt_bboxes")
    raises_value_error(assigner.assign, scores, decoded, tensor([[2, 2, 0, 0], [3, 3, 8, 8]],
                                                                device), gts, labels,
                       match="priors")
    raises_value_error(impl.get("DynamicSoftLabelAssigner"), topk=0)


# --------------------------------------------------------------------------- memory bounds
def _random_gts(num, height, width, seed, device):
    g = torch.Generator().manual_seed(seed)
    wh = torch.rand(num, 2, generator=g) * 200 + 16
    xy = torch.rand(num, 2, generator=g) * (torch.tensor([width, height]) - wh)
    return torch.cat([xy, xy + wh], dim=1).to(device)


@pytest.mark.spec("ASG-37")
@pytest.mark.flavour("mmdet")
def test_max_iou_assignment_of_500_gts_stays_memory_bounded(impl, device):
    anchors = retinanet_anchors().to(device)  # (182403, 4), built from the formula
    gts = _random_gts(500, 800, 1216, seed=0, device=device)
    labels = (torch.arange(500) % 80).to(device)
    assigner = impl.get("MaxIoUAssigner")(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0)
    extra, result = peak_extra_bytes(lambda: assigner.assign(anchors, gts, gt_labels=labels),
                                     device)
    one_matrix = 500 * anchors.shape[0] * 4
    assert result.gt_inds.shape == (anchors.shape[0],)
    assert extra <= 2.5 * one_matrix, (
        f"peak grew by {extra / one_matrix:.2f}x one (500, 182403) float32 matrix")


@pytest.mark.spec("ASG-38")
@pytest.mark.flavour("mmdet")
def test_dsl_assignment_of_300_gts_never_holds_priors_by_gts_by_classes(impl, device):
    priors = rtmdet_points().to(device)  # (8400, 4): x, y, stride_w, stride_h
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(priors.shape[0], 80, generator=g).to(device)
    centres = priors[:, :2]
    decoded = torch.cat([centres - 24, centres + 24], dim=1)
    gts = _random_gts(300, 640, 640, seed=1, device=device)
    labels = (torch.arange(300) % 80).to(device)
    assigner = impl.get("DynamicSoftLabelAssigner")(soft_center_radius=3.0, topk=13,
                                                   iou_weight=3.0)
    extra, result = peak_extra_bytes(
        lambda: assigner.assign(logits, decoded, priors, gts, labels), device)
    full_cost = priors.shape[0] * 300 * 80 * 4
    assert result.gt_inds.shape == (priors.shape[0],)
    assert extra < full_cost, (
        f"peak grew by {extra / 2**20:.0f} MiB, at least one (8400, 300, 80) float32 tensor")


# --------------------------------------------------------------------------- MatcherAssigner
def _matcher_assigner_expected(flavour, priors, gts, gt_labels):
    """gt_inds, max_overlaps, labels of ASG-39 from the oracles' IoU matrix and matchers."""
    quality = oracle.iou_matrix(gts, priors)  # (G, N); proper boxes: every flavour's IoU
    if flavour == "detectron2":
        matches, state = oracle.detectron2_match(quality, [0.3, 0.7], [0, -1, 1], True)
        gt_inds = np.where(state == 1, matches + 1, np.where(state == 0, 0, -1))
    else:
        idx = oracle.torchvision_match(quality, 0.7, 0.3, True)
        gt_inds = np.where(idx >= 0, idx + 1, np.where(idx == -1, 0, -1))
    labels = np.where(gt_inds > 0, gt_labels[np.maximum(gt_inds - 1, 0)], -1)
    return gt_inds, quality.max(axis=0), labels


def _matcher(impl, flavour):
    if flavour == "detectron2":
        return impl.get("Matcher")([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)
    return impl.get("TorchvisionMatcher")(0.7, 0.3, allow_low_quality_matches=True)


@pytest.mark.spec("ASG-39")
@pytest.mark.parametrize("flavour", [pytest.param("detectron2", marks=pytest.mark.flavour("detectron2")),
                                     pytest.param("torchvision", marks=pytest.mark.flavour("torchvision"))])
@settings(max_examples=40, deadline=None)
@given(priors=boxes(min_size=1, max_size=12), gts=boxes(min_size=1, max_size=4), data=st.data())
def test_matcher_assigner_reencodes_the_matcher_in_mmdet_encoding(impl, device, flavour, priors, gts,
                                                                  data):
    gt_labels = labels_for(data.draw, len(gts), 4)
    result = impl.get("MatcherAssigner")(_matcher(impl, flavour)).assign(
        tensor(priors, device), tensor(gts, device), None, tensor(gt_labels, device, torch.int64))
    gt_inds, max_overlaps, labels = _matcher_assigner_expected(flavour, priors, gts, gt_labels)
    assert result.num_gts == len(gts)
    assert to_numpy(result.gt_inds).tolist() == gt_inds.tolist()
    assert to_numpy(result.labels).tolist() == labels.tolist()
    assert_close(to_numpy(result.max_overlaps), max_overlaps, rtol=1e-5, atol=1e-6)


@pytest.mark.spec("ASG-39")
@pytest.mark.parametrize("flavour", [pytest.param("detectron2", marks=pytest.mark.flavour("detectron2")),
                                     pytest.param("torchvision", marks=pytest.mark.flavour("torchvision"))])
def test_matcher_assigner_without_gts_makes_every_prior_negative(impl, device, flavour):
    assigner = impl.get("MatcherAssigner")(_matcher(impl, flavour))
    priors = tensor([[0, 0, 10, 10], [5, 5, 20, 20]], device)
    none = tensor(np.zeros((0, 4)), device)
    result = assigner.assign(priors, none, None, tensor(np.zeros(0), device, torch.int64))
    # no gts: every prior negative (detectron2: the lowest band's label 0; torchvision 0)
    assert to_numpy(result.gt_inds).tolist() == [0, 0]
    assert to_numpy(result.labels).tolist() == [-1, -1]
    assert to_numpy(result.max_overlaps).tolist() == [0, 0]
