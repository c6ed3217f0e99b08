"""RPN proposal selection: from per-level objectness and boxes to a few proposals.

Both flavours follow the same outline for one image, with FPN levels kept apart
(proposals of different levels never suppress each other in NMS):

    mmdet ``RPNHead._get_bboxes`` (2.x)        detectron2 ``find_top_rpn_proposals``
    (3.x: ``_predict_by_feat_single``)
    1. per level, top ``nms_pre`` by score    1. per level, top ``pre_nms_topk`` by logit
    2. decode deltas, clipped to the image    2. (proposals arrive decoded)
                                              3. drop non-finite rows (raise in training)
                                              4. clip to the image
    3. keep w >= min_bbox_size and            5. keep w > min_size and h > min_size
       h >= min_bbox_size (3.x: w > and h >)     (strict: zero-size boxes always go)
    4. NMS by level (IoU > 0.7 suppresses)    6. NMS by level (IoU > 0.7 suppresses)
    5. first ``max_per_img``                  7. first ``post_nms_topk``

Inputs are per level lists for ONE image, anchors/proposals in the order of the
flattened head output (locations row-major, anchors innermost); a batch is a
loop over images in the caller. "Top k by score" breaks ties by the lower index
(stable sort); mmdet leaves a level with at most ``nms_pre`` anchors in its
original order instead of sorting it, which the reference copies.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

import torch

from reference import coders as _coders
from reference import validate as check
from reference.nms import _batched_nms, _clip_xyxy

__all__ = [
    "MMDET_RPN_VERSIONS",
    "MmdetRpnVersion",
    "Proposals",
    "find_top_rpn_proposals",
    "mmdet_rpn_proposals",
]


class Proposals(NamedTuple):
    """Proposals of one image, by decreasing score.

    boxes: (k, 4) xyxy. scores: (k,) the score or logit they were ranked by.
    level_ids: (k,) int64 FPN level index (0 = first list entry).
    anchor_indices: (k,) int64 row in the concatenation of all levels' inputs.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    level_ids: torch.Tensor
    anchor_indices: torch.Tensor


@dataclasses.dataclass(frozen=True)
class MmdetRpnVersion:
    """What changed in mmdet's RPN proposal selection between 2.x and 3.x [PROP-2, PROP-10].

    strict_size_filter: keep ``w > min_bbox_size and h > min_bbox_size`` (3.x)
        instead of ``>=`` (2.x). At the configs' ``min_bbox_size=0`` 3.x drops the
        proposals clipped flat against the image border; 2.x keeps them. (2.x
        skips the filter when ``min_bbox_size <= 0`` and 3.x when it is < 0; on
        finite, clipped boxes that changes nothing, since w, h >= 0 always pass.)
    source: the upstream file and lines.
    """

    name: str
    strict_size_filter: bool
    source: str


MMDET_RPN_VERSIONS = {
    "2.x": MmdetRpnVersion(
        "2.x", strict_size_filter=False,
        source="mmdet 2.11 mmdet/models/dense_heads/rpn_head.py:221-226 (_get_bboxes)"),
    "3.x": MmdetRpnVersion(
        "3.x", strict_size_filter=True,
        source="mmdet 3.3 mmdet/models/dense_heads/rpn_head.py:276-278 (_bbox_post_process)"),
}


# --------------------------------------------------------------------------- helpers
def _check_levels(scores, boxes_like, scores_name, boxes_name, extra=None):
    """Per-level lists of equal length: scores (A_l,) floating, boxes (A_l, 4) floating."""
    lists = [(boxes_name, boxes_like)] + ([extra] if extra else [])
    scores = check.sequence(scores_name, scores, of="tensors")
    if not scores:
        raise check.fail(scores_name, "at least one level", scores)
    for name, values in lists:
        check.sequence(name, values, length=len(scores), of="tensors", like=scores_name)
    for level, s in enumerate(scores):
        check.tensor(f"{scores_name}[{level}]", s, ndim=1, dtype="floating")
        for name, values in lists:
            b = check.tensor(f"{name}[{level}]", values[level], ndim=2, last=4, dtype="floating")
            check.rows(f"{name}[{level}]", b, s.shape[0], f"{scores_name}[{level}]")
            check.same_device(**{f"{scores_name}[0]": scores[0], f"{name}[{level}]": b})


