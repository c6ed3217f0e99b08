"""Non-maximum suppression: single-class, batched (class-aware) and multi-class.

Greedy NMS walks the boxes by decreasing score; a box is kept unless a box kept
before it overlaps it with IoU strictly greater than ``iou_threshold`` (a pair at
exactly the threshold survives; SPEC.md [NMS-2]).

Scores that tie make "by decreasing score" ambiguous, and upstream kernels break
such ties differently on CPU and GPU. The reference pins one order: among tied
scores the lower input index comes first, both when suppressing and in the
returned indices ([NMS-S1], strict tier). The conformance suite itself only
compares kept *sets* where scores tie.

Three ways to run the same algorithm live here:

* ``nms_reference``: the greedy loop written out, one step per kept box, over a
  precomputed IoU matrix. Read this one.
* ``nms``: the fast path through ``torchvision.ops.nms``; tested against the loop.
* ``batched_nms``: NMS that never lets boxes of different categories (classes,
  or FPN levels for proposals) suppress each other. Small inputs use the
  coordinate-offset trick (one NMS call over boxes shifted apart per category);
  large ones loop over categories, as mmcv (10000 boxes) and torchvision
  (1000 boxes on CPU) switch by size. Both give the same kept set.

``multiclass_nms`` (mmdet) and ``fast_rcnn_inference`` (detectron2) turn the
second stage's per-class scores into detections: drop the background column,
score > threshold, class-aware NMS, then the top k; detectron2 also drops
non-finite rows and clips boxes to the image first.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torchvision

from reference import boxes as _boxes

__all__ = [
    "Detections",
    "batched_nms",
    "default_split_threshold",
    "fast_rcnn_inference",
    "multiclass_nms",
    "nms",
    "nms_reference",
]

# ``batched_nms`` runs one NMS over all boxes (the coordinate-offset trick) up to
# this many boxes and a per-category loop above it. On CPU one big NMS costs
# O(N^2) while the loop costs about O(N^2 / categories), so the loop wins early;
# on a GPU the single kernel launch wins until N is large. These are
# torchvision's switches (above 4000 coordinates = 1000 boxes on CPU, 100000
# coordinates = 25000 boxes elsewhere); mmcv uses one switch, ``split_thr`` =
# 10000, on every device. The kept set does not depend on the switch.
CPU_SPLIT_THRESHOLD = 1_000
ACCELERATOR_SPLIT_THRESHOLD = 25_000


def default_split_threshold(device: torch.device) -> int:
    """Most boxes ``batched_nms`` sends through the offset trick on ``device``."""
    return CPU_SPLIT_THRESHOLD if device.type == "cpu" else ACCELERATOR_SPLIT_THRESHOLD


class Detections(NamedTuple):
    """Detections of one image, sorted by decreasing score.

    boxes: (k, 4) xyxy, the input dtype. scores: (k,). labels: (k,) int64 class
    index in [0, num_classes). box_indices: (k,) int64 row of the input box (or
    proposal) each detection came from.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    box_indices: torch.Tensor


# --------------------------------------------------------------------------- validation
def _check_boxes_scores(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold) -> None:
    if not isinstance(boxes, torch.Tensor):
        raise TypeError(f"boxes: expected a torch.Tensor, got {type(boxes).__name__}")
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"scores: expected a torch.Tensor, got {type(scores).__name__}")
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes: expected shape (N, 4), got {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        raise ValueError(f"boxes: expected a floating dtype, got {boxes.dtype}")
    if scores.dim() != 1 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"scores: expected shape ({boxes.shape[0]},) to match boxes, got {tuple(scores.shape)}"
        )
    if not scores.is_floating_point():
        raise ValueError(f"scores: expected a floating dtype, got {scores.dtype}")
    if scores.device != boxes.device:
        raise ValueError(f"scores: on {scores.device}, expected boxes' device {boxes.device}")
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, (int, float)):
        raise TypeError(f"iou_threshold: expected a float, got {type(iou_threshold).__name__}")
    if not bool(torch.isfinite(boxes).all()):
        raise ValueError("boxes: contain NaN or Inf; NMS needs finite boxes")
    if bool(torch.isnan(scores).any()):
        raise ValueError("scores: contain NaN; NMS needs comparable scores")


