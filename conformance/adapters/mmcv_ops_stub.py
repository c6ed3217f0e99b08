"""Stand-ins for the compiled kernels of ``mmcv._ext``, so that mmdet 3.x imports
and runs over mmcv-lite (which ships mmcv's Python sources without ``_ext``).

``install()`` registers a module ``mmcv._ext`` before mmcv.ops is imported. Its
``nms``, ``roi_align_forward`` and ``roi_align_backward`` call torchvision's
kernels with mmcv's calling convention; every other kernel raises
``NotImplementedError`` when called (importing the Python wrappers only checks
that the names exist). Everything above the kernels is mmcv's own code: its
``nms`` and ``batched_nms`` wrappers (score filter, coordinate-offset trick,
``split_thr``), ``RoIAlign`` and its argument handling.

Kernel contracts mapped (mmcv 2.1 ``mmcv/ops/csrc/pytorch/nms.cpp`` and
``roi_align.cpp``, called from ``mmcv/ops/nms.py`` and ``mmcv/ops/roi_align.py``):

- ``nms(boxes, scores, iou_threshold, offset)``: greedy NMS suppressing IoU >
  threshold, boxes ``x2 - x1 + offset`` wide; torchvision's kernel is the
  ``offset=0`` case (the only one mmdet 3.x uses).
  mmcv's CPU kernel reads float32 only (``cpu/nms.cpp:23-27``, ``data_ptr<float>``);
  torchvision's also takes float64, so float64 boxes run here where mmcv's would raise.
- ``roi_align_forward(input, rois, output, argmax_y, argmax_x, aligned_height,
  aligned_width, spatial_scale, sampling_ratio, pool_mode, aligned)`` writes into
  ``output``; ``pool_mode=1`` (average, mmdet's) is torchvision's roi_align
  (sampling_ratio 0 = adaptive in both).
"""

from __future__ import annotations

import sys
import types

import torch
import torchvision

from conformance.adapters.torchvision_kernels import refuse_crashing_roi_align

STUB_NOTE = (
    "mmcv-lite has no compiled mmcv._ext: its nms / roi_align kernels are torchvision "
    f"{torchvision.__version__}'s (conformance/adapters/mmcv_ops_stub.py); mmcv's and "
    "mmdet's Python code above them runs unchanged"
)


def _nms(boxes, scores, iou_threshold, offset=0):
    if int(offset) != 0:
        raise NotImplementedError("mmcv nms with offset=1 has no torchvision kernel")
    return torchvision.ops.nms(boxes, scores, float(iou_threshold))


def _roi_align_forward(input, rois, output, argmax_y, argmax_x, aligned_height,
                       aligned_width, spatial_scale, sampling_ratio, pool_mode, aligned):
    if int(pool_mode) != 1:
        raise NotImplementedError("mmcv roi_align pool_mode='max' has no torchvision kernel")
    refuse_crashing_roi_align("mmcv.ops.roi_align (torchvision's kernel behind the stub)", input,
                              (int(aligned_height), int(aligned_width)), spatial_scale)
    out = torchvision.ops.roi_align(
        input, rois, (int(aligned_height), int(aligned_width)),
        spatial_scale=float(spatial_scale), sampling_ratio=int(sampling_ratio),
        aligned=bool(aligned))
    output.copy_(out)


def _roi_align_backward(grad_output, rois, argmax_y, argmax_x, grad_input, aligned_height,
                        aligned_width, spatial_scale, sampling_ratio, pool_mode, aligned):
    if int(pool_mode) != 1:
        raise NotImplementedError("mmcv roi_align pool_mode='max' has no torchvision kernel")
    n, c, h, w = grad_input.shape
    grad = torch.ops.torchvision._roi_align_backward(
        grad_output, rois, float(spatial_scale), int(aligned_height), int(aligned_width),
        n, c, h, w, int(sampling_ratio), bool(aligned))
    grad_input.copy_(grad)


_KERNELS = {
    "nms": _nms,
    "roi_align_forward": _roi_align_forward,
    "roi_align_backward": _roi_align_backward,
}


class _FakeExt(types.ModuleType):
    """``mmcv._ext`` with three kernels mapped and the rest raising when called."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def missing(*args, **kwargs):
            raise NotImplementedError(
                f"mmcv._ext.{name}: compiled mmcv op not available under mmcv-lite "
                "(only nms and roi_align are mapped to torchvision)")

        missing.__name__ = name
        return missing


def install() -> None:
    """Register the fake ``mmcv._ext`` (idempotent); a real one is left alone."""
    if "mmcv._ext" in sys.modules:
        return
    try:  # a full mmcv with compiled ops: nothing to stub
        import mmcv._ext  # noqa: F401
        return
    except ImportError:
        pass
    ext = _FakeExt("mmcv._ext", __doc__)
    for name, fn in _KERNELS.items():
        setattr(ext, name, fn)
    ext.__file__ = __file__
    sys.modules["mmcv._ext"] = ext
    import mmcv
    mmcv._ext = ext


def is_stubbed() -> bool:
    return isinstance(sys.modules.get("mmcv._ext"), _FakeExt)
