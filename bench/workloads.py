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
