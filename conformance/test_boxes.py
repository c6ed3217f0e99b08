"""Conformance of box areas and overlaps: box_area, box_iou (mmdet), pairwise_iou
(detectron2), box_iou_torchvision (torchvision). SPEC.md section "IoU", clauses IOU-*.

Random boxes lie on a 1/8 px grid with coordinates below 400, so areas, intersections
and unions are exact in float32 and only the final division rounds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conformance.checks import (
    assert_close,
    peak_extra_bytes,
    raises_value_error,
    tensor,
    to_numpy,
)
from oracles import boxes as oracle

pytestmark = pytest.mark.component("iou")

MODES = ("iou", "iof", "giou")
GRID = 8  # coordinates are multiples of 1/GRID


# --------------------------------------------------------------------------- strategies
@st.composite
def box_arrays(draw, shape, min_size=0, max_xy=256, max_size=128):
    """float64 xyxy boxes of shape shape + (4,), on the 1/8 grid, x1 <= x2, y1 <= y2."""
    xy = draw(hnp.arrays(np.int64, tuple(shape) + (2,),
                         elements=st.integers(0, max_xy * GRID)))
    wh = draw(hnp.arrays(np.int64, tuple(shape) + (2,),
                         elements=st.integers(min_size * GRID, max_size * GRID)))
    return np.concatenate([xy, xy + wh], axis=-1) / GRID


# Random pairs have width and height >= 1 px: what zero-area boxes give differs by
# flavour, so it is pinned by worked examples below, not left to random draws.
@st.composite
def box_pairs(draw, max_boxes=6, min_size=1, batch=()):
    m = draw(st.integers(0, max_boxes))
    n = draw(st.integers(0, max_boxes))
    return (draw(box_arrays(tuple(batch) + (m,), min_size)),
            draw(box_arrays(tuple(batch) + (n,), min_size)))


@st.composite
def aligned_pairs(draw, max_boxes=8, min_size=1, batch=()):
    n = draw(st.integers(0, max_boxes))
    return (draw(box_arrays(tuple(batch) + (n,), min_size)),
            draw(box_arrays(tuple(batch) + (n,), min_size)))


batch_shapes = st.lists(st.integers(1, 3), min_size=1, max_size=2).map(tuple)

# mmdet bbox_overlaps docstring boxes; hand-computed results below.
MMDET_DOC_BOXES1 = [[0, 0, 10, 10], [10, 10, 20, 20], [32, 32, 38, 42]]
MMDET_DOC_BOXES2 = [[0, 0, 10, 20], [0, 10, 10, 19], [10, 10, 20, 20]]
MMDET_DOC_IOU = [[0.5, 0, 0], [0, 0, 1], [0, 0, 0]]
MMDET_DOC_IOF = [[1, 0, 0], [0, 0, 1], [0, 0, 0]]
# e.g. [10,10,20,20] vs [0,0,10,20]: union 300, enclosing [0,0,20,20] = 400 -> -100/400
MMDET_DOC_GIOU = [
    [0.5, 0.0, -200 / 400],
    [-100 / 400, -10 / 200, 1.0],
    [-1336 / 1596, -1066 / 1216, -736 / 896],
]


def t(array, device, dtype=torch.float32):
    return tensor(array, device, dtype)


# --------------------------------------------------------------------------- differential
# The three modes of box_iou, each its own clause; iou is the default (no mode given).
MODE_KWARGS = [
    pytest.param({}, id="iou", marks=pytest.mark.spec("IOU-2")),
    pytest.param({"mode": "iof"}, id="iof", marks=pytest.mark.spec("IOU-3")),
    pytest.param({"mode": "giou"}, id="giou", marks=pytest.mark.spec("IOU-4")),
]


@pytest.mark.parametrize("kwargs", MODE_KWARGS)
@given(pair=box_pairs())
def test_pairwise_overlaps_match_the_oracle(impl, device, kwargs, pair):
    b1, b2 = pair
    got = impl.get("box_iou")(t(b1, device), t(b2, device), **kwargs)
    assert_close(got, oracle.box_iou(b1, b2, **kwargs), impl)


@pytest.mark.spec("IOU-5")
@given(pair=aligned_pairs(), mode=st.sampled_from(MODES))
def test_aligned_overlaps_match_the_oracle_in_every_mode(impl, device, pair, mode):
    b1, b2 = pair
    got = impl.get("box_iou")(t(b1, device), t(b2, device), mode=mode, is_aligned=True)
    assert_close(got, oracle.box_iou(b1, b2, mode=mode, is_aligned=True), impl)


@pytest.mark.spec("IOU-6")
@given(data=st.data(), batch=batch_shapes, mode=st.sampled_from(MODES),
       aligned=st.booleans())
def test_batched_overlaps_match_the_oracle(impl, device, data, batch, mode, aligned):
    strategy = aligned_pairs(4, batch=batch) if aligned else box_pairs(4, batch=batch)
    b1, b2 = data.draw(strategy)
    got = impl.get("box_iou")(t(b1, device), t(b2, device), mode=mode, is_aligned=aligned)
    assert_close(got, oracle.box_iou(b1, b2, mode=mode, is_aligned=aligned), impl)


@pytest.mark.spec("IOU-1")
@given(data=st.data(), batch=st.lists(st.integers(0, 3), max_size=2).map(tuple))
def test_box_area_matches_the_oracle(impl, device, data, batch):
    boxes = data.draw(box_arrays(batch))
    if data.draw(st.booleans()):
        boxes = boxes[..., [2, 1, 0, 3]]  # inverted: negative areas
    got = impl.get("box_area")(t(boxes, device))
    assert got.dtype == torch.float32
    assert_close(got, oracle.box_area(boxes), impl)


# detectron2's pairwise_iou and torchvision's box_iou, each against its own oracle.
FLAVOUR_IOUS = [
    pytest.param("pairwise_iou", oracle.pairwise_iou, id="detectron2",
                 marks=[pytest.mark.spec("IOU-16"), pytest.mark.flavour("detectron2")]),
    pytest.param("box_iou_torchvision", oracle.box_iou_torchvision, id="torchvision",
                 marks=[pytest.mark.spec("IOU-17"), pytest.mark.flavour("torchvision")]),
]


@pytest.mark.parametrize("name,expected", FLAVOUR_IOUS)
@given(pair=box_pairs())
def test_flavour_iou_matches_the_oracle(impl, device, name, expected, pair):
    b1, b2 = pair
    got = impl.get(name)(t(b1, device), t(b2, device))
    assert_close(got, expected(b1, b2), impl)


@pytest.mark.spec("IOU-2")
@pytest.mark.parametrize("shape,mode", [((7, 30011), "iou"), ((30011, 5), "iof"),
                                        ((9, 40000), "giou")])
def test_large_pairwise_overlaps_match_the_oracle_in_every_entry(impl, device, shape, mode):
    # Large enough that a chunked implementation crosses chunk boundaries on either side.
    # Every box holds a neighbourhood of the point (64, 64), so every pair overlaps and
    # an entry left unwritten (e.g. 0 in fresh memory) cannot pass for a right answer.
    rng = np.random.default_rng(7)
    m, n = shape

    def around_the_point(count):
        x1y1 = rng.integers(0, 64 * GRID, size=(count, 2))  # < 64
        x2y2 = rng.integers(64 * GRID + 1, 192 * GRID, size=(count, 2))  # > 64
        return np.concatenate([x1y1, x2y2], 1) / GRID

    b1, b2 = around_the_point(m), around_the_point(n)
    got = to_numpy(impl.get("box_iou")(t(b1, device), t(b2, device), mode=mode))
    assert got.shape == (m, n)
    # Every entry against the vectorised oracle, which is first checked against the loop.
    expected = oracle.box_iou_vectorised(b1, b2, mode)
    rows = np.concatenate([rng.integers(0, m, 200), [0, m - 1]])
    cols = np.concatenate([rng.integers(0, n, 200), [n - 1, 0]])
    looped = [oracle.overlap_pair(b1[i], b2[j], mode) for i, j in zip(rows, cols)]
    np.testing.assert_allclose(expected[rows, cols], looped, rtol=1e-12, atol=1e-12)
    assert_close(got, expected, impl)


# --------------------------------------------------------------------------- properties
@pytest.mark.spec("IOU-7")
@given(pair=box_pairs())
def test_iou_is_symmetric_and_in_unit_interval(impl, device, pair):
    b1, b2 = pair
    box_iou = impl.get("box_iou")
    forward = to_numpy(box_iou(t(b1, device), t(b2, device)))
    backward = to_numpy(box_iou(t(b2, device), t(b1, device)))
    assert_close(forward, backward.T, impl, rtol=0, atol=1e-6)
    assert np.all((forward >= 0) & (forward <= 1))


@pytest.mark.spec("IOU-7")
@given(pair=box_pairs(), mode=st.sampled_from(["iou", "iof"]))
def test_iou_and_iof_are_never_negative_even_for_inverted_boxes(impl, device, pair, mode):
    b1, b2 = pair
    b1 = b1[..., [2, 3, 0, 1]]  # inverted: x2 < x1 wherever the box has a width
    got = to_numpy(impl.get("box_iou")(t(b1, device), t(b2, device), mode=mode))
    assert np.all(np.isfinite(got)) and np.all(got >= 0)


@pytest.mark.spec("IOU-8")
@given(boxes=st.integers(1, 6).flatmap(lambda n: box_arrays((n,), min_size=1)),
       mode=st.sampled_from(MODES))
def test_box_with_itself_has_overlap_one(impl, device, boxes, mode):
    b = t(boxes, device)
    aligned = impl.get("box_iou")(b, b, mode=mode, is_aligned=True)
    assert_close(aligned, np.ones(len(boxes)), impl)
    pairwise = to_numpy(impl.get("box_iou")(b, b, mode=mode))
    assert_close(np.diag(pairwise), np.ones(len(boxes)), impl)


@pytest.mark.spec("IOU-9")
@given(pair=box_pairs(), mode=st.sampled_from(MODES),
       shift=st.tuples(st.integers(-400 * GRID, 400 * GRID), st.integers(-400 * GRID, 400 * GRID)))
def test_overlaps_are_translation_invariant(impl, device, pair, mode, shift):
    b1, b2 = pair
    offset = np.array(shift * 2) / GRID  # (dx, dy, dx, dy)
    box_iou = impl.get("box_iou")
    before = box_iou(t(b1, device), t(b2, device), mode=mode)
    after = box_iou(t(b1 + offset, device), t(b2 + offset, device), mode=mode)
    assert_close(after, to_numpy(before), impl)


@pytest.mark.spec("IOU-9")
@given(pair=box_pairs(min_size=1), mode=st.sampled_from(MODES),
       scale=st.sampled_from([0.25, 0.5, 2.0, 3.0, 10.0]))
def test_overlaps_are_scale_invariant(impl, device, pair, mode, scale):
    b1, b2 = pair
    box_iou = impl.get("box_iou")
    before = box_iou(t(b1, device), t(b2, device), mode=mode)
    after = box_iou(t(b1 * scale, device), t(b2 * scale, device), mode=mode)
    assert_close(after, to_numpy(before), impl)


@pytest.mark.spec("IOU-5")
@given(pair=aligned_pairs(), mode=st.sampled_from(MODES))
def test_aligned_result_is_the_diagonal_of_the_pairwise_result(impl, device, pair, mode):
    b1, b2 = pair
    box_iou = impl.get("box_iou")
    aligned = box_iou(t(b1, device), t(b2, device), mode=mode, is_aligned=True)
    pairwise = to_numpy(box_iou(t(b1, device), t(b2, device), mode=mode))
    assert tuple(aligned.shape) == (len(b1),)
    assert_close(aligned, np.diagonal(pairwise, axis1=-2, axis2=-1), impl)


@pytest.mark.spec("IOU-10")
@given(pair=box_pairs())
def test_giou_is_at_most_iou_and_within_minus_one_and_one(impl, device, pair):
    b1, b2 = pair
    box_iou = impl.get("box_iou")
    iou = to_numpy(box_iou(t(b1, device), t(b2, device)))
    giou = to_numpy(box_iou(t(b1, device), t(b2, device), mode="giou"))
    assert np.all(giou <= iou + 1e-6)
    assert np.all((giou >= -1 - 1e-6) & (giou <= 1 + 1e-6))


@pytest.mark.spec("IOU-10")
@given(pair=box_pairs())
def test_iof_is_at_least_iou(impl, device, pair):
    b1, b2 = pair
    box_iou = impl.get("box_iou")
    iou = to_numpy(box_iou(t(b1, device), t(b2, device)))
    iof = to_numpy(box_iou(t(b1, device), t(b2, device), mode="iof"))
    assert np.all(iof >= iou - 1e-6)
    assert np.all(iof <= 1 + 1e-6)


@pytest.mark.spec("IOU-15")
@given(pair=box_pairs(), mode=st.sampled_from(MODES))
def test_values_do_not_depend_on_whether_inputs_require_grad(impl, device, pair, mode):
    b1, b2 = pair
    box_iou = impl.get("box_iou")
    plain = box_iou(t(b1, device), t(b2, device), mode=mode)
    g1, g2 = t(b1, device).requires_grad_(), t(b2, device).requires_grad_()
    tracked = box_iou(g1, g2, mode=mode)
    assert_close(tracked, to_numpy(plain), impl, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- worked examples
@pytest.mark.parametrize("kwargs,table", [
    pytest.param({}, MMDET_DOC_IOU, id="iou", marks=pytest.mark.spec("IOU-2")),
    pytest.param({"mode": "iof"}, MMDET_DOC_IOF, id="iof", marks=pytest.mark.spec("IOU-3")),
    pytest.param({"mode": "giou"}, MMDET_DOC_GIOU, id="giou", marks=pytest.mark.spec("IOU-4")),
])
def test_mmdet_docstring_example_gives_hand_computed_overlaps(impl, device, kwargs, table):
    got = impl.get("box_iou")(t(MMDET_DOC_BOXES1, device), t(MMDET_DOC_BOXES2, device), **kwargs)
    assert tuple(got.shape) == (3, 3)
    assert_close(got, table, impl)


@pytest.mark.spec("IOU-5")
def test_mmdet_docstring_example_aligned_gives_the_diagonal(impl, device):
    box_iou = impl.get("box_iou")
    b1, b2 = t(MMDET_DOC_BOXES1, device), t(MMDET_DOC_BOXES2, device)
    for mode, table in (("iou", MMDET_DOC_IOU), ("iof", MMDET_DOC_IOF), ("giou", MMDET_DOC_GIOU)):
        got = box_iou(b1, b2, mode=mode, is_aligned=True)
        assert_close(got, np.diag(table), impl, what=f"mode={mode}")


@pytest.mark.spec("IOU-2")
def test_boxes_sharing_only_an_edge_have_zero_iou_and_half_overlap_gives_one_third(impl, device):
    box_iou = impl.get("box_iou")
    a = t([[0, 0, 2, 2]], device)
    others = t([[2, 0, 4, 2], [0, 2, 2, 4], [2, 2, 3, 3], [1, 0, 3, 2], [0, 0, 2, 1]], device)
    # touching edge, touching edge, touching corner, half overlap (2 / 6), half inside (2 / 4)
    assert_close(box_iou(a, others), [[0, 0, 0, 1 / 3, 1 / 2]], impl)
    assert_close(box_iou(a, others, mode="iof"), [[0, 0, 0, 1 / 2, 1 / 2]], impl)


@pytest.mark.spec("IOU-2")
def test_eps_is_the_floor_of_the_union(impl, device):
    box_iou = impl.get("box_iou")
    tiny = t([[0, 0, 0.0625, 0.0625]], device)  # area 1/256, exact in float32
    assert_close(box_iou(tiny, tiny, eps=0.25), [[(1 / 256) / 0.25]], impl)
    assert_close(box_iou(tiny, tiny, eps=1e-6), [[1.0]], impl)
    assert_close(box_iou(tiny, tiny, mode="iof", eps=0.25), [[(1 / 256) / 0.25]], impl)


@pytest.mark.spec("IOU-11")
@pytest.mark.parametrize("mode", MODES)
def test_zero_area_boxes_give_finite_zero(impl, device, mode):
    box_iou = impl.get("box_iou")
    degenerate = t([[5, 5, 5, 5], [0, 3, 10, 3], [4, 0, 4, 10], [5, 5, 5, 5]], device)
    proper = t([[0, 0, 10, 10], [20, 20, 30, 30]], device)
    for got in (box_iou(degenerate, degenerate, mode=mode),
                box_iou(degenerate, proper, mode=mode),
                box_iou(proper, degenerate, mode=mode)):
        values = to_numpy(got)
        assert np.all(np.isfinite(values)), values
        if mode != "giou":
            assert np.all(values == 0), values


@pytest.mark.spec("IOU-11")
def test_identical_zero_area_boxes_give_zero_not_nan(impl, device):
    box_iou = impl.get("box_iou")
    point = t([[3, 3, 3, 3]], device)
    for mode in MODES:
        assert_close(box_iou(point, point, mode=mode), [[0.0]], impl, what=mode)
        assert_close(box_iou(point, point, mode=mode, is_aligned=True), [0.0], impl, what=mode)


@pytest.mark.spec("IOU-11")
def test_inverted_boxes_give_zero_iou_and_iof(impl, device):
    box_iou = impl.get("box_iou")
    inverted = t([[10, 10, 0, 0], [5, 0, 0, 5]], device)
    proper = t([[0, 0, 10, 10], [2, 2, 4, 4]], device)
    for mode in ("iou", "iof"):
        assert_close(box_iou(inverted, proper, mode=mode), np.zeros((2, 2)), impl)
        assert_close(box_iou(proper, inverted, mode=mode), np.zeros((2, 2)), impl)
    assert np.all(np.isfinite(to_numpy(box_iou(inverted, proper, mode="giou"))))


@pytest.mark.spec("IOU-1")
def test_box_area_is_not_clamped_for_inverted_boxes(impl, device):
    got = impl.get("box_area")(t([[0, 0, 4, 3], [4, 0, 0, 3], [4, 3, 0, 0], [1, 1, 1, 9]], device))
    assert_close(got, [12, -12, 12, 0], impl)


@pytest.mark.spec("IOU-1")
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_box_area_keeps_leading_dims_and_dtype(impl, device, dtype):
    boxes = np.zeros((2, 3, 5, 4))
    boxes[..., 2:] = 2.0
    got = impl.get("box_area")(t(boxes, device, dtype))
    assert got.dtype == dtype and tuple(got.shape) == (2, 3, 5)
    assert got.device.type == device.type
    assert_close(got, np.full((2, 3, 5), 4.0), impl)


@pytest.mark.spec("IOU-16")
@pytest.mark.flavour("detectron2")
def test_detectron2_unit_square_example(impl, device):
    # detectron2's own test boxes; 0.25 / (1 + 1 - 0.25) = 1 / 7 for the shifted square.
    boxes1 = t([[0, 0, 1, 1], [0, 0, 1, 1]], device)
    boxes2 = t([[0, 0, 1, 1], [0, 0, 0.5, 1], [0, 0, 1, 0.5], [0, 0, 0.5, 0.5],
                [0.5, 0.5, 1, 1], [0.5, 0.5, 1.5, 1.5]], device)
    row = [1, 0.5, 0.5, 0.25, 0.25, 1 / 7]
    assert_close(impl.get("pairwise_iou")(boxes1, boxes2), [row, row], impl)


@pytest.mark.spec("IOU-16")
@pytest.mark.flavour("detectron2")
def test_detectron2_flavour_is_exactly_zero_without_intersection(impl, device):
    boxes = t([[0, 0, 2, 2], [2, 0, 4, 2], [1, 1, 1, 1], [1, 1, 1, 1], [6, 6, 5, 5]], device)
    got = to_numpy(impl.get("pairwise_iou")(boxes, boxes))
    expected = np.zeros((5, 5))
    expected[0, 0] = expected[1, 1] = 1.0
    np.testing.assert_array_equal(got, expected)


@pytest.mark.spec("IOU-16")
@pytest.mark.flavour("detectron2")
def test_detectron2_tiny_identical_boxes_have_iou_one_where_mmdet_clamps(impl, device):
    side = 2.0 ** -13  # area 2**-26 ~ 1.49e-8 < eps = 1e-6, exact in float32
    tiny = t([[0, 0, side, side]], device)
    assert_close(impl.get("pairwise_iou")(tiny, tiny), [[1.0]], impl)
    if impl.has("box_iou"):
        assert_close(impl.get("box_iou")(tiny, tiny), [[2.0 ** -26 / 1e-6]], impl)


@pytest.mark.spec("IOU-17")
@pytest.mark.flavour("torchvision")
def test_torchvision_flavour_is_nan_exactly_on_zero_union(impl, device):
    boxes = t([[3, 3, 3, 3], [0, 0, 2, 2], [2, 0, 4, 2]], device)
    got = to_numpy(impl.get("box_iou_torchvision")(boxes, boxes))
    assert np.isnan(got[0, 0])
    expected = np.array([[np.nan, 0, 0], [0, 1, 0], [0, 0, 1]])
    assert_close(got, expected, impl)


# --------------------------------------------------------------------------- empty inputs
@pytest.mark.spec("IOU-12")
@pytest.mark.parametrize("m,n", [(0, 3), (3, 0), (0, 0)])
@pytest.mark.parametrize("mode", MODES)
def test_empty_inputs_give_empty_results(impl, device, m, n, mode):
    box_iou = impl.get("box_iou")
    b1, b2 = t(np.zeros((m, 4)), device), t(np.ones((n, 4)), device)
    got = box_iou(b1, b2, mode=mode)
    assert tuple(got.shape) == (m, n) and got.dtype == torch.float32
    if m == n:
        assert tuple(box_iou(b1, b2, mode=mode, is_aligned=True).shape) == (0,)


@pytest.mark.spec("IOU-12")
def test_empty_batched_inputs_keep_batch_dims(impl, device):
    box_iou = impl.get("box_iou")
    b1, b2 = t(np.zeros((2, 3, 0, 4)), device), t(np.ones((2, 3, 5, 4)), device)
    assert tuple(box_iou(b1, b2).shape) == (2, 3, 0, 5)
    assert tuple(box_iou(b2, b1).shape) == (2, 3, 5, 0)
    assert tuple(box_iou(b1, b1, is_aligned=True).shape) == (2, 3, 0)


@pytest.mark.spec("IOU-12")
@pytest.mark.parametrize("name", ["pairwise_iou", "box_iou_torchvision"])
def test_flavour_functions_give_empty_results_for_empty_inputs(impl, device, name):
    fn = impl.get(name)
    assert tuple(fn(t(np.zeros((0, 4)), device), t(np.ones((4, 4)), device)).shape) == (0, 4)
    assert tuple(fn(t(np.ones((4, 4)), device), t(np.zeros((0, 4)), device)).shape) == (4, 0)


# --------------------------------------------------------------------------- dtypes & devices
@pytest.mark.spec("IOU-13")
@given(pair=box_pairs(), mode=st.sampled_from(MODES))
def test_float16_inputs_return_float16_close_to_the_float32_answer(impl, device, pair, mode):
    b1, b2 = pair  # the oracle sees the coordinates after rounding to float16
    h1, h2 = t(b1, device, torch.float16), t(b2, device, torch.float16)
    got = impl.get("box_iou")(h1, h2, mode=mode)
    assert got.dtype == torch.float16
    assert_close(got, oracle.box_iou(to_numpy(h1), to_numpy(h2), mode=mode), impl)


@pytest.mark.spec("IOU-13")
def test_float16_boxes_with_areas_beyond_the_float16_range_are_exact(impl, device):
    # Areas 160000 and 80000 overflow float16 (max 65504); the IoU is exactly 0.5.
    b1 = t([[0, 0, 400, 400]], device, torch.float16)
    b2 = t([[0, 0, 400, 200]], device, torch.float16)
    box_iou = impl.get("box_iou")
    assert_close(box_iou(b1, b2), [[0.5]], impl)
    assert_close(box_iou(b1, b2, mode="iof"), [[0.5]], impl)
    assert_close(box_iou(b1, b2, mode="giou", is_aligned=True), [0.5], impl)


@pytest.mark.spec("IOU-13")
def test_bfloat16_inputs_return_bfloat16(impl, device):
    b1 = t(MMDET_DOC_BOXES1, device, torch.bfloat16)
    b2 = t(MMDET_DOC_BOXES2, device, torch.bfloat16)
    got = impl.get("box_iou")(b1, b2, mode="giou")
    assert got.dtype == torch.bfloat16
    assert_close(got, MMDET_DOC_GIOU, impl)


@pytest.mark.spec("IOU-13")
@given(pair=box_pairs(), mode=st.sampled_from(MODES))
def test_float64_inputs_return_float64_matching_the_oracle_tightly(impl, device, pair, mode):
    b1, b2 = pair
    got = impl.get("box_iou")(t(b1, device, torch.float64), t(b2, device, torch.float64),
                              mode=mode)
    assert got.dtype == torch.float64
    assert_close(got, oracle.box_iou(b1, b2, mode=mode), impl)


@pytest.mark.spec("IOU-13")
@pytest.mark.parametrize("name", ["box_iou", "pairwise_iou", "box_iou_torchvision", "box_area"])
def test_result_lies_on_the_input_device(impl, device, name):
    fn = impl.get(name)
    b = t(MMDET_DOC_BOXES1, device)
    got = fn(b) if name == "box_area" else fn(b, b)
    assert got.device == b.device


# --------------------------------------------------------------------------- memory & autograd
@pytest.mark.spec("IOU-14")
@pytest.mark.parametrize("mode", ["iou", "giou"])
def test_pairwise_overlaps_stay_within_one_and_a_half_outputs_of_memory(impl, device, mode):
    box_iou = impl.get("box_iou")
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 1000, size=(100_100, 2))
    boxes = t(np.concatenate([xy, xy + rng.uniform(1, 300, size=xy.shape)], 1), device)
    gts, anchors = boxes[:100], boxes[100:]  # 100 x 100000 -> 40 MB of float32 output
    extra, result = peak_extra_bytes(lambda: box_iou(gts, anchors, mode=mode), device)
    output = result.numel() * result.element_size()
    assert tuple(result.shape) == (100, 100_000)
    assert extra <= 1.5 * output, f"peak grew by {extra / output:.2f}x the output's size"


@pytest.mark.spec("IOU-15")
def test_aligned_giou_gradients_match_finite_differences(impl, device):
    box_iou = impl.get("box_iou")
    # Partial overlap, disjoint, nested, crossing: no coordinates tie, no clamp is active.
    b1 = t([[0.0, 0.0, 4.0, 3.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 10.0, 10.0],
            [0.0, 2.0, 8.0, 4.0]], device, torch.float64).requires_grad_()
    b2 = t([[1.5, 1.0, 5.5, 4.5], [3.0, 2.5, 4.0, 6.0], [2.0, 3.0, 5.0, 7.0],
            [3.0, 0.5, 5.0, 7.5]], device, torch.float64).requires_grad_()
    for mode in MODES:
        assert torch.autograd.gradcheck(
            lambda x, y: box_iou(x, y, mode=mode, is_aligned=True), (b1, b2),
            eps=1e-6, atol=1e-6)


@pytest.mark.spec("IOU-15")
def test_pairwise_gradients_reach_both_inputs(impl, device):
    box_iou = impl.get("box_iou")
    b1 = t(MMDET_DOC_BOXES1, device).requires_grad_()
    b2 = t(MMDET_DOC_BOXES2, device).requires_grad_()
    box_iou(b1, b2, mode="giou").sum().backward()
    assert b1.grad is not None and b2.grad is not None
    assert torch.isfinite(b1.grad).all() and torch.isfinite(b2.grad).all()
    assert b1.grad.abs().sum() > 0 and b2.grad.abs().sum() > 0


# --------------------------------------------------------------------------- bad inputs
GOOD = [[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 3.0, 3.0]]


@pytest.mark.spec("IOU-V1")
@pytest.mark.parametrize("name", ["box_iou", "pairwise_iou", "box_iou_torchvision"])
def test_non_tensor_boxes_raise_type_error(impl, device, name):
    fn = impl.get(name)
    with pytest.raises(TypeError, match="boxes1"):
        fn(GOOD, t(GOOD, device))
    with pytest.raises(TypeError, match="boxes2"):
        fn(t(GOOD, device), np.asarray(GOOD))


@pytest.mark.spec("IOU-V1")
@pytest.mark.parametrize("name", ["box_iou", "pairwise_iou", "box_iou_torchvision"])
@pytest.mark.parametrize("bad_shape", [(2, 5), (2, 3), (4,), (0,)])
def test_wrong_box_shapes_raise_naming_the_argument(impl, device, name, bad_shape):
    fn = impl.get(name)
    bad, good = t(np.zeros(bad_shape), device), t(GOOD, device)
    raises_value_error(fn, bad, good, match="boxes1")
    raises_value_error(fn, good, bad, match="boxes2")


@pytest.mark.spec("IOU-V1")
def test_box_area_rejects_a_last_dim_other_than_four(impl, device):
    raises_value_error(impl.get("box_area"), t(np.zeros((3, 5)), device), match="boxes")
    raises_value_error(impl.get("box_area"), t(np.zeros(()), device), match="boxes")


@pytest.mark.spec("IOU-V1")
@pytest.mark.parametrize("name", ["pairwise_iou", "box_iou_torchvision"])
def test_flavour_functions_reject_batched_boxes(impl, device, name):
    batched = t(np.zeros((2, 3, 4)), device)
    raises_value_error(impl.get(name), batched, batched, match="boxes1")


@pytest.mark.spec("IOU-V2")
@pytest.mark.parametrize("name", ["box_iou", "pairwise_iou", "box_iou_torchvision"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_non_floating_boxes_raise_naming_the_argument(impl, device, name, dtype):
    fn = impl.get(name)
    good = t(GOOD, device)
    raises_value_error(fn, t(GOOD, device, dtype), good, match="boxes1")
    raises_value_error(fn, good, t(GOOD, device, dtype), match="boxes2")


@pytest.mark.spec("IOU-V2")
def test_box_area_rejects_integer_boxes(impl, device):
    raises_value_error(impl.get("box_area"), t(GOOD, device, torch.int64), match="boxes")


@pytest.mark.spec("IOU-V3")
def test_mismatched_dtypes_raise(impl, device):
    msg = raises_value_error(impl.get("box_iou"), t(GOOD, device, torch.float32),
                             t(GOOD, device, torch.float64))
    assert "float32" in msg and "float64" in msg, msg


@pytest.mark.spec("IOU-V3")
@pytest.mark.parametrize("name", ["box_iou", "pairwise_iou", "box_iou_torchvision"])
def test_mismatched_devices_raise(impl, device, name):
    # Without a second real device, the "meta" device stands in for the other one.
    other = torch.device("cpu") if device.type == "cuda" else torch.device("meta")
    msg = raises_value_error(impl.get(name), t(GOOD, device), t(GOOD, other))
    assert "device" in msg.lower(), msg


@pytest.mark.spec("IOU-V4")
def test_different_leading_dims_raise(impl, device):
    box_iou = impl.get("box_iou")
    raises_value_error(box_iou, t(np.zeros((2, 3, 4)), device), t(np.zeros((3, 3, 4)), device))
    raises_value_error(box_iou, t(np.zeros((2, 3, 4)), device), t(np.zeros((3, 4)), device))


@pytest.mark.spec("IOU-V5")
def test_aligned_with_different_counts_raises_naming_is_aligned(impl, device):
    raises_value_error(impl.get("box_iou"), t(np.zeros((3, 4)), device),
                       t(np.zeros((2, 4)), device), is_aligned=True, match="is_aligned")


@pytest.mark.spec("IOU-V6")
@pytest.mark.parametrize("mode", ["IoU", "diou", "", None])
def test_unknown_mode_raises_naming_mode(impl, device, mode):
    msg = raises_value_error(impl.get("box_iou"), t(GOOD, device), t(GOOD, device),
                             mode=mode, match="mode")
    assert repr(mode) in msg or str(mode) in msg, msg


@pytest.mark.spec("IOU-V7")
@pytest.mark.parametrize("name", ["box_iou", "pairwise_iou", "box_iou_torchvision"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_boxes_raise_naming_the_argument(impl, device, name, value):
    fn = impl.get(name)
    bad = np.array(GOOD)
    bad[1, 2] = value
    raises_value_error(fn, t(bad, device), t(GOOD, device), match="boxes1")
    raises_value_error(fn, t(GOOD, device), t(bad, device), match="boxes2")


@pytest.mark.spec("IOU-V7")
def test_box_area_propagates_non_finite_coordinates(impl, device):
    got = to_numpy(impl.get("box_area")(t([[0, 0, np.inf, 1], [0, 0, np.nan, 1]], device)))
    assert np.isinf(got[0]) and np.isnan(got[1])


@pytest.mark.spec("IOU-V8")
@pytest.mark.parametrize("eps", [0.0, -1e-6, float("nan"), float("inf")])
def test_bad_eps_raises_naming_eps(impl, device, eps):
    raises_value_error(impl.get("box_iou"), t(GOOD, device), t(GOOD, device), eps=eps,
                       match="eps")


# --------------------------------------------------------------------------- coordinate range
@pytest.mark.spec("IOU-18")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_overlaps_hold_up_to_the_guaranteed_coordinate_range(impl, device, dtype):
    # Half of a 2e18 x 2e18 box: the areas (4e36) are near float32's limit (3.4e38).
    e = 1e18
    b1 = torch.tensor([[-e, -e, e, e]], dtype=dtype, device=device)
    b2 = torch.tensor([[0.0, -e, e, e]], dtype=dtype, device=device)
    for mode, want in (("iou", 0.5), ("iof", 0.5), ("giou", 0.5)):
        got = impl.get("box_iou")(b1, b2, mode=mode)
        assert torch.isfinite(got).all() and abs(float(got) - want) < 1e-6, (mode, got)
    for name in ("pairwise_iou", "box_iou_torchvision"):
        got = impl.get(name)(b1, b2)
        assert abs(float(got) - 0.5) < 1e-6, (name, got)


@pytest.mark.spec("IOU-V9")
@pytest.mark.parametrize("name", ["box_iou", "pairwise_iou", "box_iou_torchvision"])
@pytest.mark.parametrize("scale", [1e20, -1e30])
def test_coordinates_beyond_the_guaranteed_range_raise(impl, device, name, scale):
    fn = impl.get(name)
    big = torch.tensor([[0.0, 0.0, scale, abs(scale)]], device=device)
    small = torch.tensor([[0.0, 0.0, 1.0, 1.0]], device=device)
    raises_value_error(fn, big, small, match="boxes1")
    raises_value_error(fn, small, big, match="boxes2")
