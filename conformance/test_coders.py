"""Conformance tests for the box coders (SPEC.md "Coders", clauses COD-*).

Three kinds of test: differential (hypothesis inputs against the loop oracle in
``oracles/coders.py``), properties, and worked examples with numbers a
reader can check by hand; then empty, degenerate and bad inputs.

Random boxes have corners on a 1/8 grid, so centres and sizes are exact in float32
and every implementation's arithmetic starts from the same numbers.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conformance.checks import assert_close, raises_value_error, tensor, to_numpy, tolerance_for
from oracles import coders as oracle

pytestmark = pytest.mark.component("coders")

CLAMP = math.log(1000.0 / 16)  # 4.135166556742356: 16 px may grow to 1000 px


# --------------------------------------------------------------------------- strategies
COORD = st.integers(-512, 512).map(lambda v: v / 8)  # [-64, 64] on a 1/8 grid
SIZE8 = st.integers(1, 1024)  # sizes in eighths of a pixel: [1/8, 128]


@st.composite
def box_arrays(draw, n: int) -> np.ndarray:
    """(n, 4) xyxy float64 boxes with positive width and height, corners on a 1/8 grid."""
    rows = []
    for _ in range(n):
        x, y = draw(COORD), draw(COORD)
        w, h = draw(SIZE8) / 8, draw(SIZE8) / 8
        rows.append((x, y, x + w, y + h))
    return np.array(rows, dtype=np.float64).reshape(n, 4)


@st.composite
def prior_target_pairs(draw, max_n: int = 6, max_ratio: float | None = None):
    """(priors, targets), each (n, 4); with max_ratio, gw/pw and gh/ph stay inside it."""
    n = draw(st.integers(0, max_n))
    priors = draw(box_arrays(n))
    if max_ratio is None:
        return priors, draw(box_arrays(n))
    rows = []
    for p in priors:
        x, y = draw(COORD), draw(COORD)
        sizes = []
        for extent in (p[2] - p[0], p[3] - p[1]):
            lo = max(1, math.ceil(extent * 8 / max_ratio))
            hi = min(1024, math.floor(extent * 8 * max_ratio))
            sizes.append(draw(st.integers(lo, hi)) / 8)
        rows.append((x, y, x + sizes[0], y + sizes[1]))
    return priors, np.array(rows, dtype=np.float64).reshape(n, 4)


def delta_arrays(n: int, k: int, bound: int = 96):
    """(n, k*4) deltas on a 1/16 grid in [-bound/16, bound/16] (default +-6: hits clamps)."""
    return st.lists(
        st.integers(-bound, bound).map(lambda v: v / 16), min_size=n * k * 4, max_size=n * k * 4
    ).map(lambda xs: np.array(xs, dtype=np.float64).reshape(n, k * 4))


def point_arrays(n: int):
    """(n, 2) points (x, y) on the same 1/8 grid as the boxes."""
    return st.lists(st.tuples(COORD, COORD), min_size=n, max_size=n).map(
        lambda xs: np.array(xs, dtype=np.float64).reshape(n, 2))


@st.composite
def priors_and_deltas(draw, max_n: int = 6, max_k: int = 3, bound: int = 96):
    n, k = draw(st.integers(0, max_n)), draw(st.integers(1, max_k))
    return draw(box_arrays(n)), draw(delta_arrays(n, k, bound))


# Normalisations with exact reciprocals, so stds s and weights 1/s are the same numbers.
STDS = st.sampled_from([(1.0, 1.0, 1.0, 1.0), (0.1, 0.1, 0.2, 0.2), (0.5, 0.25, 2.0, 1.0)])
MEANS = st.sampled_from([(0.0, 0.0, 0.0, 0.0), (0.125, -0.25, 0.5, -0.125)])


def close_rowwise(actual, expected, impl, what="boxes", scale_rows=None) -> None:
    """assert_close whose atol grows with each row's largest magnitude.

    A decoded corner is centre -+ size/2; float32 rounding is relative to the larger
    of the two terms, not to the (possibly small) corner itself.
    """
    expected = np.asarray(expected, dtype=np.float64)
    rtol, atol = tolerance_for(impl, actual.dtype)
    if expected.size:
        mags = np.abs(np.nan_to_num(expected, posinf=0, neginf=0)).reshape(len(expected), -1)
        scale = np.maximum(1.0, mags.max(axis=1, keepdims=True))
        if scale_rows is not None:
            scale = np.maximum(scale, np.asarray(scale_rows, dtype=np.float64).reshape(-1, 1))
        scale = np.broadcast_to(scale, mags.shape).reshape(expected.shape)
    else:
        scale = 1.0
    a = to_numpy(actual)
    assert a.shape == expected.shape, f"{what}: shape {a.shape}, expected {expected.shape}"
    ok = np.isclose(a, expected, rtol=rtol, atol=0, equal_nan=True) | (
        np.abs(a - expected) <= atol * scale
    )
    assert ok.all(), f"{what}: {a[~ok]} vs expected {expected[~ok]}"


# --------------------------------------------------------------------------- delta coders, uniformly
@dataclasses.dataclass(frozen=True)
class DeltaCoder:
    """One library's delta coder seen through (prior, target) -> code, (prior, code) -> box."""

    flavour: str
    clamp_below: bool
    encode: Callable
    decode: Callable


def make_mmdet(impl, stds=(1.0,) * 4) -> DeltaCoder:
    coder = impl.get("DeltaXYWHBBoxCoder")(target_stds=stds)
    return DeltaCoder("mmdet", True, lambda p, g: coder.encode(p, g),
                      lambda p, d: coder.decode(p, d))


def make_detectron2(impl, stds=(1.0,) * 4) -> DeltaCoder:
    coder = impl.get("Box2BoxTransform")(weights=tuple(1.0 / s for s in stds))
    return DeltaCoder("detectron2", False, lambda p, g: coder.get_deltas(p, g),
                      lambda p, d: coder.apply_deltas(d, p))


def make_torchvision(impl, stds=(1.0,) * 4) -> DeltaCoder:
    coder = impl.get("BoxCoder")(tuple(1.0 / s for s in stds))
    return DeltaCoder("torchvision", False, lambda p, g: coder.encode_single(g, p),
                      lambda p, d: coder.decode_single(d, p))


