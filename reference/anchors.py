"""Anchors and points: the priors a dense head predicts relative to.

A detector's head outputs, at every location of every feature level, a fixed number
of predictions. Each prediction is made *relative to a prior*: an anchor box
(RetinaNet, Faster R-CNN's RPN) or a point (RTMDet, FCOS). This module makes those
priors. It does the same three steps for every flavour:

1. **Base anchors** (detectron2 calls them "cell anchors"): ``A`` boxes of different
   sizes and aspect ratios around one centre, shape ``(A, 4)``, xyxy.
2. **Grid**: the feature level of size ``(H, W)`` and stride ``s`` puts one copy of
   the base anchors at every location; location ``(y, x)`` is shifted by
   ``(x * s_w, y * s_h)``. Locations run row-major (y outer, x inner) and the ``A``
   anchors of one location are innermost, so row ``(y * W + x) * A + k`` is base
   anchor ``k`` at ``(y, x)``; shape ``(H * W * A, 4)`` [ANC-1, ANC-2].
3. **Flags**: ``valid_flags`` marks the locations that fall inside the image's own
   padded extent (a batch is padded to its largest image), and
   ``anchor_inside_flags`` narrows that to anchors inside the image [ANC-7, ANC-11].

Where the upstreams differ (the classic silent port bugs) [see SPEC.md, anchors]:

============  ===========================  =================  ==================
flavour       centre of location (0, 0)    order in location  rounding
============  ===========================  =================  ==================
mmdet         ``center_offset * base``     ratio outer *      none (float)
mmdet v1      ``center_offset * (base-1)`` ratio outer *      corners rounded
detectron2    ``offset * stride``          size outer         none (float)
torchvision   0                            ratio outer        corners rounded
============  ===========================  =================  ==================

(*) mmdet's ``scale_major=True`` (the default) puts the ratio OUTER and the scale
inner; the name describes which factor is multiplied first, not the order.

All flavours agree that the aspect ratio is ``r = h / w`` and that an anchor of
size ``S`` and ratio ``r`` has ``w = S / sqrt(r)``, ``h = S * sqrt(r)`` (so
``w * h = S**2``). mmdet's size is ``base_size * scale``.

Shape letters: ``A`` base anchors per location, ``H, W`` a feature level's height
and width, ``N`` anchors of one image (all levels concatenated).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence

import torch

__all__ = [
    "AnchorGenerator",
    "LegacyAnchorGenerator",
    "DefaultAnchorGenerator",
    "TorchvisionAnchorGenerator",
    "MlvlPointGenerator",
    "anchor_inside_flags",
    "RetinaNetAnchorPreset",
    "retinanet_anchor_preset",
]


# --------------------------------------------------------------------------- corner rules
@dataclasses.dataclass(frozen=True)
class _CornerRule:
    """How a flavour turns a centre and a width/height into base-anchor corners.

    minus_one: mmdet v1 pixel convention: a box of width ``w`` spans
        ``centre +- 0.5 * (w - 1)`` (its last pixel is included).
    round_corners: round the corners to integers, half to even (``torch.round``).
    dtype: the precision the upstream computes base anchors in; it matters only
        where corners are rounded, since a value a hair from ``k + 0.5`` rounds by
        the precision it was computed in.
    """

    minus_one: bool
    round_corners: bool
    dtype: torch.dtype


_MMDET_CORNERS = _CornerRule(minus_one=False, round_corners=False, dtype=torch.float32)
_MMDET_V1_CORNERS = _CornerRule(minus_one=True, round_corners=True, dtype=torch.float32)
_DETECTRON2_CORNERS = _CornerRule(minus_one=False, round_corners=False, dtype=torch.float64)
_TORCHVISION_CORNERS = _CornerRule(minus_one=False, round_corners=True, dtype=torch.float32)


def _corners(cx, cy, ws: torch.Tensor, hs: torch.Tensor, rule: _CornerRule) -> torch.Tensor:
    """Base anchors ``(A, 4)`` float32 from a centre and per-anchor widths/heights."""
    half_w = 0.5 * (ws - 1) if rule.minus_one else 0.5 * ws  # (A,)
    half_h = 0.5 * (hs - 1) if rule.minus_one else 0.5 * hs  # (A,)
    boxes = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1)  # (A, 4)
    if rule.round_corners:
        boxes = boxes.round()  # half to even, like torch and Python
    return boxes.to(torch.float32)


# Widths and heights of every (size, ratio) pair, with r = h / w: w = S / sqrt(r),
# h = S * sqrt(r) in every flavour. Each flavour below multiplies in its upstream's
# order and precision, because the corners are rounded afterwards (mmdet v1,
# torchvision) or compared exactly: in float32 (base * 1/sqrt(r)) * scale and
# base * (1/sqrt(r) * scale) can differ by one ulp, enough to move a rounded corner
# by a pixel (mmdet v1: 26.500002 instead of 26.5) [ANC-8].
def _mmdet_widths_heights(base_size, scales: torch.Tensor, ratios: torch.Tensor, scale_major: bool):
    """mmdet (2.11 ``core/anchor/anchor_generator.py``, 3.3 ``prior_generators/
    anchor_generator.py``, ``gen_single_level_base_anchors``): float32
    ``(base_size * ratio_factor) * scale``, ``(R*S,)`` ratio outer when
    ``scale_major``, else ``(base_size * scale) * ratio_factor``, ``(S*R,)`` scale outer.
    """
    h_ratios = torch.sqrt(ratios)  # (R,)
    w_ratios = 1 / h_ratios  # (R,)
    if scale_major:
        ws = (base_size * w_ratios[:, None] * scales[None, :]).reshape(-1)  # (R*S,)
        hs = (base_size * h_ratios[:, None] * scales[None, :]).reshape(-1)
    else:
        ws = (base_size * scales[:, None] * w_ratios[None, :]).reshape(-1)  # (S*R,)
        hs = (base_size * scales[:, None] * h_ratios[None, :]).reshape(-1)
    return ws, hs


def _torchvision_widths_heights(sizes: torch.Tensor, ratios: torch.Tensor):
    """torchvision (``anchor_utils.AnchorGenerator.generate_anchors``): float32
    ``(1/sqrt(r)) * size``, ``(R*S,)`` ratio outer, size inner."""
    h_ratios = torch.sqrt(ratios)  # (R,)
    w_ratios = 1 / h_ratios  # (R,)
    ws = (w_ratios[:, None] * sizes[None, :]).reshape(-1)  # (R*S,)
    hs = (h_ratios[:, None] * sizes[None, :]).reshape(-1)
    return ws, hs


def _detectron2_widths_heights(sizes, ratios):
    """detectron2 (``DefaultAnchorGenerator.generate_cell_anchors``): in Python
    float64, ``w = sqrt(size**2 / r)`` and ``h = r * w``, ``(S*R,)`` size outer."""
    pairs = [(size, ratio) for size in sizes for ratio in ratios]  # size outer, ratio inner
    ws = [math.sqrt(size ** 2.0 / ratio) for size, ratio in pairs]
    hs = [ratio * w for (_, ratio), w in zip(pairs, ws)]
    return torch.tensor(ws, dtype=torch.float64), torch.tensor(hs, dtype=torch.float64)


# --------------------------------------------------------------------------- the grid
def _location_shifts(featmap_size, stride_wh, offset: float, device) -> torch.Tensor:
    """Pixel position of every location of one level, row-major: ``(H*W, 2)`` [x, y].

    Location ``(y, x)`` sits at ``((x + offset) * stride_w, (y + offset) * stride_h)``,
    computed in float32 as mmdet (``arange(W).to(float32) * stride``, and
    MlvlPointGenerator's ``(arange(W) + offset) * stride``) and torchvision do: a
    non-integer stride rounds there, not in float64.
    """
    feat_h, feat_w = featmap_size
    stride_w, stride_h = stride_wh
    xs = (torch.arange(feat_w, device=device, dtype=torch.float32) + offset) * stride_w  # (W,)
    ys = (torch.arange(feat_h, device=device, dtype=torch.float32) + offset) * stride_h  # (H,)
    return _row_major(xs, ys)


def _detectron2_location_shifts(featmap_size, stride: float, offset: float, device) -> torch.Tensor:
    """detectron2's ``_create_grid_offsets``: ``(H*W, 2)`` [x, y] float32.

    detectron2 calls ``torch.arange(offset * stride, W * stride, step=stride,
    dtype=float32)``; torch's own arange rounding decides the last bit of a
    non-integer position, so the reference calls the same. For a non-integer stride
    that arange can also return W + 1 values (detectron2 then makes one location
    too many); the reference keeps the first W.
    """
    feat_h, feat_w = featmap_size
    # On the CPU, then moved, as detectron2 does: a device's arange may round otherwise.
    xs = torch.arange(offset * stride, feat_w * stride, step=stride, dtype=torch.float32)[:feat_w]  # (W,)
    ys = torch.arange(offset * stride, feat_h * stride, step=stride, dtype=torch.float32)[:feat_h]  # (H,)
    return _row_major(xs.to(device), ys.to(device))


def _row_major(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Every (x, y) pair, y outer and x inner: ``(H*W, 2)``."""
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")  # (H, W) each; y outer, x inner
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)  # (H*W, 2)


