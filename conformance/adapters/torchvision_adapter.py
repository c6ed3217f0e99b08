"""torchvision, seen through the conformance protocol: ``--impl=torchvision``.

Each protocol name below maps the spec's call onto the torchvision API that does
the same job, without fixing anything torchvision does differently: where its
behaviour differs from a clause, the difference shows up as a failing test, and
``torchvision.deviations`` declares it with the reason. Options torchvision has
no counterpart for raise ``NotImplementedError`` (reported as not implemented).

torchvision claims only its own flavour: clauses specific to mmdet or detectron2
are skipped for it, the flavour-neutral MUST clauses all apply.
"""

from __future__ import annotations

import math

import torch
import torchvision
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator as _TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList as _ImageList
from torchvision.ops import boxes as box_ops

from conformance.adapters.torchvision_kernels import refuse_crashing_roi_align

__version__ = torchvision.__version__

CONFORMANCE = {
    "name": "torchvision",
    "version": torchvision.__version__,
    "flavours": ["torchvision"],
    "deviations": "torchvision.deviations",
}


def _batched(*tensors) -> bool:
    """Whether a tensor has batch dims; anything that is not a tensor goes on to
    torchvision unchanged, so that bad input meets torchvision's own handling."""
    return any(isinstance(t, torch.Tensor) and t.dim() > 2 for t in tensors)


def _plain_pairs(boxes1: torch.Tensor, boxes2: torch.Tensor) -> None:
    if _batched(boxes1, boxes2):
        raise NotImplementedError("torchvision box ops take (N, 4) boxes only, no batch dims")


# --------------------------------------------------------------------------- boxes / IoU
def box_iou(boxes1, boxes2, mode="iou", is_aligned=False, eps=1e-6):
    """torchvision.ops.box_iou / generalized_box_iou; ``eps`` has no counterpart."""
    if mode not in ("iou", "iof", "giou"):
        raise ValueError(f"mode={mode!r}: expected 'iou', 'iof' or 'giou'")
    if mode == "iof":
        raise NotImplementedError("torchvision has no intersection-over-foreground")
    _plain_pairs(boxes1, boxes2)
    fn = box_ops.box_iou if mode == "iou" else box_ops.generalized_box_iou
    if is_aligned:
        if len(boxes1) != len(boxes2):
            raise ValueError("is_aligned=True needs as many boxes1 as boxes2")
        # torchvision has no aligned IoU: the diagonal of pairwise blocks.
        block = 1024
        parts = [torch.diagonal(fn(boxes1[i:i + block], boxes2[i:i + block]))
                 for i in range(0, boxes1.shape[0], block)]
        return torch.cat(parts) if parts else boxes1.new_zeros((0,))
    return fn(boxes1, boxes2)


def box_area(boxes):
    if _batched(boxes):
        raise NotImplementedError("torchvision.ops.box_area takes (N, 4) boxes only")
    return box_ops.box_area(boxes)


# --------------------------------------------------------------------------- anchors
def _tv_grid_anchors(generator, image_size, featmap_sizes, device):
    """Run torchvision's generator on dummy tensors and split its output per level."""
    h, w = int(image_size[0]), int(image_size[1])
    images = _ImageList(torch.zeros(1, 1, h, w, device=device), [(h, w)])
    feats = [torch.zeros(1, 1, int(fh), int(fw), device=device) for fh, fw in featmap_sizes]
    (anchors,) = generator(images, feats)
    counts = [
        int(fh) * int(fw) * a
        for (fh, fw), a in zip(featmap_sizes, generator.num_anchors_per_location())
    ]
    return list(anchors.split(counts))


class TorchvisionAnchorGenerator:
    """torchvision's AnchorGenerator as the protocol's torchvision-flavour generator."""

    def __init__(self, sizes, aspect_ratios):
        sizes = tuple(tuple(s) for s in sizes)
        aspect_ratios = tuple(tuple(r) for r in aspect_ratios)
        self._gen = _TVAnchorGenerator(sizes, aspect_ratios)
        self.num_levels = len(sizes)

    @property
    def num_base_anchors(self):
        return self._gen.num_anchors_per_location()

    def grid_anchors(self, image_size, featmap_sizes, device="cpu"):
        return _tv_grid_anchors(self._gen, image_size, featmap_sizes, device)


