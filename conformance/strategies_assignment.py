"""Hypothesis strategies shared by the assigner, sampler and target tests.

Values are multiples of 1/8 so float32 comparisons with the float64 oracles are exact.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st


@st.composite
def overlap_matrices(draw, max_gts: int = 5, max_priors: int = 9, min_gts: int = 0,
                     min_priors: int = 0):
    """(G, N) float64 matrix of IoUs in {0, 1/8, ..., 1}."""
    g = draw(st.integers(min_gts, max_gts))
    n = draw(st.integers(min_priors, max_priors))
    flat = draw(st.lists(st.integers(0, 8), min_size=g * n, max_size=g * n))
    return np.array(flat, dtype=np.float64).reshape(g, n) / 8.0


@st.composite
def boxes(draw, min_size: int = 0, max_size: int = 6, extent: int = 32, max_wh: int = 20):
    """(n, 4) float64 xyxy boxes with integer corners and positive width and height."""
    n = draw(st.integers(min_size, max_size))
    rows = []
    for _ in range(n):
        x1 = draw(st.integers(0, extent))
        y1 = draw(st.integers(0, extent))
        w = draw(st.integers(1, max_wh))
        h = draw(st.integers(1, max_wh))
        rows.append([x1, y1, x1 + w, y1 + h])
    return np.array(rows, dtype=np.float64).reshape(n, 4)


def labels_for(draw, count: int, num_classes: int = 4) -> np.ndarray:
    return np.array(draw(st.lists(st.integers(0, num_classes - 1), min_size=count,
                                  max_size=count)), dtype=np.int64)


@st.composite
def gt_inds_vectors(draw, max_priors: int = 30, max_gts: int = 4):
    """(num_gts, gt_inds) with gt_inds in {-1, 0, 1..num_gts}."""
    g = draw(st.integers(0, max_gts))
    n = draw(st.integers(0, max_priors))
    values = draw(st.lists(st.integers(-1, g), min_size=n, max_size=n))
    return g, np.array(values, dtype=np.int64)
