"""RetinaNet, wired in one file: pixels -> features -> dense predictions -> losses or boxes.

One image's path (shapes for a 2-image batch padded to 800x1216, C classes,
A = 9 anchors per location, levels P3..P7 at strides 8..128):

1. ``ImageList.from_tensors``: images -> (2, 3, 800, 1216), sizes kept per image.
2. ``ResNetBackbone``: C3, C4, C5 = (2, 512, 100, 152), (2, 1024, 50, 76),
   (2, 2048, 25, 38).
3. ``FPN``: P3..P7 = (2, 256, H_l, W_l) with H_l x W_l = 100x152, 50x76, 25x38,
   13x19, 7x10.
4. ``RetinaHead``: per level cls (2, A*C, H_l, W_l), box (2, A*4, H_l, W_l);
   ``flatten_level_outputs`` -> cls (2, 182403, C), box (2, 182403, 4).
5. Priors: ``retinanet_anchor_preset(flavour).build()`` -> per level (n_l, 4) xyxy,
   182403 in all, location row-major, anchor innermost (``grid_priors``), and
   per image ``valid_flags`` (mmdet: anchors over the image's own padding are out).
6. Training (``compute_losses``): ``targets.anchor_targets`` with the flavour's
   assigner and coder (assign -> ``PseudoSampler`` -> labels, weights, deltas)
   -> per image summed ``sigmoid_focal_loss`` over positives and negatives and
   ``smooth_l1_loss`` (beta 0 = L1) over positives -> the flavour's normaliser
   (``TotalPositives``, ``EmaLossNormalizer``, ``PerImageMean`` in ``losses``).
7. Inference (``dense.dense_detect``): per level top-k above score_thresh, decode
   with the coder, clip (``boxes.clip_boxes``), class-wise NMS, best ``max_detections``.

Flavours (mmdet, detectron2, torchvision) are ``RetinaNetFlavour`` presets holding
the stage objects: assigner, coder, normaliser, plus FPN extra levels, the box
loss beta and the inference numbers. ``build_retinanet(RetinaNetConfig(...))``.
"""

from __future__ import annotations

import dataclasses
import torch
from torch import nn

from reference.anchors import retinanet_anchor_preset
from reference.assignment import Matcher, MatcherAssigner, MaxIoUAssigner, TorchvisionMatcher
from reference.backbones import ResNetBackbone
from reference.boxes import clip_boxes
from reference.coders import Box2BoxTransform, BoxCoder, DeltaCodec, DeltaXYWHBBoxCoder
from reference.detectors.dense import DenseTestConfig, dense_detect
from reference.detectors.image_list import ImageList, check_finite, check_images_and_targets, pad_size
from reference.detectors.torchvision_weights import load_torchvision_retinanet_weights
from reference.heads import RetinaHead, flatten_level_outputs
from reference.losses import (EmaLossNormalizer, PerImageMean, TotalPositives, sigmoid_focal_loss,
                              smooth_l1_loss)
from reference.necks import FPN
from reference.targets import anchor_targets

__all__ = [
    "RetinaNetFlavour",
    "RETINANET_FLAVOURS",
    "RetinaNetConfig",
    "RetinaNet",
    "build_retinanet",
    "load_torchvision_retinanet_weights",
]

Tensor = torch.Tensor


# --------------------------------------------------------------------------- flavours
@dataclasses.dataclass(frozen=True)
class RetinaNetFlavour:
    """Everything in which the three upstream RetinaNets differ, as stage objects.

    fpn_extra_source / fpn_relu_before_extra_convs: how P6, P7 are made (see FPN).
    Anchors: ``retinanet_anchor_preset(name, octave_base_scale, scales_per_octave)``.
    assigner: ``assign(anchors, gts, None, gt_labels) -> AssignResult`` (mmdet
        ``MaxIoUAssigner``; detectron2 ``Matcher`` / torchvision ``TorchvisionMatcher``
        through ``MatcherAssigner``), IoU 0.5 positive, < 0.4 negative, low-quality on.
    codec: ``DeltaCodec`` of the flavour's delta coder (unit weights in all three).
    box_loss_beta: smooth-L1 beta; 0 is plain L1 (mmdet, torchvision).
    normaliser: the class of the batch reduction (``losses``): ``TotalPositives``
        (mmdet: sum / sum_i max(pos_i, 1)), ``EmaLossNormalizer`` (detectron2: sum /
        EMA of the batch's positives, 0.9, start 100), ``PerImageMean`` (torchvision:
        mean_i(sum_i / max(1, pos_i))); one instance per model.
    score_thresh, topk_candidates, nms_iou, max_detections: inference.
    min_bbox_size: the eval size filter, None in all three (mmdet 2.11's RetinaNet,
        ``anchor_head.py`` ``get_bboxes``, has none; ``RetinaNetConfig.min_bbox_size
        = 0.0`` gives mmdet 3.3's, ``base_dense_head.py:476-478``).
    size_divisibility: batch padding multiple.
    """

    name: str
    fpn_extra_source: str
    fpn_relu_before_extra_convs: bool
    assigner: object
    codec: DeltaCodec
    box_loss_beta: float
    normaliser: type
    score_thresh: float = 0.05
    topk_candidates: int = 1000
    nms_iou: float = 0.5
    max_detections: int = 100
    size_divisibility: int = 32
    min_bbox_size: float | None = None


