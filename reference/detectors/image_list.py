"""Batching images of different sizes: ``ImageList``.

A detector's backbone needs one (N, C, H, W) tensor, but images differ in size.
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

import torch
import torch.nn.functional as F

__all__ = ["ImageList"]


@dataclasses.dataclass
class ImageList:
    """A padded batch and the true size of each image in it.

    tensor: (N, C, H_pad, W_pad) float; image i occupies ``[:, :h_i, :w_i]``.
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
        sizes = [(int(img.shape[1]), int(img.shape[2])) for img in images]
        max_h = max(h for h, _ in sizes)
        max_w = max(w for _, w in sizes)
        if size_divisibility > 0:
            max_h = int(math.ceil(max_h / size_divisibility) * size_divisibility)
            max_w = int(math.ceil(max_w / size_divisibility) * size_divisibility)
        batch = torch.stack([
            F.pad(img, (0, max_w - img.shape[2], 0, max_h - img.shape[1]), value=pad_value)
            for img in images])  # (N, C, max_h, max_w)
        return ImageList(batch, sizes)
