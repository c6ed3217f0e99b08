"""The reference's upstream configurations, field group by field group (SPEC MOD-23).

``UPSTREAM`` states what mmdet 3.3's config files set, one entry per field group;
each test checks the reference model against it and, where the upstream sources are
on this machine (``/work/upstream`` or ``$DETSPEC_UPSTREAM``), checks the entry
against the config file itself (``model = dict(...)``, ``_base_`` chains merged),
so a wrong transcription fails too. Files:
  configs/_base_/models/retinanet_r50_fpn.py, configs/_base_/models/faster-rcnn_r50_fpn.py,
  configs/rtmdet/rtmdet_l_8xb32-300e_coco.py <- rtmdet_s_... <- rtmdet_tiny_....
"""

from __future__ import annotations

import ast
import math
import os
from pathlib import Path

import pytest
import torch

from reference.assignment import MaxIoUAssigner
from reference.detectors import build_detector
from reference.sampling import RandomSampler

_ROOT = Path(os.environ.get("DETSPEC_UPSTREAM", "/work/upstream")) / \
    "src/mmdet-3.3.0-py3-none-any/mmdet/.mim/configs"
_FILES = {
    "retinanet_r50_fpn": ["_base_/models/retinanet_r50_fpn.py"],
    "faster_rcnn_r50_fpn": ["_base_/models/faster-rcnn_r50_fpn.py"],
    "rtmdet_s": ["rtmdet/rtmdet_l_8xb32-300e_coco.py", "rtmdet/rtmdet_s_8xb32-300e_coco.py"],
    "rtmdet_tiny": ["rtmdet/rtmdet_l_8xb32-300e_coco.py", "rtmdet/rtmdet_s_8xb32-300e_coco.py",
                    "rtmdet/rtmdet_tiny_8xb32-300e_coco.py"],
}

# What the upstream files set (mmdet 3.3.0), by field group; key paths into ``model``.
UPSTREAM = {
    "retinanet_r50_fpn": {
        "norms": {"backbone.norm_cfg.type": "BN", "backbone.norm_eval": True},
        "frozen": {"backbone.frozen_stages": 1},
        "anchors": {"bbox_head.anchor_generator.octave_base_scale": 4,
                    "bbox_head.anchor_generator.scales_per_octave": 3,
                    "bbox_head.anchor_generator.ratios": [0.5, 1.0, 2.0],
                    "bbox_head.anchor_generator.strides": [8, 16, 32, 64, 128]},
        "train": {"train_cfg.assigner.pos_iou_thr": 0.5, "train_cfg.assigner.neg_iou_thr": 0.4,
                  "train_cfg.assigner.min_pos_iou": 0, "train_cfg.allowed_border": -1},
        "test": {"test_cfg.nms_pre": 1000, "test_cfg.score_thr": 0.05,
                 "test_cfg.nms.iou_threshold": 0.5, "test_cfg.max_per_img": 100},
    },
    "faster_rcnn_r50_fpn": {
        "norms": {"backbone.norm_cfg.type": "BN", "backbone.norm_eval": True},
        "frozen": {"backbone.frozen_stages": 1},
        "anchors": {"rpn_head.anchor_generator.scales": [8],
                    "rpn_head.anchor_generator.strides": [4, 8, 16, 32, 64]},
        "train": {"train_cfg.rpn.assigner.pos_iou_thr": 0.7, "train_cfg.rpn.assigner.neg_iou_thr": 0.3,
                  "train_cfg.rpn.assigner.min_pos_iou": 0.3, "train_cfg.rpn.sampler.num": 256,
                  "train_cfg.rpn.sampler.pos_fraction": 0.5,
                  "train_cfg.rpn.sampler.add_gt_as_proposals": False,
                  "train_cfg.rpn_proposal.nms_pre": 2000, "train_cfg.rpn_proposal.max_per_img": 1000,
                  "train_cfg.rcnn.assigner.pos_iou_thr": 0.5, "train_cfg.rcnn.assigner.min_pos_iou": 0.5,
                  "train_cfg.rcnn.assigner.match_low_quality": False,
                  "train_cfg.rcnn.sampler.num": 512, "train_cfg.rcnn.sampler.pos_fraction": 0.25,
                  "train_cfg.rcnn.sampler.add_gt_as_proposals": True},
        "test": {"test_cfg.rpn.nms_pre": 1000, "test_cfg.rpn.max_per_img": 1000,
                 "test_cfg.rpn.nms.iou_threshold": 0.7, "test_cfg.rcnn.score_thr": 0.05,
                 "test_cfg.rcnn.nms.iou_threshold": 0.5, "test_cfg.rcnn.max_per_img": 100,
                 "roi_head.bbox_head.bbox_coder.target_stds": [0.1, 0.1, 0.2, 0.2],
                 "roi_head.bbox_roi_extractor.roi_layer.sampling_ratio": 0},
    },
}
for _name, (_deepen, _widen, _ch) in {"rtmdet_s": (0.33, 0.5, 128),
                                      "rtmdet_tiny": (0.167, 0.375, 96)}.items():
    UPSTREAM[_name] = {
        "norms": {"backbone.norm_cfg.type": "SyncBN", "neck.norm_cfg.type": "SyncBN",
                  "bbox_head.norm_cfg.type": "SyncBN"},
        "sizes": {"backbone.deepen_factor": _deepen, "backbone.widen_factor": _widen,
                  "neck.out_channels": _ch, "bbox_head.feat_channels": _ch,
                  "bbox_head.exp_on_reg": False},
        "anchors": {"bbox_head.anchor_generator.offset": 0,
                    "bbox_head.anchor_generator.strides": [8, 16, 32]},
        "train": {"train_cfg.assigner.topk": 13, "bbox_head.loss_bbox.loss_weight": 2.0},
        "test": {"test_cfg.nms_pre": 30000, "test_cfg.score_thr": 0.001,
                 "test_cfg.nms.iou_threshold": 0.65, "test_cfg.max_per_img": 300,
                 "test_cfg.min_bbox_size": 0},
    }