RETINANET_FLAVOURS = {
    "mmdet": RetinaNetFlavour(
        name="mmdet", fpn_extra_source="input", fpn_relu_before_extra_convs=False,
        assigner=MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0),
        codec=DeltaCodec(DeltaXYWHBBoxCoder(clip_border=False)), box_loss_beta=0.0,
        normaliser=TotalPositives),
    "detectron2": RetinaNetFlavour(
        name="detectron2", fpn_extra_source="input", fpn_relu_before_extra_convs=True,
        assigner=MatcherAssigner(Matcher([0.4, 0.5], [0, -1, 1], allow_low_quality_matches=True)),
        codec=DeltaCodec(Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))), box_loss_beta=0.1,
        normaliser=EmaLossNormalizer),
    "torchvision": RetinaNetFlavour(
        name="torchvision", fpn_extra_source="output", fpn_relu_before_extra_convs=True,
        assigner=MatcherAssigner(TorchvisionMatcher(0.5, 0.4, allow_low_quality_matches=True)),
        codec=DeltaCodec(BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))), box_loss_beta=0.0,
        normaliser=PerImageMean, max_detections=300),
}


@dataclasses.dataclass(frozen=True)
class RetinaNetConfig:
    """Plain settings of a RetinaNet; ``build_retinanet`` turns them into modules.

    Defaults are the upstream R50-FPN configuration (mmdet flavour).
    backbone_norm / frozen_stages: see ``ResNetBackbone``.
    min_bbox_size: the eval size filter. None (default): none, as mmdet 2.11 (the
        version the mmdet flavour's RetinaNet follows), detectron2 and torchvision;
        0.0: mmdet 3.3's ``test_cfg.min_bbox_size=0`` (drop boxes with w <= 0 or h <= 0,
        ``mmdet/models/dense_heads/base_dense_head.py:476-478``).
    """

    num_classes: int = 80
    flavour: str = "mmdet"
    backbone_depth: int = 50
    backbone_norm: str = "bn_eval"
    frozen_stages: int = 1
    fpn_channels: int = 256
    head_channels: int = 256
    head_convs: int = 4
    octave_base_scale: float = 4.0
    scales_per_octave: int = 3
    prior_prob: float = 0.01
    score_thresh: float | None = None
    topk_candidates: int | None = None
    nms_iou: float | None = None
    max_detections: int | None = None
    min_bbox_size: float | None = None


