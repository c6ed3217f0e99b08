"""detectron2, seen through the conformance protocol: ``--impl=detectron2``.

detectron2 is not on the package index. This adapter imports it from a source
checkout: put the checkout on ``PYTHONPATH`` or name it in ``DETECTRON2_PATH``
(the directory holding the ``detectron2`` package). Checked against detectron2
main at commit 02b5c4e295e990042a714712c21dc79b731e8833 (2026-06-06), with
fvcore 0.1.5 and omegaconf 2.3 installed (detectron2's own import-time
requirements; fvcore provides its smooth L1, GIoU and sigmoid focal losses).

The compiled extension ``detectron2._C`` is not built. At this commit detectron2
already calls torchvision's kernels for everything the protocol uses:
``detectron2.layers.nms``/``batched_nms`` are ``torchvision.ops.nms``/
``batched_nms`` (with a ``float()`` cast) and ``detectron2.layers.ROIAlign``
calls ``torchvision.ops.roi_align``. ``_C`` is needed only by deformable
convolution, rotated boxes and the fast COCO evaluator, none of which the
protocol covers; when it is missing the adapter registers a stand-in
``detectron2._C`` whose every kernel raises ``NotImplementedError`` when called
(reported as not implemented, never as a wrong answer).

Each protocol name below maps the spec's call onto the detectron2 API doing the
same job, without fixing anything detectron2 does differently: where detectron2
differs from a clause the test fails, and ``detectron2.deviations`` declares it
with the upstream reason. Two translations are only calling conventions and are
stated where they happen: detectron2 takes boxes as ``Boxes`` lists per image,
and ``find_top_rpn_proposals`` returns no level ids or anchor rows, so the
adapter finds each returned proposal's input row by its exact (clipped box,
logit) values. Options detectron2 has no counterpart for raise
``NotImplementedError``, and so do the inputs on which torchvision's RoIAlign
kernel under ``layers.ROIAlign`` would kill the process (the torchvision
adapter's guard, shared in ``torchvision_kernels.py``). detectron2 claims only
its own flavour.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from typing import NamedTuple

import torch

UPSTREAM_COMMIT = "02b5c4e295e990042a714712c21dc79b731e8833"


# --------------------------------------------------------------------------- importing
class _MissingExtension(types.ModuleType):
    """Stand-in for ``detectron2._C``: any kernel raises when called."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def missing(*args, **kwargs):
            raise NotImplementedError(
                f"detectron2._C.{name}: the compiled detectron2 extension is not built "
                "(conformance/adapters/detectron2_adapter.py stands in for it)")

        missing.__name__ = name
        return missing


def _import_detectron2():
    path = os.environ.get("DETECTRON2_PATH")
    if path and path not in sys.path:
        sys.path.insert(0, path)
    try:
        d2 = importlib.import_module("detectron2")
    except ImportError as exc:
        raise ImportError(
            f"detectron2 is not importable ({exc}): it is not on the package index; put a "
            "source checkout on PYTHONPATH or set DETECTRON2_PATH to it (the directory "
            "holding the detectron2 package), and install fvcore and omegaconf") from exc
    if "detectron2._C" not in sys.modules:
        try:
            importlib.import_module("detectron2._C")
        except ImportError:
            stub = _MissingExtension("detectron2._C", _MissingExtension.__doc__)
            sys.modules["detectron2._C"] = stub
            d2._C = stub
    return d2


_d2 = _import_detectron2()

import fvcore as _fvcore  # noqa: E402  (detectron2 requires fvcore: after the path set-up)
import fvcore.nn as _fvcore_nn  # noqa: E402
from detectron2 import layers as _layers  # noqa: E402
from detectron2.modeling import anchor_generator as _anchors  # noqa: E402
from detectron2.modeling import box_regression as _box_regression  # noqa: E402
from detectron2.modeling import matcher as _matcher  # noqa: E402
from detectron2.modeling import poolers as _poolers  # noqa: E402
from detectron2.modeling import sampling as _sampling  # noqa: E402
from detectron2.modeling.proposal_generator import proposal_utils as _proposal_utils  # noqa: E402
from detectron2.modeling.roi_heads import fast_rcnn as _fast_rcnn  # noqa: E402
from detectron2.structures import Boxes as _Boxes  # noqa: E402
from detectron2.structures import boxes as _structures_boxes  # noqa: E402