def _top_k_per_level(scores: Sequence[torch.Tensor], k: int, sort_small_levels: bool):
    """Indices (into the levels concatenated) of each level's top-k scores.

    Returns (indices (n,) int64, level_ids (n,) int64).
    ``sort_small_levels=False`` is mmdet's rule (``if 0 < nms_pre < count``):
    k <= 0 keeps everything and a level with at most k entries keeps its
    original order. ``sort_small_levels=True`` is detectron2's
    (``topk(min(count, k))``): every level is sorted and k = 0 keeps nothing.
    """
    indices, level_ids, start = [], [], 0
    for level, level_scores in enumerate(scores):
        count = level_scores.shape[0]
        if sort_small_levels:
            order = torch.sort(level_scores, descending=True, stable=True).indices[:max(k, 0)]
        elif 0 < k < count:
            order = torch.sort(level_scores, descending=True, stable=True).indices[:k]
        else:
            order = torch.arange(count, device=level_scores.device)
        indices.append(order + start)
        level_ids.append(torch.full_like(order, level))
        start += count
    return torch.cat(indices), torch.cat(level_ids)


# --------------------------------------------------------------------------- mmdet
def mmdet_rpn_proposals(
    scores: Sequence[torch.Tensor],
    deltas: Sequence[torch.Tensor],
    anchors: Sequence[torch.Tensor],
    image_size: tuple[int, int],
    *,
    nms_pre: int = 1000,
    iou_threshold: float = 0.7,
    min_bbox_size: float = 0.0,
    max_per_img: int = 1000,
    target_means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
    target_stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    version: str = "2.x",
) -> Proposals:
    """mmdet RPN proposals for one image (2.x ``RPNHead._get_bboxes``, 3.x
    ``RPNHead._predict_by_feat_single`` + ``_bbox_post_process``).

    Args:
        scores: per level (A_l,) objectness scores after the activation
            (sigmoid, or softmax foreground column).
        deltas: per level (A_l, 4) predicted (dx, dy, dw, dh).
        anchors: per level (A_l, 4) xyxy anchors.
        image_size: (height, width) of the input image, the decode's max_shape.
        nms_pre: per level, keep the top ``nms_pre`` scores (<= 0: all).
        iou_threshold: NMS by level suppresses IoU > iou_threshold.
        min_bbox_size: drop proposals with width or height < min_bbox_size
            (version "3.x": <=).
        max_per_img: keep at most this many after NMS.
        target_means, target_stds: of the DeltaXYWHBBoxCoder (RPN: 0 and 1).
        version: "2.x" (default; the Faster R-CNN notes follow mmdet 2.11) or
            "3.x" (mmdet 3.3), a key of ``MMDET_RPN_VERSIONS``.

    Returns:
        ``Proposals``; scores are the input scores.
    """
    _check_levels(scores, deltas, "scores", "deltas", extra=("anchors", anchors))
    height, width = check.size("image_size", image_size)
    nms_pre = check.integer("nms_pre", nms_pre)
    max_per_img = check.integer("max_per_img", max_per_img, low=0)
    iou_threshold = check.number("iou_threshold", iou_threshold)
    min_bbox_size = check.number("min_bbox_size", min_bbox_size)
    rule = MMDET_RPN_VERSIONS[check.choice("version", version, sorted(MMDET_RPN_VERSIONS))]
    # 1. Top nms_pre per level.
    picked, level_ids = _top_k_per_level(scores, nms_pre, sort_small_levels=False)  # (n,)
    all_scores = torch.cat(list(scores))[picked]  # (n,)
    all_deltas = torch.cat(list(deltas))[picked]  # (n, 4)
    all_anchors = torch.cat(list(anchors))[picked]  # (n, 4)
    # 2. Decode, clipped to the image.
    coder = _coders.DeltaXYWHBBoxCoder(target_means=target_means, target_stds=target_stds)
    boxes = coder.decode(all_anchors, all_deltas, max_shape=(height, width))  # (n, 4)
    # 3. Drop small boxes: 2.x keeps a side equal to min_bbox_size, 3.x drops it.
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    if rule.strict_size_filter:
        big = torch.nonzero((w > min_bbox_size) & (h > min_bbox_size)).squeeze(1)  # (n',)
    else:
        big = torch.nonzero((w >= min_bbox_size) & (h >= min_bbox_size)).squeeze(1)  # (n',)
    # 4. NMS within each level; 5. the best max_per_img.
    keep = big[_batched_nms(boxes[big], all_scores[big], level_ids[big],
                            iou_threshold)][:max_per_img]
    return Proposals(boxes[keep], all_scores[keep], level_ids[keep], picked[keep])


