"""Loading mmdetection 3.x weights into the reference's upstream configurations.

    mm_state = mmdet_model.state_dict()          # mmdet 3.3, e.g. retinanet_r50_fpn_1x_coco
    model = build_detector("retinanet_r50_fpn", num_classes=80)
    load_mmdet_weights(model, "retinanet_r50_fpn", mm_state)

The key mapping, per detector (mmdet key -> reference key; the rest of the key,
``weight``/``bias``/BatchNorm buffers, is kept):

RetinaNet R50-FPN (``configs/retinanet/retinanet_r50_fpn_1x_coco.py``) and
Faster R-CNN R50-FPN (``configs/faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py``):

    backbone.*                         -> backbone.body.*        (torchvision ResNet names)
    neck.lateral_convs.i.conv.*        -> neck.lateral_convs.i.*
    neck.fpn_convs.i.conv.*            -> neck.output_convs.i.*   for i < L (backbone levels)
    neck.fpn_convs.i.conv.*            -> neck.extra_convs.(i-L).* for i >= L (RetinaNet P6, P7)
    bbox_head.cls_convs.k.conv.*       -> head.cls_convs.(2k).*   (our towers interleave ReLUs)
    bbox_head.reg_convs.k.conv.*       -> head.reg_convs.(2k).*
    bbox_head.retina_cls.*             -> head.cls_out.*
    bbox_head.retina_reg.*             -> head.reg_out.*
    rpn_head.rpn_conv.*                -> rpn_head.conv.*
    rpn_head.rpn_cls.*                 -> rpn_head.objectness.*
    rpn_head.rpn_reg.*                 -> rpn_head.deltas.*
    roi_head.bbox_head.shared_fcs.i.*  -> roi_head.fcs.i.*
    roi_head.bbox_head.fc_cls.*        -> roi_head.cls_score.*    (background last in both)
    roi_head.bbox_head.fc_reg.*        -> roi_head.bbox_pred.*

RTMDet (``configs/rtmdet/rtmdet_tiny_8xb32-300e_coco.py``, ``rtmdet_s_...``):

    backbone.stem.*                    -> backbone.stem.*
    backbone.stage(s).*                -> backbone.stages.(s-1).*  (mmdet counts from 1)
    *.depthwise_conv.* / *.pointwise_conv.* -> *.depthwise.* / *.pointwise.*
    neck.*                             -> neck.*                   (same names)
    bbox_head.cls_convs / reg_convs.*  -> head.cls_convs / reg_convs.*
    bbox_head.rtm_cls.l.* / rtm_reg.l.* -> head.cls_out.l.* / head.reg_out.l.*

Every mmdet tensor must map to a reference tensor of the same shape and every
reference tensor must be filled; otherwise ``ValueError`` lists what did not match.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch
from torch import nn

__all__ = ["MMDET_KEY_RULES", "mmdet_key_to_reference", "load_mmdet_weights"]

Rule = tuple[str, "str | Callable[[re.Match], str]"]


def _double(prefix: str) -> Callable[[re.Match], str]:
    return lambda m: f"{prefix}.{2 * int(m.group(1))}."


def _fpn_rules(backbone_levels: int) -> list[Rule]:
    def fpn(m: re.Match) -> str:
        i = int(m.group(1))
        if i < backbone_levels:
            return f"neck.output_convs.{i}."
        return f"neck.extra_convs.{i - backbone_levels}."
    return [
        (r"^backbone\.", "backbone.body."),
        (r"^neck\.lateral_convs\.(\d+)\.conv\.", r"neck.lateral_convs.\1."),
        (r"^neck\.fpn_convs\.(\d+)\.conv\.", fpn),
    ]


# name -> ordered (pattern, replacement) rules; the first matching rule renames the
# key's start, and for RTMDet every rule applies in turn (see mmdet_key_to_reference).
MMDET_KEY_RULES: dict[str, list[Rule]] = {
    "retinanet_r50_fpn": _fpn_rules(3) + [
        (r"^bbox_head\.cls_convs\.(\d+)\.conv\.", _double("head.cls_convs")),
        (r"^bbox_head\.reg_convs\.(\d+)\.conv\.", _double("head.reg_convs")),
        (r"^bbox_head\.retina_cls\.", "head.cls_out."),
        (r"^bbox_head\.retina_reg\.", "head.reg_out."),
    ],
    "faster_rcnn_r50_fpn": _fpn_rules(4) + [
        (r"^rpn_head\.rpn_conv\.", "rpn_head.conv."),
        (r"^rpn_head\.rpn_cls\.", "rpn_head.objectness."),
        (r"^rpn_head\.rpn_reg\.", "rpn_head.deltas."),
        (r"^roi_head\.bbox_head\.shared_fcs\.(\d+)\.", r"roi_head.fcs.\1."),
        (r"^roi_head\.bbox_head\.fc_cls\.", "roi_head.cls_score."),
        (r"^roi_head\.bbox_head\.fc_reg\.", "roi_head.bbox_pred."),
    ],
}
_RTMDET_RULES: list[Rule] = [
    (r"^backbone\.stage(\d+)\.", lambda m: f"backbone.stages.{int(m.group(1)) - 1}."),
    (r"\.depthwise_conv\.", ".depthwise."),
    (r"\.pointwise_conv\.", ".pointwise."),
    (r"^bbox_head\.rtm_cls\.", "head.cls_out."),
    (r"^bbox_head\.rtm_reg\.", "head.reg_out."),
    (r"^bbox_head\.", "head."),
]
MMDET_KEY_RULES["rtmdet_tiny"] = MMDET_KEY_RULES["rtmdet_s"] = _RTMDET_RULES
_APPLY_ALL = {"rtmdet_tiny", "rtmdet_s"}


def mmdet_key_to_reference(name: str, key: str) -> str | None:
    """The reference key for mmdet state-dict ``key`` of detector ``name``; None if no
    rule maps it (RTMDet keys the rules leave alone, e.g. ``neck.*``, map to themselves)."""
    if name not in MMDET_KEY_RULES:
        raise ValueError(f"name={name!r}: expected one of {sorted(MMDET_KEY_RULES)}")
    rules = MMDET_KEY_RULES[name]
    if name in _APPLY_ALL:
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        return key
    for pattern, repl in rules:
        if re.search(pattern, key):
            return re.sub(pattern, repl, key, count=1)
    return None


def load_mmdet_weights(model: nn.Module, name: str, mmdet_state: Mapping[str, torch.Tensor]) -> None:
    """Copy an mmdet 3.x state dict (``mmdet_model.state_dict()``) into ``model``, a
    reference ``build_detector(name, ...)`` with the same number of classes."""
    if name not in MMDET_KEY_RULES:
        raise ValueError(f"name={name!r}: expected one of {sorted(MMDET_KEY_RULES)}")
    if not isinstance(mmdet_state, Mapping):
        raise TypeError(f"mmdet_state: expected a state dict (mapping), got {type(mmdet_state).__name__}")
    ours = model.state_dict()
    mapped, unmatched = {}, []
    for key, value in mmdet_state.items():
        new = mmdet_key_to_reference(name, key)
        if new is None or new not in ours or ours[new].shape != value.shape:
            unmatched.append(f"{key} -> {new}")
            continue
        mapped[new] = value
    missing = [k for k in ours if k not in mapped]
    if unmatched or missing:
        raise ValueError(f"mmdet_state: unmatched mmdet keys {unmatched[:5]} "
                         f"({len(unmatched)} in all), unfilled reference keys {missing[:5]} "
                         f"({len(missing)} in all)")
    model.load_state_dict(mapped)
