"""Conformance of detector wiring: each flavour's losses and detections are the
composition of the stages, recomputed by the suite's oracles (SPEC MOD-16 .. MOD-21).

One small model per detector and flavour (64x96 and 48x64 images, 3 classes), seeded;
the checks live in ``conformance/wiring.py`` so the suite's own tests can run them on
mis-wired copies (``tests/test_wiring.py``).
"""

from __future__ import annotations

import pytest
import torch

from conformance import wiring

pytestmark = pytest.mark.component("models")

FLAVOURS = ["mmdet", "detectron2", "torchvision"]


def _build(impl, name, **overrides):
    torch.manual_seed(0)
    return impl.get("build_detector")(name, num_classes=wiring.NUM_CLASSES, **overrides)


def _claimed(impl, flavour):
    if not impl.claims(flavour):
        pytest.skip(f"flavour {flavour} not claimed")


@pytest.mark.spec("MOD-16")
@pytest.mark.spec("MOD-17")
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_retinanet_losses_and_detections_are_the_stage_composition(impl, device, flavour):
    _claimed(impl, flavour)
    model = _build(impl, "retinanet", flavour=flavour, score_thresh=0.0,
                   topk_candidates=50).to(device)
    wiring.check_retinanet(model, impl, flavour, device)


@pytest.mark.spec("MOD-18")
@pytest.mark.spec("MOD-19")
@pytest.mark.spec("MOD-20")
@pytest.mark.spec("MOD-21")
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_faster_rcnn_losses_proposals_and_detections_are_the_stage_composition(impl, device,
                                                                               flavour):
    _claimed(impl, flavour)
    model = _build(impl, "faster_rcnn", flavour=flavour, **wiring.FASTER_RCNN_OVERRIDES).to(device)
    wiring.check_faster_rcnn(model, impl, flavour, device)


@pytest.mark.spec("MOD-16")
@pytest.mark.spec("MOD-17")
def test_rtmdet_losses_and_detections_are_the_stage_composition(impl, device):
    _claimed(impl, "mmdet")
    model = _build(impl, "rtmdet", score_thresh=0.0).to(device)
    wiring.check_rtmdet(model, impl, device)
