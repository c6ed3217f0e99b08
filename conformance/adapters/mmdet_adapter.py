"""mmdetection 3.x, seen through the conformance protocol: ``--impl=mmdet``.

Each protocol name below calls the mmdet 3.x class or function that does the job
and adapts only the calling convention (mmdet 3.x passes ``InstanceData`` records
and config dicts where the protocol passes tensors and keywords). Nothing mmdet
does differently is fixed here: a difference shows up as a failing test and is
declared in ``mmdet.deviations`` with the upstream file and line behind it.
Options mmdet has no counterpart for raise ``NotImplementedError`` (reported as
not implemented), and so do protocol names mmdet has no function for (the
detectron2 and torchvision names, the reference's loss normalisers).

mmcv-lite ships mmcv's Python code without the compiled ``mmcv._ext``; before
mmdet is imported, ``mmcv_ops_stub.install()`` maps the three kernels mmdet
needs here (nms, roi_align forward/backward) to torchvision's, and the run
header says so. mmcv's own ``nms`` / ``batched_nms`` / ``RoIAlign`` wrappers run
unchanged on top of them.

mmdet claims only its own flavour: clauses specific to detectron2 or torchvision
are skipped, the flavour-neutral MUST clauses all apply.
"""

from __future__ import annotations

import functools
import itertools
import math
import types

import torch

from conformance.adapters import mmcv_ops_stub

try:
    import mmcv
    import mmengine
    mmcv_ops_stub.install()
    import mmdet
    from mmengine.config import ConfigDict
    from mmengine.structures import InstanceData

    import mmcv.ops as _mmcv_ops
    from mmdet.models.dense_heads.anchor_head import AnchorHead as _AnchorHead
    from mmdet.models.dense_heads.rpn_head import RPNHead as _RPNHead
    from mmdet.models.dense_heads.rtmdet_head import RTMDetHead as _RTMDetHead
    from mmdet.models.layers import multiclass_nms as _multiclass_nms
    from mmdet.models.losses import (CrossEntropyLoss, FocalLoss, GIoULoss, L1Loss,
                                     QualityFocalLoss, SmoothL1Loss)
    from mmdet.models.losses.utils import weight_reduce_loss as _weight_reduce_loss
    from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
    from mmdet.models.task_modules.assigners import AssignResult as _AssignResult
    from mmdet.models.task_modules.assigners import (
        DynamicSoftLabelAssigner as _DSLAssigner)
    from mmdet.models.task_modules.assigners import MaxIoUAssigner as _MaxIoUAssigner
    from mmdet.models.task_modules.assigners.dynamic_soft_label_assigner import INF as _DSL_INF
    from mmdet.models.task_modules.coders import (
        DeltaXYWHBBoxCoder as _DeltaXYWHBBoxCoder)
    from mmdet.models.task_modules.coders import (
        DistancePointBBoxCoder as _DistancePointBBoxCoder)
    from mmdet.models.task_modules.prior_generators import (
        AnchorGenerator as _AnchorGenerator)
    from mmdet.models.task_modules.prior_generators import (
        LegacyAnchorGenerator as _LegacyAnchorGenerator)
    from mmdet.models.task_modules.prior_generators import (
        MlvlPointGenerator as _MlvlPointGenerator)
    from mmdet.models.task_modules.prior_generators import (
        anchor_inside_flags as _anchor_inside_flags)
    from mmdet.models.task_modules.samplers import PseudoSampler as _PseudoSampler
    from mmdet.models.task_modules.samplers import RandomSampler as _RandomSampler
    from mmdet.models.utils import images_to_levels as _images_to_levels
    from mmdet.models.utils import unmap as _unmap
    from mmdet.structures.bbox import HorizontalBoxes as _HorizontalBoxes
    from mmdet.structures.bbox import bbox2distance as _bbox2distance
    from mmdet.structures.bbox import bbox_overlaps as _bbox_overlaps
    from mmdet.structures.bbox import distance2bbox as _distance2bbox
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"mmdetection 3.x with mmengine and mmcv(-lite) is not installed ({exc}); "
        "install them with: pip install -e '.[upstream]'") from exc

__version__ = mmdet.__version__

