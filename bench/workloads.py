"""Inputs of the benchmark workloads, built with plain torch from fixed seeds.

Sizes follow the seeds: the RetinaNet 800x1216 batch (182403 anchors over the
five levels 100x152 ... 7x10, nine anchors a location) and RTMDet's 640x640
input (8400 points at strides 8, 16, 32).
"""

from __future__ import annotations

import math

import torch

RETINANET_FEATMAPS = [(100, 152), (50, 76), (25, 38), (13, 19), (7, 10)]
RETINANET_STRIDES = [8, 16, 32, 64, 128]
RTMDET_FEATMAPS = [(80, 80), (40, 40), (20, 20)]
RTMDET_STRIDES = [8, 16, 32]


def retinanet_anchors(device) -> torch.Tensor:
    """(182403, 4) mmdet RetinaNet anchors, written out from the formula."""
    levels = []
    for (h, w), stride in zip(RETINANET_FEATMAPS, RETINANET_STRIDES):
        scales = torch.tensor([4 * 2 ** (i / 3) for i in range(3)], dtype=torch.float64)
        ratios = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
        hs = (stride * ratios.sqrt()[:, None] * scales[None, :]).reshape(-1)  # (9,)
        ws = (stride / ratios.sqrt()[:, None] * scales[None, :]).reshape(-1)
        base = torch.stack([-ws / 2, -hs / 2, ws / 2, hs / 2], dim=1)  # (9, 4)
        ys, xs = torch.meshgrid(torch.arange(h) * stride, torch.arange(w) * stride, indexing="ij")
        shifts = torch.stack([xs, ys, xs, ys], dim=-1).reshape(-1, 1, 4).double()
        levels.append((shifts + base).reshape(-1, 4))
    return torch.cat(levels).float().to(device)


def random_gts(num: int, device, height=800, width=1216, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    wh = torch.rand(num, 2, generator=g) * torch.tensor([300.0, 300.0]) + 16
    xy = torch.rand(num, 2, generator=g) * (torch.tensor([width, height]) - wh)
    return torch.cat([xy, xy + wh], dim=1).to(device)


def rtmdet_points(device) -> torch.Tensor:
    """(8400, 4) points with strides (x, y, stride_w, stride_h), offset 0."""
    out = []
    for (h, w), s in zip(RTMDET_FEATMAPS, RTMDET_STRIDES):
        ys, xs = torch.meshgrid(torch.arange(h) * s, torch.arange(w) * s, indexing="ij")
        out.append(torch.stack([xs.reshape(-1), ys.reshape(-1),
                                torch.full((h * w,), s), torch.full((h * w,), s)], 1).float())
    return torch.cat(out).to(device)


def random_boxes_scores(num: int, device, seed=0, size=1000.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(num, 2, generator=g) * size
    wh = torch.rand(num, 2, generator=g) * 100 + 1
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.rand(num, generator=g)
    return boxes.to(device), scores.to(device)


def log_clip() -> float:
    return math.log(1000.0 / 16)


def torchvision_detector(name: str, num_classes: int, image_size):
    """torchvision's own detector matching a reference config name (random weights).

    torchvision models normalise and resize inside; both are turned off (mean 0,
    std 1, min/max size = the image size) so the model sees exactly the tensors
    the reference's detectors see. Names torchvision lacks raise NotImplementedError.
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
