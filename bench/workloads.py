"""Inputs of the benchmark workloads, built with plain torch from fixed seeds.

Sizes follow the seeds: the RetinaNet 800x1216 batch (182403 anchors over the
five levels 100x152 ... 7x10, nine anchors a location) and RTMDet's 640x640
input (8400 points at strides 8, 16, 32).
"""

from __future__ import annotations

import torch

from golden.inputs import (  # noqa: F401  (re-exported for the benchmark files)
    RETINANET_FEATMAPS,
    RETINANET_STRIDES,
    RTMDET_FEATMAPS,
    RTMDET_STRIDES,
)
from golden.inputs import retinanet_anchors as _retinanet_anchors
from golden.inputs import rtmdet_points as _rtmdet_points


def retinanet_anchors(device) -> torch.Tensor:
    """(182403, 4) mmdet RetinaNet anchors of the 800x1216 batch, on ``device``."""
    return _retinanet_anchors().to(device)


def random_gts(num: int, device, height=800, width=1216, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    wh = torch.rand(num, 2, generator=g) * torch.tensor([300.0, 300.0]) + 16
    xy = torch.rand(num, 2, generator=g) * (torch.tensor([width, height]) - wh)
    return torch.cat([xy, xy + wh], dim=1).to(device)


def rtmdet_points(device) -> torch.Tensor:
    """(8400, 4) points with strides (x, y, stride_w, stride_h), offset 0."""
    return _rtmdet_points().to(device)


def random_boxes_scores(num: int, device, seed=0, size=1000.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(num, 2, generator=g) * size
    wh = torch.rand(num, 2, generator=g) * 100 + 1
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.rand(num, generator=g)
    return boxes.to(device), scores.to(device)


def torchvision_detector(name: str, num_classes: int, image_size):
    """torchvision's own detector matching a reference config name (random weights).

    torchvision models normalise and resize inside; both are turned off (mean 0,
    std 1, min/max size = the image size) so the model sees exactly the tensors
    the reference's detectors see. Names torchvision lacks raise NotImplementedError.
    (Restored: 7bf63fc dropped it while test_training.py still calls it, which
    turned torchvision's training rows into silent skips.)
    """
    from torchvision.models import detection

    builders = {
        "retinanet_r50_fpn": detection.retinanet_resnet50_fpn,
        "faster_rcnn_r50_fpn": detection.fasterrcnn_resnet50_fpn,
    }
    if name not in builders:
        raise NotImplementedError(f"torchvision has no detector matching {name!r}")
    h, w = image_size
    return builders[name](weights=None, weights_backbone=None, num_classes=num_classes,
                          min_size=min(h, w), max_size=max(h, w),
                          image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0])
