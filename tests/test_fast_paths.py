"""Each fast path of the reference equals its readable version bit for bit.

The conformance suite checks the reference against the spec's oracles; these
tests pin that the optimisations (one-pass blocked assignment, in-place IoU
blocks) change no value, tie or index, with blocks far smaller than the default
so that every block boundary case is hit.
"""

from __future__ import annotations

import sys

import pytest
import torch

import reference  # noqa: F401

A = sys.modules["reference.assignment"]
B = sys.modules["reference.boxes"]


def _boxes(gen, n, grid):
    if grid:  # integer corners: many exactly tied IoUs
        xy = torch.randint(0, 50, (n, 2), generator=gen).float()
        wh = torch.randint(1, 20, (n, 2), generator=gen).float()
    else:
        xy = torch.rand(n, 2, generator=gen) * 100
        wh = torch.rand(n, 2, generator=gen) * 30 + 0.5
    return torch.cat([xy, xy + wh], 1)


def _readable_assign(assigner, priors, gts, ignore, labels):
    overlaps = B.box_iou(gts, priors)  # (G, N)
    if assigner.ignore_iof_thr > 0 and ignore is not None and ignore.numel():
        if assigner.ignore_wrt_candidates:
            ignore_max = B.box_iou(priors, ignore, mode="iof").amax(dim=1)
        else:
            ignore_max = B.box_iou(ignore, priors, mode="iof").amax(dim=0)
        overlaps[:, ignore_max > assigner.ignore_iof_thr] = -1
    return assigner._assign(overlaps, labels)


def _assert_same(fast, slow):
    assert torch.equal(fast.gt_inds, slow.gt_inds)
    assert torch.equal(fast.max_overlaps, slow.max_overlaps)
    assert (fast.labels is None) == (slow.labels is None)
    if fast.labels is not None:
        assert torch.equal(fast.labels, slow.labels)


CONFIGS = [
    dict(pos_iou_thr=0.5, neg_iou_thr=0.4),
    dict(pos_iou_thr=0.7, neg_iou_thr=(0.1, 0.3), min_pos_iou=0.3),
    dict(pos_iou_thr=0.5, neg_iou_thr=0.5, gt_max_assign_all=False),
    dict(pos_iou_thr=0.5, neg_iou_thr=0.4, match_low_quality=False),
    dict(pos_iou_thr=0.5, neg_iou_thr=0.4, ignore_iof_thr=0.5),
    dict(pos_iou_thr=0.5, neg_iou_thr=0.4, ignore_iof_thr=0.3, ignore_wrt_candidates=False,
         gt_max_assign_all=False),
]


@pytest.mark.parametrize("scan_elements", [200, 1 << 18])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("grid", [True, False])
def test_blocked_max_iou_assignment_equals_the_full_matrix_step_list(
        monkeypatch, scan_elements, dtype, grid):
    monkeypatch.setattr(A, "_SCAN_ELEMENTS", scan_elements)
    gen = torch.Generator().manual_seed(scan_elements + len(str(dtype)) + grid)
    for _ in range(2):
        num_gts = int(torch.randint(1, 25, (1,), generator=gen))
        num_priors = int(torch.randint(1, 300, (1,), generator=gen))
        gts, priors, ignore = _boxes(gen, num_gts, grid), _boxes(gen, num_priors, grid), \
            _boxes(gen, 3, grid)
        gts[0] = torch.tensor([500.0, 500, 510, 510])  # overlaps nothing: ties at 0 everywhere
        labels = torch.randint(0, 5, (num_gts,), generator=gen)
        gts, priors, ignore = gts.to(dtype), priors.to(dtype), ignore.to(dtype)
        for config in CONFIGS:
            assigner = A.MaxIoUAssigner(**config)
            _assert_same(assigner.assign(priors, gts, ignore, labels),
                         _readable_assign(assigner, priors, gts, ignore, labels))
            overlaps = B.box_iou(gts, priors)
            _assert_same(assigner.assign_wrt_overlaps(overlaps, labels),
                         assigner._assign(overlaps, labels))


