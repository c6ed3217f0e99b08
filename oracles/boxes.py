"""Loop-based float64 oracle for box areas and overlaps (component "iou").

Written from mmdetection's ``bbox_overlaps`` step list (seed:
mmdet3-rtmdet-head-notes.txt), detectron2's ``pairwise_iou`` and torchvision's
``box_iou``; one pair of boxes at a time, plain Python floats, nothing imported from
``reference``. Slow on purpose: keep inputs small.

Boxes are (x1, y1, x2, y2). For boxes a and b:
  inter   = max(0, min(ax2, bx2) - max(ax1, bx1)) * max(0, min(ay2, by2) - max(ay1, by1))
  union   = area(a) + area(b) - inter        ("iou", "giou")
            area(a)                           ("iof")
  mmdet:        inter / max(union, eps)
  detectron2:   inter / union if inter > 0 else 0
  torchvision:  inter / union (NaN when both are 0)
  giou:   ratio - (enclose - max(union, eps)) / enclose, enclose = max(enclosing area, eps)
"""

from __future__ import annotations

import itertools

import numpy as np


def area(box) -> float:
    x1, y1, x2, y2 = (float(v) for v in box)
    return (x2 - x1) * (y2 - y1)


def intersection(a, b) -> float:
    width = max(0.0, min(float(a[2]), float(b[2])) - max(float(a[0]), float(b[0])))
    height = max(0.0, min(float(a[3]), float(b[3])) - max(float(a[1]), float(b[1])))
    return width * height


def enclosing_area(a, b) -> float:
    width = max(0.0, max(float(a[2]), float(b[2])) - min(float(a[0]), float(b[0])))
    height = max(0.0, max(float(a[3]), float(b[3])) - min(float(a[1]), float(b[1])))
    return width * height


def overlap_pair(a, b, mode: str = "iou", eps: float = 1e-6) -> float:
    """mmdet bbox_overlaps for one pair of boxes."""
    inter = intersection(a, b)
    if mode == "iof":
        union = area(a)
    else:
        union = area(a) + area(b) - inter
    union = max(union, eps)
    ratio = inter / union
    if mode in ("iou", "iof"):
        return ratio
    assert mode == "giou", mode
    enclose = max(enclosing_area(a, b), eps)
    return ratio - (enclose - union) / enclose


def detectron2_iou_pair(a, b) -> float:
    inter = intersection(a, b)
    if inter > 0:
        return inter / (area(a) + area(b) - inter)
    return 0.0


def torchvision_iou_pair(a, b) -> float:
    inter = intersection(a, b)
    union = area(a) + area(b) - inter
    if union == 0:
        return float("nan")  # 0 / 0 (inter <= union, so inter is 0 too)
    return inter / union


def box_area(boxes) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)
    out = np.zeros(boxes.shape[:-1], dtype=np.float64)
    for index in np.ndindex(*boxes.shape[:-1]):
        out[index] = area(boxes[index])
    return out


def box_iou(boxes1, boxes2, mode: str = "iou", is_aligned: bool = False,
            eps: float = 1e-6) -> np.ndarray:
    """boxes1 (..., M, 4), boxes2 (..., N, 4) -> (..., M, N), or (..., M) if aligned."""
    boxes1 = np.asarray(boxes1, dtype=np.float64)
    boxes2 = np.asarray(boxes2, dtype=np.float64)
    batch = boxes1.shape[:-2]
    rows, cols = boxes1.shape[-2], boxes2.shape[-2]
    if is_aligned:
        out = np.zeros(batch + (rows,), dtype=np.float64)
        for b in np.ndindex(*batch):
            for i in range(rows):
                out[b + (i,)] = overlap_pair(boxes1[b + (i,)], boxes2[b + (i,)], mode, eps)
        return out
    out = np.zeros(batch + (rows, cols), dtype=np.float64)
    for b in np.ndindex(*batch):
        for i, j in itertools.product(range(rows), range(cols)):
            out[b + (i, j)] = overlap_pair(boxes1[b + (i,)], boxes2[b + (j,)], mode, eps)
    return out


def _pairwise(pair, boxes1, boxes2) -> np.ndarray:
    boxes1 = np.asarray(boxes1, dtype=np.float64)
    boxes2 = np.asarray(boxes2, dtype=np.float64)
    out = np.zeros((len(boxes1), len(boxes2)), dtype=np.float64)
    for i, j in itertools.product(range(len(boxes1)), range(len(boxes2))):
        out[i, j] = pair(boxes1[i], boxes2[j])
    return out


def pairwise_iou(boxes1, boxes2) -> np.ndarray:
    """detectron2 flavour: (M, 4), (N, 4) -> (M, N), 0 where the boxes do not intersect."""
    return _pairwise(detectron2_iou_pair, boxes1, boxes2)


def box_iou_torchvision(boxes1, boxes2) -> np.ndarray:
    """torchvision flavour: (M, 4), (N, 4) -> (M, N), NaN where the union is 0."""
    return _pairwise(torchvision_iou_pair, boxes1, boxes2)


def box_iou_vectorised(boxes1, boxes2, mode: str = "iou", eps: float = 1e-6) -> np.ndarray:
    """The same formula as ``box_iou`` for (M, 4), (N, 4) -> (M, N), broadcast in NumPy.

    Only for inputs too large for the loops above; the tests check it against
    ``overlap_pair`` on sampled pairs before trusting it.
    """
    a = np.asarray(boxes1, dtype=np.float64)[:, None, :]  # (M, 1, 4)
    b = np.asarray(boxes2, dtype=np.float64)[None, :, :]  # (1, N, 4)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    inter_w = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    inter_h = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    inter = np.maximum(inter_w, 0) * np.maximum(inter_h, 0)  # (M, N)
    union = np.broadcast_to(area_a, inter.shape) if mode == "iof" else area_a + area_b - inter
    union = np.maximum(union, eps)
    ratio = inter / union
    if mode in ("iou", "iof"):
        return ratio
    enclose_w = np.maximum(a[..., 2], b[..., 2]) - np.minimum(a[..., 0], b[..., 0])
    enclose_h = np.maximum(a[..., 3], b[..., 3]) - np.minimum(a[..., 1], b[..., 1])
    enclose = np.maximum(np.maximum(enclose_w, 0) * np.maximum(enclose_h, 0), eps)
    return ratio - (enclose - union) / enclose