def _check_idxs(idxs: torch.Tensor, boxes: torch.Tensor) -> None:
    if not isinstance(idxs, torch.Tensor):
        raise TypeError(f"idxs: expected a torch.Tensor, got {type(idxs).__name__}")
    if idxs.shape != (boxes.shape[0],):
        raise ValueError(f"idxs: expected shape ({boxes.shape[0]},), got {tuple(idxs.shape)}")
    if idxs.is_floating_point() or idxs.dtype == torch.bool or idxs.is_complex():
        raise ValueError(f"idxs: expected an integer dtype, got {idxs.dtype}")
    if idxs.device != boxes.device:
        raise ValueError(f"idxs: on {idxs.device}, expected boxes' device {boxes.device}")


# --------------------------------------------------------------------------- order
def _score_order(scores: torch.Tensor) -> torch.Tensor:
    """Indices by decreasing score; ties keep the lower index first. (N,) int64."""
    return torch.sort(scores, descending=True, stable=True).indices


# --------------------------------------------------------------------------- single class
def nms_reference(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS, written out (the readable reference of ``nms``).

    Args:
        boxes: (N, 4) float xyxy, finite.
        scores: (N,) float, same device.
        iou_threshold: a box is suppressed by a kept box when their IoU is
            strictly greater than this.

    Returns:
        (K,) int64 indices into ``boxes`` of the kept boxes, by decreasing score
        (ties: lower index first).

    Memory is O(N^2) for the IoU matrix; use ``nms`` for large N.
    """
    _check_boxes_scores(boxes, scores, iou_threshold)
    return _nms_loop(boxes, scores, float(iou_threshold))


def _nms_loop(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    order = _score_order(scores)  # (N,)
    sorted_boxes = boxes[order]
    iou = _boxes.box_iou(sorted_boxes, sorted_boxes)  # (N, N), rows and columns in score order
    suppressed = torch.zeros(len(order), dtype=torch.bool, device=boxes.device)  # (N,)
    kept = []
    # Step i: the best box not yet suppressed is kept and suppresses every box
    # that overlaps it by more than the threshold (itself included, harmlessly).
    for i in range(len(order)):
        if suppressed[i]:
            continue
        kept.append(i)
        suppressed |= iou[i] > iou_threshold
    kept_positions = torch.tensor(kept, dtype=torch.int64, device=boxes.device)  # (K,)
    return order[kept_positions]


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS through ``torchvision.ops.nms``; same contract as ``nms_reference``.

    Args:
        boxes: (N, 4) float xyxy, finite.
        scores: (N,) float, same device.
        iou_threshold: suppress when IoU > iou_threshold (strict).

    Returns:
        (K,) int64 kept indices by decreasing score (ties: lower index first).
    """
    _check_boxes_scores(boxes, scores, iou_threshold)
    return _nms_fast(boxes, scores, float(iou_threshold))


def _nms_fast(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    # torchvision's kernels sort internally and may break ties either way; we
    # sort stably ourselves and hand it strictly decreasing ranks instead.
    order = _score_order(scores)  # (N,)
    ranks = torch.arange(len(order), 0, -1, device=boxes.device, dtype=torch.float32)  # (N,)
    keep_sorted = torchvision.ops.nms(boxes[order], ranks.to(boxes.dtype), iou_threshold)
    return order[keep_sorted]


# --------------------------------------------------------------------------- batched
def batched_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    idxs: torch.Tensor,
    iou_threshold: float,
    *,
    split_threshold: int | None = None,
) -> torch.Tensor:
    """NMS in which only boxes of the same category ``idxs`` suppress each other.

    Args:
        boxes: (N, 4) float xyxy, finite.
        scores: (N,) float.
        idxs: (N,) integer category of each box (class, or FPN level for RPN).
        iou_threshold: suppress when IoU > iou_threshold (strict).
        split_threshold: with N <= split_threshold the coordinate-offset trick
            runs one NMS; otherwise a loop runs one NMS per category. None
            (default) picks by device like torchvision: 1000 on CPU, 25000
            elsewhere (``default_split_threshold``). The kept set is the same
            either way; only speed and memory differ.

    Returns:
        (K,) int64 kept indices by decreasing score (ties: lower index first).
    """
    _check_boxes_scores(boxes, scores, iou_threshold)
    _check_idxs(idxs, boxes)
    if split_threshold is not None and (isinstance(split_threshold, bool)
                                        or not isinstance(split_threshold, int)):
        raise TypeError(f"split_threshold: expected an int or None, got "
                        f"{type(split_threshold).__name__}")
    return _batched_nms(boxes, scores, idxs, float(iou_threshold), split_threshold)


def _batched_nms(boxes, scores, idxs, iou_threshold, split_threshold=None):
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    if split_threshold is None:
        split_threshold = default_split_threshold(boxes.device)
    if boxes.shape[0] <= split_threshold:
        return _batched_nms_offset(boxes, scores, idxs, iou_threshold)
    return _batched_nms_per_category(boxes, scores, idxs, iou_threshold)


def _batched_nms_offset(boxes, scores, idxs, iou_threshold):
    # Shift each category's boxes into its own disjoint range so that boxes of
    # different categories cannot overlap. Upstream shifts by idx * (max + 1),
    # which assumes coordinates >= 0; shifting by the full span works for any sign.
    span = boxes.max() - boxes.min() + 1
    offsets = (idxs - idxs.min()).to(boxes.dtype) * span  # (N,)
    return _nms_fast(boxes + offsets[:, None], scores, iou_threshold)


def _batched_nms_per_category(boxes, scores, idxs, iou_threshold):
    # Sort once by score (ties: lower index first); each category's members are
    # then already in that order, so every per-category NMS gets strictly
    # decreasing ranks (as in _nms_fast) and the kept positions come out sorted.
    order = _score_order(scores)  # (N,)
    sorted_boxes, sorted_idxs = boxes[order], idxs[order]  # (N, 4), (N,)
    keep_mask = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)  # (N,)
    for category in torch.unique(idxs):
        members = torch.nonzero(sorted_idxs == category).squeeze(1)  # (n_c,) by score
        ranks = torch.arange(len(members), 0, -1, device=boxes.device).to(boxes.dtype)  # (n_c,)
        keep = torchvision.ops.nms(sorted_boxes[members], ranks, iou_threshold)  # (k_c,)
        keep_mask[members[keep]] = True
    return order[torch.nonzero(keep_mask).squeeze(1)]  # (K,) by score


