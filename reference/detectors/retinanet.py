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
5. Anchors: (182403, 4) xyxy, level by level, location row-major, anchor innermost.
6. Training (``compute_losses``), per image: match anchors to gts (flavour's
   matcher) -> focal loss over positive + negative anchors, L1 / smooth-L1 on the
   encoded deltas of positive anchors -> normalise (flavour's normaliser).
7. Inference (``detect``), per image and level: sigmoid scores of every
   (anchor, class) pair, keep > score_thresh, top-k, decode, clip to the image;
   then class-wise NMS over all levels and keep the best ``max_detections``.

Flavours (mmdet, detectron2, torchvision) are ``RetinaNetFlavour`` presets: which
FPN extra levels, which anchors, matcher, box coder, box loss and normaliser,
and the inference numbers. ``build_retinanet(RetinaNetConfig(...))`` builds one.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
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
    mmdet_anchors,
    mmdet_codec,
    mmdet_matcher,
    octave_sizes,
    load_renamed_state_dict,
    pad_size,
    resolve_flavour,
    torchvision_anchors,
    torchvision_codec,
    torchvision_matcher,
)
from reference.detectors.image_list import ImageList
from reference.heads import RetinaHead, flatten_level_outputs
from reference.losses import EmaLossNormalizer, sigmoid_focal_loss, smooth_l1_loss
from reference.necks import FPN
from reference.nms import batched_nms

__all__ = [
    "RetinaNetFlavour",
    "RETINANET_FLAVOURS",
    "RetinaNetConfig",
    "RetinaNet",
    "build_retinanet",
    "load_torchvision_retinanet_weights",
]

Tensor = torch.Tensor
STRIDES = (8, 16, 32, 64, 128)  # P3..P7
RATIOS = (0.5, 1.0, 2.0)  # h / w


# --------------------------------------------------------------------------- flavours
@dataclasses.dataclass(frozen=True)
class RetinaNetFlavour:
    """Everything in which the three upstream RetinaNets differ.

    fpn_extra_source / fpn_relu_before_extra_convs: how P6, P7 are made (see FPN).
    make_anchors(octave_base_scale, scales_per_octave) -> AnchorMaker.
    make_matcher() -> match(anchors (A, 4), gt_boxes (G, 4)) -> AnchorMatch.
    codec: anchor/gt <-> deltas (all three use unit weights for RetinaNet).
    box_loss_beta: smooth-L1 beta; 0 is plain L1 (mmdet, torchvision).
    normaliser: "total_positives" (mmdet: sum / sum_i max(pos_i, 1)),
        "per_image" (torchvision: mean_i(sum_i / max(1, pos_i))),
        "ema" (detectron2: sum / EMA of the batch's positives, 0.9, start 100).
    score_thresh, topk_candidates, nms_iou, max_detections: inference.
    size_divisibility: batch padding multiple.
    """

    name: str
    fpn_extra_source: str
    fpn_relu_before_extra_convs: bool
    make_anchors: Callable[[float, int], AnchorMaker]
    make_matcher: Callable[[], Callable]
    codec: DeltaCodec
    box_loss_beta: float
    normaliser: str
    score_thresh: float = 0.05
    topk_candidates: int = 1000
    nms_iou: float = 0.5
    max_detections: int = 100
    size_divisibility: int = 32


RETINANET_FLAVOURS = {
    "mmdet": RetinaNetFlavour(
        name="mmdet", fpn_extra_source="input", fpn_relu_before_extra_convs=False,
        make_anchors=lambda base, n: mmdet_anchors(STRIDES, RATIOS, base, n),
        make_matcher=lambda: mmdet_matcher(0.5, 0.4, min_pos_iou=0.0),
        codec=mmdet_codec(), box_loss_beta=0.0, normaliser="total_positives"),
    "detectron2": RetinaNetFlavour(
        name="detectron2", fpn_extra_source="input", fpn_relu_before_extra_convs=True,
        make_anchors=lambda base, n: detectron2_anchors(
            octave_sizes(STRIDES, base, n, truncate=False), RATIOS, STRIDES),
        make_matcher=lambda: detectron2_matcher(0.5, 0.4),
        codec=detectron2_codec(), box_loss_beta=0.1, normaliser="ema"),
    "torchvision": RetinaNetFlavour(
        name="torchvision", fpn_extra_source="output", fpn_relu_before_extra_convs=True,
        make_anchors=lambda base, n: torchvision_anchors(
            octave_sizes(STRIDES, base, n, truncate=True), RATIOS),
        make_matcher=lambda: torchvision_matcher(0.5, 0.4),
        codec=torchvision_codec(), box_loss_beta=0.0, normaliser="per_image",
        max_detections=300),
}