CONFORMANCE = {
    "name": "mmdet",
    "version": (f"{mmdet.__version__} (mmengine {mmengine.__version__}, "
                f"mmcv {mmcv.__version__})"),
    "flavours": ["mmdet"],
    "deviations": "mmdet.deviations",
    "notes": [mmcv_ops_stub.STUB_NOTE] if mmcv_ops_stub.is_stubbed() else [],
}

DSL_INF = _DSL_INF


def _instances(**fields) -> InstanceData:
    return InstanceData(**{k: v for k, v in fields.items() if v is not None})


# --------------------------------------------------------------------------- boxes / IoU
def box_iou(boxes1, boxes2, mode="iou", is_aligned=False, eps=1e-6):
    """mmdet.structures.bbox.bbox_overlaps."""
    return _bbox_overlaps(boxes1, boxes2, mode=mode, is_aligned=is_aligned, eps=eps)


def box_area(boxes):
    """mmdet.structures.bbox.HorizontalBoxes(boxes).areas."""
    return _HorizontalBoxes(boxes).areas


# --------------------------------------------------------------------------- priors
class _GeneratorWrapper:
    """mmdet's generator with the protocol's ``grid_anchors(featmap_sizes, device)``."""

    _cls = None

    def __init__(self, *args, **kwargs):
        self._gen = self._cls(*args, **kwargs)

    num_levels = property(lambda self: self._gen.num_levels)
    num_base_anchors = property(lambda self: self._gen.num_base_anchors)
    base_anchors = property(lambda self: self._gen.base_anchors)

    def grid_anchors(self, featmap_sizes, device="cpu"):
        return self._gen.grid_priors(featmap_sizes, device=device)

    def valid_flags(self, featmap_sizes, pad_shape, device="cpu"):
        return self._gen.valid_flags(featmap_sizes, pad_shape, device=device)


class AnchorGenerator(_GeneratorWrapper):
    """mmdet.models.task_modules.prior_generators.AnchorGenerator."""

    _cls = _AnchorGenerator


class LegacyAnchorGenerator(_GeneratorWrapper):
    """mmdet.models.task_modules.prior_generators.LegacyAnchorGenerator."""

    _cls = _LegacyAnchorGenerator


class MlvlPointGenerator:
    """mmdet.models.task_modules.prior_generators.MlvlPointGenerator."""

    def __init__(self, strides, offset=0.5):
        self._gen = _MlvlPointGenerator(strides, offset=offset)

    num_levels = property(lambda self: self._gen.num_levels)
    num_base_priors = property(lambda self: self._gen.num_base_priors)

    def grid_priors(self, featmap_sizes, device="cpu", with_stride=False):
        return self._gen.grid_priors(featmap_sizes, device=device, with_stride=with_stride)

    def valid_flags(self, featmap_sizes, pad_shape, device="cpu"):
        return self._gen.valid_flags(featmap_sizes, pad_shape, device=device)


def anchor_inside_flags(flat_anchors, valid_flags, img_shape, allowed_border=0):
    return _anchor_inside_flags(flat_anchors, valid_flags, img_shape, allowed_border)


# --------------------------------------------------------------------------- coders
class DeltaXYWHBBoxCoder:
    """mmdet.models.task_modules.coders.DeltaXYWHBBoxCoder (tensor boxes)."""

    def __init__(self, target_means=(0.0, 0.0, 0.0, 0.0), target_stds=(1.0, 1.0, 1.0, 1.0),
                 clip_border=True, add_ctr_clamp=False, ctr_clamp=32):
        self._coder = _DeltaXYWHBBoxCoder(target_means=target_means, target_stds=target_stds,
                                          clip_border=clip_border,
                                          add_ctr_clamp=add_ctr_clamp, ctr_clamp=ctr_clamp)

    def encode(self, bboxes, gt_bboxes):
        return self._coder.encode(bboxes, gt_bboxes)

    def decode(self, bboxes, pred_bboxes, max_shape=None, wh_ratio_clip=16 / 1000):
        return self._coder.decode(bboxes, pred_bboxes, max_shape=max_shape,
                                  wh_ratio_clip=wh_ratio_clip)