DELTA_CODERS = [
    pytest.param(make_mmdet, id="mmdet", marks=pytest.mark.flavour("mmdet")),
    pytest.param(make_detectron2, id="detectron2", marks=pytest.mark.flavour("detectron2")),
    pytest.param(make_torchvision, id="torchvision", marks=pytest.mark.flavour("torchvision")),
]


# =========================================================================== 1. differential
@pytest.mark.flavour("mmdet")
@pytest.mark.spec("COD-2")
@given(pair=prior_target_pairs(), means=MEANS, stds=STDS)
def test_mmdet_encode_matches_loop_oracle(impl, device, pair, means, stds):
    priors, targets = pair
    coder = impl.get("DeltaXYWHBBoxCoder")(target_means=means, target_stds=stds)
    out = coder.encode(tensor(priors, device), tensor(targets, device))
    assert_close(out, oracle.delta_encode(priors, targets, means, stds), impl, what="deltas")


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("COD-2")
@given(data=priors_and_deltas(), means=MEANS, stds=STDS,
       max_shape=st.sampled_from([None, (40, 60), (100, 30)]))
def test_mmdet_decode_matches_loop_oracle(impl, device, data, means, stds, max_shape):
    priors, deltas = data
    coder = impl.get("DeltaXYWHBBoxCoder")(target_means=means, target_stds=stds)
    out = coder.decode(tensor(priors, device), tensor(deltas, device), max_shape=max_shape)
    expected = oracle.delta_decode(priors, deltas, means, stds, clamp_below=True,
                                   max_shape=max_shape)
    close_rowwise(out, expected, impl)


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("COD-8")
@given(data=priors_and_deltas(), ctr=st.sampled_from([0.0, 8.0, 32.0]))
def test_mmdet_decode_with_centre_clamp_matches_loop_oracle(impl, device, data, ctr):
    priors, deltas = data
    coder = impl.get("DeltaXYWHBBoxCoder")(add_ctr_clamp=True, ctr_clamp=ctr)
    out = coder.decode(tensor(priors, device), tensor(deltas, device))
    close_rowwise(out, oracle.delta_decode(priors, deltas, ctr_clamp=ctr), impl)


# detectron2 get_deltas(prior, gt) and torchvision encode_single(gt, prior) (arguments
# reversed upstream; make_torchvision passes the gt first): the same weighted code.
WEIGHTED_ENCODERS = [
    pytest.param(make_detectron2, id="detectron2",
                 marks=[pytest.mark.flavour("detectron2"), pytest.mark.spec("COD-3")]),
    pytest.param(make_torchvision, id="torchvision",
                 marks=[pytest.mark.flavour("torchvision"), pytest.mark.spec("COD-4")]),
]


@pytest.mark.parametrize("make", WEIGHTED_ENCODERS)
@given(pair=prior_target_pairs(), stds=STDS)
def test_weighted_encode_matches_loop_oracle(impl, device, make, pair, stds):
    priors, targets = pair
    weights = tuple(1.0 / s for s in stds)
    out = make(impl, stds).encode(tensor(priors, device), tensor(targets, device))
    assert_close(out, oracle.delta_encode(priors, targets, weights=weights), impl, what="deltas")


# detectron2 apply_deltas(deltas, prior) and torchvision decode_single(deltas, prior).
@pytest.mark.parametrize("make", DELTA_CODERS[1:])
@pytest.mark.spec("COD-9")
@given(data=priors_and_deltas(), stds=STDS)
def test_weighted_decode_matches_loop_oracle(impl, device, make, data, stds):
    priors, deltas = data
    weights = tuple(1.0 / s for s in stds)
    out = make(impl, stds).decode(tensor(priors, device), tensor(deltas, device))
    expected = oracle.delta_decode(priors, deltas, weights=weights, clamp_below=False)
    close_rowwise(out, expected, impl)


@pytest.mark.flavour("torchvision")
@pytest.mark.spec("COD-4")
@given(pair=prior_target_pairs(), stds=STDS)
def test_torchvision_encode_single_agrees_with_live_torchvision(impl, device, pair, stds):
    from torchvision.models.detection._utils import BoxCoder as LiveBoxCoder

    priors, targets = pair
    weights = tuple(1.0 / s for s in stds)
    p, g = tensor(priors, device), tensor(targets, device)
    out = impl.get("BoxCoder")(weights).encode_single(g, p)
    live = LiveBoxCoder(weights).encode_single(g, p)
    assert_close(out, to_numpy(live), impl, what="deltas vs torchvision")


@pytest.mark.flavour("torchvision")
@pytest.mark.spec("COD-9")
@given(data=priors_and_deltas(), stds=STDS)
def test_torchvision_decode_single_agrees_with_live_torchvision(impl, device, data, stds):
    from torchvision.models.detection._utils import BoxCoder as LiveBoxCoder

    priors, deltas = data
    weights = tuple(1.0 / s for s in stds)
    p, d = tensor(priors, device), tensor(deltas, device)
    out = impl.get("BoxCoder")(weights).decode_single(d, p)
    live = LiveBoxCoder(weights).decode_single(d, p)
    close_rowwise(out, to_numpy(live), impl, what="boxes vs torchvision")


@pytest.mark.spec("COD-21")
@given(n=st.integers(0, 6), data=st.data(), max_dis=st.sampled_from([None, 4.0, 16.0]))
def test_bbox2distance_matches_loop_oracle(impl, device, n, data, max_dis):
    boxes = data.draw(box_arrays(n))
    points = data.draw(point_arrays(n))
    out = impl.get("bbox2distance")(tensor(points, device), tensor(boxes, device),
                                    max_dis=max_dis)
    assert_close(out, oracle.distance_encode(points, boxes, max_dis), impl, what="distances")


@pytest.mark.spec("COD-23")
@given(n=st.integers(0, 6), data=st.data(), max_shape=st.sampled_from([None, (40, 60)]))
def test_distance2bbox_matches_loop_oracle(impl, device, n, data, max_shape):
    points = data.draw(point_arrays(n))
    dist = data.draw(delta_arrays(n, 1, bound=1024))  # distances in [-64, 64]
    out = impl.get("distance2bbox")(tensor(points, device), tensor(dist, device),
                                    max_shape=max_shape)
    assert_close(out, oracle.distance_decode(points, dist, max_shape), impl, what="boxes")