@dataclasses.dataclass(frozen=True)
class RetinaNetConfig:
    """Plain settings of a RetinaNet; ``build_retinanet`` turns them into modules.

    Defaults are the upstream R50-FPN configuration (mmdet flavour).
    backbone_norm / frozen_stages: see ``ResNetBackbone``.
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
                 anchors: AnchorMaker, flavour: RetinaNetFlavour, num_classes: int) -> None:
        super().__init__()
        if anchors.num_anchors != head.num_anchors:
            raise ValueError(f"anchors: {anchors.num_anchors} per location, head predicts "
                             f"{head.num_anchors}")
        self.backbone, self.neck, self.head = backbone, neck, head
        self.anchor_maker = anchors
        self.flavour = flavour
        self.num_classes = num_classes
        self.match = flavour.make_matcher()
        self.ema = EmaLossNormalizer(0.9, 100.0)

    # ---------------------------------------------------------------- forward
    def forward(self, images: list[Tensor], targets: list[dict] | None = None):
        check_images_and_targets(images, targets, self.num_classes, self.training)
        batch = ImageList.from_tensors(list(images), self.flavour.size_divisibility)
        feats = self.neck(self.backbone(batch.tensor))  # P3..P7: (N, F, H_l, W_l)
        cls_maps, box_maps = self.head(feats)
        featmap_sizes = [tuple(f.shape[-2:]) for f in feats]
        anchors = torch.cat(self.anchor_maker.anchors(batch.padded_size, featmap_sizes,
                                                      batch.tensor.device))  # (A_all, 4)
        if self.training:
            check_finite("retinanet head", cls_maps + box_maps)
            cls = flatten_level_outputs(cls_maps, self.num_classes)  # (N, A_all, C)
            box = flatten_level_outputs(box_maps, 4)  # (N, A_all, 4)
            return self.compute_losses(anchors, cls, box, batch, featmap_sizes, targets)
        return self.detect(anchors, cls_maps, box_maps, batch)

    def head_outputs(self, batch: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Raw head maps for a padded (N, 3, H, W) batch: cls (N, A*C, H_l, W_l) and
        box (N, A*4, H_l, W_l) per level P3..P7 (for shape checks and debugging)."""
        return self.head(self.neck(self.backbone(batch)))

    # ---------------------------------------------------------------- training
    def compute_losses(self, anchors: Tensor, cls: Tensor, box: Tensor, batch: ImageList,
                       featmap_sizes: list, targets: list[dict]) -> dict[str, Tensor]:
        """Per image: match, build targets, sum the losses; then normalise.

        anchors (A_all, 4); cls (N, A_all, C) logits; box (N, A_all, 4) deltas.
        """
        cls_sums, box_sums, num_pos = [], [], []
        for i, target in enumerate(targets):
            gt_boxes, gt_labels = target["boxes"].to(anchors.dtype), target["labels"]
            valid = torch.cat(self.anchor_maker.valid(
                pad_size(batch.image_sizes[i], self.flavour.size_divisibility),
                featmap_sizes, anchors.device))  # (A_all,) bool
            m = self.match(anchors, gt_boxes)
            state = torch.where(valid, m.state, torch.full_like(m.state, -1))  # (A_all,)
            pos = state == 1
            used = state >= 0
            # Classification: one-hot targets on positives, all-zero on negatives.
            cls_target = torch.zeros_like(cls[i])  # (A_all, C)
            cls_target[pos, gt_labels[m.matched_gt[pos]]] = 1.0
            cls_sums.append(sigmoid_focal_loss(cls[i][used], cls_target[used], reduction="sum"))
            # Regression: deltas of positive anchors towards their gt.
            box_target = self.flavour.codec.encode(anchors[pos], gt_boxes[m.matched_gt[pos]])  # (P, 4)
            box_sums.append(smooth_l1_loss(box[i][pos], box_target,
                                           beta=self.flavour.box_loss_beta, reduction="sum"))
            num_pos.append(int(pos.sum()))
        return self._normalise(cls_sums, box_sums, num_pos)

    def _normalise(self, cls_sums: list[Tensor], box_sums: list[Tensor],
                   num_pos: list[int]) -> dict[str, Tensor]:
        rule = self.flavour.normaliser
        if rule == "per_image":
            den = [max(1, p) for p in num_pos]
            loss_cls = sum(c / d for c, d in zip(cls_sums, den)) / len(den)
            loss_box = sum(b / d for b, d in zip(box_sums, den)) / len(den)
            return {"loss_cls": loss_cls, "loss_box": loss_box}
        if rule == "total_positives":
            den = float(sum(max(1, p) for p in num_pos))
        else:  # "ema": detectron2 keeps a running average of the batch's positives
            den = self.ema.update(sum(num_pos)) if self.training else max(1, sum(num_pos))
        return {"loss_cls": sum(cls_sums) / den, "loss_box": sum(box_sums) / den}

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def detect(self, anchors: Tensor, cls_maps: list[Tensor], box_maps: list[Tensor],
               batch: ImageList) -> list[dict[str, Tensor]]:
        """Per image: per-level top-k above threshold, decode, clip, class-wise NMS."""
        f = self.flavour
        C = self.num_classes
        level_sizes = [m.shape[-2] * m.shape[-1] * self.head.num_anchors for m in cls_maps]
        level_anchors = anchors.split(level_sizes)
        cls_levels = [flatten_level_outputs([m], C) for m in cls_maps]  # (N, A_l, C)
        box_levels = [flatten_level_outputs([m], 4) for m in box_maps]  # (N, A_l, 4)
        results = []
        for i, (h, w) in enumerate(batch.image_sizes):
            boxes_all, scores_all, labels_all = [], [], []
            for anc, cls, box in zip(level_anchors, cls_levels, box_levels):
                scores = torch.sigmoid(cls[i]).flatten()  # (A_l * C,) anchor-major
                candidates = torch.nonzero(scores > f.score_thresh).squeeze(1)
                scores = scores[candidates]
                top = scores.topk(min(f.topk_candidates, scores.numel())).indices
                scores, candidates = scores[top], candidates[top]
                anchor_idx, labels = candidates // C, candidates % C
                boxes = f.codec.decode(anc[anchor_idx], box[i][anchor_idx])  # (k, 4)
                boxes = clip_to_image(boxes, h, w)
                boxes_all.append(boxes)
                scores_all.append(scores)
                labels_all.append(labels)
            boxes, scores, labels = torch.cat(boxes_all), torch.cat(scores_all), torch.cat(labels_all)
            keep = batched_nms(boxes, scores, labels, f.nms_iou)[: f.max_detections]
            results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return results