class DistancePointBBoxCoder:
    """mmdet.models.task_modules.coders.DistancePointBBoxCoder."""

    def __init__(self, clip_border=True):
        self._coder = _DistancePointBBoxCoder(clip_border=clip_border)

    def encode(self, points, gt_bboxes, max_dis=None, eps=0.1):
        return self._coder.encode(points, gt_bboxes, max_dis=max_dis, eps=eps)

    def decode(self, points, pred_bboxes, max_shape=None):
        return self._coder.decode(points, pred_bboxes, max_shape=max_shape)


def bbox2distance(points, bbox, max_dis=None, eps=0.1):
    return _bbox2distance(points, bbox, max_dis=max_dis, eps=eps)


def distance2bbox(points, distance, max_shape=None):
    return _distance2bbox(points, distance, max_shape=max_shape)


# --------------------------------------------------------------------------- assigners
AssignResult = _AssignResult


def _labels_or_zeros(gt_labels, gt_bboxes):
    """mmdet 3.x always reads gt labels; without labels (RPN) it passes zeros
    (mmdet/models/dense_heads/rpn_head.py, ``loss_by_feat``)."""
    if gt_labels is not None:
        return gt_labels
    return torch.zeros(gt_bboxes.shape[0], dtype=torch.long, device=gt_bboxes.device)


class MaxIoUAssigner:
    """mmdet.models.task_modules.assigners.MaxIoUAssigner."""

    def __init__(self, pos_iou_thr, neg_iou_thr, min_pos_iou=0.0, gt_max_assign_all=True,
                 ignore_iof_thr=-1.0, ignore_wrt_candidates=True, match_low_quality=True):
        self._mm = _MaxIoUAssigner(pos_iou_thr, neg_iou_thr, min_pos_iou=min_pos_iou,
                                   gt_max_assign_all=gt_max_assign_all,
                                   ignore_iof_thr=ignore_iof_thr,
                                   ignore_wrt_candidates=ignore_wrt_candidates,
                                   match_low_quality=match_low_quality)

    @staticmethod
    def _finish(result, gt_labels):
        if gt_labels is None:
            result.labels = None
        return result

    def assign(self, bboxes, gt_bboxes, gt_bboxes_ignore=None, gt_labels=None):
        result = self._mm.assign(
            _instances(priors=bboxes),
            _instances(bboxes=gt_bboxes, labels=_labels_or_zeros(gt_labels, gt_bboxes)),
            None if gt_bboxes_ignore is None else _instances(bboxes=gt_bboxes_ignore))
        return self._finish(result, gt_labels)

    def assign_wrt_overlaps(self, overlaps, gt_labels=None):
        labels = gt_labels
        if labels is None:
            labels = torch.zeros(overlaps.shape[0], dtype=torch.long, device=overlaps.device)
        return self._finish(self._mm.assign_wrt_overlaps(overlaps, labels), gt_labels)


class DynamicSoftLabelAssigner:
    """mmdet.models.task_modules.assigners.DynamicSoftLabelAssigner.

    ``assign`` passes the logits, decoded boxes and (x, y, stride_w, stride_h)
    priors as mmdet's ``pred_instances`` (scores, bboxes, priors). mmdet computes
    the cost matrix inline in ``assign``: ``cost_matrix`` is not implemented.
    """

    def __init__(self, soft_center_radius=3.0, topk=13, iou_weight=3.0):
        self._mm = _DSLAssigner(soft_center_radius=soft_center_radius, topk=topk,
                                iou_weight=iou_weight)

    def assign(self, pred_scores, decoded_bboxes, priors, gt_bboxes, gt_labels):
        return self._mm.assign(
            _instances(scores=pred_scores, bboxes=decoded_bboxes, priors=priors),
            _instances(bboxes=gt_bboxes, labels=gt_labels))

    def cost_matrix(self, *args, **kwargs):
        raise NotImplementedError("mmdet computes the DSL cost inline in assign()")

    def dynamic_k_matching(self, cost, pairwise_ious):
        """mmdet's ``dynamic_k_matching(cost, ious, num_gt, valid_mask)`` with every
        candidate valid; its per-matched outputs are scattered back to (V,) rows."""
        num_valid, num_gt = cost.shape
        valid = torch.ones(num_valid, dtype=torch.bool, device=cost.device)
        ious, gts = self._mm.dynamic_k_matching(cost, pairwise_ious, num_gt, valid)
        matched_gt = torch.full((num_valid,), -1, dtype=torch.long, device=cost.device)
        matched_iou = torch.zeros(num_valid, dtype=pairwise_ious.dtype, device=cost.device)
        matched_gt[valid] = gts
        matched_iou[valid] = ious.to(pairwise_ious.dtype)
        return matched_gt, matched_iou


