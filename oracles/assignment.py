"""Loop-based float64 NumPy oracles for the assigners (SPEC.md "Assigners").

Written from the seeds' step lists (mmdet MaxIoUAssigner.assign_wrt_overlaps,
detectron2 / torchvision Matcher, mmdet 3 DynamicSoftLabelAssigner), one Python
loop per step, so each can be checked against the seed by eye. Imports nothing
from ``reference``.
"""

from __future__ import annotations

import math

import numpy as np

EPS_IOU = 1e-6  # mmdet bbox_overlaps clamps unions (and IoF denominators) to this
DSL_EPS = 1e-7
DSL_INF = 100000000.0


# --------------------------------------------------------------------------- boxes
def area(b) -> float:
    return (b[2] - b[0]) * (b[3] - b[1])


def intersection(a, b) -> float:
    w = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    h = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    return w * h


def iou_matrix(boxes1, boxes2, mode: str = "iou") -> np.ndarray:
    """(len(boxes1), len(boxes2)) mmdet-style IoU or IoF (over boxes1's area)."""
    boxes1 = np.asarray(boxes1, dtype=np.float64).reshape(-1, 4)
    boxes2 = np.asarray(boxes2, dtype=np.float64).reshape(-1, 4)
    out = np.zeros((len(boxes1), len(boxes2)))
    for i, a in enumerate(boxes1):
        for j, b in enumerate(boxes2):
            inter = intersection(a, b)
            if mode == "iou":
                denom = area(a) + area(b) - inter
            else:
                denom = area(a)
            out[i, j] = inter / max(denom, EPS_IOU)
    return out


# --------------------------------------------------------------------------- mmdet MaxIoU
def max_iou_assign(overlaps, pos_iou_thr, neg_iou_thr, min_pos_iou=0.0,
                   gt_max_assign_all=True, match_low_quality=True, gt_labels=None):
    """Returns (gt_inds, max_overlaps, labels or None) following mmdet's step list."""
    overlaps = np.asarray(overlaps, dtype=np.float64)
    num_gts, num_priors = overlaps.shape
    # 1. every prior starts ignored
    gt_inds = [-1] * num_priors
    if num_gts == 0 or num_priors == 0:
        if num_gts == 0:
            gt_inds = [0] * num_priors
        labels = None if gt_labels is None else [-1] * num_priors
        return np.array(gt_inds, dtype=np.int64), np.zeros(num_priors), (
            None if labels is None else np.array(labels, dtype=np.int64))

    max_overlaps, argmax = [], []
    for j in range(num_priors):
        best, best_i = -math.inf, -1
        for i in range(num_gts):
            if overlaps[i, j] > best:  # first maximum wins
                best, best_i = overlaps[i, j], i
        max_overlaps.append(best)
        argmax.append(best_i)
    gt_max, gt_argmax = [], []
    for i in range(num_gts):
        best, best_j = -math.inf, -1
        for j in range(num_priors):
            if overlaps[i, j] > best:
                best, best_j = overlaps[i, j], j
        gt_max.append(best)
        gt_argmax.append(best_j)

    # 2. negatives
    if isinstance(neg_iou_thr, (tuple, list)):
        lo, hi = neg_iou_thr
    else:
        lo, hi = 0.0, neg_iou_thr
    for j in range(num_priors):
        if lo <= max_overlaps[j] < hi:
            gt_inds[j] = 0
    # 3. positives
    for j in range(num_priors):
        if max_overlaps[j] >= pos_iou_thr:
            gt_inds[j] = argmax[j] + 1
    # 4. low-quality: gts in order, later ones overwrite
    if match_low_quality:
        for i in range(num_gts):
            if gt_max[i] >= min_pos_iou:
                if gt_max_assign_all:
                    for j in range(num_priors):
                        if overlaps[i, j] == gt_max[i]:
                            gt_inds[j] = i + 1
                else:
                    gt_inds[gt_argmax[i]] = i + 1
    labels = None
    if gt_labels is not None:
        labels = [int(gt_labels[g - 1]) if g > 0 else -1 for g in gt_inds]
        labels = np.array(labels, dtype=np.int64)
    return np.array(gt_inds, dtype=np.int64), np.array(max_overlaps), labels


