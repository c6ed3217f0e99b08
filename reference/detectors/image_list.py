"""The detector boundary: input checks, then batching images of different sizes.

``check_images_and_targets`` validates the calling convention once (MOD-10);
``check_finite`` stops training on the first non-finite prediction (MOD-11);
``pad_size`` is one image's own padded size (mmdet's ``pad_shape``).

A detector's backbone needs one (B, C, H, W) tensor, but images differ in size.
``ImageList.from_tensors`` pads every image at its bottom and right edge (zeros)
to the largest height and width in the batch, rounded up to a multiple of
``size_divisibility`` (32 for FPN models, so every level's map is an exact
halving), and remembers each image's own (h, w). Boxes stay in the pixel frame
of their image: padding only ever adds pixels after the last row and column.

Example from the detectron2 seed: an 800x800 image and an 800x1216 image with
size_divisibility 32 give a (2, 3, 800, 1216) batch with image_sizes
[(800, 800), (800, 1216)].
"""

from __future__ import annotations

import dataclasses
import math

from typing import Sequence

import torch
import torch.nn.functional as F

from reference import validate as check

__all__ = ["ImageList", "check_images_and_targets", "check_finite", "pad_size"]


@dataclasses.dataclass
class ImageList:
    """A padded batch and the true size of each image in it.

    tensor: (B, C, H_pad, W_pad) float; image i occupies ``[:, :h_i, :w_i]``.
    image_sizes: list of N (h_i, w_i) int pairs.
    """

    tensor: torch.Tensor
    image_sizes: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.image_sizes)

    def __getitem__(self, i: int) -> torch.Tensor:
        """Image i without its padding, (C, h_i, w_i)."""
        h, w = self.image_sizes[i]
        return self.tensor[i, :, :h, :w]

    @property
    def padded_size(self) -> tuple[int, int]:
        return int(self.tensor.shape[-2]), int(self.tensor.shape[-1])

    @staticmethod
    def from_tensors(images: list[torch.Tensor], size_divisibility: int = 0,
                     pad_value: float = 0.0) -> "ImageList":
        """Pad a list of (C, h_i, w_i) float images into one batch.

        Args:
            images: non-empty list of 3-D float tensors with the same C, dtype and
                device.
            size_divisibility: when > 0, the batch height and width are rounded up
                to a multiple of it.
            pad_value: value of the padded pixels (0: the normalised mean colour).

        Raises ValueError (naming ``images``) for an empty list, a tensor that is
        not (C, H, W), mixed channel counts, dtypes or devices, an empty image, or
        a non-float image.
        """
        if not isinstance(images, (list, tuple)) or len(images) == 0:
            raise ValueError(f"images: expected a non-empty list of (C, H, W) tensors, got {images!r:.80}")
        first = images[0]
        for i, img in enumerate(images):
            if not isinstance(img, torch.Tensor):
                raise TypeError(f"images[{i}]: expected a torch.Tensor, got {type(img).__name__}")
            if img.dim() != 3:
                raise ValueError(f"images[{i}]: expected shape (C, H, W), got {tuple(img.shape)}")
            if not img.is_floating_point():
                raise ValueError(f"images[{i}]: expected a float (normalised) image, got {img.dtype}")
            if img.shape[0] != first.shape[0] or img.dtype != first.dtype or img.device != first.device:
                raise ValueError(
                    f"images[{i}]: channels/dtype/device {img.shape[0]}/{img.dtype}/{img.device} "
                    f"differ from images[0] {first.shape[0]}/{first.dtype}/{first.device}")
            if img.shape[1] == 0 or img.shape[2] == 0:
                raise ValueError(f"images[{i}]: empty image of shape {tuple(img.shape)}")
        size_divisibility = check.integer("size_divisibility", size_divisibility, low=0)
        pad_value = check.number("pad_value", pad_value)
        sizes = [(int(img.shape[1]), int(img.shape[2])) for img in images]
        max_h = max(h for h, _ in sizes)
        max_w = max(w for _, w in sizes)
        if size_divisibility > 0:
            max_h = int(math.ceil(max_h / size_divisibility) * size_divisibility)
            max_w = int(math.ceil(max_w / size_divisibility) * size_divisibility)
        batch = torch.stack([
            F.pad(img, (0, max_w - img.shape[2], 0, max_h - img.shape[1]), value=pad_value)
            for img in images])  # (B, C, max_h, max_w)
        return ImageList(batch, sizes)