# SyncBN / BN without eps or momentum in the config: PyTorch's defaults.
TORCH_BN = (1e-5, 0.1)


# --------------------------------------------------------------------------- upstream files
def _model_dict(path: Path) -> dict:
    """``model = dict(...)`` of one config file, evaluated with ``dict`` only."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "model" for t in node.targets):
            names = {"dict": dict, "checkpoint": "<checkpoint url>"}  # the only free name used
            return eval(compile(ast.Expression(node.value), str(path), "eval"), names)
    raise AssertionError(f"{path}: no model = dict(...)")


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _upstream(name: str) -> dict:
    merged: dict = {}
    for rel in _FILES[name]:
        merged = _merge(merged, _model_dict(_ROOT / rel))
    return merged


def _at(d: dict, path: str):
    for key in path.split("."):
        d = d[key]
    return d


GROUPS = [(n, g) for n in UPSTREAM for g in UPSTREAM[n]]
_BUILT: dict = {}


def _model(name: str, **overrides):
    """Each configuration built once for the whole module (R50 models are slow to build)."""
    key = (name, tuple(sorted(overrides.items())))
    if key not in _BUILT:
        torch.manual_seed(0)
        _BUILT[key] = build_detector(name, num_classes=80, **overrides)
    return _BUILT[key]


@pytest.mark.parametrize("name, group", GROUPS)
def test_the_stated_upstream_fields_are_the_config_files(name, group):
    if not _ROOT.is_dir():
        pytest.skip(f"upstream mmdet 3.3 configs not on this machine ({_ROOT})")
    cfg = _upstream(name)
    for path, value in UPSTREAM[name][group].items():
        assert _at(cfg, path) == value, f"{name} {path}: file says {_at(cfg, path)!r}, stated {value!r}"


# --------------------------------------------------------------------------- the models
@pytest.mark.parametrize("name", ["retinanet_r50_fpn", "faster_rcnn_r50_fpn"])
def test_resnet_norms_and_frozen_stages(name):
    model = _model(name).train()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {(m.eps, m.momentum) for m in norms} == {TORCH_BN}
    assert not any(m.training for m in norms)  # norm_eval
    body = model.backbone.body
    frozen = [body.conv1, body.bn1, body.layer1]  # frozen_stages=1: stem and first stage
    assert not any(p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for p in body.layer2.parameters())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.neck.modules())


@pytest.mark.parametrize("name", ["rtmdet_tiny", "rtmdet_s"])
def test_rtmdet_norms_sizes_priors_and_test_cfg(name):
    model = _model(name)
    up = UPSTREAM[name]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {(m.eps, m.momentum) for m in norms} == {TORCH_BN} and model.sync_bn_under_ddp
    cfg = model.cfg
    assert (cfg.deepen_factor, cfg.widen_factor) == (up["sizes"]["backbone.deepen_factor"],
                                                     up["sizes"]["backbone.widen_factor"])
    assert cfg.neck_channels == cfg.head_channels == up["sizes"]["neck.out_channels"]
    assert cfg.exp_on_reg is False and model.head.exp_on_reg is False
    assert model.points.offset == 0.0 and list(cfg.strides) == [8, 16, 32]
    assert model.assigner.topk == 13 and cfg.box_loss_weight == 2.0
    assert (cfg.nms_pre, cfg.score_thresh, cfg.nms_iou, cfg.max_detections) == (30000, 0.001, 0.65, 300)
    assert cfg.min_bbox_size == up["test"]["test_cfg.min_bbox_size"] == model.test_cfg.min_bbox_size
    assert all(p.requires_grad for p in model.parameters())  # CSPNeXt frozen_stages=-1


def test_retinanet_anchors_assigner_init_and_test_cfg():
    model = _model("retinanet_r50_fpn")
    gen, f = model.anchor_generator, model.flavour
    assert (gen.octave_base_scale, gen.scales_per_octave) == (4, 3)
    assert [float(r) for r in gen.ratios] == [0.5, 1.0, 2.0]
    assert [s[0] for s in gen.strides] == [8, 16, 32, 64, 128]
    assert f.assigner == MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0)
    assert (f.score_thresh, f.topk_candidates, f.nms_iou, f.max_detections) == (0.05, 1000, 0.5, 100)
    assert f.box_loss_beta == 0.0  # L1Loss
    bias = model.head.cls_out.bias
    assert torch.allclose(bias, torch.full_like(bias, -math.log((1 - 0.01) / 0.01)))


def test_faster_rcnn_assigners_samplers_proposals_and_test_cfg():
    model = _model("faster_rcnn_r50_fpn")
    f, cfg = model.flavour, model.cfg
    assert f.rpn_assigner == MaxIoUAssigner(0.7, 0.3, min_pos_iou=0.3)
    assert f.roi_assigner == MaxIoUAssigner(0.5, 0.5, min_pos_iou=0.5, match_low_quality=False)
    assert model.rpn_sampler == RandomSampler(256, 0.5, add_gt_as_proposals=False)
    assert model.roi_sampler == RandomSampler(512, 0.25, add_gt_as_proposals=True)
    assert (cfg.rpn_pre_nms_topk_train, cfg.rpn_post_nms_topk_train) == (2000, 1000)
    assert (cfg.rpn_pre_nms_topk_test, cfg.rpn_post_nms_topk_test, cfg.rpn_nms_iou) == (1000, 1000, 0.7)
    assert (f.score_thresh, f.nms_iou, f.max_detections, f.rpn_min_size) == (0.05, 0.5, 100, 0.0)
    assert f.roi_codec.coder.stds == (0.1, 0.1, 0.2, 0.2) and f.pooler_sampling_ratio == 0
    assert [s[0] for s in model.anchor_generator.strides] == [4, 8, 16, 32, 64]
    # torchvision keeps 2000 proposals per image in training (rpn_post_nms_top_n_train).
    tv = build_detector("faster_rcnn_r50_fpn", num_classes=80, flavour="torchvision")
    assert tv.cfg.rpn_post_nms_topk_train == 2000
