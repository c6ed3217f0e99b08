"""Conformance tests for the losses (SPEC.md, Losses: LOSS-*).

Differential tests compare with the loop-based float64 oracles in
``oracles/losses.py``; worked examples pin the numbers a reader can
check by hand; the torchvision-flavour tests call ``torchvision.ops`` live.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from conformance.checks import assert_close, raises_value_error, tensor
from oracles import losses as oracle

pytestmark = pytest.mark.component("losses")

F32_EPS = float(np.finfo(np.float32).eps)
REDUCTIONS = ("none", "mean", "sum")


# --------------------------------------------------------------------------- strategies
def eighths(lo: float, hi: float):
    """Floats on a 1/8 grid: exact in float32, so comparisons are stable."""
    return st.integers(int(lo * 8), int(hi * 8)).map(lambda v: v / 8)


def arrays(draw, shape, elements) -> np.ndarray:
    size = int(np.prod(shape))
    return np.array(draw(st.lists(elements, min_size=size, max_size=size)),
                    dtype=np.float64).reshape(shape)


@st.composite
def reductions(draw):
    """(reduction, avg_factor): avg_factor only with mean or none."""
    reduction = draw(st.sampled_from(REDUCTIONS))
    avg_factor = None
    if reduction != "sum":
        avg_factor = draw(st.sampled_from([None, 0.5, 1.0, 3.0, 10.0]))
    return reduction, avg_factor


@st.composite
def class_problems(draw, max_rows=6, max_classes=4):
    """(pred (N, C), labels (N,) in [0, C], row weight (N,) or None)."""
    n = draw(st.integers(1, max_rows))
    c = draw(st.integers(1, max_classes))
    pred = arrays(draw, (n, c), eighths(-6, 6))
    labels = np.array(draw(st.lists(st.integers(0, c), min_size=n, max_size=n)), dtype=np.int64)
    weight = None
    if draw(st.booleans()):
        weight = arrays(draw, (n,), st.sampled_from([0.0, 0.5, 1.0, 2.0]))
    return pred, labels, weight


@st.composite
def box_pairs(draw, max_boxes=6):
    """Aligned (n, 4) xyxy pairs on a 1/2 grid, zero-area boxes included."""
    n = draw(st.integers(1, max_boxes))

    def boxes():
        xy = arrays(draw, (n, 2), st.integers(0, 32).map(lambda v: v / 2))
        wh = arrays(draw, (n, 2), st.integers(0, 16).map(lambda v: v / 2))
        return np.concatenate([xy, xy + wh], axis=1)

    return boxes(), boxes()


def expected_reduce(elementwise, weight, reduction, avg_factor):
    return oracle.weight_reduce(elementwise, weight, reduction, avg_factor)


def other_device(device: torch.device) -> torch.device:
    return torch.device("cpu") if device.type != "cpu" else torch.device("meta")


# --------------------------------------------------------------------------- reduction contract
@pytest.mark.spec("LOSS-1")
@given(data=st.data(), red=reductions())
def test_weight_reduce_loss_matches_oracle(impl, device, data, red):
    weight_reduce_loss = impl.get("weight_reduce_loss")
    reduction, avg_factor = red
    shape = data.draw(st.sampled_from([(0,), (5,), (3, 4)]))
    loss = arrays(data.draw, shape, eighths(0, 8))
    weight = data.draw(st.sampled_from([None, "full", "row"]))
    w = None
    if weight == "full":
        w = arrays(data.draw, shape, st.sampled_from([0.0, 0.5, 1.0, 2.0]))
    elif weight == "row" and len(shape) == 2:
        w = arrays(data.draw, (shape[0], 1), st.sampled_from([0.0, 0.5, 1.0, 2.0]))
    out = weight_reduce_loss(tensor(loss, device), None if w is None else tensor(w, device),
                             reduction=reduction, avg_factor=avg_factor)
    w_full = None if w is None else np.broadcast_to(w, shape)
    assert_close(out, expected_reduce(loss, w_full, reduction, avg_factor), impl)


@pytest.mark.spec("LOSS-1")
def test_reductions_of_a_worked_example(impl, device):
    weight_reduce_loss = impl.get("weight_reduce_loss")
    loss = tensor([1.0, 2.0, 3.0, 4.0], device)
    weight = tensor([1.0, 0.0, 2.0, 0.5], device)  # weighted: 1, 0, 6, 2
    assert_close(weight_reduce_loss(loss, weight, "none"), [1.0, 0.0, 6.0, 2.0], impl)
    assert_close(weight_reduce_loss(loss, weight, "sum"), 9.0, impl)
    assert_close(weight_reduce_loss(loss, weight, "mean"), 9.0 / 4, impl)
    # avg_factor is ignored by "none"
    assert_close(weight_reduce_loss(loss, weight, "none", avg_factor=7.0), [1.0, 0.0, 6.0, 2.0],
                 impl)


@pytest.mark.spec("LOSS-2")
def test_mean_with_avg_factor_divides_by_avg_factor_plus_float32_eps(impl, device):
    weight_reduce_loss = impl.get("weight_reduce_loss")
    loss = tensor([1.0, 2.0, 3.0], device, torch.float64)
    out = weight_reduce_loss(loss, None, "mean", avg_factor=2.0)
    assert_close(out, 6.0 / (2.0 + F32_EPS), impl, rtol=1e-15, atol=0)
    # avg_factor 0 with zero loss: 0 / eps = 0, not NaN
    zero = weight_reduce_loss(torch.zeros(3, device=device), None, "mean", avg_factor=0)
    assert float(zero) == 0.0
    # a 0-dim tensor avg_factor works like a number
    two = torch.tensor(2.0, dtype=torch.float64, device=device)
    out_t = weight_reduce_loss(loss, None, "mean", avg_factor=two)
    assert_close(out_t, 6.0 / (2.0 + F32_EPS), impl)


@pytest.mark.spec("LOSS-2")
def test_avg_factor_without_eps_is_detectably_different(impl, device):
    # 1 / (1 + eps) differs from 1 in float64 by about 1.19e-7.
    weight_reduce_loss = impl.get("weight_reduce_loss")
    out = weight_reduce_loss(torch.ones(1, dtype=torch.float64, device=device), None, "mean",
                             avg_factor=1.0)
    assert abs(float(out) - 1.0 / (1.0 + F32_EPS)) < 1e-15


def _call_loss(impl, name, device, n=3, **kwargs):
    """Call one loss on small valid inputs; returns (loss, pred)."""
    fn = impl.get(name)
    g = torch.Generator().manual_seed(0)
    dtype = kwargs.pop("dtype", torch.float32)
    if name == "giou_loss":
        xy = torch.rand(n, 2, generator=g, dtype=dtype) * 10
        wh = torch.rand(n, 2, generator=g, dtype=dtype) * 5 + 1
        pred = torch.cat([xy, xy + wh], 1).to(device).requires_grad_()
        target = torch.cat([xy + 0.5, xy + wh + 1], 1).to(device)
    elif name in ("l1_loss", "smooth_l1_loss"):
        pred = torch.randn(n, 4, generator=g, dtype=dtype).to(device).requires_grad_()
        target = torch.randn(n, 4, generator=g, dtype=dtype).to(device)
    elif name == "cross_entropy_loss":
        pred = torch.randn(n, 4, generator=g, dtype=dtype).to(device).requires_grad_()
        target = torch.arange(n, device=device) % 4
    elif name == "quality_focal_loss":
        pred = torch.randn(n, 3, generator=g, dtype=dtype).to(device).requires_grad_()
        labels = torch.arange(n, device=device) % 4  # 3 = background
        scores = torch.rand(n, generator=g, dtype=dtype).to(device)
        target = (labels, scores)
    else:  # sigmoid_focal_loss, binary_cross_entropy_loss
        pred = torch.randn(n, 3, generator=g, dtype=dtype).to(device).requires_grad_()
        target = torch.arange(n, device=device) % 4  # 3 = background
    return fn(pred, target, **kwargs), pred


ALL_LOSSES = ("sigmoid_focal_loss", "quality_focal_loss", "giou_loss", "l1_loss",
              "smooth_l1_loss", "cross_entropy_loss", "binary_cross_entropy_loss")
ROW_WEIGHTED = ("sigmoid_focal_loss", "quality_focal_loss", "giou_loss",
                "cross_entropy_loss", "binary_cross_entropy_loss")


@pytest.mark.spec("LOSS-3")
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_avg_factor_with_sum_is_an_error(impl, device, name):
    raises_value_error(lambda: _call_loss(impl, name, device, reduction="sum", avg_factor=2.0),
                       match="avg_factor")


@pytest.mark.spec("LOSS-3")
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_unknown_reduction_is_an_error(impl, device, name):
    raises_value_error(lambda: _call_loss(impl, name, device, reduction="average"),
                       match="reduction")


@pytest.mark.spec("LOSS-3")
def test_weight_reduce_loss_rejects_bad_options(impl, device):
    weight_reduce_loss = impl.get("weight_reduce_loss")
    loss = torch.ones(3, device=device)
    raises_value_error(weight_reduce_loss, loss, None, "sum", 2.0, match="avg_factor")
    raises_value_error(weight_reduce_loss, loss, None, "max", match="reduction")
    raises_value_error(weight_reduce_loss, loss, None, "mean", -1.0, match="avg_factor")
    raises_value_error(weight_reduce_loss, loss, None, "mean", float("nan"), match="avg_factor")


def _weight_for(name, n, device, value):
    if name in ROW_WEIGHTED:
        return torch.full((n,), value, device=device)
    return torch.full((n, 4), value, device=device)


@pytest.mark.spec("LOSS-4")
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_zero_weights_give_exact_zeros_with_finite_gradients(impl, device, name, reduction):
    weight = _weight_for(name, 3, device, 0.0)
    loss, pred = _call_loss(impl, name, device, weight=weight, reduction=reduction)
    assert torch.all(loss == 0), f"{name}: loss {loss} with all-zero weights"
    loss.sum().backward()
    assert pred.grad is not None and pred.grad.shape == pred.shape
    assert torch.all(pred.grad == 0), f"{name}: gradient {pred.grad} with all-zero weights"


@pytest.mark.spec("LOSS-4")
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_zero_weight_rows_get_zero_gradient(impl, device, name):
    weight = _weight_for(name, 3, device, 1.0)
    weight[1] = 0
    loss, pred = _call_loss(impl, name, device, weight=weight, reduction="sum")
    loss.backward()
    assert torch.all(pred.grad[1] == 0)
    assert torch.isfinite(pred.grad).all()


@pytest.mark.spec("LOSS-5")
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_empty_inputs_give_a_differentiable_zero(impl, device, name, reduction):
    loss, pred = _call_loss(impl, name, device, n=0, reduction=reduction)
    if reduction == "none":
        assert loss.numel() == 0
        return
    assert loss.dim() == 0 and float(loss.detach()) == 0.0, f"{name}: {loss} on empty input"
    loss.backward()
    assert pred.grad is not None and pred.grad.shape == pred.shape


@pytest.mark.spec("LOSS-5")
def test_empty_mean_with_avg_factor_is_zero(impl, device):
    loss, pred = _call_loss(impl, "sigmoid_focal_loss", device, n=0, avg_factor=0.0)
    assert float(loss.detach()) == 0.0
    loss.backward()


@pytest.mark.spec("LOSS-27")
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_loss_weight_scales_the_reduced_loss(impl, device, name):
    base, _ = _call_loss(impl, name, device, dtype=torch.float64)
    scaled, _ = _call_loss(impl, name, device, dtype=torch.float64, loss_weight=2.5)
    assert_close(scaled, 2.5 * float(base.detach()), impl)


# --------------------------------------------------------------------------- focal
MIXED_PROBLEM = (np.array([[1.5, -2.0, 0.25], [-0.5, 3.0, -1.0], [2.0, -4.0, 0.5]]),
                 np.array([1, 3, 0]), np.array([1.0, 2.0, 0.5]))


def _focal_integer_labels_against_the_oracle(impl, device, problem, red, gamma, alpha):
    focal = impl.get("sigmoid_focal_loss")
    pred, labels, weight = problem
    reduction, avg_factor = red
    out = focal(tensor(pred, device), tensor(labels, device, torch.int64),
                None if weight is None else tensor(weight, device),
                gamma=gamma, alpha=alpha, reduction=reduction, avg_factor=avg_factor)
    elementwise = oracle.focal_elementwise(pred, oracle.one_hot_target(labels, pred.shape[1]),
                                           gamma, alpha)
    w = None if weight is None else np.broadcast_to(weight[:, None], pred.shape)
    assert_close(out, expected_reduce(elementwise, w, reduction, avg_factor), impl)


@pytest.mark.spec("LOSS-6")
@given(problem=class_problems(), red=reductions(),
       gamma=st.sampled_from([0.0, 1.0, 2.0]), alpha=st.sampled_from([0.0, 0.25, 0.5, 1.0]))
@example(problem=MIXED_PROBLEM, red=("none", None), gamma=2.0, alpha=0.25)
@example(problem=MIXED_PROBLEM, red=("mean", 3.0), gamma=2.0, alpha=0.25)
def test_focal_loss_with_integer_labels_matches_oracle(impl, device, problem, red, gamma, alpha):
    # alpha >= 0 only: the alpha < 0 switch-off is torchvision's convention (LOSS-7).
    _focal_integer_labels_against_the_oracle(impl, device, problem, red, gamma, alpha)


@pytest.mark.spec("LOSS-7")
@given(problem=class_problems(), red=reductions(), gamma=st.sampled_from([0.0, 1.0, 2.0]))
def test_focal_loss_with_negative_alpha_has_no_alpha_factor(impl, device, problem, red, gamma):
    # alpha = -1: the one negative value torchvision 0.29 accepts (ops/focal_loss.py
    # raises ValueError for alpha outside [0, 1] other than -1).
    _focal_integer_labels_against_the_oracle(impl, device, problem, red, gamma, -1.0)


@pytest.mark.spec("LOSS-6")
@given(data=st.data(), red=reductions())
def test_focal_loss_with_float_targets_matches_oracle(impl, device, data, red):
    focal = impl.get("sigmoid_focal_loss")
    shape = data.draw(st.sampled_from([(4,), (3, 2), (2, 2, 3)]))
    pred = arrays(data.draw, shape, eighths(-6, 6))
    target = arrays(data.draw, shape, eighths(0, 1))
    reduction, avg_factor = red
    out = focal(tensor(pred, device), tensor(target, device), reduction=reduction,
                avg_factor=avg_factor)
    assert_close(out, expected_reduce(oracle.focal_elementwise(pred, target), None,
                                      reduction, avg_factor), impl)


@pytest.mark.spec("LOSS-6")
def test_focal_alpha_weights_positives_by_alpha_and_negatives_by_one_minus_alpha(impl, device):
    focal = impl.get("sigmoid_focal_loss")
    # logit 0: p = 0.5, BCE = log 2, (1 - p_t)^2 = 0.25 for either target.
    pred = tensor([[0.0, 0.0]], device, torch.float64)
    out = focal(pred, tensor([0], device, torch.int64), reduction="none")
    positive, negative = 0.25 * math.log(2) * 0.25, 0.75 * math.log(2) * 0.25
    assert_close(out, [[positive, negative]], impl, rtol=1e-12, atol=0)


@pytest.mark.spec("LOSS-6")
def test_focal_background_label_is_an_all_zero_target_row(impl, device):
    focal = impl.get("sigmoid_focal_loss")
    pred = tensor([[1.5, -2.0, 0.25], [0.5, 3.0, -1.0]], device)
    labels = tensor([3, 1], device, torch.int64)  # 3 = C = background
    as_float = tensor([[0, 0, 0], [0, 1, 0]], device)
    assert_close(focal(pred, labels, reduction="none"), focal(pred, as_float, reduction="none"),
                 impl)


@pytest.mark.spec("LOSS-7")
def test_focal_with_gamma_zero_and_negative_alpha_equals_bce_including_gradients(impl, device):
    focal = impl.get("sigmoid_focal_loss")
    g = torch.Generator().manual_seed(1)
    pred = (torch.randn(5, 3, generator=g, dtype=torch.float64) * 3).to(device)
    target = torch.rand(5, 3, generator=g, dtype=torch.float64).round().to(device)
    p1, p2 = pred.clone().requires_grad_(), pred.clone().requires_grad_()
    loss = focal(p1, target, gamma=0.0, alpha=-1.0, reduction="sum")
    bce = torch.nn.functional.binary_cross_entropy_with_logits(p2, target, reduction="sum")
    assert_close(loss, bce.detach(), impl, rtol=1e-12, atol=1e-12)
    loss.backward()
    bce.backward()
    assert_close(p1.grad, p2.grad, impl, rtol=1e-12, atol=1e-12, what="gradient")


@pytest.mark.spec("LOSS-8")
def test_focal_per_row_weight_multiplies_every_class_column(impl, device):
    focal = impl.get("sigmoid_focal_loss")
    pred = tensor([[1.0, -1.0], [0.5, 2.0]], device)
    labels = tensor([0, 2], device, torch.int64)
    plain = focal(pred, labels, reduction="none")
    weighted = focal(pred, labels, tensor([2.0, 0.0], device), reduction="none")
    assert_close(weighted, plain * tensor([[2.0], [0.0]], device), impl)


@pytest.mark.spec("LOSS-9")
@pytest.mark.flavour("torchvision")
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_focal_loss_matches_torchvision_ops(impl, device, reduction):
    from torchvision.ops import sigmoid_focal_loss as tv_focal

    focal = impl.get("sigmoid_focal_loss")
    g = torch.Generator().manual_seed(2)
    pred = (torch.randn(16, 5, generator=g) * 3).to(device)
    target = (torch.rand(16, 5, generator=g) > 0.7).float().to(device)
    for alpha in (0.25, -1.0):
        expected = tv_focal(pred, target, alpha=alpha, gamma=2.0, reduction=reduction)
        assert_close(focal(pred, target, alpha=alpha, gamma=2.0, reduction=reduction),
                     expected, impl)


# --------------------------------------------------------------------------- quality focal
@pytest.mark.spec("LOSS-10")
@given(problem=class_problems(), red=reductions(), data=st.data(),
       beta=st.sampled_from([1.0, 2.0]))
def test_qfl_with_label_score_tuple_matches_oracle(impl, device, problem, red, data, beta):
    qfl = impl.get("quality_focal_loss")
    pred, labels, weight = problem
    scores = arrays(data.draw, labels.shape, eighths(0, 1))
    reduction, avg_factor = red
    out = qfl(tensor(pred, device), (tensor(labels, device, torch.int64), tensor(scores, device)),
              None if weight is None else tensor(weight, device), beta=beta,
              reduction=reduction, avg_factor=avg_factor)
    rows = oracle.qfl_rows(pred, labels, scores, beta)
    assert_close(out, expected_reduce(rows, weight, reduction, avg_factor), impl)


@pytest.mark.spec("LOSS-11")
@given(problem=class_problems(), data=st.data(), red=reductions())
def test_qfl_soft_target_form_matches_oracle(impl, device, problem, data, red):
    qfl = impl.get("quality_focal_loss")
    pred, _, weight = problem
    soft = arrays(data.draw, pred.shape, eighths(0, 1))
    reduction, avg_factor = red
    out = qfl(tensor(pred, device), tensor(soft, device),
              None if weight is None else tensor(weight, device),
              reduction=reduction, avg_factor=avg_factor)
    rows = oracle.qfl_soft_rows(pred, soft)
    assert_close(out, expected_reduce(rows, weight, reduction, avg_factor), impl)


@pytest.mark.spec("LOSS-11")
def test_qfl_tuple_and_soft_one_hot_forms_agree(impl, device):
    qfl = impl.get("quality_focal_loss")
    pred = tensor([[0.5, -1.0, 2.0], [1.0, 1.0, -3.0], [0.0, 0.25, 0.5]], device)
    labels = tensor([2, 3, 0], device, torch.int64)  # 3 = background
    scores = tensor([0.75, 0.9, 0.0], device)  # a positive with score 0 stays a column of 0
    soft = tensor([[0, 0, 0.75], [0, 0, 0], [0, 0, 0]], device)
    assert_close(qfl(pred, (labels, scores), reduction="none"),
                 qfl(pred, soft, reduction="none"), impl)


@pytest.mark.spec("LOSS-10")
def test_qfl_worked_example(impl, device):
    qfl = impl.get("quality_focal_loss")
    # Row 0: label 0 with score 0.5 at logit 0 -> BCE(0, 0.5) * |0.5 - 0.5|^2 = 0;
    # its other column (logit 0, negative) -> log 2 * 0.5^2.
    # Row 1: background, both logits 0 -> 2 * log 2 * 0.25.
    pred = tensor([[0.0, 0.0], [0.0, 0.0]], device, torch.float64)
    out = qfl(pred, (tensor([0, 2], device, torch.int64), tensor([0.5, 0.7], device,
                                                                  torch.float64)),
              reduction="none")
    assert_close(out, [0.25 * math.log(2), 0.5 * math.log(2)], impl, rtol=1e-12, atol=1e-15)


# --------------------------------------------------------------------------- GIoU
@pytest.mark.spec("LOSS-13")
@pytest.mark.flavour("mmdet")
@given(pair=box_pairs(), red=reductions(), data=st.data())
def test_giou_loss_matches_oracle_with_mmdet_eps(impl, device, pair, red, data):
    giou_loss = impl.get("giou_loss")
    pred, target = pair
    weight = None
    if data.draw(st.booleans()):
        weight = arrays(data.draw, (len(pred),), st.sampled_from([0.0, 0.5, 1.0, 2.0]))
    reduction, avg_factor = red
    out = giou_loss(tensor(pred, device), tensor(target, device),
                    None if weight is None else tensor(weight, device),
                    reduction=reduction, avg_factor=avg_factor, flavour="mmdet")
    rows = oracle.giou_loss_rows(pred, target, eps=1e-6, clamp=True)
    assert_close(out, expected_reduce(rows, weight, reduction, avg_factor), impl)


@pytest.mark.spec("LOSS-13")
@pytest.mark.flavour("torchvision")
@given(pair=box_pairs(), red=reductions())
def test_giou_loss_matches_oracle_with_torchvision_eps(impl, device, pair, red):
    giou_loss = impl.get("giou_loss")
    pred, target = pair
    reduction, avg_factor = red
    out = giou_loss(tensor(pred, device), tensor(target, device), reduction=reduction,
                    avg_factor=avg_factor, flavour="torchvision")
    rows = oracle.giou_loss_rows(pred, target, eps=1e-7, clamp=False)
    assert_close(out, expected_reduce(rows, None, reduction, avg_factor), impl)


@pytest.mark.spec("LOSS-12")
@given(pair=box_pairs())
def test_giou_loss_is_in_zero_two_and_zero_for_identical_boxes(impl, device, pair):
    giou_loss = impl.get("giou_loss")
    pred, target = pair
    out = giou_loss(tensor(pred, device), tensor(target, device), reduction="none")
    assert torch.all(out >= -1e-6) and torch.all(out <= 2 + 1e-6)
    area = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    same = giou_loss(tensor(pred, device), tensor(pred, device), reduction="none")
    assert_close(same[tensor(area > 0, device, torch.bool)], np.zeros(int((area > 0).sum())),
                 impl)


@pytest.mark.spec("LOSS-12")
def test_giou_loss_worked_examples(impl, device):
    giou_loss = impl.get("giou_loss")
    # Overlap: inter 1, union 7, enclose 9 -> GIoU = 1/7 - 2/9 = -5/63.
    # Disjoint: inter 0, union 2, enclose 9 -> GIoU = -7/9.
    pred = tensor([[0, 0, 2, 2], [0, 0, 1, 1]], device, torch.float64)
    target = tensor([[1, 1, 3, 3], [2, 2, 3, 3]], device, torch.float64)
    out = giou_loss(pred, target, reduction="none")
    assert_close(out, [68 / 63, 16 / 9], impl, rtol=1e-9, atol=1e-9)


@pytest.mark.spec("LOSS-13")
def test_giou_eps_rule_differs_by_flavour_on_tiny_boxes(impl, device):
    giou_loss = impl.get("giou_loss")
    # Two identical 1e-3 x 1e-3 boxes: union 1e-6. mmdet's clamp leaves it: loss 0.
    # Adding 1e-7 gives IoU 1e-6 / 1.1e-6 = 10/11: loss 1/11.
    box = tensor([[0.0, 0.0, 1e-3, 1e-3]], device, torch.float64)
    mm = giou_loss(box, box, reduction="none", flavour="mmdet")
    tv = giou_loss(box, box, reduction="none", flavour="torchvision")
    d2 = giou_loss(box, box, reduction="none", flavour="detectron2")
    assert_close(mm, [0.0], impl, rtol=1e-9, atol=1e-12)
    assert_close(tv, [1 / 11], impl, rtol=1e-9, atol=1e-12)
    assert_close(d2, [1 / 11], impl, rtol=1e-9, atol=1e-12)
    # eps overrides the value and keeps the rule: clamping at 1e-5 gives IoU 0.1.
    assert_close(giou_loss(box, box, reduction="none", eps=1e-5), [0.9], impl,
                 rtol=1e-9, atol=1e-12)


@pytest.mark.spec("LOSS-13")
def test_giou_weight_of_shape_n_by_4_is_averaged(impl, device):
    giou_loss = impl.get("giou_loss")
    pred = tensor([[0, 0, 2, 2], [0, 0, 1, 1]], device)
    target = tensor([[1, 1, 3, 3], [2, 2, 3, 3]], device)
    w4 = tensor([[1, 1, 1, 1], [0, 1, 0, 1]], device)  # row means 1 and 0.5
    assert_close(giou_loss(pred, target, w4, reduction="none"),
                 giou_loss(pred, target, tensor([1.0, 0.5], device), reduction="none"), impl)


@pytest.mark.spec("LOSS-14")
@pytest.mark.flavour("torchvision")
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_giou_loss_matches_torchvision_ops(impl, device, reduction):
    from torchvision.ops import generalized_box_iou_loss

    giou_loss = impl.get("giou_loss")
    g = torch.Generator().manual_seed(3)
    xy = torch.rand(20, 2, generator=g) * 50
    pred = torch.cat([xy, xy + torch.rand(20, 2, generator=g) * 30], 1).to(device)
    xy = xy + torch.randn(20, 2, generator=g) * 5
    target = torch.cat([xy, xy + torch.rand(20, 2, generator=g) * 30], 1).to(device)
    expected = generalized_box_iou_loss(pred, target, reduction=reduction)
    assert_close(giou_loss(pred, target, reduction=reduction, flavour="torchvision"),
                 expected, impl)


# --------------------------------------------------------------------------- L1 family
@st.composite
def regression_problems(draw):
    shape = draw(st.sampled_from([(1,), (3, 4), (5, 4), (2, 3)]))
    pred = arrays(draw, shape, eighths(-4, 4))
    target = arrays(draw, shape, eighths(-4, 4))
    weight = None
    if draw(st.booleans()):
        weight = arrays(draw, shape, st.sampled_from([0.0, 0.5, 1.0, 2.0]))
    return pred, target, weight


@pytest.mark.spec("LOSS-15")
@given(problem=regression_problems(), red=reductions())
def test_l1_loss_matches_oracle(impl, device, problem, red):
    l1_loss = impl.get("l1_loss")
    pred, target, weight = problem
    reduction, avg_factor = red
    out = l1_loss(tensor(pred, device), tensor(target, device),
                  None if weight is None else tensor(weight, device),
                  reduction=reduction, avg_factor=avg_factor)
    assert_close(out, expected_reduce(np.abs(pred - target), weight, reduction, avg_factor),
                 impl)


def _smooth_l1_against_the_oracle(impl, device, problem, red, beta):
    smooth_l1_loss = impl.get("smooth_l1_loss")
    pred, target, weight = problem
    reduction, avg_factor = red
    out = smooth_l1_loss(tensor(pred, device), tensor(target, device),
                         None if weight is None else tensor(weight, device), beta=beta,
                         reduction=reduction, avg_factor=avg_factor)
    rows = oracle.smooth_l1_elementwise(pred, target, beta)
    assert_close(out, expected_reduce(rows, weight, reduction, avg_factor), impl)


@pytest.mark.spec("LOSS-16")
@given(problem=regression_problems(), red=reductions(),
       beta=st.sampled_from([1 / 9, 0.5, 1.0, 2.0]))
def test_smooth_l1_loss_matches_oracle(impl, device, problem, red, beta):
    # beta > 0 only: beta = 0 (detectron2's plain L1) is LOSS-17's.
    _smooth_l1_against_the_oracle(impl, device, problem, red, beta)


@pytest.mark.spec("LOSS-17")
@given(problem=regression_problems(), red=reductions())
def test_smooth_l1_loss_with_beta_zero_matches_the_l1_oracle(impl, device, problem, red):
    _smooth_l1_against_the_oracle(impl, device, problem, red, 0.0)


@pytest.mark.spec("LOSS-16")
def test_smooth_l1_worked_examples_around_beta(impl, device):
    smooth_l1_loss = impl.get("smooth_l1_loss")
    d = tensor([0.0, 0.5, 1.0, 3.0], device, torch.float64)
    out = smooth_l1_loss(d, torch.zeros_like(d), beta=1.0, reduction="none")
    assert_close(out, [0.0, 0.125, 0.5, 2.5], impl, rtol=1e-12, atol=0)
    out = smooth_l1_loss(d, torch.zeros_like(d), beta=1 / 9, reduction="none")
    assert_close(out, [0.0, 0.5 - 1 / 18, 1 - 1 / 18, 3 - 1 / 18], impl, rtol=1e-12, atol=0)


@pytest.mark.spec("LOSS-17")
def test_smooth_l1_with_beta_zero_is_l1_with_finite_gradients(impl, device):
    smooth_l1_loss, l1_loss = impl.get("smooth_l1_loss"), impl.get("l1_loss")
    target = tensor([0.0, 1.0, -2.0, 0.5], device, torch.float64)
    pred = tensor([0.0, 1.5, -3.0, 0.5], device, torch.float64).requires_grad_()
    out = smooth_l1_loss(pred, target, beta=0.0, reduction="none")
    assert_close(out, l1_loss(pred, target, reduction="none").detach(), impl, rtol=0, atol=0)
    assert_close(out, [0.0, 0.5, 1.0, 0.0], impl, rtol=0, atol=0)
    out.sum().backward()
    assert torch.isfinite(pred.grad).all(), f"gradient {pred.grad}"
    assert_close(pred.grad[1:3], [1.0, -1.0], impl, rtol=0, atol=0)


# --------------------------------------------------------------------------- cross-entropy
@pytest.mark.spec("LOSS-18")
@given(problem=class_problems(max_classes=5), red=reductions(), data=st.data())
def test_cross_entropy_matches_oracle(impl, device, problem, red, data):
    ce = impl.get("cross_entropy_loss")
    pred, labels, weight = problem
    k = pred.shape[1]
    labels = np.minimum(labels, k - 1)
    ignore = data.draw(st.lists(st.booleans(), min_size=len(labels), max_size=len(labels)))
    labels = np.where(ignore, -100, labels)
    reduction, avg_factor = red
    out = ce(tensor(pred, device), tensor(labels, device, torch.int64),
             None if weight is None else tensor(weight, device),
             reduction=reduction, avg_factor=avg_factor)
    rows = oracle.cross_entropy_rows(pred, labels)
    assert_close(out, expected_reduce(rows, weight, reduction, avg_factor), impl)


@pytest.mark.spec("LOSS-18")
def test_cross_entropy_ignored_rows_contribute_zero_and_count_in_the_mean(impl, device):
    ce = impl.get("cross_entropy_loss")
    pred = tensor([[0.0, 0.0, 0.0], [5.0, 1.0, 2.0]], device, torch.float64)
    labels = tensor([2, -100], device, torch.int64)
    assert_close(ce(pred, labels, reduction="none"), [math.log(3), 0.0], impl,
                 rtol=1e-12, atol=0)
    assert_close(ce(pred, labels), math.log(3) / 2, impl, rtol=1e-12, atol=0)
    assert_close(ce(pred, tensor([2, 9], device, torch.int64), ignore_index=9),
                 math.log(3) / 2, impl, rtol=1e-12, atol=0)


@pytest.mark.spec("LOSS-18")
@pytest.mark.parametrize("flavour", [pytest.param(f, marks=pytest.mark.flavour(f))
                                     for f in ("detectron2", "torchvision")])
def test_cross_entropy_mean_counts_only_rows_not_ignored_in_torch_flavours(impl, device,
                                                                          flavour):
    # detectron2 (layers/wrappers.py:87) and torchvision (roi_heads.py:35) call
    # F.cross_entropy, whose mean divides by the rows not ignored: log(3) / 1 here,
    # where mmdet's divides by both rows (log(3) / 2).
    ce = impl.get("cross_entropy_loss")
    pred = tensor([[0.0, 0.0, 0.0], [5.0, 1.0, 2.0]], device, torch.float64)
    labels = tensor([2, -100], device, torch.int64)
    assert_close(ce(pred, labels, flavour=flavour), math.log(3), impl, rtol=1e-12, atol=0)
    g = torch.Generator().manual_seed(18)
    pred = (torch.randn(7, 4, generator=g, dtype=torch.float64) * 2).to(device)
    labels = torch.tensor([0, -100, 3, 1, -100, 2, 0], device=device)
    assert_close(ce(pred, labels, flavour=flavour),
                 torch.nn.functional.cross_entropy(pred, labels), impl, rtol=1e-12, atol=1e-15)
    assert_close(ce(pred, labels, flavour=flavour, reduction="sum"),
                 ce(pred, labels, reduction="sum"), impl, rtol=0, atol=0)


@pytest.mark.spec("LOSS-18")
@pytest.mark.parametrize("flavour", [pytest.param(f, marks=pytest.mark.flavour(f))
                                     for f in ("mmdet", "detectron2", "torchvision")])
def test_cross_entropy_mean_with_every_row_ignored_is_zero_not_nan(impl, device, flavour):
    # mmdet: 0 / 2 rows; the torch flavours: F.cross_entropy would give 0 / 0 = NaN.
    pred = tensor([[1.0, 2.0, 0.5], [0.0, 3.0, -1.0]], device, torch.float64).requires_grad_()
    loss = impl.get("cross_entropy_loss")(pred, tensor([-100, -100], device, torch.int64),
                                          flavour=flavour)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.isfinite(pred.grad).all()


@pytest.mark.spec("LOSS-19")
@given(data=st.data(), red=reductions())
def test_bce_with_float_targets_matches_oracle(impl, device, data, red):
    bce = impl.get("binary_cross_entropy_loss")
    shape = data.draw(st.sampled_from([(5,), (3, 2), (2, 2, 2)]))
    pred = arrays(data.draw, shape, eighths(-6, 6))
    target = arrays(data.draw, shape, eighths(0, 1))
    weight = None
    if data.draw(st.booleans()):
        weight = arrays(data.draw, shape, st.sampled_from([0.0, 0.5, 1.0, 2.0]))
    reduction, avg_factor = red
    out = bce(tensor(pred, device), tensor(target, device),
              None if weight is None else tensor(weight, device),
              reduction=reduction, avg_factor=avg_factor)
    assert_close(out, expected_reduce(oracle.bce_elementwise(pred, target), weight, reduction,
                                      avg_factor), impl)


@pytest.mark.spec("LOSS-19")
@given(problem=class_problems(), red=reductions())
def test_bce_with_integer_labels_expands_to_one_hot_with_background_zero_row(
        impl, device, problem, red):
    bce = impl.get("binary_cross_entropy_loss")
    pred, labels, weight = problem
    reduction, avg_factor = red
    out = bce(tensor(pred, device), tensor(labels, device, torch.int64),
              None if weight is None else tensor(weight, device),
              reduction=reduction, avg_factor=avg_factor)
    elementwise = oracle.bce_elementwise(pred, oracle.one_hot_target(labels, pred.shape[1]))
    w = None if weight is None else np.broadcast_to(weight[:, None], pred.shape)
    assert_close(out, expected_reduce(elementwise, w, reduction, avg_factor), impl)


# --------------------------------------------------------------------------- gradients
@pytest.mark.spec("LOSS-26")
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_every_loss_passes_gradcheck_in_float64(impl, device, name):
    fn = impl.get(name)
    _, pred = _call_loss(impl, name, device, n=4, dtype=torch.float64)
    pred = pred.detach().requires_grad_()
    target = _targets_for(name, pred)
    weight = _weight_for(name, 4, device, 1.0).double()
    weight[0] = 0.5
    assert torch.autograd.gradcheck(
        lambda p: fn(p, target, weight, reduction="sum"), (pred,), eps=1e-6, atol=1e-5)


def _targets_for(name, pred):
    """Targets for gradcheck, away from kinks (no ties, no zero differences)."""
    n, device = pred.shape[0], pred.device
    g = torch.Generator().manual_seed(5)
    if name == "giou_loss":
        p = pred.detach()
        return torch.cat([p[:, :2] + 0.37, p[:, 2:] + 0.81], 1)
    if name in ("l1_loss", "smooth_l1_loss"):
        return (pred.detach() + 0.3 + torch.rand(pred.shape, generator=g,
                                                 dtype=torch.float64).to(device)).detach()
    if name == "cross_entropy_loss":
        return torch.arange(n, device=device) % pred.shape[1]
    if name == "quality_focal_loss":
        return (torch.arange(n, device=device) % 4,
                torch.rand(n, generator=g, dtype=torch.float64).to(device))
    return torch.arange(n, device=device) % 4


# --------------------------------------------------------------------------- normalisers
@pytest.mark.spec("LOSS-20")
def test_retinanet_num_total_pos_counts_every_image_at_least_once(impl):
    num_total_pos = impl.get("retinanet_num_total_pos")
    assert num_total_pos([0, 3, 1]) == 5
    assert num_total_pos(torch.tensor([0, 0])) == 2
    assert num_total_pos([7]) == 7
    assert num_total_pos([0, 3], num_neg_per_image=[250, 0]) == 1 + 3 + 250 + 1


@pytest.mark.spec("LOSS-21")
def test_rtmdet_avg_factor_is_the_metric_sum_clamped_to_one(impl, device):
    avg = impl.get("rtmdet_avg_factor")
    assert avg(tensor([0.2, 0.0, 0.3], device)) == pytest.approx(1.0)
    assert avg(tensor([[0.9, 0.8], [0.7, 0.0]], device)) == pytest.approx(2.4, rel=1e-6)
    assert avg([tensor([0.9], device), tensor([0.8, 0.7], device)]) == pytest.approx(2.4, rel=1e-6)
    assert avg(torch.zeros(0, device=device)) == pytest.approx(1.0)


@pytest.mark.spec("LOSS-22")
def test_detectron2_rpn_normalizer_is_one_over_sampled_anchors_in_batch(impl):
    norm = impl.get("detectron2_rpn_normalizer")
    assert norm(256, 2) == pytest.approx(1 / 512)
    assert norm(256, 16) == pytest.approx(1 / 4096)


@pytest.mark.spec("LOSS-23")
def test_ema_loss_normalizer_follows_detectron2_retinanet(impl):
    ema = impl.get("EmaLossNormalizer")()
    assert ema.update(0) == pytest.approx(0.9 * 100 + 0.1 * 1)  # max(0, 1) = 1
    assert ema.update(50) == pytest.approx(0.9 * 90.1 + 0.1 * 50)
    assert ema.value == pytest.approx(86.09)


@pytest.mark.spec("LOSS-24")
def test_torchvision_per_image_mean_divides_each_image_by_its_foreground(impl, device):
    mean = impl.get("torchvision_per_image_mean")
    out = mean(tensor([4.0, 3.0], device), [2, 0])
    assert_close(out, (4 / 2 + 3 / 1) / 2, impl)
    out = mean([tensor(6.0, device), tensor(1.0, device), tensor(9.0, device)], [3, 1, 0])
    assert_close(out, (2 + 1 + 9) / 3, impl)


# --------------------------------------------------------------------------- bad inputs
@pytest.mark.spec("LOSS-25")
def test_shape_mismatch_is_an_error(impl, device):
    z = lambda *s: torch.zeros(*s, device=device)  # noqa: E731
    raises_value_error(impl.get("l1_loss"), z(3, 4), z(3, 3), match="target")
    raises_value_error(impl.get("smooth_l1_loss"), z(3, 4), z(4, 4), match="target")
    raises_value_error(impl.get("giou_loss"), z(3, 4), z(2, 4), match="target")
    raises_value_error(impl.get("giou_loss"), z(3, 5), z(3, 5), match="pred")
    raises_value_error(impl.get("sigmoid_focal_loss"), z(3, 4), z(3, 5), match="target")
    raises_value_error(impl.get("quality_focal_loss"), z(3, 4), z(3, 5), match="target")
    raises_value_error(impl.get("binary_cross_entropy_loss"), z(3, 4), z(4), match="target")
    raises_value_error(impl.get("l1_loss"), z(3, 4), z(3, 4), z(3), match="weight")
    raises_value_error(impl.get("sigmoid_focal_loss"), z(3, 4),
                       torch.zeros(3, dtype=torch.long, device=device), z(4), match="weight")


@pytest.mark.spec("LOSS-25")
def test_labels_out_of_range_are_an_error(impl, device):
    pred = torch.zeros(2, 3, device=device)
    bad_high = torch.tensor([0, 4], device=device)  # C = 3 is background, 4 is out of range
    bad_low = torch.tensor([-1, 0], device=device)
    for name in ("sigmoid_focal_loss", "binary_cross_entropy_loss"):
        raises_value_error(impl.get(name), pred, bad_high, match="target")
        raises_value_error(impl.get(name), pred, bad_low, match="target")
    qfl = impl.get("quality_focal_loss")
    raises_value_error(qfl, pred, (bad_high, torch.ones(2, device=device)), match="target")
    ce = impl.get("cross_entropy_loss")
    raises_value_error(ce, pred, torch.tensor([0, 3], device=device), match="target")
    raises_value_error(ce, pred, bad_low, match="target")


@pytest.mark.spec("LOSS-25")
def test_non_finite_boxes_are_an_error_in_giou_loss(impl, device):
    giou_loss = impl.get("giou_loss")
    good = tensor([[0, 0, 2, 2]], device)
    for bad in (float("nan"), float("inf")):
        box = tensor([[0, 0, bad, 2]], device)
        raises_value_error(giou_loss, box, good, match="pred")
        raises_value_error(giou_loss, good, box, match="target")


@pytest.mark.spec("LOSS-25")
def test_bad_types_options_and_devices_are_errors(impl, device):
    l1, smooth = impl.get("l1_loss"), impl.get("smooth_l1_loss")
    ints = torch.zeros(2, 4, dtype=torch.long, device=device)
    raises_value_error(l1, ints, ints, match="pred")
    raises_value_error(l1, [[0.0] * 4], torch.zeros(1, 4, device=device), match="pred")
    raises_value_error(smooth, torch.zeros(2, device=device), torch.zeros(2, device=device),
                       beta=-1.0, match="beta")
    box = tensor([[0, 0, 2, 2]], device)
    raises_value_error(impl.get("giou_loss"), box, box, flavour="yolo", match="flavour")
    raises_value_error(impl.get("quality_focal_loss"), torch.zeros(2, 3, device=device),
                       (torch.zeros(2, dtype=torch.long, device=device),), match="target")
    elsewhere = torch.zeros(2, 4, device=other_device(device))
    raises_value_error(l1, torch.zeros(2, 4, device=device), elsewhere, match="target")
    raises_value_error(impl.get("torchvision_per_image_mean"), tensor([1.0, 2.0], device), [1],
                       match="loss_per_image")


# --------------------------------------------------------------------------- non-finite inputs
_NAN_CASES = [  # (loss, pred shape, target builder)
    ("sigmoid_focal_loss", (4, 3), lambda: torch.tensor([0, 1, 3, 2])),
    ("quality_focal_loss", (4, 3), lambda: (torch.tensor([0, 1, 3, 2]), torch.full((4,), 0.5))),
    ("cross_entropy_loss", (4, 3), lambda: torch.tensor([0, 1, 2, 2])),
    ("binary_cross_entropy_loss", (4, 3), lambda: torch.full((4, 3), 0.5)),
    ("l1_loss", (4, 3), lambda: torch.zeros(4, 3)),
    ("smooth_l1_loss", (4, 3), lambda: torch.zeros(4, 3)),
]


@pytest.mark.spec("LOSS-30")
@pytest.mark.parametrize("name,shape,target", _NAN_CASES, ids=[c[0] for c in _NAN_CASES])
@pytest.mark.parametrize("where", ["pred", "target"])
def test_nan_inputs_propagate_to_the_loss_without_error(impl, device, name, shape, target, where):
    loss_fn = impl.get(name)
    pred = torch.zeros(shape, device=device)
    tgt = target()
    tgt = tuple(t.to(device) for t in tgt) if isinstance(tgt, tuple) else tgt.to(device)
    if where == "pred":
        pred[1, 0] = float("nan")
    elif isinstance(tgt, tuple):
        tgt[1][1] = float("nan")
    elif tgt.is_floating_point():
        tgt[1, 0] = float("nan")
    else:
        pytest.skip("integer labels have no NaN")
    per_element = loss_fn(pred, tgt, reduction="none")
    assert torch.isnan(loss_fn(pred, tgt, reduction="sum"))
    assert torch.isnan(per_element).any()
    rows = per_element.reshape(shape[0], -1)
    assert torch.isfinite(rows[[0, 2, 3]]).all(), "a NaN in row 1 must not reach other rows"


@pytest.mark.spec("IOU-V9")
def test_giou_loss_rejects_coordinates_beyond_the_guaranteed_range(impl, device):
    giou_loss = impl.get("giou_loss")
    big = tensor([[0.0, 0.0, 1e20, 1e20]], device)
    small = tensor([[0.0, 0.0, 1.0, 1.0]], device)
    raises_value_error(giou_loss, big, small, match="pred")
    raises_value_error(giou_loss, small, big, match="target")


# --------------------------------------------------------------------------- batch normalisers
NORMALISER_EXAMPLE = {
    # LOSS-31's worked example: loss_sums [[2, 4], [6, 8]], num_pos [3, 0], num_neg [5, 7].
    "TotalPositives": [8 / 4, 12 / 4],  # sum_i max(pos_i, 1) = 3 + 1
    "TotalSamples": [8 / 16, 12 / 16],  # + sum_i max(neg_i, 1) = 5 + 7
    "PerImageMean": [(2 / 3 + 6 / 1) / 2, (4 / 3 + 8 / 1) / 2],  # mean_i(loss_i / max(1, pos_i))
    "SampledMean": [8 / 15, 12 / 15],  # sum_i (pos_i + neg_i) = 3 + 0 + 5 + 7
    "FixedBatch": [8 / 512, 12 / 512],  # batch_size_per_image 256 * 2 images
    "EmaLossNormalizer": [8 / 90.3, 12 / 90.3],  # 0.9 * 100 + 0.1 * max(3 + 0, 1)
}


@pytest.mark.spec("LOSS-31")
@pytest.mark.parametrize("name", list(NORMALISER_EXAMPLE))
def test_batch_normalisers_worked_example(impl, device, name):
    normaliser = impl.get(name)()
    loss_sums = tensor([[2.0, 4.0], [6.0, 8.0]], device)
    got = normaliser(loss_sums, [3, 0], [5, 7], 256)
    assert tuple(got.shape) == (2,)
    assert_close(got.detach().cpu().double().numpy(), np.array(NORMALISER_EXAMPLE[name]),
                 rtol=1e-6, atol=0)