# --------------------------------------------------------------------------- model
class RetinaNet(nn.Module):
    """RetinaNet with the package's one calling convention.

    ``model(images, targets)`` in training mode -> {"loss_cls", "loss_box"} scalars;
    ``model(images)`` in eval mode -> per image {"boxes" (k, 4), "scores" (k,),
    "labels" (k,) int64}, in the pixels of the input image.

    images: list of (3, H_i, W_i) float, already normalised. targets: list of
    {"boxes": (n_i, 4) float32 xyxy pixels, "labels": (n_i,) int64 in [0, C)}.
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module, head: RetinaHead,
                 anchor_generator, flavour: RetinaNetFlavour, num_classes: int) -> None:
        super().__init__()
        if anchor_generator.num_base_anchors[0] != head.num_anchors:
            raise ValueError(f"anchor_generator: {anchor_generator.num_base_anchors[0]} per "
                             f"location, head predicts {head.num_anchors}")
        self.backbone, self.neck, self.head = backbone, neck, head
        self.anchor_generator = anchor_generator
        self.flavour = flavour
        self.num_classes = num_classes
        self.normaliser = flavour.normaliser()  # one per model (detectron2's EMA has state)
        self.test_cfg = DenseTestConfig(flavour.score_thresh, flavour.topk_candidates,
                                        flavour.nms_iou, flavour.max_detections,
                                        flavour.min_bbox_size)

    # ---------------------------------------------------------------- forward
    def forward(self, images: list[Tensor], targets: list[dict] | None = None):
        check_images_and_targets(images, targets, self.num_classes, self.training)
        batch = ImageList.from_tensors(list(images), self.flavour.size_divisibility)
        feats = self.neck(self.backbone(batch.tensor))  # P3..P7: (B, F, H_l, W_l)
        cls_maps, box_maps = self.head(feats)
        featmap_sizes = [tuple(f.shape[-2:]) for f in feats]
        anchors = self.anchor_generator.grid_priors(featmap_sizes, batch.tensor.device,
                                                    image_size=batch.padded_size)  # (n_l, 4)
        if self.training:
            check_finite("retinanet head", cls_maps + box_maps)
            return self.compute_losses(anchors, cls_maps, box_maps, batch, featmap_sizes, targets)
        return dense_detect(anchors, cls_maps, box_maps, batch.image_sizes, self.num_classes,
                            self.decode, self.test_cfg)

    def head_outputs(self, batch: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Raw head maps for a padded (B, 3, H, W) batch: cls (B, A*C, H_l, W_l) and
        box (B, A*4, H_l, W_l) per level P3..P7 (for shape checks and debugging)."""
        return self.head(self.neck(self.backbone(batch)))

    # ---------------------------------------------------------------- training
    def compute_losses(self, anchors: list[Tensor], cls_maps: list[Tensor], box_maps: list[Tensor],
                       batch: ImageList, featmap_sizes: list, targets: list[dict]) -> dict[str, Tensor]:
        """targets.anchor_targets -> per-image loss sums -> the flavour's normaliser.

        anchors: per level (n_l, 4); cls_maps / box_maps: per level head maps.
        """
        f = self.flavour
        cls = flatten_level_outputs(cls_maps, self.num_classes)  # (B, A_all, C)
        box = flatten_level_outputs(box_maps, 4)  # (B, A_all, 4)
        device = cls.device
        valid = [self.anchor_generator.valid_flags(
            featmap_sizes, pad_size(size, f.size_divisibility), device) for size in batch.image_sizes]
        gts = [t["boxes"].to(anchors[0].dtype) for t in targets]
        level_targets = anchor_targets(
            [anchors] * len(targets), valid, gts, batch.image_sizes,
            gt_labels_list=[t["labels"] for t in targets], assigner=f.assigner,
            num_classes=self.num_classes, box_coder=f.codec, allowed_border=-1)
        sums, num_pos = [], []
        for i, t in enumerate(level_targets.images):  # one image at a time, unmapped (A_all,)
            pos = t.bbox_weights[:, 0] > 0  # (A_all,)
            loss_cls = sigmoid_focal_loss(cls[i], t.labels, weight=t.label_weights.to(cls.dtype),
                                          reduction="sum")
            loss_box = smooth_l1_loss(box[i][pos], t.bbox_targets[pos].to(box.dtype),
                                      beta=f.box_loss_beta, reduction="sum")
            sums.append(torch.stack([loss_cls, loss_box.to(loss_cls.dtype)]))
            num_pos.append(int(pos.sum()))
        loss_cls, loss_box = self.normaliser(torch.stack(sums), num_pos)  # (B, 2) -> (2,)
        return {"loss_cls": loss_cls, "loss_box": loss_box}

    # ---------------------------------------------------------------- inference
    def decode(self, anchors: Tensor, deltas: Tensor, image_size: tuple[int, int]) -> Tensor:
        """(k, 4) anchors and deltas -> (k, 4) boxes clipped to the image (h, w)."""
        return clip_boxes(self.flavour.codec.decode(anchors, deltas), *image_size)


def build_retinanet(cfg: RetinaNetConfig) -> RetinaNet:
    """Modules of a RetinaNet from its plain config (see ``RetinaNetConfig``)."""
    if cfg.flavour not in RETINANET_FLAVOURS:
        raise ValueError(f"flavour={cfg.flavour!r}: expected one of {sorted(RETINANET_FLAVOURS)}")
    if isinstance(cfg.num_classes, bool) or not isinstance(cfg.num_classes, int) or cfg.num_classes < 1:
        raise ValueError(f"num_classes={cfg.num_classes!r}: expected a positive int")
    overrides = {k: getattr(cfg, k) for k in ("score_thresh", "topk_candidates", "nms_iou",
                                               "max_detections", "min_bbox_size")
                 if getattr(cfg, k) is not None}
    flavour = dataclasses.replace(RETINANET_FLAVOURS[cfg.flavour], **overrides)
    backbone = ResNetBackbone(cfg.backbone_depth, out_stages=(3, 4, 5),
                              frozen_stages=cfg.frozen_stages, norm=cfg.backbone_norm)
    neck = FPN(backbone.out_channels, cfg.fpn_channels, num_outs=5,
               extra_source=flavour.fpn_extra_source,
               relu_before_extra_convs=flavour.fpn_relu_before_extra_convs)
    anchors = retinanet_anchor_preset(flavour.name, cfg.octave_base_scale,
                                      cfg.scales_per_octave).build()
    head = RetinaHead(cfg.fpn_channels, cfg.num_classes, anchors.num_base_anchors[0],
                      cfg.head_channels, cfg.head_convs, cfg.prior_prob)
    return RetinaNet(backbone, neck, head, anchors, flavour, cfg.num_classes)