def build_retinanet(cfg: RetinaNetConfig) -> RetinaNet:
    """Modules of a RetinaNet from its plain config (see ``RetinaNetConfig``)."""
    flavour = resolve_flavour(RETINANET_FLAVOURS, cfg,
                              ("score_thresh", "topk_candidates", "nms_iou", "max_detections"))
    backbone = ResNetBackbone(cfg.backbone_depth, out_stages=(3, 4, 5),
                              frozen_stages=cfg.frozen_stages, norm=cfg.backbone_norm)
    neck = FPN(backbone.out_channels, cfg.fpn_channels, num_outs=5,
               extra_source=flavour.fpn_extra_source,
               relu_before_extra_convs=flavour.fpn_relu_before_extra_convs)
    anchors = flavour.make_anchors(cfg.octave_base_scale, cfg.scales_per_octave)
    head = RetinaHead(cfg.fpn_channels, cfg.num_classes, anchors.num_anchors,
                      cfg.head_channels, cfg.head_convs, cfg.prior_prob)
    return RetinaNet(backbone, neck, head, anchors, flavour, cfg.num_classes)


# --------------------------------------------------------------------------- torchvision weights
# torchvision retinanet_resnet50_fpn state-dict keys -> ours. The backbone body is
# the same torchvision ResNet; the FPN and head convs are renamed; our conv towers
# interleave ReLU modules, so torchvision's k-th tower conv is our index 2k.
_TV_RETINANET_KEYS = [
    (r"^backbone\.body\.", "backbone.body."),
    (r"^backbone\.fpn\.inner_blocks\.(\d+)\.0\.", r"neck.lateral_convs.\1."),
    (r"^backbone\.fpn\.layer_blocks\.(\d+)\.0\.", r"neck.output_convs.\1."),
    (r"^backbone\.fpn\.extra_blocks\.p6\.", "neck.extra_convs.0."),
    (r"^backbone\.fpn\.extra_blocks\.p7\.", "neck.extra_convs.1."),
    (r"^head\.classification_head\.conv\.(\d+)\.0\.", "head.cls_convs.{2k}."),
    (r"^head\.classification_head\.cls_logits\.", "head.cls_out."),
    (r"^head\.regression_head\.conv\.(\d+)\.0\.", "head.reg_convs.{2k}."),
    (r"^head\.regression_head\.bbox_reg\.", "head.reg_out."),
]


def load_torchvision_retinanet_weights(model: RetinaNet, tv_model: nn.Module) -> None:
    """Copy a torchvision ``retinanet_resnet50_fpn`` state into a torchvision-flavour model.

    Every torchvision tensor must map to one of ours with the same shape and every
    one of ours must be filled; otherwise ValueError lists what did not match.
    """
    load_renamed_state_dict(model, tv_model, _TV_RETINANET_KEYS)