def _grid_priors(step: int, sizes) -> torch.Tensor:
    """(N, 4) anchors of a 400 x 400 grid in row-major order, as anchor generators
    lay them out: each column block of the scan covers a narrow strip of the image."""
    centres = torch.arange(0, 400, step, dtype=torch.float32)
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")
    half = torch.tensor(sizes, dtype=torch.float32) / 2  # (S,)
    c = torch.stack([cx.flatten(), cy.flatten()], 1)[:, None, :]  # (L, 1, 2)
    return torch.cat([c - half[:, None], c + half[:, None]], 2).reshape(-1, 4)  # (L*S, 4)


@pytest.mark.parametrize("scan_elements", [48 * 300, 1 << 19])
@pytest.mark.parametrize("grid", [True, False])
def test_culled_scan_blocks_of_max_iou_equal_the_full_matrix_step_list(
        monkeypatch, scan_elements, grid):
    """With >= 32 gts and anchors in grid order the scan's blocks compute only the
    pairs that can intersect (boxes.iou_into culls); the assignment is unchanged."""
    monkeypatch.setattr(A, "_SCAN_ELEMENTS", scan_elements)
    culled, cull = [], [True]
    fill = B._fill_iou_of_meeting_pairs

    def spy(*args):  # records the culled fills; off for the readable side
        culled.append(cull[0] and fill(*args))
        return culled[-1]

    def readable(*args):
        cull[0] = False
        try:
            return _readable_assign(*args)  # every pair computed
        finally:
            cull[0] = True

    monkeypatch.setattr(B, "_fill_iou_of_meeting_pairs", spy)
    gen = torch.Generator().manual_seed(scan_elements + grid)
    priors = _grid_priors(8, [12.0, 24.0, 40.0])  # (7500, 4)
    for num_gts in (32, 48):
        gts = _boxes(gen, num_gts, grid) * 6  # spread over the 400 x 400 grid
        gts[0] = torch.tensor([500.0, 500, 510, 510])  # overlaps nothing: ties at 0
        gts[1] = priors[1234]  # exactly one prior's box: IoU 1 there
        labels = torch.randint(0, 5, (num_gts,), generator=gen)
        ignore = _boxes(gen, 3, grid) * 6
        for config in CONFIGS:
            assigner = A.MaxIoUAssigner(**config)
            _assert_same(assigner.assign(priors, gts, ignore, labels),
                         readable(assigner, priors, gts, ignore, labels))
    assert any(culled), "the culled fill never ran: the test no longer covers it"


@pytest.mark.parametrize("scan_elements", [100, 1 << 18])
def test_blocked_matchers_equal_the_full_matrix_reductions(monkeypatch, scan_elements):
    monkeypatch.setattr(A, "_SCAN_ELEMENTS", scan_elements)
    gen = torch.Generator().manual_seed(scan_elements)
    for grid in (True, False):
        quality = B.pairwise_iou(_boxes(gen, 9, grid), _boxes(gen, 400, grid))  # (G, N)
        quality[3] = 0  # a gt overlapping nothing: every prior is at its maximum
        best_vals, best_gt = quality.max(dim=0)
        at_some_max = (quality == quality.amax(dim=1, keepdim=True)).any(dim=0)
        matcher = A.Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)
        matches, labels = matcher(quality)
        expected = A._label_by_thresholds(best_vals, matcher.thresholds, matcher.labels)
        expected[at_some_max] = 1
        assert torch.equal(matches, best_gt) and torch.equal(labels, expected)
        tv = A.TorchvisionMatcher(0.7, 0.3, allow_low_quality_matches=True)(quality)
        band = torch.where(best_vals >= 0.7, best_gt, torch.where(best_vals < 0.3, -1, -2))
        band[at_some_max] = best_gt[at_some_max]
        assert torch.equal(tv, band)


@pytest.mark.parametrize("flavour, public", [
    (B.MMDET_IOU, B.box_iou), (B.DETECTRON2_IOU, B.pairwise_iou),
    (B.TORCHVISION_IOU, B.box_iou_torchvision)])
