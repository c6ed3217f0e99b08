"""Torchvision weights in the reference's torchvision-flavour detectors (MOD-13, MOD-14).

A table of ``(regex, replacement)`` pairs renames torchvision's state-dict keys to
ours; every torchvision tensor must land on one of ours with the same shape and
every one of ours must be filled (SPEC.md "Torchvision flavour state-dict mapping").
"""

from __future__ import annotations

import re

from torch import nn

__all__ = ["load_renamed_state_dict", "load_torchvision_retinanet_weights",
           "load_torchvision_faster_rcnn_weights"]


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


def load_torchvision_retinanet_weights(model: nn.Module, tv_model: nn.Module) -> None:
    """Copy a torchvision ``retinanet_resnet50_fpn`` state into a torchvision-flavour model.

    Every torchvision tensor must map to one of ours with the same shape and every
    one of ours must be filled; otherwise ValueError lists what did not match.
    """
    load_renamed_state_dict(model, tv_model, _TV_RETINANET_KEYS)


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


def load_torchvision_faster_rcnn_weights(model: nn.Module, tv_model: nn.Module) -> None:
    """Copy a torchvision ``fasterrcnn_resnet50_fpn`` state into a torchvision-flavour model."""
    load_renamed_state_dict(model, tv_model, _TV_FASTER_RCNN_KEYS)
