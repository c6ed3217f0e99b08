"""RTMDet (mmdet 3.x), wired in one file: anchor-free points, soft labels, GIoU.

One image's path (shapes for a (B, 3, 640, 640) batch, tiny config, C classes):

1. ``ImageList.from_tensors`` pads to a multiple of 32.
2. ``CSPNeXt``: (B, 96, 80, 80), (B, 192, 40, 40), (B, 384, 20, 20).
3. ``CSPNeXtPAFPN``: three (B, 96, H_l, W_l) maps, strides 8, 16, 32.
4. ``RTMDetSepBNHead``: per level cls (B, C, H_l, W_l) logits and distances
   (B, 4, H_l, W_l) (left, top, right, bottom) in pixels (already x stride);
   flattened to cls (B, 8400, C) and dist (B, 8400, 4).
5. Priors: ``MlvlPointGenerator(offset=0)`` points (8400, 4) = (x, y, stride,
   stride), level by level, row-major; boxes = ``distance2bbox(points, dist)``.
6. Training (``compute_losses``): ``targets.rtmdet_targets`` (the
   ``DynamicSoftLabelAssigner`` on the detached logits and boxes) -> labels
   (background = C) and assign metrics (IoU of each positive with its gt, 0
   elsewhere) -> ``quality_focal_loss`` over all valid priors and ``giou_loss``
   (weight 2) over positives weighted by the metric; divided by
   ``rtmdet_avg_factor`` of all metrics (cls) and of the positives' metrics (box).
7. Inference (``dense.dense_detect``): per level, sigmoid scores above
   ``score_thresh``, top ``nms_pre`` (point, class) pairs, boxes clipped to the
   image; boxes of width or height <= 0 dropped (mmdet 3.3, ``min_bbox_size=0``);
   class-wise NMS (IoU 0.65) and the best ``max_detections`` (300).

Norms: mmdet 3.3's RTMDet configs set ``norm_cfg=dict(type='SyncBN')`` in backbone,
neck and head, i.e. PyTorch's defaults eps 1e-5, momentum 0.1 (the modules'
own default, BN eps 1e-3 momentum 0.03, only applies without a config); the
upstream configurations here use those, and ``sync_bn_under_ddp`` tells a distributed
trainer to convert them.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from reference.anchors import MlvlPointGenerator
from reference.assignment import DynamicSoftLabelAssigner
from reference.backbones import CSPNeXt
from reference.coders import distance2bbox
from reference.detectors.dense import DenseTestConfig, dense_detect
from reference.detectors.image_list import ImageList, check_finite, check_images_and_targets, pad_size
from reference.heads import RTMDetSepBNHead, flatten_level_outputs
from reference.losses import giou_loss, quality_focal_loss, rtmdet_avg_factor
from reference.necks import CSPNeXtPAFPN
from reference.targets import rtmdet_targets

__all__ = ["RTMDetConfig", "RTMDet", "build_rtmdet"]

Tensor = torch.Tensor


@dataclasses.dataclass(frozen=True)
class RTMDetConfig:
    """Plain settings of an RTMDet; defaults are mmdet's rtmdet_s except the widths.

    deepen_factor / widen_factor: CSPNeXt size (tiny 0.167 / 0.375, s 0.33 / 0.5).
    neck_channels / head_channels: output width of the PAFPN and the head towers.
    exp_on_reg: distances = exp(conv) * stride (m/l/x) or conv * stride (tiny, s).
    point_offset: ``MlvlPointGenerator(offset=0)`` in mmdet's configs.
    norm_eps / norm_momentum / sync_bn: every BatchNorm of backbone, neck and head;
        the configs' ``SyncBN`` (eps 1e-5, momentum 0.1). ``sync_bn`` is exposed as
        ``model.sync_bn_under_ddp`` for trainers that convert to SyncBatchNorm.
    min_bbox_size: the eval size filter of mmdet 3.3 (RTMDet is 3.x only): keep boxes
        with w > 0 and h > 0 (``test_cfg.min_bbox_size=0``,
        ``mmdet/models/dense_heads/base_dense_head.py:476-478``); None: no filter.
    """

    num_classes: int = 80
    deepen_factor: float = 0.33
    widen_factor: float = 0.5
    neck_channels: int = 128
    head_channels: int = 128
    stacked_convs: int = 2
    exp_on_reg: bool = False
    with_objectness: bool = False
    strides: tuple[int, ...] = (8, 16, 32)
    box_loss_weight: float = 2.0
    score_thresh: float = 0.001
    nms_pre: int = 30000
    nms_iou: float = 0.65
    max_detections: int = 300
    min_bbox_size: float | None = 0.0
    size_divisibility: int = 32
    point_offset: float = 0.0
    norm_eps: float = 1e-5
    norm_momentum: float = 0.1
    sync_bn: bool = True


class RTMDet(nn.Module):
    """RTMDet with the package's one calling convention (see ``reference.detectors``).

    Training -> {"loss_cls", "loss_box"}; eval -> per image {"boxes", "scores", "labels"}.
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module, head: RTMDetSepBNHead,
                 cfg: RTMDetConfig) -> None:
        super().__init__()
        self.backbone, self.neck, self.head = backbone, neck, head
        self.cfg = cfg
        self.num_classes = cfg.num_classes
        self.points = MlvlPointGenerator(list(cfg.strides), offset=cfg.point_offset)
        self.assigner = DynamicSoftLabelAssigner(soft_center_radius=3.0, topk=13, iou_weight=3.0)
        self.test_cfg = DenseTestConfig(cfg.score_thresh, cfg.nms_pre, cfg.nms_iou,
                                        cfg.max_detections, cfg.min_bbox_size)
        # mmdet 3.3's rtmdet configs norm with SyncBN (rtmdet_l_8xb32-300e_coco.py); the
        # training script reads this to convert under DDP (--sync-bn auto).
        self.sync_bn_under_ddp = cfg.sync_bn

    def forward(self, images: list[Tensor], targets: list[dict] | None = None):
        check_images_and_targets(images, targets, self.num_classes, self.training)
        batch = ImageList.from_tensors(list(images), self.cfg.size_divisibility)
        feats = self.neck(self.backbone(batch.tensor))  # (B, F, H_l, W_l) at strides 8, 16, 32
        cls_maps, dist_maps = self.head(feats)
        featmap_sizes = [tuple(f.shape[-2:]) for f in feats]
        priors = self.points.grid_priors(featmap_sizes, batch.tensor.device,
                                         with_stride=True)  # per level (n_l, 4)
        if self.training:
            check_finite("rtmdet head", cls_maps + dist_maps)
            return self.compute_losses(priors, cls_maps, dist_maps, batch, featmap_sizes, targets)
        return dense_detect(priors, cls_maps, dist_maps, batch.image_sizes, self.num_classes,
                            self.decode, self.test_cfg)

    def head_outputs(self, batch: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Raw head maps for a padded (B, 3, H, W) batch: cls (B, C, H_l, W_l) and
        distances (B, 4, H_l, W_l) per level (strides 8, 16, 32)."""
        return self.head(self.neck(self.backbone(batch)))

    def compute_losses(self, priors: list[Tensor], cls_maps: list[Tensor], dist_maps: list[Tensor],
                       batch: ImageList, featmap_sizes: list, targets: list[dict]) -> dict[str, Tensor]:
        """targets.rtmdet_targets -> QFL and GIoU sums -> rtmdet_avg_factor."""
        points = torch.cat(priors)  # (P, 4): x, y, stride_w, stride_h
        cls = flatten_level_outputs(cls_maps, self.num_classes)  # (B, P, C)
        boxes = distance2bbox(points[:, :2], flatten_level_outputs(dist_maps, 4))  # (B, P, 4)
        valid = [self.points.valid_flags(featmap_sizes, pad_size(size, self.cfg.size_divisibility),
                                         points.device) for size in batch.image_sizes]
        level_targets = rtmdet_targets(
            cls, boxes, [priors] * len(targets), valid,
            [t["boxes"].to(boxes.dtype) for t in targets], [t["labels"] for t in targets],
            batch.image_sizes, num_classes=self.num_classes, assigner=self.assigner,
            allowed_border=-1)
        cls_sum, box_sum, pos_metrics, all_metrics = 0.0, 0.0, [], []
        for i, t in enumerate(level_targets.images):  # unmapped: (P,) rows per image
            metrics = t.assign_metrics.to(cls.dtype)  # (P,) IoU of positives, 0 elsewhere
            pos = t.bbox_weights[:, 0] > 0  # (P,)
            cls_sum = cls_sum + quality_focal_loss(cls[i], (t.labels, metrics),
                                                   weight=t.label_weights.to(cls.dtype),
                                                   reduction="sum")
            if pos.any():
                box_sum = box_sum + giou_loss(boxes[i][pos], t.bbox_targets[pos].to(boxes.dtype),
                                              weight=metrics[pos], reduction="sum", flavour="mmdet")
            else:  # keep the graph connected: zero box loss, as mmdet's `bbox_pred.sum() * 0`
                box_sum = box_sum + boxes[i].sum() * 0
            all_metrics.append(metrics)
            pos_metrics.append(metrics[pos])
        return {"loss_cls": cls_sum / rtmdet_avg_factor(all_metrics),
                "loss_box": self.cfg.box_loss_weight * box_sum / rtmdet_avg_factor(pos_metrics)}

    def decode(self, points: Tensor, distances: Tensor, image_size: tuple[int, int]) -> Tensor:
        """(k, 4) points with strides and (k, 4) distances -> (k, 4) boxes clipped to (h, w)."""
        return distance2bbox(points[:, :2], distances, max_shape=image_size)


def build_rtmdet(cfg: RTMDetConfig) -> RTMDet:
    """Modules of an RTMDet from its plain config."""
    if not isinstance(cfg.num_classes, int) or cfg.num_classes < 1:
        raise ValueError(f"num_classes={cfg.num_classes!r}: expected a positive int")
    backbone = CSPNeXt(cfg.deepen_factor, cfg.widen_factor)
    neck = CSPNeXtPAFPN(backbone.out_channels, cfg.neck_channels,
                        num_csp_blocks=max(round(3 * cfg.deepen_factor), 1))
    head = RTMDetSepBNHead(cfg.neck_channels, cfg.num_classes, cfg.head_channels, cfg.strides,
                           cfg.stacked_convs, share_conv=True, exp_on_reg=cfg.exp_on_reg,
                           with_objectness=cfg.with_objectness)
    model = RTMDet(backbone, neck, head, cfg)
    for m in model.modules():  # norm_cfg: one eps and momentum for every BatchNorm
        if isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = cfg.norm_eps, cfg.norm_momentum
    return model