@pytest.mark.parametrize("chunk", [3, 1 << 17])
def test_in_place_iou_blocks_equal_the_readable_formula(monkeypatch, flavour, public, chunk):
    monkeypatch.setattr(B, "_CHUNK_ELEMENTS", chunk)
    gen = torch.Generator().manual_seed(chunk)
    a, b = _boxes(gen, 40, True), _boxes(gen, 300, False)
    a[0] = a[1] = torch.tensor([5.0, 5, 5, 5])  # zero-area boxes: 0 / 0 in the union
    b[:2] = a[:2]
    eps = 1e-6 if flavour is B.MMDET_IOU else 0.0
    for x, y in ((a, b), (b, a)):
        expected = B._overlap_of_broadcast_boxes(x[:, None, :], y[None, :, :], "iou", eps, flavour)
        assert torch.equal(public(x, y).nan_to_num(-7), expected.nan_to_num(-7))


def _boxes_in_rows(gen, n):
    """Boxes in raster order (row by row, as anchors are): the pair culling's case."""
    centres = torch.stack(torch.meshgrid(torch.arange(0.0, 200, 10), torch.arange(0.0, 200, 10),
                                         indexing="ij"), -1).reshape(-1, 2).flip(1)  # (400, 2)
    centres = centres.repeat_interleave(3, 0)[:n]  # three boxes a location
    half = torch.randint(1, 12, (centres.shape[0], 2), generator=gen).float()
    return torch.cat([centres - half, centres + half], 1)  # (n, 4), integer corners


@pytest.mark.parametrize("flavour, public", [
    (B.MMDET_IOU, B.box_iou), (B.DETECTRON2_IOU, B.pairwise_iou),
    (B.TORCHVISION_IOU, B.box_iou_torchvision)])
@pytest.mark.parametrize("block", [4, 64])
def test_culled_iou_equals_the_readable_formula_bit_for_bit(monkeypatch, flavour, public, block):
    monkeypatch.setattr(B, "_PAIR_BLOCK", block)
    calls = []
    original = B._fill_iou_of_meeting_pairs
    monkeypatch.setattr(B, "_fill_iou_of_meeting_pairs",
                        lambda *args: calls.append(original(*args)) or calls[-1])
    gen = torch.Generator().manual_seed(block)
    priors = _boxes_in_rows(gen, 1195)  # a tail of 1195 % block columns
    priors[5] = torch.tensor([3.0, 3, 3, 3])  # zero area: 0 / 0 against the gt below
    priors[700] = torch.tensor([9.0, 9, 4, 4])  # inverted: negative area
    gts = _boxes(gen, 40, True) * 3
    gts[0] = torch.tensor([3.0, 3, 3, 3])  # zero area, also at the tail's priors
    gts[1] = torch.tensor([80.0, 80, 60, 60])  # inverted
    gts[2] = priors[10]  # exactly one prior's box: IoU 1
    priors[-1] = gts[0]
    eps = 1e-6 if flavour is B.MMDET_IOU else 0.0
    expected = B._overlap_of_broadcast_boxes(gts[:, None, :], priors[None, :, :], "iou", eps,
                                             flavour)
    got = public(gts, priors)
    assert calls == [True], "the culled path was not taken"
    assert torch.equal(got.nan_to_num(-7), expected.nan_to_num(-7))
    assert torch.equal(got.signbit(), expected.signbit())  # +0 and -0 too
    assert 0 < (expected != 0).float().mean() < 0.5  # most pairs culled, some kept


def test_culled_iou_stays_within_iou_14s_bound():
    from conformance.checks import peak_extra_bytes

    from golden.inputs import retinanet_anchors

    anchors = retinanet_anchors()  # (182403, 4), in raster order
    gen = torch.Generator().manual_seed(0)
    wh = torch.rand(100, 2, generator=gen) * 300 + 16
    xy = torch.rand(100, 2, generator=gen) * (torch.tensor([1216.0, 800]) - wh)
    gts = torch.cat([xy, xy + wh], 1)
    calls = []
    original = B._fill_iou_of_meeting_pairs
    B._fill_iou_of_meeting_pairs = lambda *args: calls.append(original(*args)) or calls[-1]
    try:
        extra, result = peak_extra_bytes(lambda: B.box_iou(gts, anchors), torch.device("cpu"))
    finally:
        B._fill_iou_of_meeting_pairs = original
    assert calls == [True]
    assert extra <= 1.5 * result.numel() * result.element_size()
