"""Unit tests of the reference's model parts: backbones, necks, heads, detectors.

The conformance suite (conformance/test_models.py) checks whole detectors through
the protocol; these tests check what the reference's own modules claim in their
docstrings (layer wiring, sharing, freezing, channel order), on tiny inputs.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from reference.backbones import CSPNeXt, ResNetBackbone
from reference.detectors import DETECTOR_NAMES, ImageList, build_detector
from reference.detectors.faster_rcnn import FASTER_RCNN_FLAVOURS
from reference.detectors.retinanet import RETINANET_FLAVOURS
from reference.losses import EmaLossNormalizer, FixedBatch, PerImageMean, SampledMean, TotalPositives, TotalSamples
from reference.heads import RetinaHead, RoIBoxHead, RTMDetSepBNHead, flatten_level_outputs, prior_prob_bias
from reference.necks import FPN, CSPNeXtPAFPN


def _maps(channels, sizes, n=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, c, h, w, generator=g) for c, (h, w) in zip(channels, sizes)]


# --------------------------------------------------------------------------- necks
def test_fpn_maxpool_extra_level_is_stride_two_subsampling_of_last_output():
    fpn = FPN([8, 16, 32], 4, num_outs=4, extra_source="maxpool")
    outs = fpn(_maps([8, 16, 32], [(16, 20), (8, 10), (4, 5)]))
    assert [tuple(o.shape) for o in outs] == [(1, 4, 16, 20), (1, 4, 8, 10), (1, 4, 4, 5), (1, 4, 2, 3)]
    assert torch.equal(outs[3], outs[2][..., ::2, ::2])


def test_fpn_extra_from_input_reads_the_last_backbone_map_and_relu_only_before_later_convs():
    torch.manual_seed(0)
    feats = _maps([8, 16, 32], [(16, 20), (8, 10), (4, 5)])
    for relu in (False, True):
        fpn = FPN([8, 16, 32], 4, num_outs=5, start_level=1, extra_source="input",
                  relu_before_extra_convs=relu)
        outs = fpn(feats)
        assert len(fpn.lateral_convs) == 2 and fpn.extra_convs[0].in_channels == 32
        p6 = fpn.extra_convs[0](feats[-1])
        p7 = fpn.extra_convs[1](F.relu(p6) if relu else p6)
        torch.testing.assert_close(outs[2], p6)
        torch.testing.assert_close(outs[3], p7)
        assert outs[0].shape[-2:] == (8, 10)  # start_level=1 ignores the first map


def test_fpn_extra_from_output_reads_p5_torchvision_style():
    fpn = FPN([8, 16], 4, num_outs=4, extra_source="output", relu_before_extra_convs=True)
    feats = _maps([8, 16], [(8, 8), (4, 4)])
    outs = fpn(feats)
    torch.testing.assert_close(outs[2], fpn.extra_convs[0](outs[1]))
    torch.testing.assert_close(outs[3], fpn.extra_convs[1](F.relu(outs[2])))


def test_fpn_top_down_adds_upsampled_coarser_lateral_for_odd_sizes():
    fpn = FPN([4, 4], 4, num_outs=2)
    feats = _maps([4, 4], [(13, 19), (7, 10)])
    lat0, lat1 = fpn.lateral_convs[0](feats[0]), fpn.lateral_convs[1](feats[1])
    expected = fpn.output_convs[0](lat0 + F.interpolate(lat1, size=(13, 19), mode="nearest"))
    torch.testing.assert_close(fpn(feats)[0], expected)


def test_fpn_rejects_bad_configuration():
    with pytest.raises(ValueError, match="extra_source"):
        FPN([8], 4, num_outs=2, extra_source="sideways")
    with pytest.raises(ValueError, match="num_outs"):
        FPN([8, 16], 4, num_outs=1)
    with pytest.raises(ValueError, match="feats"):
        FPN([8, 16], 4, num_outs=2)(_maps([8], [(4, 4)]))


def test_cspnext_pafpn_keeps_level_sizes_and_sets_width():
    neck = CSPNeXtPAFPN([8, 16, 32], 12, num_csp_blocks=1)
    outs = neck(_maps([8, 16, 32], [(16, 16), (8, 8), (4, 4)], n=2))
    assert [tuple(o.shape) for o in outs] == [(2, 12, 16, 16), (2, 12, 8, 8), (2, 12, 4, 4)]


# --------------------------------------------------------------------------- backbones
def test_resnet_frozen_stages_and_norm_modes():
    net = ResNetBackbone(18, out_stages=(2, 3, 4, 5), frozen_stages=1, norm="bn_eval").train()
    assert not any(p.requires_grad for p in net.body.layer1.parameters())
    assert not net.body.conv1.weight.requires_grad
    assert all(p.requires_grad for p in net.body.layer2.parameters())
    assert not any(m.training for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    outs = net(torch.zeros(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(1, 64, 16, 24), (1, 128, 8, 12), (1, 256, 4, 6),
                                              (1, 512, 2, 3)]
    frozen = ResNetBackbone(18, norm="frozen_bn")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.modules())
    assert sum(p.numel() for p in frozen.parameters()) < sum(p.numel() for p in net.parameters())
    with pytest.raises(ValueError, match="norm"):
        ResNetBackbone(18, norm="group")
    with pytest.raises(ValueError, match="depth"):
        ResNetBackbone(19)


def test_cspnext_tiny_channels_and_strides():
    net = CSPNeXt(0.167, 0.375)
    assert net.out_channels == [96, 192, 384] and net.strides == [8, 16, 32]
    outs = net(torch.zeros(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 96, 8, 8), (1, 192, 4, 4), (1, 384, 2, 2)]


# --------------------------------------------------------------------------- heads
def test_flatten_level_outputs_is_location_major_anchor_minor():
    a, k, h, w = 3, 2, 2, 4
    m = torch.arange(a * k * h * w, dtype=torch.float32).view(1, a * k, h, w)
    flat = flatten_level_outputs([m], k)  # (1, h*w*a, k)
    for y in range(h):
        for x in range(w):
            for anchor in range(a):
                row = (y * w + x) * a + anchor
                for comp in range(k):
                    assert flat[0, row, comp] == m[0, anchor * k + comp, y, x]


def test_retina_head_shapes_and_prior_probability_bias():
    head = RetinaHead(8, num_classes=5, num_anchors=9, feat_channels=8, stacked_convs=2)
    cls, box = head(_maps([8, 8], [(6, 7), (3, 4)], n=2))
    assert [tuple(c.shape) for c in cls] == [(2, 45, 6, 7), (2, 45, 3, 4)]
    assert [tuple(b.shape) for b in box] == [(2, 36, 6, 7), (2, 36, 3, 4)]
    assert torch.allclose(torch.sigmoid(head.cls_out.bias), torch.full((45,), 0.01))
    assert prior_prob_bias(0.01) == pytest.approx(-4.59512, abs=1e-5)


def test_roi_box_head_background_layouts():
    pooled = torch.randn(6, 4, 7, 7)
    last = RoIBoxHead(4, num_classes=3, fc_dim=16)
    first = RoIBoxHead(4, num_classes=3, fc_dim=16, background_first=True)
    agnostic = RoIBoxHead(4, num_classes=3, fc_dim=16, class_agnostic=True)
    assert [tuple(t.shape) for t in last(pooled)] == [(6, 4), (6, 12)]
    assert [tuple(t.shape) for t in first(pooled)] == [(6, 4), (6, 16)]
    assert [tuple(t.shape) for t in agnostic(pooled)] == [(6, 4), (6, 4)]


def test_rtmdet_head_shares_convs_but_not_batch_norm_and_scales_by_stride():
    head = RTMDetSepBNHead(8, num_classes=3, feat_channels=8, strides=(8, 16), exp_on_reg=True)
    assert head.cls_convs[1][0].conv is head.cls_convs[0][0].conv
    assert head.reg_convs[1][1].conv is head.reg_convs[0][1].conv
    assert head.cls_convs[1][0].bn is not head.cls_convs[0][0].bn
    assert head.cls_out[1] is not head.cls_out[0]
    with torch.no_grad():
        for conv in head.reg_out:
            conv.weight.zero_()
            conv.bias.zero_()
    cls, dist = head(_maps([8, 8], [(4, 4), (2, 2)]))
    assert [tuple(c.shape) for c in cls] == [(1, 3, 4, 4), (1, 3, 2, 2)]
    assert torch.equal(dist[0], torch.full_like(dist[0], 8.0))  # exp(0) * stride
    assert torch.equal(dist[1], torch.full_like(dist[1], 16.0))
    unshared = RTMDetSepBNHead(8, 3, 8, strides=(8, 16), share_conv=False)
    assert sum(p.numel() for p in unshared.parameters()) > sum(p.numel() for p in head.parameters())


# --------------------------------------------------------------------------- detectors
def test_detector_names_and_overrides():
    assert {"retinanet", "faster_rcnn", "rtmdet", "retinanet_r50_fpn", "faster_rcnn_r50_fpn",
            "rtmdet_tiny", "rtmdet_s"} <= set(DETECTOR_NAMES)
    model = build_detector("retinanet", num_classes=4, head_convs=1, flavour="torchvision")
    assert model.flavour.name == "torchvision" and model.head.cls_out.out_channels == 9 * 4
    with pytest.raises(ValueError, match="head_cnvs"):
        build_detector("retinanet", num_classes=4, head_cnvs=1)
    with pytest.raises(ValueError, match="flavour"):
        build_detector("retinanet", num_classes=4, flavour="yolo")


def test_flavour_presets_record_upstream_differences():
    mm, d2, tv = (RETINANET_FLAVOURS[k] for k in ("mmdet", "detectron2", "torchvision"))
    assert (mm.fpn_extra_source, d2.fpn_extra_source, tv.fpn_extra_source) == ("input", "input", "output")
    assert (mm.normaliser, d2.normaliser, tv.normaliser) == (TotalPositives, EmaLossNormalizer, PerImageMean)
    assert (mm.max_detections, tv.max_detections) == (100, 300)
    assert d2.box_loss_beta == 0.1
    fr = FASTER_RCNN_FLAVOURS
    assert fr["torchvision"].background_first and not fr["mmdet"].background_first
    assert (fr["torchvision"].pooler_sampling_ratio, fr["torchvision"].pooler_aligned) == (2, False)
    assert (fr["detectron2"].pooler_sampling_ratio, fr["detectron2"].pooler_aligned) == (0, True)
    assert fr["torchvision"].roi_box_beta == pytest.approx(1 / 9)
    assert [fr[k].rpn_normaliser for k in ("mmdet", "detectron2", "torchvision")] == \
        [TotalSamples, FixedBatch, SampledMean]
    assert [fr[k].rpn_post_nms_topk_train for k in ("mmdet", "detectron2", "torchvision")] == \
        [1000, 1000, 2000]


def test_mmdet_and_torchvision_anchor_sizes_differ_by_truncation():
    mm = build_detector("retinanet_r50_fpn", num_classes=2)
    tv = build_detector("retinanet_r50_fpn", num_classes=2, flavour="torchvision")
    fmaps = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    a_mm = torch.cat(mm.anchor_generator.grid_priors(fmaps, "cpu", image_size=(64, 64)))
    a_tv = torch.cat(tv.anchor_generator.grid_priors(fmaps, "cpu", image_size=(64, 64)))
    assert a_mm.shape == a_tv.shape == (9 * (64 + 16 + 4 + 1 + 1), 4)
    torch.testing.assert_close(a_mm[0], torch.tensor([-22.6274, -11.3137, 22.6274, 11.3137]))
    assert torch.equal(a_tv, a_tv.round())  # torchvision rounds its base anchors


@pytest.mark.parametrize("flavour", ["mmdet", "detectron2", "torchvision"])
def test_every_retinanet_flavour_trains_and_detects(flavour):
    torch.manual_seed(0)
    model = build_detector("retinanet", num_classes=2, flavour=flavour, score_thresh=0.0)
    images = [torch.randn(3, 64, 64), torch.randn(3, 48, 64)]
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 40.0, 30.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    losses = model(images, targets)
    assert set(losses) == {"loss_cls", "loss_box"}
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    out = model(images)
    assert 0 < out[0]["boxes"].shape[0] <= model.flavour.max_detections


@pytest.mark.parametrize("flavour", ["mmdet", "detectron2", "torchvision"])
def test_every_faster_rcnn_flavour_trains(flavour):
    torch.manual_seed(0)
    model = build_detector("faster_rcnn", num_classes=2, flavour=flavour)
    model.generator = torch.Generator().manual_seed(0)
    images = [torch.randn(3, 64, 64)]
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 40.0, 30.0]]), "labels": torch.tensor([1])}]
    losses = model(images, targets)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box"}
    assert all(torch.isfinite(v) for v in losses.values())


def test_image_list_errors_name_the_argument():
    with pytest.raises(ValueError, match="images"):
        ImageList.from_tensors([])
    with pytest.raises(ValueError, match=r"images\[1\]"):
        ImageList.from_tensors([torch.zeros(3, 4, 4), torch.zeros(1, 4, 4)])
    with pytest.raises(ValueError, match=r"images\[0\]"):
        ImageList.from_tensors([torch.zeros(3, 4, 4, dtype=torch.uint8)])
    batch = ImageList.from_tensors([torch.ones(3, 5, 7)], size_divisibility=4)
    assert tuple(batch.tensor.shape) == (1, 3, 8, 8) and torch.equal(batch[0], torch.ones(3, 5, 7))


def test_config_dataclasses_are_frozen_plain_data():
    from reference.detectors import DETECTOR_CONFIGS

    for name, (builder, cfg) in DETECTOR_CONFIGS.items():
        assert dataclasses.is_dataclass(cfg) and callable(builder), name
        with pytest.raises(dataclasses.FrozenInstanceError):
            cfg.num_classes = 3
