"""The wiring checks of the conformance suite (conformance/wiring.py, SPEC MOD-16 .. MOD-21)
fail on detectors whose stages are right but wired wrongly.

Each test builds the reference model the conformance test builds, breaks one
connection the way issue 11 names it (a normaliser, the gts among the RoIs, the
proposal function, the points' offset), and expects the check to raise.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import reference
from conformance import wiring
from reference.anchors import MlvlPointGenerator
from reference.detectors.faster_rcnn import detectron2_proposals
from reference.losses import PerImageMean, TotalPositives
from reference.sampling import RandomSampler


class _Reference:
    """The two calls the checks make on an implementation."""

    def get(self, name):
        return getattr(reference, name)

    def claims(self, flavour):
        return True


IMPL = _Reference()


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _build(name, **overrides):
    torch.manual_seed(0)
    return reference.build_detector(name, num_classes=wiring.NUM_CLASSES, **overrides)


def _retinanet(flavour):
    return _build("retinanet", flavour=flavour, score_thresh=0.0, topk_candidates=50)


def _faster_rcnn(flavour):
    return _build("faster_rcnn", flavour=flavour, **wiring.FASTER_RCNN_OVERRIDES)


class _DivideByAnchors:
    """A normaliser that divides the summed losses by the number of anchors."""

    def __init__(self, num_anchors):
        self.num_anchors = num_anchors

    def __call__(self, loss_sums, num_pos, num_neg=None, batch_size_per_image=None):
        return loss_sums.sum(dim=0) / self.num_anchors


def test_retinanet_dividing_by_the_anchors_instead_of_the_positives_fails():
    model = _retinanet("mmdet")
    model.normaliser = _DivideByAnchors(1161)  # 9 * (96 + 24 + 6 + 2 + 1) anchors
    with pytest.raises(AssertionError, match="retinanet .mmdet. training losses"):
        wiring.check_retinanet(model, IMPL, "mmdet", "cpu")


@pytest.mark.parametrize("flavour, wrong", [("torchvision", TotalPositives), ("mmdet", PerImageMean)])
def test_retinanet_with_another_flavours_normaliser_fails(flavour, wrong):
    model = _retinanet(flavour)
    model.normaliser = wrong()
    with pytest.raises(AssertionError, match="training losses"):
        wiring.check_retinanet(model, IMPL, flavour, "cpu")


@pytest.mark.parametrize("flavour", ["mmdet", "torchvision"])
def test_faster_rcnn_whose_roi_head_never_sees_the_gts_fails(flavour):
    model = _faster_rcnn(flavour)
    if flavour == "mmdet":  # mmdet's sampler is what prepends them
        model.roi_sampler = RandomSampler(wiring.ALL, 0.25, add_gt_as_proposals=False)
    else:
        model.flavour = dataclasses.replace(model.flavour, append_gts=False)
    with pytest.raises(AssertionError, match="loss_(cls|box)"):
        wiring.check_faster_rcnn(model, IMPL, flavour, "cpu")


def test_mmdet_faster_rcnn_running_detectron2_proposals_fails():
    model = _faster_rcnn("mmdet")
    model.flavour = dataclasses.replace(model.flavour, rpn_proposals=detectron2_proposals)
    with pytest.raises(AssertionError, match="faster_rcnn .mmdet."):
        wiring.check_faster_rcnn(model, IMPL, "mmdet", "cpu")


def test_rtmdet_on_points_at_offset_half_fails():
    model = _build("rtmdet", score_thresh=0.0)
    model.points = MlvlPointGenerator([8, 16, 32], offset=0.5)
    with pytest.raises(AssertionError, match="rtmdet"):
        wiring.check_rtmdet(model, IMPL, "cpu")
