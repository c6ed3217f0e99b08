"""Loop-based oracles for dense-head training targets (SPEC.md "Targets").

Written from the seeds' ``_get_targets_single`` / ``get_targets`` / ``unmap`` /
``images_to_levels`` step lists. Imports nothing from ``reference``.
"""

from __future__ import annotations

import numpy as np

from oracles import assignment as assign_oracle


def unmap(data, count, mask, fill=0):
    data = np.asarray(data)
    out = np.full((count,) + data.shape[1:], fill, dtype=data.dtype)
    k = 0
    for i in range(count):
        if mask[i]:
            out[i] = data[k]
            k += 1
    return out


def images_to_levels(targets, num_level_anchors):
    levels, start = [], 0
    for n in num_level_anchors:
        levels.append(np.stack([np.asarray(t)[start:start + n] for t in targets]))
        start += n
    return levels


def inside_flags(anchors, valid, img_shape, allowed_border):
    h, w = img_shape[:2]
    out = []
    for a, v in zip(np.asarray(anchors, dtype=np.float64), valid):
        if allowed_border >= 0:
            ok = (a[0] >= -allowed_border and a[1] >= -allowed_border
                  and a[2] < w + allowed_border and a[3] < h + allowed_border)
        else:
            ok = True
        out.append(bool(v) and ok)
    return np.array(out, dtype=bool)


def anchor_targets_single(anchors, valid, gt_bboxes, gt_labels, img_shape, num_classes,
                          encode, assigner_options, allowed_border=-1, pos_weight=-1.0,
                          reg_decoded_bbox=False):
    """(labels, label_weights, bbox_targets, bbox_weights) over ALL anchors, or None.

    encode(prior_row, gt_row) -> 4 floats. PseudoSampler semantics (no sampling).
    """
    anchors = np.asarray(anchors, dtype=np.float64)
    gt_bboxes = np.asarray(gt_bboxes, dtype=np.float64).reshape(-1, 4)
    inside = inside_flags(anchors, valid, img_shape, allowed_border)
    if not inside.any():
        return None
    kept = anchors[inside]
    overlaps = assign_oracle.iou_matrix(gt_bboxes, kept)
    gt_inds, _, _ = assign_oracle.max_iou_assign(overlaps, **assigner_options)
    k = len(kept)
    labels = np.full(k, num_classes, dtype=np.int64)
    label_weights = np.zeros(k)
    bbox_targets = np.zeros((k, 4))
    bbox_weights = np.zeros((k, 4))
    for j in range(k):
        g = gt_inds[j]
        if g > 0:
            gt = gt_bboxes[g - 1]
            bbox_targets[j] = gt if reg_decoded_bbox else encode(kept[j], gt)
            bbox_weights[j] = 1.0
            labels[j] = 0 if gt_labels is None else int(gt_labels[g - 1])
            label_weights[j] = pos_weight if pos_weight > 0 else 1.0
        elif g == 0:
            label_weights[j] = 1.0
    n = len(anchors)
    return (unmap(labels, n, inside, fill=num_classes), unmap(label_weights, n, inside),
            unmap(bbox_targets, n, inside), unmap(bbox_weights, n, inside),
            int((gt_inds > 0).sum()), int((gt_inds == 0).sum()))


def rtmdet_targets_single(scores, decoded, priors, valid, gt_bboxes, gt_labels, num_classes,
                          topk=13):
    """(labels, label_weights, bbox_targets, assign_metrics) over all priors (no border test)."""
    priors = np.asarray(priors, dtype=np.float64)
    inside = np.asarray(valid, dtype=bool)
    if not inside.any():
        return None
    gt_inds, max_overlaps, _ = assign_oracle.dsl_assign(
        np.asarray(scores)[inside], np.asarray(decoded)[inside], priors[inside], gt_bboxes,
        gt_labels, topk=topk)
    gt_bboxes = np.asarray(gt_bboxes, dtype=np.float64).reshape(-1, 4)
    k = int(inside.sum())
    labels = np.full(k, num_classes, dtype=np.int64)
    label_weights = np.zeros(k)
    bbox_targets = np.zeros((k, 4))
    metrics = np.zeros(k)
    for j in range(k):
        g = gt_inds[j]
        if g > 0:
            labels[j] = int(gt_labels[g - 1])
            label_weights[j] = 1.0
            bbox_targets[j] = gt_bboxes[g - 1]
            metrics[j] = max_overlaps[j]
        elif g == 0:
            label_weights[j] = 1.0
    n = len(priors)
    return (unmap(labels, n, inside, fill=num_classes), unmap(label_weights, n, inside),
            unmap(bbox_targets, n, inside), unmap(metrics, n, inside))
