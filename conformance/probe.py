"""The edge probe: every public protocol callable, called validly with one argument made
wrong, and called whole in every floating dtype, on non-contiguous and empty inputs.

    python -m conformance.probe --impl=reference [--json probe.json] [-v]

For each callable (a function, a constructor, or a method of a validly built object)
the table below gives one valid call and says what each argument is (boxes, scores,
a threshold, a count, ...). From that the probe derives its probes:

- *bad input* (SPEC.md "Conventions"; clause VAL-1): ``None``; a list for a tensor; the
  wrong number of dims; the wrong last dim; the wrong dtype; the wrong length; NaN or
  infinite values where the component rejects them; NaN, a string, a negative or
  non-integral number for a threshold or a count; a string or a number for a
  flag; an unknown option name. The outcome
  is *clean* when the call raises ValueError or TypeError whose message names the
  argument, else *unnamed* (right type, message silent about the argument), *other*
  (another exception type) or *accepted* (no exception: a silent answer).
- *every call* (VAL-2..VAL-4): the whole call in float16, bfloat16 and float64 gives
  the float32 answer on the same (rounded) inputs, rounded to the input dtype; a call
  on non-contiguous copies gives the contiguous answer; a call with empty inputs
  (where the callable has an empty form) returns without error.

``conformance/test_validation.py`` runs the same table as conformance tests, so
``pytest conformance --impl=X`` holds a port to the same outcomes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from typing import Any, Callable

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float64)

# --------------------------------------------------------------------------- inputs


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def boxes(n: int, extent: float = 60.0, seed: int = 0) -> torch.Tensor:
    """(n, 4) float32 proper boxes with integer corners (exact in float16)."""
    g = _gen(seed)
    xy = torch.randint(0, int(extent), (n, 2), generator=g).float()
    wh = torch.randint(4, 24, (n, 2), generator=g).float()
    return torch.cat([xy, xy + wh], dim=1)  # (n, 4)


def scores(n: int, seed: int = 1) -> torch.Tensor:
    """(n,) float32 distinct scores in (0, 1), multiples of 1/256 (exact in bfloat16)."""
    perm = torch.randperm(n, generator=_gen(seed)).float()
    return (perm + 1) / 256  # (n,)


def logits(*shape: int, seed: int = 2) -> torch.Tensor:
    g = _gen(seed)
    return (torch.randint(-16, 16, shape, generator=g).float() / 8)


def labels(n: int, num_classes: int, seed: int = 3) -> torch.Tensor:
    return torch.randint(0, num_classes, (n,), generator=_gen(seed))  # (n,) int64


def points(n: int, stride: float = 8.0, seed: int = 4) -> torch.Tensor:
    """(n, 4) RTMDet priors: (x, y, stride_w, stride_h)."""
    xy = torch.randint(0, 8, (n, 2), generator=_gen(seed)).float() * stride
    return torch.cat([xy, torch.full((n, 2), stride)], dim=1)


# --------------------------------------------------------------------------- the table
# Argument kinds: what "wrong" means for each.
BOXES = "boxes"            # (..., N, 4) floating, finite required
BOXES_ANY = "boxes_any"    # (..., N, 4) floating, non-finite values allowed (propagated)
DELTAS = "deltas"          # (..., N, 4k) floating, non-finite propagated
SCORES = "scores"          # (N,) or (N, C) floating, NaN rejected
SCORES_ANY = "scores_any"  # floating, NaN allowed (propagated or dropped as stated)
BOXES_DROP = "boxes_drop"  # (N, 4k) floating; a row with NaN/inf is dropped from the output
SCORES_DROP = "scores_drop"  # floating; a row with NaN/inf is dropped from the output
LABELS = "labels"          # (N,) integer
FLAGS = "flags"            # (N,) bool
FEATURE = "feature"        # (B, C, H, W) floating
PROB = "prob"              # a number in [0, 1]
POS = "pos"                # a finite number > 0
NONNEG = "nonneg"          # a finite number >= 0
NUMBER = "number"          # any finite number
COUNT = "count"            # an int >= 0 (some callables also take -1: "all")
POS_COUNT = "pos_count"    # an int >= 1
CHOICE = "choice"          # one of a few strings
SIZE = "size"              # an (h, w) pair of positive numbers
TENSORS = "tensors"        # a list of tensors, one per level or image
LEVEL_NUMBERS = "level_numbers"  # one sequence of positive numbers per level
IMAGES = "images"          # a detector's list of (3, H, W) float images
TARGETS = "targets"        # a detector's list of {"boxes", "labels"} dicts, one per image
SIZES = "sizes"            # a list of (H, W) pairs
NUMBERS = "numbers"        # a sequence of positive numbers (strides, ratios, sizes)
ANY_NUMBERS = "any_numbers"  # a sequence of finite numbers (target means)
COUNTS = "counts"          # a sequence of ints >= 0
INT = "int"                # any int (a label value)
BOOL = "bool"              # a flag: True or False


@dataclasses.dataclass
class Call:
    """One valid call: the callable and its keyword arguments."""

    fn: Callable
    kwargs: dict[str, Any]


@dataclasses.dataclass
class Entry:
    name: str                  # "box_iou", "MaxIoUAssigner.assign", "AnchorGenerator()"
    component: str
    build: Callable[[Callable[[str], Any]], Call]  # get(name) -> a valid call
    kinds: dict[str, str]      # argument -> kind (arguments not listed are not mutated)
    negative_ok: tuple[str, ...] = ()   # count arguments that take -1 ("all")
    optional: tuple[str, ...] = ()      # arguments for which None is valid
    tied: tuple[str, ...] = ()          # tensors whose length must match another argument's
    out_dtype: Any = "input"            # floating outputs: "input", a fixed dtype, or None
    dropped: Callable[[Any], bool] | None = None  # a "(dropped)" probe's result is right
    dtypes: bool = True        # the whole-call dtype probes apply
    noncontig: bool = True
    empty: Callable[[dict], dict] | None = None  # kwargs -> an empty-input form
    extra: Callable[[dict], list[tuple[str, str, dict]]] | None = None  # more bad calls


def _f(get, name):
    return get(name)


def _method(cls: str, method: str, ctor: dict, call: dict):
    def build(get):
        return Call(getattr(get(cls)(**ctor()), method), call())
    return build


def _fn(name: str, call: Callable[[], dict]):
    def build(get):
        return Call(get(name), call())
    return build


def _rows(kw: dict, n: int = 0, keys: tuple[str, ...] = ()) -> dict:
    out = dict(kw)
    for k in keys:
        out[k] = out[k][:n]
    return out


def _anchor_ctor():
    return dict(strides=[8, 16], ratios=[0.5, 1.0, 2.0], octave_base_scale=4, scales_per_octave=3)


def _assign_inputs():
    return dict(bboxes=boxes(12, seed=5), gt_bboxes=boxes(3, seed=6), gt_labels=labels(3, 4))


def _assign_result(get):
    return get("MaxIoUAssigner")(pos_iou_thr=0.5, neg_iou_thr=0.4).assign(
        boxes(12, seed=5), boxes(3, seed=6), gt_labels=labels(3, 4))


def _dsl_inputs():
    return dict(pred_scores=logits(10, 3).sigmoid(), decoded_bboxes=boxes(10, seed=7),
                priors=points(10), gt_bboxes=boxes(2, seed=8), gt_labels=labels(2, 3))


def _rpn_levels():
    return dict(scores=[logits(12, seed=9), logits(6, seed=10)],
                deltas=[logits(12, 4, seed=11), logits(6, 4, seed=12)],
                anchors=[boxes(12, seed=13), boxes(6, seed=14)], image_size=(80, 80))


def _d2_levels():
    return dict(proposals=[boxes(12, seed=13), boxes(6, seed=14)],
                logits=[logits(12, seed=9), logits(6, seed=10)], image_size=(80, 80))


def _sample_call(get, cls, ctor):
    return Call(get(cls)(**ctor).sample, dict(
        assign_result=_assign_result(get), priors=boxes(12, seed=5), gt_bboxes=boxes(3, seed=6),
        gt_labels=labels(3, 4), generator=_gen(7)))


def _loss(name, pred, target, **more):
    return _fn(name, lambda: dict(pred=pred(), target=target(), **more))


def _image_targets(get):
    return Call(get("anchor_targets_single"), dict(
        flat_anchors=boxes(12, seed=5), valid_flags=torch.ones(12, dtype=torch.bool),
        gt_bboxes=boxes(3, seed=6), img_shape=(80, 80),
        assigner=get("MaxIoUAssigner")(pos_iou_thr=0.5, neg_iou_thr=0.4), num_classes=4,
        box_coder=get("DeltaXYWHBBoxCoder")(), gt_labels=labels(3, 4)))


def _matched_idxs():
    return [torch.tensor([1, 0, -1, 2, 0, 0, 1, 0]), torch.tensor([0, 0, 1, -1])]


def _wrong_object(arg: str):
    """Bad calls for an argument that takes one of a few stage objects."""
    return lambda kw: [(arg, "None", {**kw, arg: None}), (arg, "a string", {**kw, arg: "mmdet"})]


def _d2_matcher(get):
    return get("Matcher")([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)


def _roi_targets_call(get):
    return Call(get("roi_targets_single"), dict(
        proposals=boxes(12, seed=5), gt_bboxes=boxes(3, seed=6), gt_labels=labels(3, 4),
        assigner=get("MaxIoUAssigner")(pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5),
        sampler=get("RandomSampler")(num=8, pos_fraction=0.25), box_coder=get("DeltaXYWHBBoxCoder")(),
        num_classes=4, append_gts=False, generator=_gen(7)))


def _normaliser_call(name: str):
    def build(get):
        return Call(get(name)().__call__, dict(loss_sums=scores(6).reshape(3, 2) * 10, num_pos=[3, 0, 2],
                                              num_neg=[5, 7, 1], batch_size_per_image=256))
    return build


def _levels(num_images: int, *sizes: int, seed: int = 20, make=boxes):
    """Per image, per level: (n_l, 4) priors and (n_l,) all-True flags."""
    priors = [[make(n, seed=seed + 7 * i + l) for l, n in enumerate(sizes)] for i in range(num_images)]
    flags = [[torch.ones(n, dtype=torch.bool) for n in sizes] for _ in range(num_images)]
    return priors, flags


def _anchor_targets_call(get):
    anchors, flags = _levels(2, 8, 4)
    return Call(get("anchor_targets"), dict(
        anchor_list=anchors, valid_flag_list=flags, gt_bboxes_list=[boxes(3, seed=6), boxes(2, seed=8)],
        img_shapes=[(80, 80), (72, 80)], gt_labels_list=[labels(3, 4), labels(2, 4, seed=9)],
        assigner=get("MaxIoUAssigner")(pos_iou_thr=0.5, neg_iou_thr=0.4), num_classes=4,
        box_coder=get("DeltaXYWHBBoxCoder")()))


def _rtmdet_targets_call(get):
    priors, flags = _levels(2, 6, 4, make=lambda n, seed: points(n, seed=seed))
    return Call(get("rtmdet_targets"), dict(
        cls_scores=logits(2, 10, 3), decoded_bboxes=torch.stack([boxes(10, seed=7), boxes(10, seed=17)]),
        anchor_list=priors, valid_flag_list=flags, gt_bboxes_list=[boxes(2, seed=8), boxes(1, seed=18)],
        gt_labels_list=[labels(2, 3), labels(1, 3, seed=19)], img_shapes=[(80, 80), (80, 72)],
        num_classes=3))


# Detectors: one small model per (implementation, name) for the whole run; the probe
# checks the calling convention (SPEC.md "Models", MOD-10), not training.
_MODELS: dict = {}


def _detector(get, name: str):
    build = get("build_detector")
    key = (id(build), name)
    if key not in _MODELS:
        torch.manual_seed(0)
        _MODELS[key] = build(name, num_classes=3)
    return _MODELS[key]


def _images():
    return [logits(3, 64, 64, seed=30), logits(3, 48, 64, seed=31)]


def _targets():
    return [{"boxes": boxes(2, extent=30, seed=32), "labels": labels(2, 3, seed=33)},
            {"boxes": boxes(1, extent=30, seed=34), "labels": labels(1, 3, seed=35)}]


def _forward(name: str, training: bool):
    def build(get):
        model = _detector(get, name)
        model.train(training)

        def forward(images, targets=None):
            with torch.set_grad_enabled(training):
                return model(images, targets) if training else model(images)
        return Call(forward, dict(images=_images(), targets=_targets()) if training
                    else dict(images=_images()))
    return build


TABLE: list[Entry] = [
    # ------------------------------------------------------------------ iou
    Entry("box_area", "iou", _fn("box_area", lambda: dict(boxes=boxes(5))), {"boxes": BOXES_ANY},
          empty=lambda kw: dict(boxes=kw["boxes"][:0])),
    Entry("box_iou", "iou", _fn("box_iou", lambda: dict(boxes1=boxes(5), boxes2=boxes(7, seed=1),
                                                         mode="iou", eps=1e-6, is_aligned=False)),
          {"boxes1": BOXES, "boxes2": BOXES, "mode": CHOICE, "eps": POS, "is_aligned": BOOL},
          empty=lambda kw: {**kw, "boxes1": kw["boxes1"][:0]}),
    Entry("pairwise_iou", "iou", _fn("pairwise_iou", lambda: dict(boxes1=boxes(5), boxes2=boxes(7, seed=1))),
          {"boxes1": BOXES, "boxes2": BOXES}, empty=lambda kw: {**kw, "boxes2": kw["boxes2"][:0]}),
    Entry("box_iou_torchvision", "iou",
          _fn("box_iou_torchvision", lambda: dict(boxes1=boxes(5), boxes2=boxes(7, seed=1))),
          {"boxes1": BOXES, "boxes2": BOXES}, empty=lambda kw: {**kw, "boxes1": kw["boxes1"][:0]}),
    # ------------------------------------------------------------------ anchors and points
    Entry("AnchorGenerator()", "anchors", _fn("AnchorGenerator", lambda: dict(**_anchor_ctor(), scale_major=True)),
          {"strides": NUMBERS, "ratios": NUMBERS, "octave_base_scale": POS,
           "scales_per_octave": POS_COUNT, "scale_major": BOOL}, dtypes=False, noncontig=False),
    Entry("AnchorGenerator.grid_anchors", "anchors",
          _method("AnchorGenerator", "grid_anchors", _anchor_ctor,
                  lambda: dict(featmap_sizes=[(4, 5), (2, 3)])),
          {"featmap_sizes": SIZES}, dtypes=False, noncontig=False),
    Entry("AnchorGenerator.valid_flags", "anchors",
          _method("AnchorGenerator", "valid_flags", _anchor_ctor,
                  lambda: dict(featmap_sizes=[(4, 5), (2, 3)], pad_shape=(30, 36))),
          {"featmap_sizes": SIZES, "pad_shape": SIZE}, dtypes=False, noncontig=False),
    Entry("LegacyAnchorGenerator()", "anchors", _fn("LegacyAnchorGenerator", _anchor_ctor),
          {"strides": NUMBERS, "ratios": NUMBERS, "octave_base_scale": POS,
           "scales_per_octave": POS_COUNT}, dtypes=False, noncontig=False),
    Entry("LegacyAnchorGenerator.valid_flags", "anchors",
          _method("LegacyAnchorGenerator", "valid_flags", _anchor_ctor,
                  lambda: dict(featmap_sizes=[(4, 5), (2, 3)], pad_shape=(30, 36))),
          {"featmap_sizes": SIZES, "pad_shape": SIZE}, dtypes=False, noncontig=False),
    Entry("LegacyAnchorGenerator.grid_anchors", "anchors",
          _method("LegacyAnchorGenerator", "grid_anchors", _anchor_ctor,
                  lambda: dict(featmap_sizes=[(4, 5), (2, 3)])),
          {"featmap_sizes": SIZES}, dtypes=False, noncontig=False),
    Entry("DefaultAnchorGenerator()", "anchors",
          _fn("DefaultAnchorGenerator", lambda: dict(sizes=[[32.0], [64.0]],
                                                     aspect_ratios=[[0.5, 1.0, 2.0]],
                                                     strides=[8, 16], offset=0.0)),
          {"strides": NUMBERS, "offset": PROB, "sizes": LEVEL_NUMBERS, "aspect_ratios": LEVEL_NUMBERS}, dtypes=False, noncontig=False),
    Entry("DefaultAnchorGenerator.grid_anchors", "anchors",
          _method("DefaultAnchorGenerator", "grid_anchors",
                  lambda: dict(sizes=[[32.0], [64.0]], aspect_ratios=[[0.5, 1.0, 2.0]], strides=[8, 16]),
                  lambda: dict(featmap_sizes=[(4, 5), (2, 3)])),
          {"featmap_sizes": SIZES}, dtypes=False, noncontig=False),
    Entry("TorchvisionAnchorGenerator()", "anchors",
          _fn("TorchvisionAnchorGenerator", lambda: dict(sizes=((32,), (64,)), aspect_ratios=((0.5, 1.0, 2.0),) * 2)),
          {"sizes": LEVEL_NUMBERS, "aspect_ratios": LEVEL_NUMBERS}, tied=("aspect_ratios",),
          dtypes=False, noncontig=False),
    Entry("TorchvisionAnchorGenerator.grid_anchors", "anchors",
          _method("TorchvisionAnchorGenerator", "grid_anchors",
                  lambda: dict(sizes=((32,), (64,)), aspect_ratios=((0.5, 1.0, 2.0),) * 2),
                  lambda: dict(image_size=(32, 40), featmap_sizes=[(4, 5), (2, 3)])),
          {"image_size": SIZE, "featmap_sizes": SIZES}, dtypes=False, noncontig=False),
    Entry("anchor_inside_flags", "anchors",
          _fn("anchor_inside_flags", lambda: dict(flat_anchors=boxes(9), valid_flags=torch.ones(9, dtype=torch.bool),
                                                  img_shape=(50, 50), allowed_border=0)),
          {"flat_anchors": BOXES_DROP, "valid_flags": FLAGS, "img_shape": SIZE, "allowed_border": NUMBER},
          tied=("valid_flags",), dropped=lambda flags: not bool(flags[0]),  # ANC-13: outside
          empty=lambda kw: {**kw, "flat_anchors": kw["flat_anchors"][:0], "valid_flags": kw["valid_flags"][:0]}),
    Entry("retinanet_anchor_preset", "anchors", _fn("retinanet_anchor_preset", lambda: dict(flavour="mmdet")),
          {"flavour": CHOICE}, dtypes=False, noncontig=False),
    Entry("MlvlPointGenerator.grid_priors", "points",
          _method("MlvlPointGenerator", "grid_priors", lambda: dict(strides=[8, 16], offset=0.0),
                  lambda: dict(featmap_sizes=[(4, 5), (2, 3)])),
          {"featmap_sizes": SIZES}, dtypes=False, noncontig=False),
    Entry("MlvlPointGenerator.valid_flags", "points",
          _method("MlvlPointGenerator", "valid_flags", lambda: dict(strides=[8, 16], offset=0.0),
                  lambda: dict(featmap_sizes=[(4, 5), (2, 3)], pad_shape=(30, 36))),
          {"featmap_sizes": SIZES, "pad_shape": SIZE}, dtypes=False, noncontig=False),
    Entry("MlvlPointGenerator()", "points", _fn("MlvlPointGenerator", lambda: dict(strides=[8, 16], offset=0.5)),
          {"strides": NUMBERS, "offset": PROB}, dtypes=False, noncontig=False),
    # ------------------------------------------------------------------ coders
    Entry("DeltaXYWHBBoxCoder.encode", "coders",
          _method("DeltaXYWHBBoxCoder", "encode", dict, lambda: dict(bboxes=boxes(6), gt_bboxes=boxes(6, seed=1))),
          {"bboxes": BOXES_ANY, "gt_bboxes": BOXES_ANY}, out_dtype=torch.float32,  # COD-13
          empty=lambda kw: {"bboxes": kw["bboxes"][:0], "gt_bboxes": kw["gt_bboxes"][:0]}),
    Entry("DeltaXYWHBBoxCoder.decode", "coders",
          _method("DeltaXYWHBBoxCoder", "decode", dict,
                  lambda: dict(bboxes=boxes(6), pred_bboxes=logits(6, 4), max_shape=(80, 80))),
          {"bboxes": BOXES_ANY, "pred_bboxes": DELTAS, "max_shape": SIZE}, optional=("max_shape",),
          empty=lambda kw: {**kw, "bboxes": kw["bboxes"][:0], "pred_bboxes": kw["pred_bboxes"][:0]}),
    Entry("DeltaXYWHBBoxCoder()", "coders",
          _fn("DeltaXYWHBBoxCoder", lambda: dict(target_means=(0.0,) * 4, target_stds=(0.1, 0.1, 0.2, 0.2),
                                                 clip_border=True, add_ctr_clamp=False)),
          {"target_means": ANY_NUMBERS, "target_stds": NUMBERS, "clip_border": BOOL, "add_ctr_clamp": BOOL}, dtypes=False, noncontig=False),
    Entry("Box2BoxTransform.get_deltas", "coders",
          _method("Box2BoxTransform", "get_deltas", lambda: dict(weights=(1.0, 1.0, 1.0, 1.0)),
                  lambda: dict(src_boxes=boxes(6), target_boxes=boxes(6, seed=1))),
          {"src_boxes": BOXES_ANY, "target_boxes": BOXES_ANY},
          empty=lambda kw: {"src_boxes": kw["src_boxes"][:0], "target_boxes": kw["target_boxes"][:0]}),
    Entry("Box2BoxTransform.apply_deltas", "coders",
          _method("Box2BoxTransform", "apply_deltas", lambda: dict(weights=(10.0, 10.0, 5.0, 5.0)),
                  lambda: dict(deltas=logits(6, 8), boxes=boxes(6))),
          {"deltas": DELTAS, "boxes": BOXES_ANY}, out_dtype=torch.float32,  # COD-13
          empty=lambda kw: {"deltas": kw["deltas"][:0], "boxes": kw["boxes"][:0]}),
    Entry("Box2BoxTransform()", "coders", _fn("Box2BoxTransform", lambda: dict(weights=(10.0, 10.0, 5.0, 5.0))),
          {"weights": NUMBERS, }, dtypes=False, noncontig=False),
    Entry("BoxCoder()", "coders", _fn("BoxCoder", lambda: dict(weights=(10.0, 10.0, 5.0, 5.0), bbox_xform_clip=4.0)),
          {"weights": NUMBERS, "bbox_xform_clip": POS}, dtypes=False, noncontig=False),
    Entry("DeltaCodec()", "coders", lambda get: Call(get("DeltaCodec"), dict(coder=get("BoxCoder")((1.0,) * 4))),
          {}, dtypes=False, noncontig=False, extra=_wrong_object("coder")),
    Entry("DeltaCodec.encode", "coders",
          lambda get: Call(get("DeltaCodec")(get("Box2BoxTransform")((10.0, 10.0, 5.0, 5.0))).encode,
                           dict(priors=boxes(6), gts=boxes(6, seed=1))),
          {"priors": BOXES_ANY, "gts": BOXES_ANY},
          empty=lambda kw: {"priors": kw["priors"][:0], "gts": kw["gts"][:0]}),
    Entry("DeltaCodec.decode", "coders",
          lambda get: Call(get("DeltaCodec")(get("DeltaXYWHBBoxCoder")()).decode,
                           dict(priors=boxes(6), deltas=logits(6, 8))),
          {"priors": BOXES_ANY, "deltas": DELTAS},
          empty=lambda kw: {"priors": kw["priors"][:0], "deltas": kw["deltas"][:0]}),
    Entry("BoxCoder.encode_single", "coders",
          _method("BoxCoder", "encode_single", lambda: dict(weights=(1.0, 1.0, 1.0, 1.0)),
                  lambda: dict(reference_boxes=boxes(6, seed=1), proposals=boxes(6))),
          {"reference_boxes": BOXES_ANY, "proposals": BOXES_ANY},
          empty=lambda kw: {"reference_boxes": kw["reference_boxes"][:0], "proposals": kw["proposals"][:0]}),
    Entry("BoxCoder.decode_single", "coders",
          _method("BoxCoder", "decode_single", lambda: dict(weights=(1.0, 1.0, 1.0, 1.0)),
                  lambda: dict(rel_codes=logits(6, 4), boxes=boxes(6))),
          {"rel_codes": DELTAS, "boxes": BOXES_ANY},
          empty=lambda kw: {"rel_codes": kw["rel_codes"][:0], "boxes": kw["boxes"][:0]}),
    Entry("DistancePointBBoxCoder()", "coders", _fn("DistancePointBBoxCoder", lambda: dict(clip_border=True)),
          {"clip_border": BOOL}, dtypes=False, noncontig=False),
    Entry("DistancePointBBoxCoder.encode", "coders",
          _method("DistancePointBBoxCoder", "encode", dict,
                  lambda: dict(points=boxes(6)[:, :2] + 6, gt_bboxes=boxes(6) + torch.tensor([0., 0., 8., 8.]))),
          {"gt_bboxes": BOXES_ANY}),
    Entry("DistancePointBBoxCoder.decode", "coders",
          _method("DistancePointBBoxCoder", "decode", dict,
                  lambda: dict(points=boxes(6)[:, :2], pred_bboxes=logits(6, 4).abs(), max_shape=(80, 80))),
          {"pred_bboxes": DELTAS, "max_shape": SIZE}, optional=("max_shape",),
          empty=lambda kw: {**kw, "points": kw["points"][:0], "pred_bboxes": kw["pred_bboxes"][:0]}),
    Entry("distance2bbox", "coders",
          _fn("distance2bbox", lambda: dict(points=boxes(6)[:, :2], distance=logits(6, 4).abs(), max_shape=(80, 80))),
          {"distance": DELTAS, "max_shape": SIZE}, optional=("max_shape",),
          empty=lambda kw: {**kw, "points": kw["points"][:0], "distance": kw["distance"][:0]}),
    Entry("bbox2distance", "coders",
          _fn("bbox2distance", lambda: dict(points=boxes(6)[:, :2] + 6, bbox=boxes(6) + torch.tensor([0., 0., 8., 8.]),
                                            max_dis=16.0, eps=0.1)),
          {"bbox": BOXES_ANY, "max_dis": POS, "eps": NONNEG}, optional=("max_dis",)),
    # ------------------------------------------------------------------ assigners
    Entry("MaxIoUAssigner()", "assigners",
          _fn("MaxIoUAssigner", lambda: dict(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0,
                                             gt_max_assign_all=True, ignore_wrt_candidates=True,
                                             match_low_quality=True)),
          {"pos_iou_thr": NUMBER, "neg_iou_thr": NUMBER, "min_pos_iou": NUMBER, "gt_max_assign_all": BOOL,
           "ignore_wrt_candidates": BOOL, "match_low_quality": BOOL}, dtypes=False, noncontig=False),
    Entry("MaxIoUAssigner.assign", "assigners",
          _method("MaxIoUAssigner", "assign", lambda: dict(pos_iou_thr=0.5, neg_iou_thr=0.4), _assign_inputs),
          {"bboxes": BOXES, "gt_bboxes": BOXES, "gt_labels": LABELS}, optional=("gt_labels",),
          tied=("gt_labels",), empty=lambda kw: {**kw, "gt_bboxes": kw["gt_bboxes"][:0], "gt_labels": kw["gt_labels"][:0]}),
    Entry("MaxIoUAssigner.assign_wrt_overlaps", "assigners",
          _method("MaxIoUAssigner", "assign_wrt_overlaps", lambda: dict(pos_iou_thr=0.5, neg_iou_thr=0.4),
                  lambda: dict(overlaps=scores(36).reshape(3, 12), gt_labels=labels(3, 4))),
          {"overlaps": SCORES, "gt_labels": LABELS}, optional=("gt_labels",), tied=("gt_labels",)),
    Entry("AssignResult.with_gts_prepended", "assigners",
          lambda get: Call(_assign_result(get).with_gts_prepended, dict(gt_labels=labels(3, 4))),
          {"gt_labels": LABELS}, optional=("gt_labels",), tied=("gt_labels",), dtypes=False, noncontig=False),
    Entry("Matcher()", "assigners", _fn("Matcher", lambda: dict(thresholds=[0.3, 0.7], labels=[0, -1, 1],
                                                                allow_low_quality_matches=False)),
          {"thresholds": NUMBERS, "allow_low_quality_matches": BOOL}, dtypes=False, noncontig=False),
    Entry("Matcher.__call__", "assigners",
          _method("Matcher", "__call__", lambda: dict(thresholds=[0.3, 0.7], labels=[0, -1, 1],
                                                      allow_low_quality_matches=True),
                  lambda: dict(match_quality_matrix=scores(36).reshape(3, 12))),
          {"match_quality_matrix": SCORES}),
    Entry("TorchvisionMatcher()", "assigners",
          _fn("TorchvisionMatcher", lambda: dict(high_threshold=0.5, low_threshold=0.4,
                                                 allow_low_quality_matches=False)),
          {"high_threshold": NUMBER, "low_threshold": NUMBER, "allow_low_quality_matches": BOOL}, dtypes=False, noncontig=False),
    Entry("TorchvisionMatcher.__call__", "assigners",
          _method("TorchvisionMatcher", "__call__", lambda: dict(high_threshold=0.5, low_threshold=0.4),
                  lambda: dict(match_quality_matrix=scores(36).reshape(3, 12))),
          {"match_quality_matrix": SCORES}),
    Entry("MatcherAssigner()", "assigners", lambda get: Call(get("MatcherAssigner"), dict(matcher=_d2_matcher(get))),
          {}, dtypes=False, noncontig=False, extra=_wrong_object("matcher")),
    Entry("MatcherAssigner.assign", "assigners",
          lambda get: Call(get("MatcherAssigner")(_d2_matcher(get)).assign, _assign_inputs()),
          {"bboxes": BOXES, "gt_bboxes": BOXES, "gt_labels": LABELS}, optional=("gt_labels",), tied=("gt_labels",),
          extra=lambda kw: [("gt_bboxes_ignore", "ignore boxes (no matcher has them)",
                             {**kw, "gt_bboxes_ignore": kw["gt_bboxes"][:1]})],
          empty=lambda kw: {**kw, "gt_bboxes": kw["gt_bboxes"][:0], "gt_labels": kw["gt_labels"][:0]}),
    Entry("DynamicSoftLabelAssigner()", "assigners",
          _fn("DynamicSoftLabelAssigner", lambda: dict(soft_center_radius=3.0, topk=13, iou_weight=3.0)),
          {"soft_center_radius": NUMBER, "topk": POS_COUNT, "iou_weight": NONNEG}, dtypes=False, noncontig=False),
    Entry("DynamicSoftLabelAssigner.assign", "assigners",
          _method("DynamicSoftLabelAssigner", "assign", dict, _dsl_inputs),
          {"pred_scores": SCORES, "decoded_bboxes": BOXES, "priors": BOXES, "gt_bboxes": BOXES,
           "gt_labels": LABELS}, tied=("pred_scores", "gt_labels"),
          empty=lambda kw: {**kw, "gt_bboxes": kw["gt_bboxes"][:0], "gt_labels": kw["gt_labels"][:0]}),
    Entry("DynamicSoftLabelAssigner.cost_matrix", "assigners",
          _method("DynamicSoftLabelAssigner", "cost_matrix", dict, _dsl_inputs),
          {"pred_scores": SCORES, "decoded_bboxes": BOXES, "priors": BOXES, "gt_bboxes": BOXES,
           "gt_labels": LABELS}, tied=("pred_scores", "gt_labels")),
    Entry("DynamicSoftLabelAssigner.dynamic_k_matching", "assigners",
          _method("DynamicSoftLabelAssigner", "dynamic_k_matching", dict,
                  lambda: dict(cost=logits(8, 3).abs() * 4, pairwise_ious=scores(24).reshape(8, 3))),
          {"cost": SCORES, "pairwise_ious": SCORES}, tied=("pairwise_ious",), out_dtype=None,
          empty=lambda kw: {"cost": kw["cost"][:, :0], "pairwise_ious": kw["pairwise_ious"][:, :0]}),
    # ------------------------------------------------------------------ samplers
    Entry("RandomSampler()", "samplers", _fn("RandomSampler", lambda: dict(num=8, pos_fraction=0.5,
                                                                           add_gt_as_proposals=True)),
          {"num": COUNT, "pos_fraction": PROB, "add_gt_as_proposals": BOOL}, dtypes=False, noncontig=False),
    Entry("RandomSampler.sample", "samplers", lambda get: _sample_call(get, "RandomSampler", dict(num=8, pos_fraction=0.5)),
          {"priors": BOXES_ANY, "gt_bboxes": BOXES_ANY, "gt_labels": LABELS}, optional=("gt_labels",),
          tied=("gt_labels",)),
    Entry("PseudoSampler.sample", "samplers", lambda get: _sample_call(get, "PseudoSampler", {}),
          {"priors": BOXES_ANY, "gt_bboxes": BOXES_ANY}),
    *[e for cls in ("Detectron2Sampler", "TorchvisionSampler") for e in (
        Entry(f"{cls}()", "samplers", _fn(cls, lambda: dict(num=8, pos_fraction=0.5)),
              {"num": COUNT, "pos_fraction": PROB}, dtypes=False, noncontig=False),
        Entry(f"{cls}.sample", "samplers", lambda get, cls=cls: _sample_call(get, cls, dict(num=8, pos_fraction=0.5)),
              {"priors": BOXES_ANY, "gt_bboxes": BOXES_ANY}))],
    Entry("subsample_labels", "samplers",
          _fn("subsample_labels", lambda: dict(labels=torch.tensor([1, 0, -1, 1, 0, 0, 2, 2]), num_samples=4,
                                               positive_fraction=0.5, bg_label=2, generator=_gen(0))),
          {"labels": LABELS, "num_samples": COUNT, "positive_fraction": PROB, "bg_label": INT},
          dtypes=False),
    Entry("BalancedPositiveNegativeSampler()", "samplers",
          _fn("BalancedPositiveNegativeSampler", lambda: dict(batch_size_per_image=8, positive_fraction=0.5)),
          {"batch_size_per_image": COUNT, "positive_fraction": PROB}, dtypes=False, noncontig=False),
    Entry("BalancedPositiveNegativeSampler.__call__", "samplers",
          _method("BalancedPositiveNegativeSampler", "__call__",
                  lambda: dict(batch_size_per_image=4, positive_fraction=0.5),
                  lambda: dict(matched_idxs=_matched_idxs(), generator=_gen(0))),
          {"matched_idxs": TENSORS + "_free"}, dtypes=False,
          extra=lambda kw: [("matched_idxs", "a float tensor entry", {**kw, "matched_idxs": [
              kw["matched_idxs"][0].float(), kw["matched_idxs"][1]]}),
              ("matched_idxs", "a 2-d entry", {**kw, "matched_idxs": [
                  kw["matched_idxs"][0][None], kw["matched_idxs"][1]]}),
              ("generator", "a seed, not a Generator", {**kw, "generator": 0})]),
    # ------------------------------------------------------------------ targets
    Entry("anchor_targets_single", "targets", _image_targets,
          {"flat_anchors": BOXES, "valid_flags": FLAGS, "gt_bboxes": BOXES, "img_shape": SIZE,
           "num_classes": POS_COUNT, "gt_labels": LABELS, "pos_weight": NUMBER}, optional=("gt_labels",),
          tied=("valid_flags", "gt_labels"), out_dtype=None),
    Entry("rtmdet_targets_single", "targets",
          _fn("rtmdet_targets_single", lambda: dict(
              cls_scores=logits(10, 3), decoded_bboxes=boxes(10, seed=7), flat_priors=points(10),
              valid_flags=torch.ones(10, dtype=torch.bool), gt_bboxes=boxes(2, seed=8),
              gt_labels=labels(2, 3), img_shape=(80, 80), num_classes=3)),
          {"cls_scores": SCORES, "decoded_bboxes": BOXES, "flat_priors": BOXES, "valid_flags": FLAGS,
           "gt_bboxes": BOXES, "gt_labels": LABELS, "img_shape": SIZE, "num_classes": POS_COUNT},
          tied=("cls_scores", "valid_flags", "gt_labels"), out_dtype=None),
    Entry("anchor_targets", "targets", _anchor_targets_call,
          {"anchor_list": TENSORS, "valid_flag_list": TENSORS, "gt_bboxes_list": TENSORS, "img_shapes": SIZES,
           "gt_labels_list": TENSORS, "num_classes": POS_COUNT}, optional=("gt_labels_list",),
          out_dtype=None, dtypes=False, noncontig=False),
    Entry("rtmdet_targets", "targets", _rtmdet_targets_call,
          {"cls_scores": SCORES, "decoded_bboxes": BOXES, "anchor_list": TENSORS, "valid_flag_list": TENSORS,
           "gt_bboxes_list": TENSORS, "gt_labels_list": TENSORS, "img_shapes": SIZES, "num_classes": POS_COUNT},
          out_dtype=None, dtypes=False, noncontig=False),
    Entry("roi_targets_single", "targets", _roi_targets_call,
          {"proposals": BOXES, "gt_bboxes": BOXES, "gt_labels": LABELS, "num_classes": POS_COUNT,
           "append_gts": BOOL}, tied=("gt_labels",), out_dtype=None, dtypes=False, noncontig=False,
          extra=lambda kw: [*_wrong_object("assigner")(kw), *_wrong_object("sampler")(kw),
                            *_wrong_object("box_coder")(kw)]),
    Entry("images_to_levels", "targets",
          _fn("images_to_levels", lambda: dict(targets=[logits(9), logits(9, seed=5)], num_level_anchors=[6, 3])),
          {"targets": TENSORS + "_free", "num_level_anchors": COUNTS}),
    Entry("unmap", "targets", _fn("unmap", lambda: dict(data=logits(3, 4), count=6,
                                             inds=torch.tensor([1, 0, 1, 0, 0, 1], dtype=torch.bool))),
          {"data": "tensor", "count": COUNT, "inds": FLAGS}, tied=("inds",)),
    # ------------------------------------------------------------------ losses
    Entry("sigmoid_focal_loss", "losses",
          _fn("sigmoid_focal_loss", lambda: dict(pred=logits(6, 4), target=labels(6, 5), gamma=2.0, alpha=0.25)),
          {"pred": SCORES_ANY, "target": LABELS, "gamma": NONNEG, "alpha": NUMBER, "reduction": CHOICE},
          tied=("target",)),
    Entry("quality_focal_loss", "losses",
          _fn("quality_focal_loss", lambda: dict(pred=logits(6, 4), target=(labels(6, 5), scores(6)), beta=2.0)),
          {"pred": SCORES_ANY, "beta": NONNEG, "reduction": CHOICE}),
    Entry("cross_entropy_loss", "losses",
          _fn("cross_entropy_loss", lambda: dict(pred=logits(6, 4), target=labels(6, 4))),
          {"pred": SCORES_ANY, "target": LABELS, "reduction": CHOICE}, tied=("target",)),
    Entry("binary_cross_entropy_loss", "losses",
          _fn("binary_cross_entropy_loss", lambda: dict(pred=logits(6, 4), target=scores(24).reshape(6, 4))),
          {"pred": SCORES_ANY, "target": SCORES_ANY, "reduction": CHOICE}),
    Entry("smooth_l1_loss", "losses",
          _fn("smooth_l1_loss", lambda: dict(pred=logits(6, 4), target=logits(6, 4, seed=9), beta=1.0)),
          {"pred": SCORES_ANY, "target": SCORES_ANY, "beta": NONNEG, "reduction": CHOICE}),
    Entry("l1_loss", "losses", _fn("l1_loss", lambda: dict(pred=logits(6, 4), target=logits(6, 4, seed=9))),
          {"pred": SCORES_ANY, "target": SCORES_ANY, "reduction": CHOICE}),
    Entry("giou_loss", "losses", _fn("giou_loss", lambda: dict(pred=boxes(6), target=boxes(6, seed=1))),
          {"pred": BOXES, "target": BOXES, "reduction": CHOICE, "flavour": CHOICE}),
    Entry("weight_reduce_loss", "losses",
          _fn("weight_reduce_loss", lambda: dict(loss=scores(6), weight=scores(6, seed=3), reduction="sum")),
          {"loss": SCORES_ANY, "weight": SCORES_ANY, "reduction": CHOICE}, optional=("weight",), tied=("weight",)),
    Entry("retinanet_num_total_pos", "losses",
          _fn("retinanet_num_total_pos", lambda: dict(num_pos_per_image=[3, 0, 2])),
          {}, dtypes=False, noncontig=False),
    Entry("EmaLossNormalizer()", "losses", _fn("EmaLossNormalizer", lambda: dict(momentum=0.9, initial=100.0)),
          {"momentum": PROB, "initial": POS}, dtypes=False, noncontig=False),
    Entry("EmaLossNormalizer.update", "losses",
          _method("EmaLossNormalizer", "update", dict, lambda: dict(num_pos=5)),
          {"num_pos": COUNT}, dtypes=False, noncontig=False),
    Entry("detectron2_rpn_normalizer", "losses",
          _fn("detectron2_rpn_normalizer", lambda: dict(batch_size_per_image=256, num_images=2)),
          {"batch_size_per_image": POS_COUNT, "num_images": POS_COUNT}, dtypes=False, noncontig=False),
    Entry("rtmdet_avg_factor", "losses", _fn("rtmdet_avg_factor", lambda: dict(assign_metrics=scores(6))),
          {"assign_metrics": SCORES}, out_dtype=None, noncontig=False),
    Entry("torchvision_per_image_mean", "losses",
          _fn("torchvision_per_image_mean", lambda: dict(loss_per_image=scores(3) * 10,
                                                         num_foreground_per_image=[3, 0, 2])),
          {"loss_per_image": SCORES_ANY, "num_foreground_per_image": COUNTS}),
    *[Entry(f"{name}.__call__", "losses", _normaliser_call(name),
            {"loss_sums": SCORES_ANY, "num_pos": COUNTS, "num_neg": COUNTS, "batch_size_per_image": POS_COUNT},
            optional=("num_neg", "batch_size_per_image"), dtypes=name != "EmaLossNormalizer", noncontig=False)
      for name in ("TotalPositives", "TotalSamples", "PerImageMean", "SampledMean", "FixedBatch",
                   "EmaLossNormalizer")],
    # ------------------------------------------------------------------ nms
    Entry("nms", "nms", _fn("nms", lambda: dict(boxes=boxes(10), scores=scores(10), iou_threshold=0.5)),
          {"boxes": BOXES, "scores": SCORES, "iou_threshold": NUMBER}, tied=("scores",),
          empty=lambda kw: {**kw, "boxes": kw["boxes"][:0], "scores": kw["scores"][:0]}),
    Entry("nms_reference", "nms",
          _fn("nms_reference", lambda: dict(boxes=boxes(10), scores=scores(10), iou_threshold=0.5)),
          {"boxes": BOXES, "scores": SCORES, "iou_threshold": NUMBER}, tied=("scores",),
          empty=lambda kw: {**kw, "boxes": kw["boxes"][:0], "scores": kw["scores"][:0]}),
    Entry("batched_nms", "nms",
          _fn("batched_nms", lambda: dict(boxes=boxes(10), scores=scores(10), idxs=labels(10, 3),
                                          iou_threshold=0.5)),
          {"boxes": BOXES, "scores": SCORES, "idxs": LABELS, "iou_threshold": NUMBER}, tied=("scores", "idxs"),
          empty=lambda kw: {**kw, "boxes": kw["boxes"][:0], "scores": kw["scores"][:0], "idxs": kw["idxs"][:0]}),
    Entry("multiclass_nms", "nms",
          _fn("multiclass_nms", lambda: dict(bboxes=boxes(10), scores=scores(40).reshape(10, 4),
                                             score_threshold=0.05, iou_threshold=0.5, max_num=5)),
          {"bboxes": BOXES, "scores": SCORES, "score_threshold": NUMBER, "iou_threshold": NUMBER,
           "max_num": COUNT}, negative_ok=("max_num",), tied=("scores",),
          empty=lambda kw: {**kw, "bboxes": kw["bboxes"][:0], "scores": kw["scores"][:0]}),
    Entry("fast_rcnn_inference", "nms",
          _fn("fast_rcnn_inference", lambda: dict(boxes=boxes(10), scores=scores(40).reshape(10, 4),
                                                  image_size=(80, 80), score_threshold=0.05,
                                                  nms_threshold=0.5, topk_per_image=5)),
          {"boxes": BOXES_DROP, "scores": SCORES_DROP, "image_size": SIZE, "score_threshold": NUMBER,
           "nms_threshold": NUMBER, "topk_per_image": COUNT}, negative_ok=("topk_per_image",), tied=("scores",),
          dropped=lambda dets: 0 not in dets.box_indices.tolist(),
          empty=lambda kw: {**kw, "boxes": kw["boxes"][:0], "scores": kw["scores"][:0]}),
    # ------------------------------------------------------------------ proposals
    Entry("mmdet_rpn_proposals", "proposals", _fn("mmdet_rpn_proposals", lambda: dict(**_rpn_levels(), nms_pre=8,
                                                                                     max_per_img=10, version="2.x")),
          {"scores": TENSORS, "deltas": TENSORS, "anchors": TENSORS, "image_size": SIZE,
           "nms_pre": COUNT, "iou_threshold": NUMBER, "min_bbox_size": NONNEG, "max_per_img": COUNT,
           "version": CHOICE},
          negative_ok=("nms_pre",)),
    Entry("find_top_rpn_proposals", "proposals",
          _fn("find_top_rpn_proposals", lambda: dict(**_d2_levels(), pre_nms_topk=8, post_nms_topk=10,
                                                     training=False)),
          {"proposals": TENSORS, "logits": TENSORS, "image_size": SIZE, "nms_thresh": NUMBER, "training": BOOL,
           "pre_nms_topk": COUNT, "post_nms_topk": COUNT, "min_box_size": NONNEG}),
    # ------------------------------------------------------------------ roi
    Entry("roi_align", "roi",
          _fn("roi_align", lambda: dict(input=logits(2, 3, 8, 8), rois=torch.cat(
              [torch.tensor([[0.], [1.], [0.]]), boxes(3, extent=20) / 4], 1), output_size=(2, 2),
              spatial_scale=1.0, sampling_ratio=2, aligned=True)),
          {"input": FEATURE, "rois": DELTAS, "output_size": SIZE, "spatial_scale": POS, "sampling_ratio": COUNT,
           "aligned": BOOL},
          negative_ok=("sampling_ratio",)),
    Entry("roi_align_reference", "roi",
          _fn("roi_align_reference", lambda: dict(input=logits(2, 3, 8, 8), rois=torch.cat(
              [torch.tensor([[0.], [1.], [0.]]), boxes(3, extent=20) / 4], 1), output_size=(2, 2),
              spatial_scale=1.0, sampling_ratio=2, aligned=True)),
          {"input": FEATURE, "rois": DELTAS, "output_size": SIZE, "spatial_scale": POS, "sampling_ratio": COUNT,
           "aligned": BOOL},
          negative_ok=("sampling_ratio",)),
    Entry("map_rois_to_levels", "roi",
          _fn("map_rois_to_levels", lambda: dict(boxes=boxes(6) * 4, mapping="mmdet", min_level=2, max_level=5)),
          {"boxes": BOXES, "mapping": CHOICE, "min_level": COUNT, "max_level": COUNT},
          empty=lambda kw: {**kw, "boxes": kw["boxes"][:0]}),
    Entry("MultiLevelRoIPooler.__call__", "roi",
          _method("MultiLevelRoIPooler", "__call__",
                  lambda: dict(output_size=(2, 2), scales=[1 / 4, 1 / 8], sampling_ratio=2),
                  lambda: dict(features=[logits(1, 3, 16, 16), logits(1, 3, 8, 8, seed=5)],
                               rois=torch.cat([torch.zeros(3, 1), boxes(3) / 2], 1))),
          {"features": TENSORS, "rois": DELTAS}),
    Entry("MultiLevelRoIPooler()", "roi",
          _fn("MultiLevelRoIPooler", lambda: dict(output_size=(2, 2), scales=[1 / 4, 1 / 8], sampling_ratio=2)),
          {"output_size": SIZE, "scales": NUMBERS, "sampling_ratio": COUNT, "mapping": CHOICE},
          negative_ok=("sampling_ratio",),
          dtypes=False, noncontig=False),
    # ------------------------------------------------------------------ models
    Entry("build_detector", "models", _fn("build_detector", lambda: dict(name="retinanet", num_classes=3)),
          {"name": CHOICE, "num_classes": POS_COUNT}, dtypes=False, noncontig=False,
          extra=lambda kw: [("overrides", "an unknown field", {**kw, "no_such_field": 1})]),
    Entry("ImageList.from_tensors", "models",
          lambda get: Call(get("ImageList").from_tensors, dict(images=_images(), size_divisibility=32,
                                                               pad_value=0.0)),
          {"images": IMAGES, "size_divisibility": COUNT, "pad_value": NUMBER}, dtypes=False, noncontig=False),
    *[Entry(f"{name}.forward({mode})", "models", _forward(name, mode == "train"),
            {"images": IMAGES, "targets": TARGETS}, dtypes=False, noncontig=False)
      for name in ("retinanet", "faster_rcnn", "rtmdet") for mode in ("train", "eval")],
]


# --------------------------------------------------------------------------- mutations
def _tensor_mutations(kind: str, value, tied: bool, optional: bool) -> list[tuple[str, Any]]:
    if not isinstance(value, torch.Tensor):
        return []
    out: list[tuple[str, Any]] = [] if optional else [("None", None)]
    out.append(("a list", value.tolist()))
    floating = value.is_floating_point()
    if kind in (BOXES, BOXES_ANY, BOXES_DROP, DELTAS, SCORES, SCORES_ANY, SCORES_DROP, FEATURE) and floating:
        out.append(("an integer tensor", value.round().long()))
    if kind in (LABELS,):
        out.append(("a float tensor", value.float()))
    if kind == FLAGS:
        out.append(("a float tensor", value.float()))
    if kind in (BOXES, BOXES_ANY, BOXES_DROP) and value.shape[-1] == 4:
        out.append(("last dim 3", value[..., :3]))
        out.append(("1-d", value.reshape(-1)))
    if kind == DELTAS and value.dim() >= 2:
        out.append(("last dim one short", value[..., :-1]))
    if kind == FEATURE:
        out.append(("3-d", value[0]))
    if tied and value.dim() >= 1 and value.numel():
        out.append(("one row short", value[:-1]))
    if kind in (BOXES, SCORES, BOXES_DROP, SCORES_DROP) and floating and value.numel():
        for label, bad in (("a NaN", math.nan), ("an inf", math.inf)):
            if kind == SCORES and bad == math.inf:
                continue
            v = value.clone()
            v.view(-1)[0] = bad
            out.append((label, v))
    return out


def _scalar_mutations(kind: str, name: str, value, negative_ok: bool,
                      optional: bool) -> list[tuple[str, Any]]:
    return [m for m in _scalar_mutations_all(kind, name, value, negative_ok)
            if not (optional and m[1] is None)]


def _scalar_mutations_all(kind: str, name: str, value, negative_ok: bool) -> list[tuple[str, Any]]:
    if kind in (PROB, POS, NONNEG, NUMBER):
        out = [("None", None), ("a string", str(value)), ("NaN", math.nan)]
        if kind == PROB:
            out += [("-0.5", -0.5), ("1.5", 1.5)]
        if kind in (POS, NONNEG):
            out += [("-1.0", -1.0)]
        if kind == POS:
            out += [("0", 0.0)]
        return out
    if kind in (COUNT, POS_COUNT):
        out = [("None", None), ("a string", str(value)), ("a float", float(value) + 0.5)]
        if not negative_ok:
            out.append(("-5", -5))
        if kind == POS_COUNT:
            out.append(("0", 0))
        return out
    if kind == INT:
        return [("None", None), ("a string", str(value)), ("a float", float(value) + 0.5)]
    if kind == COUNTS:
        return [("None", None), ("a negative entry", [-1] + list(value[1:])),
                ("a float entry", [value[0] + 0.5] + list(value[1:]))]
    if kind == ANY_NUMBERS:
        return [("None", None), ("a string", "0"), ("a NaN entry", [math.nan] + list(value[1:]))]
    if kind == CHOICE:
        return [("None", None), ("an unknown name", "no-such-option")]
    if kind == SIZE:
        return [("None", None), ("a string", "80x80"), ("one number", (80,)), ("a negative size", (-8, 80)),
                ("a NaN size", (math.nan, 80))]
    if kind == SIZES:
        return [("None", None), ("one level short", value[:-1]), ("a negative size", [(-4, 5)] + list(value[1:])),
                ("a float size", [(4.5, 5)] + list(value[1:]))]
    if kind == NUMBERS:
        out = [("None", None), ("a string", "8"), ("a negative entry", [-abs(value[0])] + list(value[1:])),
               ("a NaN entry", [math.nan] + list(value[1:]))]
        return out
    if kind == BOOL:
        return [("a string", "False"), ("a number", 2)]
    if kind == LEVEL_NUMBERS:
        first = list(value[0])
        return [("None", None), ("a string", "32"), ("a number for a level", [first[0]] + list(value[1:])),
                ("a negative entry", [[-abs(first[0])] + first[1:]] + list(value[1:])),
                ("a NaN entry", [[math.nan] + first[1:]] + list(value[1:]))]
    if kind == IMAGES:
        img = value[0]
        return [("None", None), ("a tensor, not a list", img), ("an empty list", []),
                ("a None entry", [None] + list(value[1:])), ("a 2-d entry", [img[0]] + list(value[1:])),
                ("an integer entry", [img.round().to(torch.uint8)] + list(value[1:]))]
    if kind == TARGETS:
        t0 = value[0]
        def first(**change):
            return [{**t0, **change}] + list(value[1:])
        return [("None", None), ("one entry short", list(value)[:-1]), ("a None entry", [None] + list(value[1:])),
                ("boxes missing", [{"labels": t0["labels"]}] + list(value[1:])),
                ("boxes (n, 3)", first(boxes=t0["boxes"][:, :3])),
                ("integer boxes", first(boxes=t0["boxes"].long())),
                ("a NaN box", first(boxes=torch.cat([t0["boxes"][:1] * math.nan, t0["boxes"][1:]]))),
                ("an inverted box", first(boxes=t0["boxes"][:, [2, 3, 0, 1]])),
                ("float labels", first(labels=t0["labels"].float())),
                ("a label = num_classes", first(labels=torch.full_like(t0["labels"], 3))),
                ("a negative label", first(labels=torch.full_like(t0["labels"], -1))),
                ("labels one short", first(labels=t0["labels"][:-1]))]
    if kind == TENSORS:
        return [("None", None), ("a tensor, not a list", value[0]), ("one entry short", list(value)[:-1]),
                ("a None entry", [None] + list(value)[1:])]
    if kind == TENSORS + "_free":
        return [("None", None), ("a tensor, not a list", value[0]), ("a None entry", [None] + list(value)[1:])]
    return []


@dataclasses.dataclass
class Outcome:
    entry: str
    component: str
    arg: str
    what: str
    status: str   # clean, unnamed, other, accepted, nan | ok, wrong, error | not_implemented
    detail: str = ""


def bad_calls(entry: Entry, call: Call) -> list[tuple[str, str, dict]]:
    """(argument, what was made wrong, kwargs) for every bad-input probe of ``entry``."""
    out = []
    for arg, kind in entry.kinds.items():
        if arg not in call.kwargs:
            continue
        value = call.kwargs[arg]
        optional = arg in entry.optional
        muts = (_tensor_mutations(kind, value, arg in entry.tied, optional)
                if isinstance(value, torch.Tensor)
                else _scalar_mutations(kind, arg, value, arg in entry.negative_ok, optional))
        for what, bad in muts:
            if kind in (BOXES_DROP, SCORES_DROP) and what in ("a NaN", "an inf"):
                what += " (dropped)"
            out.append((arg, what, {**call.kwargs, arg: bad}))
    if entry.extra is not None:
        out.extend(entry.extra(call.kwargs))
    return out


def _names(message: str, arg: str) -> bool:
    return arg in message


def _has_nan(x) -> bool:
    return any(t.is_floating_point() and bool(torch.isnan(t).any()) for t in _tensors(x))


def _tensors(x) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return [t for f in dataclasses.fields(x) for t in _tensors(getattr(x, f.name))]
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _tensors(v)]
    if isinstance(x, dict):
        return [t for v in x.values() for t in _tensors(v)]
    if isinstance(x, torch.nn.Module) or not hasattr(x, "__dict__"):
        return []
    return [t for v in vars(x).values() for t in _tensors(v)]


def probe_bad(entry: Entry, get) -> list[Outcome]:
    try:
        call = entry.build(get)
    except (_NotImplemented, NotImplementedError) as exc:
        return [Outcome(entry.name, entry.component, "", "", "not_implemented", str(exc))]
    outcomes = []
    for arg, what, kwargs in bad_calls(entry, call):
        try:
            fresh = entry.build(get)  # a fresh object: a method may keep state
            result = fresh.fn(**kwargs)
        except (ValueError, TypeError) as exc:
            status = "clean" if _names(str(exc), arg) else "unnamed"
            outcomes.append(Outcome(entry.name, entry.component, arg, what, status,
                                    f"{type(exc).__name__}: {exc}"[:200]))
            continue
        except NotImplementedError as exc:
            outcomes.append(Outcome(entry.name, entry.component, arg, what, "not_implemented", str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - the probe records every exception type
            outcomes.append(Outcome(entry.name, entry.component, arg, what, "other",
                                    f"{type(exc).__name__}: {exc}"[:200]))
            continue
        status = "nan" if _has_nan(result) else "accepted"
        if what.endswith("(dropped)") and status == "accepted":
            # the stated rule for this argument: the row is dropped (or flagged out)
            status = "clean" if entry.dropped is None or entry.dropped(result) else "accepted"
        outcomes.append(Outcome(entry.name, entry.component, arg, what, status))
    return outcomes


def _convert(x, fn):
    if isinstance(x, torch.Tensor):
        return fn(x)
    if isinstance(x, list):
        return [_convert(v, fn) for v in x]
    if isinstance(x, tuple) and not (x and all(isinstance(v, (int, float)) for v in x)):
        return tuple(_convert(v, fn) for v in x)
    return x


def _as(dtype):
    return lambda t: t.to(dtype) if t.is_floating_point() else t


def _noncontig(t: torch.Tensor) -> torch.Tensor:
    if t.dim() == 0 or t.numel() == 0:
        return t
    return torch.stack([t, t], dim=-1)[..., 0]  # same values, every stride doubled


def _compare(got, want, dtype) -> str:
    g, w = _tensors(got), _tensors(want)
    if len(g) != len(w):
        return f"{len(g)} tensors returned, expected {len(w)}"
    for a, b in zip(g, w):
        if a.shape != b.shape:
            return f"shape {tuple(a.shape)}, expected {tuple(b.shape)}"
        if b.is_floating_point():
            if dtype is not None and a.dtype != dtype:
                return f"dtype {a.dtype}, expected {dtype}"
            if not a.is_floating_point():
                return f"dtype {a.dtype}, expected a floating dtype"
            b = b.to(a.dtype).double()
            tol = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}.get(a.dtype, 1e-5)
            ok = torch.isclose(a.double(), b, rtol=tol, atol=tol, equal_nan=True)
            if not bool(ok.all()):
                return f"values differ by up to {float((a.double() - b).abs().nan_to_num().max()):.3g}"
        elif not torch.equal(a.cpu(), b.cpu()):
            return "integer/bool outputs differ"
    return ""


def probe_every_call(entry: Entry, get) -> list[Outcome]:
    try:
        entry.build(get)
    except (_NotImplemented, NotImplementedError) as exc:
        return [Outcome(entry.name, entry.component, "", "", "not_implemented", str(exc))]
    outcomes = []

    def run(what, transform, dtype=None, reference=None):
        call = entry.build(get)
        kwargs = {k: _convert(v, transform) for k, v in call.kwargs.items()}
        try:
            got = call.fn(**kwargs)
            if reference is None:
                return Outcome(entry.name, entry.component, "*", what, "ok")
            ref_call = entry.build(get)
            ref_kwargs = {k: _convert(v, reference) for k, v in ref_call.kwargs.items()}
            want = ref_call.fn(**ref_kwargs)
            problem = _compare(got, want, dtype)
            return Outcome(entry.name, entry.component, "*", what, "wrong" if problem else "ok", problem)
        except NotImplementedError as exc:
            return Outcome(entry.name, entry.component, "*", what, "not_implemented", str(exc))
        except Exception as exc:  # noqa: BLE001
            return Outcome(entry.name, entry.component, "*", what, "error",
                           f"{type(exc).__name__}: {exc}"[:200])

    if entry.dtypes:
        for dtype in FLOAT_DTYPES:
            # The float32 answer on the same (rounded) inputs, rounded to the input dtype.
            expected = dtype if entry.out_dtype == "input" else entry.out_dtype
            outcomes.append(run(str(dtype).replace("torch.", ""), _as(dtype), expected,
                                lambda t, d=dtype: t.to(d).float() if t.is_floating_point() else t))
    if entry.noncontig:
        outcomes.append(run("non-contiguous", _noncontig, None, lambda t: t))
    if entry.empty is not None:
        call = entry.build(get)
        try:
            call.fn(**entry.empty(call.kwargs))
            outcomes.append(Outcome(entry.name, entry.component, "*", "empty", "ok"))
        except NotImplementedError as exc:  # an option it lacks, as in run() above
            outcomes.append(Outcome(entry.name, entry.component, "*", "empty", "not_implemented",
                                    str(exc)))
        except Exception as exc:  # noqa: BLE001
            outcomes.append(Outcome(entry.name, entry.component, "*", "empty", "error",
                                    f"{type(exc).__name__}: {exc}"[:200]))
    return outcomes


class _NotImplemented(Exception):
    pass


def getter(module) -> Callable[[str], Any]:
    def get(name: str):
        if not hasattr(module, name):
            raise _NotImplemented(f"{name} not exposed")
        return getattr(module, name)
    return get


def run_probe(module) -> list[Outcome]:
    get = getter(module)
    out: list[Outcome] = []
    for entry in TABLE:
        out += probe_bad(entry, get)
        out += probe_every_call(entry, get)
    return out


def summarise(outcomes: list[Outcome]) -> dict:
    bad = [o for o in outcomes if o.arg != "*" and o.status != "not_implemented"]
    every = [o for o in outcomes if o.arg == "*" and o.status != "not_implemented"]
    count = lambda rows, s: sum(o.status == s for o in rows)  # noqa: E731
    return {
        "callables": len({o.entry for o in outcomes if o.status != "not_implemented"}),
        "bad_input": {s: count(bad, s) for s in ("clean", "unnamed", "other", "accepted", "nan")},
        "bad_input_total": len(bad),
        "every_call": {s: count(every, s) for s in ("ok", "wrong", "error")},
        "every_call_total": len(every),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance.probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", default="reference")
    parser.add_argument("--json", default=None, help="write every outcome to this file")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every probe that is not clean")
    args = parser.parse_args(argv)
    from conformance.implementation import load_implementation

    module = load_implementation(args.impl).module
    outcomes = run_probe(module)
    summary = summarise(outcomes)
    b, e = summary["bad_input"], summary["every_call"]
    print(f"{args.impl}: {summary['callables']} callables")
    print(f"bad input: {b['clean']}/{summary['bad_input_total']} rejected cleanly "
          f"({100 * b['clean'] / max(1, summary['bad_input_total']):.1f}%); unnamed {b['unnamed']}, "
          f"other exception {b['other']}, accepted {b['accepted']} (NaN {b['nan']})")
    print(f"every call (dtypes, non-contiguous, empty): {e['ok']}/{summary['every_call_total']} ok; "
          f"wrong {e['wrong']}, error {e['error']}")
    if args.verbose:
        for o in outcomes:
            if o.status not in ("clean", "ok", "not_implemented"):
                print(f"  {o.status:<9} {o.entry}({o.arg}: {o.what})  {o.detail}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"summary": summary, "outcomes": [dataclasses.asdict(o) for o in outcomes]}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
