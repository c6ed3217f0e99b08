"""Loop-based float64 oracles for NMS, batched NMS and multi-class NMS.

Written from the step lists in SPEC.md (NMS clauses), one box at a time; imports
nothing from the reference. Ties in score are walked lower index first, so the
oracle agrees with any implementation wherever the kept set does not depend on
how ties are broken.
"""

from __future__ import annotations

import numpy as np


def iou(a, b) -> float:
    """IoU of two xyxy boxes; 0 when the union is empty."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(iw, 0.0) * max(ih, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def score_order(scores) -> list[int]:
    """Indices by decreasing score, ties lower index first."""
    return sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))


def nms(boxes, scores, iou_threshold) -> list[int]:
    """Greedy NMS: walk by decreasing score, keep a box unless a kept box has IoU > thr."""
    boxes = np.asarray(boxes, dtype=np.float64)
    kept: list[int] = []
    for i in score_order(scores):
        if all(iou(boxes[i], boxes[j]) <= iou_threshold for j in kept):
            kept.append(i)
    return kept


def batched_nms(boxes, scores, idxs, iou_threshold) -> list[int]:
    """NMS separately per category, then all kept boxes by decreasing score."""
    boxes = np.asarray(boxes, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    kept: list[int] = []
    for category in sorted(set(int(c) for c in idxs)):
        members = [i for i in range(len(idxs)) if int(idxs[i]) == category]
        kept += [members[k] for k in nms(boxes[members], scores[members], iou_threshold)]
    return sorted(kept, key=lambda i: (-float(scores[i]), i))


def multiclass_nms(bboxes, scores, score_threshold, iou_threshold, max_num=-1):
    """mmdet multiclass_nms. Returns (boxes (k,4), scores (k,), labels (k,), rows (k,)).

    scores has the background class last; bboxes is (N, 4) or (N, 4 * C).
    """
    bboxes = np.asarray(bboxes, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    num_classes = scores.shape[1] - 1
    cand_boxes, cand_scores, cand_labels, cand_rows = [], [], [], []
    for row in range(scores.shape[0]):
        for c in range(num_classes):
            if scores[row, c] > score_threshold:
                box = bboxes[row, 4 * c:4 * c + 4] if bboxes.shape[1] > 4 else bboxes[row, :4]
                cand_boxes.append(box)
                cand_scores.append(scores[row, c])
                cand_labels.append(c)
                cand_rows.append(row)
    keep = batched_nms(np.reshape(cand_boxes, (-1, 4)), cand_scores, cand_labels, iou_threshold)
    if max_num > 0:  # mmdet: max_num <= 0 keeps all
        keep = keep[:max_num]
    return (np.reshape([cand_boxes[k] for k in keep], (-1, 4)),
            np.array([cand_scores[k] for k in keep], dtype=np.float64),
            np.array([cand_labels[k] for k in keep], dtype=np.int64),
            np.array([cand_rows[k] for k in keep], dtype=np.int64))


def fast_rcnn_inference(boxes, scores, image_size, score_threshold, nms_threshold, topk):
    """detectron2 fast_rcnn_inference_single_image, same return as multiclass_nms."""
    boxes = np.array(boxes, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    height, width = image_size
    num_classes = scores.shape[1] - 1
    per_class = boxes.shape[1] > 4
    cand_boxes, cand_scores, cand_labels, cand_rows = [], [], [], []
    for row in range(scores.shape[0]):
        if not (np.isfinite(boxes[row]).all() and np.isfinite(scores[row]).all()):
            continue
        for c in range(num_classes):
            if not scores[row, c] > score_threshold:
                continue
            x1, y1, x2, y2 = boxes[row, 4 * c:4 * c + 4] if per_class else boxes[row, :4]
            clip = lambda v, hi: min(max(v, 0.0), hi)  # noqa: E731
            cand_boxes.append([clip(x1, width), clip(y1, height), clip(x2, width),
                               clip(y2, height)])
            cand_scores.append(scores[row, c])
            cand_labels.append(c)
            cand_rows.append(row)
    keep = batched_nms(np.reshape(cand_boxes, (-1, 4)), cand_scores, cand_labels, nms_threshold)
    if topk >= 0:
        keep = keep[:topk]
    return (np.reshape([cand_boxes[k] for k in keep], (-1, 4)),
            np.array([cand_scores[k] for k in keep], dtype=np.float64),
            np.array([cand_labels[k] for k in keep], dtype=np.int64),
            np.array([cand_rows[k] for k in keep], dtype=np.int64))
