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
  or FPN levels for proposals) suppress each other: exactly ``nms`` run within
  each category ([NMS-8]). The per-category loop is the definition; on the CPU
  a faster path decides all small categories together with the kernel's own
  arithmetic, and is tested against the loop. Neither uses the coordinate-offset
  trick of mmcv and torchvision (one NMS over boxes shifted apart per category):
  shifting float32 coordinates rounds them, which moves an IoU within one
  rounding of the threshold across it.

``multiclass_nms`` (mmdet) and ``fast_rcnn_inference`` (detectron2) turn the
second stage's per-class scores into detections: drop the background column,
score > threshold, class-aware NMS, then the top k; detectron2 also drops
non-finite rows and clips boxes to the image first.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy
import torch
import torchvision

from reference import boxes as _boxes
from reference import validate as check

__all__ = [
    "Detections",
    "batched_nms",
    "fast_rcnn_inference",
    "multiclass_nms",
    "nms",
    "nms_reference",
]

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
def _check_boxes_scores(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold) -> float:
    check.boxes("boxes", boxes)
    check.tensor("scores", scores, ndim=1, dtype="floating")
    check.rows("scores", scores, boxes.shape[0], "boxes")
    check.same_device(boxes=boxes, scores=scores)
    check.no_nan("scores", scores)
    return check.number("iou_threshold", iou_threshold)


