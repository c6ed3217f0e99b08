"""Golden cases for the losses (SPEC.md, Losses: LOSS-28, LOSS-29).

Both cases build fixed inputs from a seeded CPU generator (so every device sees
the same numbers), compute the losses per FPN level as the heads do, and store
scalar summaries: per-level losses, totals and the normalisers.

- RetinaNet, mmdet 2.x at 800x1216 (the RetinaNet seed's shapes): levels of
  136800, 34200, 8550, 2223 and 630 anchors (182403 in all), 80 classes, one
  image. Focal loss (alpha 0.25, gamma 2) over every anchor with label weight 1,
  L1 on the deltas of the positives, both divided by ``num_total_pos``.
- RTMDet, mmdet 3.x at 640x640: 80x80, 40x40, 20x20 points (8400), 80 classes.
  QFL (beta 2) with the IoU of each positive as its quality and GIoU (loss_weight
  2) weighted by the same metric, each summed per level with avg_factor 1 and
  then divided by the clamped sum of metrics (the RTMDet seed's last step).
"""

from __future__ import annotations

import numpy as np
import torch

from golden.case import GoldenCase
from golden.inputs import RETINANET_ANCHORS_PER_LEVEL, level_slices

RETINANET_LEVELS = RETINANET_ANCHORS_PER_LEVEL  # 9 anchors x (100x152, 50x76, ...)
RTMDET_LEVELS = (6400, 1600, 400)  # 80x80, 40x40, 20x20 points
NUM_CLASSES = 80
F32_EPS = float(np.finfo(np.float32).eps)


# --------------------------------------------------------------------------- RetinaNet
def _retinanet_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(20240611)
    num_anchors = sum(RETINANET_LEVELS)  # 182403
    # Logits around the prior bias -log((1 - 0.01) / 0.01) = -4.595 of RetinaNet's head.
    logits = torch.randn(num_anchors, NUM_CLASSES, generator=g) - 4.595  # (A, C)
    labels = torch.full((num_anchors,), NUM_CLASSES, dtype=torch.int64)  # all background
    order = torch.randperm(num_anchors, generator=g)
    pos = order[:187]  # positives, spread over every level
    ignored = order[187:5187]  # IoU in [0.4, 0.5) or outside the image: weight 0
    labels[pos] = torch.randint(0, NUM_CLASSES, (len(pos),), generator=g)
    label_weights = torch.ones(num_anchors)
    label_weights[ignored] = 0.0
    deltas = torch.randn(num_anchors, 4, generator=g) * 0.5  # (A, 4) predicted deltas
    delta_targets = torch.zeros(num_anchors, 4)
    delta_targets[pos] = torch.randn(len(pos), 4, generator=g) * 0.5
    delta_weights = torch.zeros(num_anchors, 4)
    delta_weights[pos] = 1.0
    return dict(logits=logits, labels=labels, label_weights=label_weights, deltas=deltas,
                delta_targets=delta_targets, delta_weights=delta_weights, num_pos=len(pos))


def _retinanet_run(impl, device) -> dict:
    x = _retinanet_inputs()
    avg_factor = impl.retinanet_num_total_pos([x["num_pos"]])
    cls_losses, box_losses = [], []
    for _, rows in level_slices(RETINANET_LEVELS):
        cls_losses.append(impl.sigmoid_focal_loss(
            x["logits"][rows].to(device), x["labels"][rows].to(device),
            x["label_weights"][rows].to(device), gamma=2.0, alpha=0.25, reduction="mean",
            avg_factor=avg_factor))
        box_losses.append(impl.l1_loss(
            x["deltas"][rows].to(device), x["delta_targets"][rows].to(device),
            x["delta_weights"][rows].to(device), reduction="mean", avg_factor=avg_factor))
    cls = torch.stack([c.detach().float().cpu() for c in cls_losses])  # (5,)
    box = torch.stack([b.detach().float().cpu() for b in box_losses])  # (5,)
    return {
        "num_total_pos": np.array([avg_factor], dtype=np.int64),
        "loss_cls_per_level": cls,
        "loss_bbox_per_level": box,
        "loss_cls": cls.sum().reshape(1),
        "loss_bbox": box.sum().reshape(1),
    }