from conformance.adapters.torchvision_kernels import refuse_crashing_roi_align  # noqa: E402

__version__ = f"{_d2.__version__}+{UPSTREAM_COMMIT[:12]}"

CONFORMANCE = {
    "name": "detectron2",
    "version": f"{__version__} (fvcore {getattr(_fvcore, '__version__', 'unknown')})",
    "flavours": ["detectron2"],
    "deviations": "detectron2.deviations",
}


def _plain_boxes(name, boxes):
    if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2:
        raise NotImplementedError(f"detectron2 Boxes are (N, 4) tensors only; {name} is not")


# --------------------------------------------------------------------------- boxes / IoU
def box_area(boxes):
    """``Boxes(boxes).area()`` (Boxes holds float32)."""
    _plain_boxes("boxes", boxes)
    return _Boxes(boxes).area()


def pairwise_iou(boxes1, boxes2):
    """``detectron2.structures.pairwise_iou`` on ``Boxes`` (float32)."""
    _plain_boxes("boxes1", boxes1)
    _plain_boxes("boxes2", boxes2)
    return _structures_boxes.pairwise_iou(_Boxes(boxes1), _Boxes(boxes2))


# --------------------------------------------------------------------------- anchors
class DefaultAnchorGenerator:
    """``detectron2.modeling.anchor_generator.DefaultAnchorGenerator``.

    ``offset`` defaults to 0.0 as the protocol (and detectron2's config,
    ``MODEL.ANCHOR_GENERATOR.OFFSET``) say; the class's own keyword default is 0.5.
    """

    def __init__(self, sizes, aspect_ratios, strides, offset=0.0):
        self._gen = _anchors.DefaultAnchorGenerator(
            sizes=sizes, aspect_ratios=aspect_ratios, strides=strides, offset=offset)

    @property
    def num_levels(self):
        return self._gen.num_features

    @property
    def num_base_anchors(self):
        return list(self._gen.num_anchors)

    @property
    def base_anchors(self):
        return [b for _, b in self._gen.cell_anchors.named_buffers()]

    def grid_anchors(self, featmap_sizes, device="cpu"):
        # detectron2 reads only the spatial shape of its feature maps: empty maps suffice.
        self._gen.to(device)
        feats = [torch.empty(1, 0, int(h), int(w), device=device) for h, w in featmap_sizes]
        return [b.tensor for b in self._gen(feats)]


# --------------------------------------------------------------------------- coders
Box2BoxTransform = _box_regression.Box2BoxTransform


# --------------------------------------------------------------------------- matching, sampling
class MatchResult(NamedTuple):
    matches: torch.Tensor  # (N,) int64
    labels: torch.Tensor  # (N,) int8


class Matcher:
    """``detectron2.modeling.matcher.Matcher``; its (matches, labels) tuple named."""

    def __init__(self, thresholds, labels, allow_low_quality_matches=False):
        self._matcher = _matcher.Matcher(list(thresholds), list(labels),
                                         allow_low_quality_matches=allow_low_quality_matches)

    def __call__(self, match_quality_matrix):
        return MatchResult(*self._matcher(match_quality_matrix))


def subsample_labels(labels, num_samples, positive_fraction, bg_label, generator=None):
    """``detectron2.modeling.sampling.subsample_labels``; it draws from torch's global
    generator only, so a given ``generator`` seeds the global one (same seed, same
    sample is then asked of detectron2's code)."""
    if generator is not None:
        torch.manual_seed(generator.initial_seed())
    return _sampling.subsample_labels(labels, num_samples, positive_fraction, bg_label)


# --------------------------------------------------------------------------- losses (fvcore)
def _plain_loss(weight, avg_factor, loss_weight):
    if weight is not None or avg_factor is not None:
        raise NotImplementedError("detectron2's (fvcore's) losses take no element weights or "
                                  "avg_factor: callers divide by their own normaliser")
    if loss_weight != 1.0:
        raise NotImplementedError("detectron2's (fvcore's) losses have no loss_weight")


