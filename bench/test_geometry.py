"""Geometry workloads: anchors, points, IoU, box coders."""

import pytest
import torch

from bench import workloads as W


def _close(a, b, atol=1e-4):
    if isinstance(a, (list, tuple)):
        for x, y in zip(a, b):
            _close(x, y, atol)
        return
    a, b = a.float().cpu(), b.float().cpu()
    ok = torch.isclose(a, b, atol=atol, rtol=1e-4) | (a.isnan() & b.isnan())
    assert ok.float().mean() > 0.999, "implementation result differs from the reference"


def test_retinanet_anchors_800x1216(bench_case, bench_device):
    def make(m):
        gen = m.AnchorGenerator(strides=W.RETINANET_STRIDES, ratios=[0.5, 1.0, 2.0],
                                octave_base_scale=4, scales_per_octave=3)
        return lambda: gen.grid_anchors(W.RETINANET_FEATMAPS, device=bench_device)
    # torchvision rounds its base anchors (a declared deviation): no value check.
    bench_case("anchors RetinaNet 800x1216 (182403)", make, output_bytes=182403 * 4 * 4)


def test_rtmdet_points_640(bench_case, bench_device):
    def make(m):
        gen = m.MlvlPointGenerator(W.RTMDET_STRIDES, offset=0.0)
        return lambda: gen.grid_priors(W.RTMDET_FEATMAPS, device=bench_device, with_stride=True)
    bench_case("points RTMDet 640 (8400)", make, check=_close, output_bytes=8400 * 4 * 4)


@pytest.mark.parametrize("num_gts", [100, 500])
def test_pairwise_iou(bench_case, bench_device, num_gts):
    anchors = W.retinanet_anchors(bench_device)
    gts = W.random_gts(num_gts, bench_device)

    def make(m):
        box_iou = m.box_iou  # looked up here, not inside the timed call
        return lambda: box_iou(gts, anchors)
    bench_case(f"pairwise IoU {num_gts} x 182403", make, check=_close,
               output_bytes=num_gts * anchors.shape[0] * 4, rounds=5)


def test_aligned_giou(bench_case, bench_device):
    anchors = W.retinanet_anchors(bench_device)
    shifted = anchors + 3.0

    def make(m):
        if m.bench_name == "torchvision":
            # Its adapter takes the diagonal of pairwise blocks (minutes a call): that
            # times the adapter, not a torchvision kernel, so the row says skipped.
            raise NotImplementedError("torchvision has no aligned IoU/GIoU kernel")
        box_iou = m.box_iou  # looked up here, not inside the timed call
        return lambda: box_iou(anchors, shifted, mode="giou", is_aligned=True)
    bench_case("aligned GIoU 182403 pairs", make, check=_close,
               output_bytes=anchors.shape[0] * 4, rounds=3)


def test_delta_encode(bench_case, bench_device):
    anchors = W.retinanet_anchors(bench_device)
    gts = anchors * 1.05 + 2

    def make(m):
        coder = m.DeltaXYWHBBoxCoder()
        return lambda: coder.encode(anchors, gts)
    bench_case("delta encode 182403", make, check=_close,
               output_bytes=anchors.shape[0] * 4 * 4)


def test_delta_decode(bench_case, bench_device):
    anchors = W.retinanet_anchors(bench_device)
    deltas = torch.randn(anchors.shape, generator=torch.Generator().manual_seed(0)).to(bench_device)

    def make(m):
        coder = m.DeltaXYWHBBoxCoder()
        return lambda: coder.decode(anchors, deltas, max_shape=(800, 1216))
    # torchvision's one-sided clamp differs on large negative deltas: compare loosely.
    bench_case("delta decode 182403", make, output_bytes=anchors.shape[0] * 4 * 4)


def test_distance_encode_decode(bench_case, bench_device):
    points = W.rtmdet_points(bench_device)[:, :2]
    g = torch.Generator().manual_seed(1)
    dist = (torch.rand(points.shape[0], 4, generator=g) * 100).to(bench_device)

    def make(m):
        decode, encode = m.distance2bbox, m.bbox2distance

        def run():
            return encode(points, decode(points, dist, max_shape=(640, 640)))
        return run
    bench_case("distance decode+encode 8400", make, check=_close,
               output_bytes=points.shape[0] * 4 * 4)
