"""Conformance: dense-head training targets (SPEC.md "Targets", TGT-*)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.checks import assert_close, raises_value_error, tensor, to_numpy
from oracles import targets as oracle
from conformance.strategies_assignment import boxes, labels_for

pytestmark = pytest.mark.component("targets")

RETINANET = dict(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0)
NUM_CLASSES = 5


class OffsetCoder:
    """A transparent stand-in box coder: target = gt - prior (per coordinate)."""

    def encode(self, priors, gt_bboxes):
        return (gt_bboxes - priors).float()


def _offset(prior, gt):
    return np.asarray(gt) - np.asarray(prior)


@st.composite
def images(draw, max_anchors: int = 10, max_gts: int = 3):
    anchors = draw(boxes(min_size=1, max_size=max_anchors, extent=40, max_wh=24))
    valid = np.array(draw(st.lists(st.booleans(), min_size=len(anchors),
                                   max_size=len(anchors))), dtype=bool)
    gts = draw(boxes(min_size=0, max_size=max_gts, extent=40, max_wh=24))
    return anchors, valid, gts, labels_for(draw, len(gts), NUM_CLASSES)


def _single(impl, device, anchors, valid, gts, gt_labels, img_shape, **kwargs):
    options = dict(assigner=impl.get("MaxIoUAssigner")(**RETINANET), num_classes=NUM_CLASSES,
                   box_coder=OffsetCoder())
    options.update(kwargs)
    return impl.get("anchor_targets_single")(
        tensor(anchors, device), tensor(valid, device, torch.bool), tensor(gts, device),
        img_shape, gt_labels=None if gt_labels is None else tensor(gt_labels, device, torch.int64),
        **options)


def _check_against_oracle(impl, result, expected):
    labels, label_weights, bbox_targets, bbox_weights = expected[:4]
    assert to_numpy(result.labels).astype(np.int64).tolist() == labels.tolist()
    assert result.labels.dtype == torch.int64
    assert_close(result.label_weights, label_weights, impl, what="label_weights")
    assert_close(result.bbox_targets, bbox_targets, impl, what="bbox_targets")
    assert_close(result.bbox_weights, bbox_weights, impl, what="bbox_weights")


# --------------------------------------------------------------------------- helpers
@pytest.mark.spec("TGT-1")
@given(st.lists(st.booleans(), min_size=0, max_size=12), st.integers(1, 3), st.integers(-2, 9))
def test_unmap_scatters_rows_back_and_fills_the_rest(impl, device, mask, width, fill):
    mask = np.array(mask, dtype=bool)
    k = int(mask.sum())
    data1 = np.arange(k, dtype=np.float64) + 0.5
    data2 = np.arange(k * width, dtype=np.int64).reshape(k, width)
    unmap = impl.get("unmap")
    out1 = unmap(tensor(data1, device), len(mask), tensor(mask, device, torch.bool), fill=fill)
    out2 = unmap(tensor(data2, device, torch.int64), len(mask), tensor(mask, device, torch.bool),
                 fill=fill)
    assert_close(out1, oracle.unmap(data1, len(mask), mask, fill), impl)
    assert out2.dtype == torch.int64
    assert to_numpy(out2).tolist() == oracle.unmap(data2, len(mask), mask, fill).tolist()


@pytest.mark.spec("TGT-2")
@given(st.lists(st.integers(0, 5), min_size=1, max_size=4), st.integers(1, 3))
def test_images_to_levels_stacks_and_splits_by_level(impl, device, levels, batch):
    n = sum(levels)
    per_image = [np.arange(n * 4, dtype=np.float64).reshape(n, 4) + 100 * b for b in range(batch)]
    out = impl.get("images_to_levels")([tensor(t, device) for t in per_image], levels)
    expected = oracle.images_to_levels(per_image, levels)
    assert len(out) == len(levels)
    for got, exp, n_l in zip(out, expected, levels):
        assert tuple(got.shape) == (batch, n_l, 4)
        assert_close(got, exp, impl)


# --------------------------------------------------------------------------- one image
@pytest.mark.spec("TGT-3")
@given(images(), st.sampled_from([-1.0, 2.0]), st.booleans())
@settings(max_examples=25)
def test_anchor_targets_match_the_oracle(impl, device, image, pos_weight, rpn):
    anchors, valid, gts, gt_labels = image
    gt_labels = None if rpn else gt_labels
    img_shape = (48, 64)
    result = _single(impl, device, anchors, valid, gts, gt_labels, img_shape,
                     pos_weight=pos_weight)
    expected = oracle.anchor_targets_single(anchors, valid, gts, gt_labels, img_shape,
                                            NUM_CLASSES, _offset, RETINANET, pos_weight=pos_weight)
    if expected is None:
        assert result is None
        return
    _check_against_oracle(impl, result, expected)
    assert len(_ints(result.pos_inds)) == expected[4]
    assert len(_ints(result.neg_inds)) == expected[5]


def _ints(x):
    return to_numpy(x).astype(np.int64).tolist()


@pytest.mark.spec("TGT-3")
def test_rpn_positives_get_the_single_foreground_class(impl, device):
    anchors = [[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 9, 10]]
    result = _single(impl, device, anchors, [True] * 3, [[0, 0, 10, 10]], None, (40, 40),
                     num_classes=1)
    # anchor 0 IoU 1 (pos), anchor 2 IoU 0.9 (pos), anchor 1 IoU 0 (neg -> background 1)
    assert _ints(result.labels) == [0, 1, 0]
    assert_close(result.label_weights, [1.0, 1.0, 1.0], impl)
    assert_close(result.bbox_targets, [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]], impl)


@pytest.mark.spec("TGT-4")
@given(images(), st.sampled_from([0, 4]))
@settings(max_examples=25)
def test_anchors_outside_the_image_are_background_with_zero_weights(impl, device, image,
                                                                   border):
    anchors, valid, gts, gt_labels = image
    img_shape = (30, 36, 3)
    result = _single(impl, device, anchors, valid, gts, gt_labels, img_shape,
                     allowed_border=border)
    inside = oracle.inside_flags(anchors, valid, img_shape, border)
    if not inside.any():
        assert result is None
        return
    labels = np.array(_ints(result.labels))
    assert (labels[~inside] == NUM_CLASSES).all()
    assert (to_numpy(result.label_weights)[~inside] == 0).all()
    assert (to_numpy(result.bbox_targets)[~inside] == 0).all()
    assert (to_numpy(result.bbox_weights)[~inside] == 0).all()
    expected = oracle.anchor_targets_single(anchors, valid, gts, gt_labels, img_shape,
                                            NUM_CLASSES, _offset, RETINANET,
                                            allowed_border=border)
    _check_against_oracle(impl, result, expected)


@pytest.mark.spec("TGT-4")
def test_the_far_border_is_strict(impl, device):
    anchors = [[0, 0, 10, 10], [0, 0, 11, 10], [-1, 0, 5, 5]]
    result = _single(impl, device, anchors, [True] * 3, [[0, 0, 10, 10]], [2], (10, 11),
                     allowed_border=0)
    # anchor 0 ends at y2 = 10 = H -> outside (strict <); anchor 1 too; anchor 2 x1 < 0.
    assert result is None
    result = _single(impl, device, anchors, [True] * 3, [[0, 0, 10, 10]], [2], (11, 12),
                     allowed_border=0)
    assert _ints(result.labels) == [2, 2, NUM_CLASSES]


@pytest.mark.spec("TGT-7")
def test_decoded_regression_targets_are_the_gt_boxes(impl, device):
    anchors = [[0, 0, 10, 10], [1, 1, 11, 11], [30, 30, 40, 40]]
    gts = [[0, 0, 10, 11]]
    result = _single(impl, device, anchors, [True] * 3, gts, [4], (64, 64), box_coder=None,
                     reg_decoded_bbox=True)
    assert_close(result.bbox_targets, [[0, 0, 10, 11], [0, 0, 10, 11], [0, 0, 0, 0]], impl)
    assert _ints(result.labels) == [4, 4, NUM_CLASSES]


@pytest.mark.spec("TGT-9")
def test_without_unmap_only_inside_rows_are_returned(impl, device):
    anchors = [[0, 0, 10, 10], [0, 0, 100, 100], [2, 2, 12, 12]]
    result = _single(impl, device, anchors, [True, True, False], [[0, 0, 10, 10]], [1],
                     (50, 50), allowed_border=0, unmap_outputs=False)
    assert tuple(result.labels.shape) == (1,)
    assert tuple(result.bbox_targets.shape) == (1, 4)
    assert _ints(result.labels) == [1]


@pytest.mark.spec("TGT-10")
def test_targets_reject_bad_inputs(impl, device):
    anchors, valid = [[0, 0, 10, 10]], [True]
    gts = [[0, 0, 10, 10]]
    raises_value_error(_single, impl, device, anchors, valid, gts, [1], (20, 20), num_classes=0)
    raises_value_error(_single, impl, device, anchors, valid, gts, [9], (20, 20),
                       match="gt_labels")
    raises_value_error(_single, impl, device, [[0, 0, 10]], valid, gts, [1], (20, 20))
    raises_value_error(_single, impl, device, anchors, [True, False], gts, [1], (20, 20),
                       match="valid_flags")
    raises_value_error(_single, impl, device, anchors, valid, gts, [1], (20, 20), box_coder=None,
                       match="box_coder")


# --------------------------------------------------------------------------- batch
def _levels(device, per_image_anchors, split):
    out = []
    for anchors in per_image_anchors:
        t = tensor(anchors, device)
        out.append(list(torch.split(t, split)))
    return out


@pytest.mark.spec("TGT-5")
def test_batch_targets_are_split_by_level_with_max_one_counts(impl, device):
    anchors = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 12, 12],
                        [40, 40, 60, 60], [0, 0, 30, 30]], dtype=np.float64)
    split = [3, 2]
    gts = [tensor([[0, 0, 10, 10]], device), tensor(np.zeros((0, 4)), device)]
    labels = [tensor([3], device, torch.int64), tensor(np.zeros(0), device, torch.int64)]
    valid = [list(torch.split(torch.ones(5, dtype=torch.bool, device=device), split))] * 2
    result = impl.get("anchor_targets")(
        _levels(device, [anchors, anchors], split), valid, gts, [(64, 64), (64, 64)],
        gt_labels_list=labels, assigner=impl.get("MaxIoUAssigner")(**RETINANET),
        num_classes=NUM_CLASSES, box_coder=OffsetCoder())
    assert [tuple(t.shape) for t in result.labels] == [(2, 3), (2, 2)]
    assert [tuple(t.shape) for t in result.bbox_targets] == [(2, 3, 4), (2, 2, 4)]
    # image 0: anchors 0 (IoU 1) and 2 (IoU 100/144 = 0.69) positive, 1, 3 negative,
    # 4 (IoU 100/900 = 0.11) negative. image 1: no gts, all 5 negative, 0 positives.
    assert _ints(result.labels[0][0]) == [3, NUM_CLASSES, 3]
    assert result.num_total_pos == 2 + 1
    assert result.num_total_neg == 3 + 5
    assert result.num_total_samples(sampling=False) == 3
    assert result.num_total_samples(sampling=True) == 11


@pytest.mark.spec("TGT-6")
def test_batch_returns_none_when_an_image_has_no_inside_anchor(impl, device):
    anchors = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=np.float64)
    valid = [[torch.tensor([True, True], device=device)],
             [torch.tensor([False, False], device=device)]]
    result = impl.get("anchor_targets")(
        [[tensor(anchors, device)]] * 2, valid, [tensor([[0, 0, 10, 10]], device)] * 2,
        [(64, 64)] * 2, assigner=impl.get("MaxIoUAssigner")(**RETINANET),
        num_classes=NUM_CLASSES, box_coder=OffsetCoder())
    assert result is None


@pytest.mark.spec("TGT-8")
@given(st.data())
@settings(max_examples=20)
def test_rtmdet_targets_match_the_oracle(impl, device, data):
    n = data.draw(st.integers(1, 12))
    xy = np.array(data.draw(st.lists(st.tuples(st.integers(0, 16), st.integers(0, 16)),
                                     min_size=n, max_size=n)), dtype=np.float64) * 2
    priors = np.concatenate([xy, np.full((n, 2), 8.0)], axis=1)
    decoded = data.draw(boxes(min_size=n, max_size=n, extent=24, max_wh=16))
    gts = data.draw(boxes(min_size=0, max_size=3, extent=24, max_wh=16))
    gt_labels = labels_for(data.draw, len(gts), 3)
    scores = np.array(data.draw(st.lists(st.integers(-16, 16), min_size=n * 3, max_size=n * 3)),
                      dtype=np.float64).reshape(n, 3) / 8
    valid = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    f64 = torch.float64
    result = impl.get("rtmdet_targets_single")(
        tensor(scores, device, f64), tensor(decoded, device, f64), tensor(priors, device, f64),
        tensor(valid, device, torch.bool), tensor(gts, device, f64),
        tensor(gt_labels, device, torch.int64), (64, 64), num_classes=3)
    expected = oracle.rtmdet_targets_single(scores, decoded, priors, valid, gts, gt_labels, 3)
    if expected is None:
        assert result is None
        return
    labels, label_weights, bbox_targets, metrics = expected
    assert _ints(result.labels) == labels.tolist()
    assert_close(result.label_weights, label_weights, impl)
    assert_close(result.bbox_targets, bbox_targets, impl)
    assert_close(result.assign_metrics, metrics, impl)


# --------------------------------------------------------------------------- R-CNN RoIs
def _roi_expected(proposals, gts, gt_labels, append_gts):
    """TGT-11 from the oracles: MaxIoU (0.5, 0.5, min_pos 0.5, no low-quality matches),
    every positive and negative kept (PseudoSampler), OffsetCoder targets."""
    from oracles import assignment as assign_oracle, sampling as sample_oracle

    priors = np.concatenate([proposals, gts]) if append_gts else proposals
    gt_inds, _, _ = assign_oracle.max_iou_assign(
        assign_oracle.iou_matrix(gts, priors), 0.5, 0.5, 0.5, match_low_quality=False)
    pos, neg = sample_oracle.pseudo_sample(gt_inds)
    assigned = [int(gt_inds[i]) - 1 for i in pos]
    rois = np.concatenate([priors[pos], priors[neg]]).reshape(-1, 4)
    labels = [int(gt_labels[k]) for k in assigned] + [NUM_CLASSES] * len(neg)
    targets = np.zeros_like(rois)
    for r, (i, k) in enumerate(zip(pos, assigned)):
        targets[r] = _offset(priors[i], gts[k])
    return rois, labels, targets, len(pos)


@pytest.mark.spec("TGT-11")
@pytest.mark.parametrize("append_gts", [True, False])
@settings(max_examples=40, deadline=None)
@given(proposals=boxes(min_size=1, max_size=10, extent=40, max_wh=24),
       gts=boxes(min_size=1, max_size=3, extent=40, max_wh=24), data=st.data())
def test_roi_targets_single_appends_gts_assigns_samples_and_encodes(impl, device, append_gts,
                                                                    proposals, gts, data):
    gt_labels = labels_for(data.draw, len(gts), NUM_CLASSES)
    out = impl.get("roi_targets_single")(
        tensor(proposals, device), tensor(gts, device), tensor(gt_labels, device, torch.int64),
        assigner=impl.get("MaxIoUAssigner")(pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5,
                                            match_low_quality=False),
        sampler=impl.get("PseudoSampler")(), box_coder=OffsetCoder(), num_classes=NUM_CLASSES,
        append_gts=append_gts)
    rois, labels, targets, num_pos = _roi_expected(proposals, gts, gt_labels, append_gts)
    assert out.num_pos == num_pos
    assert_close(to_numpy(out.rois), rois, rtol=0, atol=0)
    assert to_numpy(out.labels).tolist() == labels
    assert_close(to_numpy(out.bbox_targets), targets, rtol=1e-6, atol=1e-6)