class AnchorGenerator:
    """mmdet's AnchorGenerator protocol, built on torchvision's generator.

    Sizes are ``stride * scale`` per level (ratio outer, scale inner as mmdet's
    scale_major=True); the image size is chosen as ``featmap * stride`` so that
    torchvision's derived stride is exact. torchvision rounds the base anchors.
    """

    def __init__(self, strides, ratios, scales=None, base_sizes=None, scale_major=True,
                 octave_base_scale=None, scales_per_octave=None, centers=None,
                 center_offset=0.0):
        if centers is not None or center_offset != 0.0:
            raise NotImplementedError("torchvision anchors are always centred at offset 0")
        if not scale_major:
            raise NotImplementedError("torchvision orders ratio outer, scale inner only")
        strides = [s if isinstance(s, (tuple, list)) else (s, s) for s in strides]
        if any(sw != sh for sw, sh in strides):
            raise NotImplementedError("torchvision derives one stride per axis from sizes")
        if (scales is None) == (octave_base_scale is None):
            raise ValueError("give either scales or octave_base_scale+scales_per_octave")
        if scales is None:
            scales = [octave_base_scale * 2 ** (i / scales_per_octave)
                      for i in range(scales_per_octave)]
        base_sizes = base_sizes or [sw for sw, _ in strides]
        self.strides = [sw for sw, _ in strides]
        sizes = tuple(tuple(float(b) * float(s) for s in scales) for b in base_sizes)
        ratios = tuple(tuple(float(r) for r in ratios) for _ in base_sizes)
        self._gen = _TVAnchorGenerator(sizes, ratios)
        self.num_levels = len(base_sizes)

    @property
    def num_base_anchors(self):
        return self._gen.num_anchors_per_location()

    @property
    def base_anchors(self):
        return [b for b in self._gen.cell_anchors]

    def grid_anchors(self, featmap_sizes, device="cpu"):
        anchors = []
        for level, ((fh, fw), stride) in enumerate(zip(featmap_sizes, self.strides)):
            # One level at a time: torchvision derives one stride from one image size.
            gen = _TVAnchorGenerator((self._gen.sizes[level],), (self._gen.aspect_ratios[level],))
            anchors += _tv_grid_anchors(gen, (fh * stride, fw * stride), [(fh, fw)], device)
        return anchors

    def valid_flags(self, featmap_sizes, pad_shape, device="cpu"):
        raise NotImplementedError("torchvision has no padded-batch valid flags")


# --------------------------------------------------------------------------- coders
_DEFAULT_CLIP = math.log(1000.0 / 16)

BoxCoder = det_utils.BoxCoder


class Box2BoxTransform:
    """detectron2's Box2BoxTransform protocol on torchvision's BoxCoder."""

    def __init__(self, weights, scale_clamp=_DEFAULT_CLIP):
        self._coder = det_utils.BoxCoder(tuple(weights), bbox_xform_clip=scale_clamp)

    def get_deltas(self, src_boxes, target_boxes):
        return self._coder.encode_single(target_boxes, src_boxes)

    def apply_deltas(self, deltas, boxes):
        return self._coder.decode_single(deltas, boxes)


class DeltaXYWHBBoxCoder:
    """mmdet's DeltaXYWHBBoxCoder protocol on torchvision's BoxCoder.

    Standard deviations become weights (w = 1 / std); non-zero means have no
    counterpart. The wh clamp is torchvision's (upper bound only).
    """

    def __init__(self, target_means=(0.0, 0.0, 0.0, 0.0), target_stds=(1.0, 1.0, 1.0, 1.0),
                 clip_border=True, add_ctr_clamp=False, ctr_clamp=32):
        if any(m != 0 for m in target_means):
            raise NotImplementedError("torchvision's BoxCoder has no target means")
        if add_ctr_clamp:
            raise NotImplementedError("torchvision's BoxCoder has no centre clamp")
        self.weights = tuple(1.0 / float(s) for s in target_stds)
        self.clip_border = clip_border

    def encode(self, bboxes, gt_bboxes):
        if _batched(bboxes):
            raise NotImplementedError("torchvision's BoxCoder takes (N, 4) boxes only")
        return det_utils.BoxCoder(self.weights).encode_single(gt_bboxes, bboxes)

    def decode(self, bboxes, pred_bboxes, max_shape=None, wh_ratio_clip=16 / 1000):
        if _batched(bboxes):
            raise NotImplementedError("torchvision's BoxCoder takes (N, 4) boxes only")
        coder = det_utils.BoxCoder(self.weights, bbox_xform_clip=abs(math.log(wh_ratio_clip)))
        boxes = coder.decode_single(pred_bboxes, bboxes)
        if max_shape is not None and self.clip_border:
            boxes = box_ops.clip_boxes_to_image(boxes, (int(max_shape[0]), int(max_shape[1])))
        return boxes


# --------------------------------------------------------------------------- matching, sampling
TorchvisionMatcher = det_utils.Matcher


