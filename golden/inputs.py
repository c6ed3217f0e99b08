"""Inputs and summaries shared by the golden cases, the conformance tests and the
benchmarks (no cases here).

Everything is plain torch / NumPy, independent of ``reference/``: the RetinaNet
800x1216 configuration and its 182403 anchors built from their formula, the
RTMDet 640x640 points, the row indices ``sampled_rows`` picks, and the per-level
row slices of concatenated levels.
"""

from __future__ import annotations

import numpy as np
import torch

from golden.case import as_array

SAMPLES = 256

# RetinaNet on the seeds' 800x1216 batch: FPN levels P3..P7.
IMAGE_800x1216 = (800, 1216)
RETINANET_FEATMAPS = [(100, 152), (50, 76), (25, 38), (13, 19), (7, 10)]  # ceil(800/s), ceil(1216/s)
RETINANET_STRIDES = [8, 16, 32, 64, 128]
RETINANET_RATIOS = [0.5, 1.0, 2.0]  # h / w
OCTAVE_BASE_SCALE, SCALES_PER_OCTAVE = 4, 3
RETINANET_ANCHORS_PER_LEVEL = (136800, 34200, 8550, 2223, 630)  # 9 x H x W; 182403 in all
# The first P3 anchor (size 32, ratio 0.5), from upstream-semantics.md.
FIRST_P3_ANCHOR = [-22.6274, -11.3137, 22.6274, 11.3137]

# RTMDet on a 640x640 input: strides 8, 16, 32.
RTMDET_FEATMAPS = [(80, 80), (40, 40), (20, 20)]
RTMDET_STRIDES = [8, 16, 32]


def retinanet_anchors() -> torch.Tensor:
    """(182403, 4) float32 mmdet RetinaNet anchors for an 800 x 1216 input.

    Per level: base size = stride, scales 4 * 2**(i/3), w = base*scale/sqrt(r),
    h = base*scale*sqrt(r), centred on the location (center offset 0); locations
    row-major on a ceil(H/stride) x ceil(W/stride) grid; inside a location ratio
    outer, scale inner (mmdet's scale_major=True); levels concatenated.
    """
    scales = torch.tensor([OCTAVE_BASE_SCALE * 2 ** (i / SCALES_PER_OCTAVE)
                           for i in range(SCALES_PER_OCTAVE)])
    h_ratios = torch.tensor(RETINANET_RATIOS).sqrt()
    w_ratios = 1 / h_ratios
    levels = []
    for (rows, cols), stride in zip(RETINANET_FEATMAPS, RETINANET_STRIDES):
        ws = (stride * w_ratios[:, None] * scales[None, :]).reshape(-1)  # (9,) ratio outer
        hs = (stride * h_ratios[:, None] * scales[None, :]).reshape(-1)
        base = torch.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], dim=1)  # (9, 4)
        ys = torch.arange(rows, dtype=torch.float32) * stride
        xs = torch.arange(cols, dtype=torch.float32) * stride
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")  # (rows, cols), row-major
        shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)  # (rows*cols, 1, 4)
        levels.append((shifts + base[None]).reshape(-1, 4))  # (rows*cols*9, 4)
    return torch.cat(levels)


def rtmdet_points() -> torch.Tensor:
    """(8400, 4) (x, y, stride, stride) points of a 640x640 input, offset 0."""
    levels = []
    for (h, w), stride in zip(RTMDET_FEATMAPS, RTMDET_STRIDES):
        ys, xs = torch.meshgrid(torch.arange(h) * stride, torch.arange(w) * stride, indexing="ij")
        s = torch.full_like(xs, stride)
        levels.append(torch.stack([xs, ys, s, s], dim=-1).reshape(-1, 4).float())
    return torch.cat(levels)


def sample_index(total: int, count: int = SAMPLES) -> np.ndarray:
    """The row indices ``golden.case.sampled_rows`` picks (evenly spaced, first and last)."""
    return np.unique(np.linspace(0, total - 1, num=min(count, total)).round().astype(np.int64))


def column_means(x) -> np.ndarray:
    """Mean of every column, in float64."""
    return as_array(x).astype(np.float64).mean(axis=0)


def level_slices(sizes):
    """``(level, rows)`` for levels of the given sizes concatenated along dim 0."""
    start = 0
    for level, size in enumerate(sizes):
        yield level, slice(start, start + size)
        start += size
