"""Hypothesis strategies shared by the NMS, proposal and RoI conformance tests.

Boxes are drawn on integer (NMS) or 1/8-pixel (RoI) grids so float32 arithmetic
is exact where it matters, and NMS thresholds are chosen so that no drawn pair
can have an IoU equal to (or within float32 rounding of) the threshold: with
integer boxes of side <= 12 the union is at most 288 px^2, so IoU = p/q with
q <= 288 stays more than 3e-7 away from a 4-digit threshold such as 0.7071.
Exact boundaries are pinned by worked examples instead.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

# IoU thresholds no integer-box pair can hit (see the module docstring).
SAFE_THRESHOLDS = (0.3137, 0.5011, 0.7071)


@st.composite
def integer_boxes(draw, min_n=0, max_n=14, lo=0, hi=30, max_side=12):
    """(n, 4) float64 xyxy boxes with integer corners and sides in [1, max_side]."""
    n = draw(st.integers(min_n, max_n))
    corner = st.tuples(st.integers(lo, hi), st.integers(lo, hi),
                       st.integers(1, max_side), st.integers(1, max_side))
    rows = draw(st.lists(corner, min_size=n, max_size=n))
    return np.array([[x, y, x + w, y + h] for x, y, w, h in rows], dtype=np.float64).reshape(-1, 4)


@st.composite
def distinct_scores(draw, n):
    """(n,) float64 scores in (0, 1], all distinct (a shuffled ladder)."""
    perm = draw(st.permutations(list(range(1, n + 1)))) if n else []
    return np.array(perm, dtype=np.float64) / max(n, 1)


@st.composite
def boxes_and_scores(draw, min_n=0, max_n=14, **kw):
    boxes = draw(integer_boxes(min_n=min_n, max_n=max_n, **kw))
    return boxes, draw(distinct_scores(len(boxes)))


@st.composite
def eighth_grid_boxes(draw, n_min, n_max, lo, hi, max_side):
    """(n, 4) float64 xyxy boxes on a 1/8 grid inside [lo, hi], sides in [0, max_side]."""
    n = draw(st.integers(n_min, n_max))
    rows = []
    for _ in range(n):
        x1 = draw(st.integers(int(lo * 8), int(hi * 8))) / 8
        y1 = draw(st.integers(int(lo * 8), int(hi * 8))) / 8
        w = draw(st.integers(0, int(min(max_side, hi - x1) * 8))) / 8
        h = draw(st.integers(0, int(min(max_side, hi - y1) * 8))) / 8
        rows.append([x1, y1, x1 + w, y1 + h])
    return np.array(rows, dtype=np.float64).reshape(-1, 4)
