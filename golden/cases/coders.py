"""Golden cases for the box coders, at the seeds' real sizes.

- mmdet RetinaNet: the 182403 anchors of an 800x1216 input (P3..P7 of 100x152,
  50x76, 25x38, 13x19, 7x10; 9 anchors per location) encoded against fixed gts,
  and decoded from a deterministic sweep of deltas that crosses the dw/dh clamp,
  clipped to the image.
- detectron2 ROI head: class-specific decode (K = 3) with weights (10, 10, 5, 5).
- RTMDet: the 8400 point priors of a 640x640 input, distance encode / decode.
- Hand-checkable worked examples.

Inputs are built with plain torch, here and in ``_inputs.py`` (never with the
implementation). Big
outputs are summarised: 256 evenly spaced rows and column means (in float64).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from oracles import coders as oracle
from golden.case import GoldenCase, sampled_rows
from golden.inputs import (FIRST_P3_ANCHOR, IMAGE_800x1216, SAMPLES, column_means,
                                  retinanet_anchors, rtmdet_points, sample_index)

GTS_800x1216 = [
    [100.0, 120.0, 300.0, 400.0],
    [500.0, 50.0, 900.0, 350.0],
    [20.0, 600.0, 180.0, 790.0],
    [700.0, 450.0, 1200.0, 780.0],
    [400.0, 300.0, 460.0, 340.0],
    [0.0, 0.0, 1216.0, 800.0],
]
GTS_640 = [[32.0, 48.0, 200.0, 300.0], [300.0, 100.0, 620.0, 400.0], [0.0, 500.0, 640.0, 640.0]]


# --------------------------------------------------------------------------- inputs (plain torch)
def matched_gts(num: int, gts) -> torch.Tensor:
    """(num, 4): row i is gts[i % len(gts)]."""
    g = torch.tensor(gts, dtype=torch.float32)
    return g[torch.arange(num) % len(g)]


def delta_sweep(num: int, columns: int, bound: float = 6.0) -> torch.Tensor:
    """(num, columns) float32 deltas in [-bound, bound), a golden-ratio sweep."""
    i = torch.arange(num * columns, dtype=torch.float64)
    return (((i * 0.6180339887) % 1.0) * 2 * bound - bound).float().reshape(num, columns)


# --------------------------------------------------------------------------- mmdet RetinaNet
def _run_retinanet(impl, device):
    anchors = retinanet_anchors().to(device)
    gts = matched_gts(len(anchors), GTS_800x1216).to(device)
    coder = impl.DeltaXYWHBBoxCoder()  # RetinaNet: means 0, stds 1
    deltas = coder.encode(anchors, gts)  # (182403, 4)
    pred = delta_sweep(len(anchors), 4).to(device)
    boxes = coder.decode(anchors, pred, max_shape=IMAGE_800x1216)  # (182403, 4)
    return {
        "num_anchors": np.array([len(anchors)], dtype=np.int64),
        "anchor_rows": sampled_rows(anchors, SAMPLES),
        "delta_rows": sampled_rows(deltas, SAMPLES),
        "delta_means": column_means(deltas),
        "decoded_rows": sampled_rows(boxes, SAMPLES),
        "decoded_means": column_means(boxes),
    }


def _check_retinanet(out) -> None:
    # Upstream facts (upstream-semantics.md): 182403 anchors; first P3 anchor.
    assert int(out["num_anchors"][0]) == 182403
    np.testing.assert_allclose(out["anchor_rows"][0], FIRST_P3_ANCHOR,
                               atol=1e-4)
    # The loop oracle on the sampled rows.
    anchors = retinanet_anchors().double().numpy()
    gts = matched_gts(len(anchors), GTS_800x1216).double().numpy()
    pred = delta_sweep(len(anchors), 4).double().numpy()
    idx = sample_index(len(anchors))
    np.testing.assert_allclose(out["delta_rows"], oracle.delta_encode(anchors[idx], gts[idx]),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        out["decoded_rows"],
        oracle.delta_decode(anchors[idx], pred[idx], max_shape=IMAGE_800x1216),
        rtol=1e-5, atol=2e-3,
    )
    # Means over all rows against a vectorised float64 NumPy encode.
    pc, gc = (anchors[:, :2] + anchors[:, 2:]) / 2, (gts[:, :2] + gts[:, 2:]) / 2
    ps, gs = anchors[:, 2:] - anchors[:, :2], gts[:, 2:] - gts[:, :2]
    full = np.concatenate([(gc - pc) / ps, np.log(gs / ps)], axis=1)
    np.testing.assert_allclose(out["delta_means"], full.mean(axis=0), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- detectron2 ROI head
ROI_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def _proposals() -> torch.Tensor:
    """(1000, 4) proposals: every 182nd RetinaNet anchor, clipped to the image."""
    a = retinanet_anchors()[::182][:1000]
    return torch.stack([a[:, 0].clamp(0, 1215), a[:, 1].clamp(0, 799),
                        a[:, 2].clamp(1, 1216), a[:, 3].clamp(1, 800)], dim=-1)


def _run_detectron2(impl, device):
    proposals = _proposals().to(device)
    gts = matched_gts(len(proposals), GTS_800x1216).to(device)
    t = impl.Box2BoxTransform(ROI_WEIGHTS)
    deltas = t.get_deltas(proposals, gts)  # (1000, 4)
    boxes = t.apply_deltas(delta_sweep(len(proposals), 12, bound=30.0).to(device), proposals)
    return {"deltas": deltas, "decoded": boxes}  # (1000, 4), (1000, 12)


def _check_detectron2(out) -> None:
    from torchvision.models.detection._utils import BoxCoder as LiveBoxCoder

    proposals, gts = _proposals(), matched_gts(1000, GTS_800x1216)
    pred = delta_sweep(1000, 12, bound=30.0)
    live = LiveBoxCoder(ROI_WEIGHTS)  # same formulas as detectron2 for float32 input
    np.testing.assert_allclose(out["deltas"], live.encode_single(gts, proposals).numpy(),
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out["decoded"], live.decode_single(pred, proposals).numpy(),
                               rtol=1e-5, atol=2e-3)
    expected = oracle.delta_decode(proposals.double().numpy(), pred.double().numpy(),
                                   weights=ROI_WEIGHTS, clamp_below=False)
    np.testing.assert_allclose(out["decoded"], expected, rtol=1e-5, atol=2e-3)


# --------------------------------------------------------------------------- RTMDet distances
def _run_rtmdet(impl, device):
    points = rtmdet_points().to(device)
    gts = matched_gts(len(points), GTS_640).to(device)
    coder = impl.DistancePointBBoxCoder()
    distances = coder.encode(points[:, :2], gts)  # (8400, 4), negative outside the gt
    clamped = coder.encode(points[:, :2], gts, max_dis=16.0)
    pred = (delta_sweep(len(points), 4).abs() * points[:, 2:3].cpu()).to(device)  # conv * stride
    boxes = coder.decode(points[:, :2], pred, max_shape=(640, 640))
    return {
        "num_points": np.array([len(points)], dtype=np.int64),
        "distance_rows": sampled_rows(distances, SAMPLES),
        "distance_means": column_means(distances),
        "clamped_rows": sampled_rows(clamped, SAMPLES),
        "decoded_rows": sampled_rows(boxes, SAMPLES),
        "decoded_means": column_means(boxes),
    }


def _check_rtmdet(out) -> None:
    assert int(out["num_points"][0]) == 80 * 80 + 40 * 40 + 20 * 20 == 8400
    points = rtmdet_points().double().numpy()
    gts = matched_gts(len(points), GTS_640).double().numpy()
    pred = (delta_sweep(len(points), 4).abs() * rtmdet_points()[:, 2:3]).double().numpy()
    idx = sample_index(len(points))
    np.testing.assert_allclose(out["distance_rows"], oracle.distance_encode(points[idx], gts[idx]),
                               atol=1e-4)
    np.testing.assert_allclose(out["clamped_rows"],
                               oracle.distance_encode(points[idx], gts[idx], 16.0), atol=1e-4)
    np.testing.assert_allclose(out["decoded_rows"],
                               oracle.distance_decode(points[idx], pred[idx], (640, 640)),
                               atol=1e-3)
    expected = np.stack([points[:, 0] - gts[:, 0], points[:, 1] - gts[:, 1],
                         gts[:, 2] - points[:, 0], gts[:, 3] - points[:, 1]], axis=1)
    np.testing.assert_allclose(out["distance_means"], expected.mean(axis=0), rtol=1e-6)


# --------------------------------------------------------------------------- worked examples
def _run_worked(impl, device):
    def t(rows):
        return torch.tensor(rows, dtype=torch.float32, device=device)

    prior, target = t([[0.0, 0.0, 10.0, 10.0]]), t([[5.0, 5.0, 25.0, 15.0]])
    rcnn = impl.DeltaXYWHBBoxCoder(target_stds=(0.1, 0.1, 0.2, 0.2))
    retina = impl.DeltaXYWHBBoxCoder()
    return {
        "mmdet_rcnn_code": rcnn.encode(prior, target),
        "mmdet_clamped_box": retina.decode(prior, t([[0.0, 0.0, 10.0, -10.0]])),
        "detectron2_clamped_box": impl.Box2BoxTransform((1.0, 1.0, 1.0, 1.0)).apply_deltas(
            t([[0.0, 0.0, 10.0, -6.0]]), prior),
        "distances": impl.bbox2distance(t([[10.0, 10.0]]), t([[4.0, 6.0, 20.0, 30.0]])),
    }


def _check_worked(out) -> None:
    np.testing.assert_allclose(out["mmdet_rcnn_code"], [[10.0, 5.0, 5 * math.log(2), 0.0]],
                               rtol=1e-6)
    # 62.5 = exp(|log(16/1000)|): width 10 * 62.5, height 10 / 62.5, centre (5, 5).
    np.testing.assert_allclose(out["mmdet_clamped_box"], [[-307.5, 4.92, 317.5, 5.08]], rtol=1e-5)
    h = 10 * math.exp(-6.0) / 2  # no lower clamp in detectron2
    np.testing.assert_allclose(out["detectron2_clamped_box"], [[-307.5, 5 - h, 317.5, 5 + h]],
                               rtol=1e-5)
    np.testing.assert_allclose(out["distances"], [[6.0, 4.0, 10.0, 20.0]])


CASES = [
    GoldenCase(
        name="coders_mmdet_retinanet_anchors_800x1216",
        component="coders",
        clause="COD-2",
        producer="DeltaXYWHBBoxCoder().encode / .decode(max_shape=(800, 1216))",
        flavour="mmdet",
        inputs={
            "anchors": "182403 mmdet RetinaNet anchors, P3..P7 of 100x152 .. 7x10, strides 8..128",
            "gts": GTS_800x1216,
            "match": "anchor i -> gt i % 6",
            "pred_deltas": "golden-ratio sweep in [-6, 6)",
        },
        run=_run_retinanet,
        cross_checked="loop oracle on the sampled rows, a vectorised float64 NumPy encode "
        "for the means, the upstream anchor count 182403 and first P3 anchor",
        cross_check=_check_retinanet,
        exact=("num_anchors",),
        rtol=1e-5,
        atol=1e-3,
    ),
    GoldenCase(
        name="coders_detectron2_roi_class_specific",
        component="coders",
        clause="COD-11",
        producer="Box2BoxTransform((10, 10, 5, 5)).get_deltas / .apply_deltas with K=3",
        flavour="detectron2",
        inputs={
            "proposals": "every 182nd RetinaNet anchor (1000), clipped to 800x1216",
            "gts": GTS_800x1216,
            "pred_deltas": "(1000, 12) golden-ratio sweep in [-30, 30)",
        },
        run=_run_detectron2,
        cross_checked="live torchvision BoxCoder.encode_single / decode_single and the "
        "loop oracle",
        cross_check=_check_detectron2,
        rtol=1e-5,
        atol=1e-3,
    ),
    GoldenCase(
        name="coders_rtmdet_points_640",
        component="coders",
        clause="COD-23",
        producer="DistancePointBBoxCoder().encode (with and without max_dis=16) / .decode",
        flavour="mmdet",
        inputs={
            "points": "8400 RTMDet points of 640x640, strides 8, 16, 32, offset 0",
            "gts": GTS_640,
            "match": "point i -> gt i % 3",
            "pred_distances": "|golden-ratio sweep in [-6, 6)| * stride, max_shape (640, 640)",
        },
        run=_run_rtmdet,
        cross_checked="loop oracle on the sampled rows and a vectorised NumPy encode for "
        "the means",
        cross_check=_check_rtmdet,
        exact=("num_points",),
        rtol=1e-5,
        atol=1e-3,
    ),
    GoldenCase(
        name="coders_worked_examples",
        component="coders",
        clause="COD-7",
        producer="DeltaXYWHBBoxCoder, Box2BoxTransform, bbox2distance on one box",
        flavour="mmdet",
        inputs={"prior": [0, 0, 10, 10], "target": [5, 5, 25, 15], "point": [10, 10],
                "box": [4, 6, 20, 30]},
        run=_run_worked,
        cross_checked="hand-computed numbers: (10, 5, 5 log 2, 0); clamp at log 62.5 both "
        "sides in mmdet, above only in detectron2; (l, t, r, b) = (6, 4, 10, 20)",
        cross_check=_check_worked,
        rtol=1e-5,
        atol=1e-4,
    ),
]