@pytest.mark.spec("COD-24")
@given(n=st.integers(0, 6), data=st.data(), clip=st.booleans())
def test_distance_point_coder_matches_loop_oracle(impl, device, n, data, clip):
    boxes = data.draw(box_arrays(n))
    points = data.draw(point_arrays(n))
    coder = impl.get("DistancePointBBoxCoder")(clip_border=clip)
    p = tensor(points, device)
    codes = coder.encode(p, tensor(boxes, device), max_dis=32.0)
    assert_close(codes, oracle.distance_encode(points, boxes, 32.0), impl, what="distances")
    out = coder.decode(p, tensor(oracle.distance_encode(points, boxes), device),
                       max_shape=(30, 50))
    expected = oracle.distance_decode(points, oracle.distance_encode(points, boxes),
                                      (30, 50) if clip else None)
    assert_close(out, expected, impl, what="boxes")


# =========================================================================== 2. properties
@pytest.mark.parametrize("make", DELTA_CODERS)
@pytest.mark.spec("COD-5")
@given(pair=prior_target_pairs(max_ratio=50.0), stds=STDS)
def test_decode_inverts_encode_inside_the_clamp(impl, device, make, pair, stds):
    priors, targets = pair
    coder = make(impl, stds)
    p = tensor(priors, device)
    codes = coder.encode(p, tensor(targets, device))
    out = coder.decode(p, codes)
    close_rowwise(out, targets, impl, what="decode(encode(g))")


@pytest.mark.parametrize("make", DELTA_CODERS)
@pytest.mark.spec("COD-6")
@given(data=priors_and_deltas(max_k=1))
def test_zero_deltas_return_the_prior(impl, device, make, data):
    priors, _ = data
    coder = make(impl)
    out = coder.decode(tensor(priors, device), tensor(np.zeros_like(priors), device))
    close_rowwise(out, priors, impl)


@pytest.mark.parametrize("make", DELTA_CODERS)
@pytest.mark.spec("COD-1")
@given(pair=prior_target_pairs(), shift=st.tuples(COORD, COORD), scale=st.sampled_from([2, 4]))
def test_codes_are_invariant_to_shifting_and_scaling_both_boxes(
        impl, device, make, pair, shift, scale):
    priors, targets = pair
    coder = make(impl)
    moved = np.array([shift[0], shift[1], shift[0], shift[1]])
    base = coder.encode(tensor(priors, device), tensor(targets, device))
    shifted = coder.encode(tensor(priors + moved, device), tensor(targets + moved, device))
    scaled = coder.encode(tensor(priors * scale, device), tensor(targets * scale, device))
    assert_close(shifted, to_numpy(base), impl, what="codes after a shift")
    assert_close(scaled, to_numpy(base), impl, what="codes after scaling")