def smooth_l1_loss(pred, target, weight=None, beta=1.0, reduction="mean", avg_factor=None,
                   loss_weight=1.0):
    """``fvcore.nn.smooth_l1_loss`` (detectron2's box regression loss)."""
    _plain_loss(weight, avg_factor, loss_weight)
    return _fvcore_nn.smooth_l1_loss(pred, target, beta, reduction=reduction)


def giou_loss(pred, target, weight=None, reduction="mean", avg_factor=None, *,
              flavour="detectron2", eps=None, loss_weight=1.0):
    """``fvcore.nn.giou_loss`` (eps 1e-7), detectron2's ``giou`` box regression loss."""
    _plain_loss(weight, avg_factor, loss_weight)
    if flavour != "detectron2":
        raise NotImplementedError(f"detectron2 has only fvcore's GIoU eps rule, not {flavour}'s")
    return _fvcore_nn.giou_loss(pred, target, reduction=reduction,
                                eps=1e-7 if eps is None else eps)


def sigmoid_focal_loss(pred, target, weight=None, gamma=2.0, alpha=0.25, reduction="mean",
                       avg_factor=None, loss_weight=1.0):
    """``fvcore.nn.sigmoid_focal_loss`` (detectron2 RetinaNet); integer labels
    (background = C) become one-hot rows, as detectron2's RetinaNet does before the call."""
    _plain_loss(weight, avg_factor, loss_weight)
    if not target.is_floating_point():
        num_classes = pred.shape[-1]
        target = torch.nn.functional.one_hot(target, num_classes + 1)[:, :num_classes]
        target = target.to(pred.dtype)
    return _fvcore_nn.sigmoid_focal_loss(pred, target, alpha=alpha, gamma=gamma,
                                         reduction=reduction)


def cross_entropy_loss(pred, target, weight=None, reduction="mean", avg_factor=None,
                       ignore_index=-100, loss_weight=1.0, *, flavour="mmdet"):
    """``detectron2.layers.cross_entropy`` (Fast R-CNN classification loss). Its mean
    divides by the rows not ignored whatever ``flavour`` asks (LOSS-18: the
    detectron2 and torchvision rule; the mmdet flavour's differs, a declared deviation)."""
    _plain_loss(weight, avg_factor, loss_weight)
    return _layers.cross_entropy(pred, target, reduction=reduction, ignore_index=ignore_index)


# --------------------------------------------------------------------------- NMS
nms = _layers.nms
batched_nms = _layers.batched_nms


class Detections(NamedTuple):
    boxes: torch.Tensor  # (k, 4)
    scores: torch.Tensor  # (k,)
    labels: torch.Tensor  # (k,) int64
    box_indices: torch.Tensor  # (k,) int64


def fast_rcnn_inference(boxes, scores, image_size, score_threshold=0.05, nms_threshold=0.5,
                        topk_per_image=100):
    """``fast_rcnn_inference_single_image``; its Instances unpacked into the 4-tuple,
    ``box_indices`` being detectron2's returned ``filter_inds[:, 0]`` as is."""
    result, rows = _fast_rcnn.fast_rcnn_inference_single_image(
        boxes, scores, tuple(int(s) for s in image_size), score_threshold, nms_threshold,
        topk_per_image)
    return Detections(result.pred_boxes.tensor, result.scores, result.pred_classes, rows)


# --------------------------------------------------------------------------- proposals
class Proposals(NamedTuple):
    boxes: torch.Tensor  # (k, 4)
    scores: torch.Tensor  # (k,)
    level_ids: torch.Tensor  # (k,) int64
    anchor_indices: torch.Tensor  # (k,) int64