# --------------------------------------------------------------------------- samplers
def _seed_global(generator):
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator, got {type(generator)}")
        # mmdet's random_choice draws torch.randperm from the global generator
        # (mmdet/models/task_modules/samplers/random_sampler.py:67): seed it from
        # the protocol's generator so that "same seed, same sample" is asked of it.
        torch.manual_seed(generator.initial_seed())


class _SamplerWrapper:
    def sample(self, assign_result, priors, gt_bboxes, gt_labels=None, generator=None):
        _seed_global(generator)
        return self._mm.sample(
            assign_result, _instances(priors=priors),
            _instances(bboxes=gt_bboxes, labels=_labels_or_zeros(gt_labels, gt_bboxes)))


class PseudoSampler(_SamplerWrapper):
    """mmdet.models.task_modules.samplers.PseudoSampler."""

    def __init__(self):
        self._mm = _PseudoSampler()


class RandomSampler(_SamplerWrapper):
    """mmdet.models.task_modules.samplers.RandomSampler (global torch RNG)."""

    def __init__(self, num, pos_fraction, neg_pos_ub=-1, add_gt_as_proposals=True):
        self._mm = _RandomSampler(num, pos_fraction, neg_pos_ub=neg_pos_ub,
                                  add_gt_as_proposals=add_gt_as_proposals)


# --------------------------------------------------------------------------- targets
def unmap(data, count, inds, fill=0):
    return _unmap(data, count, inds, fill=fill)


def images_to_levels(targets, num_level_anchors):
    return _images_to_levels(targets, num_level_anchors)


class ImageTargets(types.SimpleNamespace):
    """The protocol's per-image targets, filled from mmdet's ``_get_targets_single``."""


class LevelTargets(types.SimpleNamespace):
    """The protocol's batch targets, filled from mmdet's ``get_targets``."""

    def num_total_samples(self, sampling):
        return self.num_total_pos + self.num_total_neg if sampling else self.num_total_pos


class _CoderShim:
    """A protocol box coder (anything with ``encode``) as mmdet heads read it."""

    encode_size = 4

    def __init__(self, coder):
        self._coder = coder

    def encode(self, priors, gt_bboxes):
        return self._coder.encode(priors, gt_bboxes)


def _unwrap(obj):
    return getattr(obj, "_mm", None) or getattr(obj, "_coder", None) or obj


class _Recorder:
    """Passes ``assign`` to mmdet's assigner and keeps each result (mmdet's heads
    return sampling results only; the protocol's per-image targets carry both)."""

    def __init__(self, assigner):
        self._assigner = assigner
        self.results = []

    def assign(self, *args, **kwargs):
        result = self._assigner.assign(*args, **kwargs)
        self.results.append(result)
        return result


def _anchor_head(assigner, num_classes, box_coder, sampler, allowed_border, pos_weight,
                 reg_decoded_bbox):
    """The attributes AnchorHead._get_targets_single reads, without building convs."""
    coder = _unwrap(box_coder) if box_coder is not None else None
    if coder is not None and not hasattr(coder, "encode_size"):
        coder = _CoderShim(box_coder)
    head = types.SimpleNamespace(
        assigner=_Recorder(_unwrap(assigner)),
        sampler=_unwrap(sampler) if sampler is not None else _PseudoSampler(),
        bbox_coder=coder, num_classes=num_classes, reg_decoded_bbox=reg_decoded_bbox,
        train_cfg=ConfigDict(allowed_border=allowed_border, pos_weight=pos_weight))
    head._get_targets_single = types.MethodType(_AnchorHead._get_targets_single, head)
    head._raw_positive_infos = {}  # get_targets stores its sampling results here
    return head


def _meta(img_shape):
    return {"img_shape": tuple(int(s) for s in img_shape)}


def _gt(gt_bboxes, gt_labels):
    return _instances(bboxes=gt_bboxes, labels=_labels_or_zeros(gt_labels, gt_bboxes))


