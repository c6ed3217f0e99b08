"""Pieces every detector here shares: input checks, box codecs, anchor makers.

The three upstream libraries spell the same operations differently (mmdet
``encode(anchors, gts)``, detectron2 ``get_deltas(anchors, gts)``, torchvision
``encode_single(gts, anchors)``, and torchvision's anchor generator needs the
batch size to derive strides). The detectors read one interface instead:

* ``DeltaCodec(encode(anchors, gts), decode(anchors, deltas))`` for (K, 4) tensors;
* ``AnchorMaker(anchors(padded_size, featmap_sizes, device), valid(...))``;
* ``match(anchors, gt_boxes) -> AnchorMatch(matched_gt, state)`` with state 1
  positive, 0 negative, -1 ignored, from mmdet's ``MaxIoUAssigner``, detectron2's
  ``Matcher`` or torchvision's ``Matcher`` (``reference.assignment``).

Factories below build them from the stage modules (``reference.coders``,
``reference.anchors``), so a flavour preset just stores the result.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Callable, NamedTuple, Sequence

import torch
from torch import nn

from reference.anchors import AnchorGenerator, DefaultAnchorGenerator, TorchvisionAnchorGenerator
from reference.assignment import Matcher, MaxIoUAssigner, TorchvisionMatcher
from reference.boxes import box_iou_torchvision, pairwise_iou
from reference.coders import Box2BoxTransform, BoxCoder, DeltaXYWHBBoxCoder

__all__ = [
    "AnchorMatch",
    "mmdet_matcher",
    "detectron2_matcher",
    "torchvision_matcher",
    "DeltaCodec",
    "AnchorMaker",
    "mmdet_codec",
    "detectron2_codec",
    "torchvision_codec",
    "mmdet_anchors",
    "detectron2_anchors",
    "torchvision_anchors",
    "check_images_and_targets",
    "check_finite",
    "mmdet_rpn_anchors",
    "octave_sizes",
    "pad_size",
    "resolve_flavour",
    "clip_to_image",
    "load_renamed_state_dict",
]

Tensor = torch.Tensor


class DeltaCodec(NamedTuple):
    """encode(anchors (K, 4), gts (K, 4)) -> deltas (K, 4);
    decode(anchors (K, 4), deltas (K, 4)) -> boxes (K, 4). All xyxy pixels."""

    encode: Callable[[Tensor, Tensor], Tensor]
    decode: Callable[[Tensor, Tensor], Tensor]


def mmdet_codec(stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0)) -> DeltaCodec:
    """mmdet ``DeltaXYWHBBoxCoder``: (delta - 0) / std; decode clamps dw, dh to +-4.135."""
    coder = DeltaXYWHBBoxCoder(target_stds=tuple(stds), clip_border=False)
    return DeltaCodec(lambda a, g: coder.encode(a, g), lambda a, d: coder.decode(a, d))


def detectron2_codec(weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)) -> DeltaCodec:
    """detectron2 ``Box2BoxTransform``: delta * weight; decode clamps dw, dh above only."""
    coder = Box2BoxTransform(weights=tuple(weights))
    return DeltaCodec(lambda a, g: coder.get_deltas(a, g), lambda a, d: coder.apply_deltas(d, a))


def torchvision_codec(weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)) -> DeltaCodec:
    """torchvision ``BoxCoder``: as detectron2, arguments reversed upstream (gts first)."""
    coder = BoxCoder(weights=tuple(weights))
    return DeltaCodec(lambda a, g: coder.encode_single(g, a), lambda a, d: coder.decode_single(d, a))


class AnchorMaker(NamedTuple):
    """anchors(padded_size (H, W), featmap_sizes, device) -> list of (H_l*W_l*A, 4);
    valid(image_pad_size (h, w), featmap_sizes, device) -> list of (H_l*W_l*A,) bool
    (all True for flavours without valid flags)."""

    anchors: Callable
    valid: Callable
    num_anchors: int


def _all_valid(generator) -> Callable:
    def valid(image_pad_size, featmap_sizes, device):
        return [torch.ones(h * w * a, dtype=torch.bool, device=device)
                for (h, w), a in zip(featmap_sizes, generator.num_base_anchors)]
    return valid


def mmdet_anchors(strides: Sequence[int], ratios: Sequence[float], octave_base_scale: float,
                  scales_per_octave: int) -> AnchorMaker:
    """mmdet ``AnchorGenerator`` with valid flags (anchors over an image's padding are
    left out of the loss, as mmdet's ``valid_flags`` does)."""
    gen = AnchorGenerator(strides=list(strides), ratios=list(ratios),
                          octave_base_scale=octave_base_scale, scales_per_octave=scales_per_octave)
    return AnchorMaker(
        anchors=lambda size, fs, device: gen.grid_anchors(fs, device),
        valid=lambda pad, fs, device: gen.valid_flags(fs, pad, device),
        num_anchors=gen.num_base_anchors[0])


def mmdet_rpn_anchors(strides: Sequence[int], ratios: Sequence[float], scales: Sequence[float]) -> AnchorMaker:
    """mmdet RPN anchors: one scale per level (8 -> 32 px at P2), three ratios."""
    gen = AnchorGenerator(strides=list(strides), ratios=list(ratios), scales=list(scales))
    return AnchorMaker(
        anchors=lambda size, fs, device: gen.grid_anchors(fs, device),
        valid=lambda pad, fs, device: gen.valid_flags(fs, pad, device),
        num_anchors=gen.num_base_anchors[0])


def detectron2_anchors(sizes: Sequence[Sequence[float]], ratios: Sequence[float],
                       strides: Sequence[int], offset: float = 0.0) -> AnchorMaker:
    """detectron2 ``DefaultAnchorGenerator`` (size outer, ratio inner; no valid flags)."""
    gen = DefaultAnchorGenerator(sizes=[list(s) for s in sizes], aspect_ratios=[list(ratios)],
                                 strides=list(strides), offset=offset)
    return AnchorMaker(anchors=lambda size, fs, device: gen.grid_anchors(fs, device),
                       valid=_all_valid(gen), num_anchors=gen.num_base_anchors[0])


def torchvision_anchors(sizes: Sequence[Sequence[float]], ratios: Sequence[float]) -> AnchorMaker:
    """torchvision ``AnchorGenerator``: rounded base anchors, stride = padded // featmap."""
    gen = TorchvisionAnchorGenerator(sizes=[list(s) for s in sizes],
                                     aspect_ratios=[list(ratios)] * len(sizes))
    return AnchorMaker(anchors=lambda size, fs, device: gen.grid_anchors(size, fs, device),
                       valid=_all_valid(gen), num_anchors=gen.num_base_anchors[0])


def octave_sizes(strides: Sequence[int], octave_base_scale: float, scales_per_octave: int,
                 truncate: bool) -> list[list[float]]:
    """RetinaNet sizes per level: stride * base * 2**(i / n); torchvision truncates them."""
    out = []
    for s in strides:
        level = [s * octave_base_scale * 2 ** (i / scales_per_octave) for i in range(scales_per_octave)]
        out.append([float(int(v)) for v in level] if truncate else level)
    return out


# --------------------------------------------------------------------------- matching
class AnchorMatch(NamedTuple):
    """One image's anchors matched to its gts, in one encoding for every flavour.

    matched_gt: (A,) int64 0-based gt index; meaningful where state == 1.
    state: (A,) int8: 1 positive, 0 negative, -1 ignored (left out of every loss).
    """

    matched_gt: Tensor
    state: Tensor


def mmdet_matcher(pos_iou: float, neg_iou: float, min_pos_iou: float,
                  low_quality: bool = True) -> Callable:
    """mmdet ``MaxIoUAssigner``: the low-quality step re-assigns anchors TO the gt."""
    assigner = MaxIoUAssigner(pos_iou_thr=pos_iou, neg_iou_thr=neg_iou, min_pos_iou=min_pos_iou,
                              match_low_quality=low_quality)

    def match(anchors: Tensor, gt_boxes: Tensor) -> AnchorMatch:
        gt_inds = assigner.assign(anchors, gt_boxes).gt_inds  # (A,) 1-based, 0 neg, -1 ignore
        state = torch.where(gt_inds > 0, 1, torch.where(gt_inds == 0, 0, -1)).to(torch.int8)
        return AnchorMatch((gt_inds - 1).clamp(min=0), state)
    return match


def detectron2_matcher(pos_iou: float, neg_iou: float, low_quality: bool = True) -> Callable:
    """detectron2 ``Matcher``; low-quality matches flip the label only (index = argmax)."""
    thresholds, labels = ([neg_iou, pos_iou], [0, -1, 1]) if neg_iou < pos_iou else ([pos_iou], [0, 1])
    matcher = Matcher(thresholds, labels, allow_low_quality_matches=low_quality)

    def match(anchors: Tensor, gt_boxes: Tensor) -> AnchorMatch:
        matches, labels = matcher(pairwise_iou(gt_boxes, anchors))  # (A,), (A,) in {-1, 0, 1}
        return AnchorMatch(matches.to(torch.int64), labels.to(torch.int8))
    return match


def torchvision_matcher(pos_iou: float, neg_iou: float, low_quality: bool = True) -> Callable:
    """torchvision ``Matcher``; an image without gts has every anchor negative."""
    matcher = TorchvisionMatcher(pos_iou, neg_iou, allow_low_quality_matches=low_quality)

    def match(anchors: Tensor, gt_boxes: Tensor) -> AnchorMatch:
        if gt_boxes.shape[0] == 0:  # torchvision's compute_loss special case
            n = anchors.shape[0]
            return AnchorMatch(torch.zeros(n, dtype=torch.int64, device=anchors.device),
                               torch.zeros(n, dtype=torch.int8, device=anchors.device))
        idx = matcher(box_iou_torchvision(gt_boxes, anchors))  # (A,) >=0 / -1 below / -2 between
        state = torch.where(idx >= 0, 1, torch.where(idx == -1, 0, -1)).to(torch.int8)
        return AnchorMatch(idx.clamp(min=0), state)
    return match


def pad_size(size: tuple[int, int], divisor: int) -> tuple[int, int]:
    """(h, w) rounded up to a multiple of ``divisor`` (mmdet's per-image pad_shape)."""
    if divisor <= 0:
        return size
    return (int(math.ceil(size[0] / divisor) * divisor), int(math.ceil(size[1] / divisor) * divisor))


def check_images_and_targets(images, targets, num_classes: int, training: bool) -> None:
    """Validate the detector calling convention once, at the public boundary.

    images: non-empty list of (3, H, W) float tensors. targets (training only):
    a list of the same length of dicts with "boxes" (n, 4) float xyxy finite,
    x2 >= x1 and y2 >= y1, and "labels" (n,) int64 in [0, num_classes).
    Raises ValueError/TypeError naming the offending argument.
    """
    if not isinstance(images, (list, tuple)) or len(images) == 0:
        raise ValueError(f"images: expected a non-empty list of (C, H, W) tensors, got {type(images).__name__}")
    for i, img in enumerate(images):
        if not isinstance(img, torch.Tensor):
            raise TypeError(f"images[{i}]: expected a torch.Tensor, got {type(img).__name__}")
        if img.dim() != 3 or img.shape[0] != 3:
            raise ValueError(f"images[{i}]: expected shape (3, H, W), got {tuple(img.shape)}")
    if not training:
        return
    if targets is None:
        raise ValueError("targets: required in training mode (a list of dicts with boxes, labels)")
    if not isinstance(targets, (list, tuple)) or len(targets) != len(images):
        raise ValueError(f"targets: expected a list of {len(images)} dicts, got "
                         f"{type(targets).__name__} of length {len(targets) if hasattr(targets, '__len__') else '?'}")
    for i, t in enumerate(targets):
        if not isinstance(t, dict) or "boxes" not in t or "labels" not in t:
            raise ValueError(f"targets[{i}]: expected a dict with 'boxes' and 'labels'")
        boxes, labels = t["boxes"], t["labels"]
        if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[-1] != 4:
            raise ValueError(f"targets[{i}]['boxes']: expected a (n, 4) tensor, got "
                             f"{tuple(getattr(boxes, 'shape', ()))}")
        if not boxes.is_floating_point():
            raise ValueError(f"targets[{i}]['boxes']: expected a float tensor, got {boxes.dtype}")
        if not bool(torch.isfinite(boxes).all()):
            raise ValueError(f"targets[{i}]['boxes']: contain NaN or Inf")
        if bool((boxes[:, 2:] < boxes[:, :2]).any()):
            raise ValueError(f"targets[{i}]['boxes']: expected xyxy with x2 >= x1 and y2 >= y1")
        if not isinstance(labels, torch.Tensor) or labels.shape != (boxes.shape[0],):
            raise ValueError(f"targets[{i}]['labels']: expected shape ({boxes.shape[0]},), got "
                             f"{tuple(getattr(labels, 'shape', ()))}")
        if labels.dtype != torch.int64:
            raise ValueError(f"targets[{i}]['labels']: expected int64, got {labels.dtype}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(f"targets[{i}]['labels']: expected values in [0, {num_classes}), got "
                             f"[{int(labels.min())}, {int(labels.max())}]")
        if boxes.device != images[i].device:
            raise ValueError(f"targets[{i}]['boxes']: on {boxes.device}, images[{i}] on {images[i].device}")


def check_finite(stage: str, tensors: Sequence[Tensor]) -> None:
    """Raise FloatingPointError naming ``stage`` if any prediction is NaN or Inf.

    Called in training only: a diverged model should stop with the stage that
    produced the first bad value, not with a silent NaN loss.
    """
    for t in tensors:
        if not bool(torch.isfinite(t).all()):
            raise FloatingPointError(f"{stage}: non-finite predictions during training "
                                     f"(tensor of shape {tuple(t.shape)}); training has diverged")


def resolve_flavour(presets: dict, cfg, override_keys: Sequence[str]):
    """The flavour preset ``cfg.flavour`` names, with every non-None ``cfg.<key>`` of
    ``override_keys`` replacing the preset's value. Checks flavour and num_classes."""
    if cfg.flavour not in presets:
        raise ValueError(f"flavour={cfg.flavour!r}: expected one of {sorted(presets)}")
    if not isinstance(cfg.num_classes, int) or cfg.num_classes < 1:
        raise ValueError(f"num_classes={cfg.num_classes!r}: expected a positive int")
    overrides = {k: getattr(cfg, k) for k in override_keys if getattr(cfg, k) is not None}
    return dataclasses.replace(presets[cfg.flavour], **overrides)


def clip_to_image(boxes: Tensor, h, w) -> Tensor:
    """xyxy boxes (..., 4) with x clamped to [0, w] and y to [0, h]."""
    return torch.stack([boxes[..., 0].clamp(0, w), boxes[..., 1].clamp(0, h),
                        boxes[..., 2].clamp(0, w), boxes[..., 3].clamp(0, h)], dim=-1)


# --------------------------------------------------------------------------- torchvision weights
def _rename_key(key: str, table) -> str | None:
    """``key`` renamed by the first ``(pattern, replacement)`` of ``table`` that matches
    its start; a ``{2k}`` in the replacement is twice the first group (our conv towers
    interleave ReLU modules). None when no pattern matches."""
    for pattern, repl in table:
        m = re.match(pattern, key)
        if m:
            if "{2k}" in repl:
                repl = repl.replace("{2k}", str(2 * int(m.group(1))))
                return repl + key[m.end():]
            return re.sub(pattern, repl, key, count=1)
    return None


def load_renamed_state_dict(model: nn.Module, tv_model: nn.Module, table) -> None:
    """Copy ``tv_model``'s state into ``model``, renaming keys by ``table``.

    Every torchvision tensor must map to one of ours with the same shape and every
    one of ours must be filled; otherwise ValueError lists what did not match.
    """
    ours = model.state_dict()
    mapped, unmatched = {}, []
    for key, value in tv_model.state_dict().items():
        new = _rename_key(key, table)
        if new is None or new not in ours or ours[new].shape != value.shape:
            unmatched.append(key)
            continue
        mapped[new] = value
    missing = [k for k in ours if k not in mapped]
    if unmatched or missing:
        raise ValueError(f"tv_model: unmatched torchvision keys {unmatched[:5]}, "
                         f"unfilled keys {missing[:5]}")
    model.load_state_dict(mapped)