# --------------------------------------------------------------------------- multi-class
def _check_multiclass(bboxes, scores, what_boxes="bboxes") -> int:
    if not isinstance(bboxes, torch.Tensor) or not isinstance(scores, torch.Tensor):
        raise TypeError(f"{what_boxes} and scores: expected torch.Tensors")
    if scores.dim() != 2 or scores.shape[1] < 2:
        raise ValueError(
            f"scores: expected shape (N, num_classes + 1) with background last, "
            f"got {tuple(scores.shape)}"
        )
    num_classes = scores.shape[1] - 1
    if bboxes.dim() != 2 or bboxes.shape[1] not in (4, 4 * num_classes):
        raise ValueError(
            f"{what_boxes}: expected shape ({scores.shape[0]}, 4) or "
            f"({scores.shape[0]}, {4 * num_classes}), got {tuple(bboxes.shape)}"
        )
    if bboxes.shape[0] != scores.shape[0]:
        raise ValueError(
            f"{what_boxes}: {bboxes.shape[0]} rows but scores has {scores.shape[0]}"
        )
    if not bboxes.is_floating_point() or not scores.is_floating_point():
        raise ValueError(f"{what_boxes} and scores: expected floating dtypes, got "
                         f"{bboxes.dtype} and {scores.dtype}")
    if bboxes.device != scores.device:
        raise ValueError(f"scores: on {scores.device}, expected {what_boxes}' device "
                         f"{bboxes.device}")
    return num_classes


def _select_and_nms(
    boxes: torch.Tensor,  # (N, C, 4)
    scores: torch.Tensor,  # (N, C) foreground scores
    score_threshold: float,
    iou_threshold: float,
    max_num: int,
) -> Detections:
    """Threshold (score > thr), class-aware NMS, keep the top ``max_num`` (< 0: all).

    Candidates are enumerated box-major, class-minor, as upstream's nonzero does.
    """
    candidates = torch.nonzero(scores > score_threshold)  # (n, 2): (box row, class)
    rows, labels = candidates[:, 0], candidates[:, 1]
    cand_boxes = boxes[rows, labels]  # (n, 4)
    cand_scores = scores[rows, labels]  # (n,)
    keep = _batched_nms(cand_boxes, cand_scores, labels, iou_threshold)  # (k,)
    if max_num >= 0:
        keep = keep[:max_num]
    return Detections(cand_boxes[keep], cand_scores[keep], labels[keep], rows[keep])