def ignore_columns(bboxes, ignore_boxes, ignore_iof_thr, wrt_candidates=True):
    """Priors whose IoF with some ignore box exceeds ignore_iof_thr (bool list)."""
    out = []
    for b in np.asarray(bboxes, dtype=np.float64).reshape(-1, 4):
        best = -math.inf
        for g in np.asarray(ignore_boxes, dtype=np.float64).reshape(-1, 4):
            inter = intersection(b, g)
            denom = area(b) if wrt_candidates else area(g)
            best = max(best, inter / max(denom, EPS_IOU))
        out.append(best > ignore_iof_thr)
    return np.array(out, dtype=bool)


# ------------------------------------------------------------------- detectron2 / torchvision
def detectron2_match(quality, thresholds, labels, allow_low_quality_matches=False):
    """Returns (matches, match_labels) as detectron2's Matcher defines them."""
    quality = np.asarray(quality, dtype=np.float64)
    num_gts, num_priors = quality.shape
    if quality.size == 0:
        return np.zeros(num_priors, dtype=np.int64), np.full(num_priors, labels[0], np.int64)
    bounds = [-math.inf] + list(thresholds) + [math.inf]
    matches, out = [], []
    for j in range(num_priors):
        best, best_i = -math.inf, -1
        for i in range(num_gts):
            if quality[i, j] > best:
                best, best_i = quality[i, j], i
        matches.append(best_i)
        lab = 1
        for lab_k, low, high in zip(labels, bounds[:-1], bounds[1:]):
            if low <= best < high:
                lab = lab_k
        out.append(lab)
    if allow_low_quality_matches:
        for i in range(num_gts):
            top = max(quality[i, j] for j in range(num_priors))
            for j in range(num_priors):
                if quality[i, j] == top:
                    out[j] = 1
    return np.array(matches, dtype=np.int64), np.array(out, dtype=np.int64)


def torchvision_match(quality, high, low, allow_low_quality_matches=False):
    """(N,) torchvision encoding: gt index, -1 below low, -2 between."""
    quality = np.asarray(quality, dtype=np.float64)
    num_gts, num_priors = quality.shape
    matches, argmax = [], []
    for j in range(num_priors):
        best, best_i = -math.inf, -1
        for i in range(num_gts):
            if quality[i, j] > best:
                best, best_i = quality[i, j], i
        argmax.append(best_i)
        if best < low:
            matches.append(-1)
        elif best < high:
            matches.append(-2)
        else:
            matches.append(best_i)
    if allow_low_quality_matches:
        for i in range(num_gts):
            top = max(quality[i, j] for j in range(num_priors))
            for j in range(num_priors):
                if quality[i, j] == top:
                    matches[j] = argmax[j]
    return np.array(matches, dtype=np.int64)


# --------------------------------------------------------------------------- RTMDet DSL
def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _bce_with_logits(x: float, t: float) -> float:
    # log(1 + exp(x)) - x * t, written stably
    return max(x, 0.0) - x * t + math.log1p(math.exp(-abs(x)))


def dsl_cost(scores, decoded, priors, gt_bboxes, gt_labels, soft_center_radius=3.0,
             iou_weight=3.0):
    """(N, G) cost exactly as upstream writes it, summing over ALL C classes."""
    scores = np.asarray(scores, dtype=np.float64)
    priors = np.asarray(priors, dtype=np.float64)
    gt_bboxes = np.asarray(gt_bboxes, dtype=np.float64).reshape(-1, 4)
    ious = iou_matrix(decoded, gt_bboxes)
    num_priors, num_classes = scores.shape
    cost = np.zeros((num_priors, len(gt_bboxes)))
    for p in range(num_priors):
        for g, gt in enumerate(gt_bboxes):
            cls_cost = 0.0
            for c in range(num_classes):
                soft = ious[p, g] if c == int(gt_labels[g]) else 0.0
                x = scores[p, c]
                cls_cost += _bce_with_logits(x, soft) * abs(soft - _sigmoid(x)) ** 2
            iou_cost = -math.log(ious[p, g] + DSL_EPS) * iou_weight
            cx, cy = (gt[0] + gt[2]) / 2, (gt[1] + gt[3]) / 2
            dist = math.sqrt((priors[p, 0] - cx) ** 2 + (priors[p, 1] - cy) ** 2) / priors[p, 2]
            cost[p, g] = cls_cost + iou_cost + 10.0 ** (dist - soft_center_radius)
    return cost