@pytest.mark.parametrize("make", DELTA_CODERS)
@pytest.mark.spec("COD-11")
@given(data=priors_and_deltas(max_k=4))
def test_class_specific_decode_equals_decoding_each_class_alone(impl, device, make, data):
    priors, deltas = data
    coder = make(impl)
    p = tensor(priors, device)
    full = to_numpy(coder.decode(p, tensor(deltas, device)))
    assert full.shape == deltas.shape
    for k in range(deltas.shape[1] // 4):
        alone = coder.decode(p, tensor(np.ascontiguousarray(deltas[:, 4 * k:4 * k + 4]), device))
        close_rowwise(alone, full[:, 4 * k:4 * k + 4], impl, what=f"class {k}")


@pytest.mark.parametrize("make", DELTA_CODERS)
@pytest.mark.spec("COD-6")
@given(data=priors_and_deltas())
def test_decoded_boxes_are_ordered_and_keep_the_decoded_size(impl, device, make, data):
    priors, deltas = data
    coder = make(impl)
    out = to_numpy(coder.decode(tensor(priors, device), tensor(deltas, device)))
    out = out.reshape(len(priors), deltas.shape[1] // 4, 4)
    assert (out[..., 2] >= out[..., 0]).all() and (out[..., 3] >= out[..., 1]).all()
    # Width never exceeds pw * exp(clamp), whatever the flavour.
    pw = (priors[:, 2] - priors[:, 0])[:, None]
    assert ((out[..., 2] - out[..., 0]) <= pw * math.exp(CLAMP) * (1 + 1e-5) + 1e-4).all()


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("COD-10")
@given(data=priors_and_deltas(), hw=st.tuples(st.integers(1, 100), st.integers(1, 100)))
def test_mmdet_clipped_boxes_lie_inside_the_image(impl, device, data, hw):
    priors, deltas = data
    coder = impl.get("DeltaXYWHBBoxCoder")()
    out = to_numpy(coder.decode(tensor(priors, device), tensor(deltas, device), max_shape=hw))
    h, w = hw
    assert (out[:, 0::2] >= 0).all() and (out[:, 0::2] <= w).all()
    assert (out[:, 1::2] >= 0).all() and (out[:, 1::2] <= h).all()


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("COD-12")
@given(b=st.integers(1, 3), data=st.data())
def test_mmdet_batched_encode_and_decode_equal_per_image_calls(impl, device, b, data):
    n, k = data.draw(st.integers(0, 4)), data.draw(st.integers(1, 2))
    priors = np.stack([data.draw(box_arrays(n)) for _ in range(b)])
    targets = np.stack([data.draw(box_arrays(n)) for _ in range(b)])
    deltas = np.stack([data.draw(delta_arrays(n, k)) for _ in range(b)])
    coder = impl.get("DeltaXYWHBBoxCoder")(target_stds=(0.1, 0.1, 0.2, 0.2))
    codes = coder.encode(tensor(priors, device), tensor(targets, device))
    boxes = coder.decode(tensor(priors, device), tensor(deltas, device), max_shape=(50, 70))
    assert tuple(codes.shape) == (b, n, 4) and tuple(boxes.shape) == (b, n, 4 * k)
    for i in range(b):
        one_codes = coder.encode(tensor(priors[i], device), tensor(targets[i], device))
        one_boxes = coder.decode(tensor(priors[i], device), tensor(deltas[i], device),
                                 max_shape=(50, 70))
        assert_close(codes[i], to_numpy(one_codes), impl, what=f"codes of image {i}")
        assert_close(boxes[i], to_numpy(one_boxes), impl, what=f"boxes of image {i}")


@pytest.mark.spec("COD-23")
@given(n=st.integers(0, 6), data=st.data())
def test_distance2bbox_inverts_bbox2distance(impl, device, n, data):
    boxes = data.draw(box_arrays(n))
    points = data.draw(point_arrays(n))
    p = tensor(points, device)
    dist = impl.get("bbox2distance")(p, tensor(boxes, device))
    assert_close(impl.get("distance2bbox")(p, dist), boxes, impl, what="round trip")


@pytest.mark.spec("COD-22")
@given(n=st.integers(0, 6), data=st.data(), max_dis=st.sampled_from([1.0, 8.0, 100.0]))
def test_bbox2distance_with_max_dis_stays_in_range(impl, device, n, data, max_dis):
    boxes = data.draw(box_arrays(n))
    points = data.draw(point_arrays(n))
    out = to_numpy(impl.get("bbox2distance")(tensor(points, device), tensor(boxes, device),
                                             max_dis=max_dis))
    assert (out >= 0).all() and (out <= max_dis - 0.1 + 1e-5).all()


# =========================================================================== 3. worked examples
# prior [0, 0, 10, 10]: centre (5, 5), size 10 x 10; target [5, 5, 25, 15]: centre
# (15, 10), size 20 x 10. Raw code (1, 0.5, log 2, 0); R-CNN stds (0.1, 0.1, 0.2, 0.2)
# or weights (10, 10, 5, 5) give (10, 5, 5 log 2 = 3.4657, 0).
PRIOR = [[0.0, 0.0, 10.0, 10.0]]
TARGET = [[5.0, 5.0, 25.0, 15.0]]
RCNN_CODE = [[10.0, 5.0, 5 * math.log(2), 0.0]]


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("COD-1")
def test_mmdet_worked_example_encodes_and_decodes(impl, device):
    coder = impl.get("DeltaXYWHBBoxCoder")(target_stds=(0.1, 0.1, 0.2, 0.2))
    code = coder.encode(tensor(PRIOR, device), tensor(TARGET, device))
    assert_close(code, RCNN_CODE, impl)
    assert_close(coder.decode(tensor(PRIOR, device), code), TARGET, impl)
    plain = impl.get("DeltaXYWHBBoxCoder")()
    assert_close(plain.encode(tensor(PRIOR, device), tensor(TARGET, device)),
                 [[1.0, 0.5, math.log(2), 0.0]], impl)


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("COD-2")
def test_mmdet_means_are_subtracted_before_dividing_by_stds(impl, device):
    coder = impl.get("DeltaXYWHBBoxCoder")(target_means=(1.0, 0.5, 0.0, 1.0),
                                           target_stds=(0.5, 0.5, 1.0, 2.0))
    code = coder.encode(tensor(PRIOR, device), tensor(TARGET, device))
    assert_close(code, [[0.0, 0.0, math.log(2), -0.5]], impl)
    assert_close(coder.decode(tensor(PRIOR, device), code), TARGET, impl)


@pytest.mark.flavour("detectron2")
@pytest.mark.spec("COD-3")
def test_detectron2_worked_example_multiplies_by_weights(impl, device):
    t = impl.get("Box2BoxTransform")((10.0, 10.0, 5.0, 5.0))
    code = t.get_deltas(tensor(PRIOR, device), tensor(TARGET, device))
    assert_close(code, RCNN_CODE, impl)
    assert_close(t.apply_deltas(code, tensor(PRIOR, device)), TARGET, impl)


@pytest.mark.flavour("torchvision")
@pytest.mark.spec("COD-4")
def test_torchvision_worked_example_takes_gt_first(impl, device):
    c = impl.get("BoxCoder")((10.0, 10.0, 5.0, 5.0))
    code = c.encode_single(tensor(TARGET, device), tensor(PRIOR, device))
    assert_close(code, RCNN_CODE, impl)
    assert_close(c.decode_single(code, tensor(PRIOR, device)), TARGET, impl)


@pytest.mark.flavour("mmdet")
@pytest.mark.flavour("detectron2")
@pytest.mark.spec("COD-3")
@given(pair=prior_target_pairs(max_ratio=50.0), data=priors_and_deltas(max_k=1))
def test_mmdet_stds_and_detectron2_weights_agree_on_encode_and_decode(impl, device, pair, data):
    priors, targets = pair
    mm = impl.get("DeltaXYWHBBoxCoder")(target_stds=(0.1, 0.1, 0.2, 0.2))
    d2 = impl.get("Box2BoxTransform")((10.0, 10.0, 5.0, 5.0))
    p, g = tensor(priors, device), tensor(targets, device)
    assert_close(mm.encode(p, g), to_numpy(d2.get_deltas(p, g)), impl, what="codes")
    # Decode agrees wherever no clamp applies (mmdet also clamps from below).
    dprior, deltas = data
    deltas = np.clip(deltas, -0.8, 0.8)  # |dw| * 5 <= 4 < 4.1352 after the weights
    dp, dd = tensor(dprior, device), tensor(deltas, device)
    close_rowwise(mm.decode(dp, dd), to_numpy(d2.apply_deltas(dd, dp)), impl)


def _decode_one(make, impl, device, delta):
    """Decode one delta row against the prior [0, 0, 10, 10] (centre 5, 5)."""
    return to_numpy(make(impl).decode(tensor(PRIOR, device), tensor([delta], device)))[0]


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("COD-7")
def test_mmdet_clamps_dw_and_dh_on_both_sides_at_log_62_5(impl, device):
    # dw = +10 -> width 10 * 62.5 = 625; dh = -10 -> height 10 / 62.5 = 0.16.
    box = _decode_one(make_mmdet, impl, device, [0.0, 0.0, 10.0, -10.0])
    np.testing.assert_allclose(box, [5 - 312.5, 5 - 0.08, 5 + 312.5, 5 + 0.08], rtol=1e-5)
    # Just inside the bound nothing is clamped.
    box = _decode_one(make_mmdet, impl, device, [0.0, 0.0, -4.0, 4.0])
    np.testing.assert_allclose(box[2] - box[0], 10 * math.exp(-4.0), rtol=1e-5)
    np.testing.assert_allclose(box[3] - box[1], 10 * math.exp(4.0), rtol=1e-5)


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("COD-7")
def test_mmdet_wh_ratio_clip_sets_the_bound(impl, device):
    coder = impl.get("DeltaXYWHBBoxCoder")()
    box = to_numpy(coder.decode(tensor(PRIOR, device), tensor([[0.0, 0.0, 5.0, -5.0]], device),
                                wh_ratio_clip=0.1))[0]
    np.testing.assert_allclose([box[2] - box[0], box[3] - box[1]], [100.0, 1.0], rtol=1e-5)


@pytest.mark.parametrize("make", DELTA_CODERS[1:])
@pytest.mark.spec("COD-9")
def test_detectron2_and_torchvision_clamp_dw_and_dh_from_above_only(impl, device, make):
    # dh = -6 gives 10 * exp(-6) = 0.0248, not mmdet's 10 / 62.5 = 0.16.
    box = _decode_one(make, impl, device, [0.0, 0.0, 10.0, -6.0])
    np.testing.assert_allclose(box[2] - box[0], 625.0, rtol=1e-5)
    np.testing.assert_allclose(box[3] - box[1], 10 * math.exp(-6.0), rtol=1e-3)
    assert box[3] > box[1]


@pytest.mark.flavour("detectron2")
@pytest.mark.spec("COD-9")
def test_detectron2_scale_clamp_is_configurable(impl, device):
    t = impl.get("Box2BoxTransform")((1.0, 1.0, 1.0, 1.0), scale_clamp=math.log(4.0))
    box = to_numpy(t.apply_deltas(tensor([[0.0, 0.0, 3.0, 1.0]], device), tensor(PRIOR, device)))
    np.testing.assert_allclose([box[0, 2] - box[0, 0], box[0, 3] - box[0, 1]],
                               [40.0, 10 * math.e], rtol=1e-5)


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("COD-8")
def test_mmdet_centre_clamp_limits_the_shift_and_lifts_the_lower_scale_clamp(impl, device):
    coder = impl.get("DeltaXYWHBBoxCoder")(add_ctr_clamp=True)  # ctr_clamp = 32
    prior = tensor([[0.0, 0.0, 100.0, 100.0]], device)  # centre (50, 50), size 100
    # dx = 1 would move 100 px: clamped to +32. dy = -0.25 moves -25 px: kept.
    # dw = -6: no lower clamp -> 100 * exp(-6) (not 100 / 62.5). dh = +10: upper clamp -> 6250.
    box = to_numpy(coder.decode(prior, tensor([[1.0, -0.25, -6.0, 10.0]], device)))[0]
    np.testing.assert_allclose((box[0] + box[2]) / 2, 82.0, rtol=1e-5)
    np.testing.assert_allclose((box[1] + box[3]) / 2, 25.0, rtol=1e-4)
    np.testing.assert_allclose(box[2] - box[0], 100 * math.exp(-6.0), rtol=1e-3)
    np.testing.assert_allclose(box[3] - box[1], 6250.0, rtol=1e-5)


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("COD-10")
def test_mmdet_max_shape_clips_only_with_clip_border(impl, device):
    prior = tensor([[-5.0, -5.0, 1300.0, 900.0]], device)
    zero = tensor([[0.0, 0.0, 0.0, 0.0]], device)
    clipping = impl.get("DeltaXYWHBBoxCoder")()
    assert_close(clipping.decode(prior, zero, max_shape=(800, 1216)), [[0, 0, 1216, 800]], impl)
    # An mmdet img_shape carries channels: (H, W, 3); only H and W are read.
    assert_close(clipping.decode(prior, zero, max_shape=(800, 1216, 3)), [[0, 0, 1216, 800]],
                 impl)
    assert_close(clipping.decode(prior, zero), [[-5, -5, 1300, 900]], impl)
    free = impl.get("DeltaXYWHBBoxCoder")(clip_border=False)
    assert_close(free.decode(prior, zero, max_shape=(800, 1216)), [[-5, -5, 1300, 900]], impl)


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("COD-10")
def test_mmdet_batched_decode_clips_each_image_to_its_own_shape(impl, device):
    prior = tensor([[[0.0, 0.0, 100.0, 100.0]], [[0.0, 0.0, 100.0, 100.0]]], device)
    zero = tensor(np.zeros((2, 1, 4)), device)
    out = impl.get("DeltaXYWHBBoxCoder")().decode(prior, zero, max_shape=[[50, 60], [80, 30]])
    assert_close(out, [[[0, 0, 60, 50]], [[0, 0, 30, 80]]], impl)


@pytest.mark.spec("COD-21")
def test_bbox2distance_order_is_left_top_right_bottom(impl, device):
    # Point (10, 10) in box [4, 6, 20, 30]: left 6, top 4, right 10, bottom 20.
    out = impl.get("bbox2distance")(tensor([[10.0, 10.0]], device),
                                    tensor([[4.0, 6.0, 20.0, 30.0]], device))
    assert_close(out, [[6.0, 4.0, 10.0, 20.0]], impl)


@pytest.mark.spec("COD-22")
def test_bbox2distance_max_dis_clamps_to_max_dis_minus_eps(impl, device):
    f = impl.get("bbox2distance")
    p, b = tensor([[10.0, 10.0]], device), tensor([[4.0, 6.0, 20.0, 30.0]], device)
    assert_close(f(p, b, max_dis=8.0), [[6.0, 4.0, 7.9, 7.9]], impl)
    assert_close(f(p, b, max_dis=8.0, eps=0.5), [[6.0, 4.0, 7.5, 7.5]], impl)
    # A point left of its box: negative left distance, kept without max_dis, 0 with it.
    outside = tensor([[2.0, 10.0]], device)
    assert_close(f(outside, b), [[-2.0, 4.0, 18.0, 20.0]], impl)
    assert_close(f(outside, b, max_dis=100.0), [[0.0, 4.0, 18.0, 20.0]], impl)


@pytest.mark.spec("COD-24")
def test_distance2bbox_clips_only_with_max_shape(impl, device):
    f = impl.get("distance2bbox")
    p, d = tensor([[10.0, 10.0]], device), tensor([[12.0, 4.0, 10.0, 20.0]], device)
    assert_close(f(p, d), [[-2.0, 6.0, 20.0, 30.0]], impl)
    assert_close(f(p, d, max_shape=(25, 18)), [[0.0, 6.0, 18.0, 25.0]], impl)
    coder = impl.get("DistancePointBBoxCoder")(clip_border=False)
    assert_close(coder.decode(p, d, max_shape=(25, 18)), [[-2.0, 6.0, 20.0, 30.0]], impl)
    assert_close(impl.get("DistancePointBBoxCoder")().decode(p, d, max_shape=(25, 18)),
                 [[0.0, 6.0, 18.0, 25.0]], impl)


@pytest.mark.spec("COD-25")
def test_distance2bbox_broadcasts_points_and_ignores_stride_columns(impl, device):
    f = impl.get("distance2bbox")
    points = tensor([[10.0, 10.0, 8.0, 8.0], [20.0, 4.0, 8.0, 8.0]], device)  # x, y, sw, sh
    dist = tensor([[[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]],
                   [[2.0, 2.0, 2.0, 2.0], [4.0, 4.0, 1.0, 1.0]]], device)  # (B=2, N=2, 4)
    expected = [[[9, 8, 13, 14], [20, 4, 20, 4]], [[8, 8, 12, 12], [16, 0, 21, 5]]]
    assert_close(f(points, dist), expected, impl)
    assert_close(f(points[:, :2], dist), expected, impl)
    back = impl.get("bbox2distance")(points, tensor(expected, device))
    assert_close(back, to_numpy(dist), impl)


# =========================================================================== dtypes
@pytest.mark.flavour("mmdet")
@pytest.mark.spec("COD-13")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_mmdet_encode_returns_float32_and_decode_keeps_the_dtype(impl, device, dtype):
    coder = impl.get("DeltaXYWHBBoxCoder")()
    p, g = tensor(PRIOR, device, dtype), tensor(TARGET, device, dtype)
    code = coder.encode(p, g)
    assert code.dtype == torch.float32
    assert_close(code, [[1.0, 0.5, math.log(2), 0.0]], impl)
    box = coder.decode(p, tensor([[1.0, 0.5, math.log(2), 0.0]], device, dtype))
    assert box.dtype == dtype
    assert_close(box, TARGET, impl)


@pytest.mark.flavour("detectron2")
@pytest.mark.spec("COD-13")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_detectron2_decodes_in_float32_and_encodes_in_the_input_dtype(impl, device, dtype):
    t = impl.get("Box2BoxTransform")((10.0, 10.0, 5.0, 5.0))
    p, g = tensor(PRIOR, device, dtype), tensor(TARGET, device, dtype)
    code = t.get_deltas(p, g)
    assert code.dtype == dtype
    box = t.apply_deltas(code, p)
    assert box.dtype == torch.float32
    assert_close(box, TARGET, impl, rtol=2e-3, atol=2e-3)


@pytest.mark.flavour("torchvision")
@pytest.mark.spec("COD-13")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_torchvision_keeps_the_input_dtype(impl, device, dtype):
    c = impl.get("BoxCoder")((10.0, 10.0, 5.0, 5.0))
    p, g = tensor(PRIOR, device, dtype), tensor(TARGET, device, dtype)
    code = c.encode_single(g, p)
    assert code.dtype == dtype
    assert_close(code, RCNN_CODE, impl)
    box = c.decode_single(code, p.float())
    assert box.dtype == dtype  # the dtype of rel_codes, whatever the boxes'
    assert_close(box, TARGET, impl)


@pytest.mark.spec("COD-26")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_distance_functions_keep_the_input_dtype(impl, device, dtype):
    p, b = tensor([[10.0, 10.0]], device, dtype), tensor([[4.0, 6.0, 20.0, 30.0]], device, dtype)
    dist = impl.get("bbox2distance")(p, b)
    assert dist.dtype == dtype
    assert impl.get("distance2bbox")(p, dist).dtype == dtype


# =========================================================================== empty and degenerate
@pytest.mark.parametrize("make", DELTA_CODERS)
@pytest.mark.spec("COD-14")
def test_empty_inputs_give_empty_outputs(impl, device, make):
    coder = make(impl)
    empty = tensor(np.zeros((0, 4)), device)
    assert tuple(coder.encode(empty, empty).shape) == (0, 4)
    assert tuple(coder.decode(empty, tensor(np.zeros((0, 12)), device)).shape) == (0, 12)


@pytest.mark.spec("COD-14")
def test_distance_functions_accept_empty_inputs(impl, device):
    points, boxes = tensor(np.zeros((0, 2)), device), tensor(np.zeros((0, 4)), device)
    assert tuple(impl.get("bbox2distance")(points, boxes, max_dis=8.0).shape) == (0, 4)
    assert tuple(impl.get("distance2bbox")(points, boxes, max_shape=(5, 5)).shape) == (0, 4)


@pytest.mark.parametrize("make", DELTA_CODERS)
@pytest.mark.spec("COD-15")
def test_decoding_against_a_zero_width_prior_gives_a_finite_zero_width_box(impl, device, make):
    coder = make(impl)
    prior = tensor([[4.0, 0.0, 4.0, 10.0]], device)  # zero width, centre (4, 5)
    box = to_numpy(coder.decode(prior, tensor([[3.0, 0.0, 2.0, 0.0]], device)))[0]
    assert np.isfinite(box).all()
    np.testing.assert_allclose(box, [4.0, 0.0, 4.0, 10.0], atol=1e-5)


@pytest.mark.parametrize("make", [DELTA_CODERS[0], DELTA_CODERS[2]])
@pytest.mark.spec("COD-16")
def test_encoding_against_a_zero_width_prior_gives_a_non_finite_row(impl, device, make):
    coder = make(impl)
    priors = tensor([[0.0, 0.0, 10.0, 10.0], [4.0, 0.0, 4.0, 10.0], [0.0, 3.0, 8.0, 3.0]], device)
    targets = tensor([TARGET[0], TARGET[0], TARGET[0]], device)
    out = to_numpy(coder.encode(priors, targets))
    assert not np.isfinite(out[1]).all() and not np.isfinite(out[2]).all()
    np.testing.assert_allclose(out[0], [1.0, 0.5, math.log(2), 0.0], rtol=1e-5, atol=1e-6)


@pytest.mark.flavour("detectron2")
@pytest.mark.spec("COD-17")
def test_detectron2_get_deltas_rejects_a_zero_width_source(impl, device):
    t = impl.get("Box2BoxTransform")((1.0, 1.0, 1.0, 1.0))
    src = tensor([[0.0, 0.0, 10.0, 10.0], [4.0, 0.0, 4.0, 10.0]], device)
    raises_value_error(t.get_deltas, src, tensor([TARGET[0], TARGET[0]], device))
    raises_value_error(t.get_deltas, tensor([[5.0, 0.0, 4.0, 10.0]], device),
                       tensor(TARGET, device))


@pytest.mark.flavour("detectron2")
@pytest.mark.strict_tier
@pytest.mark.spec("COD-S1")
def test_reference_get_deltas_also_rejects_a_zero_height_source(impl, device):
    t = impl.get("Box2BoxTransform")((1.0, 1.0, 1.0, 1.0))
    raises_value_error(t.get_deltas, tensor([[0.0, 3.0, 8.0, 3.0]], device),
                       tensor(TARGET, device), match="src_boxes")


@pytest.mark.parametrize("make", DELTA_CODERS)
@pytest.mark.spec("COD-18")
def test_a_nan_stays_in_its_own_row(impl, device, make):
    coder = make(impl)
    priors = tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]], device)
    deltas = tensor([[float("nan"), 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]], device)
    out = to_numpy(coder.decode(priors, deltas))
    assert np.isnan(out[0]).any()
    np.testing.assert_allclose(out[1], PRIOR[0], atol=1e-5)
    targets = tensor([[float("nan"), 5.0, 25.0, 15.0], TARGET[0]], device)
    codes = to_numpy(coder.encode(priors, targets))
    assert np.isnan(codes[0]).any()
    np.testing.assert_allclose(codes[1], oracle.delta_encode(PRIOR, TARGET,
                                                             weights=(1, 1, 1, 1))[0],
                               rtol=1e-5, atol=1e-6)