def pad_size(size: tuple[int, int], divisor: int) -> tuple[int, int]:
    """(h, w) rounded up to a multiple of ``divisor`` (mmdet's per-image pad_shape)."""
    if divisor <= 0:
        return size
    return (int(math.ceil(size[0] / divisor) * divisor), int(math.ceil(size[1] / divisor) * divisor))


def check_images_and_targets(images, targets, num_classes: int, training: bool) -> None:
    """Validate the detector calling convention once, at the public boundary (MOD-10).

    images: non-empty list of (3, H, W) float tensors. targets (training only):
    a list of the same length of dicts with "boxes" (n, 4) float xyxy, finite, with
    x2 > x1 and y2 > y1 (a zero-width or zero-height box has no regression target:
    its log-size delta is infinite; torchvision rejects it too, and the COCO loader
    drops such boxes with a count before they get here), and "labels" (n,) int64 in
    [0, num_classes). Raises ValueError/TypeError naming the offending argument.
    """
    if not isinstance(images, (list, tuple)) or len(images) == 0:
        raise ValueError(f"images: expected a non-empty list of (C, H, W) tensors, got {type(images).__name__}")
    for i, img in enumerate(images):
        if not isinstance(img, torch.Tensor):
            raise TypeError(f"images[{i}]: expected a torch.Tensor, got {type(img).__name__}")
        if img.dim() != 3 or img.shape[0] != 3:
            raise ValueError(f"images[{i}]: expected shape (3, H, W), got {tuple(img.shape)}")
    if not training:
        return
    if targets is None:
        raise ValueError("targets: required in training mode (a list of dicts with boxes, labels)")
    if not isinstance(targets, (list, tuple)) or len(targets) != len(images):
        raise ValueError(f"targets: expected a list of {len(images)} dicts, got "
                         f"{type(targets).__name__} of length {len(targets) if hasattr(targets, '__len__') else '?'}")
    for i, t in enumerate(targets):
        if not isinstance(t, dict) or "boxes" not in t or "labels" not in t:
            raise ValueError(f"targets[{i}]: expected a dict with 'boxes' and 'labels'")
        boxes, labels = t["boxes"], t["labels"]
        if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[-1] != 4:
            raise ValueError(f"targets[{i}]['boxes']: expected a (n, 4) tensor, got "
                             f"{tuple(getattr(boxes, 'shape', ()))}")
        if not boxes.is_floating_point():
            raise ValueError(f"targets[{i}]['boxes']: expected a float tensor, got {boxes.dtype}")
        if not bool(torch.isfinite(boxes).all()):
            raise ValueError(f"targets[{i}]['boxes']: contain NaN or Inf")
        flat = (boxes[:, 2:] <= boxes[:, :2]).any(dim=1)  # (n,)
        if bool(flat.any()):
            j = int(flat.nonzero()[0])
            raise ValueError(f"targets[{i}]['boxes']: {int(flat.sum())} box(es) with zero or "
                             f"negative width or height, first row {j} = {boxes[j].tolist()}; "
                             "expected xyxy with x2 > x1 and y2 > y1 (drop degenerate boxes "
                             "before training, as the COCO loader does)")
        if not isinstance(labels, torch.Tensor) or labels.shape != (boxes.shape[0],):
            raise ValueError(f"targets[{i}]['labels']: expected shape ({boxes.shape[0]},), got "
                             f"{tuple(getattr(labels, 'shape', ()))}")
        if labels.dtype != torch.int64:
            raise ValueError(f"targets[{i}]['labels']: expected int64, got {labels.dtype}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(f"targets[{i}]['labels']: expected values in [0, {num_classes}), got "
                             f"[{int(labels.min())}, {int(labels.max())}]")
        if boxes.device != images[i].device:
            raise ValueError(f"targets[{i}]['boxes']: on {boxes.device}, images[{i}] on {images[i].device}")


def check_finite(stage: str, tensors: Sequence[torch.Tensor]) -> None:
    """Raise FloatingPointError naming ``stage`` if any prediction is NaN or Inf (MOD-11).

    Called in training only: a diverged model should stop with the stage that
    produced the first bad value, not with a silent NaN loss.
    """
    for t in tensors:
        if not bool(torch.isfinite(t).all()):
            raise FloatingPointError(f"{stage}: non-finite predictions during training "
                                     f"(tensor of shape {tuple(t.shape)}); training has diverged")
