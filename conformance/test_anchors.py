"""Conformance: anchor generators and anchor flags (SPEC.md, Anchors; clauses ANC-*).

Differential tests compare with the loop oracles of ``oracles/anchors.py``;
property tests check what the clauses say of any input; worked examples pin the
numbers quoted by upstream docs and the seeds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from conformance.checks import assert_close, raises_value_error, tensor, to_numpy, tolerance_for
from oracles import anchors as oracle

pytestmark = pytest.mark.component("anchors")

RETINANET_FEATMAPS_800x1216 = [(100, 152), (50, 76), (25, 38), (13, 19), (7, 10)]
RETINANET_SHAPES_800x1216 = [136800, 34200, 8550, 2223, 630]


# --------------------------------------------------------------------------- strategies
EXACT_RATIOS = [0.25, 1.0, 4.0]  # sqrt is exact: no rounding near-ties
RATIOS = EXACT_RATIOS + [0.5, 2.0, 1 / 3, 3.0, 0.75]
quarter = st.integers(1, 32).map(lambda n: n / 4)  # 0.25 .. 8 in steps of 1/4
ratio_lists = st.lists(st.sampled_from(RATIOS), min_size=1, max_size=3)
exact_ratio_lists = st.lists(st.sampled_from(EXACT_RATIOS), min_size=1, max_size=3)
scale_lists = st.lists(quarter, min_size=1, max_size=3)
offsets = st.sampled_from([0.0, 0.25, 0.5, 1.0])
stride_values = st.integers(1, 64)
stride_specs = st.one_of(stride_values, st.tuples(stride_values, stride_values))
featmap_size = st.tuples(st.integers(1, 6), st.integers(1, 6))


@st.composite
def levels(draw, min_levels=1, max_levels=3):
    n = draw(st.integers(min_levels, max_levels))
    strides = draw(st.lists(stride_specs, min_size=n, max_size=n))
    sizes = draw(st.lists(featmap_size, min_size=n, max_size=n))
    return strides, sizes


def stride_pair(s):
    return (s, s) if isinstance(s, int) else tuple(s)


def assert_boxes_close(actual, expected, impl, what="anchors"):
    """float32 anchors against a float64 oracle: tolerance relative to the largest coordinate."""
    expected = np.asarray(expected, dtype=np.float64)
    rtol, atol = tolerance_for(impl, actual.dtype)
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    assert_close(actual, expected, impl, rtol=rtol, atol=atol * scale, what=what)


def torch_sqrt32(ratios):
    """float32 sqrt(r) as mmdet gets it: torch's CPU sqrt (an ulp off NumPy's at times)."""
    return torch.sqrt(torch.tensor(ratios, dtype=torch.float32)).numpy()


def not_near_half(values, margin=1e-3):
    """True unless a value sits a hair (not exactly) from k + 0.5: rounding there depends on
    the precision it was computed in, so random draws avoid it (exact ties stay in)."""
    for v in values:
        d = abs(v - math.floor(v) - 0.5)
        if 0 < d < margin:
            return False
    return True


# =========================================================================== mmdet AnchorGenerator
@pytest.mark.flavour("mmdet")
@pytest.mark.spec("ANC-2")
@given(lv=levels(), ratios=ratio_lists, scales=scale_lists, scale_major=st.booleans(),
       center_offset=offsets, data=st.data())
def test_mmdet_grid_anchors_match_loop_oracle(impl, device, lv, ratios, scales, scale_major,
                                               center_offset, data):
    strides, sizes = lv
    base_sizes = data.draw(st.one_of(st.none(), st.lists(st.integers(1, 64), min_size=len(strides),
                                                         max_size=len(strides))))
    gen = impl.get("AnchorGenerator")(strides=strides, ratios=ratios, scales=scales, base_sizes=base_sizes,
                                      scale_major=scale_major, center_offset=center_offset)
    out = gen.grid_anchors(sizes, device=device)
    assert len(out) == len(sizes)
    for i, (s, size) in enumerate(zip(strides, sizes)):
        pair = stride_pair(s)
        base = base_sizes[i] if base_sizes is not None else min(pair)
        base_anchors = oracle.mmdet_base_anchors(base, scales, ratios, scale_major, None, center_offset)
        assert_boxes_close(out[i], oracle.grid_anchors(base_anchors, size, pair), impl, f"level {i}")


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("ANC-3")
@given(base=st.integers(1, 64), ratios=ratio_lists, scales=scale_lists, scale_major=st.booleans(),
       center=st.tuples(st.integers(0, 32), st.integers(0, 32)).map(lambda c: (c[0] / 2, c[1] / 2)))
def test_mmdet_explicit_centers_place_the_base_anchors(impl, base, ratios, scales, scale_major, center):
    gen = impl.get("AnchorGenerator")(strides=[base], ratios=ratios, scales=scales,
                                      scale_major=scale_major, centers=[center])
    expected = oracle.mmdet_base_anchors(base, scales, ratios, scale_major, center=center)
    assert_boxes_close(gen.base_anchors[0], expected, impl)


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("ANC-5")
@given(octave_base_scale=st.integers(1, 8), scales_per_octave=st.integers(1, 4),
       ratios=ratio_lists, stride=stride_values)
def test_mmdet_octave_scales_are_geometric_within_one_octave(impl, octave_base_scale, scales_per_octave,
                                                              ratios, stride):
    gen = impl.get("AnchorGenerator")(strides=[stride], ratios=ratios, octave_base_scale=octave_base_scale,
                                      scales_per_octave=scales_per_octave)
    scales = oracle.octave_scales(octave_base_scale, scales_per_octave)
    assert gen.num_base_anchors == [len(ratios) * scales_per_octave]
    assert_boxes_close(gen.base_anchors[0], oracle.mmdet_base_anchors(stride, scales, ratios), impl)


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("ANC-1")
@given(lv=levels(), ratios=ratio_lists, scales=scale_lists)
def test_mmdet_grid_anchors_are_float32_with_hwa_rows_per_level(impl, device, lv, ratios, scales):
    strides, sizes = lv
    gen = impl.get("AnchorGenerator")(strides=strides, ratios=ratios, scales=scales)
    assert gen.num_levels == len(strides)
    assert list(gen.num_base_anchors) == [len(ratios) * len(scales)] * len(strides)
    out = gen.grid_anchors(sizes, device=device)
    for level, (h, w) in zip(out, sizes):
        assert level.dtype == torch.float32
        assert level.device.type == device.type
        assert tuple(level.shape) == (h * w * len(ratios) * len(scales), 4)
    for base in gen.base_anchors:
        assert base.dtype == torch.float32 and tuple(base.shape) == (len(ratios) * len(scales), 4)


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("ANC-2")
@given(lv=levels(max_levels=1), ratios=ratio_lists, scales=scale_lists, data=st.data())
def test_mmdet_row_is_base_anchor_shifted_by_its_location(impl, device, lv, ratios, scales, data):
    (stride,), (size,) = lv
    sw, sh = stride_pair(stride)
    gen = impl.get("AnchorGenerator")(strides=[stride], ratios=ratios, scales=scales)
    anchors = to_numpy(gen.grid_anchors([size], device=device)[0])
    base = to_numpy(gen.base_anchors[0])
    num_base = len(base)
    h, w = size
    y, x, k = data.draw(st.integers(0, h - 1)), data.draw(st.integers(0, w - 1)), data.draw(
        st.integers(0, num_base - 1))
    row = anchors[(y * w + x) * num_base + k]
    expected = base[k] + np.array([x * sw, y * sh, x * sw, y * sh])
    np.testing.assert_allclose(row, expected, rtol=1e-5, atol=1e-4 * max(1, np.abs(expected).max()))


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("ANC-3")
@given(base=st.integers(1, 64), ratios=ratio_lists, scales=scale_lists, center_offset=offsets)
def test_mmdet_base_anchor_ratio_is_height_over_width(impl, base, ratios, scales, center_offset):
    gen = impl.get("AnchorGenerator")(strides=[base], ratios=ratios, scales=scales,
                                      center_offset=center_offset)
    b = to_numpy(gen.base_anchors[0])
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    expected_ratio = np.repeat(ratios, len(scales))  # scale_major: ratio outer
    expected_side = np.tile(np.asarray(scales, dtype=np.float64) * base, len(ratios))
    np.testing.assert_allclose(h / w, expected_ratio, rtol=1e-4)
    np.testing.assert_allclose(np.sqrt(w * h), expected_side, rtol=1e-5)
    np.testing.assert_allclose(cx, center_offset * base, atol=1e-4 * base)
    np.testing.assert_allclose(cy, center_offset * base, atol=1e-4 * base)


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("ANC-4")
def test_mmdet_scale_major_true_puts_ratio_outer_scale_inner(impl):
    gen = impl.get("AnchorGenerator")(strides=[10], ratios=[0.25, 4.0], scales=[1.0, 2.0], scale_major=True)
    # (ratio, scale) = (0.25, 1), (0.25, 2), (4, 1), (4, 2); w = 10 s / sqrt(r), h = 10 s sqrt(r)
    expected = [[-10, -2.5, 10, 2.5], [-20, -5, 20, 5], [-2.5, -10, 2.5, 10], [-5, -20, 5, 20]]
    assert_close(gen.base_anchors[0], expected, impl)


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("ANC-4")
def test_mmdet_scale_major_false_puts_scale_outer_ratio_inner(impl):
    gen = impl.get("AnchorGenerator")(strides=[10], ratios=[0.25, 4.0], scales=[1.0, 2.0], scale_major=False)
    expected = [[-10, -2.5, 10, 2.5], [-2.5, -10, 2.5, 10], [-20, -5, 20, 5], [-5, -20, 5, 20]]
    assert_close(gen.base_anchors[0], expected, impl)


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("ANC-5")
def test_mmdet_default_base_size_is_the_smaller_stride(impl, device):
    gen = impl.get("AnchorGenerator")(strides=[(8, 16)], ratios=[1.0], scales=[1.0])
    assert_close(gen.base_anchors[0], [[-4, -4, 4, 4]], impl)
    # Non-square stride: x advances by stride_w = 8, y by stride_h = 16.
    out = gen.grid_anchors([(2, 2)], device=device)[0]
    assert_close(out, [[-4, -4, 4, 4], [4, -4, 12, 4], [-4, 12, 4, 20], [4, 12, 12, 20]], impl)


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("ANC-6")
def test_mmdet_retinanet_first_p3_anchor_is_the_seed_value(impl, device):
    gen = impl.get("AnchorGenerator")(strides=[8, 16, 32, 64, 128], ratios=[0.5, 1.0, 2.0],
                                      octave_base_scale=4, scales_per_octave=3)
    out = gen.grid_anchors(RETINANET_FEATMAPS_800x1216, device=device)
    assert [len(a) for a in out] == RETINANET_SHAPES_800x1216
    assert sum(len(a) for a in out) == 182403
    assert_close(out[0][0], [-22.6274, -11.3137, 22.6274, 11.3137], impl, atol=1e-4)
    # P3 sizes 32, 40.3175, 50.7968 at ratio 1 (base anchors 3..5).
    b = to_numpy(gen.base_anchors[0])
    np.testing.assert_allclose(b[3:6, 2] - b[3:6, 0], [32.0, 40.3175, 50.7968], atol=1e-4)


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("ANC-6")
def test_mmdet_docstring_example_of_two_by_two_grid(impl, device):
    gen = impl.get("AnchorGenerator")([16], [1.0], [1.0], [9])
    out = gen.grid_anchors([(2, 2)], device=device)[0]
    expected = [[-4.5, -4.5, 4.5, 4.5], [11.5, -4.5, 20.5, 4.5], [-4.5, 11.5, 4.5, 20.5],
                [11.5, 11.5, 20.5, 20.5]]
    assert_close(out, expected, impl)
    gen2 = impl.get("AnchorGenerator")([16, 32], [1.0], [1.0], [9, 18])
    out2 = gen2.grid_anchors([(2, 2), (1, 1)], device=device)
    assert_close(out2[0], expected, impl)
    assert_close(out2[1], [[-9, -9, 9, 9]], impl)


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("ANC-3")
def test_mmdet_center_offset_half_centres_anchors_in_the_first_cell(impl, device):
    gen = impl.get("AnchorGenerator")(strides=[16], ratios=[1.0], scales=[1.0], center_offset=0.5)
    assert_close(gen.base_anchors[0], [[0, 0, 16, 16]], impl)


# --------------------------------------------------------------------------- valid flags
@pytest.mark.flavour("mmdet")
@pytest.mark.spec("ANC-7")
@given(lv=levels(), ratios=ratio_lists, scales=scale_lists,
       pad=st.tuples(st.integers(1, 400), st.integers(1, 400)), channels=st.booleans())
def test_mmdet_valid_flags_match_loop_oracle(impl, device, lv, ratios, scales, pad, channels):
    strides, sizes = lv
    gen = impl.get("AnchorGenerator")(strides=strides, ratios=ratios, scales=scales)
    pad_shape = pad + (3,) if channels else pad
    flags = gen.valid_flags(sizes, pad_shape, device=device)
    assert len(flags) == len(sizes)
    a = len(ratios) * len(scales)
    for i, (s, size) in enumerate(zip(strides, sizes)):
        assert flags[i].dtype == torch.bool
        assert flags[i].device.type == device.type
        expected = oracle.valid_flags(size, pad, stride_pair(s), a)
        np.testing.assert_array_equal(to_numpy(flags[i]), expected, err_msg=f"level {i}")


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("ANC-7")
@given(lv=levels(max_levels=1), pad=st.tuples(st.integers(1, 400), st.integers(1, 400)))
def test_mmdet_valid_flag_count_is_the_ceil_rectangle(impl, device, lv, pad):
    (stride,), (size,) = lv
    sw, sh = stride_pair(stride)
    gen = impl.get("AnchorGenerator")(strides=[stride], ratios=[0.5, 1.0], scales=[1.0])
    flags = gen.valid_flags([size], pad, device=device)[0]
    rows = min(math.ceil(pad[0] / sh), size[0])
    cols = min(math.ceil(pad[1] / sw), size[1])
    assert int(flags.sum()) == rows * cols * 2
    # The two anchors of one location share its flag.
    pairs = to_numpy(flags).reshape(-1, 2)
    assert (pairs[:, 0] == pairs[:, 1]).all()


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("ANC-7")
def test_mmdet_valid_flags_of_800_square_image_in_800x1216_batch(impl, device):
    gen = impl.get("AnchorGenerator")(strides=[8, 16, 32, 64, 128], ratios=[0.5, 1.0, 2.0],
                                      octave_base_scale=4, scales_per_octave=3)
    flags = gen.valid_flags(RETINANET_FEATMAPS_800x1216, (800, 800, 3), device=device)
    assert [len(f) for f in flags] == RETINANET_SHAPES_800x1216
    # ceil(800 / s) rows and columns: 100, 50, 25, 13, 7 (capped at the map); 9 anchors each.
    assert [int(f.sum()) for f in flags] == [90000, 22500, 5625, 1521, 441]


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("ANC-7")
def test_mmdet_valid_flags_round_a_partial_stride_up(impl, device):
    gen = impl.get("AnchorGenerator")(strides=[8], ratios=[1.0], scales=[1.0])
    flags = gen.valid_flags([(1, 4)], (8, 17), device=device)[0]  # ceil(17 / 8) = 3 columns
    assert to_numpy(flags).tolist() == [True, True, True, False]
    flags = gen.valid_flags([(1, 4)], (8, 16), device=device)[0]  # exactly 2 columns
    assert to_numpy(flags).tolist() == [True, True, False, False]
    flags = gen.valid_flags([(2, 2)], (1000, 1000), device=device)[0]  # capped at the map
    assert to_numpy(flags).tolist() == [True] * 4


# =========================================================================== mmdet v1 legacy
@pytest.mark.flavour("mmdet")
@pytest.mark.spec("ANC-8")
@given(lv=levels(), ratios=ratio_lists, scales=scale_lists, center_offset=offsets, data=st.data())
def test_legacy_grid_anchors_match_loop_oracle(impl, device, lv, ratios, scales, center_offset, data):
    # No near-tie is avoided: the oracle rounds mmdet's own float32 products [ANC-8].
    strides, sizes = lv
    bases = [min(stride_pair(s)) for s in strides]
    gen = impl.get("LegacyAnchorGenerator")(strides=strides, ratios=ratios, scales=scales,
                                            center_offset=center_offset)
    out = gen.grid_anchors(sizes, device=device)
    for i, (s, size) in enumerate(zip(strides, sizes)):
        base_anchors = oracle.mmdet_base_anchors(bases[i], scales, ratios, center_offset=center_offset,
                                                 legacy=True, h_ratios=torch_sqrt32(ratios))
        assert_boxes_close(out[i], oracle.grid_anchors(base_anchors, size, stride_pair(s)), impl)


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("ANC-8")
@given(base=st.integers(1, 64), ratios=exact_ratio_lists, scales=scale_lists, center_offset=offsets)
def test_legacy_base_anchors_are_integers(impl, base, ratios, scales, center_offset):
    gen = impl.get("LegacyAnchorGenerator")(strides=[base], ratios=ratios, scales=scales,
                                            center_offset=center_offset)
    b = to_numpy(gen.base_anchors[0])
    np.testing.assert_array_equal(b, np.round(b))
    expected = oracle.mmdet_base_anchors(base, scales, ratios, center_offset=center_offset, legacy=True,
                                         h_ratios=torch_sqrt32(ratios))
    np.testing.assert_array_equal(b, expected)


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("ANC-8")
def test_legacy_docstring_example_with_center_offset_half(impl, device):
    gen = impl.get("LegacyAnchorGenerator")([16], [1.0], [1.0], [9], center_offset=0.5)
    out = gen.grid_anchors([(2, 2)], device=device)[0]
    assert_close(out, [[0, 0, 8, 8], [16, 0, 24, 8], [0, 16, 8, 24], [16, 16, 24, 24]], impl)


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("ANC-8")
def test_legacy_rounds_mmdets_float32_product_not_the_exact_one(impl):
    # mmdet multiplies (base * 1/sqrt(r)) * scale in float32 before rounding: h = 12 *
    # sqrt(0.5) * 4.5 * sqrt(2) is 54 exactly but 53.000004 ... 52.999996 in float32, and
    # 0.5 * (h - 1) lands just below or above 26.5 depending on the order.
    gen = impl.get("LegacyAnchorGenerator")(strides=[16], ratios=[0.5], scales=[4.5 * 2 ** 0.5],
                                            base_sizes=[12])
    np.testing.assert_array_equal(to_numpy(gen.base_anchors[0]), [[-54, -26, 54, 26]])
    gen = impl.get("LegacyAnchorGenerator")(strides=[16], ratios=[3.0], scales=[0.34641016151377546],
                                            base_sizes=[60])
    np.testing.assert_array_equal(to_numpy(gen.base_anchors[0]), [[-5, -18, 5, 18]])


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("ANC-8")
def test_legacy_corners_round_half_to_even(impl):
    # base 4, centre 0: corners -+0.5*(w-1) = -+0.5, -+1.5, -+2.5 for w = 2, 4, 6.
    gen = impl.get("LegacyAnchorGenerator")(strides=[4], ratios=[1.0], scales=[0.5, 1.0, 1.5])
    assert_close(gen.base_anchors[0], [[0, 0, 0, 0], [-2, -2, 2, 2], [-2, -2, 2, 2]], impl)


# =========================================================================== upstream float32
float_values = st.floats(0.125, 64, allow_nan=False, allow_infinity=False, width=32)


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("ANC-20")
@given(base=st.one_of(st.integers(1, 64), float_values), ratios=st.lists(float_values, min_size=1, max_size=3),
       scales=st.lists(float_values, min_size=1, max_size=3), scale_major=st.booleans(),
       center_offset=offsets, legacy=st.booleans())
def test_mmdet_base_anchors_are_upstreams_float32_values(impl, base, ratios, scales, scale_major,
                                                         center_offset, legacy):
    name = "LegacyAnchorGenerator" if legacy else "AnchorGenerator"
    gen = impl.get(name)(strides=[16], ratios=ratios, scales=scales, base_sizes=[base],
                         scale_major=scale_major, center_offset=center_offset)
    # mmdet takes sqrt(r) from torch's float32 CPU sqrt, which can be an ulp off the
    # correctly rounded root; the rest of the arithmetic is the oracle's.
    expected = oracle.mmdet_base_anchors(base, scales, ratios, scale_major, None, center_offset, legacy,
                                         h_ratios=torch_sqrt32(ratios))
    np.testing.assert_array_equal(to_numpy(gen.base_anchors[0]), expected)


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("ANC-20")
def test_mmdet_worked_examples_of_float32_anchors_and_grid(impl, device):
    # (60 * 1/sqrt(3)) * 0.34641016 is 6 in float32 for w/2 ... and h/2 is exactly 18;
    # multiplied the other way round h/2 is 17.999998.
    gen = impl.get("AnchorGenerator")(strides=[16], ratios=[3.0], scales=[0.34641016151377546],
                                      base_sizes=[60])
    np.testing.assert_array_equal(to_numpy(gen.base_anchors[0]),
                                  np.float32([[-5.9999995, -18, 5.9999995, 18]]))
    # A non-integer stride: the shift is float32(x) * float32(0.3), so location 3 is at
    # 0.90000004 (the float64 product rounds to 0.9 = 0.89999998).
    gen = impl.get("AnchorGenerator")(strides=[0.3], ratios=[1.0], scales=[1.0], base_sizes=[1])
    out = gen.grid_anchors([(1, 12)], device=device)[0]
    np.testing.assert_array_equal(
        to_numpy(out), oracle.mmdet_grid_anchors_float32(to_numpy(gen.base_anchors[0]), (1, 12), (0.3, 0.3)))
    assert float(out[3, 2]) == float(np.float32(np.float32(3) * np.float32(0.3)) + np.float32(0.5))


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("ANC-20")
@given(strides=st.lists(st.one_of(stride_values, float_values), min_size=1, max_size=2),
       data=st.data())
def test_mmdet_grid_is_upstreams_float32_shift(impl, device, strides, data):
    sizes = data.draw(st.lists(featmap_size, min_size=len(strides), max_size=len(strides)))
    gen = impl.get("AnchorGenerator")(strides=strides, ratios=[0.5, 2.0], scales=[1.5], base_sizes=[8] * len(strides))
    out = gen.grid_anchors(sizes, device=device)
    for i, (stride, size) in enumerate(zip(strides, sizes)):
        expected = oracle.mmdet_grid_anchors_float32(to_numpy(gen.base_anchors[i]), size, (stride, stride))
        np.testing.assert_array_equal(to_numpy(out[i]), expected)


@pytest.mark.flavour("detectron2")
@pytest.mark.spec("ANC-20")
def test_detectron2_positions_are_torch_arange_and_cells_python_floats(impl, device):
    # detectron2 _create_grid_offsets: torch.arange(offset * stride, W * stride, step=stride,
    # dtype=float32) on the CPU; cell anchors from Python floats sqrt(size**2 / r), r * w.
    stride, offset, width = 3.502, 0.37, 40
    gen = impl.get("DefaultAnchorGenerator")(sizes=[[10.0]], aspect_ratios=[[1.0]], strides=[stride],
                                             offset=offset)
    out = to_numpy(gen.grid_anchors([(1, width)], device=device)[0])
    xs = torch.arange(offset * stride, width * stride, step=stride, dtype=torch.float32)[:width]
    np.testing.assert_array_equal(out[:, 0], (xs - 5.0).numpy())
    sizes, ratios = [7.0, 33.3], [0.3, 1.7, 2.9]
    gen = impl.get("DefaultAnchorGenerator")(sizes=[sizes], aspect_ratios=[ratios], strides=[8])
    cells = np.float32([[-w / 2.0, -h / 2.0, w / 2.0, h / 2.0]
                        for size in sizes for r in ratios
                        for w, h in [(math.sqrt(size ** 2.0 / r), r * math.sqrt(size ** 2.0 / r))]])
    np.testing.assert_array_equal(to_numpy(gen.base_anchors[0]), cells)


# =========================================================================== detectron2
d2_sizes = st.lists(st.integers(1, 64).map(float) | quarter.map(lambda q: q * 16), min_size=1, max_size=3)


@pytest.mark.flavour("detectron2")
@pytest.mark.spec("ANC-9")
@given(data=st.data(), offset=st.sampled_from([0.0, 0.25, 0.5]), ratios=ratio_lists)
def test_detectron2_grid_anchors_match_loop_oracle(impl, device, data, offset, ratios):
    n = data.draw(st.integers(1, 3))
    strides = data.draw(st.lists(stride_values, min_size=n, max_size=n))
    sizes = data.draw(st.lists(d2_sizes, min_size=n, max_size=n))
    fmaps = data.draw(st.lists(featmap_size, min_size=n, max_size=n))
    gen = impl.get("DefaultAnchorGenerator")(sizes=sizes, aspect_ratios=[ratios], strides=strides,
                                             offset=offset)
    out = gen.grid_anchors(fmaps, device=device)
    assert len(out) == n
    for i in range(n):
        cell = oracle.detectron2_cell_anchors(sizes[i], ratios)
        assert out[i].dtype == torch.float32
        assert_boxes_close(out[i], oracle.grid_anchors(cell, fmaps[i], (strides[i],) * 2, offset), impl)


@pytest.mark.flavour("detectron2")
@pytest.mark.spec("ANC-9")
def test_detectron2_cell_anchors_put_size_outer_ratio_inner(impl, device):
    gen = impl.get("DefaultAnchorGenerator")(sizes=[[10, 20]], aspect_ratios=[[0.25, 4.0]], strides=[8])
    out = gen.grid_anchors([(1, 1)], device=device)[0]
    expected = [[-10, -2.5, 10, 2.5], [-2.5, -10, 2.5, 10], [-20, -5, 20, 5], [-5, -20, 5, 20]]
    assert_close(out, expected, impl)


@pytest.mark.flavour("detectron2")
@pytest.mark.spec("ANC-9")
def test_detectron2_single_level_lists_broadcast_to_every_stride(impl, device):
    gen = impl.get("DefaultAnchorGenerator")(sizes=[[32]], aspect_ratios=[[1.0]], strides=[8, 16, 32])
    out = gen.grid_anchors([(1, 1), (1, 1), (1, 1)], device=device)
    for level in out:
        assert_close(level, [[-16, -16, 16, 16]], impl)


@pytest.mark.flavour("detectron2")
@pytest.mark.spec("ANC-9")
def test_detectron2_offset_moves_location_centres_by_offset_times_stride(impl, device):
    gen = impl.get("DefaultAnchorGenerator")(sizes=[[4]], aspect_ratios=[[1.0]], strides=[16], offset=0.5)
    out = gen.grid_anchors([(1, 2)], device=device)[0]
    assert_close(out, [[6, 6, 10, 10], [22, 6, 26, 10]], impl)


@pytest.mark.flavour("detectron2")
@pytest.mark.spec("ANC-9")
@given(sizes=d2_sizes, ratios=ratio_lists)
def test_detectron2_anchor_area_is_size_squared_and_ratio_h_over_w(impl, device, sizes, ratios):
    gen = impl.get("DefaultAnchorGenerator")(sizes=[sizes], aspect_ratios=[ratios], strides=[4])
    b = to_numpy(gen.grid_anchors([(1, 1)], device=device)[0])
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    np.testing.assert_allclose(w * h, np.repeat(np.square(sizes), len(ratios)), rtol=1e-5)
    np.testing.assert_allclose(h / w, np.tile(ratios, len(sizes)), rtol=1e-5)


# =========================================================================== torchvision
tv_sizes = st.lists(st.integers(1, 256), min_size=1, max_size=3)


@st.composite
def torchvision_setup(draw):
    n = draw(st.integers(1, 3))
    sizes = [draw(tv_sizes) for _ in range(n)]
    ratios = [draw(ratio_lists) for _ in range(n)]
    image = (draw(st.integers(8, 200)), draw(st.integers(8, 200)))
    fmaps = [(draw(st.integers(1, min(6, image[0]))), draw(st.integers(1, min(6, image[1]))))
             for _ in range(n)]
    return sizes, ratios, image, fmaps


@pytest.mark.flavour("torchvision")
@pytest.mark.spec("ANC-10")
@given(setup=torchvision_setup())
def test_torchvision_grid_anchors_match_loop_oracle(impl, device, setup):
    sizes, ratios, image, fmaps = setup
    for s, r in zip(sizes, ratios):
        assume(not_near_half(oracle.torchvision_corner_values_before_rounding(s, r)))
    gen = impl.get("TorchvisionAnchorGenerator")(sizes=sizes, aspect_ratios=ratios)
    out = gen.grid_anchors(image, fmaps, device=device)
    for i in range(len(sizes)):
        base = oracle.torchvision_base_anchors(sizes[i], ratios[i])
        stride = oracle.torchvision_strides(image, fmaps[i])
        assert_boxes_close(out[i], oracle.grid_anchors(base, fmaps[i], stride), impl)


@pytest.mark.flavour("torchvision")
@pytest.mark.spec("ANC-10")
@settings(max_examples=15)
@given(setup=torchvision_setup())
def test_torchvision_anchors_equal_live_torchvision(impl, device, setup):
    from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
    from torchvision.models.detection.image_list import ImageList

    sizes, ratios, image, fmaps = setup
    live = TVAnchorGenerator(tuple(tuple(s) for s in sizes), tuple(tuple(r) for r in ratios))
    images = ImageList(torch.zeros(1, 1, *image, device=device), [image])
    feats = [torch.zeros(1, 1, *f, device=device) for f in fmaps]
    expected = live(images, feats)[0]
    gen = impl.get("TorchvisionAnchorGenerator")(sizes=sizes, aspect_ratios=ratios)
    actual = torch.cat(gen.grid_anchors(image, fmaps, device=device))
    assert actual.dtype == torch.float32
    torch.testing.assert_close(actual.cpu(), expected.cpu(), rtol=0, atol=0)


@pytest.mark.flavour("torchvision")
@pytest.mark.spec("ANC-10")
def test_torchvision_stride_is_image_size_floor_divided_by_grid(impl, device):
    gen = impl.get("TorchvisionAnchorGenerator")(sizes=[[2]], aspect_ratios=[[1.0]])
    # image 100 x 130, grid 13 x 17: stride_h = 100 // 13 = 7, stride_w = 130 // 17 = 7.
    out = to_numpy(gen.grid_anchors((100, 130), [(13, 17)], device=device)[0])
    assert out.shape == (13 * 17, 4)
    np.testing.assert_array_equal(out[1], [6, -1, 8, 1])  # (y, x) = (0, 1)
    np.testing.assert_array_equal(out[17], [-1, 6, 1, 8])  # (y, x) = (1, 0)
    out = to_numpy(gen.grid_anchors((64, 100), [(8, 10)], device=device)[0])  # strides h 8, w 10
    np.testing.assert_array_equal(out[11], [9, 7, 11, 9])  # (y, x) = (1, 1)


@pytest.mark.flavour("torchvision")
@pytest.mark.spec("ANC-10")
def test_torchvision_retinanet_p6_p7_strides_follow_the_batch_not_the_nominal_stride(impl, device):
    gen = impl.get("TorchvisionAnchorGenerator")(sizes=[[2]] * 5, aspect_ratios=[[1.0]] * 5)
    out = [to_numpy(a) for a in gen.grid_anchors((800, 1216), RETINANET_FEATMAPS_800x1216, device=device)]
    # P6 13x19: stride_h = 800 // 13 = 61, stride_w = 1216 // 19 = 64; location (1, 1).
    np.testing.assert_array_equal(out[3][19 + 1], [63, 60, 65, 62])
    # P7 7x10: stride_h = 800 // 7 = 114, stride_w = 1216 // 10 = 121; locations (0, 1), (1, 0).
    np.testing.assert_array_equal(out[4][1], [120, -1, 122, 1])
    np.testing.assert_array_equal(out[4][10], [-1, 113, 1, 115])
    np.testing.assert_array_equal(out[0][152 + 1], [7, 7, 9, 9])  # P3 is on the nominal 8 grid


@pytest.mark.flavour("torchvision")
@pytest.mark.spec("ANC-10")
def test_torchvision_base_anchors_round_half_to_even(impl, device):
    gen = impl.get("TorchvisionAnchorGenerator")(sizes=[[1, 3, 5]], aspect_ratios=[[1.0]])
    out = gen.grid_anchors((4, 4), [(1, 1)], device=device)[0]
    # halves 0.5, 1.5, 2.5 round to 0, 2, 2
    assert_close(out, [[0, 0, 0, 0], [-2, -2, 2, 2], [-2, -2, 2, 2]], impl)


@pytest.mark.flavour("torchvision")
@pytest.mark.spec("ANC-10")
def test_torchvision_orders_ratio_outer_size_inner(impl, device):
    gen = impl.get("TorchvisionAnchorGenerator")(sizes=[[10, 20]], aspect_ratios=[[0.25, 4.0]])
    out = gen.grid_anchors((8, 8), [(1, 1)], device=device)[0]
    # -2.5 and 2.5 round half to even to -2 and 2
    expected = [[-10, -2, 10, 2], [-20, -5, 20, 5], [-2, -10, 2, 10], [-5, -20, 5, 20]]
    assert_close(out, expected, impl)


# =========================================================================== anchor_inside_flags
@st.composite
def anchors_and_flags(draw):
    n = draw(st.integers(0, 12))
    coords = st.integers(-40, 160).map(lambda v: v / 2)
    rows = []
    for _ in range(n):
        x1, x2 = sorted([draw(coords), draw(coords)])
        y1, y2 = sorted([draw(coords), draw(coords)])
        rows.append([x1, y1, x2, y2])
    valid = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    img = (draw(st.integers(1, 80)), draw(st.integers(1, 80)))
    return np.array(rows, dtype=np.float64).reshape(-1, 4), np.array(valid, dtype=bool), img


@pytest.mark.spec("ANC-11")
@given(case=anchors_and_flags(), border=st.sampled_from([-1, 0, 1, 4, 16]), channels=st.booleans())
def test_anchor_inside_flags_match_loop_oracle(impl, device, case, border, channels):
    anchors, valid, img = case
    img_shape = img + (3,) if channels else img
    out = impl.get("anchor_inside_flags")(tensor(anchors, device), tensor(valid, device, torch.bool),
                                          img_shape, border)
    assert out.dtype == torch.bool and tuple(out.shape) == (len(anchors),)
    np.testing.assert_array_equal(to_numpy(out), oracle.inside_flags(anchors, valid, img, border))


def _inside(impl, device, boxes, img_shape=(10, 20), border=0, valid=None):
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    valid = np.ones(len(boxes), dtype=bool) if valid is None else np.asarray(valid)
    out = impl.get("anchor_inside_flags")(tensor(boxes, device), tensor(valid, device, torch.bool),
                                          img_shape, border)
    return to_numpy(out).tolist()


@pytest.mark.spec("ANC-11")
def test_anchor_ending_exactly_at_the_far_border_is_outside(impl, device):
    # image H = 10, W = 20
    assert _inside(impl, device, [[0, 0, 20, 5], [0, 0, 5, 10]]) == [False, False]


@pytest.mark.spec("ANC-11")
def test_anchor_ending_just_before_the_far_border_is_inside(impl, device):
    assert _inside(impl, device, [[0, 0, 19.99, 5], [0, 0, 5, 9.99]]) == [True, True]


@pytest.mark.spec("ANC-11")
def test_anchor_starting_exactly_at_minus_border_is_inside(impl, device):
    assert _inside(impl, device, [[0, 0, 5, 5]], border=0) == [True]
    assert _inside(impl, device, [[-3, -3, 5, 5]], border=3) == [True]
    assert _inside(impl, device, [[-3.01, 0, 5, 5], [0, -3.01, 5, 5]], border=3) == [False, False]


@pytest.mark.spec("ANC-11")
def test_allowed_border_widens_the_far_side_strictly(impl, device):
    assert _inside(impl, device, [[0, 0, 24.5, 5], [0, 0, 25, 5], [0, 0, 5, 15]], border=5) == [
        True, False, False]


@pytest.mark.spec("ANC-11")
def test_invalid_anchor_is_never_inside(impl, device):
    assert _inside(impl, device, [[1, 1, 5, 5], [1, 1, 5, 5]], valid=[False, True]) == [False, True]


@pytest.mark.spec("ANC-11")
def test_img_shape_may_carry_channels(impl, device):
    assert _inside(impl, device, [[0, 0, 19, 9], [0, 0, 19, 10]], img_shape=(10, 20, 3)) == [True, False]


@pytest.mark.spec("ANC-12")
def test_negative_allowed_border_returns_valid_flags_unchanged(impl, device):
    boxes = [[-100, -100, 500, 500], [1, 1, 2, 2], [float("nan"), 0, 1, 1]]
    assert _inside(impl, device, boxes, border=-1, valid=[True, False, True]) == [True, False, True]


@pytest.mark.spec("ANC-13")
def test_non_finite_anchor_is_outside(impl, device):
    nan, inf = float("nan"), float("inf")
    boxes = [[nan, 0, 5, 5], [0, nan, 5, 5], [0, 0, nan, 5], [0, 0, 5, nan], [-inf, 0, 5, 5],
             [0, 0, inf, 5], [0, 0, 5, 5]]
    assert _inside(impl, device, boxes, border=2) == [False] * 6 + [True]


@pytest.mark.spec("ANC-14")
def test_no_anchors_give_empty_flags(impl, device):
    out = impl.get("anchor_inside_flags")(torch.zeros(0, 4, device=device),
                                          torch.zeros(0, dtype=torch.bool, device=device), (10, 10), 0)
    assert out.dtype == torch.bool and tuple(out.shape) == (0,)


@pytest.mark.spec("ANC-17")
@pytest.mark.parametrize("bad", ["anchors_n3", "anchors_1d", "flags_float", "flags_length", "img_shape"])
def test_anchor_inside_flags_rejects_malformed_inputs(impl, device, bad):
    anchors = torch.zeros(3, 4, device=device)
    flags = torch.ones(3, dtype=torch.bool, device=device)
    img_shape = (10, 10)
    if bad == "anchors_n3":
        anchors, match = torch.zeros(3, 3, device=device), "flat_anchors"
    elif bad == "anchors_1d":
        anchors, match = torch.zeros(12, device=device), "flat_anchors"
    elif bad == "flags_float":
        flags, match = torch.ones(3, device=device), "valid_flags"
    elif bad == "flags_length":
        flags, match = torch.ones(4, dtype=torch.bool, device=device), "valid_flags"
    else:
        img_shape, match = (10,), "img_shape"
    raises_value_error(impl.get("anchor_inside_flags"), anchors, flags, img_shape, 0, match=match)


@pytest.mark.spec("ANC-17")
def test_anchor_inside_flags_rejects_flags_on_another_device(impl, device):
    other = torch.device("meta") if device.type == "cpu" else torch.device("cpu")
    anchors = torch.zeros(3, 4, device=device)
    flags = torch.ones(3, dtype=torch.bool, device=other)
    raises_value_error(impl.get("anchor_inside_flags"), anchors, flags, (10, 10), 0, match="valid_flags")


# =========================================================================== bad arguments
@pytest.mark.flavour("mmdet")
@pytest.mark.spec("ANC-15")
@pytest.mark.parametrize("kwargs, match", [
    (dict(scales=[1.0], octave_base_scale=4, scales_per_octave=3), "scales"),
    (dict(), "scales"),
    (dict(octave_base_scale=4), "scales"),
    (dict(scales_per_octave=3), "scales"),
    (dict(scales=[1.0], ratios=[0.0]), "ratios"),
    (dict(scales=[1.0], ratios=[-1.0]), "ratios"),
    (dict(scales=[1.0], ratios=[float("nan")]), "ratios"),
    (dict(scales=[0.0]), "scales"),
    (dict(scales=[1.0], center_offset=1.5), "center_offset"),
    (dict(scales=[1.0], center_offset=-0.1), "center_offset"),
    (dict(scales=[1.0], center_offset=0.5, centers=[(0, 0), (0, 0)]), "centers"),
    (dict(scales=[1.0], base_sizes=[8]), "base_sizes"),
    (dict(scales=[1.0], strides=[8, 0]), "strides"),
], ids=["both-scales", "no-scales", "octave-base-only", "per-octave-only", "ratio-zero",
        "ratio-negative", "ratio-nan", "scale-zero", "offset-above-1", "offset-negative",
        "centers-with-offset", "base-sizes-length", "stride-zero"])
def test_mmdet_generator_rejects_bad_constructor_arguments(impl, kwargs, match):
    args = dict(strides=[8, 16], ratios=[1.0])
    args.update(kwargs)
    for name in ("AnchorGenerator", "LegacyAnchorGenerator"):
        raises_value_error(impl.get(name), match=match, **args)


@pytest.mark.flavour("detectron2")
@pytest.mark.spec("ANC-15")
@pytest.mark.parametrize("kwargs, match", [
    (dict(sizes=[[32], [64], [128]]), "sizes"),
    (dict(aspect_ratios=[[1.0], [1.0], [1.0]]), "aspect_ratios"),
    (dict(offset=1.0), "offset"),
    (dict(offset=-0.5), "offset"),
    (dict(aspect_ratios=[[0.0]]), "aspect_ratios"),
    (dict(sizes=[[-4]]), "sizes"),
], ids=["sizes-levels", "ratios-levels", "offset-one", "offset-negative", "ratio-zero", "size-negative"])
def test_detectron2_generator_rejects_bad_constructor_arguments(impl, kwargs, match):
    args = dict(sizes=[[32]], aspect_ratios=[[1.0]], strides=[8, 16])
    args.update(kwargs)
    raises_value_error(impl.get("DefaultAnchorGenerator"), match=match, **args)


@pytest.mark.flavour("torchvision")
@pytest.mark.spec("ANC-15")
@pytest.mark.parametrize("kwargs, match", [
    (dict(aspect_ratios=[[1.0]]), "aspect_ratios"),
    (dict(aspect_ratios=[[1.0], [0.0]]), "aspect_ratios"),
    (dict(sizes=[[32], [0]]), "sizes"),
], ids=["levels-mismatch", "ratio-zero", "size-zero"])
def test_torchvision_generator_rejects_bad_constructor_arguments(impl, kwargs, match):
    args = dict(sizes=[[32], [64]], aspect_ratios=[[1.0], [1.0]])
    args.update(kwargs)
    raises_value_error(impl.get("TorchvisionAnchorGenerator"), match=match, **args)


BAD_FEATMAPS = {
    "too-few-levels": [(4, 4)],
    "zero-height": [(0, 4), (2, 2)],
    "negative-width": [(4, -1), (2, 2)],
    "float-size": [(4.5, 4), (2, 2)],
    "not-a-pair": [(4, 4, 4), (2, 2)],
}


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("ANC-16")
@pytest.mark.parametrize("name", sorted(BAD_FEATMAPS))
def test_mmdet_grid_anchors_and_valid_flags_reject_bad_featmap_sizes(impl, device, name):
    gen = impl.get("AnchorGenerator")(strides=[8, 16], ratios=[1.0], scales=[1.0])
    raises_value_error(gen.grid_anchors, BAD_FEATMAPS[name], device=device, match="featmap_sizes")
    raises_value_error(gen.valid_flags, BAD_FEATMAPS[name], (32, 32), device=device, match="featmap_sizes")


@pytest.mark.flavour("mmdet")
@pytest.mark.spec("ANC-16")
@pytest.mark.parametrize("pad_shape", [(32,), (0, 32), (32, -1), (32.5, 32)],
                         ids=["one-value", "zero", "negative", "float"])
def test_mmdet_valid_flags_reject_bad_pad_shape(impl, device, pad_shape):
    gen = impl.get("AnchorGenerator")(strides=[8], ratios=[1.0], scales=[1.0])
    raises_value_error(gen.valid_flags, [(4, 4)], pad_shape, device=device, match="pad_shape")


@pytest.mark.flavour("detectron2")
@pytest.mark.spec("ANC-16")
@pytest.mark.parametrize("name", sorted(BAD_FEATMAPS))
def test_detectron2_grid_anchors_reject_bad_featmap_sizes(impl, device, name):
    gen = impl.get("DefaultAnchorGenerator")(sizes=[[32]], aspect_ratios=[[1.0]], strides=[8, 16])
    raises_value_error(gen.grid_anchors, BAD_FEATMAPS[name], device=device, match="featmap_sizes")


@pytest.mark.flavour("torchvision")
@pytest.mark.spec("ANC-16")
@pytest.mark.parametrize("name", sorted(BAD_FEATMAPS) + ["larger-than-image"])
def test_torchvision_grid_anchors_reject_bad_featmap_sizes(impl, device, name):
    gen = impl.get("TorchvisionAnchorGenerator")(sizes=[[32], [64]], aspect_ratios=[[1.0], [1.0]])
    fmaps = BAD_FEATMAPS.get(name, [(4, 4), (64, 2)])
    raises_value_error(gen.grid_anchors, (32, 32), fmaps, device=device, match="featmap_sizes")


@pytest.mark.flavour("torchvision")
@pytest.mark.spec("ANC-16")
def test_torchvision_grid_anchors_reject_bad_image_size(impl, device):
    gen = impl.get("TorchvisionAnchorGenerator")(sizes=[[32]], aspect_ratios=[[1.0]])
    raises_value_error(gen.grid_anchors, (0, 32), [(1, 1)], device=device, match="image_size")


# =========================================================================== RetinaNet presets
@pytest.mark.spec("ANC-18")
@pytest.mark.parametrize("flavour, sizes", [
    ("mmdet", [(32, 40.3175, 50.7968), (64, 80.6349, 101.5937)]),
    ("detectron2", [(32, 40.3175, 50.7968), (64, 80.6349, 101.5937)]),
    ("torchvision", [(32, 40, 50), (64, 80, 101), (128, 161, 203), (256, 322, 406), (512, 645, 812)]),
])
def test_retinanet_presets_state_each_flavours_sizes(impl, flavour, sizes):
    if not impl.claims(flavour):
        pytest.skip(f"flavour {flavour} not claimed")
    preset = impl.get("retinanet_anchor_preset")(flavour)
    assert tuple(preset.strides) == (8, 16, 32, 64, 128)
    assert tuple(preset.aspect_ratios) == (0.5, 1.0, 2.0)
    assert preset.center_offset == 0.0
    for got, want in zip(preset.sizes, sizes):
        np.testing.assert_allclose(got, want, atol=1e-4)
    assert preset.rounds_base_anchors == (flavour == "torchvision")
    assert preset.order == ("size_outer" if flavour == "detectron2" else "ratio_outer")


@pytest.mark.spec("ANC-18")
@pytest.mark.parametrize("flavour", ["mmdet", "detectron2", "torchvision"])
def test_retinanet_presets_give_182403_anchors_for_800x1216(impl, device, flavour):
    if not impl.claims(flavour):
        pytest.skip(f"flavour {flavour} not claimed")
    gen = impl.get("retinanet_anchor_preset")(flavour).build()
    if flavour == "torchvision":
        out = gen.grid_anchors((800, 1216), RETINANET_FEATMAPS_800x1216, device=device)
    else:
        out = gen.grid_anchors(RETINANET_FEATMAPS_800x1216, device=device)
    assert [len(a) for a in out] == RETINANET_SHAPES_800x1216


@pytest.mark.spec("ANC-18")
def test_unknown_preset_flavour_is_rejected(impl):
    raises_value_error(impl.get("retinanet_anchor_preset"), "yolo", match="flavour")


@pytest.mark.spec("ANC-19")
def test_mmdet_and_detectron2_retinanet_anchors_differ_only_in_order(impl, device):
    if not (impl.claims("mmdet") and impl.claims("detectron2")):
        pytest.skip("needs both the mmdet and the detectron2 flavour")
    preset = impl.get("retinanet_anchor_preset")
    fmaps = [(5, 7), (3, 4), (2, 2), (1, 1), (1, 1)]
    mm = preset("mmdet").build().grid_anchors(fmaps, device=device)
    d2 = preset("detectron2").build().grid_anchors(fmaps, device=device)
    for a, b in zip(mm, d2):
        a, b = to_numpy(a).reshape(-1, 9, 4), to_numpy(b).reshape(-1, 9, 4)
        # mmdet: ratio outer, scale inner; detectron2: size outer, ratio inner -> transpose 3x3.
        b_as_mmdet = b.reshape(-1, 3, 3, 4).transpose(0, 2, 1, 3).reshape(-1, 9, 4)
        np.testing.assert_allclose(a, b_as_mmdet, atol=1e-4)
        assert not np.allclose(a, b)


@pytest.mark.spec("ANC-13")
def test_anchor_starting_at_plus_infinity_is_outside(impl, device):
    # x1 = +inf passes x1 >= -b, and x2 < W + b holds for a finite x2: only a
    # finiteness test puts this (inverted, non-finite) anchor outside.
    inf = float("inf")
    boxes = [[inf, 0, 5, 5], [0, inf, 5, 5], [0, 0, 5, 5]]
    assert _inside(impl, device, boxes, border=0) == [False, False, True]
