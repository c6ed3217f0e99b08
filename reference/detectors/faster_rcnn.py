"""Faster R-CNN with FPN, wired in one file: RPN proposals, then a RoI box head.

One image's path (shapes for a (2, 3, 800, 1216) batch, C classes):

1. ``ImageList.from_tensors`` pads to a multiple of 32.
2. ``ResNetBackbone``: C2..C5 = (2, 256, 200, 304) ... (2, 2048, 25, 38).
3. ``FPN`` (extra level by max pooling): P2..P6 = (2, 256, H_l, W_l), H_l x W_l =
   200x304, 100x152, 50x76, 25x38, 13x19.
4. ``RPNHead``: per level objectness (2, 3, H_l, W_l), deltas (2, 12, H_l, W_l);
   anchors one size per level (32 px at P2 ... 512 px at P6), ratios 0.5, 1, 2.
5. RPN training (``rpn_losses``): ``targets.anchor_targets`` with the flavour's
   RPN assigner (IoU 0.7 / 0.3, low-quality matches) and sampler (256 anchors,
   half positive at most) -> BCE on the sampled objectness and a box loss on the
   positives' deltas -> the flavour's RPN normaliser.
6. Proposals (``proposals``), per image, by the flavour's proposal function
   (mmdet ``mmdet_rpn_proposals``; detectron2 and torchvision
   ``find_top_rpn_proposals``): per level top-k, decode, clip, drop small boxes,
   NMS 0.7 by level, keep the best (training and test settings differ).
7. RoI head training (``roi_losses``), per image: ``targets.roi_targets_single``
   (gts added as proposals, IoU 0.5 without low-quality matches, 512 RoIs of
   which a quarter positive at most), pool (R, 256, 7, 7) features from the
   level each RoI's scale maps to, ``RoIBoxHead`` -> logits (R, C + 1) and
   class-specific deltas; cross-entropy and a box loss on the positives' deltas
   of their gt class (coder weights 10, 10, 5, 5, i.e. mmdet stds 0.1, 0.1, 0.2, 0.2).
8. Inference (``detect``): softmax over C + 1, decode every class's box, then the
   flavour's post-processing: mmdet ``multiclass_nms`` on the clipped boxes,
   detectron2 and torchvision ``fast_rcnn_inference`` (torchvision with its
   ``remove_small_boxes(1e-2)``); score > 0.05, class-wise NMS 0.5, best 100.

Flavours are ``FasterRCNNFlavour`` presets holding the stage objects (anchor
generator, assigners, samplers, coders, normaliser, proposal and post-processing
functions) and the numbers (box-loss betas, pooler settings, background column).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import torch
from torch import nn

from reference.anchors import AnchorGenerator, DefaultAnchorGenerator, TorchvisionAnchorGenerator
from reference.assignment import Matcher, MatcherAssigner, MaxIoUAssigner, TorchvisionMatcher
from reference.backbones import ResNetBackbone
from reference.boxes import clip_boxes
from reference.coders import Box2BoxTransform, BoxCoder, DeltaCodec, DeltaXYWHBBoxCoder
from reference.detectors.image_list import ImageList, check_finite, check_images_and_targets, pad_size
from reference.detectors.torchvision_weights import load_torchvision_faster_rcnn_weights
from reference.heads import RoIBoxHead, RPNHead, flatten_level_outputs
from reference.losses import (FixedBatch, SampledMean, TotalSamples, binary_cross_entropy_loss,
                              cross_entropy_loss, smooth_l1_loss)
from reference.necks import FPN
from reference.nms import Detections, fast_rcnn_inference, multiclass_nms
from reference.proposals import Proposals, find_top_rpn_proposals, mmdet_rpn_proposals
from reference.roi import MultiLevelRoIPooler
from reference.sampling import Detectron2Sampler, RandomSampler, TorchvisionSampler
from reference.targets import anchor_targets, roi_targets_single

__all__ = [
    "FasterRCNNFlavour",
    "FASTER_RCNN_FLAVOURS",
    "FasterRCNNConfig",
    "FasterRCNN",
    "build_faster_rcnn",
    "load_torchvision_faster_rcnn_weights",
]

Tensor = torch.Tensor
RPN_STRIDES = (4, 8, 16, 32, 64)  # P2..P6
RATIOS = (0.5, 1.0, 2.0)


# --------------------------------------------------------------------------- flavour stages
def mmdet_rpn_anchors(scale: float) -> AnchorGenerator:
    """mmdet RPN anchors: base size = stride, one scale (8: 32 px at P2), three ratios."""
    return AnchorGenerator(strides=list(RPN_STRIDES), ratios=list(RATIOS), scales=[scale])


def detectron2_rpn_anchors(scale: float) -> DefaultAnchorGenerator:
    """detectron2 ``DefaultAnchorGenerator``: sizes scale * stride (32 .. 512), offset 0."""
    return DefaultAnchorGenerator(sizes=[[scale * s] for s in RPN_STRIDES],
                                  aspect_ratios=[list(RATIOS)], strides=list(RPN_STRIDES))


def torchvision_rpn_anchors(scale: float) -> TorchvisionAnchorGenerator:
    """torchvision ``AnchorGenerator(((32,), (64,), ...), ((0.5, 1, 2),) * 5)``."""
    return TorchvisionAnchorGenerator(sizes=[[scale * s] for s in RPN_STRIDES],
                                      aspect_ratios=[list(RATIOS)] * len(RPN_STRIDES))


def mmdet_proposals(logits: list[Tensor], deltas: list[Tensor], anchors: list[Tensor],
                    image_size, codec: DeltaCodec, *, pre_nms_topk: int, post_nms_topk: int,
                    nms_iou: float, min_size: float, training: bool) -> Proposals:
    """``mmdet_rpn_proposals`` on sigmoid scores and raw deltas (it decodes itself,
    with the RPN coder's means and stds)."""
    return mmdet_rpn_proposals([t.sigmoid() for t in logits], deltas, anchors, image_size,
                               nms_pre=pre_nms_topk, iou_threshold=nms_iou, min_bbox_size=min_size,
                               max_per_img=post_nms_topk, target_means=codec.coder.means,
                               target_stds=codec.coder.stds)


def detectron2_proposals(logits: list[Tensor], deltas: list[Tensor], anchors: list[Tensor],
                         image_size, codec: DeltaCodec, *, pre_nms_topk: int, post_nms_topk: int,
                         nms_iou: float, min_size: float, training: bool) -> Proposals:
    """``find_top_rpn_proposals`` on the logits and the coder's decoded boxes."""
    boxes = [codec.decode(a, d) for a, d in zip(anchors, deltas)]  # per level (A_l, 4)
    return find_top_rpn_proposals(boxes, logits, image_size, nms_thresh=nms_iou,
                                  pre_nms_topk=pre_nms_topk, post_nms_topk=post_nms_topk,
                                  min_box_size=min_size, training=training)


def mmdet_postprocess(boxes: Tensor, scores: Tensor, image_size, *, score_thresh: float,
                      nms_iou: float, max_detections: int, min_size: float) -> Detections:
    """mmdet 2.x ``bbox_head.get_bboxes``: boxes clipped by the decoder, then
    ``multiclass_nms``. boxes (k, 4 * C), scores (k, C + 1) background last."""
    h, w = image_size
    return multiclass_nms(clip_boxes(boxes.view(boxes.shape[0], -1, 4), h, w).flatten(1), scores,
                          score_thresh, nms_iou, max_detections)


def detectron2_postprocess(boxes: Tensor, scores: Tensor, image_size, *, score_thresh: float,
                           nms_iou: float, max_detections: int, min_size: float) -> Detections:
    """detectron2 ``fast_rcnn_inference`` (torchvision's postprocess_detections is the same
    with ``min_box_size`` 1e-2). boxes (k, 4 * C), scores (k, C + 1) background last."""
    return fast_rcnn_inference(boxes, scores, image_size, score_thresh, nms_iou, max_detections,
                               min_box_size=min_size)


@dataclasses.dataclass(frozen=True)
class FasterRCNNFlavour:
    """Everything in which the three upstream Faster R-CNNs differ, as stage objects.

    rpn_anchors(anchor_scale) -> the flavour's anchor generator (sizes scale * stride).
    rpn_assigner / roi_assigner: ``assign(boxes, gts, None, gt_labels) -> AssignResult``.
    rpn_sampler / roi_sampler: sampler classes, built as ``sampler(num, pos_fraction)``
        (mmdet ``RandomSampler``, the RPN one without gts; detectron2 and torchvision
        through ``Detectron2Sampler`` / ``TorchvisionSampler``).
    append_gts: detectron2 and torchvision append the gts to the proposals before
        matching; mmdet's RoI sampler prepends them after assignment instead.
    rpn_codec / roi_codec: ``DeltaCodec`` (RPN unit weights; R-CNN 10, 10, 5, 5).
    rpn_box_beta / roi_box_beta: smooth-L1 beta (0 = L1).
    rpn_normaliser: class of the RPN batch reduction: ``TotalSamples`` (mmdet: sum /
        (sum_i max(pos_i, 1) + max(neg_i, 1))), ``FixedBatch`` (detectron2: sum /
        (256 * num_images)), ``SampledMean`` (torchvision: sum / number sampled).
    rpn_proposals: the flavour's proposal function (``mmdet_proposals`` or
        ``detectron2_proposals`` above); rpn_min_size its small-box threshold.
    rpn_post_nms_topk_train: proposals kept per image in training (torchvision
        ``rpn_post_nms_top_n_train`` 2000; mmdet ``max_per_img`` and detectron2
        ``POST_NMS_TOPK_TRAIN`` 1000).
    pooler_sampling_ratio / pooler_aligned / level_mapping: RoIAlign settings.
    background_first: torchvision's logits put background in column 0 and regress
        a box for it; mmdet and detectron2 put it last without a box.
    postprocess: ``mmdet_postprocess`` or ``detectron2_postprocess`` above.
    min_detection_size: final boxes need width and height >= this after clipping
        (torchvision's ``remove_small_boxes(1e-2)``; 0 keeps all).
    """

    name: str
    rpn_anchors: Callable[[float], object]
    rpn_assigner: object
    roi_assigner: object
    rpn_sampler: Callable[[int, float], object]
    roi_sampler: Callable[[int, float], object]
    append_gts: bool
    rpn_codec: DeltaCodec
    roi_codec: DeltaCodec
    rpn_box_beta: float
    roi_box_beta: float
    rpn_normaliser: type
    rpn_proposals: Callable[..., Proposals]
    rpn_min_size: float
    rpn_post_nms_topk_train: int
    pooler_sampling_ratio: int
    pooler_aligned: bool
    level_mapping: str
    background_first: bool
    postprocess: Callable[..., Detections]
    score_thresh: float = 0.05
    min_detection_size: float = 0.0
    nms_iou: float = 0.5
    max_detections: int = 100
    size_divisibility: int = 32


FASTER_RCNN_FLAVOURS = {
    "mmdet": FasterRCNNFlavour(
        name="mmdet", rpn_anchors=mmdet_rpn_anchors,
        rpn_assigner=MaxIoUAssigner(0.7, 0.3, min_pos_iou=0.3),
        roi_assigner=MaxIoUAssigner(0.5, 0.5, min_pos_iou=0.5, match_low_quality=False),
        rpn_sampler=functools.partial(RandomSampler, add_gt_as_proposals=False),
        roi_sampler=RandomSampler, append_gts=False,
        rpn_codec=DeltaCodec(DeltaXYWHBBoxCoder(clip_border=False)),
        roi_codec=DeltaCodec(DeltaXYWHBBoxCoder(target_stds=(0.1, 0.1, 0.2, 0.2),
                                                clip_border=False)),
        rpn_box_beta=0.0, roi_box_beta=0.0, rpn_normaliser=TotalSamples,
        rpn_proposals=mmdet_proposals, rpn_min_size=0.0, rpn_post_nms_topk_train=1000,
        pooler_sampling_ratio=0, pooler_aligned=True, level_mapping="mmdet",
        background_first=False, postprocess=mmdet_postprocess),
    "detectron2": FasterRCNNFlavour(
        name="detectron2", rpn_anchors=detectron2_rpn_anchors,
        rpn_assigner=MatcherAssigner(Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)),
        roi_assigner=MatcherAssigner(Matcher([0.5], [0, 1], allow_low_quality_matches=False)),
        rpn_sampler=Detectron2Sampler, roi_sampler=Detectron2Sampler, append_gts=True,
        rpn_codec=DeltaCodec(Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))),
        roi_codec=DeltaCodec(Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0))),
        rpn_box_beta=0.0, roi_box_beta=0.0, rpn_normaliser=FixedBatch,
        rpn_proposals=detectron2_proposals, rpn_min_size=0.0, rpn_post_nms_topk_train=1000,
        pooler_sampling_ratio=0, pooler_aligned=True, level_mapping="detectron2",
        background_first=False, postprocess=detectron2_postprocess),
    "torchvision": FasterRCNNFlavour(
        name="torchvision", rpn_anchors=torchvision_rpn_anchors,
        rpn_assigner=MatcherAssigner(TorchvisionMatcher(0.7, 0.3, allow_low_quality_matches=True)),
        roi_assigner=MatcherAssigner(TorchvisionMatcher(0.5, 0.5, allow_low_quality_matches=False)),
        rpn_sampler=TorchvisionSampler, roi_sampler=TorchvisionSampler, append_gts=True,
        rpn_codec=DeltaCodec(BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))),
        roi_codec=DeltaCodec(BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))),
        rpn_box_beta=1.0 / 9, roi_box_beta=1.0 / 9, rpn_normaliser=SampledMean,
        rpn_proposals=detectron2_proposals, rpn_min_size=1e-3, rpn_post_nms_topk_train=2000,
        pooler_sampling_ratio=2, pooler_aligned=False, level_mapping="torchvision",
        background_first=True, postprocess=detectron2_postprocess, min_detection_size=1e-2),
}