def _retinanet_cross_check(out) -> None:
    """torchvision.ops.sigmoid_focal_loss on one-hot targets, and NumPy L1, per level."""
    from torchvision.ops import sigmoid_focal_loss

    x = _retinanet_inputs()
    assert int(out["num_total_pos"][0]) == x["num_pos"] == 187  # one image, max(187, 1)
    denom = x["num_pos"] + F32_EPS
    for level, rows in level_slices(RETINANET_LEVELS):
        one_hot = torch.nn.functional.one_hot(x["labels"][rows], NUM_CLASSES + 1)[:, :-1]
        focal = sigmoid_focal_loss(x["logits"][rows].double(), one_hot.double(),
                                   alpha=0.25, gamma=2.0, reduction="none")
        expected_cls = float((focal * x["label_weights"][rows, None].double()).sum()) / denom
        np.testing.assert_allclose(out["loss_cls_per_level"][level], expected_cls, rtol=1e-5)
        l1 = np.abs(x["deltas"][rows].double().numpy() - x["delta_targets"][rows].double().numpy())
        expected_box = float((l1 * x["delta_weights"][rows].double().numpy()).sum()) / denom
        np.testing.assert_allclose(out["loss_bbox_per_level"][level], expected_box,
                                   rtol=1e-5, atol=1e-7)
    assert out["loss_cls"][0] > 0 and out["loss_bbox"][0] > 0


# --------------------------------------------------------------------------- RTMDet
def _rtmdet_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(20240612)
    num_points = sum(RTMDET_LEVELS)  # 8400
    logits = torch.randn(num_points, NUM_CLASSES, generator=g) * 1.5 - 4.595  # (P, C)
    labels = torch.full((num_points,), NUM_CLASSES, dtype=torch.int64)
    pos = torch.randperm(num_points, generator=g)[:96]
    labels[pos] = torch.randint(0, NUM_CLASSES, (len(pos),), generator=g)
    # Assign metric = IoU of the positive's decoded box with its gt, 0 elsewhere.
    metrics = torch.zeros(num_points)
    metrics[pos] = torch.rand(len(pos), generator=g) * 0.85 + 0.1
    label_weights = torch.ones(num_points)  # RTMDet weighs every valid point 1
    # Decoded boxes (P, 4) xyxy in a 640x640 image; targets near them at positives.
    xy = torch.rand(num_points, 2, generator=g) * 560
    wh = torch.rand(num_points, 2, generator=g) * 120 + 4
    boxes = torch.cat([xy, xy + wh], dim=1)  # (P, 4)
    targets = torch.zeros(num_points, 4)
    targets[pos] = boxes[pos] + torch.randn(len(pos), 4, generator=g) * 6
    targets[pos, 2:] = torch.maximum(targets[pos, 2:], targets[pos, :2] + 1)
    return dict(logits=logits, labels=labels, metrics=metrics, label_weights=label_weights,
                boxes=boxes, targets=targets)


def _rtmdet_run(impl, device) -> dict:
    x = _rtmdet_inputs()
    cls_losses, box_losses, box_metric_sums = [], [], []
    for _, rows in level_slices(RTMDET_LEVELS):
        labels, metrics = x["labels"][rows], x["metrics"][rows]
        cls_losses.append(impl.quality_focal_loss(
            x["logits"][rows].to(device), (labels.to(device), metrics.to(device)),
            x["label_weights"][rows].to(device), beta=2.0, reduction="mean", avg_factor=1.0))
        pos = labels < NUM_CLASSES
        box_losses.append(impl.giou_loss(
            x["boxes"][rows][pos].to(device), x["targets"][rows][pos].to(device),
            metrics[pos].to(device), reduction="mean", avg_factor=1.0, flavour="mmdet",
            loss_weight=2.0))
        box_metric_sums.append(metrics[pos])
    cls_avg = impl.rtmdet_avg_factor(x["metrics"])
    box_avg = impl.rtmdet_avg_factor(box_metric_sums)
    cls = torch.stack([c.detach().float().cpu() for c in cls_losses]) / cls_avg  # (3,)
    box = torch.stack([b.detach().float().cpu() for b in box_losses]) / box_avg  # (3,)
    return {
        "cls_avg_factor": np.array([cls_avg]),
        "bbox_avg_factor": np.array([box_avg]),
        "loss_cls_per_level": cls,
        "loss_bbox_per_level": box,
        "loss_cls": cls.sum().reshape(1),
        "loss_bbox": box.sum().reshape(1),
    }


