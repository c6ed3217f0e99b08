"""RTMDet (mmdet 3.x), wired in one file: anchor-free points, soft labels, GIoU.

One image's path (shapes for a (N, 3, 640, 640) batch, tiny config, C classes):

1. ``ImageList.from_tensors`` pads to a multiple of 32.
2. ``CSPNeXt``: (N, 96, 80, 80), (N, 192, 40, 40), (N, 384, 20, 20).
3. ``CSPNeXtPAFPN``: three (N, 96, H_l, W_l) maps, strides 8, 16, 32.
4. ``RTMDetSepBNHead``: per level cls (N, C, H_l, W_l) logits and distances
   (N, 4, H_l, W_l) (left, top, right, bottom) in pixels (already x stride);
   flattened to cls (N, 8400, C) and dist (N, 8400, 4).
5. Priors: ``MlvlPointGenerator(offset=0)`` points (8400, 4) = (x, y, stride,
   stride), level by level, row-major; boxes = ``distance2bbox(points, dist)``.
6. Training (``compute_losses``), per image: ``DynamicSoftLabelAssigner`` on the
   detached logits and boxes -> labels (background = C) and assign metrics (IoU
   of each positive with its gt, 0 elsewhere) -> quality focal loss over all
   priors and GIoU loss (weight 2) over positives weighted by the metric; both
   divided by the batch sum of metrics clamped to >= 1.
7. Inference (``detect``): per level, sigmoid scores above ``score_thresh``, top
   ``nms_pre`` (point, class) pairs, boxes clipped to the image; class-wise NMS
   (IoU 0.65) and the best ``max_detections`` (300).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from reference.anchors import MlvlPointGenerator
from reference.assignment import DynamicSoftLabelAssigner
from reference.backbones import CSPNeXt
from reference.coders import distance2bbox
from reference.detectors.common import check_finite, check_images_and_targets, pad_size
from reference.detectors.image_list import ImageList
from reference.heads import RTMDetSepBNHead, flatten_level_outputs
from reference.losses import giou_loss, quality_focal_loss
from reference.necks import CSPNeXtPAFPN
from reference.nms import batched_nms

__all__ = ["RTMDetConfig", "RTMDet", "build_rtmdet"]

Tensor = torch.Tensor


@dataclasses.dataclass(frozen=True)
class RTMDetConfig:
    """Plain settings of an RTMDet; defaults are mmdet's rtmdet_s except the widths.

    deepen_factor / widen_factor: CSPNeXt size (tiny 0.167 / 0.375, s 0.33 / 0.5).
    neck_channels / head_channels: output width of the PAFPN and the head towers.
    exp_on_reg: distances = exp(conv) * stride (m/l/x) or conv * stride (tiny, s).
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
    size_divisibility: int = 32