def anchor_targets_single(flat_anchors, valid_flags, gt_bboxes, img_shape, *, assigner,
                          num_classes, box_coder=None, sampler=None, gt_labels=None,
                          gt_bboxes_ignore=None, allowed_border=-1, pos_weight=-1.0,
                          reg_decoded_bbox=False, unmap_outputs=True, generator=None):
    """AnchorHead._get_targets_single (mmdet/models/dense_heads/anchor_head.py)."""
    head = _anchor_head(assigner, num_classes, box_coder, sampler, allowed_border, pos_weight,
                        reg_decoded_bbox)
    _seed_global(generator)
    ignore = None if gt_bboxes_ignore is None else _instances(bboxes=gt_bboxes_ignore)
    out = head._get_targets_single(flat_anchors, valid_flags, _gt(gt_bboxes, gt_labels),
                                   _meta(img_shape), ignore, unmap_outputs=unmap_outputs)
    labels, label_weights, bbox_targets, bbox_weights, pos_inds, neg_inds, sampling = out
    return ImageTargets(labels=labels, label_weights=label_weights, bbox_targets=bbox_targets,
                        bbox_weights=bbox_weights, pos_inds=pos_inds, neg_inds=neg_inds,
                        sampling_result=sampling, assign_result=head.assigner.results[-1],
                        assign_metrics=None)


def _per_image(sampling_results, assign_results):
    return [ImageTargets(pos_inds=s.pos_inds, neg_inds=s.neg_inds, sampling_result=s,
                         assign_result=a) for s, a in zip(sampling_results, assign_results)]


def anchor_targets(anchor_list, valid_flag_list, gt_bboxes_list, img_shapes, *,
                   gt_labels_list=None, gt_bboxes_ignore_list=None, assigner, num_classes,
                   box_coder=None, sampler=None, allowed_border=-1, pos_weight=-1.0,
                   reg_decoded_bbox=False, unmap_outputs=True, generator=None):
    """AnchorHead.get_targets (mmdet/models/dense_heads/anchor_head.py)."""
    head = _anchor_head(assigner, num_classes, box_coder, sampler, allowed_border, pos_weight,
                        reg_decoded_bbox)
    _seed_global(generator)
    labels_list = gt_labels_list or [None] * len(gt_bboxes_list)
    gts = [_gt(b, lab) for b, lab in zip(gt_bboxes_list, labels_list)]
    ignores = (None if gt_bboxes_ignore_list is None else
               [None if b is None else _instances(bboxes=b) for b in gt_bboxes_ignore_list])
    out = _AnchorHead.get_targets(head, [list(a) for a in anchor_list],
                                  [list(v) for v in valid_flag_list], gts,
                                  [_meta(s) for s in img_shapes], ignores,
                                  unmap_outputs=unmap_outputs, return_sampling_results=True)
    labels, label_weights, bbox_targets, bbox_weights, _avg_factor, sampling_results = out
    return LevelTargets(
        labels=labels, label_weights=label_weights, bbox_targets=bbox_targets,
        bbox_weights=bbox_weights,
        num_total_pos=sum(s.num_pos for s in sampling_results),
        num_total_neg=sum(s.num_neg for s in sampling_results),
        images=_per_image(sampling_results, head.assigner.results), assign_metrics=None)


def _rtmdet_head(num_classes, assigner, allowed_border, pos_weight):
    head = types.SimpleNamespace(
        assigner=_Recorder(_unwrap(assigner) if assigner is not None else _DSLAssigner()),
        sampler=_PseudoSampler(), num_classes=num_classes,
        train_cfg=ConfigDict(allowed_border=allowed_border, pos_weight=pos_weight))
    head._get_targets_single = types.MethodType(_RTMDetHead._get_targets_single, head)
    return head