def multiclass_nms(
    bboxes: torch.Tensor,
    scores: torch.Tensor,
    score_threshold: float,
    iou_threshold: float,
    max_num: int = -1,
) -> Detections:
    """mmdet ``multiclass_nms``: per-class boxes and scores to final detections.

    Args:
        bboxes: (N, 4) class-agnostic or (N, 4 * C) per-class xyxy boxes.
        scores: (N, C + 1) scores with the background class LAST (column C),
            which is dropped.
        score_threshold: candidates need score > score_threshold (strict).
        iou_threshold: class-wise NMS suppresses IoU > iou_threshold.
        max_num: keep at most this many detections; 0 or less keeps all
            (mmdet's ``if max_num > 0``, unlike detectron2's ``topk_per_image``).

    Returns:
        ``Detections`` sorted by decreasing score; ``box_indices`` are rows of ``bboxes``.
    """
    num_classes = _check_multiclass(bboxes, scores)
    if not bool(torch.isfinite(bboxes).all()):
        raise ValueError("bboxes: contain NaN or Inf; multiclass_nms needs finite boxes")
    fg_scores = scores[:, :num_classes]  # (N, C)
    per_class = bboxes.reshape(bboxes.shape[0], bboxes.shape[1] // 4, 4)  # (N, C or 1, 4)
    per_class = per_class.expand(-1, num_classes, 4)  # (N, C, 4)
    # mmdet bbox_nms.py (2.11 and 3.3) cuts only `if max_num > 0`: 0 keeps all.
    limit = int(max_num) if max_num > 0 else -1
    return _select_and_nms(per_class, fg_scores, float(score_threshold), float(iou_threshold),
                           limit)


def fast_rcnn_inference(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    image_size: tuple[int, int],
    score_threshold: float = 0.05,
    nms_threshold: float = 0.5,
    topk_per_image: int = 100,
) -> Detections:
    """detectron2 ``fast_rcnn_inference_single_image``: second-stage detections.

    Args:
        boxes: (R, 4 * K) per-class (or (R, 4) class-agnostic) decoded xyxy boxes.
        scores: (R, K + 1) class probabilities, background LAST (dropped).
        image_size: (height, width); boxes are clipped to [0, w] x [0, h].
        score_threshold: candidates need score > score_threshold (strict).
        nms_threshold: class-wise NMS suppresses IoU > nms_threshold.
        topk_per_image: keep at most this many; < 0 keeps all.

    Rows whose boxes or scores are not finite are dropped first (they would
    poison NMS); ``box_indices`` still refer to rows of the input.

    Returns:
        ``Detections`` sorted by decreasing score.
    """
    num_classes = _check_multiclass(boxes, scores, what_boxes="boxes")
    height, width = _check_image_size(image_size)
    # 1. Drop rows with NaN/Inf anywhere in their boxes or scores.
    finite_rows = torch.nonzero(torch.isfinite(boxes).all(dim=1)
                                & torch.isfinite(scores).all(dim=1)).squeeze(1)  # (R',)
    # 2. Drop the background column and clip each class's box to the image.
    fg_scores = scores[finite_rows, :num_classes]  # (R', K)
    per_class = boxes[finite_rows].reshape(len(finite_rows), boxes.shape[1] // 4, 4)
    # per_class: (R', K or 1, 4)
    per_class = _clip_xyxy(per_class, height, width).expand(-1, num_classes, 4)  # (R', K, 4)
    # 3.-5. score > threshold, class-wise NMS, top k.
    dets = _select_and_nms(per_class, fg_scores, float(score_threshold), float(nms_threshold),
                           int(topk_per_image))
    return dets._replace(box_indices=finite_rows[dets.box_indices])


def _check_image_size(image_size) -> tuple[int, int]:
    if (not isinstance(image_size, (tuple, list)) or len(image_size) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0
                   for v in image_size)):
        raise ValueError(f"image_size: expected (height, width) with positive sizes, "
                         f"got {image_size!r}")
    return image_size[0], image_size[1]


def _clip_xyxy(boxes: torch.Tensor, height, width) -> torch.Tensor:
    """Clamp x to [0, width] and y to [0, height]; boxes (..., 4) xyxy."""
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)