# =========================================================================== bad inputs
def _other_device(device):
    return torch.device("meta") if device.type == "cpu" else torch.device("cpu")


@pytest.mark.parametrize("make", DELTA_CODERS)
@pytest.mark.spec("COD-19")
def test_boxes_whose_last_dim_is_not_4_are_rejected(impl, device, make):
    coder = make(impl)
    good = tensor(PRIOR, device)
    bad = tensor([[0.0, 0.0, 10.0]], device)
    raises_value_error(coder.encode, bad, good)
    raises_value_error(coder.encode, good, bad)
    raises_value_error(coder.decode, bad, tensor([[0.0] * 4], device))


@pytest.mark.parametrize("make", DELTA_CODERS)
@pytest.mark.spec("COD-19")
def test_deltas_whose_last_dim_is_not_a_multiple_of_4_are_rejected(impl, device, make):
    coder = make(impl)
    raises_value_error(coder.decode, tensor(PRIOR, device), tensor([[0.0] * 6], device))


@pytest.mark.parametrize("make", DELTA_CODERS)
@pytest.mark.spec("COD-19")
def test_mismatched_numbers_of_boxes_are_rejected(impl, device, make):
    coder = make(impl)
    two = tensor(PRIOR * 2, device)
    raises_value_error(coder.encode, two, tensor(TARGET, device))
    raises_value_error(coder.decode, two, tensor([[0.0] * 4] * 3, device))