def rtmdet_targets_single(cls_scores, decoded_bboxes, flat_priors, valid_flags, gt_bboxes,
                          gt_labels, img_shape, *, num_classes, assigner=None,
                          allowed_border=-1, pos_weight=-1.0, unmap_outputs=True):
    """RTMDetHead._get_targets_single (mmdet/models/dense_heads/rtmdet_head.py)."""
    head = _rtmdet_head(num_classes, assigner, allowed_border, pos_weight)
    out = head._get_targets_single(cls_scores, decoded_bboxes, flat_priors, valid_flags,
                                   _instances(bboxes=gt_bboxes, labels=gt_labels),
                                   _meta(img_shape), None, unmap_outputs=unmap_outputs)
    if out[0] is None:
        return None
    _anchors, labels, label_weights, bbox_targets, assign_metrics, sampling = out
    return ImageTargets(labels=labels, label_weights=label_weights, bbox_targets=bbox_targets,
                        bbox_weights=None, pos_inds=sampling.pos_inds,
                        neg_inds=sampling.neg_inds, sampling_result=sampling,
                        assign_result=head.assigner.results[-1], assign_metrics=assign_metrics)


def rtmdet_targets(cls_scores, decoded_bboxes, anchor_list, valid_flag_list, gt_bboxes_list,
                   gt_labels_list, img_shapes, *, num_classes, assigner=None,
                   allowed_border=-1, pos_weight=-1.0, unmap_outputs=True):
    """RTMDetHead.get_targets (mmdet/models/dense_heads/rtmdet_head.py)."""
    head = _rtmdet_head(num_classes, assigner, allowed_border, pos_weight)
    gts = [_instances(bboxes=b, labels=lab) for b, lab in zip(gt_bboxes_list, gt_labels_list)]
    out = _RTMDetHead.get_targets(head, cls_scores, decoded_bboxes,
                                  [list(a) for a in anchor_list],
                                  [list(v) for v in valid_flag_list], gts,
                                  [_meta(s) for s in img_shapes], None,
                                  unmap_outputs=unmap_outputs)
    if out is None:
        return None
    _anchors, labels, label_weights, bbox_targets, assign_metrics, sampling_results = out
    return LevelTargets(
        labels=labels, label_weights=label_weights, bbox_targets=bbox_targets,
        bbox_weights=None,  # mmdet's RTMDet targets have no box weights
        num_total_pos=sum(s.num_pos for s in sampling_results),
        num_total_neg=sum(s.num_neg for s in sampling_results),
        images=_per_image(sampling_results, head.assigner.results),
        assign_metrics=assign_metrics)


# --------------------------------------------------------------------------- losses
def weight_reduce_loss(loss, weight=None, reduction="mean", avg_factor=None):
    return _weight_reduce_loss(loss, weight=weight, reduction=reduction, avg_factor=avg_factor)


def _call(module, pred, target, weight, reduction, avg_factor, **extra):
    return module(pred, target, weight=weight, avg_factor=avg_factor,
                  reduction_override=reduction, **extra)


def sigmoid_focal_loss(pred, target, weight=None, gamma=2.0, alpha=0.25, reduction="mean",
                       avg_factor=None, loss_weight=1.0):
    """mmdet FocalLoss(use_sigmoid=True); int64 labels as mmdet heads pass them."""
    module = FocalLoss(use_sigmoid=True, gamma=gamma, alpha=alpha, loss_weight=loss_weight)
    return _call(module, pred, target, weight, reduction, avg_factor)


def quality_focal_loss(pred, target, weight=None, beta=2.0, reduction="mean", avg_factor=None,
                       loss_weight=1.0):
    """mmdet QualityFocalLoss(use_sigmoid=True); tuple or soft (N, C) tensor target."""
    module = QualityFocalLoss(use_sigmoid=True, beta=beta, loss_weight=loss_weight)
    return _call(module, pred, target, weight, reduction, avg_factor)


def giou_loss(pred, target, weight=None, reduction="mean", avg_factor=None, *, flavour="mmdet",
              eps=None, loss_weight=1.0):
    """mmdet GIoULoss (eps 1e-6 by default, the mmdet flavour's rule)."""
    if flavour != "mmdet":
        raise NotImplementedError(f"mmdet has only its own GIoU eps rule, not {flavour}'s")
    module = GIoULoss(eps=1e-6 if eps is None else eps, loss_weight=loss_weight)
    return _call(module, pred, target, weight, reduction, avg_factor)


def l1_loss(pred, target, weight=None, reduction="mean", avg_factor=None, loss_weight=1.0):
    return _call(L1Loss(loss_weight=loss_weight), pred, target, weight, reduction, avg_factor)