def _place_on_grid(base_anchors: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Every base anchor ``(A, 4)`` at every location ``(H*W, 2)``: ``(H*W*A, 4)``."""
    shifts4 = shifts.repeat(1, 2)  # (H*W, 4): [x, y, x, y]
    anchors = shifts4[:, None, :] + base_anchors[None, :, :].to(shifts.device)  # (H*W, A, 4)
    return anchors.reshape(-1, 4)


def _location_valid_flags(featmap_size, valid_size, per_location: int, device) -> torch.Tensor:
    """``(H*W*per_location,)`` bool: True where ``y < valid_h`` and ``x < valid_w``."""
    feat_h, feat_w = featmap_size
    valid_h, valid_w = valid_size
    valid_y = torch.arange(feat_h, device=device) < valid_h  # (H,)
    valid_x = torch.arange(feat_w, device=device) < valid_w  # (W,)
    valid = valid_y[:, None] & valid_x[None, :]  # (H, W)
    return valid.reshape(-1).repeat_interleave(per_location)  # (H*W*per_location,)


def _valid_extent(featmap_size, pad_shape, stride_wh) -> tuple[int, int]:
    """Locations ``(rows, cols)`` that lie over the padded image: ceil(pad / stride).

    A location is kept while its top-left pixel is inside the padded image, hence
    ``ceil``; never more than the feature map has.
    """
    feat_h, feat_w = featmap_size
    pad_h, pad_w = pad_shape[0], pad_shape[1]
    stride_w, stride_h = stride_wh
    return min(math.ceil(pad_h / stride_h), feat_h), min(math.ceil(pad_w / stride_w), feat_w)


# --------------------------------------------------------------------------- validation
def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _positive_number(name: str, value) -> float:
    if not _is_number(value):
        raise TypeError(f"{name}: expected a positive number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
    return value


def _number_list(name: str, values, *, allow_empty: bool = False) -> list[float]:
    if isinstance(values, torch.Tensor):
        values = values.tolist()
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise TypeError(f"{name}: expected a sequence of positive numbers, got {values!r}")
    if not values and not allow_empty:
        raise ValueError(f"{name}: expected at least one value, got an empty sequence")
    return [_positive_number(f"{name}[{i}]", v) for i, v in enumerate(values)]


def _stride_pair(name: str, stride) -> tuple[float, float]:
    """A stride as ``(stride_w, stride_h)``; a single number means both axes."""
    if _is_number(stride):
        stride = (stride, stride)
    if not isinstance(stride, Sequence) or isinstance(stride, str) or len(stride) != 2:
        raise ValueError(f"{name}: expected a positive number or a (w, h) pair, got {stride!r}")
    return (_positive_number(f"{name}[0] (w)", stride[0]), _positive_number(f"{name}[1] (h)", stride[1]))


def _stride_pairs(name: str, strides) -> list[tuple[float, float]]:
    if not isinstance(strides, Sequence) or isinstance(strides, str) or not strides:
        raise ValueError(f"{name}: expected a non-empty sequence of strides, got {strides!r}")
    return [_stride_pair(f"{name}[{i}]", s) for i, s in enumerate(strides)]


def _positive_int(name: str, value) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name}: expected a positive int, got {value!r} ({type(value).__name__})")
    if value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value}")
    return int(value)


def _hw(name: str, shape, *, allow_channels: bool = False) -> tuple[int, int]:
    """An ``(H, W)`` pair of positive ints (``(H, W, C)`` too when allowed)."""
    lengths = (2, 3) if allow_channels else (2,)
    if not isinstance(shape, (Sequence, torch.Size)) or isinstance(shape, str) or len(shape) not in lengths:
        expected = "(H, W) or (H, W, C)" if allow_channels else "(H, W)"
        raise ValueError(f"{name}: expected {expected} of positive ints, got {shape!r}")
    return _positive_int(f"{name}[0] (H)", shape[0]), _positive_int(f"{name}[1] (W)", shape[1])


def _featmap_sizes(featmap_sizes, num_levels: int) -> list[tuple[int, int]]:
    if not isinstance(featmap_sizes, Sequence) or isinstance(featmap_sizes, str):
        raise ValueError(f"featmap_sizes: expected a list of (H, W) per level, got {featmap_sizes!r}")
    if len(featmap_sizes) != num_levels:
        raise ValueError(
            f"featmap_sizes: got {len(featmap_sizes)} levels, expected {num_levels} "
            "(one (H, W) per level the generator was built with)"
        )
    return [_hw(f"featmap_sizes[{i}]", s) for i, s in enumerate(featmap_sizes)]


def _unit_interval(name: str, value, *, upper_open: bool) -> float:
    if not _is_number(value):
        raise TypeError(f"{name}: expected a number, got {value!r} ({type(value).__name__})")
    ok = 0 <= value < 1 if upper_open else 0 <= value <= 1
    if not ok:
        raise ValueError(f"{name}: expected a value in [0, 1{')' if upper_open else ']'}, got {value!r}")
    return float(value)


def _per_level_lists(name: str, values, num_levels: int | None) -> list[list[float]]:
    """A list of non-empty lists of positive numbers, one per level."""
    if not isinstance(values, Sequence) or isinstance(values, str) or not values:
        raise ValueError(f"{name}: expected a non-empty list with one list per level, got {values!r}")
    out = []
    for i, level in enumerate(values):
        if _is_number(level):
            raise ValueError(f"{name}[{i}]: expected a list of numbers for this level, got {level!r}")
        out.append(_number_list(f"{name}[{i}]", level))
    if num_levels is not None and len(out) != num_levels:
        raise ValueError(f"{name}: got {len(out)} levels, expected {num_levels}")
    return out


# --------------------------------------------------------------------------- mmdet
class AnchorGenerator:
    """mmdetection 2.x/3.x ``AnchorGenerator`` (flavour ``mmdet``) [ANC-3 .. ANC-7].

    Args:
        strides: one stride per level, an int or a ``(stride_w, stride_h)`` pair.
        ratios: aspect ratios ``r = h / w`` (> 0), shared by every level.
        scales: anchor scales (> 0); an anchor's side is ``base_size * scale``.
            Give either ``scales`` or both ``octave_base_scale`` and
            ``scales_per_octave`` (then ``scales = octave_base_scale * 2**(i /
            scales_per_octave)`` for ``i < scales_per_octave``), never both.
        base_sizes: base size per level; default ``min(stride_w, stride_h)``.
        scale_major: True (the default) orders the anchors of one location ratio
            OUTER, scale inner: ``k = ratio_index * num_scales + scale_index``.
            False orders scale outer, ratio inner.
        centers: optional ``(cx, cy)`` per level, the base anchors' centre in
            pixels; cannot be combined with a non-zero ``center_offset``.
        center_offset: in ``[0, 1]``; without ``centers`` the base anchors are
            centred at ``(center_offset * base_size, center_offset * base_size)``.

    Attributes:
        strides: ``list[(stride_w, stride_h)]``; num_levels: int;
        base_anchors: ``list`` of ``(A, 4)`` float32 xyxy per level;
        num_base_anchors: ``list[int]``, ``A = len(ratios) * len(scales)``.
    """

    _corner_rule = _MMDET_CORNERS

    def __init__(
        self,
        strides,
        ratios,
        scales=None,
        base_sizes=None,
        scale_major: bool = True,
        octave_base_scale=None,
        scales_per_octave=None,
        centers=None,
        center_offset: float = 0.0,
    ) -> None:
        self.strides = _stride_pairs("strides", strides)
        self.ratios = _number_list("ratios", ratios)
        self.scales = self._scales(scales, octave_base_scale, scales_per_octave)
        if base_sizes is None:
            self.base_sizes = [min(s) for s in self.strides]
        else:
            self.base_sizes = _number_list("base_sizes", base_sizes)
            if len(self.base_sizes) != self.num_levels:
                raise ValueError(
                    f"base_sizes: got {len(self.base_sizes)} values, expected one per level "
                    f"({self.num_levels})"
                )
        if not isinstance(scale_major, bool):
            raise TypeError(f"scale_major: expected a bool, got {scale_major!r}")
        self.scale_major = scale_major
        self.center_offset = _unit_interval("center_offset", center_offset, upper_open=False)
        self.centers = self._centers(centers)
        self.octave_base_scale = octave_base_scale
        self.scales_per_octave = scales_per_octave
        self.base_anchors = [self._base_anchors(level) for level in range(self.num_levels)]

    # -- constructor helpers
    @staticmethod
    def _scales(scales, octave_base_scale, scales_per_octave) -> list[float]:
        octave_given = octave_base_scale is not None or scales_per_octave is not None
        if scales is not None and octave_given:
            raise ValueError(
                "scales: cannot be given together with octave_base_scale/scales_per_octave "
                f"(got scales={scales!r}, octave_base_scale={octave_base_scale!r}, "
                f"scales_per_octave={scales_per_octave!r})"
            )
        if scales is not None:
            return _number_list("scales", scales)
        if octave_base_scale is None or scales_per_octave is None:
            raise ValueError(
                "scales: expected either scales or both octave_base_scale and scales_per_octave, "
                f"got scales=None, octave_base_scale={octave_base_scale!r}, "
                f"scales_per_octave={scales_per_octave!r}"
            )
        base = _positive_number("octave_base_scale", octave_base_scale)
        count = _positive_int("scales_per_octave", scales_per_octave)
        # One octave split into `count` geometric steps: 2**0, 2**(1/count), ...
        return [base * 2 ** (i / count) for i in range(count)]

    def _centers(self, centers):
        if centers is None:
            return None
        if self.center_offset != 0:
            raise ValueError(
                f"centers: cannot be given with a non-zero center_offset ({self.center_offset}); "
                f"got centers={centers!r}"
            )
        if not isinstance(centers, Sequence) or len(centers) != self.num_levels:
            raise ValueError(f"centers: expected one (cx, cy) per level ({self.num_levels}), got {centers!r}")
        out = []
        for i, c in enumerate(centers):
            if (not isinstance(c, Sequence) or len(c) != 2 or not all(_is_number(v) for v in c)
                    or not all(math.isfinite(v) for v in c)):
                raise ValueError(f"centers[{i}]: expected a finite (cx, cy) pair, got {c!r}")
            out.append((float(c[0]), float(c[1])))
        return out

    def _default_center(self, base_size: float) -> tuple[float, float]:
        return self.center_offset * base_size, self.center_offset * base_size

    def _base_anchors(self, level: int) -> torch.Tensor:
        rule = self._corner_rule
        base_size = self.base_sizes[level]
        cx, cy = self.centers[level] if self.centers is not None else self._default_center(base_size)
        scales = torch.tensor(self.scales, dtype=rule.dtype)  # (S,)
        ratios = torch.tensor(self.ratios, dtype=rule.dtype)  # (R,)
        ws, hs = _mmdet_widths_heights(base_size, scales, ratios, self.scale_major)  # (A,) each
        return _corners(cx, cy, ws, hs, rule)  # (A, 4)

    # -- public API
    @property
    def num_levels(self) -> int:
        return len(self.strides)

    @property
    def num_base_anchors(self) -> list[int]:
        return [len(b) for b in self.base_anchors]

    def grid_anchors(self, featmap_sizes, device="cpu") -> list[torch.Tensor]:
        """Anchors of every level: ``list`` of ``(H*W*A, 4)`` float32 on ``device``.

        featmap_sizes: one ``(H, W)`` of positive ints per level. Row
        ``(y*W + x)*A + k`` is base anchor ``k`` shifted by ``(x*stride_w, y*stride_h)``.
        """
        sizes = _featmap_sizes(featmap_sizes, self.num_levels)
        return [
            _place_on_grid(self.base_anchors[i], _location_shifts(size, self.strides[i], 0.0, device))
            for i, size in enumerate(sizes)
        ]

    def grid_priors(self, featmap_sizes, device="cpu", image_size=None) -> list[torch.Tensor]:
        """The detectors' one call shape for every anchor generator: per level
        ``(H*W*A, 4)`` anchors. ``image_size`` (the padded batch (H, W)) is not needed."""
        return self.grid_anchors(featmap_sizes, device)

    def valid_flags(self, featmap_sizes, pad_shape, device="cpu") -> list[torch.Tensor]:
        """Which anchors lie over the image's own padded extent: ``list`` of ``(H*W*A,)`` bool.

        pad_shape: ``(pad_h, pad_w[, C])`` of this image before batch padding.
        Location ``(y, x)`` is valid iff ``y < min(ceil(pad_h / stride_h), H)`` and
        ``x < min(ceil(pad_w / stride_w), W)``; its ``A`` anchors share the flag.
        """
        sizes = _featmap_sizes(featmap_sizes, self.num_levels)
        pad = _hw("pad_shape", pad_shape, allow_channels=True)
        return [
            _location_valid_flags(
                size, _valid_extent(size, pad, self.strides[i]), self.num_base_anchors[i], device
            )
            for i, size in enumerate(sizes)
        ]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(strides={self.strides}, ratios={self.ratios}, "
            f"scales={self.scales}, base_sizes={self.base_sizes}, scale_major={self.scale_major}, "
            f"centers={self.centers}, center_offset={self.center_offset})"
        )


class LegacyAnchorGenerator(AnchorGenerator):
    """mmdetection v1 anchors (flavour ``mmdet``, legacy) [ANC-8].

    Same constructor and grid as :class:`AnchorGenerator`; only the base anchors
    differ, following the v1 "a box of width w covers w pixels, both ends
    included" convention:

    - centre ``center_offset * (base_size - 1)`` on each axis (v1 models used
      ``center_offset=0.5``; the default stays 0 as in mmdet 2.x's class);
    - corners ``centre +- 0.5 * (w - 1)``;
    - corners rounded to integers, half to even, in float32 as mmdet does.
    """

    _corner_rule = _MMDET_V1_CORNERS

    def _default_center(self, base_size: float) -> tuple[float, float]:
        return self.center_offset * (base_size - 1), self.center_offset * (base_size - 1)


# --------------------------------------------------------------------------- detectron2
class DefaultAnchorGenerator:
    """detectron2's ``DefaultAnchorGenerator`` (flavour ``detectron2``) [ANC-9].

    Args:
        sizes: per level, a list of anchor sizes (sqrt of the anchor area), e.g.
            ``[[32], [64], [128], [256], [512]]``; a single level's list is used
            for every level (detectron2 broadcasts it).
        aspect_ratios: per level, a list of ratios ``r = h / w``; a single list is
            broadcast likewise.
        strides: one positive stride per level (the same on both axes).
        offset: in ``[0, 1)``; location ``(y, x)`` is centred at
            ``((x + offset) * stride, (y + offset) * stride)``. detectron2's
            config default is 0.0 (the constructor's 0.5 is not what models use).

    Base ("cell") anchors are centred at 0 with ``w = sqrt(size**2 / r)``,
    ``h = r * w``, enumerated size OUTER, ratio inner, computed in float64 and
    stored as float32.
    """

    def __init__(self, sizes, aspect_ratios, strides, offset: float = 0.0) -> None:
        if not isinstance(strides, Sequence) or isinstance(strides, str) or not strides:
            raise ValueError(f"strides: expected a non-empty list of positive numbers, got {strides!r}")
        self.strides = [_positive_number(f"strides[{i}]", s) for i, s in enumerate(strides)]
        self.offset = _unit_interval("offset", offset, upper_open=True)
        sizes = _per_level_lists("sizes", sizes, None)
        ratios = _per_level_lists("aspect_ratios", aspect_ratios, None)
        # A single entry applies to every level, as detectron2 broadcasts it.
        self.sizes = sizes * self.num_levels if len(sizes) == 1 else sizes
        self.aspect_ratios = ratios * self.num_levels if len(ratios) == 1 else ratios
        for name, value in (("sizes", self.sizes), ("aspect_ratios", self.aspect_ratios)):
            if len(value) != self.num_levels:
                raise ValueError(
                    f"{name}: got {len(value)} levels, expected 1 or one per stride ({self.num_levels})"
                )
        self.base_anchors = [
            self._cell_anchors(s, r) for s, r in zip(self.sizes, self.aspect_ratios)
        ]

    @staticmethod
    def _cell_anchors(sizes, ratios) -> torch.Tensor:
        # w = sqrt(size^2 / r) = size / sqrt(r) and h = r * w = size * sqrt(r).
        ws, hs = _detectron2_widths_heights(sizes, ratios)  # (S*R,) float64
        return _corners(0.0, 0.0, ws, hs, _DETECTRON2_CORNERS)  # (A, 4)

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    @property
    def num_base_anchors(self) -> list[int]:
        return [len(b) for b in self.base_anchors]

    def grid_anchors(self, featmap_sizes, device="cpu") -> list[torch.Tensor]:
        """Anchors of every level: ``list`` of ``(H*W*A, 4)`` float32 on ``device``.

        featmap_sizes: one ``(H, W)`` of positive ints per level.
        """
        sizes = _featmap_sizes(featmap_sizes, self.num_levels)
        return [
            _place_on_grid(
                self.base_anchors[i],
                _detectron2_location_shifts(size, self.strides[i], self.offset, device),
            )
            for i, size in enumerate(sizes)
        ]

    def grid_priors(self, featmap_sizes, device="cpu", image_size=None) -> list[torch.Tensor]:
        """The detectors' one call shape for every anchor generator: per level
        ``(H*W*A, 4)`` anchors. ``image_size`` (the padded batch (H, W)) is not needed."""
        return self.grid_anchors(featmap_sizes, device)

    def valid_flags(self, featmap_sizes, pad_shape, device="cpu") -> list[torch.Tensor]:
        """All True, per level ``(H*W*A,)``: detectron2 has no valid flags (anchors over an
        image's padding take part like any other); the detectors' common call shape."""
        sizes = _featmap_sizes(featmap_sizes, self.num_levels)
        return [torch.ones(h * w * a, dtype=torch.bool, device=device)
                for (h, w), a in zip(sizes, self.num_base_anchors)]


# --------------------------------------------------------------------------- torchvision
class TorchvisionAnchorGenerator:
    """torchvision's ``detection.anchor_utils.AnchorGenerator`` (flavour ``torchvision``) [ANC-10].

    Args:
        sizes: per level, a tuple of anchor sizes, e.g. ``((32, 40, 50), ...)``.
        aspect_ratios: per level, a tuple of ratios ``r = h / w``; as many levels
            as ``sizes``.

    Base anchors are ``[-w/2, -h/2, w/2, h/2]`` with ``w = size / sqrt(r)``,
    ``h = size * sqrt(r)``, enumerated ratio OUTER, size inner, computed in
    float32 and rounded half to even, so they are integers. Location ``(y, x)``
    is at ``(x * stride_w, y * stride_h)`` (no centre offset), where the stride
    is derived from the batch: ``stride = image_size // featmap_size`` per axis.
    """

    def __init__(self, sizes, aspect_ratios) -> None:
        self.sizes = _per_level_lists("sizes", sizes, None)
        self.aspect_ratios = _per_level_lists("aspect_ratios", aspect_ratios, len(self.sizes))
        self.base_anchors = [self._base(s, r) for s, r in zip(self.sizes, self.aspect_ratios)]

    @staticmethod
    def _base(sizes, ratios) -> torch.Tensor:
        rule = _TORCHVISION_CORNERS
        ws, hs = _torchvision_widths_heights(
            torch.tensor(sizes, dtype=rule.dtype), torch.tensor(ratios, dtype=rule.dtype)
        )  # (R*S,) each
        return _corners(0.0, 0.0, ws, hs, rule)  # (A, 4), integers

    @property
    def num_levels(self) -> int:
        return len(self.sizes)

    @property
    def num_base_anchors(self) -> list[int]:
        return [len(b) for b in self.base_anchors]

    def strides_for(self, image_size, featmap_sizes) -> list[tuple[int, int]]:
        """``(stride_w, stride_h)`` per level: ``image_size // featmap_size`` per axis."""
        image_h, image_w = _hw("image_size", image_size)
        sizes = _featmap_sizes(featmap_sizes, self.num_levels)
        return [(image_w // w, image_h // h) for h, w in sizes]

    def grid_anchors(self, image_size, featmap_sizes, device="cpu") -> list[torch.Tensor]:
        """Anchors of every level: ``list`` of ``(H*W*A, 4)`` float32 on ``device``.

        image_size: ``(H, W)`` of the padded batch tensor; featmap_sizes: one
        ``(H, W)`` per level, each no larger than the image.
        """
        image_h, image_w = _hw("image_size", image_size)
        sizes = _featmap_sizes(featmap_sizes, self.num_levels)
        for i, (h, w) in enumerate(sizes):
            if h > image_h or w > image_w:
                raise ValueError(
                    f"featmap_sizes[{i}]: {(h, w)} is larger than image_size {(image_h, image_w)}; "
                    "the stride image_size // featmap_size would be 0"
                )
        strides = self.strides_for((image_h, image_w), sizes)
        return [
            _place_on_grid(self.base_anchors[i], _location_shifts(size, strides[i], 0.0, device))
            for i, size in enumerate(sizes)
        ]

    def grid_priors(self, featmap_sizes, device="cpu", image_size=None) -> list[torch.Tensor]:
        """The detectors' one call shape for every anchor generator: per level
        ``(H*W*A, 4)`` anchors. ``image_size``, the padded batch (H, W), is required
        here: torchvision derives the strides from it."""
        if image_size is None:
            raise ValueError("image_size: required by the torchvision generator (its strides are "
                             "image_size // featmap_size), got None")
        return self.grid_anchors(image_size, featmap_sizes, device)

    def valid_flags(self, featmap_sizes, pad_shape, device="cpu") -> list[torch.Tensor]:
        """All True, per level ``(H*W*A,)``: torchvision has no valid flags (anchors over an
        image's padding take part like any other); the detectors' common call shape."""
        sizes = _featmap_sizes(featmap_sizes, self.num_levels)
        return [torch.ones(h * w * a, dtype=torch.bool, device=device)
                for (h, w), a in zip(sizes, self.num_base_anchors)]


# --------------------------------------------------------------------------- points
class MlvlPointGenerator:
    """mmdetection's ``MlvlPointGenerator``: one point prior per location [PTS-1 .. PTS-5].

    Args:
        strides: one stride per level, an int or a ``(stride_w, stride_h)`` pair.
        offset: in ``[0, 1]``; location ``(y, x)`` is the point
            ``((x + offset) * stride_w, (y + offset) * stride_h)``. The class
            default is 0.5 (pixel centre); RTMDet's configs use 0.
    """

    def __init__(self, strides, offset: float = 0.5) -> None:
        self.strides = _stride_pairs("strides", strides)
        self.offset = _unit_interval("offset", offset, upper_open=False)

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    @property
    def num_base_priors(self) -> list[int]:
        return [1] * self.num_levels

    def grid_priors(self, featmap_sizes, device="cpu", with_stride: bool = False) -> list[torch.Tensor]:
        """Points of every level, row-major: ``(H*W, 2)`` [x, y] float32, or with
        ``with_stride=True`` ``(H*W, 4)`` [x, y, stride_w, stride_h]."""
        if not isinstance(with_stride, bool):
            raise TypeError(f"with_stride: expected a bool, got {with_stride!r}")
        sizes = _featmap_sizes(featmap_sizes, self.num_levels)
        priors = []
        for size, stride in zip(sizes, self.strides):
            points = _location_shifts(size, stride, self.offset, device)  # (H*W, 2)
            if with_stride:
                strides = points.new_tensor(stride).expand(len(points), 2)  # (H*W, 2)
                points = torch.cat([points, strides], dim=-1)  # (H*W, 4)
            priors.append(points)
        return priors

    def valid_flags(self, featmap_sizes, pad_shape, device="cpu") -> list[torch.Tensor]:
        """``list`` of ``(H*W,)`` bool, by the same ``ceil(pad / stride)`` rule as anchors."""
        sizes = _featmap_sizes(featmap_sizes, self.num_levels)
        pad = _hw("pad_shape", pad_shape, allow_channels=True)
        return [
            _location_valid_flags(size, _valid_extent(size, pad, stride), 1, device)
            for size, stride in zip(sizes, self.strides)
        ]


# --------------------------------------------------------------------------- inside flags
def anchor_inside_flags(flat_anchors, valid_flags, img_shape, allowed_border=0) -> torch.Tensor:
    """Which anchors to train on: valid and inside the image (up to a border) [ANC-11 .. ANC-14].

    Args:
        flat_anchors: ``(N, 4)`` floating xyxy anchors of one image, all levels.
        valid_flags: ``(N,)`` bool, e.g. the concatenated ``valid_flags`` levels.
        img_shape: ``(H, W)`` or ``(H, W, C)``: the image before padding.
        allowed_border: ``b``. With ``b >= 0`` an anchor is inside iff
            ``x1 >= -b``, ``y1 >= -b``, ``x2 < W + b`` and ``y2 < H + b``: the
            far side is STRICT, so an anchor ending exactly at ``W`` is outside.
            An anchor with a non-finite coordinate is outside. With ``b < 0``
            (RetinaNet's -1) the border is not checked at all.

    Returns:
        ``(N,)`` bool: ``valid_flags`` and the border test.
    """
    if not isinstance(flat_anchors, torch.Tensor):
        raise TypeError(f"flat_anchors: expected a tensor, got {type(flat_anchors).__name__}")
    if not isinstance(valid_flags, torch.Tensor):
        raise TypeError(f"valid_flags: expected a tensor, got {type(valid_flags).__name__}")
    if flat_anchors.dim() != 2 or flat_anchors.shape[1] != 4:
        raise ValueError(f"flat_anchors: expected shape (N, 4), got {tuple(flat_anchors.shape)}")
    if not flat_anchors.is_floating_point():
        raise ValueError(f"flat_anchors: expected a floating dtype, got {flat_anchors.dtype}")
    if valid_flags.dtype != torch.bool:
        raise ValueError(f"valid_flags: expected dtype torch.bool, got {valid_flags.dtype}")
    if valid_flags.shape != (len(flat_anchors),):
        raise ValueError(
            f"valid_flags: expected shape ({len(flat_anchors)},) to match flat_anchors, "
            f"got {tuple(valid_flags.shape)}"
        )
    if valid_flags.device != flat_anchors.device:
        raise ValueError(
            f"valid_flags: on {valid_flags.device}, expected the device of flat_anchors "
            f"({flat_anchors.device})"
        )
    img_h, img_w = _hw("img_shape", img_shape, allow_channels=True)
    if not _is_number(allowed_border) or not math.isfinite(allowed_border):
        raise ValueError(f"allowed_border: expected a finite number, got {allowed_border!r}")

    if allowed_border < 0:
        return valid_flags.clone()
    b = allowed_border
    x1, y1, x2, y2 = flat_anchors.unbind(dim=1)  # (N,) each
    # A non-finite anchor is never inside: comparisons with NaN are False, and the
    # finiteness test catches x1 = +inf (or y1 = +inf), which passes x1 >= -b.
    inside = (x1 >= -b) & (y1 >= -b) & (x2 < img_w + b) & (y2 < img_h + b)  # (N,)
    inside &= torch.isfinite(flat_anchors).all(dim=1)
    return valid_flags & inside


# --------------------------------------------------------------------------- RetinaNet presets
@dataclasses.dataclass(frozen=True)
class RetinaNetAnchorPreset:
    """The RetinaNet anchor configuration of one flavour, as data [ANC-18].

    flavour: "mmdet", "detectron2" or "torchvision".
    strides: per level (P3..P7), the same on both axes. Nominal for torchvision,
        whose generator derives them from the batch (``image_size // featmap_size``:
        on an 800x1216 batch P7 is 7x10, so its strides are 114 down, 121 across).
    sizes: per level, the side of the ratio-1 anchors as the flavour computes
        it: stride * octave_base_scale * 2**(i/3) in float for mmdet and
        detectron2 (32 * 2**(i/3) at P3 with the upstream base scale 4), truncated
        with ``int()`` for torchvision.
    aspect_ratios: ``h / w``, the same on every level.
    center_offset: centre of location (0, 0) in units of the stride (0 for all
        three RetinaNets; torchvision has no offset at all).
    order: enumeration inside one location, "ratio_outer" or "size_outer".
    rounds_base_anchors: whether base-anchor corners are rounded to integers.
    octave_base_scale / scales_per_octave: mmdet's two numbers behind ``sizes``.
    ``build()`` makes the flavour's generator with exactly these settings.
    """

    flavour: str
    strides: tuple[int, ...]
    sizes: tuple[tuple[float, ...], ...]
    aspect_ratios: tuple[float, ...]
    center_offset: float
    order: str
    rounds_base_anchors: bool
    octave_base_scale: float = 4.0
    scales_per_octave: int = 3

    def build(self):
        """The flavour's generator: ``AnchorGenerator`` (mmdet: base size = stride,
        scales octave_base_scale * 2**(i/n)), ``DefaultAnchorGenerator`` (detectron2:
        the sizes, offset 0) or ``TorchvisionAnchorGenerator`` (the truncated sizes)."""
        if self.flavour == "mmdet":
            return AnchorGenerator(strides=list(self.strides), ratios=list(self.aspect_ratios),
                                   octave_base_scale=self.octave_base_scale,
                                   scales_per_octave=self.scales_per_octave)
        if self.flavour == "detectron2":
            return DefaultAnchorGenerator(sizes=[list(s) for s in self.sizes],
                                          aspect_ratios=[list(self.aspect_ratios)],
                                          strides=list(self.strides), offset=self.center_offset)
        return TorchvisionAnchorGenerator(sizes=[list(s) for s in self.sizes],
                                          aspect_ratios=[list(self.aspect_ratios)] * len(self.sizes))


_RETINANET_STRIDES = (8, 16, 32, 64, 128)
_RETINANET_RATIOS = (0.5, 1.0, 2.0)
_RETINANET_ORDER = {"mmdet": "ratio_outer", "detectron2": "size_outer", "torchvision": "ratio_outer"}


def retinanet_anchor_preset(flavour: str, octave_base_scale: float = 4.0,
                            scales_per_octave: int = 3) -> RetinaNetAnchorPreset:
    """The RetinaNet anchor settings of ``flavour`` ("mmdet", "detectron2", "torchvision").

    octave_base_scale / scales_per_octave: 4 and 3 upstream (sizes 32, 40.3175,
    50.7968 at P3; torchvision truncates them to 32, 40, 50); smaller models change them.
    """
    if flavour not in _RETINANET_ORDER:
        raise ValueError(f"flavour: expected one of {sorted(_RETINANET_ORDER)}, got {flavour!r}")
    base = _positive_number("octave_base_scale", octave_base_scale)
    n = _positive_int("scales_per_octave", scales_per_octave)
    # Three sizes per octave: stride * base * 2**(i/n), doubling per level.
    sizes = tuple(tuple(s * base * 2 ** (i / n) for i in range(n)) for s in _RETINANET_STRIDES)
    if flavour == "torchvision":  # (32, 40, 50), (64, 80, 101), ..., (512, 645, 812)
        sizes = tuple(tuple(float(int(v)) for v in level) for level in sizes)
    return RetinaNetAnchorPreset(
        flavour=flavour, strides=_RETINANET_STRIDES, sizes=sizes,
        aspect_ratios=_RETINANET_RATIOS, center_offset=0.0, order=_RETINANET_ORDER[flavour],
        rounds_base_anchors=flavour == "torchvision", octave_base_scale=base,
        scales_per_octave=n)
