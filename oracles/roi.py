"""Loop-based float64 oracles for RoIAlign and RoI-to-FPN-level mapping.

RoIAlign is written one output bin and one sample point at a time from the
caffe2/torchvision description in SPEC.md [ROI-*]; the level formulas are the
three upstream ones, each written as its library writes it. Imports nothing
from the reference.
"""

from __future__ import annotations

import math

import numpy as np


def bilinear(fmap, y, x) -> float:
    """Value of a (H, W) map at (y, x): 0 beyond one pixel outside, else clamped bilinear."""
    height, width = fmap.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(math.floor(y)), int(math.floor(x))
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * fmap[y0, x0] + (1 - ly) * lx * fmap[y0, x1]
            + ly * (1 - lx) * fmap[y1, x0] + ly * lx * fmap[y1, x1])


def roi_align(features, rois, out_h, out_w, spatial_scale, sampling_ratio, aligned):
    """(K, C, out_h, out_w) float64 RoIAlign of (N, C, H, W) features at (K, 5) rois."""
    features = np.asarray(features, dtype=np.float64)
    rois = np.asarray(rois, dtype=np.float64)
    out = np.zeros((len(rois), features.shape[1], out_h, out_w))
    shift = 0.5 if aligned else 0.0
    for k, (b, x1, y1, x2, y2) in enumerate(rois):
        start_x, start_y = x1 * spatial_scale - shift, y1 * spatial_scale - shift
        roi_w = x2 * spatial_scale - shift - start_x
        roi_h = y2 * spatial_scale - shift - start_y
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_w, bin_h = roi_w / out_w, roi_h / out_h
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / out_h)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / out_w)
        count = max(grid_h * grid_w, 1)
        for c in range(features.shape[1]):
            fmap = features[int(b), c]
            for ph in range(out_h):
                for pw in range(out_w):
                    total = 0.0
                    for iy in range(grid_h):
                        y = start_y + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                        for ix in range(grid_w):
                            x = start_x + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                            total += bilinear(fmap, y, x)
                    out[k, c, ph, pw] = total / count
    return out


def fpn_level(box, flavour, min_level=2, max_level=5) -> int:
    """Index (from min_level) of the FPN level a xyxy box is pooled from."""
    scale = math.sqrt((box[2] - box[0]) * (box[3] - box[1]))
    if flavour == "mmdet":  # floor(log2(s / finest_scale + 1e-6)) counted from P2
        level = 2 + math.floor(math.log2(scale / 56 + 1e-6))
    elif flavour == "detectron2":  # floor(4 + log2(s / 224 + 1e-8)) on float32 boxes
        # detectron2's Boxes holds float32 (structures/boxes.py:150): every step in float32.
        f = np.float32
        x1, y1, x2, y2 = (f(v) for v in box)
        s32 = np.sqrt((x2 - x1) * (y2 - y1))
        level = math.floor(f(4) + np.log2(s32 / f(224) + f(1e-8)))
    elif flavour == "torchvision":  # floor(4 + log2(s / 224) + 1e-6)
        level = math.floor(4 + math.log2(scale / 224) + 1e-6) if scale > 0 else -10**9
    else:
        raise ValueError(flavour)
    return min(max(level, min_level), max_level) - min_level
