"""The eval path every dense detector shares (RetinaNet, RTMDet; FCOS or ATSS next).

``dense_detect`` turns per-level head maps into detections, one image at a time:

1. per level: sigmoid scores of every (prior, class) pair, flattened prior-major
   (the order of ``flatten_level_outputs``), keep ``score > score_thresh``, then
   the ``topk`` best pairs (mmdet 3 ``filter_scores_and_topk``, detectron2 and
   torchvision the same);
2. decode the kept priors' regression with the detector's ``decode`` (clipped to
   the image);
3. only with ``min_bbox_size`` set (mmdet 3.3): drop boxes whose width or height is
   not above it (mmdet 3.3 ``mmdet/models/dense_heads/base_dense_head.py:476-478``,
   ``if min_bbox_size >= 0: keep w > s and h > s``; mmdet 2.11's
   ``anchor_head.py`` ``get_bboxes``, detectron2 and torchvision have no such step);
4. all levels together: class-wise ``batched_nms`` and the best ``max_detections``.

A new dense detector brings a head and a ``decode(priors (k, 4), reg (k, 4),
image_size (h, w)) -> (k, 4)``; the loop stays here.

Shape letters (the package legend in ``reference/__init__.py``): B images, n_l
priors of level l, A priors per location, C classes, k kept candidates; the
regression maps carry 4 numbers per prior.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import torch

from reference.heads import flatten_level_outputs
from reference.nms import batched_nms

__all__ = ["DenseTestConfig", "dense_detect"]

Tensor = torch.Tensor


@dataclasses.dataclass(frozen=True)
class DenseTestConfig:
    """The eval numbers of a dense detector: candidates need score > score_thresh,
    at most ``topk`` per level, NMS IoU ``nms_iou``, at most ``max_detections``;
    ``min_bbox_size`` None: no size filter (mmdet 2.11, detectron2, torchvision), a
    number s >= 0: keep only boxes with w > s and h > s before NMS (mmdet 3.3, whose
    configs set 0: boxes decoded or clipped flat are dropped)."""

    score_thresh: float
    topk: int
    nms_iou: float
    max_detections: int
    min_bbox_size: float | None = None

    def __post_init__(self) -> None:
        s = self.min_bbox_size
        if s is not None and (isinstance(s, bool) or not isinstance(s, (int, float))
                              or not s >= 0 or s == float("inf")):
            raise ValueError(f"min_bbox_size={s!r}: expected None or a finite number >= 0")


@torch.no_grad()
def dense_detect(priors: Sequence[Tensor], cls_maps: Sequence[Tensor], reg_maps: Sequence[Tensor],
                 image_sizes: Sequence[tuple[int, int]], num_classes: int,
                 decode: Callable[[Tensor, Tensor, tuple[int, int]], Tensor],
                 test_cfg: DenseTestConfig) -> list[dict[str, Tensor]]:
    """Detections of a batch from dense head maps.

    priors: per level (n_l, 4) priors (anchors, or points with their strides).
    cls_maps: per level (B, A*C, H_l, W_l) logits; reg_maps: per level
    (B, A*4, H_l, W_l), with n_l = H_l * W_l * A. image_sizes: B (h, w).
    Returns per image {"boxes" (k, 4), "scores" (k,), "labels" (k,) int64}.
    """
    C = num_classes
    per_prior = reg_maps[0].shape[1] // (cls_maps[0].shape[1] // C)  # regression numbers (4)
    cls_levels = [flatten_level_outputs([m], C) for m in cls_maps]  # per level (B, n_l, C)
    reg_levels = [flatten_level_outputs([m], per_prior) for m in reg_maps]  # (B, n_l, 4)
    results = []
    for i, (h, w) in enumerate(image_sizes):
        boxes_all, scores_all, labels_all = [], [], []
        for level_priors, cls, reg in zip(priors, cls_levels, reg_levels):
            scores = torch.sigmoid(cls[i]).flatten()  # (n_l * C,) prior-major
            candidates = torch.nonzero(scores > test_cfg.score_thresh).squeeze(1)
            scores = scores[candidates]
            top = scores.topk(min(test_cfg.topk, scores.numel())).indices
            scores, candidates = scores[top], candidates[top]  # (k,)
            prior_idx, labels = candidates // C, candidates % C
            boxes_all.append(decode(level_priors[prior_idx], reg[i][prior_idx], (h, w)))  # (k, 4)
            scores_all.append(scores)
            labels_all.append(labels)
        boxes, scores, labels = torch.cat(boxes_all), torch.cat(scores_all), torch.cat(labels_all)
        if test_cfg.min_bbox_size is not None:  # mmdet 3.3: w > s and h > s, after clipping
            s = test_cfg.min_bbox_size
            big = ((boxes[:, 2] - boxes[:, 0]) > s) & ((boxes[:, 3] - boxes[:, 1]) > s)  # (k,)
            boxes, scores, labels = boxes[big], scores[big], labels[big]
        keep = batched_nms(boxes, scores, labels, test_cfg.nms_iou)[: test_cfg.max_detections]
        results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
    return results