def _rtmdet_cross_check(out) -> None:
    """The loop-based NumPy oracles (QFL steps and GIoU with mmdet's eps), per level."""
    from oracles import losses as oracle

    x = _rtmdet_inputs()
    metric_sum = float(x["metrics"].double().sum())
    assert metric_sum > 1
    np.testing.assert_allclose(out["cls_avg_factor"][0], metric_sum, rtol=1e-6)
    np.testing.assert_allclose(out["bbox_avg_factor"][0], metric_sum, rtol=1e-6)
    for level, rows in level_slices(RTMDET_LEVELS):
        logits = x["logits"][rows].double().numpy()
        labels = x["labels"][rows].numpy()
        metrics = x["metrics"][rows].double().numpy()
        qfl = oracle.qfl_rows(logits, labels, metrics, beta=2.0)
        expected_cls = qfl.sum() / (1.0 + F32_EPS) / metric_sum
        np.testing.assert_allclose(out["loss_cls_per_level"][level], expected_cls, rtol=1e-5)
        pos = labels < NUM_CLASSES
        giou = oracle.giou_loss_rows(x["boxes"][rows].double().numpy()[pos],
                                     x["targets"][rows].double().numpy()[pos], eps=1e-6)
        expected_box = 2.0 * (giou * metrics[pos]).sum() / (1.0 + F32_EPS) / metric_sum
        np.testing.assert_allclose(out["loss_bbox_per_level"][level], expected_box, rtol=1e-5)


CASES = [
    GoldenCase(
        name="losses_retinanet_800x1216",
        component="losses",
        clause="LOSS-28",
        producer="sigmoid_focal_loss + l1_loss / retinanet_num_total_pos",
        flavour="mmdet",
        inputs={
            "image": [800, 1216],
            "anchors_per_level": list(RETINANET_LEVELS),
            "num_classes": NUM_CLASSES,
            "num_pos": 187,
            "num_ignored": 5000,
            "generator_seed": 20240611,
            "focal": {"alpha": 0.25, "gamma": 2.0},
        },
        run=_retinanet_run,
        cross_checked="torchvision.ops.sigmoid_focal_loss (float64, one-hot targets) and a "
        "NumPy L1, divided by num_pos + float32 eps, per level",
        cross_check=_retinanet_cross_check,
        exact=("num_total_pos",),
        rtol=1e-5,
        atol=1e-6,
    ),
    GoldenCase(
        name="losses_rtmdet_640x640",
        component="losses",
        clause="LOSS-29",
        producer="quality_focal_loss + giou_loss(loss_weight=2) / rtmdet_avg_factor",
        flavour="mmdet",
        inputs={
            "image": [640, 640],
            "points_per_level": list(RTMDET_LEVELS),
            "num_classes": NUM_CLASSES,
            "num_pos": 96,
            "generator_seed": 20240612,
            "qfl_beta": 2.0,
            "giou": {"eps": 1e-6, "loss_weight": 2.0},
        },
        run=_rtmdet_run,
        cross_checked="the loop-based float64 NumPy oracles of oracles/losses.py "
        "(mmdet's QFL steps, GIoU with eps 1e-6 clamped), avg_factor 1 + float32 eps, "
        "divided by the summed assign metrics",
        cross_check=_rtmdet_cross_check,
        rtol=1e-5,
        atol=1e-6,
    ),
]
