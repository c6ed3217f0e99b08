"""Golden cases for anchors and points: the seeds' real configurations.

RetinaNet on the seeds' 800x1216 batch (FPN levels P3..P7 of 100x152, 50x76, 25x38,
13x19, 7x10) in the three flavours, the valid/inside flags of an 800x800 image
padded into that batch, and RTMDet's point priors for a 640x640 input. Outputs are
summarised: per-level shapes, 256 evenly spaced rows of all levels concatenated,
per-level column sums, and sha256 checksums of exact (bool or integer) tensors.
"""

from __future__ import annotations

import numpy as np
import torch

from oracles import anchors as oracle
from golden.case import GoldenCase, exact_sha256, sampled_rows
from golden.inputs import (FIRST_P3_ANCHOR, RETINANET_FEATMAPS, RETINANET_RATIOS,
                                  RETINANET_STRIDES, RTMDET_FEATMAPS, RTMDET_STRIDES, SAMPLES,
                                  sample_index)

OCTAVE_SIZES = [[x * 2 ** (i / 3) for i in range(3)] for x in (32, 64, 128, 256, 512)]
TORCHVISION_SIZES = [[int(s) for s in level] for level in OCTAVE_SIZES]


def _summary(levels) -> dict:
    """Shapes ``(L, 2)``, sampled rows of the concatenation, column sums ``(L, C)``."""
    return {
        "shapes": np.array([list(t.shape) for t in levels], dtype=np.int64),
        "sampled_rows": sampled_rows(torch.cat([t.detach().cpu() for t in levels]), SAMPLES),
        "sums": np.stack([t.detach().cpu().double().sum(dim=0).numpy() for t in levels]),
    }


def _level_of(index: int, counts) -> tuple[int, int]:
    for level, count in enumerate(counts):
        if index < count:
            return level, index
        index -= count
    raise IndexError(index)


def _closed_form_sums(base_anchors, featmap_size, stride_wh, offset=0.0) -> np.ndarray:
    """Column sums of one level without enumerating it: every base anchor appears at
    H*W locations, and every location's shift appears A times."""
    h, w = featmap_size
    base = np.asarray(base_anchors, dtype=np.float64)
    sum_x = h * sum((x + offset) * stride_wh[0] for x in range(w))
    sum_y = w * sum((y + offset) * stride_wh[1] for y in range(h))
    shift = np.array([sum_x, sum_y, sum_x, sum_y])
    return h * w * base.sum(axis=0) + len(base) * shift


def _check_anchor_summary(out, bases, strides_wh, offset=0.0, what="anchors") -> None:
    """Sampled rows and sums against the oracle, level by level."""
    counts = [len(b) * h * w for b, (h, w) in zip(bases, RETINANET_FEATMAPS)]
    np.testing.assert_array_equal(out["shapes"], [[c, 4] for c in counts])
    expected_rows = []
    for index in sample_index(sum(counts)):
        level, i = _level_of(int(index), counts)
        expected_rows.append(oracle.anchor_at(bases[level], RETINANET_FEATMAPS[level],
                                              strides_wh[level], i, offset))
    np.testing.assert_allclose(out["sampled_rows"], expected_rows, rtol=1e-6, atol=1e-4, err_msg=what)
    sums = [_closed_form_sums(b, f, s, offset)
            for b, f, s in zip(bases, RETINANET_FEATMAPS, strides_wh)]
    np.testing.assert_allclose(out["sums"], sums, rtol=1e-6, err_msg=what)


# --------------------------------------------------------------------------- mmdet RetinaNet
def _mmdet_generator(impl):
    return impl.AnchorGenerator(strides=RETINANET_STRIDES, ratios=RETINANET_RATIOS,
                                octave_base_scale=4, scales_per_octave=3)


def run_mmdet_retinanet(impl, device):
    return _summary(_mmdet_generator(impl).grid_anchors(RETINANET_FEATMAPS, device=device))


def check_mmdet_retinanet(out) -> None:
    np.testing.assert_array_equal(out["shapes"][:, 0], [136800, 34200, 8550, 2223, 630])
    assert int(out["shapes"][:, 0].sum()) == 182403
    np.testing.assert_allclose(out["sampled_rows"][0], FIRST_P3_ANCHOR, atol=1e-4)
    scales = oracle.octave_scales(4, 3)
    bases = [oracle.mmdet_base_anchors(s, scales, RETINANET_RATIOS) for s in RETINANET_STRIDES]
    _check_anchor_summary(out, bases, [(s, s) for s in RETINANET_STRIDES], what="mmdet")