@dataclasses.dataclass(frozen=True)
class FasterRCNNConfig:
    """Plain settings of a Faster R-CNN; defaults are the upstream R50-FPN 1x config.

    ``None`` takes the flavour's value (``rpn_post_nms_topk_train``: torchvision
    2000, mmdet and detectron2 1000; score_thresh, nms_iou, max_detections).
    """

    num_classes: int = 80
    flavour: str = "mmdet"
    backbone_depth: int = 50
    backbone_norm: str = "bn_eval"
    frozen_stages: int = 1
    fpn_channels: int = 256
    fc_dim: int = 1024
    anchor_scale: float = 8.0
    rpn_batch_size: int = 256
    rpn_pos_fraction: float = 0.5
    rpn_nms_iou: float = 0.7
    rpn_pre_nms_topk_train: int = 2000
    rpn_post_nms_topk_train: int | None = None
    rpn_pre_nms_topk_test: int = 1000
    rpn_post_nms_topk_test: int = 1000
    roi_batch_size: int = 512
    roi_pos_fraction: float = 0.25
    score_thresh: float | None = None
    nms_iou: float | None = None
    max_detections: int | None = None


class FasterRCNN(nn.Module):
    """Faster R-CNN with the package's one calling convention (see ``reference.detectors``).

    Training -> {"loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box"};
    eval -> per image {"boxes", "scores", "labels"}. ``generator`` (optional
    torch.Generator attribute) makes the samplers reproducible.
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module, rpn_head: RPNHead,
                 roi_head: RoIBoxHead, anchor_generator, flavour: FasterRCNNFlavour,
                 cfg: FasterRCNNConfig) -> None:
        super().__init__()
        self.backbone, self.neck, self.rpn_head, self.roi_head = backbone, neck, rpn_head, roi_head
        self.anchor_generator = anchor_generator
        self.flavour = flavour
        self.cfg = cfg
        self.num_classes = cfg.num_classes
        self.rpn_sampler = flavour.rpn_sampler(cfg.rpn_batch_size, cfg.rpn_pos_fraction)
        self.roi_sampler = flavour.roi_sampler(cfg.roi_batch_size, cfg.roi_pos_fraction)
        self.rpn_normaliser = flavour.rpn_normaliser()
        self.pooler = MultiLevelRoIPooler(7, [1 / s for s in RPN_STRIDES[:4]],
                                          flavour.pooler_sampling_ratio, flavour.pooler_aligned,
                                          flavour.level_mapping)
        self.generator: torch.Generator | None = None

    def forward(self, images: list[Tensor], targets: list[dict] | None = None):
        check_images_and_targets(images, targets, self.num_classes, self.training)
        batch = ImageList.from_tensors(list(images), self.flavour.size_divisibility)
        feats = self.neck(self.backbone(batch.tensor))  # P2..P6: (B, F, H_l, W_l)
        objectness, deltas = self.rpn_head(feats)
        featmap_sizes = [tuple(f.shape[-2:]) for f in feats]
        anchors = self.anchor_generator.grid_priors(featmap_sizes, batch.tensor.device,
                                                    image_size=batch.padded_size)  # (A_l, 4)
        if self.training:
            check_finite("rpn head", objectness + deltas)
        proposals = self.proposals(anchors, objectness, deltas, batch)  # per image (k_i, 4)
        roi_feats = feats[:4]  # the pooler reads P2..P5
        if not self.training:
            return self.detect(roi_feats, proposals, batch)
        losses = self.rpn_losses(anchors, objectness, deltas, batch, featmap_sizes, targets)
        losses.update(self.roi_losses(roi_feats, proposals, targets))
        return losses

    def head_outputs(self, batch: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """RPN maps for a padded (B, 3, H, W) batch: objectness (B, A, H_l, W_l) and
        deltas (B, A*4, H_l, W_l) per level P2..P6."""
        return self.rpn_head(self.neck(self.backbone(batch)))

    def box_head_outputs(self, batch: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
        """Box-head outputs for a padded (B, 3, H, W) batch and (R, 5) RoIs (image index,
        x1, y1, x2, y2): logits (R, C + 1) and deltas (R, K * 4), as training and
        eval compute them (K = C, or C + 1 with background first)."""
        feats = self.neck(self.backbone(batch))
        return self.roi_head(self._pool(feats[:4], rois))

    @torch.no_grad()
    def proposals_and_roi_features(self, images: list[Tensor]) -> tuple[list[Tensor], Tensor]:
        """Proposals per image (k_i, 4) and their pooled features (sum k_i, F, 7, 7),
        as the eval-mode forward computes them."""
        batch = ImageList.from_tensors(list(images), self.flavour.size_divisibility)
        feats = self.neck(self.backbone(batch.tensor))
        objectness, deltas = self.rpn_head(feats)
        anchors = self.anchor_generator.grid_priors([tuple(f.shape[-2:]) for f in feats],
                                                    batch.tensor.device, image_size=batch.padded_size)
        props = self.proposals(anchors, objectness, deltas, batch)
        return props, self._pool(feats[:4], _rois_of(props))

    def _pool(self, feats: list[Tensor], rois: Tensor) -> Tensor:
        """RoIAlign in float32 (torchvision's autocast rule for roi_align), so mixed
        precision trains: (R, 5) rois -> (R, F, 7, 7) in the features' dtype."""
        pooled = self.pooler([f.float() for f in feats], rois.float())
        return pooled.to(feats[0].dtype)

    # ---------------------------------------------------------------- RPN
    def rpn_losses(self, anchors: list[Tensor], objectness: list[Tensor], deltas: list[Tensor],
                   batch: ImageList, featmap_sizes: list, targets: list[dict]) -> dict[str, Tensor]:
        """targets.anchor_targets (assign -> sample) -> BCE and box loss -> normaliser."""
        f = self.flavour
        logits = flatten_level_outputs(objectness, 1)[..., 0]  # (B, A_all)
        box = flatten_level_outputs(deltas, 4)  # (B, A_all, 4)
        valid = [self.anchor_generator.valid_flags(featmap_sizes, pad_size(size, f.size_divisibility),
                                                   logits.device) for size in batch.image_sizes]
        level_targets = anchor_targets(
            [anchors] * len(targets), valid, [t["boxes"].to(anchors[0].dtype) for t in targets],
            batch.image_sizes, assigner=f.rpn_assigner, sampler=self.rpn_sampler,
            num_classes=1, box_coder=f.rpn_codec, allowed_border=-1, generator=self.generator)
        sums, num_pos, num_neg = [], [], []
        for i, t in enumerate(level_targets.images):  # unmapped (A_all,) rows per image
            sampled = t.label_weights > 0  # (A_all,) the sampled anchors
            pos = t.bbox_weights[:, 0] > 0  # (A_all,)
            loss_cls = binary_cross_entropy_loss(logits[i][sampled],
                                                 (t.labels[sampled] == 0).to(logits.dtype),
                                                 reduction="sum")
            loss_box = smooth_l1_loss(box[i][pos], t.bbox_targets[pos].to(box.dtype),
                                      beta=f.rpn_box_beta, reduction="sum")
            sums.append(torch.stack([loss_cls, loss_box.to(loss_cls.dtype)]))
            num_pos.append(int(t.pos_inds.numel()))
            num_neg.append(int(t.neg_inds.numel()))
        loss_cls, loss_box = self.rpn_normaliser(torch.stack(sums), num_pos, num_neg,
                                                 self.rpn_sampler.num)
        return {"loss_rpn_cls": loss_cls, "loss_rpn_box": loss_box}

    @torch.no_grad()
    def proposals(self, anchors: list[Tensor], objectness: list[Tensor], deltas: list[Tensor],
                  batch: ImageList) -> list[Tensor]:
        """Per image (k_i, 4) proposal boxes by the flavour's proposal function (detached)."""
        cfg, f = self.cfg, self.flavour
        pre = cfg.rpn_pre_nms_topk_train if self.training else cfg.rpn_pre_nms_topk_test
        post = cfg.rpn_post_nms_topk_train if self.training else cfg.rpn_post_nms_topk_test
        logits = [flatten_level_outputs([o], 1)[..., 0] for o in objectness]  # per level (B, A_l)
        level_deltas = [flatten_level_outputs([d], 4) for d in deltas]  # per level (B, A_l, 4)
        out = []
        for i, size in enumerate(batch.image_sizes):
            props = f.rpn_proposals([o[i] for o in logits], [d[i] for d in level_deltas], anchors,
                                    size, f.rpn_codec, pre_nms_topk=pre, post_nms_topk=post,
                                    nms_iou=cfg.rpn_nms_iou, min_size=f.rpn_min_size,
                                    training=self.training)
            out.append(props.boxes)
        return out

    # ---------------------------------------------------------------- RoI head
    def _class_columns(self, labels: Tensor) -> Tensor:
        """Logit column of label c in [0, C] (C = background): c with background last;
        c + 1, background 0, with background first."""
        return (labels + 1) % (self.num_classes + 1) if self.flavour.background_first else labels

    def roi_losses(self, feats: list[Tensor], proposals: list[Tensor],
                   targets: list[dict]) -> dict[str, Tensor]:
        """targets.roi_targets_single per image -> pool -> box head -> CE and box loss."""
        f = self.flavour
        per_image = [roi_targets_single(props, t["boxes"], t["labels"], assigner=f.roi_assigner,
                                        sampler=self.roi_sampler, box_coder=f.roi_codec,
                                        num_classes=self.num_classes, append_gts=f.append_gts,
                                        generator=self.generator)
                     for props, t in zip(proposals, targets)]
        rois = _rois_of([r.rois for r in per_image])  # (R, 5) (image index, x1, y1, x2, y2)
        logits, deltas = self.roi_head(self._pool(feats, rois))  # (R, C + 1), (R, K * 4)
        check_finite("roi box head", [logits, deltas])
        labels = torch.cat([r.labels for r in per_image])  # (R,) background = C
        pos = torch.cat([torch.arange(r.rois.shape[0], device=rois.device) < r.num_pos
                         for r in per_image])  # (R,)
        cols = self._class_columns(labels)  # (R,) logit column
        per_class = deltas.view(deltas.shape[0], -1, 4)  # (R, K, 4)
        box_col = torch.zeros_like(cols) if self.roi_head.class_agnostic else cols
        pred = per_class[pos, box_col[pos]]  # (P, 4) the deltas of the gt's class
        box_targets = torch.cat([r.bbox_targets for r in per_image])[pos].to(pred.dtype)
        box_sum = smooth_l1_loss(pred, box_targets, beta=f.roi_box_beta, reduction="sum")
        return {"loss_cls": cross_entropy_loss(logits, cols),
                "loss_box": box_sum / max(1, labels.numel())}

    @torch.no_grad()
    def detect(self, feats: list[Tensor], proposals: list[Tensor],
               batch: ImageList) -> list[dict[str, Tensor]]:
        """Box head on the proposals -> softmax -> decode -> the flavour's post-processing."""
        f, C = self.flavour, self.num_classes
        rois = _rois_of(proposals)  # (R, 5)
        logits, deltas = self.roi_head(self._pool(feats, rois))
        probs = torch.softmax(logits.float(), dim=1)  # (R, C + 1)
        if f.background_first:  # to the background-last layout of the post-processing
            probs = torch.cat([probs[:, 1:], probs[:, :1]], dim=1)
            if not self.roi_head.class_agnostic:
                deltas = deltas[:, 4:]  # drop the background's box: (R, C * 4)
        results = []
        for i, size in enumerate(batch.image_sizes):
            mask = rois[:, 0] == i
            props = rois[mask, 1:]  # (k, 4)
            boxes = f.roi_codec.decode(props, deltas[mask].float())  # (k, C * 4) or (k, 4)
            dets = f.postprocess(boxes, probs[mask], size, score_thresh=f.score_thresh,
                                 nms_iou=f.nms_iou, max_detections=f.max_detections,
                                 min_size=f.min_detection_size)
            results.append({"boxes": dets.boxes, "scores": dets.scores, "labels": dets.labels})
        return results


def _rois_of(boxes_per_image: list[Tensor]) -> Tensor:
    """Per image (k_i, 4) boxes -> (R, 5) RoIs, R = sum k_i (image index, x1, y1, x2, y2)."""
    return torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1)
                      for i, b in enumerate(boxes_per_image)])