class BalancedPositiveNegativeSampler:
    """torchvision's sampler; it draws from torch's global generator only."""

    def __init__(self, batch_size_per_image, positive_fraction):
        self._sampler = det_utils.BalancedPositiveNegativeSampler(
            batch_size_per_image, positive_fraction)

    def __call__(self, matched_idxs, generator=None):
        if generator is not None and not isinstance(generator, torch.Generator):
            # The adapter's own argument (torchvision has none), so the adapter checks it.
            raise TypeError(f"generator={generator!r}: expected a torch.Generator or None")
        if generator is not None:
            # torchvision has no generator argument; seed the global one from it so
            # that "same seed, same sample" is at least asked of torchvision's code.
            torch.manual_seed(generator.initial_seed())
        return self._sampler(list(matched_idxs))


# --------------------------------------------------------------------------- losses
def _plain_loss(weight, avg_factor, loss_weight):
    if weight is not None or avg_factor is not None:
        raise NotImplementedError("torchvision's losses take no element weights or avg_factor")
    if loss_weight != 1.0:
        raise NotImplementedError("torchvision's losses have no loss_weight")


def sigmoid_focal_loss(pred, target, weight=None, gamma=2.0, alpha=0.25, reduction="mean",
                       avg_factor=None, loss_weight=1.0):
    """torchvision.ops.sigmoid_focal_loss; integer labels (background = C) become one-hot."""
    _plain_loss(weight, avg_factor, loss_weight)
    if isinstance(pred, torch.Tensor) and isinstance(target, torch.Tensor) \
            and not target.is_floating_point():
        num_classes = pred.shape[-1]
        onehot = torch.zeros(target.shape[0], num_classes + 1, dtype=pred.dtype,
                             device=pred.device)
        onehot[torch.arange(target.shape[0], device=pred.device), target] = 1
        target = onehot[:, :num_classes]
    from torchvision.ops import sigmoid_focal_loss as tv_focal
    return tv_focal(pred, target, alpha=alpha, gamma=gamma, reduction=reduction)


def giou_loss(pred, target, weight=None, reduction="mean", avg_factor=None, *,
              flavour="torchvision", eps=None, loss_weight=1.0):
    """torchvision.ops.generalized_box_iou_loss (eps 1e-7 added)."""
    _plain_loss(weight, avg_factor, loss_weight)
    if flavour != "torchvision":
        raise NotImplementedError(f"torchvision has only its own GIoU eps rule, not {flavour}'s")
    from torchvision.ops import generalized_box_iou_loss
    return generalized_box_iou_loss(pred, target, reduction=reduction,
                                    eps=1e-7 if eps is None else eps)


# --------------------------------------------------------------------------- NMS, RoI
def nms(boxes, scores, iou_threshold):
    return torchvision.ops.nms(boxes, scores, float(iou_threshold))


def batched_nms(boxes, scores, idxs, iou_threshold):
    return torchvision.ops.batched_nms(boxes, scores, idxs, float(iou_threshold))


def roi_align(input, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    refuse_crashing_roi_align("torchvision.ops.roi_align", input, output_size, spatial_scale)
    return torchvision.ops.roi_align(input, rois, output_size, spatial_scale=spatial_scale,
                                     sampling_ratio=sampling_ratio, aligned=aligned)


def map_rois_to_levels(boxes, mapping="torchvision", min_level=2, max_level=5):
    if mapping != "torchvision":
        raise NotImplementedError("torchvision maps RoIs to levels its own way only")
    from torchvision.ops.poolers import LevelMapper
    mapper = LevelMapper(min_level, max_level, canonical_scale=224, canonical_level=4, eps=1e-6)
    return mapper([boxes]).to(torch.int64)


class MultiLevelRoIPooler:
    """torchvision.ops.MultiScaleRoIAlign behind the protocol's pooler."""

    def __init__(self, output_size, scales, sampling_ratio=0, aligned=True, mapping="mmdet"):
        if mapping != "torchvision":
            raise NotImplementedError("torchvision pools with its own level mapping only")
        if aligned:
            raise NotImplementedError("MultiScaleRoIAlign always uses aligned=False")
        self.scales = [float(s) for s in scales]
        self.names = [str(i) for i in range(len(scales))]
        self._pool = torchvision.ops.MultiScaleRoIAlign(self.names, output_size, sampling_ratio)

    def __call__(self, features, rois):
        n_images = features[0].shape[0]
        h = int(round(features[0].shape[-2] / self.scales[0]))
        w = int(round(features[0].shape[-1] / self.scales[0]))
        order = torch.argsort(rois[:, 0], stable=True)
        sorted_rois = rois[order]
        boxes = [sorted_rois[sorted_rois[:, 0] == i, 1:] for i in range(n_images)]
        out = self._pool(dict(zip(self.names, features)), boxes, [(h, w)] * n_images)
        result = torch.empty_like(out)
        result[order] = out
        return result