def _check_idxs(idxs: torch.Tensor, boxes: torch.Tensor) -> None:
    check.tensor("idxs", idxs, ndim=1, dtype="integer")
    check.rows("idxs", idxs, boxes.shape[0], "boxes")
    check.same_device(boxes=boxes, idxs=idxs)


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

    Memory is O(N): one row of IoUs per kept box, never the (N, N) matrix
    (SPEC.md NMS-12); use ``nms`` for speed.
    """
    threshold = _check_boxes_scores(boxes, scores, iou_threshold)
    return _nms_loop(boxes, scores, threshold)


def _nms_loop(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    order = _score_order(scores)  # (N,)
    sorted_boxes = boxes[order].to(check.compute_dtype(boxes))  # (N, 4) in score order
    suppressed = torch.zeros(len(order), dtype=torch.bool, device=boxes.device)  # (N,)
    kept = []
    # Step i: the best box not yet suppressed is kept and suppresses every box
    # that overlaps it by more than the threshold (itself included, harmlessly).
    for i in range(len(order)):
        if suppressed[i]:
            continue
        kept.append(i)
        iou_i = _boxes.box_iou(sorted_boxes[i:i + 1], sorted_boxes)[0]  # (N,)
        suppressed |= iou_i > iou_threshold
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
    threshold = _check_boxes_scores(boxes, scores, iou_threshold)
    return _nms_fast(boxes, scores, threshold)


def _nms_fast(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    # torchvision's kernels sort internally and may break ties either way; we
    # sort stably ourselves and hand it strictly decreasing ranks instead.
    # float16/bfloat16 boxes run in float32 (torchvision's CPU kernel has no half
    # types; SPEC.md VAL-2: the float32 answer).
    work = check.compute_dtype(boxes)
    order = _score_order(scores)  # (N,)
    ranks = torch.arange(len(order), 0, -1, device=boxes.device, dtype=torch.float32)  # (N,)
    keep_sorted = torchvision.ops.nms(boxes[order].to(work), ranks.to(work), iou_threshold)
    return order[keep_sorted]


# --------------------------------------------------------------------------- batched
def batched_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    idxs: torch.Tensor,
    iou_threshold: float,
    *,
    method: str = "auto",
) -> torch.Tensor:
    """NMS in which only boxes of the same category ``idxs`` suppress each other.

    Args:
        boxes: (N, 4) float xyxy, finite.
        scores: (N,) float.
        idxs: (N,) integer category of each box (class, or FPN level for RPN).
        iou_threshold: suppress when IoU > iou_threshold (strict).
        method: "loop" runs ``nms`` once per category (the readable definition,
            SPEC.md [NMS-8]); "blocks" resolves all small categories together
            (``_batched_nms_blocks``, CPU float32/float64 only); "auto" (default)
            takes "blocks" where it applies. Every method returns the same
            indices, bit for bit: none shifts coordinates (the offset trick of
            mmcv and torchvision rounds shifted float32 coordinates, [NMS-S2]).

    Returns:
        (K,) int64 kept indices by decreasing score (ties: lower index first).
    """
    threshold = _check_boxes_scores(boxes, scores, iou_threshold)
    _check_idxs(idxs, boxes)
    if method not in BATCHED_NMS_METHODS:
        raise ValueError(f"method: expected one of {list(BATCHED_NMS_METHODS)}, got {method!r}")
    if method == "blocks" and not _blocks_apply(boxes):
        raise ValueError(f"method: 'blocks' needs float32 or float64 boxes on the CPU, got "
                         f"{boxes.dtype} on {boxes.device}")
    return _batched_nms(boxes, scores, idxs, threshold, method)


BATCHED_NMS_METHODS = ("auto", "loop", "blocks")


def _batched_nms(boxes, scores, idxs, iou_threshold, method="auto"):
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    boxes = boxes.to(check.compute_dtype(boxes))  # torchvision's CPU kernel has no half types
    if method == "loop" or (method == "auto" and not _blocks_apply(boxes)):
        return _batched_nms_per_category(boxes, scores, idxs, iou_threshold)
    return _batched_nms_blocks(boxes, scores, idxs, iou_threshold)


def _batched_nms_per_category(boxes, scores, idxs, iou_threshold):
    """The definition: one ``nms`` per category, kept boxes merged by score.

    Sort once by score (ties: lower index first); each category's members are
    then already in that order, so every per-category NMS gets strictly
    decreasing ranks (as in _nms_fast) and the kept positions come out sorted.
    """
    order = _score_order(scores)  # (N,)
    sorted_boxes, sorted_idxs = boxes[order], idxs[order]  # (N, 4), (N,)
    keep_mask = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)  # (N,)
    for category in torch.unique(idxs):
        members = torch.nonzero(sorted_idxs == category).squeeze(1)  # (n_c,) by score
        ranks = torch.arange(len(members), 0, -1, device=boxes.device).to(boxes.dtype)  # (n_c,)
        keep = torchvision.ops.nms(sorted_boxes[members], ranks, iou_threshold)  # (k_c,)
        keep_mask[members[keep]] = True
    return order[torch.nonzero(keep_mask).squeeze(1)]  # (K,) by score


# ``_batched_nms_blocks`` resolves categories of at most this many boxes together
# (a padded (categories, B, B) IoU block costs about as much as one ``nms`` call's
# overhead at B = 128); larger categories get one ``nms`` call each, whose
# O(B^2) work then dwarfs the call. Each padded block holds at most
# _BLOCK_ELEMENTS pairs: below torch's intra-op grain (32768), so that every
# block op runs on one thread like the NMS kernel itself (no waits for a core).
_SMALL_CATEGORY = 128
_BLOCK_ELEMENTS = 1 << 15
# Rounds of the parallel greedy resolution before handing the rest to the loop
# (a chain of boxes each suppressing the next needs one round per link).
_MAX_ROUNDS = 32


def _blocks_apply(boxes: torch.Tensor) -> bool:
    """The block path reproduces torchvision's CPU kernel arithmetic (float32/64 only)."""
    return boxes.device.type == "cpu" and boxes.dtype in (torch.float32, torch.float64)


