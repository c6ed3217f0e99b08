"""Conformance of RoIAlign, RoI-to-level mapping and multi-level pooling (SPEC.md ROI-*)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.checks import assert_close, raises_value_error, tensor
from oracles import roi as oracle
from conformance.strategies_postprocess import eighth_grid_boxes

pytestmark = pytest.mark.component("roi")

FLAVOURS = ("mmdet", "detectron2", "torchvision")


@st.composite
def roi_align_case(draw):
    """Features (N, C, H, W) float64, rois (K, 5) with boxes inside the image."""
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    h, w = draw(st.integers(2, 7)), draw(st.integers(2, 7))
    scale = draw(st.sampled_from([1.0, 0.5, 0.25]))
    values = draw(st.lists(st.integers(-8, 8), min_size=n * c * h * w, max_size=n * c * h * w))
    features = np.array(values, dtype=np.float64).reshape(n, c, h, w) / 4
    # Image-space boxes inside [0, W/scale - 1] so no sample point reaches the
    # out-of-map boundary (pinned by worked examples instead).
    boxes = draw(eighth_grid_boxes(0, 4, 0, min(h, w) / scale - 1, 6 / scale))
    batch = draw(st.lists(st.integers(0, n - 1), min_size=len(boxes), max_size=len(boxes)))
    rois = np.concatenate([np.array(batch, dtype=np.float64).reshape(-1, 1), boxes], axis=1)
    out = draw(st.sampled_from([(1, 1), (2, 2), (3, 2)]))
    ratio = draw(st.sampled_from([-1, 0, 1, 2]))
    aligned = draw(st.booleans())
    return features, rois, out, scale, ratio, aligned


def _arange_map(device, dtype=torch.float32):
    return torch.arange(25, dtype=dtype, device=device).reshape(1, 1, 5, 5)


# --------------------------------------------------------------------------- RoIAlign
@pytest.mark.spec("ROI-1")
@given(case=roi_align_case())
def test_roi_align_averages_bilinear_samples_of_each_bin(impl, device, case):
    roi_align = impl.get("roi_align")
    features, rois, out, scale, ratio, aligned = case
    actual = roi_align(tensor(features, device), tensor(rois, device), out, scale, ratio, aligned)
    expected = oracle.roi_align(features, rois, out[0], out[1], scale, ratio, aligned)
    assert_close(actual, expected, what="pooled features")


@pytest.mark.spec("ROI-2")
@pytest.mark.parametrize("aligned, first_rows", [
    (False, [[7.5, 8, 8.5, 9], [10, 10.5, 11, 11.5]]),
    (True, [[4.5, 5, 5.5, 6], [7, 7.5, 8, 8.5]]),
])
def test_roi_align_on_a_5x5_ramp_gives_the_detectron2_numbers(impl, device, aligned, first_rows):
    roi_align = impl.get("roi_align")
    rois = tensor([[0, 1, 1, 3, 3]], device)
    out = roi_align(_arange_map(device), rois, 4, 1.0, 0, aligned)
    # The map is linear (5 y + x), so every row steps by 2.5 and every column by 0.5.
    start = first_rows[0][0]
    expected = start + 2.5 * np.arange(4)[:, None] + 0.5 * np.arange(4)[None, :]
    assert_close(out[0, 0, :2], np.array(first_rows, dtype=np.float64))
    assert_close(out, expected[None, None])


@pytest.mark.spec("ROI-3")
def test_roi_align_reads_zero_beyond_one_pixel_and_the_border_within_it(impl, device):
    roi_align = impl.get("roi_align")
    fmap = _arange_map(device)
    # Entirely beyond the margin: every sample has x > W = 5.
    far = roi_align(fmap, tensor([[0, 6.5, 1, 8.5, 3]], device), 2, 1.0, 2, False)
    assert_close(far, np.zeros((1, 1, 2, 2)))
    edge = roi_align(fmap, tensor([[0, 4.5, 0, 5.0, 2]], device), (2, 1), 1.0, 1, False)
    # roi width clamps to 1 (aligned=False): x sample = 4.5 + 0.5 = 5.0 -> column 4.
    assert_close(edge, np.array([[[[5 * 0.5 + 4], [5 * 1.5 + 4]]]]))
    # Negative coordinates within the margin clamp to 0.
    # Negative coordinates within the margin clamp to 0: x = -0.5 -> 0, y = 1.5.
    neg = roi_align(fmap, tensor([[0, -1, 1, 0, 2]], device), 1, 1.0, 1, False)
    assert_close(neg, np.array([[[[7.5]]]]))


@pytest.mark.spec("ROI-4")
def test_unaligned_roi_align_clamps_a_degenerate_roi_to_one_pixel(impl, device):
    roi_align = impl.get("roi_align")
    rois = tensor([[0, 1, 1, 1, 1]], device)
    fmap = _arange_map(device)
    # aligned=False: 1x1 RoI from (1,1); samples at 1.25 and 1.75 -> mean (1.5, 1.5) -> 9.
    assert_close(roi_align(fmap, rois, 1, 1.0, 2, False), np.array([[[[9.0]]]]))
    # aligned=True: a 0x0 RoI at (0.5, 0.5): adaptive sampling takes no sample -> 0;
    # two samples per side all land on (0.5, 0.5) -> 5 * 0.5 + 0.5 = 3.
    assert_close(roi_align(fmap, rois, 1, 1.0, 0, True), np.array([[[[0.0]]]]))
    assert_close(roi_align(fmap, rois, 1, 1.0, 2, True), np.array([[[[3.0]]]]))


@pytest.mark.spec("ROI-5")
def test_roi_align_of_no_rois_is_empty_with_the_pooled_shape(impl, device):
    roi_align = impl.get("roi_align")
    out = roi_align(torch.zeros((2, 3, 5, 5), device=device), torch.zeros((0, 5), device=device),
                    (2, 4), 0.5, 0, True)
    assert tuple(out.shape) == (0, 3, 2, 4)


@pytest.mark.spec("ROI-6")
@pytest.mark.parametrize("case", ["input_3d", "rois_4_cols", "rois_float64", "rois_nan",
                                  "batch_out_of_range", "output_size_zero"])
def test_roi_align_rejects_malformed_input(impl, device, case):
    roi_align = impl.get("roi_align")
    fmap = torch.zeros((1, 2, 5, 5), device=device)
    rois = tensor([[0, 1, 1, 3, 3]], device)
    size = 2
    if case == "input_3d":
        fmap = fmap[0]
    elif case == "rois_4_cols":
        rois = rois[:, 1:]
    elif case == "rois_float64":
        rois = rois.double()
    elif case == "rois_nan":
        rois[0, 3] = float("nan")
    elif case == "batch_out_of_range":
        rois[0, 0] = 1
    elif case == "output_size_zero":
        size = 0
    raises_value_error(roi_align, fmap, rois, size, 1.0, 0, True)


@pytest.mark.spec("ROI-7")
@given(case=roi_align_case())
def test_roi_align_reference_and_fast_path_agree(impl, device, case):
    roi_align, roi_align_reference = impl.get("roi_align"), impl.get("roi_align_reference")
    features, rois, out, scale, ratio, aligned = case
    f, r = tensor(features, device), tensor(rois, device)
    assert_close(roi_align_reference(f, r, out, scale, ratio, aligned),
                 roi_align(f, r, out, scale, ratio, aligned).detach().cpu().double().numpy())


@pytest.mark.spec("ROI-7")
@pytest.mark.parametrize("aligned, ratio", [(False, 2), (True, 0), (True, -1)])
def test_roi_align_reference_passes_gradcheck_in_float64(impl, device, aligned, ratio):
    roi_align_reference = impl.get("roi_align_reference")
    gen = torch.Generator().manual_seed(3)
    fmap = torch.rand((2, 2, 6, 7), generator=gen, dtype=torch.float64).to(device)
    fmap.requires_grad_(True)
    rois = tensor([[0, 0.3, 0.7, 4.2, 5.1], [1, 2.5, 1.25, 3.0, 2.0], [1, -0.6, 3.3, 6.4, 6.8]],
                  device, torch.float64)
    assert torch.autograd.gradcheck(
        lambda x: roi_align_reference(x, rois, (2, 3), 1.0, ratio, aligned), (fmap,),
        eps=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- level mapping
@st.composite
def boxes_of_many_scales(draw):
    n = draw(st.integers(0, 8))
    rows = []
    for _ in range(n):
        x, y = draw(st.integers(-50, 500)), draw(st.integers(-50, 500))
        w = draw(st.floats(0.5, 1200, allow_nan=False)) // 0.125 * 0.125
        h = draw(st.floats(0.5, 1200, allow_nan=False)) // 0.125 * 0.125
        rows.append([x, y, x + w, y + h])
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


@pytest.mark.spec("ROI-8")
@pytest.mark.parametrize("flavour", FLAVOURS)
@given(boxes=boxes_of_many_scales())
def test_rois_map_to_levels_by_the_flavour_formula(impl, device, flavour, boxes):
    map_rois_to_levels = impl.get("map_rois_to_levels")
    levels = map_rois_to_levels(tensor(boxes, device, torch.float64), flavour, 2, 5)
    assert levels.dtype == torch.int64 and tuple(levels.shape) == (len(boxes),)
    assert levels.tolist() == [oracle.fpn_level(b, flavour, 2, 5) for b in boxes]


# s = 112, 224, 448 map to P3, P4, P5 (index 1, 2, 3 from P2); just below, the
# epsilons decide: detectron2's 1e-8 inside the log drops a level at s - 1e-5,
# mmdet's 1e-6 (inside, relative to 56) and torchvision's 1e-6 (after) do not.
_BOUNDARY_TABLE = {
    #              s:   112  224  448  s-1e-5 (x3)  s-1e-3 (x3)
    "mmdet":       [1, 2, 3, 1, 2, 3, 0, 1, 2],
    "torchvision": [1, 2, 3, 1, 2, 3, 0, 1, 2],
    # detectron2 computes on float32 Boxes (structures/boxes.py:150): s - 1e-5 keeps
    # its level there too, though float64 arithmetic would drop one.
    "detectron2":  [1, 2, 3, 1, 2, 3, 0, 1, 2],
}


@pytest.mark.spec("ROI-9")
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_level_mapping_at_and_just_below_each_boundary(impl, device, flavour):
    map_rois_to_levels = impl.get("map_rois_to_levels")
    sides = [112.0, 224.0, 448.0] + [s - 1e-5 for s in (112, 224, 448)] + \
        [s - 1e-3 for s in (112, 224, 448)]
    boxes = tensor([[10, 20, 10 + s, 20 + s] for s in sides], device, torch.float64)
    assert map_rois_to_levels(boxes, flavour, 2, 5).tolist() == _BOUNDARY_TABLE[flavour]
    # float32 at the boundaries themselves (exact) and clearly below them.
    f32 = tensor([[0, 0, s, s] for s in (112, 224, 448, 111.5, 223.5, 447.5)], device)
    assert map_rois_to_levels(f32, flavour, 2, 5).tolist() == [1, 2, 3, 0, 1, 2]


@pytest.mark.spec("ROI-11")
def test_mmdet_level_is_floored_before_the_level_is_added(impl, device):
    # float32: s = sqrt(12543.986) = 111.99994, log2(s / 56 + 1e-6) = 0.99999994. mmdet
    # floors it (0: P2); floor(2 + 0.99999994) would be floor(3.0) = 1 (P3).
    boxes = tensor([[0, 0, 1, 12543.986328125], [0, 0, 2, 6271.9931640625]], device)
    assert impl.get("map_rois_to_levels")(boxes, "mmdet", 2, 5).tolist() == [0, 0]
    # detectron2 and torchvision add their level 4 first, as upstream does.
    big = tensor([[0, 0, 1, 50175.9453125]], device)  # s = 223.99988, just below 224
    s = torch.sqrt(big[:, 2] * big[:, 3])
    for flavour, expected in (("detectron2", torch.floor(4 + torch.log2(s / 224 + 1e-8))),
                              ("torchvision", torch.floor(4 + torch.log2(s / 224)
                                                          + torch.tensor(1e-6)))):
        level = impl.get("map_rois_to_levels")(big, flavour, 2, 5)
        assert level.tolist() == [int(expected.clamp(2, 5).item()) - 2]


@pytest.mark.spec("ROI-11")
def test_detectron2_level_is_computed_on_float32_boxes(impl, device):
    # detectron2's Boxes casts to float32 (structures/boxes.py:150) before
    # assign_boxes_to_levels: the float64 height 50175.9981 becomes 50176.0, s = 224,
    # P4; the same formula in float64 gives s/224 + 1e-8 = 1 - 8.9e-9, P3.
    box = tensor([[0, 0, 1, 50175.9981]], device, torch.float64)
    assert impl.get("map_rois_to_levels")(box, "detectron2", 2, 5).tolist() == [2]
    s = torch.sqrt(box[:, 2] * box[:, 3])
    assert torch.floor(4 + torch.log2(s / 224 + 1e-8)).item() == 3.0  # float64 arithmetic


@pytest.mark.spec("ROI-8")
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_level_mapping_clamps_tiny_and_huge_boxes(impl, device, flavour):
    map_rois_to_levels = impl.get("map_rois_to_levels")
    boxes = tensor([[0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 5000, 5000]], device)
    assert map_rois_to_levels(boxes, flavour, 2, 5).tolist() == [0, 0, 3]


# --------------------------------------------------------------------------- pooler
_POOLER_SETTINGS = {  # flavour: (sampling_ratio, aligned) as upstream configures them
    "mmdet": (0, True),
    "detectron2": (0, True),
    "torchvision": (2, False),
}


@pytest.mark.spec("ROI-10")
@pytest.mark.parametrize("flavour", FLAVOURS)
@settings(max_examples=10)
@given(data=st.data())
def test_multi_level_pooler_pools_each_roi_from_its_level(impl, device, flavour, data):
    pooler_cls = impl.get("MultiLevelRoIPooler")
    ratio, aligned = _POOLER_SETTINGS[flavour]
    scales = (1 / 4, 1 / 8, 1 / 16, 1 / 32)
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 1000)))
    # A 256 x 256 image with 2 images, 3 channels: maps 64, 32, 16, 8.
    features = [torch.rand((2, 3, 256 // s, 256 // s), generator=gen) for s in (4, 8, 16, 32)]
    sides = data.draw(st.lists(st.sampled_from([20.0, 60.0, 111.0, 113.0, 230.0, 250.0]),
                               min_size=0, max_size=6))
    # Images alternate and top edges are out of order, so an implementation that
    # pools in another order (by image, by level, by position) must put rows back.
    tops = [5.0 + 4.0 * ((5 * i) % 6) for i in range(len(sides))]
    rois = np.array([[i % 2, 3.0, y, 3.0 + s, y + s * 0.9]
                     for i, (s, y) in enumerate(zip(sides, tops))],
                    dtype=np.float64).reshape(-1, 5)
    pooler = pooler_cls(output_size=3, scales=scales, sampling_ratio=ratio, aligned=aligned,
                        mapping=flavour)
    out = pooler([f.to(device) for f in features], tensor(rois, device))
    assert tuple(out.shape) == (len(rois), 3, 3, 3)
    for k, roi in enumerate(rois):
        level = oracle.fpn_level(roi[1:], flavour, 2, 5)
        expected = oracle.roi_align(features[level].double().numpy(), roi[None], 3, 3,
                                    scales[level], ratio, aligned)
        assert_close(out[k:k + 1], expected, what=f"roi {k} (level P{level + 2})")


@pytest.mark.spec("ROI-5")
def test_multi_level_pooler_of_no_rois_is_empty(impl, device):
    pooler_cls = impl.get("MultiLevelRoIPooler")
    pooler = pooler_cls(output_size=7, scales=(1 / 4, 1 / 8), sampling_ratio=0, aligned=True,
                        mapping="detectron2")
    features = [torch.zeros((1, 5, 16, 16), device=device), torch.zeros((1, 5, 8, 8),
                                                                        device=device)]
    out = pooler(features, torch.zeros((0, 5), device=device))
    assert tuple(out.shape) == (0, 5, 7, 7)


# --------------------------------------------------------------------------- edges
@pytest.mark.spec("ROI-8")
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_inverted_boxes_map_to_the_first_level(impl, device, flavour):
    map_rois_to_levels = impl.get("map_rois_to_levels")
    boxes = tensor([[10, 10, 0, 0], [0, 10, 500, 0], [0, 0, 500, 500]], device)
    levels = map_rois_to_levels(boxes, flavour, 2, 5).tolist()
    assert levels[:2] == [0, 0] and 0 <= levels[2] <= 3


@pytest.mark.spec("ROI-8")
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_boxes_have_no_level_and_raise(impl, device, bad):
    map_rois_to_levels = impl.get("map_rois_to_levels")
    raises_value_error(map_rois_to_levels, tensor([[0, 0, bad, 5]], device), "mmdet", 2, 5,
                       match="boxes")
    pooler = impl.get("MultiLevelRoIPooler")(output_size=2, scales=(1 / 4, 1 / 8))
    features = [torch.ones((1, 2, 8, 8), device=device), torch.ones((1, 2, 4, 4), device=device)]
    raises_value_error(pooler, features, tensor([[0, 0, 0, bad, 5]], device), match="rois")


@pytest.mark.spec("ROI-8")
def test_pooler_pools_an_inverted_roi_from_the_first_level_not_zeros(impl, device):
    pooler = impl.get("MultiLevelRoIPooler")(output_size=2, scales=(1 / 4, 1 / 8),
                                             sampling_ratio=2, aligned=True)
    features = [torch.ones((1, 2, 8, 8), device=device), torch.full((1, 2, 4, 4), 2.0, device=device)]
    out = pooler(features, tensor([[0, 12, 0, 4, 8]], device))  # x2 < x1: a negative area
    assert torch.equal(out.cpu(), torch.ones((1, 2, 2, 2))), out
