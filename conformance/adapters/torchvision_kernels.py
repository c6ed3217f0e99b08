"""Guards shared by the adapters whose upstream ends in torchvision's native kernels.

torchvision's compiled RoIAlign does not raise on some malformed inputs: it kills
the process (a segfault after "Exception across libtorch C API boundary"), which
would end a conformance run instead of failing one test. The torchvision adapter
calls ``torchvision.ops.roi_align`` directly and detectron2's ``layers.ROIAlign``
calls it underneath (detectron2 main 02b5c4e, ``detectron2/layers/roi_align.py``),
so both ask :func:`refuse_crashing_roi_align` first: such an input is reported as
not implemented (``NotImplementedError``), never run.
"""

from __future__ import annotations

import torch


def roi_align_would_crash(input, output_size, spatial_scale) -> bool:
    """Whether torchvision's native RoIAlign would kill the process on these arguments:
    a non-4-D input, a non-positive output size, or a NaN spatial scale."""
    if isinstance(input, torch.Tensor) and input.dim() != 4:
        return True
    if isinstance(spatial_scale, float) and not spatial_scale == spatial_scale:  # NaN
        return True
    sizes = output_size if isinstance(output_size, (tuple, list)) else (output_size,)
    return any(isinstance(v, (int, float)) and not isinstance(v, bool) and v <= 0 for v in sizes)


def refuse_crashing_roi_align(caller: str, input, output_size, spatial_scale) -> None:
    """Raise ``NotImplementedError`` naming ``caller`` when :func:`roi_align_would_crash`."""
    if roi_align_would_crash(input, output_size, spatial_scale):
        raise NotImplementedError(
            f"{caller} crashes the process on this input (torchvision's native RoIAlign "
            "kernel: non-4-D input, a non-positive output size, NaN spatial_scale)")