# --------------------------------------------------------------------------- mmdet flags
def run_mmdet_flags(impl, device):
    gen = _mmdet_generator(impl)
    anchors = torch.cat(gen.grid_anchors(RETINANET_FEATMAPS, device=device))
    flags = gen.valid_flags(RETINANET_FEATMAPS, (800, 800, 3), device=device)
    valid = torch.cat(flags)
    inside0 = impl.anchor_inside_flags(anchors, valid, (800, 800, 3), 0)
    inside_neg = impl.anchor_inside_flags(anchors, valid, (800, 800, 3), -1)
    return {
        "valid_counts": np.array([int(f.sum()) for f in flags], dtype=np.int64),
        "valid_sha256": exact_sha256(valid),
        "inside_count_border0": np.array([int(inside0.sum())], dtype=np.int64),
        "inside_sha256_border0": exact_sha256(inside0),
        "inside_sha256_border_minus1": exact_sha256(inside_neg),
    }


def check_mmdet_flags(out) -> None:
    np.testing.assert_array_equal(out["valid_counts"], [90000, 22500, 5625, 1521, 441])
    scales = oracle.octave_scales(4, 3)
    valid, anchors = [], []
    for stride, fmap in zip(RETINANET_STRIDES, RETINANET_FEATMAPS):
        base = oracle.mmdet_base_anchors(stride, scales, RETINANET_RATIOS)
        valid.append(oracle.valid_flags(fmap, (800, 800), (stride, stride), len(base)))
        anchors.append(oracle.grid_anchors(base, fmap, (stride, stride)))
    valid = np.concatenate(valid)
    anchors = np.concatenate(anchors)
    np.testing.assert_array_equal(out["valid_sha256"], exact_sha256(valid))
    inside0 = oracle.inside_flags(anchors, valid, (800, 800), 0)
    assert int(out["inside_count_border0"][0]) == int(inside0.sum())
    np.testing.assert_array_equal(out["inside_sha256_border0"], exact_sha256(inside0))
    # allowed_border -1 (RetinaNet's setting) keeps the valid flags as they are.
    np.testing.assert_array_equal(out["inside_sha256_border_minus1"], exact_sha256(valid))


# --------------------------------------------------------------------------- detectron2 RetinaNet
def run_detectron2_retinanet(impl, device):
    gen = impl.DefaultAnchorGenerator(sizes=OCTAVE_SIZES, aspect_ratios=[RETINANET_RATIOS],
                                      strides=RETINANET_STRIDES, offset=0.0)
    return _summary(gen.grid_anchors(RETINANET_FEATMAPS, device=device))


def check_detectron2_retinanet(out) -> None:
    bases = [oracle.detectron2_cell_anchors(s, RETINANET_RATIOS) for s in OCTAVE_SIZES]
    _check_anchor_summary(out, bases, [(s, s) for s in RETINANET_STRIDES], what="detectron2")
    # First P3 cell anchor: size 32, ratio 0.5 (size outer): the same box as mmdet's first.
    np.testing.assert_allclose(out["sampled_rows"][0], FIRST_P3_ANCHOR, atol=1e-4)


# --------------------------------------------------------------------------- torchvision RetinaNet
def run_torchvision_retinanet(impl, device):
    gen = impl.TorchvisionAnchorGenerator(sizes=TORCHVISION_SIZES, aspect_ratios=[RETINANET_RATIOS] * 5)
    levels = gen.grid_anchors((800, 1216), RETINANET_FEATMAPS, device=device)
    out = _summary(levels)
    # Rounded base anchors plus integer shifts: every coordinate is an integer.
    out["rounded_sha256"] = exact_sha256(torch.cat(levels).round().long())
    return out