def find_top_rpn_proposals(proposals, logits, image_size, *, nms_thresh=0.7, pre_nms_topk=1000,
                           post_nms_topk=1000, min_box_size=0.0, training=False):
    """``proposal_utils.find_top_rpn_proposals`` for one image (a batch of 1).

    detectron2 returns the proposals' boxes and logits only. Their level and
    anchor row are found here by exact values: each output (box, logit) is the
    first unused input row of equal logit whose box, cast to float32 and clipped
    to the image as detectron2 does, is equal. Rows that are identical in box and
    logit are interchangeable, so the choice among them cannot change the result.
    """
    image_size = tuple(int(s) for s in image_size)
    # detectron2's Boxes hold float32 whatever they are given, and torchvision's NMS
    # kernel wants scores of the boxes' dtype: logits go in as float32 too (in a
    # detectron2 model both are float32 anyway).
    logits = [s.float() for s in logits]
    (res,) = _proposal_utils.find_top_rpn_proposals(
        [p[None] for p in proposals], [s[None] for s in logits], [image_size], nms_thresh,
        pre_nms_topk, post_nms_topk, min_box_size, training)
    out_boxes, out_scores = res.proposal_boxes.tensor, res.objectness_logits
    # The rows of all levels concatenated, as detectron2 sees them after its clip
    # (Boxes.clip's clamps, without its assertion: non-finite rows match nothing).
    all_boxes = torch.cat([p.reshape(-1, 4) for p in proposals]).float()
    h, w = image_size
    all_boxes = torch.stack([all_boxes[:, 0].clamp(0, w), all_boxes[:, 1].clamp(0, h),
                             all_boxes[:, 2].clamp(0, w), all_boxes[:, 3].clamp(0, h)], dim=1)
    all_logits = torch.cat([s.reshape(-1) for s in logits])
    level_of_row = torch.cat([torch.full((s.numel(),), i, dtype=torch.int64)
                              for i, s in enumerate(logits)]).to(all_logits.device)
    used = torch.zeros(all_logits.shape[0], dtype=torch.bool, device=all_logits.device)
    rows = []
    for box, score in zip(out_boxes, out_scores):
        same = (~used) & (all_logits == score) & (all_boxes == box).all(dim=1)
        candidates = torch.nonzero(same).flatten()
        if candidates.numel() == 0:
            raise RuntimeError("detectron2 returned a proposal that matches no input row")
        rows.append(int(candidates[0]))
        used[candidates[0]] = True
    rows_t = torch.tensor(rows, dtype=torch.int64, device=all_logits.device)
    return Proposals(out_boxes, out_scores, level_of_row[rows_t], rows_t)


# --------------------------------------------------------------------------- RoI
def roi_align(input, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    """``detectron2.layers.ROIAlign`` (torchvision's kernel underneath: inputs that
    crash that kernel are refused as not implemented, see ``torchvision_kernels``)."""
    refuse_crashing_roi_align("detectron2.layers.ROIAlign", input, output_size, spatial_scale)
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    return _layers.ROIAlign(tuple(output_size), spatial_scale, sampling_ratio,
                            aligned=aligned)(input, rois)


def _per_image_boxes(rois, num_images):
    """(K, 5) rois -> per-image Boxes in image-major order, and that order."""
    order = torch.argsort(rois[:, 0], stable=True)
    sorted_rois = rois[order]
    box_lists = [_Boxes(sorted_rois[sorted_rois[:, 0] == i, 1:]) for i in range(num_images)]
    return box_lists, order


def map_rois_to_levels(boxes, mapping="detectron2", min_level=2, max_level=5):
    """``poolers.assign_boxes_to_levels`` with detectron2's canonical 224 / level 4."""
    if mapping != "detectron2":
        raise NotImplementedError("detectron2 maps RoIs to levels its own way only")
    return _poolers.assign_boxes_to_levels([_Boxes(boxes)], min_level, max_level, 224, 4)


class MultiLevelRoIPooler:
    """``poolers.ROIPooler`` ("ROIAlignV2" when aligned, else "ROIAlign"); rois come
    as (K, 5) rows and go to detectron2 as per-image Boxes, results back in input order."""

    def __init__(self, output_size, scales, sampling_ratio=0, aligned=True, mapping="mmdet"):
        if mapping != "detectron2":
            raise NotImplementedError("detectron2 pools with its own level mapping only")
        self._pool = _poolers.ROIPooler(output_size, list(scales), sampling_ratio,
                                        "ROIAlignV2" if aligned else "ROIAlign")

    def __call__(self, features, rois):
        box_lists, order = _per_image_boxes(rois, features[0].shape[0])
        out = self._pool(list(features), box_lists)
        result = torch.empty_like(out)
        result[order] = out
        return result
