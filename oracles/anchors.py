"""Loop-based float64 oracles for anchors, points and their flags.

Each function follows the step list of the seeds (mmdet 2.x ``AnchorGenerator`` /
``LegacyAnchorGenerator`` / ``MlvlPointGenerator`` / ``anchor_inside_flags``,
detectron2 ``DefaultAnchorGenerator``, torchvision ``AnchorGenerator``) one scalar at
a time, so it can be checked against the notes by eye. Nothing here imports the
implementation under test or torch; results are nested lists or float64 arrays.

Where upstream computes in float32 and a rounding follows (mmdet v1 and torchvision
round corners) or the value is compared exactly (SPEC.md ANC-20, PTS-7), the
oracle computes in NumPy float32 in upstream's order of operations: in float32
``(base * w_ratio) * scale`` and ``base * (w_ratio * scale)`` can differ by an ulp.
"""

from __future__ import annotations

import math

import numpy as np


# --------------------------------------------------------------------------- base anchors
def mmdet_base_anchors(base_size, scales, ratios, scale_major=True, center=None,
                       center_offset=0.0, legacy=False, h_ratios=None):
    """mmdet base anchors of one level, ``(A, 4)`` (float32 values, as float64).

    For each (ratio r, scale s): w = base * s / sqrt(r), h = base * s * sqrt(r),
    in float32 as mmdet multiplies (2.11 ``core/anchor/anchor_generator.py``, 3.3
    ``models/task_modules/prior_generators/anchor_generator.py``,
    ``gen_single_level_base_anchors``): ``w_ratio = 1 / sqrt(r)``, then
    ``(base * w_ratio) * s`` (scale_major) or ``(base * s) * w_ratio``.
    scale_major=True: ratio in the outer loop, scale in the inner loop.
    Centre: ``center`` if given, else center_offset * base (legacy: * (base - 1)).
    Corners: centre -+ w/2 (legacy: -+ (w - 1)/2, then rounded half to even).
    ``h_ratios``: float32 ``sqrt(r)`` per ratio as upstream got it (torch's CPU
    float32 sqrt is not always the correctly rounded one NumPy gives); default NumPy's.
    """
    if h_ratios is None:
        h_ratios = [np.sqrt(np.float32(r)) for r in ratios]
    h_ratio_of = {float(r): np.float32(h) for r, h in zip(ratios, h_ratios)}
    if center is not None:
        cx, cy = center
    elif legacy:
        cx = cy = center_offset * (base_size - 1)
    else:
        cx = cy = center_offset * base_size
    pairs = []
    if scale_major:
        for r in ratios:
            for s in scales:
                pairs.append((r, s))
    else:
        for s in scales:
            for r in ratios:
                pairs.append((r, s))
    f32, half, one = np.float32, np.float32(0.5), np.float32(1)
    cx, cy, base = f32(cx), f32(cy), f32(base_size)
    rows = []
    for r, s in pairs:
        h_ratio = h_ratio_of[float(r)]
        w_ratio = one / h_ratio
        if scale_major:
            w, h = base * w_ratio * f32(s), base * h_ratio * f32(s)
        else:
            w, h = base * f32(s) * w_ratio, base * f32(s) * h_ratio
        if legacy:
            box = [cx - half * (w - one), cy - half * (h - one), cx + half * (w - one), cy + half * (h - one)]
            box = [float(np.round(v)) for v in box]  # NumPy round: half to even
        else:
            box = [float(v) for v in (cx - half * w, cy - half * h, cx + half * w, cy + half * h)]
        rows.append(box)
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def octave_scales(octave_base_scale, scales_per_octave):
    """octave_base_scale * 2**(i / scales_per_octave) for i < scales_per_octave."""
    return [octave_base_scale * 2 ** (i / scales_per_octave) for i in range(scales_per_octave)]


def detectron2_cell_anchors(sizes, ratios):
    """detectron2 cell anchors ``(S*R, 4)``: size outer, ratio inner, centred at 0.

    w = sqrt(size^2 / r), h = r * w.
    """
    rows = []
    for size in sizes:
        area = size ** 2.0
        for r in ratios:
            w = math.sqrt(area / r)
            h = r * w
            rows.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def torchvision_base_anchors(sizes, ratios):
    """torchvision base anchors ``(R*S, 4)``: ratio outer, size inner, rounded half to even."""
    rows = []
    for r in ratios:
        for size in sizes:
            w = size / math.sqrt(r)
            h = size * math.sqrt(r)
            rows.append([float(round(v)) for v in (-w / 2, -h / 2, w / 2, h / 2)])
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def torchvision_corner_values_before_rounding(sizes, ratios):
    out = []
    for r in ratios:
        for size in sizes:
            out += [size / math.sqrt(r) / 2, size * math.sqrt(r) / 2]
    return out