def dynamic_k_matching(cost, ious, topk=13):
    """(matched_gt, matched_iou) per candidate; -1 / 0 where unmatched.

    Per gt: k = max(1, int(sum of the min(topk, V) largest IoUs)); the k cheapest
    candidates (ties: lower index first). Conflicts: lowest cost over all gts,
    first gt on ties.
    """
    cost = np.asarray(cost, dtype=np.float64)
    ious = np.asarray(ious, dtype=np.float64)
    num_cand, num_gts = cost.shape
    selected = np.zeros((num_cand, num_gts), dtype=bool)
    for g in range(num_gts):
        column = sorted((ious[p, g] for p in range(num_cand)), reverse=True)
        k = max(1, int(sum(column[:min(topk, num_cand)])))
        order = sorted(range(num_cand), key=lambda p: (cost[p, g], p))
        for p in order[:k]:
            selected[p, g] = True
    matched_gt = np.full(num_cand, -1, dtype=np.int64)
    matched_iou = np.zeros(num_cand)
    for p in range(num_cand):
        chosen = [g for g in range(num_gts) if selected[p, g]]
        if len(chosen) == 1:
            matched_gt[p] = chosen[0]
        elif len(chosen) > 1:
            best_g = 0
            for g in range(num_gts):
                if cost[p, g] < cost[p, best_g]:
                    best_g = g
            matched_gt[p] = best_g
        if matched_gt[p] >= 0:
            matched_iou[p] = ious[p, matched_gt[p]]
    return matched_gt, matched_iou


def dsl_assign(scores, decoded, priors, gt_bboxes, gt_labels, topk=13,
               soft_center_radius=3.0, iou_weight=3.0):
    """(gt_inds, max_overlaps, labels) as mmdet's DynamicSoftLabelAssigner.assign."""
    priors = np.asarray(priors, dtype=np.float64)
    gt_bboxes = np.asarray(gt_bboxes, dtype=np.float64).reshape(-1, 4)
    num_priors = len(priors)
    gt_inds = np.zeros(num_priors, dtype=np.int64)
    labels = np.full(num_priors, -1, dtype=np.int64)
    candidates = []
    for p in range(num_priors):
        x, y = priors[p, 0], priors[p, 1]
        if any(g[0] < x < g[2] and g[1] < y < g[3] for g in gt_bboxes):
            candidates.append(p)
    if len(gt_bboxes) == 0 or num_priors == 0 or not candidates:
        return gt_inds, np.zeros(num_priors), labels
    scores = np.asarray(scores, dtype=np.float64)
    decoded = np.asarray(decoded, dtype=np.float64)
    cost = dsl_cost(scores[candidates], decoded[candidates], priors[candidates], gt_bboxes,
                    gt_labels, soft_center_radius, iou_weight)
    ious = iou_matrix(decoded[candidates], gt_bboxes)
    matched_gt, matched_iou = dynamic_k_matching(cost, ious, topk)
    max_overlaps = np.full(num_priors, -DSL_INF)
    for v, p in enumerate(candidates):
        if matched_gt[v] >= 0:
            gt_inds[p] = matched_gt[v] + 1
            labels[p] = int(gt_labels[matched_gt[v]])
            max_overlaps[p] = matched_iou[v]
    return gt_inds, max_overlaps, labels