class RTMDet(nn.Module):
    """RTMDet with the package's one calling convention (see ``reference.detectors``).

    Training -> {"loss_cls", "loss_box"}; eval -> per image {"boxes", "scores", "labels"}.
    """

    # mmdet 3.3's rtmdet configs norm with SyncBN (rtmdet_l_8xb32-300e_coco.py); the
    # training script reads this to convert under DDP (--sync-bn auto).
    sync_bn_under_ddp = True

    def __init__(self, backbone: nn.Module, neck: nn.Module, head: RTMDetSepBNHead,
                 cfg: RTMDetConfig) -> None:
        super().__init__()
        self.backbone, self.neck, self.head = backbone, neck, head
        self.cfg = cfg
        self.num_classes = cfg.num_classes
        self.points = MlvlPointGenerator(list(cfg.strides), offset=0.0)
        self.assigner = DynamicSoftLabelAssigner(soft_center_radius=3.0, topk=13, iou_weight=3.0)

    def forward(self, images: list[Tensor], targets: list[dict] | None = None):
        check_images_and_targets(images, targets, self.num_classes, self.training)
        batch = ImageList.from_tensors(list(images), self.cfg.size_divisibility)
        feats = self.neck(self.backbone(batch.tensor))  # (N, F, H_l, W_l) at strides 8, 16, 32
        cls_maps, dist_maps = self.head(feats)
        featmap_sizes = [tuple(f.shape[-2:]) for f in feats]
        priors = self.points.grid_priors(featmap_sizes, batch.tensor.device, with_stride=True)
        if self.training:
            check_finite("rtmdet head", cls_maps + dist_maps)
            return self.compute_losses(priors, cls_maps, dist_maps, batch, featmap_sizes, targets)
        return self.detect(priors, cls_maps, dist_maps, batch)

    def head_outputs(self, batch: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Raw head maps for a padded (N, 3, H, W) batch: cls (N, C, H_l, W_l) and
        distances (N, 4, H_l, W_l) per level (strides 8, 16, 32)."""
        return self.head(self.neck(self.backbone(batch)))

    def compute_losses(self, priors: list[Tensor], cls_maps: list[Tensor], dist_maps: list[Tensor],
                       batch: ImageList, featmap_sizes: list, targets: list[dict]) -> dict[str, Tensor]:
        points = torch.cat(priors)  # (P, 4): x, y, stride_w, stride_h
        cls = flatten_level_outputs(cls_maps, self.num_classes)  # (N, P, C)
        boxes = distance2bbox(points[:, :2], flatten_level_outputs(dist_maps, 4))  # (N, P, 4)
        C = self.num_classes
        cls_sum, box_sum = cls.new_zeros(()), cls.new_zeros(())
        metric_total, box_weight_total = cls.new_zeros(()), cls.new_zeros(())
        for i, target in enumerate(targets):
            gt_boxes, gt_labels = target["boxes"].to(boxes.dtype), target["labels"]
            valid = torch.cat(self.points.valid_flags(
                featmap_sizes, pad_size(batch.image_sizes[i], self.cfg.size_divisibility),
                points.device))  # (P,) bool
            assign = self.assigner.assign(cls[i][valid].detach(), boxes[i][valid].detach(),
                                          points[valid], gt_boxes, gt_labels)
            pos = assign.gt_inds > 0  # (P_valid,)
            labels = torch.full_like(assign.gt_inds, C)  # (P_valid,) background = C
            labels[pos] = assign.labels[pos]
            metrics = torch.zeros_like(assign.max_overlaps)  # (P_valid,) IoU of positives
            metrics[pos] = assign.max_overlaps[pos]
            cls_sum = cls_sum + quality_focal_loss(cls[i][valid], (labels, metrics), reduction="sum")
            if pos.any():
                matched = gt_boxes[assign.gt_inds[pos] - 1]  # (P_pos, 4)
                box_sum = box_sum + giou_loss(boxes[i][valid][pos], matched, weight=metrics[pos],
                                              reduction="sum", flavour="mmdet")
            else:  # keep the graph connected: zero box loss, as mmdet's `bbox_pred.sum() * 0`
                box_sum = box_sum + boxes[i].sum() * 0
            metric_total = metric_total + metrics.sum()
            box_weight_total = box_weight_total + metrics[pos].sum()
        cls_avg = metric_total.clamp(min=1).item()
        box_avg = box_weight_total.clamp(min=1).item()
        return {"loss_cls": cls_sum / cls_avg,
                "loss_box": self.cfg.box_loss_weight * box_sum / box_avg}

    @torch.no_grad()
    def detect(self, priors: list[Tensor], cls_maps: list[Tensor], dist_maps: list[Tensor],
               batch: ImageList) -> list[dict[str, Tensor]]:
        cfg, C = self.cfg, self.num_classes
        results = []
        for i, (h, w) in enumerate(batch.image_sizes):
            boxes_all, scores_all, labels_all = [], [], []
            for pts, cls_map, dist_map in zip(priors, cls_maps, dist_maps):
                scores = torch.sigmoid(cls_map[i]).permute(1, 2, 0).reshape(-1)  # (H*W*C,)
                candidates = torch.nonzero(scores > cfg.score_thresh).squeeze(1)
                scores = scores[candidates]
                top = scores.topk(min(cfg.nms_pre, scores.numel())).indices
                scores, candidates = scores[top], candidates[top]
                point_idx, labels = candidates // C, candidates % C
                dist = dist_map[i].permute(1, 2, 0).reshape(-1, 4)[point_idx]  # (k, 4)
                boxes_all.append(distance2bbox(pts[point_idx, :2], dist, max_shape=(h, w)))
                scores_all.append(scores)
                labels_all.append(labels)
            boxes, scores, labels = torch.cat(boxes_all), torch.cat(scores_all), torch.cat(labels_all)
            keep = batched_nms(boxes, scores, labels, cfg.nms_iou)[: cfg.max_detections]
            results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return results


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
    return RTMDet(backbone, neck, head, cfg)
