"""Live mmdetection 3.x models for the end-to-end equivalence tests (MOD-24..MOD-26).

mmdet is an optional dependency: ``require_mmdet()`` skips the calling test with a
clear message when mmdet, mmengine or mmcv are not importable. mmcv-lite ships no
compiled ``mmcv._ext``; before mmdet is imported, ``conformance.adapters.mmcv_ops_stub``
(the ``--impl=mmdet`` adapter's stub) registers one whose nms and roi_align kernels
are torchvision's (the only compiled ops the three detectors call).

Models are built from mmdet's own config files (``mmdet/.mim/configs``, found inside
the installed package) with only these edits: ``num_classes``; ``init_cfg=None`` on
the backbone, so that mmdet's random initialisation runs and nothing is downloaded;
plain ``BN`` for RTMDet's ``SyncBN`` (identical outside distributed training); and
the per-test ``test_cfg``/``train_cfg`` edits each test states.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from conformance.adapters import mmcv_ops_stub

CONFIGS = {
    "retinanet_r50_fpn": "retinanet/retinanet_r50_fpn_1x_coco.py",
    "faster_rcnn_r50_fpn": "faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py",
    "rtmdet_tiny": "rtmdet/rtmdet_tiny_8xb32-300e_coco.py",
}


# --------------------------------------------------------------------------- mmcv._ext
def _install_ext() -> None:
    """mmcv-lite's missing ``mmcv._ext``: the adapter's stand-in (one stub for the
    adapter and these tests, ``conformance/adapters/mmcv_ops_stub.py``)."""
    mmcv_ops_stub.install()


def require_mmdet():
    """Import mmdet 3.x (with the mmcv._ext stand-in) or skip with the reason."""
    try:
        import mmcv  # noqa: F401
        _install_ext()
        import mmdet
        import mmengine  # noqa: F401
        from mmdet.utils import register_all_modules
    except ImportError as exc:
        pytest.skip(f"mmdet end-to-end tests need mmdet 3.x, mmengine and mmcv(-lite) "
                    f"importable ({exc}); see README, 'Checking an implementation'")
    if not mmdet.__version__.startswith("3."):
        pytest.skip(f"mmdet end-to-end tests need mmdet 3.x, found {mmdet.__version__}")
    register_all_modules()
    return mmdet


def config_path(name: str) -> Path:
    import mmdet
    return Path(mmdet.__file__).parent / ".mim" / "configs" / CONFIGS[name]


def _replace_type(cfg, old: str, new: str):
    """Every ``type=old`` dict inside cfg (nested dicts and lists) becomes ``type=new``."""
    if isinstance(cfg, dict):
        if cfg.get("type") == old:
            cfg["type"] = new
        for v in cfg.values():
            _replace_type(v, old, new)
    elif isinstance(cfg, (list, tuple)):
        for v in cfg:
            _replace_type(v, old, new)


def build_mmdet(name: str, num_classes: int, test_cfg: dict | None = None,
                train_cfg: dict | None = None, seed: int = 0):
    """A randomly initialised mmdet 3.x model of config ``name`` (mmdet's own init)."""
    require_mmdet()
    from mmengine.config import Config
    from mmdet.registry import MODELS

    cfg = Config.fromfile(str(config_path(name)))
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.init_cfg = None
    if "bbox_head" in model_cfg:
        model_cfg.bbox_head.num_classes = num_classes
    if "roi_head" in model_cfg:
        model_cfg.roi_head.bbox_head.num_classes = num_classes
    _replace_type(model_cfg, "SyncBN", "BN")
    for key, edits in (("test_cfg", test_cfg), ("train_cfg", train_cfg)):
        for path, value in (edits or {}).items():
            node = model_cfg[key]
            *parents, leaf = path.split(".")
            for p in parents:
                node = node[p]
            node[leaf] = value
    torch.manual_seed(seed)
    model = MODELS.build(model_cfg)
    model.init_weights()
    return model


def data_samples(images: list[torch.Tensor], batch_shape, targets=None):
    """mmdet DetDataSamples for unresized, unflipped images padded at bottom/right."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    samples = []
    for i, img in enumerate(images):
        h, w = int(img.shape[-2]), int(img.shape[-1])
        s = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                                        batch_input_shape=tuple(batch_shape),
                                        scale_factor=(1.0, 1.0), flip=False))
        if targets is not None:
            s.gt_instances = InstanceData(bboxes=targets[i]["boxes"].clone(),
                                          labels=targets[i]["labels"].clone())
        samples.append(s)
    return samples