# --------------------------------------------------------------------------- detectron2
def find_top_rpn_proposals(
    proposals: Sequence[torch.Tensor],
    logits: Sequence[torch.Tensor],
    image_size: tuple[int, int],
    *,
    nms_thresh: float = 0.7,
    pre_nms_topk: int = 1000,
    post_nms_topk: int = 1000,
    min_box_size: float = 0.0,
    training: bool = False,
) -> Proposals:
    """detectron2 ``find_top_rpn_proposals`` for one image.

    Args:
        proposals: per level (A_l, 4) decoded xyxy proposals.
        logits: per level (A_l,) objectness logits.
        image_size: (height, width); proposals are clipped to [0, w] x [0, h].
        nms_thresh: NMS by level suppresses IoU > nms_thresh.
        pre_nms_topk: per level, keep the top ``min(A_l, pre_nms_topk)`` logits
            (detectron2 configs: 2000 training, 1000 inference); 0 keeps
            nothing (unlike mmdet's ``nms_pre``, where <= 0 means all).
        post_nms_topk: keep at most this many after NMS (1000 in both).
        min_box_size: keep boxes with width > min_box_size AND height >
            min_box_size (strict, so zero-size boxes are always dropped).
        training: if True, a non-finite box or logit among the top-k raises
            FloatingPointError ("training has diverged"); otherwise such rows
            are dropped.

    Returns:
        ``Proposals``; scores are the logits.
    """
    _check_levels(logits, proposals, "logits", "proposals")
    height, width = check.size("image_size", image_size)
    # upstream's topk(min(A, k)) raises on a negative k
    pre_nms_topk = check.integer("pre_nms_topk", pre_nms_topk, low=0)
    post_nms_topk = check.integer("post_nms_topk", post_nms_topk, low=0)
    nms_thresh = check.number("nms_thresh", nms_thresh)
    min_box_size = check.number("min_box_size", min_box_size)
    training = check.flag("training", training)
    # 1. Top pre_nms_topk per level, then all levels together.
    picked, level_ids = _top_k_per_level(logits, pre_nms_topk, sort_small_levels=True)  # (n,)
    scores = torch.cat(list(logits))[picked]  # (n,)
    boxes = torch.cat(list(proposals))[picked]  # (n, 4)
    # 2. Non-finite rows: a diverged model in training, dropped at inference.
    finite = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)  # (n,)
    if not bool(finite.all()):
        if training:
            raise FloatingPointError(
                "find_top_rpn_proposals: predicted boxes or logits contain Inf/NaN; "
                "training has diverged")
        rows = torch.nonzero(finite).squeeze(1)
        picked, level_ids, scores, boxes = picked[rows], level_ids[rows], scores[rows], boxes[rows]
    # 3. Clip, then keep boxes strictly larger than min_box_size on both sides.
    boxes = _clip_xyxy(boxes, height, width)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    big = torch.nonzero((w > min_box_size) & (h > min_box_size)).squeeze(1)  # (n',)
    # 4. NMS within each level; 5. the best post_nms_topk.
    keep = big[_batched_nms(boxes[big], scores[big], level_ids[big],
                            float(nms_thresh))][:post_nms_topk]
    return Proposals(boxes[keep], scores[keep], level_ids[keep], picked[keep])
