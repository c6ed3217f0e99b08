"""Faster R-CNN with FPN, wired in one file: RPN proposals, then a RoI box head.

One image's path (shapes for a (2, 3, 800, 1216) batch, C classes):

1. ``ImageList.from_tensors`` pads to a multiple of 32.
2. ``ResNetBackbone``: C2..C5 = (2, 256, 200, 304) ... (2, 2048, 25, 38).
3. ``FPN`` (extra level by max pooling): P2..P6 = (2, 256, H_l, W_l), H_l x W_l =
   200x304, 100x152, 50x76, 25x38, 13x19.
4. ``RPNHead``: per level objectness (2, 3, H_l, W_l), deltas (2, 12, H_l, W_l);
   anchors one size per level (32 px at P2 ... 512 px at P6), ratios 0.5, 1, 2.
5. RPN training (``rpn_losses``), per image: match anchors (IoU 0.7 / 0.3 with
   low-quality matches), sample 256 anchors (half positive at most), BCE on
   objectness and a box loss on the positives' deltas.
6. Proposals (``proposals``), per image: per level top-k by objectness, decode,
   clip, drop tiny boxes, NMS 0.7 by level, keep the best (1000 at test time).
7. RoI head training (``roi_losses``), per image: add the gts to the proposals,
   match (IoU 0.5, no low-quality), sample 512 RoIs (a quarter positive at most),
   pool (K, 256, 7, 7) features from the level each RoI's scale maps to,
   ``RoIBoxHead`` -> logits (K, C + 1) and class-specific deltas; cross-entropy
   and a box loss on the positives' deltas of their gt class (coder weights
   10, 10, 5, 5, i.e. mmdet stds 0.1, 0.1, 0.2, 0.2).
8. Inference (``detect``): softmax over C + 1, decode every class's box, clip,
   score > 0.05, class-wise NMS 0.5, best 100.

Flavours are ``FasterRCNNFlavour`` presets (anchors, matchers, coders, box losses
and normalisers, pooler settings, where the background column sits).
Sampling uses one algorithm for all flavours (uniform draws without replacement;
num_pos = min(#pos, int(num * fraction)), num_neg = min(#neg, num - num_pos)):
upstream only differs in the random stream.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from reference.backbones import ResNetBackbone
from reference.detectors.common import (
    AnchorMaker,
    DeltaCodec,
    check_finite,
    check_images_and_targets,
    clip_to_image,
    detectron2_anchors,
    detectron2_codec,
    detectron2_matcher,
    mmdet_codec,
    mmdet_matcher,
    mmdet_rpn_anchors,
    load_renamed_state_dict,
    pad_size,
    resolve_flavour,
    torchvision_anchors,
    torchvision_codec,
    torchvision_matcher,
)
from reference.detectors.image_list import ImageList
from reference.heads import RoIBoxHead, RPNHead, flatten_level_outputs
from reference.losses import smooth_l1_loss
from reference.necks import FPN
from reference.nms import batched_nms
from reference.proposals import find_top_rpn_proposals
from reference.roi import MultiLevelRoIPooler
from reference.sampling import subsample_labels

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


@dataclasses.dataclass(frozen=True)
class FasterRCNNFlavour:
    """Everything in which the three upstream Faster R-CNNs differ.

    make_anchors(anchor_scale) -> AnchorMaker (sizes anchor_scale * stride).
    rpn_matcher / roi_matcher: factories of match(boxes, gts) -> AnchorMatch.
    rpn_codec / roi_codec: delta codecs (RPN unit weights; R-CNN 10, 10, 5, 5).
    rpn_box_beta / roi_box_beta: smooth-L1 beta (0 = L1).
    rpn_normaliser: "sampled" (sum / number of sampled anchors: mmdet, and
        torchvision's mean BCE), "batch_size" (sum / (256 * num_images): detectron2).
    rpn_min_size: proposals need width and height > this (strict).
    pooler_sampling_ratio / pooler_aligned / level_mapping: RoIAlign settings.
    background_first: torchvision's logits put background in column 0 and regress
        a box for it; mmdet and detectron2 put it last without a box.
    min_detection_size: final boxes need width and height >= this after clipping
        (torchvision's ``remove_small_boxes(1e-2)``; 0 keeps all).
    """

    name: str
    make_anchors: Callable[[float], AnchorMaker]
    rpn_matcher: Callable[[], Callable]
    roi_matcher: Callable[[], Callable]
    rpn_codec: DeltaCodec
    roi_codec: DeltaCodec
    rpn_box_beta: float
    roi_box_beta: float
    rpn_normaliser: str
    rpn_min_size: float
    pooler_sampling_ratio: int
    pooler_aligned: bool
    level_mapping: str
    background_first: bool
    score_thresh: float = 0.05
    min_detection_size: float = 0.0
    nms_iou: float = 0.5
    max_detections: int = 100
    size_divisibility: int = 32


def _one_size_per_level(scale: float) -> list[list[float]]:
    return [[scale * s] for s in RPN_STRIDES]


FASTER_RCNN_FLAVOURS = {
    "mmdet": FasterRCNNFlavour(
        name="mmdet",
        make_anchors=lambda scale: mmdet_rpn_anchors(RPN_STRIDES, RATIOS, [scale]),
        rpn_matcher=lambda: mmdet_matcher(0.7, 0.3, min_pos_iou=0.3),
        roi_matcher=lambda: mmdet_matcher(0.5, 0.5, min_pos_iou=0.5, low_quality=False),
        rpn_codec=mmdet_codec(), roi_codec=mmdet_codec((0.1, 0.1, 0.2, 0.2)),
        rpn_box_beta=0.0, roi_box_beta=0.0, rpn_normaliser="sampled", rpn_min_size=0.0,
        pooler_sampling_ratio=0, pooler_aligned=True, level_mapping="mmdet",
        background_first=False),
    "detectron2": FasterRCNNFlavour(
        name="detectron2",
        make_anchors=lambda scale: detectron2_anchors(_one_size_per_level(scale), RATIOS, RPN_STRIDES),
        rpn_matcher=lambda: detectron2_matcher(0.7, 0.3),
        roi_matcher=lambda: detectron2_matcher(0.5, 0.5, low_quality=False),
        rpn_codec=detectron2_codec(), roi_codec=detectron2_codec((10.0, 10.0, 5.0, 5.0)),
        rpn_box_beta=0.0, roi_box_beta=0.0, rpn_normaliser="batch_size", rpn_min_size=0.0,
        pooler_sampling_ratio=0, pooler_aligned=True, level_mapping="detectron2",
        background_first=False),
    "torchvision": FasterRCNNFlavour(
        name="torchvision",
        make_anchors=lambda scale: torchvision_anchors(_one_size_per_level(scale), RATIOS),
        rpn_matcher=lambda: torchvision_matcher(0.7, 0.3),
        roi_matcher=lambda: torchvision_matcher(0.5, 0.5, low_quality=False),
        rpn_codec=torchvision_codec(), roi_codec=torchvision_codec((10.0, 10.0, 5.0, 5.0)),
        rpn_box_beta=1.0 / 9, roi_box_beta=1.0 / 9, rpn_normaliser="sampled", rpn_min_size=1e-3,
        pooler_sampling_ratio=2, pooler_aligned=False, level_mapping="torchvision",
        background_first=True, min_detection_size=1e-2),
}


@dataclasses.dataclass(frozen=True)
class FasterRCNNConfig:
    """Plain settings of a Faster R-CNN; defaults are the upstream R50-FPN 1x config."""

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
    rpn_post_nms_topk_train: int = 1000
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
                 roi_head: RoIBoxHead, anchors: AnchorMaker, flavour: FasterRCNNFlavour,
                 cfg: FasterRCNNConfig) -> None:
        super().__init__()
        self.backbone, self.neck, self.rpn_head, self.roi_head = backbone, neck, rpn_head, roi_head
        self.anchor_maker = anchors
        self.flavour = flavour
        self.cfg = cfg
        self.num_classes = cfg.num_classes
        self.rpn_match = flavour.rpn_matcher()
        self.roi_match = flavour.roi_matcher()
        self.pooler = MultiLevelRoIPooler(7, [1 / s for s in RPN_STRIDES[:4]],
                                          flavour.pooler_sampling_ratio, flavour.pooler_aligned,
                                          flavour.level_mapping)
        self.generator: torch.Generator | None = None

    def forward(self, images: list[Tensor], targets: list[dict] | None = None):
        check_images_and_targets(images, targets, self.num_classes, self.training)
        batch = ImageList.from_tensors(list(images), self.flavour.size_divisibility)
        feats = self.neck(self.backbone(batch.tensor))  # P2..P6: (N, F, H_l, W_l)
        objectness, deltas = self.rpn_head(feats)
        featmap_sizes = [tuple(f.shape[-2:]) for f in feats]
        anchors = self.anchor_maker.anchors(batch.padded_size, featmap_sizes,
                                            batch.tensor.device)  # per level (A_l, 4)
        if self.training:
            check_finite("rpn head", objectness + deltas)
        proposals = self.proposals(anchors, objectness, deltas, batch)  # per image (k_i, 4)
        roi_feats = feats[:4]  # the pooler reads P2..P5
        if not self.training:
            return self.detect(roi_feats, proposals, batch)
        losses = self.rpn_losses(torch.cat(anchors), objectness, deltas, batch, featmap_sizes, targets)
        losses.update(self.roi_losses(roi_feats, proposals, targets))
        return losses

    def head_outputs(self, batch: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """RPN maps for a padded (N, 3, H, W) batch: objectness (N, A, H_l, W_l) and
        deltas (N, A*4, H_l, W_l) per level P2..P6."""
        return self.rpn_head(self.neck(self.backbone(batch)))

    @torch.no_grad()
    def proposals_and_roi_features(self, images: list[Tensor]) -> tuple[list[Tensor], Tensor]:
        """Proposals per image (k_i, 4) and their pooled features (sum k_i, F, 7, 7),
        as the eval-mode forward computes them."""
        batch = ImageList.from_tensors(list(images), self.flavour.size_divisibility)
        feats = self.neck(self.backbone(batch.tensor))
        objectness, deltas = self.rpn_head(feats)
        anchors = self.anchor_maker.anchors(batch.padded_size, [tuple(f.shape[-2:]) for f in feats],
                                            batch.tensor.device)
        props = self.proposals(anchors, objectness, deltas, batch)
        rois = torch.cat([torch.cat([torch.full_like(p[:, :1], i), p], dim=1)
                          for i, p in enumerate(props)])
        return props, self.pooler(feats[:4], rois)

    # ---------------------------------------------------------------- RPN
    def rpn_losses(self, anchors: Tensor, objectness: list[Tensor], deltas: list[Tensor],
                   batch: ImageList, featmap_sizes: list, targets: list[dict]) -> dict[str, Tensor]:
        """anchors (A_all, 4); objectness / deltas per level -> BCE and box loss."""
        f, cfg = self.flavour, self.cfg
        logits = flatten_level_outputs(objectness, 1)[..., 0]  # (N, A_all)
        box = flatten_level_outputs(deltas, 4)  # (N, A_all, 4)
        cls_sum, box_sum, num_sampled = logits.new_zeros(()), logits.new_zeros(()), 0
        for i, target in enumerate(targets):
            gt_boxes = target["boxes"].to(anchors.dtype)
            valid = torch.cat(self.anchor_maker.valid(
                pad_size(batch.image_sizes[i], f.size_divisibility), featmap_sizes, anchors.device))
            m = self.rpn_match(anchors, gt_boxes)
            state = torch.where(valid, m.state, torch.full_like(m.state, -1))  # (A_all,)
            pos, neg = subsample_labels(state.to(torch.int64), cfg.rpn_batch_size,
                                        cfg.rpn_pos_fraction, 0, self.generator)
            sampled = torch.cat([pos, neg])
            target_obj = (state[sampled] == 1).to(logits.dtype)
            cls_sum = cls_sum + F.binary_cross_entropy_with_logits(
                logits[i][sampled], target_obj, reduction="sum")
            box_target = f.rpn_codec.encode(anchors[pos], gt_boxes[m.matched_gt[pos]])  # (P, 4)
            box_sum = box_sum + smooth_l1_loss(box[i][pos], box_target, beta=f.rpn_box_beta,
                                               reduction="sum")
            num_sampled += sampled.numel()
        den = (float(cfg.rpn_batch_size * len(targets)) if f.rpn_normaliser == "batch_size"
               else float(max(1, num_sampled)))
        return {"loss_rpn_cls": cls_sum / den, "loss_rpn_box": box_sum / den}

    @torch.no_grad()
    def proposals(self, anchors: list[Tensor], objectness: list[Tensor], deltas: list[Tensor],
                  batch: ImageList) -> list[Tensor]:
        """Per image (k_i, 4) proposal boxes, by decreasing objectness (detached)."""
        cfg = self.cfg
        pre = cfg.rpn_pre_nms_topk_train if self.training else cfg.rpn_pre_nms_topk_test
        post = cfg.rpn_post_nms_topk_train if self.training else cfg.rpn_post_nms_topk_test
        out = []
        for i, size in enumerate(batch.image_sizes):
            logits = [o[i].permute(1, 2, 0).reshape(-1) for o in objectness]  # per level (A_l,)
            boxes = [self.flavour.rpn_codec.decode(a, d[i].view(-1, 4, *d.shape[-2:])
                                                   .permute(2, 3, 0, 1).reshape(-1, 4))
                     for a, d in zip(anchors, deltas)]  # per level (A_l, 4)
            props = find_top_rpn_proposals(boxes, logits, size, nms_thresh=cfg.rpn_nms_iou,
                                           pre_nms_topk=pre, post_nms_topk=post,
                                           min_box_size=self.flavour.rpn_min_size,
                                           training=self.training)
            out.append(props.boxes)
        return out

    # ---------------------------------------------------------------- RoI head
    def _class_columns(self, labels: Tensor) -> Tensor:
        """Logit column of foreground class c (c, or c + 1 with background first)."""
        return labels + 1 if self.flavour.background_first else labels

    def roi_losses(self, feats: list[Tensor], proposals: list[Tensor],
                   targets: list[dict]) -> dict[str, Tensor]:
        f, cfg, C = self.flavour, self.cfg, self.num_classes
        bg = 0 if f.background_first else C
        rois, cls_targets, box_targets, pos_rows, pos_cols = [], [], [], [], []
        offset = 0
        for i, (props, target) in enumerate(zip(proposals, targets)):
            gt_boxes, gt_labels = target["boxes"].to(props.dtype), target["labels"]
            boxes = torch.cat([props, gt_boxes])  # (k_i + G, 4); detectron2/torchvision append gts
            m = self.roi_match(boxes, gt_boxes)
            pos, neg = subsample_labels(m.state.to(torch.int64), cfg.roi_batch_size,
                                        cfg.roi_pos_fraction, 0, self.generator)
            sampled = torch.cat([pos, neg])  # positives first
            labels = torch.full((sampled.numel(),), bg, dtype=torch.int64, device=boxes.device)
            labels[: pos.numel()] = self._class_columns(gt_labels[m.matched_gt[pos]])
            rois.append(torch.cat([torch.full_like(boxes[sampled, :1], i), boxes[sampled]], dim=1))
            cls_targets.append(labels)
            box_targets.append(f.roi_codec.encode(boxes[pos], gt_boxes[m.matched_gt[pos]]))
            pos_rows.append(torch.arange(pos.numel(), device=boxes.device) + offset)
            pos_cols.append(labels[: pos.numel()])
            offset += sampled.numel()
        rois_all = torch.cat(rois)  # (K, 5) (image index, x1, y1, x2, y2)
        logits, deltas = self.roi_head(self.pooler(feats, rois_all))  # (K, C + 1), (K, 4 * B)
        check_finite("roi box head", [logits, deltas])
        labels = torch.cat(cls_targets)  # (K,)
        rows, cols = torch.cat(pos_rows), torch.cat(pos_cols)
        per_class = deltas.view(deltas.shape[0], -1, 4)  # (K, B, 4)
        box_col = torch.zeros_like(cols) if self.roi_head.class_agnostic else cols
        pred = per_class[rows, box_col]  # (P, 4) the deltas of the gt's class
        box_sum = smooth_l1_loss(pred, torch.cat(box_targets), beta=f.roi_box_beta, reduction="sum")
        return {"loss_cls": F.cross_entropy(logits, labels),
                "loss_box": box_sum / max(1, labels.numel())}

    @torch.no_grad()
    def detect(self, feats: list[Tensor], proposals: list[Tensor],
               batch: ImageList) -> list[dict[str, Tensor]]:
        f, C = self.flavour, self.num_classes
        rois = torch.cat([torch.cat([torch.full_like(p[:, :1], i), p], dim=1)
                          for i, p in enumerate(proposals)])  # (K, 5)
        logits, deltas = self.roi_head(self.pooler(feats, rois))
        probs = F.softmax(logits, dim=1)  # (K, C + 1)
        fg = torch.arange(C, device=logits.device)
        fg_cols = self._class_columns(fg)  # (C,) logit column of each class
        results = []
        for i, (h, w) in enumerate(batch.image_sizes):
            mask = rois[:, 0] == i
            props = rois[mask, 1:]  # (k, 4)
            scores = probs[mask][:, fg_cols]  # (k, C)
            d = deltas[mask].view(props.shape[0], -1, 4)  # (k, B, 4)
            d = d.expand(-1, C, 4) if d.shape[1] == 1 else d[:, fg_cols]  # (k, C, 4)
            boxes = f.roi_codec.decode(props[:, None].expand(-1, C, 4).reshape(-1, 4),
                                       d.reshape(-1, 4)).view(-1, C, 4)  # (k, C, 4)
            boxes = clip_to_image(boxes, h, w)  # (k, C, 4)
            wide = ((boxes[..., 2] - boxes[..., 0]) >= f.min_detection_size) & \
                ((boxes[..., 3] - boxes[..., 1]) >= f.min_detection_size)  # (k, C)
            cand = torch.nonzero((scores > f.score_thresh) & wide)  # (n, 2) box-major, class-minor
            cb, cs, cl = boxes[cand[:, 0], cand[:, 1]], scores[cand[:, 0], cand[:, 1]], cand[:, 1]
            keep = batched_nms(cb, cs, cl, f.nms_iou)[: f.max_detections]
            results.append({"boxes": cb[keep], "scores": cs[keep], "labels": cl[keep]})
        return results


def build_faster_rcnn(cfg: FasterRCNNConfig) -> FasterRCNN:
    """Modules of a Faster R-CNN from its plain config."""
    flavour = resolve_flavour(FASTER_RCNN_FLAVOURS, cfg, ("score_thresh", "nms_iou", "max_detections"))
    backbone = ResNetBackbone(cfg.backbone_depth, out_stages=(2, 3, 4, 5),
                              frozen_stages=cfg.frozen_stages, norm=cfg.backbone_norm)
    neck = FPN(backbone.out_channels, cfg.fpn_channels, num_outs=5, extra_source="maxpool")
    anchors = flavour.make_anchors(cfg.anchor_scale)
    rpn_head = RPNHead(cfg.fpn_channels, anchors.num_anchors)
    roi_head = RoIBoxHead(cfg.fpn_channels, cfg.num_classes, 7, cfg.fc_dim,
                          background_first=flavour.background_first)
    return FasterRCNN(backbone, neck, rpn_head, roi_head, anchors, flavour, cfg)


# torchvision fasterrcnn_resnet50_fpn keys -> ours.
_TV_FASTER_RCNN_KEYS = [
    (r"^backbone\.body\.", "backbone.body."),
    (r"^backbone\.fpn\.inner_blocks\.(\d+)\.0\.", r"neck.lateral_convs.\1."),
    (r"^backbone\.fpn\.layer_blocks\.(\d+)\.0\.", r"neck.output_convs.\1."),
    (r"^rpn\.head\.conv\.0\.0\.", "rpn_head.conv."),
    (r"^rpn\.head\.cls_logits\.", "rpn_head.objectness."),
    (r"^rpn\.head\.bbox_pred\.", "rpn_head.deltas."),
    (r"^roi_heads\.box_head\.fc6\.", "roi_head.fcs.0."),
    (r"^roi_heads\.box_head\.fc7\.", "roi_head.fcs.1."),
    (r"^roi_heads\.box_predictor\.cls_score\.", "roi_head.cls_score."),
    (r"^roi_heads\.box_predictor\.bbox_pred\.", "roi_head.bbox_pred."),
]


def load_torchvision_faster_rcnn_weights(model: FasterRCNN, tv_model: nn.Module) -> None:
    """Copy a torchvision ``fasterrcnn_resnet50_fpn`` state into a torchvision-flavour model."""
    load_renamed_state_dict(model, tv_model, _TV_FASTER_RCNN_KEYS)
