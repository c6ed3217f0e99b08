"""The mmdet -> reference state-dict mapping (reference/detectors/mmdet_weights.py).

The full mapping is proven against live mmdet models by conformance/test_mmdet_e2e.py
(MOD-24..26) wherever mmdet is installed; these checks run everywhere.
"""

from __future__ import annotations

import functools

import pytest
import torch

from reference.detectors import build_detector
from reference.detectors.mmdet_weights import load_mmdet_weights, mmdet_key_to_reference


@functools.lru_cache(maxsize=None)
def _state_keys(name: str) -> frozenset:
    """The state-dict keys of ``name``, built once on PyTorch's meta device (the same
    modules without initialising ~40M weights: 12 full builds took ~15 s of CI)."""
    with torch.device("meta"):
        return frozenset(build_detector(name, num_classes=3).state_dict())


@pytest.mark.parametrize("name, key, expected", [
    ("retinanet_r50_fpn", "backbone.layer1.0.conv1.weight", "backbone.body.layer1.0.conv1.weight"),
    ("retinanet_r50_fpn", "neck.fpn_convs.2.conv.bias", "neck.output_convs.2.bias"),
    ("retinanet_r50_fpn", "neck.fpn_convs.3.conv.weight", "neck.extra_convs.0.weight"),
    ("retinanet_r50_fpn", "bbox_head.cls_convs.3.conv.weight", "head.cls_convs.6.weight"),
    ("retinanet_r50_fpn", "bbox_head.retina_reg.bias", "head.reg_out.bias"),
    ("faster_rcnn_r50_fpn", "neck.fpn_convs.3.conv.weight", "neck.output_convs.3.weight"),
    ("faster_rcnn_r50_fpn", "rpn_head.rpn_cls.weight", "rpn_head.objectness.weight"),
    ("faster_rcnn_r50_fpn", "roi_head.bbox_head.shared_fcs.1.bias", "roi_head.fcs.1.bias"),
    ("rtmdet_tiny", "backbone.stage4.2.blocks.0.conv2.depthwise_conv.conv.weight",
     "backbone.stages.3.2.blocks.0.conv2.depthwise.conv.weight"),
    ("rtmdet_tiny", "bbox_head.rtm_cls.1.bias", "head.cls_out.1.bias"),
    ("rtmdet_tiny", "bbox_head.cls_convs.0.1.bn.running_var", "head.cls_convs.0.1.bn.running_var"),
    ("rtmdet_tiny", "neck.out_convs.0.conv.weight", "neck.out_convs.0.conv.weight"),
])
def test_mmdet_keys_map_to_reference_keys_of_the_same_shape(name, key, expected):
    assert mmdet_key_to_reference(name, key) == expected
    assert expected in _state_keys(name)


def test_load_mmdet_weights_rejects_unknown_names_and_partial_states():
    model = build_detector("retinanet_r50_fpn", num_classes=3)
    with pytest.raises(ValueError, match="name"):
        load_mmdet_weights(model, "no_such_detector", {})
    with pytest.raises(TypeError, match="mmdet_state"):
        load_mmdet_weights(model, "retinanet_r50_fpn", [1, 2])
    partial = {"bbox_head.retina_reg.bias": torch.zeros(36), "bbox_head.bogus.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match="bbox_head.bogus.weight") as err:
        load_mmdet_weights(model, "retinanet_r50_fpn", partial)
    assert "unfilled reference keys" in str(err.value)