@pytest.mark.parametrize("make", DELTA_CODERS)
@pytest.mark.spec("COD-19")
def test_integer_boxes_are_rejected(impl, device, make):
    coder = make(impl)
    raises_value_error(coder.encode, tensor(PRIOR, device, torch.int64), tensor(TARGET, device))
    raises_value_error(coder.decode, tensor(PRIOR, device),
                       tensor([[0, 0, 0, 0]], device, torch.int32))


@pytest.mark.parametrize("make", DELTA_CODERS)
@pytest.mark.spec("COD-19")
def test_inputs_on_different_devices_are_rejected(impl, device, make):
    coder = make(impl)
    other = _other_device(device)
    raises_value_error(coder.encode, tensor(PRIOR, device), tensor(TARGET, other))
    raises_value_error(coder.decode, tensor(PRIOR, device), tensor([[0.0] * 4], other))


@pytest.mark.parametrize("make", DELTA_CODERS)
@pytest.mark.spec("COD-19")
def test_non_tensor_boxes_are_rejected(impl, device, make):
    coder = make(impl)
    raises_value_error(coder.encode, PRIOR, tensor(TARGET, device))


@pytest.mark.spec("COD-19")
@pytest.mark.flavour("mmdet")
def test_mmdet_rejects_zero_stds_and_bad_clamps(impl, device):
    cls = impl.get("DeltaXYWHBBoxCoder")
    raises_value_error(cls, target_stds=(0.1, 0.0, 0.2, 0.2), match="target_stds")
    raises_value_error(cls, target_stds=(0.1, 0.1, 0.2), match="target_stds")
    raises_value_error(cls, target_means=(0.0, float("nan"), 0.0, 0.0), match="target_means")
    coder = cls()
    p, d = tensor(PRIOR, device), tensor([[0.0] * 4], device)
    raises_value_error(coder.decode, p, d, wh_ratio_clip=0.0, match="wh_ratio_clip")
    raises_value_error(coder.decode, p, d, max_shape=(800,), match="max_shape")
    raises_value_error(coder.decode, p, d, max_shape=(800, float("nan")), match="max_shape")