# --------------------------------------------------------------------------- grids
def grid_anchors(base_anchors, featmap_size, stride_wh, offset=0.0):
    """All anchors of one level, ``(H*W*A, 4)``: for y, for x, for k (innermost).

    Location (y, x) is at ((x + offset) * stride_w, (y + offset) * stride_h).
    """
    feat_h, feat_w = featmap_size
    stride_w, stride_h = stride_wh
    rows = []
    for y in range(feat_h):
        for x in range(feat_w):
            sx = (x + offset) * stride_w
            sy = (y + offset) * stride_h
            for k in range(len(base_anchors)):
                x1, y1, x2, y2 = base_anchors[k]
                rows.append([x1 + sx, y1 + sy, x2 + sx, y2 + sy])
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def mmdet_grid_anchors_float32(base_anchors, featmap_size, stride_wh):
    """mmdet's grid of one level in float32, ``(H*W*A, 4)``: the shift of location
    (y, x) is ``float32(x) * stride_w`` (3.3 ``arange(W).to(float32) * stride_w``;
    2.11 multiplies the int64 arange, which torch computes in float32: the same)."""
    feat_h, feat_w = featmap_size
    stride_w, stride_h = np.float32(stride_wh[0]), np.float32(stride_wh[1])
    base = np.asarray(base_anchors, dtype=np.float32)
    rows = []
    for y in range(feat_h):
        for x in range(feat_w):
            sx, sy = np.float32(x) * stride_w, np.float32(y) * stride_h
            for x1, y1, x2, y2 in base:
                rows.append([x1 + sx, y1 + sy, x2 + sx, y2 + sy])
    return np.array(rows, dtype=np.float32).astype(np.float64).reshape(-1, 4)


def anchor_at(base_anchors, featmap_size, stride_wh, index, offset=0.0):
    """Row ``index`` of :func:`grid_anchors`, without building the whole level."""
    feat_h, feat_w = featmap_size
    num_base = len(base_anchors)
    k = index % num_base
    location = index // num_base
    y, x = location // feat_w, location % feat_w
    sx = (x + offset) * stride_wh[0]
    sy = (y + offset) * stride_wh[1]
    x1, y1, x2, y2 = base_anchors[k]
    return [x1 + sx, y1 + sy, x2 + sx, y2 + sy]


def torchvision_strides(image_size, featmap_size):
    """(stride_w, stride_h) = image_size // featmap_size per axis."""
    return image_size[1] // featmap_size[1], image_size[0] // featmap_size[0]


def grid_points(featmap_size, stride_wh, offset, with_stride=False):
    """Points of one level, ``(H*W, 2)`` or ``(H*W, 4)``: for y, for x.

    In float32 as mmdet 3.3 ``MlvlPointGenerator.single_level_grid_priors`` does:
    ``(x + offset) * stride_w``, each operation rounded to float32.
    """
    feat_h, feat_w = featmap_size
    f32 = np.float32
    stride_w, stride_h = stride_wh
    rows = []
    for y in range(feat_h):
        for x in range(feat_w):
            row = [float((f32(x) + f32(offset)) * f32(stride_w)),
                   float((f32(y) + f32(offset)) * f32(stride_h))]
            if with_stride:
                row += [stride_w, stride_h]
            rows.append(row)
    return np.array(rows, dtype=np.float64).reshape(-1, 4 if with_stride else 2)


# --------------------------------------------------------------------------- flags
def valid_flags(featmap_size, pad_shape, stride_wh, num_base):
    """``(H*W*num_base,)`` bool: location valid while y < ceil(pad_h / stride_h) and
    x < ceil(pad_w / stride_w) (capped at the feature map)."""
    feat_h, feat_w = featmap_size
    pad_h, pad_w = pad_shape[0], pad_shape[1]
    valid_h = min(math.ceil(pad_h / stride_wh[1]), feat_h)
    valid_w = min(math.ceil(pad_w / stride_wh[0]), feat_w)
    out = []
    for y in range(feat_h):
        for x in range(feat_w):
            for _ in range(num_base):
                out.append(y < valid_h and x < valid_w)
    return np.array(out, dtype=bool)


def inside_flags(anchors, valid, img_shape, allowed_border=0):
    """``(N,)`` bool, one anchor at a time (mmdet ``anchor_inside_flags``)."""
    img_h, img_w = img_shape[0], img_shape[1]
    out = []
    for box, ok in zip(np.asarray(anchors, dtype=np.float64), np.asarray(valid, dtype=bool)):
        if allowed_border < 0:
            out.append(bool(ok))
            continue
        b = allowed_border
        x1, y1, x2, y2 = box
        inside = x1 >= -b and y1 >= -b and x2 < img_w + b and y2 < img_h + b
        out.append(bool(ok) and bool(inside))
    return np.array(out, dtype=bool)
