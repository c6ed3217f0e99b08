"""Conformance: point priors of anchor-free heads (SPEC.md, Points; clauses PTS-*).

mmdetection's ``MlvlPointGenerator`` (RTMDet, FCOS-style heads), checked against the
loop oracle of ``oracles/anchors.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conformance.checks import assert_close, raises_value_error, to_numpy
from oracles import anchors as oracle

pytestmark = pytest.mark.component("points")

stride_values = st.integers(1, 64)
stride_specs = st.one_of(stride_values, st.tuples(stride_values, stride_values))
featmap_size = st.tuples(st.integers(1, 7), st.integers(1, 7))
offsets = st.sampled_from([0.0, 0.25, 0.5, 1.0])


@st.composite
def levels(draw, max_levels=3):
    n = draw(st.integers(1, max_levels))
    return (draw(st.lists(stride_specs, min_size=n, max_size=n)),
            draw(st.lists(featmap_size, min_size=n, max_size=n)))


def pair(s):
    return (s, s) if isinstance(s, int) else tuple(s)


# --------------------------------------------------------------------------- differential
@pytest.mark.spec("PTS-1")
@given(lv=levels(), offset=offsets, with_stride=st.booleans())
def test_points_match_loop_oracle(impl, device, lv, offset, with_stride):
    strides, sizes = lv
    gen = impl.get("MlvlPointGenerator")(strides=strides, offset=offset)
    out = gen.grid_priors(sizes, device=device, with_stride=with_stride)
    assert len(out) == len(sizes)
    for i, (s, size) in enumerate(zip(strides, sizes)):
        expected = oracle.grid_points(size, pair(s), offset, with_stride)
        assert_close(out[i], expected, impl, what=f"level {i}")


@pytest.mark.spec("PTS-7")
@given(strides=st.lists(st.one_of(stride_values, st.floats(0.125, 64, width=32),
                                  st.tuples(stride_values, st.floats(0.125, 64, width=32))),
                        min_size=1, max_size=2),
       offset=st.one_of(offsets, st.floats(0, 1, width=32)), data=st.data())
def test_points_are_upstreams_float32_values(impl, device, strides, offset, data):
    sizes = data.draw(st.lists(featmap_size, min_size=len(strides), max_size=len(strides)))
    out = impl.get("MlvlPointGenerator")(strides=strides, offset=offset).grid_priors(
        sizes, device=device, with_stride=True)
    for i, (s, size) in enumerate(zip(strides, sizes)):
        expected = oracle.grid_points(size, pair(s) if not isinstance(s, float) else (s, s), offset, True)
        np.testing.assert_array_equal(to_numpy(out[i]), np.float32(expected))


@pytest.mark.spec("PTS-7")
def test_points_worked_example_of_float32_arithmetic(impl, device):
    # (x + 0.1) * 3 in float32: 0.3, 3.3000002, 6.2999997 (float64 then rounded: 3.3, 6.3).
    out = impl.get("MlvlPointGenerator")(strides=[3], offset=0.1).grid_priors([(1, 3)], device=device)[0]
    np.testing.assert_array_equal(to_numpy(out[:, 0]), np.float32([0.3, 3.3000002, 6.2999997]))


@pytest.mark.spec("PTS-4")
@given(lv=levels(), pad=st.tuples(st.integers(1, 300), st.integers(1, 300)), channels=st.booleans())
def test_point_valid_flags_match_loop_oracle(impl, device, lv, pad, channels):
    strides, sizes = lv
    gen = impl.get("MlvlPointGenerator")(strides=strides, offset=0.0)
    flags = gen.valid_flags(sizes, pad + (3,) if channels else pad, device=device)
    assert len(flags) == len(sizes)
    for i, (s, size) in enumerate(zip(strides, sizes)):
        assert flags[i].dtype == torch.bool and flags[i].device.type == device.type
        np.testing.assert_array_equal(to_numpy(flags[i]), oracle.valid_flags(size, pad, pair(s), 1))


# --------------------------------------------------------------------------- properties
@pytest.mark.spec("PTS-1")
@given(lv=levels(), offset=offsets)
def test_points_are_float32_with_one_row_per_location(impl, device, lv, offset):
    strides, sizes = lv
    gen = impl.get("MlvlPointGenerator")(strides=strides, offset=offset)
    assert gen.num_levels == len(strides)
    assert list(gen.num_base_priors) == [1] * len(strides)
    for points, (h, w) in zip(gen.grid_priors(sizes, device=device), sizes):
        assert points.dtype == torch.float32
        assert points.device.type == device.type
        assert tuple(points.shape) == (h * w, 2)


@pytest.mark.spec("PTS-1")
@given(lv=levels(max_levels=1), offset=offsets, data=st.data())
def test_point_row_is_its_location_times_stride(impl, device, lv, offset, data):
    (stride,), (size,) = lv
    sw, sh = pair(stride)
    h, w = size
    points = to_numpy(impl.get("MlvlPointGenerator")(strides=[stride], offset=offset)
                      .grid_priors([size], device=device)[0])
    y, x = data.draw(st.integers(0, h - 1)), data.draw(st.integers(0, w - 1))
    np.testing.assert_allclose(points[y * w + x], [(x + offset) * sw, (y + offset) * sh], rtol=1e-6)


@pytest.mark.spec("PTS-2")
@given(lv=levels(), offset=offsets)
def test_with_stride_appends_the_strides_to_the_same_points(impl, device, lv, offset):
    strides, sizes = lv
    gen = impl.get("MlvlPointGenerator")(strides=strides, offset=offset)
    plain = gen.grid_priors(sizes, device=device)
    strided = gen.grid_priors(sizes, device=device, with_stride=True)
    for p, q, s, (h, w) in zip(plain, strided, strides, sizes):
        assert tuple(q.shape) == (h * w, 4) and q.dtype == torch.float32
        assert_close(q[:, :2], to_numpy(p), impl)
        assert_close(q[:, 2:], np.tile(np.asarray(pair(s), dtype=np.float64), (h * w, 1)), impl)


@pytest.mark.spec("PTS-4")
@given(lv=levels(max_levels=1), pad=st.tuples(st.integers(1, 300), st.integers(1, 300)))
def test_point_valid_flag_count_is_the_ceil_rectangle(impl, device, lv, pad):
    (stride,), (size,) = lv
    sw, sh = pair(stride)
    flags = impl.get("MlvlPointGenerator")(strides=[stride]).valid_flags([size], pad, device=device)[0]
    assert tuple(flags.shape) == (size[0] * size[1],)
    assert int(flags.sum()) == min(math.ceil(pad[0] / sh), size[0]) * min(math.ceil(pad[1] / sw), size[1])


# --------------------------------------------------------------------------- worked examples
@pytest.mark.spec("PTS-3")
def test_default_offset_is_half_a_stride(impl, device):
    gen = impl.get("MlvlPointGenerator")([8])
    assert_close(gen.grid_priors([(2, 2)], device=device)[0], [[4, 4], [12, 4], [4, 12], [12, 12]], impl)


@pytest.mark.spec("PTS-3")
def test_rtmdet_points_for_640x640_with_offset_zero(impl, device):
    gen = impl.get("MlvlPointGenerator")([8, 16, 32], offset=0)
    out = gen.grid_priors([(80, 80), (40, 40), (20, 20)], device=device, with_stride=True)
    assert [tuple(p.shape) for p in out] == [(6400, 4), (1600, 4), (400, 4)]
    assert_close(out[0][0], [0, 0, 8, 8], impl)
    assert_close(out[0][1], [8, 0, 8, 8], impl)
    assert_close(out[0][80], [0, 8, 8, 8], impl)
    assert_close(out[0][-1], [632, 632, 8, 8], impl)
    assert_close(out[2][-1], [608, 608, 32, 32], impl)
    flags = gen.valid_flags([(80, 80), (40, 40), (20, 20)], (640, 640, 3), device=device)
    assert [int(f.sum()) for f in flags] == [6400, 1600, 400]


@pytest.mark.spec("PTS-4")
def test_point_valid_flags_round_a_partial_stride_up(impl, device):
    gen = impl.get("MlvlPointGenerator")([8])
    assert to_numpy(gen.valid_flags([(1, 4)], (8, 17), device=device)[0]).tolist() == [True] * 3 + [False]
    assert to_numpy(gen.valid_flags([(2, 1)], (8, 8), device=device)[0]).tolist() == [True, False]
    assert to_numpy(gen.valid_flags([(2, 2)], (999, 999), device=device)[0]).tolist() == [True] * 4


@pytest.mark.spec("PTS-6")
def test_stride_pair_steps_x_by_width_and_y_by_height(impl, device):
    gen = impl.get("MlvlPointGenerator")([(4, 10)], offset=0.5)
    out = gen.grid_priors([(2, 2)], device=device, with_stride=True)[0]
    assert_close(out, [[2, 5, 4, 10], [6, 5, 4, 10], [2, 15, 4, 10], [6, 15, 4, 10]], impl)
    flags = gen.valid_flags([(2, 2)], (10, 5), device=device)[0]  # ceil(10/10)=1 row, ceil(5/4)=2 cols
    assert to_numpy(flags).tolist() == [True, True, False, False]


# --------------------------------------------------------------------------- bad arguments
@pytest.mark.spec("PTS-5")
@pytest.mark.parametrize("kwargs, match", [
    (dict(strides=[8, 0]), "strides"),
    (dict(strides=[8, -16]), "strides"),
    (dict(strides=[]), "strides"),
    (dict(strides=[(8, 8, 8)]), "strides"),
    (dict(strides=[8], offset=-0.5), "offset"),
    (dict(strides=[8], offset=1.5), "offset"),
], ids=["stride-zero", "stride-negative", "no-levels", "stride-triple", "offset-negative", "offset-above-1"])
def test_point_generator_rejects_bad_constructor_arguments(impl, kwargs, match):
    raises_value_error(impl.get("MlvlPointGenerator"), match=match, **kwargs)


@pytest.mark.spec("PTS-5")
@pytest.mark.parametrize("featmap_sizes", [[(4, 4)], [(0, 4), (2, 2)], [(4, -2), (2, 2)], [(4.0, 4.5), (2, 2)],
                                           [(4,), (2, 2)]],
                         ids=["too-few-levels", "zero", "negative", "float", "not-a-pair"])
def test_grid_priors_and_valid_flags_reject_bad_featmap_sizes(impl, device, featmap_sizes):
    gen = impl.get("MlvlPointGenerator")([8, 16])
    raises_value_error(gen.grid_priors, featmap_sizes, device=device, match="featmap_sizes")
    raises_value_error(gen.valid_flags, featmap_sizes, (64, 64), device=device, match="featmap_sizes")


@pytest.mark.spec("PTS-5")
@pytest.mark.parametrize("pad_shape", [(64,), (0, 64), (64, -3), (64.5, 64)],
                         ids=["one-value", "zero", "negative", "float"])
def test_point_valid_flags_reject_bad_pad_shape(impl, device, pad_shape):
    gen = impl.get("MlvlPointGenerator")([8])
    raises_value_error(gen.valid_flags, [(4, 4)], pad_shape, device=device, match="pad_shape")