@pytest.mark.spec("COD-19")
@pytest.mark.parametrize("name", [
    pytest.param("Box2BoxTransform", marks=pytest.mark.flavour("detectron2")),
    pytest.param("BoxCoder", marks=pytest.mark.flavour("torchvision")),
])
def test_weights_must_be_four_positive_numbers(impl, name):
    cls = impl.get(name)
    raises_value_error(cls, (10.0, 10.0, 0.0, 5.0), match="weights")
    raises_value_error(cls, (10.0, -10.0, 5.0, 5.0), match="weights")
    raises_value_error(cls, (10.0, 10.0, 5.0), match="weights")


@pytest.mark.parametrize("make", DELTA_CODERS[1:])
@pytest.mark.spec("COD-20")
def test_detectron2_and_torchvision_reject_batched_input(impl, device, make):
    coder = make(impl)
    batched = tensor([PRIOR, PRIOR], device)  # (2, 1, 4)
    raises_value_error(coder.encode, batched, batched)
    raises_value_error(coder.decode, batched, batched)


@pytest.mark.spec("COD-26")
def test_distance_functions_reject_bad_shapes_dtypes_and_devices(impl, device):
    enc, dec = impl.get("bbox2distance"), impl.get("distance2bbox")
    p, b = tensor([[10.0, 10.0]], device), tensor([[4.0, 6.0, 20.0, 30.0]], device)
    raises_value_error(enc, tensor([[10.0, 10.0, 1.0]], device), b, match="points")
    raises_value_error(enc, p, tensor([[4.0, 6.0, 20.0]], device), match="bbox")
    raises_value_error(dec, p, tensor([[4.0, 6.0, 20.0]], device), match="distance")
    raises_value_error(enc, tensor([[1.0, 1.0], [2.0, 2.0]], device), b)
    raises_value_error(enc, tensor([[10, 10]], device, torch.int64), b)
    raises_value_error(dec, p, tensor([[4.0, 6.0, 20.0, 30.0]], _other_device(device)))
    raises_value_error(enc, [[10.0, 10.0]], b)