def _batched_nms_blocks(boxes, scores, idxs, iou_threshold):
    """Per-category NMS, all small categories at once; same result as the loop.

    Just an optimisation of ``_batched_nms_per_category`` (tested against it):
    per-category NMS costs one kernel call per category, which dominates when
    there are many small categories (80 classes x a few boxes). Here:

    1. order the boxes by category, by score within a category;
    2. categories with more than _SMALL_CATEGORY boxes: one ``nms`` call each;
    3. the others, padded into (categories, B) slots: the IoU of every pair in
       the same category, with the CPU kernel's own float arithmetic, gives the
       edges "i suppresses j if i is kept" (i before j, IoU > threshold);
    4. greedy NMS on those edges, all categories in parallel: a box is kept once
       every box with an edge into it is dropped, and dropped as soon as one of
       them is kept. Each round decides at least the first open box of every
       category, so this is exactly the sequential greedy loop's outcome.
    """
    device = boxes.device
    # index_select rather than x[index] throughout: advanced indexing splits even
    # a few thousand elements over all threads, and on a busy machine every such
    # split waits for a core (tens of ms each on 2 shared cores).
    order = _score_order(scores)  # (N,) input rows by score
    by_category = torch.sort(idxs.index_select(0, order), stable=True).indices  # (N,) in `order`
    members = order.index_select(0, by_category)  # (N,) rows, category-major, by score inside
    _, category_of_slot, counts = torch.unique_consecutive(
        idxs.index_select(0, members), return_inverse=True, return_counts=True)  # (N,), (C,)
    starts = torch.cumsum(counts, 0) - counts  # (C,) first slot of each category
    kept = torch.zeros(len(members), dtype=torch.bool, device=device)  # (N,) over `members`

    # 2. large categories: one kernel call each
    counts_list, starts_list = counts.tolist(), starts.tolist()
    for start, count in zip(starts_list, counts_list):
        if count > _SMALL_CATEGORY:
            rows = members[start:start + count]  # (n_c,) by score
            ranks = torch.arange(count, 0, -1, device=device).to(boxes.dtype)  # (n_c,)
            keep = torchvision.ops.nms(boxes.index_select(0, rows), ranks, iou_threshold)
            kept[start + keep] = True

    # 3. small categories: suppression edges from padded IoU blocks
    is_small = counts <= _SMALL_CATEGORY  # (C,)
    small = torch.nonzero(is_small).squeeze(1)  # (C_s,)
    if len(small):
        sources, targets = [], []
        for chunk, width in _padded_chunks(counts, small):
            src, dst = _suppression_edges(boxes, members, starts[chunk], counts[chunk],
                                          width, iou_threshold)
            sources.append(src)
            targets.append(dst)
        open_slots = is_small.index_select(0, category_of_slot)  # (N,)
        # 4. parallel greedy resolution over the edges
        decided = _greedy_over_edges(torch.cat(sources), torch.cat(targets), open_slots)
        if decided is None:  # a long suppression chain: the loop is as fast, and exact
            return _batched_nms_per_category(boxes, scores, idxs, iou_threshold)
        kept |= decided

    # kept slots back to input rows, by score: a slot's position in `order` is its rank,
    # so marking the kept ranks and reading `order` where marked keeps score order
    kept_at_rank = torch.zeros_like(kept).scatter_(0, by_category, kept)  # (N,) over `order`
    return order[kept_at_rank]  # (K,)


