"""A full training step (forward + backward + optimizer) of each detector.

Batch 2 at the seed resolution (800x1216) on a GPU; a reduced size on the CPU.
The reference's torchvision-flavour RetinaNet and Faster R-CNN run beside
torchvision's own retinanet_resnet50_fpn / fasterrcnn_resnet50_fpn on the same
batch (random weights, same number of classes).
"""

import pytest
import torch

from bench import workloads as W


def _batch(device, size):
    h, w = size
    g = torch.Generator().manual_seed(0)
    images = [torch.randn(3, h, w, generator=g).to(device) for _ in range(2)]
    targets = []
    for i in range(2):
        boxes = W.random_gts(8, device, height=h, width=w, seed=i)
        boxes = torch.minimum(boxes, torch.tensor([w, h, w, h], device=device, dtype=torch.float32))
        targets.append({"boxes": boxes, "labels": (torch.arange(8) % 90 + 1).to(device)})
    return images, targets


def _size(device):
    return (800, 1216) if device.type == "cuda" else (320, 480)


@pytest.mark.parametrize("detector", ["retinanet_r50_fpn", "faster_rcnn_r50_fpn", "rtmdet_tiny"])
def test_training_step(bench_case, bench_device, detector):
    size = _size(bench_device)
    images, targets = _batch(bench_device, size)

    def make(m):
        torch.manual_seed(0)
        if m.bench_name == "torchvision":
            model = W.torchvision_detector(detector, num_classes=91, image_size=size)
        else:
            build_detector = m.build_detector  # a port without it skips this workload
            if detector == "rtmdet_tiny":
                model = build_detector(detector, num_classes=91)
            else:
                model = build_detector(detector, num_classes=91, flavour="torchvision")
        model.to(bench_device).train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

        def step():
            losses = model(images, targets)
            total = sum(losses.values())
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            return total.detach()
        return step
    bench_case(f"train step {detector} 2x{size[0]}x{size[1]}", make, rounds=3)
