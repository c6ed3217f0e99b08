"""Loop-based float64 oracles for RPN proposal selection (mmdet and detectron2).

Written from the step lists of SPEC.md [PROP-*] and the seeds' listings of
mmdet ``RPNHead._get_bboxes`` and detectron2 ``find_top_rpn_proposals``; imports
nothing from the reference. Each returns (boxes (k,4), scores (k,), level_ids (k,),
anchor_indices (k,)) where anchor_indices index the levels concatenated.
"""

from __future__ import annotations

import math

import numpy as np

from oracles.nms import batched_nms


def mmdet_delta_decode(anchor, delta, means, stds, max_shape, wh_ratio_clip=16 / 1000):
    """mmdet DeltaXYWHBBoxCoder.decode of one box, clipped to max_shape = (h, w)."""
    dx, dy, dw, dh = (float(delta[i]) * stds[i] + means[i] for i in range(4))
    limit = abs(math.log(wh_ratio_clip))
    dw = min(max(dw, -limit), limit)
    dh = min(max(dh, -limit), limit)
    pw, ph = anchor[2] - anchor[0], anchor[3] - anchor[1]
    px, py = anchor[0] + 0.5 * pw, anchor[1] + 0.5 * ph
    gw, gh = pw * math.exp(dw), ph * math.exp(dh)
    gx, gy = px + pw * dx, py + ph * dy
    height, width = max_shape
    x1 = min(max(gx - 0.5 * gw, 0.0), width)
    y1 = min(max(gy - 0.5 * gh, 0.0), height)
    x2 = min(max(gx + 0.5 * gw, 0.0), width)
    y2 = min(max(gy + 0.5 * gh, 0.0), height)
    return [x1, y1, x2, y2]


def _top_k(level_scores, k, sort_small):
    """mmdet (sort_small=False): ``if 0 < k < n`` take the top k, else all, unsorted.
    detectron2 (sort_small=True): ``topk(min(n, k))``, so k = 0 takes nothing."""
    n = len(level_scores)
    ranked = sorted(range(n), key=lambda i: (-float(level_scores[i]), i))
    if sort_small:
        return ranked[:min(n, k)]
    if 0 < k < n:
        return ranked[:k]
    return list(range(n))


def _finish(boxes, scores, levels, rows, iou_threshold, limit):
    keep = batched_nms(np.reshape(boxes, (-1, 4)), scores, levels, iou_threshold)[:limit]
    return (np.reshape([boxes[k] for k in keep], (-1, 4)),
            np.array([scores[k] for k in keep], dtype=np.float64),
            np.array([levels[k] for k in keep], dtype=np.int64),
            np.array([rows[k] for k in keep], dtype=np.int64))


def mmdet_rpn_proposals(scores, deltas, anchors, image_size, nms_pre, iou_threshold,
                        min_bbox_size, max_per_img, means=(0, 0, 0, 0), stds=(1, 1, 1, 1),
                        version="2.x"):
    """mmdet 2.11 rpn_head.py keeps w >= min_bbox_size and h >= min_bbox_size;
    mmdet 3.3 keeps w > min_bbox_size and h > min_bbox_size (version "3.x")."""
    def big_enough(side):
        return side > min_bbox_size if version == "3.x" else side >= min_bbox_size

    boxes, kept_scores, levels, rows = [], [], [], []
    start = 0
    for level, (s, d, a) in enumerate(zip(scores, deltas, anchors)):
        s, d, a = (np.asarray(v, dtype=np.float64) for v in (s, d, a))
        for i in _top_k(s, nms_pre, sort_small=False):
            box = mmdet_delta_decode(a[i], d[i], means, stds, image_size)
            if big_enough(box[2] - box[0]) and big_enough(box[3] - box[1]):
                boxes.append(box)
                kept_scores.append(float(s[i]))
                levels.append(level)
                rows.append(start + i)
        start += len(s)
    return _finish(boxes, kept_scores, levels, rows, iou_threshold, max_per_img)


def find_top_rpn_proposals(proposals, logits, image_size, nms_thresh, pre_nms_topk,
                           post_nms_topk, min_box_size, training):
    height, width = image_size
    boxes, kept_scores, levels, rows = [], [], [], []
    start = 0
    for level, (p, s) in enumerate(zip(proposals, logits)):
        p, s = np.asarray(p, dtype=np.float64), np.asarray(s, dtype=np.float64)
        for i in _top_k(s, pre_nms_topk, sort_small=True):
            if not (np.isfinite(p[i]).all() and np.isfinite(s[i])):
                if training:
                    raise FloatingPointError("non-finite proposal in training")
                continue
            x1, y1, x2, y2 = (float(v) for v in p[i])
            x1, x2 = (min(max(v, 0.0), width) for v in (x1, x2))
            y1, y2 = (min(max(v, 0.0), height) for v in (y1, y2))
            if x2 - x1 > min_box_size and y2 - y1 > min_box_size:
                boxes.append([x1, y1, x2, y2])
                kept_scores.append(float(s[i]))
                levels.append(level)
                rows.append(start + i)
        start += len(s)
    return _finish(boxes, kept_scores, levels, rows, nms_thresh, post_nms_topk)