def _padded_chunks(counts, small):
    """(categories, width) chunks of the small categories for ``_suppression_edges``.

    One chunk when all fit in _BLOCK_ELEMENTS padded pairs; otherwise categories
    are grouped by size class (at most 2^k boxes) so that padding stays below 4x.
    """
    width = int(counts[small].max())
    if len(small) * width * width <= _BLOCK_ELEMENTS:
        yield small, width
        return
    size_class = torch.ceil(torch.log2(counts[small].double())).long()  # (C_s,)
    for k in torch.unique(size_class).tolist():
        group = small[size_class == k]  # (C_k,) categories of at most 2^k boxes
        width = int(counts[group].max())
        step = max(1, _BLOCK_ELEMENTS // (width * width))
        for first in range(0, len(group), step):
            yield group[first:first + step], width


def _suppression_edges(boxes, members, starts, counts, width, iou_threshold):
    """Edges (i, j), slot i before slot j in one category, with IoU(i, j) > threshold.

    boxes: (N, 4); members: (N,) rows in slot order; starts, counts: (C,) slots of
    each category, all counts <= width. The IoU is computed as torchvision's CPU
    ``nms`` kernel computes it (areas first, union = (area_i + area_j) - inter,
    compared as ``double(iou) > threshold``), so each edge is the kernel's own
    decision. Returns source and target slots (E,), (E,).
    """
    device = boxes.device
    position = torch.arange(width, device=device)  # (B,)
    valid = position < counts[:, None]  # (C, B)
    slot = starts[:, None] + torch.where(valid, position, 0)  # (C, B) padding: first box
    # index_select: advanced indexing of (N, 4) wakes every thread even for small N
    b = boxes.index_select(0, members[slot].flatten()).view(*slot.shape, 4)  # (C, B, 4)
    x1, y1, x2, y2 = b.unbind(-1)  # (C, B) each
    area = (x2 - x1) * (y2 - y1)  # (C, B)
    w = (torch.minimum(x2[:, :, None], x2[:, None, :])
         - torch.maximum(x1[:, :, None], x1[:, None, :])).clamp_(min=0)  # (C, B, B)
    h = (torch.minimum(y2[:, :, None], y2[:, None, :])
         - torch.maximum(y1[:, :, None], y1[:, None, :])).clamp_(min=0)  # (C, B, B)
    inter = w.mul_(h)  # (C, B, B)
    union = (area[:, :, None] + area[:, None, :]).sub_(inter)  # (C, B, B)
    suppresses = inter.div_(union) > _threshold_in(boxes.dtype, iou_threshold)  # (C, B, B)
    # only an earlier (higher-scored) box suppresses a later real one; padding
    # slots come last, so as sources they reach only padding
    suppresses &= (position[:, None] < position[None, :]) & valid[:, None, :]
    c, i, j = torch.nonzero(suppresses, as_tuple=True)  # (E,) each
    return slot[c, i], slot[c, j]


def _threshold_in(dtype: torch.dtype, iou_threshold: float) -> float:
    """t in ``dtype`` with ``iou > t`` (in dtype) exactly when ``double(iou) > iou_threshold``.

    The kernel compares a float IoU with a double threshold; comparing float32
    tensors with 0.3 would round 0.3 up to 0.30000001 and keep a box at that IoU.
    The largest float32 not above the threshold gives the same decisions.
    """
    if dtype != torch.float32:
        return iou_threshold
    t = numpy.float32(iou_threshold)
    if float(t) > iou_threshold:
        t = numpy.nextafter(t, numpy.float32(-numpy.inf))
    return float(t)


def _greedy_over_edges(src, dst, open_):
    """(N,) bool kept slots of greedy NMS given its suppression edges src -> dst.

    open_: (N,) bool slots to decide (the others stay False). A slot is kept when
    no open or kept slot has an edge into it, dropped when a kept one has.
    Returns None if _MAX_ROUNDS rounds leave slots open.
    """
    open_ = open_.clone()
    kept = torch.zeros_like(open_)
    for _ in range(_MAX_ROUNDS):
        hit_by_kept = torch.zeros_like(open_)
        hit_by_kept[dst[kept[src]]] = True
        hit_by_open = torch.zeros_like(open_)
        hit_by_open[dst[open_[src]]] = True
        keep_now = open_ & ~hit_by_kept & ~hit_by_open
        kept |= keep_now
        open_ &= ~(keep_now | hit_by_kept)
        if not bool(open_.any()):
            return kept
        live = open_[dst] & (open_[src] | kept[src])  # dropped sources no longer matter
        src, dst = src[live], dst[live]
    return None


# --------------------------------------------------------------------------- multi-class
def _check_multiclass(bboxes, scores, what_boxes="bboxes") -> int:
    check.tensor("scores", scores, ndim=2, dtype="floating")
    if scores.shape[1] < 2:
        raise check.fail("scores", "shape (N, num_classes + 1) with background last", scores)
    num_classes = scores.shape[1] - 1
    check.tensor(what_boxes, bboxes, ndim=2, dtype="floating")
    if bboxes.shape[1] not in (4, 4 * num_classes):
        raise check.fail(what_boxes, f"shape (N, 4) or (N, {4 * num_classes})", bboxes)
    check.rows(what_boxes, bboxes, scores.shape[0], "scores")
    check.same_device(**{what_boxes: bboxes, "scores": scores})
    return num_classes


def _select_and_nms(
    boxes: torch.Tensor,  # (N, C, 4)
    scores: torch.Tensor,  # (N, C) foreground scores
    score_threshold: float,
    iou_threshold: float,
    max_num: int,
    allowed: torch.Tensor | None = None,  # (N, C) bool, or None for all
) -> Detections:
    """Threshold (score > thr), class-aware NMS, keep the top ``max_num`` (< 0: all).

    Candidates are enumerated box-major, class-minor, as upstream's nonzero does;
    ``allowed`` (if given) masks out (box, class) pairs before the threshold.
    """
    above = scores > score_threshold  # (N, C)
    if allowed is not None:
        above = above & allowed
    candidates = torch.nonzero(above)  # (n, 2): (box row, class)
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
    check.in_range("bboxes", bboxes)
    check.no_nan("scores", scores)
    score_threshold = check.number("score_threshold", score_threshold)
    iou_threshold = check.number("iou_threshold", iou_threshold)
    max_num = check.integer("max_num", max_num)
    fg_scores = scores[:, :num_classes]  # (N, C)
    per_class = bboxes.reshape(bboxes.shape[0], bboxes.shape[1] // 4, 4)  # (N, C or 1, 4)
    per_class = per_class.expand(-1, num_classes, 4)  # (N, C, 4)
    # mmdet bbox_nms.py (2.11 and 3.3) cuts only `if max_num > 0`: 0 keeps all.
    limit = int(max_num) if max_num > 0 else -1
    return _select_and_nms(per_class, fg_scores, score_threshold, iou_threshold, limit)


def fast_rcnn_inference(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    image_size: tuple[int, int],
    score_threshold: float = 0.05,
    nms_threshold: float = 0.5,
    topk_per_image: int = 100,
    min_box_size: float = 0.0,
) -> Detections:
    """detectron2 ``fast_rcnn_inference_single_image``: second-stage detections.

    Args:
        boxes: (R, 4 * K) per-class (or (R, 4) class-agnostic) decoded xyxy boxes.
        scores: (R, K + 1) class probabilities, background LAST (dropped).
        image_size: (height, width); boxes are clipped to [0, w] x [0, h].
        score_threshold: candidates need score > score_threshold (strict).
        nms_threshold: class-wise NMS suppresses IoU > nms_threshold.
        topk_per_image: keep at most this many; < 0 keeps all.
        min_box_size: when > 0, a clipped box needs width and height >= it
            (torchvision's ``remove_small_boxes(1e-2)`` before NMS; detectron2
            has no such step: 0).

    Rows whose boxes or scores are not finite are dropped first (they would
    poison NMS); ``box_indices`` still refer to rows of the input.

    Returns:
        ``Detections`` sorted by decreasing score.
    """
    num_classes = _check_multiclass(boxes, scores, what_boxes="boxes")
    height, width = check.size("image_size", image_size)
    score_threshold = check.number("score_threshold", score_threshold)
    nms_threshold = check.number("nms_threshold", nms_threshold)
    topk_per_image = check.integer("topk_per_image", topk_per_image)
    # 1. Drop rows with NaN/Inf anywhere in their boxes or scores.
    finite_rows = torch.nonzero(torch.isfinite(boxes).all(dim=1)
                                & torch.isfinite(scores).all(dim=1)).squeeze(1)  # (R',)
    # 2. Drop the background column and clip each class's box to the image.
    fg_scores = scores[finite_rows, :num_classes]  # (R', K)
    per_class = boxes[finite_rows].reshape(len(finite_rows), boxes.shape[1] // 4, 4)
    # per_class: (R', K or 1, 4)
    per_class = _clip_xyxy(per_class, height, width).expand(-1, num_classes, 4)  # (R', K, 4)
    # 3. (torchvision) boxes narrower or lower than min_box_size go.
    wide = None
    if min_box_size > 0:
        wide = ((per_class[..., 2] - per_class[..., 0]) >= min_box_size) & \
            ((per_class[..., 3] - per_class[..., 1]) >= min_box_size)  # (R', K)
    # 4.-6. score > threshold, class-wise NMS, top k.
    dets = _select_and_nms(per_class, fg_scores, score_threshold, nms_threshold, topk_per_image,
                           wide)
    return dets._replace(box_indices=finite_rows[dets.box_indices])


def _clip_xyxy(boxes: torch.Tensor, height, width) -> torch.Tensor:
    """Clamp x to [0, width] and y to [0, height]; boxes (..., 4) xyxy (``boxes.clip_boxes``)."""
    return _boxes.clip_boxes(boxes, height, width)
