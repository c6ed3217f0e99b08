"""Loop-based float64 NumPy oracles for the box coders (SPEC.md component "coders").

Written from the seeds' step lists (mmdet ``bbox2delta`` / ``delta2bbox``,
detectron2 ``Box2BoxTransform``, mmdet 3.x ``bbox2distance`` / ``distance2bbox``),
one box at a time, so each line can be checked by eye. Nothing here imports the
reference implementation.

Boxes are xyxy; arrays are float64 NumPy; a "delta row" is (dx, dy, dw, dh).
"""

from __future__ import annotations

import math

import numpy as np

SCALE_CLAMP = math.log(1000.0 / 16)  # 4.135166556742356


def _centre_size(box):
    x1, y1, x2, y2 = (float(v) for v in box)
    return (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1


def _div(a, b):
    """a / b with IEEE semantics (inf, NaN) instead of Python's ZeroDivisionError."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(a) / np.float64(b))


def _log(x):
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.log(np.float64(x)))


def delta_encode(sources, targets, means=(0, 0, 0, 0), stds=(1, 1, 1, 1),
                 weights=(1, 1, 1, 1)):
    """Deltas moving each source box onto its target, (N, 4) -> (N, 4).

    Steps per box: centres and sizes of both boxes; dx = (gx - px) / pw,
    dy = (gy - py) / ph, dw = log(gw / pw), dh = log(gh / ph); multiply by the
    weights (detectron2 / torchvision); subtract the means, divide by the stds (mmdet).
    """
    sources = np.asarray(sources, dtype=np.float64).reshape(-1, 4)
    targets = np.asarray(targets, dtype=np.float64).reshape(-1, 4)
    out = np.zeros((len(sources), 4))
    for i in range(len(sources)):
        px, py, pw, ph = _centre_size(sources[i])
        gx, gy, gw, gh = _centre_size(targets[i])
        raw = [_div(gx - px, pw), _div(gy - py, ph), _log(_div(gw, pw)), _log(_div(gh, ph))]
        for j in range(4):
            out[i, j] = (weights[j] * raw[j] - means[j]) / stds[j]
    return out


def delta_decode(priors, deltas, means=(0, 0, 0, 0), stds=(1, 1, 1, 1), weights=(1, 1, 1, 1),
                 scale_clamp=SCALE_CLAMP, clamp_below=True, ctr_clamp=None, max_shape=None):
    """Boxes from priors (N, 4) and deltas (N, K*4) -> (N, K*4).

    Steps per prior and class: undo the normalisation (d * std + mean) and the
    weights (d / w); shift the centre by (dx * pw, dy * ph), clamped to
    +-ctr_clamp pixels if given (and then dw, dh clamp from above only); clamp dw,
    dh to <= scale_clamp (and >= -scale_clamp if clamp_below); size pw * exp(dw);
    corners centre -+ size / 2; clip to [0, W] x [0, H] if max_shape = (H, W).
    """
    priors = np.asarray(priors, dtype=np.float64).reshape(-1, 4)
    deltas = np.asarray(deltas, dtype=np.float64)
    deltas = deltas.reshape(len(priors), deltas.shape[-1])
    num_classes = deltas.shape[1] // 4
    out = np.zeros_like(deltas)
    for i in range(len(priors)):
        px, py, pw, ph = _centre_size(priors[i])
        for k in range(num_classes):
            d = [(deltas[i, 4 * k + j] * stds[j] + means[j]) / weights[j] for j in range(4)]
            dx, dy, dw, dh = d
            shift_x, shift_y = dx * pw, dy * ph
            low = -scale_clamp if clamp_below else -math.inf
            if ctr_clamp is not None:
                shift_x = min(max(shift_x, -ctr_clamp), ctr_clamp)
                shift_y = min(max(shift_y, -ctr_clamp), ctr_clamp)
                low = -math.inf
            dw = _clamp(dw, low, scale_clamp)
            dh = _clamp(dh, low, scale_clamp)
            gx, gy = px + shift_x, py + shift_y
            gw, gh = pw * math.exp(dw), ph * math.exp(dh)
            box = [gx - gw / 2, gy - gh / 2, gx + gw / 2, gy + gh / 2]
            if max_shape is not None:
                height, width = float(max_shape[0]), float(max_shape[1])
                box = [_clamp(box[0], 0, width), _clamp(box[1], 0, height),
                       _clamp(box[2], 0, width), _clamp(box[3], 0, height)]
            out[i, 4 * k: 4 * k + 4] = box
    return out


def _clamp(v, low, high):
    if math.isnan(v):
        return v
    return min(max(v, low), high)


def distance_encode(points, boxes, max_dis=None, eps=0.1):
    """(left, top, right, bottom) from each point to the sides of its box, (N, 4).

    Steps per point: l = px - x1, t = py - y1, r = x2 - px, b = y2 - py; if max_dis
    is given clamp each to [0, max_dis - eps].
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, np.shape(points)[-1])
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = np.zeros((len(boxes), 4))
    for i in range(len(boxes)):
        px, py = points[i, 0], points[i, 1]
        x1, y1, x2, y2 = boxes[i]
        row = [px - x1, py - y1, x2 - px, y2 - py]
        if max_dis is not None:
            row = [_clamp(v, 0.0, max_dis - eps) for v in row]
        out[i] = row
    return out


def distance_decode(points, distances, max_shape=None):
    """xyxy boxes (px - l, py - t, px + r, py + b), clipped to (H, W) if given."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, np.shape(points)[-1])
    distances = np.asarray(distances, dtype=np.float64).reshape(-1, 4)
    out = np.zeros((len(distances), 4))
    for i in range(len(distances)):
        px, py = points[i, 0], points[i, 1]
        l, t, r, b = distances[i]
        box = [px - l, py - t, px + r, py + b]
        if max_shape is not None:
            height, width = float(max_shape[0]), float(max_shape[1])
            box = [_clamp(box[0], 0, width), _clamp(box[1], 0, height),
                   _clamp(box[2], 0, width), _clamp(box[3], 0, height)]
        out[i] = box
    return out
