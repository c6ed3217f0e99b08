"""Detectors, built by name from plain configurations.

    from reference.detectors import build_detector, DETECTOR_NAMES
    model = build_detector("retinanet", num_classes=4)            # small CPU config
    model = build_detector("retinanet_r50_fpn", num_classes=80)   # upstream config
    model = build_detector("retinanet", num_classes=4, head_convs=3)  # any config field

Every detector has one calling convention:

* training: ``model(images, targets) -> dict`` of scalar losses, with images a
  list of (3, H_i, W_i) float normalised tensors and targets a list of
  {"boxes": (n_i, 4) float32 xyxy pixels, "labels": (n_i,) int64 in [0, C)};
* eval: ``model(images) -> list`` of {"boxes" (k, 4), "scores" (k,),
  "labels" (k,) int64} per image, in the input image's pixels.

The names map to a builder and a config dataclass; overrides replace config
fields (unknown names raise ValueError listing the valid ones). No registry
beyond this one explicit table.

Names:
  retinanet          small CPU RetinaNet: ResNet-18, 64-ch FPN P3-P7, 2-conv 64-ch
                     head, anchors 16-25 px at P3 (octave base scale 2), trainable BN.
  faster_rcnn        small CPU Faster R-CNN: ResNet-18, 64-ch FPN P2-P6, 256-d box head.
  rtmdet             small CPU RTMDet: CSPNeXt (0.167 deep, 0.25 wide), 64-ch neck/head,
                     exp_on_reg (boxes start at stride size, so training starts sanely).
  retinanet_r50_fpn  mmdet retinanet_r50_fpn_1x (37,968,692 parameters at 80 classes).
  faster_rcnn_r50_fpn  mmdet faster-rcnn_r50_fpn_1x (41,753,056 at 80 classes).
  rtmdet_tiny, rtmdet_s  mmdet RTMDet tiny / s (4,896,168 / 8,886,924 at 80 classes).
  Pass flavour="torchvision" (or "detectron2") to build the other flavours.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from reference.detectors.faster_rcnn import FasterRCNNConfig, build_faster_rcnn
from reference.detectors.image_list import ImageList
from reference.detectors.retinanet import RetinaNetConfig, build_retinanet
from reference.detectors.rtmdet import RTMDetConfig, build_rtmdet

__all__ = ["build_detector", "DETECTOR_NAMES", "DETECTOR_CONFIGS", "ImageList"]

# name -> (builder, config with everything but num_classes)
DETECTOR_CONFIGS = {
    "retinanet": (build_retinanet, RetinaNetConfig(
        backbone_depth=18, backbone_norm="bn", frozen_stages=-1, fpn_channels=64,
        head_channels=64, head_convs=2, octave_base_scale=2.0)),
    "faster_rcnn": (build_faster_rcnn, FasterRCNNConfig(
        backbone_depth=18, backbone_norm="bn", frozen_stages=-1, fpn_channels=64,
        fc_dim=256, anchor_scale=4.0, rpn_pre_nms_topk_train=1000, rpn_post_nms_topk_train=500,
        rpn_pre_nms_topk_test=500, rpn_post_nms_topk_test=300, roi_batch_size=128)),
    "rtmdet": (build_rtmdet, RTMDetConfig(
        deepen_factor=0.167, widen_factor=0.25, neck_channels=64, head_channels=64,
        exp_on_reg=True, norm_eps=1e-3, norm_momentum=0.03)),
    "retinanet_r50_fpn": (build_retinanet, RetinaNetConfig()),
    "faster_rcnn_r50_fpn": (build_faster_rcnn, FasterRCNNConfig()),
    "rtmdet_tiny": (build_rtmdet, RTMDetConfig(
        deepen_factor=0.167, widen_factor=0.375, neck_channels=96, head_channels=96)),
    "rtmdet_s": (build_rtmdet, RTMDetConfig(
        deepen_factor=0.33, widen_factor=0.5, neck_channels=128, head_channels=128)),
}
DETECTOR_NAMES = tuple(DETECTOR_CONFIGS)


def build_detector(name: str, num_classes: int = 80, **overrides) -> nn.Module:
    """Build detector ``name`` (one of ``DETECTOR_NAMES``) for ``num_classes`` classes.

    ``overrides`` replace fields of the name's config dataclass (e.g.
    ``flavour="torchvision"``, ``fpn_channels=128``).
    """
    if name not in DETECTOR_CONFIGS:
        raise ValueError(f"name={name!r}: expected one of {list(DETECTOR_NAMES)}")
    builder, config = DETECTOR_CONFIGS[name]
    fields = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"overrides {unknown} are not fields of {type(config).__name__}; "
                         f"expected some of {sorted(fields - {'num_classes'})}")
    return builder(dataclasses.replace(config, num_classes=num_classes, **overrides))