def check_torchvision_retinanet(out) -> None:
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.image_list import ImageList

    assert TORCHVISION_SIZES == [[32, 40, 50], [64, 80, 101], [128, 161, 203], [256, 322, 406],
                                 [512, 645, 812]]
    live = AnchorGenerator(tuple(tuple(s) for s in TORCHVISION_SIZES), ((0.5, 1.0, 2.0),) * 5)
    images = ImageList(torch.zeros(1, 1, 800, 1216), [(800, 1216)])
    feats = [torch.zeros(1, 1, h, w) for h, w in RETINANET_FEATMAPS]
    expected = live(images, feats)[0]
    counts = [h * w * 9 for h, w in RETINANET_FEATMAPS]
    np.testing.assert_array_equal(out["shapes"], [[c, 4] for c in counts])
    np.testing.assert_array_equal(out["sampled_rows"], sampled_rows(expected, SAMPLES))
    sums = np.stack([t.double().sum(dim=0).numpy() for t in expected.split(counts)])
    np.testing.assert_allclose(out["sums"], sums, rtol=1e-9)
    np.testing.assert_array_equal(out["rounded_sha256"], exact_sha256(expected.round().long()))
    bases = [oracle.torchvision_base_anchors(s, RETINANET_RATIOS) for s in TORCHVISION_SIZES]
    # Strides come from the batch: 800 // 13 = 61 and 800 // 7 = 114 rows, 1216 // 10 = 121
    # columns, so P6 and P7 are NOT on the nominal 64 / 128 grid.
    strides = [oracle.torchvision_strides((800, 1216), f) for f in RETINANET_FEATMAPS]
    assert strides == [(8, 8), (16, 16), (32, 32), (64, 61), (121, 114)]
    _check_anchor_summary(out, bases, strides, what="torchvision")


# --------------------------------------------------------------------------- RTMDet points
def run_rtmdet_points(impl, device):
    gen = impl.MlvlPointGenerator(RTMDET_STRIDES, offset=0.0)
    out = _summary(gen.grid_priors(RTMDET_FEATMAPS, device=device, with_stride=True))
    flags = gen.valid_flags(RTMDET_FEATMAPS, (640, 640, 3), device=device)
    out["valid_counts"] = np.array([int(f.sum()) for f in flags], dtype=np.int64)
    return out


def check_rtmdet_points(out) -> None:
    np.testing.assert_array_equal(out["shapes"], [[6400, 4], [1600, 4], [400, 4]])
    np.testing.assert_array_equal(out["valid_counts"], [6400, 1600, 400])
    levels = [oracle.grid_points(f, (s, s), 0.0, with_stride=True)
              for f, s in zip(RTMDET_FEATMAPS, RTMDET_STRIDES)]
    everything = np.concatenate(levels)
    np.testing.assert_allclose(out["sampled_rows"], everything[sample_index(len(everything))], atol=1e-6)
    np.testing.assert_allclose(out["sums"], [lv.sum(axis=0) for lv in levels], rtol=1e-9)
    np.testing.assert_allclose(out["sampled_rows"][-1], [608, 608, 32, 32])


# --------------------------------------------------------------------------- mmdet v1 (legacy) RetinaNet
# A 256x384 input: levels ceil(256/s) x ceil(384/s) for s = 8..128.
LEGACY_FEATMAPS = [(32, 48), (16, 24), (8, 12), (4, 6), (2, 3)]
LEGACY_PAD_SHAPE = (250, 330, 3)  # an image padded into the 256x384 batch
# ANC-8's worked example: LegacyAnchorGenerator([16], [1.], [1.], [9], center_offset=0.5), 2x2.
LEGACY_WORKED_EXAMPLE = [[0, 0, 8, 8], [16, 0, 24, 8], [0, 16, 8, 24], [16, 16, 24, 24]]


def run_mmdet_v1_legacy(impl, device):
    gen = impl.LegacyAnchorGenerator(strides=RETINANET_STRIDES, ratios=RETINANET_RATIOS,
                                     octave_base_scale=4, scales_per_octave=3, center_offset=0.5)
    levels = gen.grid_anchors(LEGACY_FEATMAPS, device=device)
    out = _summary(levels)
    # Rounded base anchors plus integer shifts: every coordinate is an integer.
    out["rounded_sha256"] = exact_sha256(torch.cat(levels).round().long())
    flags = gen.valid_flags(LEGACY_FEATMAPS, LEGACY_PAD_SHAPE, device=device)
    out["valid_counts"] = np.array([int(f.sum()) for f in flags], dtype=np.int64)
    out["valid_sha256"] = exact_sha256(torch.cat(flags))
    small = impl.LegacyAnchorGenerator([16], [1.0], [1.0], [9], center_offset=0.5)
    out["worked_example"] = small.grid_anchors([(2, 2)], device=device)[0]
    return out