def smooth_l1_loss(pred, target, weight=None, beta=1.0, reduction="mean", avg_factor=None,
                   loss_weight=1.0):
    return _call(SmoothL1Loss(beta=beta, loss_weight=loss_weight), pred, target, weight,
                 reduction, avg_factor)


def cross_entropy_loss(pred, target, weight=None, reduction="mean", avg_factor=None,
                       ignore_index=-100, loss_weight=1.0, *, flavour="mmdet"):
    """mmdet CrossEntropyLoss (avg_non_ignore=False: ignored rows count in the mean)."""
    if flavour != "mmdet":
        raise NotImplementedError(f"mmdet has only its own cross-entropy mean, not {flavour}'s")
    module = CrossEntropyLoss(use_sigmoid=False, ignore_index=ignore_index,
                              loss_weight=loss_weight)
    return _call(module, pred, target, weight, reduction, avg_factor)


def binary_cross_entropy_loss(pred, target, weight=None, reduction="mean", avg_factor=None,
                              loss_weight=1.0):
    module = CrossEntropyLoss(use_sigmoid=True, loss_weight=loss_weight)
    return _call(module, pred, target, weight, reduction, avg_factor)


# --------------------------------------------------------------------------- NMS
def nms(boxes, scores, iou_threshold):
    """mmcv.ops.nms (its kernel: see the run header); returns the kept indices."""
    _dets, keep = _mmcv_ops.nms(boxes, scores, float(iou_threshold))
    return keep


def batched_nms(boxes, scores, idxs, iou_threshold):
    """mmcv.ops.batched_nms with mmdet's nms_cfg; returns the kept indices."""
    _dets, keep = _mmcv_ops.batched_nms(boxes, scores, idxs,
                                        dict(type="nms", iou_threshold=float(iou_threshold)))
    return keep


def multiclass_nms(bboxes, scores, score_threshold, iou_threshold, max_num=-1):
    """mmdet.models.layers.multiclass_nms(..., return_inds=True).

    mmdet's ``inds`` index the flattened (box, class) pairs; the protocol's box
    indices are input rows, ``inds // num_classes``.
    """
    num_classes = scores.shape[1] - 1
    dets, labels, inds = _multiclass_nms(
        bboxes, scores, score_threshold, dict(type="nms", iou_threshold=float(iou_threshold)),
        max_num=max_num, return_inds=True)
    rows = torch.div(inds, max(num_classes, 1), rounding_mode="floor")
    return dets[:, :4], dets[:, 4], labels, rows


# --------------------------------------------------------------------------- proposals
@functools.lru_cache(maxsize=8)
def _rpn_head(target_means, target_stds):
    """An RPNHead with 1-channel convs (only its post-processing is used); cached."""
    return _RPNHead(in_channels=1, feat_channels=1, num_classes=1,
                    anchor_generator=dict(type="AnchorGenerator", strides=[1], ratios=[1.0],
                                          scales=[1]),
                    bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=target_means,
                                    target_stds=target_stds))


