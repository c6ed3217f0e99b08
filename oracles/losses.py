"""Loop-based float64 NumPy oracles for the losses (SPEC.md, Losses).

Written from the seeds' step lists, one scalar at a time, so each line can be
checked by eye: mmdet's focal loss and weight_reduce_loss (RetinaNet notes),
quality_focal_loss and bbox_overlaps(mode="giou") (RTMDet notes), smooth L1 and
cross-entropy as detectron2 and torchvision define them. Imports nothing from
``reference``.
"""

from __future__ import annotations

import math

import numpy as np

FLOAT32_EPS = float(np.finfo(np.float32).eps)


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def bce_with_logits(x: float, t: float) -> float:
    """-(t * log(sigmoid(x)) + (1 - t) * log(1 - sigmoid(x))), computed stably."""
    return max(x, 0.0) - x * t + math.log1p(math.exp(-abs(x)))


def one_hot_target(labels, num_classes: int) -> np.ndarray:
    """Labels in [0, C] -> (N, C) 0/1 rows; label C (background) is all zeros."""
    out = np.zeros((len(labels), num_classes))
    for i, lab in enumerate(labels):
        if 0 <= lab < num_classes:
            out[i, int(lab)] = 1.0
    return out


def focal_elementwise(pred, target, gamma: float = 2.0, alpha: float = 0.25) -> np.ndarray:
    """Sigmoid focal loss per element; target is a float array of pred's shape."""
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    out = np.zeros(pred.shape)
    for idx in np.ndindex(pred.shape):
        x, t = float(pred[idx]), float(target[idx])
        p = sigmoid(x)
        p_t = p * t + (1 - p) * (1 - t)
        loss = bce_with_logits(x, t) * (1 - p_t) ** gamma
        if alpha >= 0:
            loss *= alpha * t + (1 - alpha) * (1 - t)
        out[idx] = loss
    return out


def qfl_rows(pred, labels, scores, beta: float = 2.0) -> np.ndarray:
    """Quality focal loss per row, following mmdet's steps in the RTMDet notes.

    1. every column is a negative: BCE(x, 0) * sigmoid(x) ** beta;
    2. a positive row (label < C) overwrites its label's column with
       BCE(x, score) * |score - sigmoid(x)| ** beta;
    3. sum over the columns.
    """
    pred = np.asarray(pred, dtype=np.float64)
    n, c = pred.shape
    out = np.zeros(n)
    for i in range(n):
        row = []
        for j in range(c):
            x = float(pred[i, j])
            row.append(bce_with_logits(x, 0.0) * sigmoid(x) ** beta)
        lab = int(labels[i])
        if 0 <= lab < c:
            x, s = float(pred[i, lab]), float(scores[i])
            row[lab] = bce_with_logits(x, s) * abs(s - sigmoid(x)) ** beta
        out[i] = sum(row)
    return out


def qfl_soft_rows(pred, soft, beta: float = 2.0) -> np.ndarray:
    """Quality focal loss per row with a soft (N, C) target (mmdet's tensor form)."""
    pred = np.asarray(pred, dtype=np.float64)
    n, c = pred.shape
    out = np.zeros(n)
    for i in range(n):
        total = 0.0
        for j in range(c):
            x, s = float(pred[i, j]), float(soft[i][j])
            p = sigmoid(x)
            if s != 0:
                total += bce_with_logits(x, s) * abs(s - p) ** beta
            else:
                total += bce_with_logits(x, 0.0) * p ** beta
        out[i] = total
    return out


def giou_loss_rows(pred, target, eps: float = 1e-6, clamp: bool = True) -> np.ndarray:
    """1 - GIoU per aligned box pair; clamp=True: max(x, eps) (mmdet), else x + eps."""
    out = np.zeros(len(pred))
    for i in range(len(pred)):
        px1, py1, px2, py2 = (float(v) for v in pred[i])
        tx1, ty1, tx2, ty2 = (float(v) for v in target[i])
        area_p = (px2 - px1) * (py2 - py1)
        area_t = (tx2 - tx1) * (ty2 - ty1)
        iw = max(min(px2, tx2) - max(px1, tx1), 0.0)
        ih = max(min(py2, ty2) - max(py1, ty1), 0.0)
        inter = iw * ih
        union = area_p + area_t - inter
        ew = max(max(px2, tx2) - min(px1, tx1), 0.0)
        eh = max(max(py2, ty2) - min(py1, ty1), 0.0)
        enclose = ew * eh
        if clamp:
            union = max(union, eps)
            iou = inter / union
            enclose = max(enclose, eps)
            giou = iou - (enclose - union) / enclose
        else:
            iou = inter / (union + eps)
            giou = iou - (enclose - union) / (enclose + eps)
        out[i] = 1.0 - giou
    return out


def smooth_l1_elementwise(pred, target, beta: float) -> np.ndarray:
    pred = np.asarray(pred, dtype=np.float64)
    out = np.zeros(pred.shape)
    for idx in np.ndindex(pred.shape):
        d = abs(float(pred[idx]) - float(np.asarray(target)[idx]))
        if beta == 0:
            out[idx] = d
        elif d < beta:
            out[idx] = 0.5 * d * d / beta
        else:
            out[idx] = d - 0.5 * beta
    return out


def cross_entropy_rows(pred, labels, ignore_index: int = -100) -> np.ndarray:
    """-log softmax(pred[i])[label_i]; 0 for ignored rows."""
    pred = np.asarray(pred, dtype=np.float64)
    out = np.zeros(len(pred))
    for i in range(len(pred)):
        lab = int(labels[i])
        if lab == ignore_index:
            continue
        row = [float(v) for v in pred[i]]
        m = max(row)
        log_sum = m + math.log(sum(math.exp(v - m) for v in row))
        out[i] = log_sum - row[lab]
    return out


def bce_elementwise(pred, target) -> np.ndarray:
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    out = np.zeros(pred.shape)
    for idx in np.ndindex(pred.shape):
        out[idx] = bce_with_logits(float(pred[idx]), float(target[idx]))
    return out


def weight_reduce(loss, weight=None, reduction: str = "mean", avg_factor=None):
    """mmdet's weight_reduce_loss, step by step (weight already broadcast to loss).

    1. multiply by the weights; 2. "none" returns the array; "sum" adds it up;
    "mean" divides the sum by the element count, or by avg_factor + float32 eps;
    an empty mean is 0.
    """
    loss = np.asarray(loss, dtype=np.float64)
    weighted = np.zeros(loss.shape)
    for idx in np.ndindex(loss.shape):
        w = 1.0 if weight is None else float(np.asarray(weight, dtype=np.float64)[idx])
        weighted[idx] = loss[idx] * w
    if reduction == "none":
        return weighted
    total = 0.0
    for v in weighted.flat:
        total += float(v)
    if reduction == "sum":
        return total
    if avg_factor is not None:
        return total / (float(avg_factor) + FLOAT32_EPS)
    return total / loss.size if loss.size else 0.0