def _legacy_bases_numpy(stride) -> np.ndarray:
    """ANC-8 written out again with NumPy, vectorised (not the oracle's loop)."""
    scales = 4 * 2 ** (np.arange(3) / 3)
    ratios = np.asarray(RETINANET_RATIOS)
    ws = (stride * scales[None, :] / np.sqrt(ratios)[:, None]).reshape(-1)  # ratio outer
    hs = (stride * scales[None, :] * np.sqrt(ratios)[:, None]).reshape(-1)
    c = 0.5 * (stride - 1)
    raw = np.stack([c - 0.5 * (ws - 1), c - 0.5 * (hs - 1), c + 0.5 * (ws - 1), c + 0.5 * (hs - 1)], 1)
    # Rounding is only well defined if no corner sits near x.5 (float32 vs float64).
    frac = np.abs(raw - np.floor(raw) - 0.5)
    assert frac.min() > 1e-3, f"legacy corner within 1e-3 of a rounding tie at stride {stride}"
    return np.round(raw)  # half to even


def check_mmdet_v1_legacy(out) -> None:
    np.testing.assert_array_equal(out["worked_example"], LEGACY_WORKED_EXAMPLE)
    counts = [9 * h * w for h, w in LEGACY_FEATMAPS]
    np.testing.assert_array_equal(out["shapes"], [[c, 4] for c in counts])
    scales = oracle.octave_scales(4, 3)
    levels, flags = [], []
    for stride, fmap in zip(RETINANET_STRIDES, LEGACY_FEATMAPS):
        base = oracle.mmdet_base_anchors(stride, scales, RETINANET_RATIOS, center_offset=0.5,
                                         legacy=True)
        np.testing.assert_array_equal(base, _legacy_bases_numpy(stride), err_msg=f"stride {stride}")
        levels.append(oracle.grid_anchors(base, fmap, (stride, stride)))
        flags.append(oracle.valid_flags(fmap, LEGACY_PAD_SHAPE[:2], (stride, stride), len(base)))
    # The first P3 base anchor (ratio 0.5, scale 4): w = 32 sqrt 2, h = 16 sqrt 2 about c = 3.5.
    np.testing.assert_array_equal(levels[0][0], [-19, -7, 26, 14])
    everything = np.concatenate(levels)
    np.testing.assert_array_equal(out["sampled_rows"], everything[sample_index(len(everything))])
    np.testing.assert_array_equal(out["rounded_sha256"], exact_sha256(everything.astype(np.int64)))
    np.testing.assert_allclose(out["sums"], [lv.sum(axis=0) for lv in levels], rtol=1e-12)
    valid = np.concatenate(flags)
    np.testing.assert_array_equal(out["valid_counts"], [int(f.sum()) for f in flags])
    np.testing.assert_array_equal(out["valid_counts"],
                                  [9 * -(-250 // s) * min(-(-330 // s), w)
                                   for s, (_, w) in zip(RETINANET_STRIDES, LEGACY_FEATMAPS)])
    np.testing.assert_array_equal(out["valid_sha256"], exact_sha256(valid))


RETINANET_INPUTS = {
    "batch_shape": [800, 1216],
    "featmap_sizes": RETINANET_FEATMAPS,
    "strides": RETINANET_STRIDES,
    "ratios": RETINANET_RATIOS,
}

CASES = [
    GoldenCase(
        name="anchors_mmdet_retinanet_800x1216",
        component="anchors",
        clause="ANC-6",
        producer="AnchorGenerator(octave_base_scale=4, scales_per_octave=3).grid_anchors",
        flavour="mmdet",
        inputs={**RETINANET_INPUTS, "octave_base_scale": 4, "scales_per_octave": 3},
        run=run_mmdet_retinanet,
        cross_checked="seed shapes [136800..630,4] (182403) and first P3 anchor; sampled rows against "
        "the loop oracle; per-level sums against a closed form from the oracle's base anchors",
        cross_check=check_mmdet_retinanet,
        exact=("shapes",),
    ),
    GoldenCase(
        name="anchors_mmdet_flags_800x800_in_800x1216",
        component="anchors",
        clause="ANC-7",
        producer="AnchorGenerator.valid_flags(pad_shape=(800, 800, 3)) + anchor_inside_flags(img_shape=(800, 800))",
        flavour="mmdet",
        inputs={**RETINANET_INPUTS, "pad_shape": [800, 800, 3], "img_shape": [800, 800, 3],
                "allowed_border": [0, -1]},
        run=run_mmdet_flags,
        cross_checked="valid counts ceil(800/s)^2*9; valid and inside flags against the loop oracle "
        "(sha256 of the oracle's flags)",
        cross_check=check_mmdet_flags,
        exact=("valid_counts", "valid_sha256", "inside_count_border0", "inside_sha256_border0",
               "inside_sha256_border_minus1"),
    ),
    GoldenCase(
        name="anchors_mmdet_v1_legacy_retinanet_256x384",
        component="anchors",
        clause="ANC-8",
        producer="LegacyAnchorGenerator(octave_base_scale=4, scales_per_octave=3, "
        "center_offset=0.5).grid_anchors + valid_flags(pad_shape=(250, 330, 3))",
        flavour="mmdet",
        inputs={"batch_shape": [256, 384], "featmap_sizes": LEGACY_FEATMAPS,
                "strides": RETINANET_STRIDES, "ratios": RETINANET_RATIOS, "octave_base_scale": 4,
                "scales_per_octave": 3, "center_offset": 0.5, "pad_shape": list(LEGACY_PAD_SHAPE),
                "worked_example":
                    "LegacyAnchorGenerator([16], [1.], [1.], [9], center_offset=0.5) on 2x2"},
        run=run_mmdet_v1_legacy,
        cross_checked="ANC-8's worked example; every anchor (sha256 of the integer coordinates), "
        "sampled rows and sums against the loop oracle, whose base anchors match a vectorised "
        "NumPy transcription of ANC-8 (corners at least 1e-3 from a rounding tie); valid flags "
        "against the oracle and ceil(pad/stride) counts",
        cross_check=check_mmdet_v1_legacy,
        exact=("shapes", "rounded_sha256", "valid_counts", "valid_sha256", "worked_example"),
    ),
    GoldenCase(
        name="anchors_detectron2_retinanet_800x1216",
        component="anchors",
        clause="ANC-9",
        producer="DefaultAnchorGenerator(sizes=32*2**(i/3)..., offset=0.0).grid_anchors",
        flavour="detectron2",
        inputs={**RETINANET_INPUTS, "sizes": OCTAVE_SIZES, "offset": 0.0},
        run=run_detectron2_retinanet,
        cross_checked="sampled rows against the loop oracle; per-level sums against a closed form",
        cross_check=check_detectron2_retinanet,
        exact=("shapes",),
    ),
    GoldenCase(
        name="anchors_torchvision_retinanet_800x1216",
        component="anchors",
        clause="ANC-10",
        producer="TorchvisionAnchorGenerator(sizes=(32,40,50),...).grid_anchors((800, 1216), ...)",
        flavour="torchvision",
        inputs={**RETINANET_INPUTS, "sizes": TORCHVISION_SIZES, "image_size": [800, 1216]},
        run=run_torchvision_retinanet,
        cross_checked="live torchvision.models.detection.anchor_utils.AnchorGenerator (bit-exact) "
        "and the loop oracle",
        cross_check=check_torchvision_retinanet,
        exact=("shapes", "rounded_sha256"),
    ),
    GoldenCase(
        name="points_rtmdet_640x640",
        component="points",
        clause="PTS-3",
        producer="MlvlPointGenerator([8, 16, 32], offset=0).grid_priors(with_stride=True)",
        flavour="mmdet",
        inputs={"input_shape": [640, 640], "featmap_sizes": RTMDET_FEATMAPS, "strides": RTMDET_STRIDES,
                "offset": 0.0, "with_stride": True, "pad_shape": [640, 640, 3]},
        run=run_rtmdet_points,
        cross_checked="seed shapes (6400,4),(1600,4),(400,4); sampled rows and sums against the loop oracle",
        cross_check=check_rtmdet_points,
        exact=("shapes", "valid_counts"),
    ),
]