@pytest.mark.strict_tier
@pytest.mark.spec("COD-S2")
def test_reference_bbox2distance_rejects_max_dis_not_above_eps(impl, device):
    p, b = tensor([[10.0, 10.0]], device), tensor([[4.0, 6.0, 20.0, 30.0]], device)
    raises_value_error(impl.get("bbox2distance"), p, b, max_dis=0.1, match="max_dis")
    raises_value_error(impl.get("bbox2distance"), p, b, max_dis=0.05, eps=0.1, match="max_dis")


@pytest.mark.parametrize("make", [DELTA_CODERS[0], DELTA_CODERS[2]])
@pytest.mark.spec("COD-27")
def test_encoding_an_inverted_box_gives_nan_in_its_row_only(impl, device, make):
    # The log of a negative width is NaN: propagated in that row, nothing raised,
    # whether the prior or the gt is the inverted one.
    coder = make(impl)
    priors = tensor([[0.0, 0.0, 10.0, 10.0], [10.0, 0.0, 0.0, 10.0], [0.0, 0.0, 10.0, 10.0]], device)
    targets = tensor([TARGET[0], TARGET[0], [8.0, 0.0, 2.0, 10.0]], device)
    out = to_numpy(coder.encode(priors, targets))
    assert np.isnan(out[1]).any() and np.isnan(out[2]).any()
    np.testing.assert_allclose(out[0], [1.0, 0.5, math.log(2), 0.0], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- upstream float32 order
@pytest.mark.spec("COD-28")
def test_weighted_coders_multiply_the_weight_first_as_upstream_does(impl, device):
    # detectron2 get_deltas and torchvision encode_single compute wx * (gx - px) / pw:
    # 10 * 2 / 3 = 6.6666665 in float32, where (2 / 3) / 0.1 would give 6.666667.
    src = tensor([[0, 0, 3, 10]], device)
    tgt = tensor([[0.5, 0, 6.5, 10]], device)
    f32 = np.float32
    expected_dx = f32(10) * (f32(3.5) - f32(1.5)) / f32(3)
    expected_dw = f32(5) * np.log(f32(6) / f32(3))
    checked = 0
    if impl.has("Box2BoxTransform") and impl.claims("detectron2"):
        d = to_numpy(impl.get("Box2BoxTransform")((10.0, 10.0, 5.0, 5.0)).get_deltas(src, tgt))
        assert d[0, 0] == expected_dx == f32(6.6666665) and d[0, 2] == expected_dw
        checked += 1
    if impl.has("BoxCoder") and impl.claims("torchvision"):
        d = to_numpy(impl.get("BoxCoder")((10.0, 10.0, 5.0, 5.0)).encode_single(tgt, src))
        assert d[0, 0] == expected_dx and d[0, 2] == expected_dw
        checked += 1
    if not checked:
        pytest.skip("no weighted (detectron2 or torchvision) coder implemented and claimed")


# --------------------------------------------------------------------------- DeltaCodec
CODEC_CODERS = {
    # flavour: (class name, constructor kwargs, oracle encode kwargs)
    "mmdet": ("DeltaXYWHBBoxCoder", dict(target_stds=(0.1, 0.1, 0.2, 0.2)),
              dict(stds=(0.1, 0.1, 0.2, 0.2))),
    "detectron2": ("Box2BoxTransform", dict(weights=(10.0, 10.0, 5.0, 5.0)),
                   dict(weights=(10.0, 10.0, 5.0, 5.0))),
    "torchvision": ("BoxCoder", dict(weights=(10.0, 10.0, 5.0, 5.0)),
                    dict(weights=(10.0, 10.0, 5.0, 5.0))),
}


def _wrapped_decode(coder, flavour, priors, deltas):
    if flavour == "mmdet":
        return coder.decode(priors, deltas)
    if flavour == "detectron2":
        return coder.apply_deltas(deltas, priors)
    return coder.decode_single(deltas, priors)


@pytest.mark.spec("COD-29")
@pytest.mark.parametrize("flavour", [pytest.param(f, marks=pytest.mark.flavour(f)) for f in CODEC_CODERS])
@given(pair=prior_target_pairs(max_n=6, max_ratio=8.0), data=st.data())
def test_delta_codec_puts_the_prior_first_for_every_coder(impl, device, flavour, pair, data):
    name, kwargs, oracle_kwargs = CODEC_CODERS[flavour]
    priors, gts = pair
    coder = impl.get(name)(**kwargs)
    codec = impl.get("DeltaCodec")(coder)
    p, g = tensor(priors, device), tensor(gts, device)
    codes = codec.encode(p, g)
    assert_close(to_numpy(codes), oracle.delta_encode(priors, gts, **oracle_kwargs),
                 rtol=1e-5, atol=1e-5)
    deltas = data.draw(delta_arrays(len(priors), 2, bound=32))
    d = tensor(deltas, device)
    assert_close(to_numpy(codec.decode(p, d)), to_numpy(_wrapped_decode(coder, flavour, p, d)),
                 rtol=0, atol=0)