def mmdet_rpn_proposals(scores, deltas, anchors, image_size, *, nms_pre=1000,
                        iou_threshold=0.7, min_bbox_size=0.0, max_per_img=1000,
                        target_means=(0.0, 0.0, 0.0, 0.0), target_stds=(1.0, 1.0, 1.0, 1.0),
                        version="2.x"):
    """RPNHead._predict_by_feat_single on one image's flattened levels: the
    protocol's ``version="3.x"``. The default ``"2.x"`` (mmdet 2.11's size filter)
    is not implemented: the installed mmdet is 3.x.

    Each level's (A_l,) activated scores become the (1, A_l, 1)-shaped raw map
    mmdet reads, as logits (mmdet applies the sigmoid itself); the deltas become
    a (4, A_l, 1) map. mmdet returns no anchor indices: they are recovered from
    its per-level ``scores.sort(descending=True)`` (the same call on the same
    tensor) and checked against the scores mmdet returned.
    """
    if version != "3.x":
        raise NotImplementedError(f"version={version!r}: the installed mmdet is 3.x")
    head = _rpn_head(tuple(float(m) for m in target_means),
                     tuple(float(s) for s in target_stds))
    logits = [torch.logit(s).reshape(1, -1, 1) for s in scores]
    maps = [d.t().reshape(4, -1, 1) for d in deltas]
    cfg = ConfigDict(nms_pre=nms_pre, min_bbox_size=min_bbox_size, max_per_img=max_per_img,
                     nms=dict(type="nms", iou_threshold=float(iou_threshold)))
    meta = {"img_shape": (int(image_size[0]), int(image_size[1]))}

    original = functools.partial(_RPNHead._bbox_post_process, head)

    def post_process(results, cfg, rescale=False, with_nms=True, img_meta=None):
        rows, kept, offset = [], [], 0
        for level_logits in logits:
            level_scores = level_logits.reshape(-1).sigmoid()  # what mmdet sorts
            n = level_scores.shape[0]
            if 0 < nms_pre < n:
                values, order = level_scores.sort(descending=True)
                values, order = values[:nms_pre], order[:nms_pre]
            else:
                values, order = level_scores, torch.arange(n, device=level_scores.device)
            rows.append(order + offset)
            kept.append(values)
            offset += n
        if not torch.equal(torch.cat(kept), results.scores):
            raise RuntimeError("mmdet_rpn_proposals: recovered anchor indices disagree with "
                               "mmdet's per-level top-k")
        results.anchor_indices = torch.cat(rows)
        return original(results=results, cfg=cfg, rescale=rescale, with_nms=with_nms,
                        img_meta=img_meta)

    head._bbox_post_process = post_process
    with torch.no_grad():
        out = head._predict_by_feat_single(logits, maps, [None] * len(scores), list(anchors),
                                           meta, cfg)
    indices = out.anchor_indices if "anchor_indices" in out else torch.zeros(
        0, dtype=torch.long, device=out.bboxes.device)
    levels = _levels_of(indices, [s.shape[0] for s in scores])
    return out.bboxes, out.scores, levels, indices.to(torch.int64)


def _levels_of(indices, sizes):
    bounds = torch.tensor(list(itertools.accumulate(sizes)), dtype=torch.long,
                          device=indices.device)
    return torch.bucketize(indices, bounds, right=True).to(torch.int64)


# --------------------------------------------------------------------------- RoI
def roi_align(input, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    """mmcv.ops.roi_align (its kernel: see the run header)."""
    if sampling_ratio < 0:
        raise NotImplementedError("mmcv's adaptive sampling is sampling_ratio=0")
    return _mmcv_ops.roi_align(input, rois, output_size, spatial_scale, sampling_ratio,
                               "avg", aligned)


def map_rois_to_levels(boxes, mapping="mmdet", min_level=2, max_level=5):
    """SingleRoIExtractor.map_roi_levels (finest_scale 56, levels from P2)."""
    if mapping != "mmdet":
        raise NotImplementedError("mmdet maps RoIs to levels its own way only")
    if min_level != 2:
        raise NotImplementedError("mmdet's level 0 is P2 (finest_scale 56)")
    extractor = SingleRoIExtractor(dict(type="RoIAlign", output_size=7, sampling_ratio=0),
                                   out_channels=1, featmap_strides=[4, 8, 16, 32])
    rois = torch.cat([boxes.new_zeros((boxes.shape[0], 1)), boxes], dim=1)
    return extractor.map_roi_levels(rois, max_level - min_level + 1).to(torch.int64)


class MultiLevelRoIPooler:
    """mmdet SingleRoIExtractor with an mmcv RoIAlign layer."""

    def __init__(self, output_size, scales, sampling_ratio=0, aligned=True, mapping="mmdet"):
        if mapping != "mmdet":
            raise NotImplementedError("mmdet pools with its own level mapping only")
        strides = [1.0 / float(s) for s in scales]
        if abs(math.log2(strides[0]) - 2) > 1e-9:
            raise NotImplementedError("mmdet's finest level is mapped as P2 (finest_scale 56)")
        self._extractor = SingleRoIExtractor(
            dict(type="RoIAlign", output_size=output_size, sampling_ratio=sampling_ratio,
                 aligned=aligned), out_channels=1, featmap_strides=strides)

    def __call__(self, features, rois):
        self._extractor.out_channels = features[0].shape[1]
        return self._extractor(tuple(features), rois)