def build_faster_rcnn(cfg: FasterRCNNConfig) -> FasterRCNN:
    """Modules of a Faster R-CNN from its plain config."""
    if cfg.flavour not in FASTER_RCNN_FLAVOURS:
        raise ValueError(f"flavour={cfg.flavour!r}: expected one of {sorted(FASTER_RCNN_FLAVOURS)}")
    if isinstance(cfg.num_classes, bool) or not isinstance(cfg.num_classes, int) or cfg.num_classes < 1:
        raise ValueError(f"num_classes={cfg.num_classes!r}: expected a positive int")
    flavour = FASTER_RCNN_FLAVOURS[cfg.flavour]
    flavour = dataclasses.replace(flavour, **{k: getattr(cfg, k) for k in (
        "score_thresh", "nms_iou", "max_detections") if getattr(cfg, k) is not None})
    if cfg.rpn_post_nms_topk_train is None:
        cfg = dataclasses.replace(cfg, rpn_post_nms_topk_train=flavour.rpn_post_nms_topk_train)
    backbone = ResNetBackbone(cfg.backbone_depth, out_stages=(2, 3, 4, 5),
                              frozen_stages=cfg.frozen_stages, norm=cfg.backbone_norm)
    neck = FPN(backbone.out_channels, cfg.fpn_channels, num_outs=5, extra_source="maxpool")
    anchors = flavour.rpn_anchors(cfg.anchor_scale)
    rpn_head = RPNHead(cfg.fpn_channels, anchors.num_base_anchors[0])
    roi_head = RoIBoxHead(cfg.fpn_channels, cfg.num_classes, 7, cfg.fc_dim,
                          background_first=flavour.background_first)
    return FasterRCNN(backbone, neck, rpn_head, roi_head, anchors, flavour, cfg)
