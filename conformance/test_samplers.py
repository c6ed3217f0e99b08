"""Conformance: samplers (SPEC.md "Samplers", SMP-*)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conformance.checks import assert_close, raises_value_error, tensor, to_numpy
from oracles import sampling as oracle
from conformance.strategies_assignment import gt_inds_vectors

pytestmark = pytest.mark.component("samplers")


def _assign_result(impl, device, num_gts, gt_inds, with_labels=True):
    gt_inds = np.asarray(gt_inds, dtype=np.int64)
    labels = np.where(gt_inds > 0, 10 + gt_inds, -1) if with_labels else None
    overlaps = np.where(gt_inds > 0, 0.75, 0.125)
    return impl.get("AssignResult")(
        num_gts, tensor(gt_inds, device, torch.int64), tensor(overlaps, device),
        None if labels is None else tensor(labels, device, torch.int64))


def _priors(device, n):
    base = np.arange(n, dtype=np.float64)[:, None]
    return tensor(np.concatenate([base, base, base + 4, base + 4], axis=1), device)


def _gts(device, g):
    base = 100 + np.arange(g, dtype=np.float64)[:, None]
    return tensor(np.concatenate([base, base, base + 8, base + 8], axis=1), device)


def _ints(x) -> list[int]:
    return to_numpy(x).astype(np.int64).tolist()


def _generator(seed):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- counts
@pytest.mark.spec("SMP-1")
@given(gt_inds_vectors(max_priors=40), st.integers(0, 32), st.sampled_from([0.25, 0.5, 1.0]),
       st.sampled_from([-1, 0, 1.5]), st.integers(0, 2**16))
def test_mmdet_random_sampler_counts(impl, device, drawn, num, fraction, neg_pos_ub, seed):
    num_gts, gt_inds = drawn
    sampler = impl.get("RandomSampler")(num, fraction, neg_pos_ub=neg_pos_ub,
                                        add_gt_as_proposals=False)
    result = sampler.sample(_assign_result(impl, device, num_gts, gt_inds),
                            _priors(device, len(gt_inds)), _gts(device, num_gts),
                            generator=_generator(seed))
    exp_pos, exp_neg = oracle.sample_counts((gt_inds > 0).sum(), (gt_inds == 0).sum(), num,
                                            fraction, neg_pos_ub)
    assert len(_ints(result.pos_inds)) == exp_pos
    assert len(_ints(result.neg_inds)) == exp_neg


@pytest.mark.spec("SMP-1")
@pytest.mark.flavour("detectron2")
@given(gt_inds_vectors(max_priors=40), st.integers(0, 32), st.sampled_from([0.25, 0.5]),
       st.integers(0, 2**16))
def test_detectron2_subsample_labels_counts_and_membership(impl, device, drawn, num, fraction,
                                                           seed):
    _, labels = drawn  # -1 ignore, 0 background, >= 1 foreground
    pos, neg = impl.get("subsample_labels")(tensor(labels, device, torch.int64), num, fraction, 0,
                                            generator=_generator(seed))
    exp_pos, exp_neg = oracle.sample_counts((labels > 0).sum(), (labels == 0).sum(), num,
                                            fraction)
    pos, neg = _ints(pos), _ints(neg)
    assert len(pos) == exp_pos and len(neg) == exp_neg
    assert len(set(pos)) == len(pos) and len(set(neg)) == len(neg)
    assert all(labels[i] > 0 for i in pos) and all(labels[i] == 0 for i in neg)


@pytest.mark.spec("SMP-1")
@pytest.mark.parametrize("sampler", ["RandomSampler", "subsample_labels",
                                     "BalancedPositiveNegativeSampler"])
def test_count_formula_worked_example_at_a_rounding_boundary(impl, device, sampler):
    # num 7, pos_fraction 0.5: int(3.5) = 3 positives (not 4), then 7 - 3 = 4 negatives,
    # with 10 of each available; every flavour's sampler draws the same counts.
    gt_inds = np.array([1] * 10 + [0] * 10 + [-1] * 3)
    labels = np.where(gt_inds > 0, 1, np.where(gt_inds == 0, 0, -1))
    if sampler == "RandomSampler":
        result = impl.get(sampler)(7, 0.5, add_gt_as_proposals=False).sample(
            _assign_result(impl, device, 1, gt_inds), _priors(device, len(gt_inds)), _gts(device, 1),
            generator=_generator(0))
        pos, neg = _ints(result.pos_inds), _ints(result.neg_inds)
    elif sampler == "subsample_labels":
        if not impl.claims("detectron2"):
            pytest.skip("flavour detectron2 not claimed")
        pos, neg = (_ints(x) for x in impl.get(sampler)(tensor(labels, device, torch.int64), 7, 0.5, 0,
                                                       generator=_generator(0)))
    else:
        if not impl.claims("torchvision"):
            pytest.skip("flavour torchvision not claimed")
        (p,), (n,) = impl.get(sampler)(7, 0.5)([tensor(labels, device, torch.int64)],
                                              generator=_generator(0))
        pos, neg = np.flatnonzero(to_numpy(p)).tolist(), np.flatnonzero(to_numpy(n)).tolist()
    assert (len(pos), len(neg)) == (3, 4)
    assert all(gt_inds[i] > 0 for i in pos) and all(gt_inds[i] == 0 for i in neg)


@pytest.mark.spec("SMP-8")
@pytest.mark.flavour("torchvision")
@given(st.lists(gt_inds_vectors(max_priors=30), min_size=1, max_size=3), st.integers(0, 2**16))
def test_torchvision_balanced_sampler_masks(impl, device, images, seed):
    sampler = impl.get("BalancedPositiveNegativeSampler")(16, 0.25)
    matched = [tensor(labels, device, torch.int64) for _, labels in images]
    pos_masks, neg_masks = sampler(matched, generator=_generator(seed))
    assert len(pos_masks) == len(neg_masks) == len(images)
    for (_, labels), pos, neg in zip(images, pos_masks, neg_masks):
        assert pos.dtype == torch.uint8 and neg.dtype == torch.uint8
        pos, neg = to_numpy(pos).astype(bool), to_numpy(neg).astype(bool)
        exp_pos, exp_neg = oracle.sample_counts((labels >= 1).sum(), (labels == 0).sum(), 16, 0.25)
        assert pos.sum() == exp_pos and neg.sum() == exp_neg
        assert (labels[pos] >= 1).all() and (labels[neg] == 0).all()


@pytest.mark.spec("SMP-7")
@pytest.mark.flavour("detectron2")
def test_subsample_labels_uses_bg_label_and_never_ignored(impl, device):
    labels = tensor([-1, 3, 3, 5, -1, 5, 3], device, torch.int64)  # bg_label = 5
    pos, neg = impl.get("subsample_labels")(labels, 10, 0.5, 5, generator=_generator(0))
    assert sorted(_ints(pos)) == [1, 2, 6]
    assert sorted(_ints(neg)) == [3, 5]


# --------------------------------------------------------------------------- mmdet samplers
@pytest.mark.spec("SMP-2")
@given(gt_inds_vectors(max_priors=30))
def test_pseudo_sampler_keeps_every_positive_and_negative(impl, device, drawn):
    num_gts, gt_inds = drawn
    result = impl.get("PseudoSampler")().sample(_assign_result(impl, device, num_gts, gt_inds),
                                                _priors(device, len(gt_inds)),
                                                _gts(device, num_gts))
    pos, neg = oracle.pseudo_sample(gt_inds.tolist())
    assert _ints(result.pos_inds) == pos
    assert _ints(result.neg_inds) == neg
    assert _ints(result.pos_is_gt) == [0] * len(pos)
    assert result.avg_factor == max(len(pos), 1)


@pytest.mark.spec("SMP-3")
@given(gt_inds_vectors(max_priors=40), st.integers(1, 24), st.integers(0, 2**16))
def test_random_sampler_draws_sorted_distinct_members(impl, device, drawn, num, seed):
    num_gts, gt_inds = drawn
    sampler = impl.get("RandomSampler")(num, 0.5, add_gt_as_proposals=False)
    result = sampler.sample(_assign_result(impl, device, num_gts, gt_inds),
                            _priors(device, len(gt_inds)), _gts(device, num_gts),
                            generator=_generator(seed))
    pos, neg = _ints(result.pos_inds), _ints(result.neg_inds)
    assert pos == sorted(set(pos)) and neg == sorted(set(neg))
    assert all(gt_inds[i] > 0 for i in pos) and all(gt_inds[i] == 0 for i in neg)


@pytest.mark.spec("SMP-4")
@pytest.mark.flavour("mmdet")
def test_gts_added_as_proposals_are_prepended(impl, device):
    gt_inds = [0, 2, -1, 0, 1]
    gt_labels = tensor([7, 8], device, torch.int64)
    sampler = impl.get("RandomSampler")(64, 0.5, add_gt_as_proposals=True)
    result = sampler.sample(_assign_result(impl, device, 2, gt_inds), _priors(device, 5),
                            _gts(device, 2), gt_labels=gt_labels, generator=_generator(1))
    # Indices 0, 1 are the gts themselves; the original priors moved up by 2.
    exp_inds, exp_labels, _ = oracle.prepend_gts(gt_inds, [-1, 12, -1, -1, 11], [0] * 5, [7, 8])
    pos_expected, neg_expected = oracle.pseudo_sample(exp_inds)
    assert _ints(result.pos_inds) == pos_expected == [0, 1, 3, 6]
    assert _ints(result.neg_inds) == neg_expected == [2, 5]
    assert _ints(result.pos_is_gt) == [1, 1, 0, 0]
    assert _ints(result.pos_assigned_gt_inds) == [0, 1, 1, 0]
    assert _ints(result.pos_gt_labels) == [exp_labels[i] for i in pos_expected] == [7, 8, 12, 11]
    assert_close(result.pos_priors[:2], to_numpy(_gts(device, 2)), impl)
    assert_close(result.pos_priors[2:], to_numpy(_priors(device, 5))[[1, 4]], impl)


@pytest.mark.spec("SMP-4")
@pytest.mark.flavour("mmdet")
def test_no_gts_means_nothing_is_prepended(impl, device):
    sampler = impl.get("RandomSampler")(8, 0.5, add_gt_as_proposals=True)
    result = sampler.sample(_assign_result(impl, device, 0, [0, 0, 0]), _priors(device, 3),
                            _gts(device, 0), gt_labels=torch.zeros(0, dtype=torch.int64,
                                                                   device=device),
                            generator=_generator(0))
    assert _ints(result.pos_inds) == [] and _ints(result.neg_inds) == [0, 1, 2]
    assert tuple(result.pos_gt_bboxes.shape) == (0, 4)


@pytest.mark.spec("SMP-5")
@pytest.mark.flavour("mmdet")
def test_neg_pos_ub_caps_negatives(impl, device):
    gt_inds = [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    sampler = impl.get("RandomSampler")(10, 0.5, neg_pos_ub=1.5, add_gt_as_proposals=False)
    result = sampler.sample(_assign_result(impl, device, 1, gt_inds), _priors(device, 10),
                            _gts(device, 1), generator=_generator(3))
    assert len(_ints(result.pos_inds)) == 2 and len(_ints(result.neg_inds)) == 3
    no_pos = sampler.sample(_assign_result(impl, device, 1, [0] * 10), _priors(device, 10),
                            _gts(device, 1), generator=_generator(3))
    assert len(_ints(no_pos.neg_inds)) == 1  # int(1.5 * max(0, 1))


@pytest.mark.spec("SMP-5")
def test_neg_pos_ub_worked_example_at_a_rounding_boundary(impl, device):
    # num 16, pos_fraction 0.2: int(3.2) = 3 positives; negatives min(13, int(1.5 * 3) = 4).
    gt_inds = [1] * 10 + [0] * 10
    sampler = impl.get("RandomSampler")(16, 0.2, neg_pos_ub=1.5, add_gt_as_proposals=False)
    result = sampler.sample(_assign_result(impl, device, 1, gt_inds), _priors(device, 20),
                            _gts(device, 1), generator=_generator(0))
    assert (len(_ints(result.pos_inds)), len(_ints(result.neg_inds))) == (3, 4)


@pytest.mark.spec("SMP-6")
@given(gt_inds_vectors(max_priors=40), st.integers(0, 2**16))
def test_same_seed_same_sample_and_consistent_result(impl, device, drawn, seed):
    num_gts, gt_inds = drawn
    sampler = impl.get("RandomSampler")(12, 0.25, add_gt_as_proposals=False)
    args = (_assign_result(impl, device, num_gts, gt_inds), _priors(device, len(gt_inds)),
            _gts(device, num_gts))
    a = sampler.sample(*args, generator=_generator(seed))
    b = sampler.sample(*args, generator=_generator(seed))
    assert _ints(a.pos_inds) == _ints(b.pos_inds) and _ints(a.neg_inds) == _ints(b.neg_inds)
    pos = _ints(a.pos_inds)
    assert _ints(a.pos_assigned_gt_inds) == [int(gt_inds[i]) - 1 for i in pos]
    gts = to_numpy(_gts(device, num_gts))
    assert_close(a.pos_gt_bboxes, gts[[int(gt_inds[i]) - 1 for i in pos]].reshape(-1, 4), impl)
    assert _ints(a.pos_gt_labels) == [10 + int(gt_inds[i]) for i in pos]
    assert_close(a.pos_priors, to_numpy(_priors(device, len(gt_inds)))[pos].reshape(-1, 4), impl)
    if impl.has("subsample_labels"):
        labels = tensor(gt_inds, device, torch.int64)
        fn = impl.get("subsample_labels")
        first = fn(labels, 12, 0.25, 0, generator=_generator(seed))
        second = fn(labels, 12, 0.25, 0, generator=_generator(seed))
        assert _ints(first[0]) == _ints(second[0]) and _ints(first[1]) == _ints(second[1])


@pytest.mark.spec("SMP-6")
def test_pseudo_sampler_result_without_labels(impl, device):
    result = impl.get("PseudoSampler")().sample(
        _assign_result(impl, device, 2, [2, 0, -1, 1], with_labels=False), _priors(device, 4),
        _gts(device, 2))
    assert result.pos_gt_labels is None
    assert _ints(result.pos_assigned_gt_inds) == [1, 0]
    assert_close(result.pos_gt_bboxes, to_numpy(_gts(device, 2))[[1, 0]], impl)


@pytest.mark.spec("SMP-9")
def test_num_pos_num_neg_and_avg_factor_use_at_least_one(impl, device):
    empty = _assign_result(impl, device, 1, [-1, -1])
    pseudo = impl.get("PseudoSampler")().sample(empty, _priors(device, 2), _gts(device, 1))
    assert (pseudo.num_pos, pseudo.num_neg, pseudo.avg_factor) == (1, 1, 1)
    sampler = impl.get("RandomSampler")(8, 0.5, add_gt_as_proposals=False)
    result = sampler.sample(_assign_result(impl, device, 1, [1, 1, 0, 0, 0, -1]),
                            _priors(device, 6), _gts(device, 1), generator=_generator(0))
    assert (result.num_pos, result.num_neg, result.avg_factor) == (2, 3, 5)


@pytest.mark.spec("SMP-10")
def test_samplers_reject_bad_inputs(impl, device):
    RandomSampler = impl.get("RandomSampler")
    raises_value_error(RandomSampler, -1, 0.5)
    raises_value_error(RandomSampler, 8, 1.5)
    sampler = RandomSampler(8, 0.5, add_gt_as_proposals=False)
    result = _assign_result(impl, device, 1, [1, 0, 0])
    raises_value_error(sampler.sample, result, _priors(device, 4), _gts(device, 1),
                       match="priors")
    raises_value_error(sampler.sample, result, _priors(device, 3), _gts(device, 1),
                       generator=123)
    if impl.has("subsample_labels"):
        raises_value_error(impl.get("subsample_labels"), tensor([[0, 1]], device, torch.int64),
                           4, 0.5, 0)


# --------------------------------------------------------------------------- adapters
def _adapter_draw(impl, device, adapter, gt_inds, num, fraction, seed):
    num_gts = max(int(np.max(gt_inds, initial=0)), 1)
    return impl.get(adapter)(num, fraction).sample(
        _assign_result(impl, device, num_gts, gt_inds), _priors(device, len(gt_inds)),
        _gts(device, num_gts), generator=_generator(seed))


@pytest.mark.spec("SMP-11")
@pytest.mark.flavour("detectron2")
@given(gt_inds_vectors(max_priors=30), st.integers(0, 16), st.sampled_from([0.25, 0.5]),
       st.integers(0, 2**16))
def test_detectron2_sampler_draws_what_subsample_labels_draws(impl, device, drawn, num, fraction,
                                                              seed):
    _, gt_inds = drawn
    result = _adapter_draw(impl, device, "Detectron2Sampler", gt_inds, num, fraction, seed)
    labels = np.where(gt_inds > 0, 1, np.where(gt_inds == 0, 0, -1))
    pos, neg = impl.get("subsample_labels")(tensor(labels, device, torch.int64), num, fraction, 0,
                                            generator=_generator(seed))
    assert _ints(result.pos_inds) == _ints(pos) and _ints(result.neg_inds) == _ints(neg)
    assert _ints(result.pos_is_gt) == [0] * len(_ints(pos))
    assert _ints(result.pos_assigned_gt_inds) == [int(gt_inds[i]) - 1 for i in _ints(pos)]
    assert result.avg_factor == max(len(_ints(pos)), 1) + max(len(_ints(neg)), 1)


@pytest.mark.spec("SMP-12")
@pytest.mark.flavour("torchvision")
@given(gt_inds_vectors(max_priors=30), st.integers(0, 16), st.sampled_from([0.25, 0.5]),
       st.integers(0, 2**16))
def test_torchvision_sampler_returns_the_balanced_masks_as_ascending_indices(impl, device, drawn,
                                                                             num, fraction, seed):
    _, gt_inds = drawn
    result = _adapter_draw(impl, device, "TorchvisionSampler", gt_inds, num, fraction, seed)
    labels = np.where(gt_inds > 0, 1, np.where(gt_inds == 0, 0, -1))
    (p,), (n,) = impl.get("BalancedPositiveNegativeSampler")(num, fraction)(
        [tensor(labels, device, torch.int64)], generator=_generator(seed))
    pos, neg = np.flatnonzero(to_numpy(p)).tolist(), np.flatnonzero(to_numpy(n)).tolist()
    assert _ints(result.pos_inds) == pos and _ints(result.neg_inds) == neg
    assert _ints(result.pos_is_gt) == [0] * len(pos)
    assert result.avg_factor == max(len(pos), 1) + max(len(neg), 1)


@pytest.mark.spec("SMP-1")
@pytest.mark.parametrize("adapter", [pytest.param("Detectron2Sampler", marks=pytest.mark.flavour("detectron2")),
                                     pytest.param("TorchvisionSampler", marks=pytest.mark.flavour("torchvision"))])
def test_adapter_count_formula_worked_example_at_a_rounding_boundary(impl, device, adapter):
    # num 7, pos_fraction 0.5: int(3.5) = 3 positives, 7 - 3 = 4 negatives (10 of each there).
    gt_inds = np.array([1] * 10 + [0] * 10 + [-1] * 3)
    result = _adapter_draw(impl, device, adapter, gt_inds, 7, 0.5, 0)
    pos, neg = _ints(result.pos_inds), _ints(result.neg_inds)
    assert (len(pos), len(neg)) == (3, 4)
    assert all(gt_inds[i] > 0 for i in pos) and all(gt_inds[i] == 0 for i in neg)
