"""Box coders: turning a box into regression targets relative to a prior, and back.

A detector does not regress box corners directly. It regresses a small code that
says how to move and stretch a *prior* (an anchor, a proposal or a point) onto the
box. Two families of code live here.

Delta codes (RetinaNet, Faster R-CNN), SPEC.md clauses COD-1 to COD-19
    A prior ``p`` and a target ``g``, both xyxy, are described by centre and size::

        px = (x1 + x2) / 2     pw = x2 - x1      (no "+1": mmdet 2.x, detectron2, torchvision)

    and encoded as ``dx = (gx - px) / pw``, ``dy = (gy - py) / ph``,
    ``dw = log(gw / pw)``, ``dh = log(gh / ph)``. Decoding inverts this, after
    clamping ``dw`` and ``dh`` so that ``exp`` cannot overflow. The three libraries
    share the formula and differ in four small ways, which the frozen
    ``DeltaFlavour`` presets below hold as data:

    ===================  =====================  ==================  ==================
                         mmdet 2.x              detectron2          torchvision
    ===================  =====================  ==================  ==================
    class / methods      DeltaXYWHBBoxCoder     Box2BoxTransform    BoxCoder
                         encode / decode        get_deltas /        encode_single /
                                                apply_deltas        decode_single
    normalisation        (d - means) / stds     d * weights         d * weights
    dw, dh clamp         both sides             upper side only     upper side only
    encode dtype         float32 always         promoted inputs     promoted inputs
    decode dtype         promoted inputs        float32 always      dtype of deltas
    leading batch dims   yes                    no (2-D only)       no (2-D only)
    ===================  =====================  ==================  ==================

    Weights are stored as ``stds = 1 / weights`` (and ``means = 0``) so that a
    single normalisation formula serves all three: mmdet R-CNN stds
    (0.1, 0.1, 0.2, 0.2) are detectron2/torchvision weights (10, 10, 5, 5).

Distance codes (RTMDet, FCOS-like heads), clauses COD-20 to COD-27
    A point ``(px, py)`` and a box are encoded as the distances from the point to
    the four sides, in the order (left, top, right, bottom)::

        l = px - x1   t = py - y1   r = x2 - px   b = y2 - py

    (mmdet's ``bbox2distance`` docstring says "top, bottom, left, right"; the code,
    and this module, use left, top, right, bottom.)

Shape letters used below: ``N`` priors (boxes or points), ``K`` classes in a
class-specific delta tensor of ``K*4`` columns, ``...`` optional leading batch dims.
Boxes are xyxy floats throughout.

Coders do not check finiteness: a NaN in an input row yields NaN in the same output
row and leaves other rows alone (detectron2's proposal stage relies on seeing
non-finite decoded boxes).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence, Union

import torch
from torch import Tensor

from reference import validate as check

__all__ = [
    "DeltaXYWHBBoxCoder",
    "Box2BoxTransform",
    "BoxCoder",
    "bbox2distance",
    "distance2bbox",
    "DistancePointBBoxCoder",
    "DeltaCodec",
]

# A 16 px prior may grow to at most 1000 px: dw, dh <= log(1000 / 16) = 4.1352.
# mmdet expresses the same bound as wh_ratio_clip = 16 / 1000 and |log(.)|.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)
DEFAULT_WH_RATIO_CLIP = 16 / 1000

MaxShape = Union[Sequence[float], Tensor]


# --------------------------------------------------------------------------- flavours
@dataclasses.dataclass(frozen=True)
class DeltaFlavour:
    """How one library sets the knobs of the shared delta code.

    clamp_below: decode clamps dw, dh to ``[-c, c]`` (True) or only to ``<= c``.
    encode_dtype: dtype the deltas are computed and returned in; ``None`` means
        ``torch.promote_types(source dtype, target dtype)``.
    decode_dtype: dtype the boxes are decoded and returned in; ``None`` means the
        promoted dtype of the priors and deltas, ``"deltas"`` the dtype of the deltas.
    batch_dims: leading batch dims ``(B, N, 4)`` accepted; otherwise exactly 2-D.
    reject_empty_sources: encode raises if a source box has width or height <= 0
        (detectron2 asserts on widths) instead of returning inf/NaN deltas.
    weighted: upstream multiplies the raw code by ``weights`` on encode
        (``wx * (gx - px) / pw``) and divides by them on decode (detectron2,
        torchvision), where mmdet normalises with ``(raw - means) / stds`` and
        ``d * stds + means``. The same number in exact arithmetic, but not in
        float32, and decoded boxes go on to NMS thresholds [COD-28].
    centre_from_corner: a box's centre is ``x1 + 0.5 * w`` (detectron2,
        torchvision) rather than mmdet's ``(x1 + x2) * 0.5``.
    """

    name: str
    clamp_below: bool
    encode_dtype: torch.dtype | None
    decode_dtype: torch.dtype | str | None
    batch_dims: bool
    reject_empty_sources: bool
    weighted: bool = False
    centre_from_corner: bool = False


MMDET_DELTAS = DeltaFlavour(
    "mmdet", clamp_below=True, encode_dtype=torch.float32, decode_dtype=None,
    batch_dims=True, reject_empty_sources=False,
)
DETECTRON2_DELTAS = DeltaFlavour(
    "detectron2", clamp_below=False, encode_dtype=None, decode_dtype=torch.float32,
    batch_dims=False, reject_empty_sources=True, weighted=True, centre_from_corner=True,
)
TORCHVISION_DELTAS = DeltaFlavour(
    "torchvision", clamp_below=False, encode_dtype=None, decode_dtype="deltas",
    batch_dims=False, reject_empty_sources=False, weighted=True, centre_from_corner=True,
)


# --------------------------------------------------------------------------- shared core
def _centre_and_size(boxes: Tensor, from_corner: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(..., 4) xyxy boxes -> centre x, centre y, width, height, each (...).

    The centre is ``(x1 + x2) * 0.5`` (mmdet) or ``x1 + 0.5 * w`` (``from_corner``:
    detectron2, torchvision), each upstream's own rounding.
    """
    x1, y1, x2, y2 = boxes.unbind(-1)
    w, h = x2 - x1, y2 - y1
    if from_corner:
        return x1 + 0.5 * w, y1 + 0.5 * h, w, h
    return (x1 + x2) * 0.5, (y1 + y2) * 0.5, w, h


def _encode_deltas(sources: Tensor, targets: Tensor, means: Tensor, stds: Tensor,
                   flavour: DeltaFlavour, weights=None) -> Tensor:
    """Normalised deltas that move each source box onto its target.

    sources, targets: (..., 4) xyxy, same shape and dtype. means, stds: (4,).
    Returns (..., 4) columns (dx, dy, dw, dh), ``(raw - means) / stds``, or with a
    ``weighted`` flavour ``weights * raw`` in upstream's order (``wx * (gx - px) / pw``).
    """
    px, py, pw, ph = _centre_and_size(sources, flavour.centre_from_corner)
    gx, gy, gw, gh = _centre_and_size(targets, flavour.centre_from_corner)
    if flavour.weighted:
        wx, wy, ww, wh = weights
        return torch.stack([wx * (gx - px) / pw, wy * (gy - py) / ph,
                            ww * torch.log(gw / pw), wh * torch.log(gh / ph)], dim=-1)  # (..., 4)
    raw = torch.stack(
        [(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], dim=-1
    )  # (..., 4)
    return (raw - means) / stds


def _decode_deltas(
    priors: Tensor,
    deltas: Tensor,
    means: Tensor,
    stds: Tensor,
    scale_clamp: float,
    clamp_below: bool,
    ctr_clamp: float | None,
    flavour: DeltaFlavour = MMDET_DELTAS,
    weights=None,
) -> Tensor:
    """Boxes obtained by moving each prior by its (possibly class-specific) deltas.

    priors: (..., 4) xyxy. deltas: (..., K*4) normalised (dx, dy, dw, dh) per class,
    same leading shape and dtype. means, stds: (4,). scale_clamp: the bound on
    dw, dh (upper always; lower too if ``clamp_below``). ctr_clamp: if given, the
    centre shift ``dx * pw`` (in pixels) is clamped to ``[-ctr_clamp, ctr_clamp]``.
    Returns (..., K*4) xyxy boxes.
    """
    num_classes = deltas.shape[-1] // 4
    d = deltas.reshape(*deltas.shape[:-1], num_classes, 4)  # (..., K, 4)
    if flavour.weighted:  # detectron2, torchvision: dx = delta / wx
        d = d / torch.tensor(weights, dtype=d.dtype, device=d.device)
    else:  # mmdet: delta * std + mean
        d = d * stds + means
    dx, dy, dw, dh = d.unbind(-1)  # each (..., K)
    px, py, pw, ph = (t.unsqueeze(-1) for t in _centre_and_size(priors, flavour.centre_from_corner))
    # px, py, pw, ph: each (..., 1)

    shift_x, shift_y = dx * pw, dy * ph  # centre shift in pixels, (..., K)
    if ctr_clamp is not None:
        shift_x = shift_x.clamp(min=-ctr_clamp, max=ctr_clamp)
        shift_y = shift_y.clamp(min=-ctr_clamp, max=ctr_clamp)

    # exp(dw) must not overflow; mmdet also stops boxes from shrinking to nothing.
    low = -scale_clamp if clamp_below else None
    dw = dw.clamp(min=low, max=scale_clamp)
    dh = dh.clamp(min=low, max=scale_clamp)

    gx, gy = px + shift_x, py + shift_y
    gw, gh = pw * torch.exp(dw), ph * torch.exp(dh)
    boxes = torch.stack(
        [gx - 0.5 * gw, gy - 0.5 * gh, gx + 0.5 * gw, gy + 0.5 * gh], dim=-1
    )  # (..., K, 4)
    return boxes.reshape(deltas.shape)


def _clip_to_image(boxes: Tensor, max_shape: Tensor) -> Tensor:
    """Clip (..., K*4) xyxy boxes to [0, W] x [0, H].

    max_shape: (2,) holding (H, W) for every box, or (B, 2) one per image when
    boxes is (B, N, K*4).
    """
    pairs = boxes.shape[-1] // 2  # one (x, y) pair per corner per class
    upper = max_shape.flip(-1).repeat(*([1] * (max_shape.dim() - 1)), pairs)  # (K*4,) or (B, K*4): W, H, W, H, ...
    if max_shape.dim() == 2:
        upper = upper.unsqueeze(1)  # (B, 1, K*4), broadcast over the N boxes
    return torch.minimum(boxes.clamp(min=0), upper)


# --------------------------------------------------------------------------- validation
def _as_max_shape(max_shape: MaxShape, boxes: Tensor) -> Tensor:
    """(H, W[, C]) -> (2,) tensor, or (B, >=2) per image -> (B, 2); in boxes' dtype."""
    try:
        shape = torch.as_tensor(max_shape, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"max_shape: expected (H, W) numbers, got {max_shape!r}") from None
    per_image = shape.dim() == 2 and boxes.dim() == 3 and shape.shape[0] == boxes.shape[0]
    if not (shape.dim() == 1 or per_image) or shape.shape[-1] < 2:
        raise ValueError(
            f"max_shape: expected (H, W) or one (H, W) per image of {tuple(boxes.shape)}, "
            f"got shape {tuple(shape.shape)}"
        )
    shape = shape[..., :2]
    if not bool(torch.isfinite(shape).all()) or bool((shape < 0).any()):
        raise ValueError(f"max_shape: expected finite (H, W) >= 0, got {max_shape!r}")
    return shape.to(dtype=boxes.dtype, device=boxes.device)


def _result_dtype(policy, a: Tensor, b: Tensor) -> torch.dtype:
    if isinstance(policy, torch.dtype):
        return policy
    if policy == "deltas":
        return b.dtype
    return torch.promote_types(a.dtype, b.dtype)


def _reject_empty(name: str, boxes: Tensor) -> None:
    sizes = boxes[..., 2:] - boxes[..., :2]  # (..., 2) widths, heights
    if bool((sizes <= 0).any()):
        row = int((sizes <= 0).any(-1).nonzero()[0, 0])
        raise check.fail(name, "source boxes of width and height > 0",
                         f"row {row} = {boxes[row].tolist()}")


# --------------------------------------------------------------------------- delta coders
class _DeltaCoder:
    """The shared encode/decode of the three delta coders; flavour and numbers as data."""

    flavour: DeltaFlavour

    def __init__(self, means, stds, scale_clamp: float, weights=None) -> None:
        self._means = means
        self._stds = stds
        self._scale_clamp = scale_clamp
        self._weights = weights  # (wx, wy, ww, wh) of a weighted flavour

    def _encode(self, src_name: str, sources, dst_name: str, targets) -> Tensor:
        fl = self.flavour
        dims = {"min_ndim": 2} if fl.batch_dims else {"ndim": 2}  # (..., N, 4) or (N, 4)
        check.tensor(src_name, sources, **dims, last=4, dtype="floating")
        check.tensor(dst_name, targets, **dims, last=4, dtype="floating")
        check.same_device(**{src_name: sources, dst_name: targets})
        check.leading_shape(dst_name, targets, src_name, sources)
        if fl.reject_empty_sources:
            _reject_empty(src_name, sources)
        dtype = _result_dtype(fl.encode_dtype, sources, targets)
        means = torch.tensor(self._means, dtype=dtype, device=sources.device)
        stds = torch.tensor(self._stds, dtype=dtype, device=sources.device)
        return _encode_deltas(sources.to(dtype), targets.to(dtype), means, stds, fl, self._weights)

    def _decode(self, priors_name: str, priors, deltas_name: str, deltas,
                scale_clamp: float, ctr_clamp: float | None, max_shape) -> Tensor:
        fl = self.flavour
        dims = {"min_ndim": 2} if fl.batch_dims else {"ndim": 2}  # (..., N, ·) or (N, ·)
        check.tensor(priors_name, priors, **dims, last=4, dtype="floating")
        check.tensor(deltas_name, deltas, **dims, groups_of=4, dtype="floating")
        check.same_device(**{priors_name: priors, deltas_name: deltas})
        check.leading_shape(deltas_name, deltas, priors_name, priors)
        dtype = _result_dtype(fl.decode_dtype, priors, deltas)
        work = check.compute_dtype(dtype)  # float16/bfloat16 computed in float32 (VAL-2)
        shape = None if max_shape is None else _as_max_shape(max_shape, deltas.to(work))
        means = torch.tensor(self._means, dtype=work, device=deltas.device)
        stds = torch.tensor(self._stds, dtype=work, device=deltas.device)
        boxes = _decode_deltas(
            priors.to(work), deltas.to(work), means, stds,
            scale_clamp, clamp_below=fl.clamp_below and ctr_clamp is None, ctr_clamp=ctr_clamp,
            flavour=fl, weights=self._weights,
        )
        boxes = boxes if shape is None else _clip_to_image(boxes, shape)
        return boxes.to(dtype)


class DeltaXYWHBBoxCoder(_DeltaCoder):
    """mmdet 2.x ``DeltaXYWHBBoxCoder`` (RetinaNet, Faster R-CNN).

    target_means, target_stds: 4 floats; deltas are ``(raw - means) / stds``
        (RetinaNet (0,0,0,0)/(1,1,1,1); R-CNN stds (0.1, 0.1, 0.2, 0.2)). Stds must
        be non-zero.
    clip_border: clip decoded boxes to the image when ``decode`` gets ``max_shape``.
    add_ctr_clamp, ctr_clamp: clamp the decoded centre shift to ``+-ctr_clamp``
        pixels; dw, dh are then clamped from above only (COD-8).
    """

    flavour = MMDET_DELTAS

    def __init__(
        self,
        target_means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
        target_stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        clip_border: bool = True,
        add_ctr_clamp: bool = False,
        ctr_clamp: float = 32,
    ) -> None:
        self.means = check.numbers("target_means", target_means, length=4)
        self.stds = check.numbers("target_stds", target_stds, length=4, low=0, low_open=True)
        self.clip_border = check.flag("clip_border", clip_border)
        self.add_ctr_clamp = check.flag("add_ctr_clamp", add_ctr_clamp)
        self.ctr_clamp = check.number("ctr_clamp", ctr_clamp, low=0)
        super().__init__(self.means, self.stds, DEFAULT_SCALE_CLAMP)

    def encode(self, bboxes: Tensor, gt_bboxes: Tensor) -> Tensor:
        """Deltas that move ``bboxes`` onto ``gt_bboxes``.

        bboxes: (..., N, 4) priors (anchors, proposals), xyxy, floating.
        gt_bboxes: (..., N, 4) targets, same leading shape and device.
        Returns (..., N, 4) float32 (dx, dy, dw, dh) (mmdet casts with ``.float()``).
        A prior with zero width or height gives inf/NaN in its row (COD-16).
        """
        return self._encode("bboxes", bboxes, "gt_bboxes", gt_bboxes)

    def decode(
        self,
        bboxes: Tensor,
        pred_bboxes: Tensor,
        max_shape: MaxShape | None = None,
        wh_ratio_clip: float = DEFAULT_WH_RATIO_CLIP,
    ) -> Tensor:
        """Boxes obtained by applying ``pred_bboxes`` deltas to ``bboxes``.

        bboxes: (..., N, 4) priors, xyxy. pred_bboxes: (..., N, K*4) deltas, K >= 1
        (class-specific when K > 1), same leading shape and device.
        max_shape: (H, W) (extra entries such as channels are ignored) or, for
            batched input (B, N, ...), one (H, W) per image; with ``clip_border``
            the boxes are clipped to [0, W] x [0, H].
        wh_ratio_clip: dw, dh are clamped to ``+-|log(wh_ratio_clip)|`` (default
            4.1352, both sides; upper side only with ``add_ctr_clamp``).
        Returns (..., N, K*4) boxes in the promoted dtype of the inputs.
        """
        clip = check.number("wh_ratio_clip", wh_ratio_clip, low=0, low_open=True)
        return self._decode(
            "bboxes", bboxes, "pred_bboxes", pred_bboxes,
            scale_clamp=abs(math.log(clip)),
            ctr_clamp=self.ctr_clamp if self.add_ctr_clamp else None,
            max_shape=max_shape if self.clip_border else None,
        )


class Box2BoxTransform(_DeltaCoder):
    """detectron2 ``Box2BoxTransform`` (RPN (1,1,1,1), ROI heads (10,10,5,5)).

    weights: 4 positive floats (wx, wy, ww, wh) the raw deltas are multiplied by.
    scale_clamp: decoded dw, dh are clamped to ``<= scale_clamp`` (no lower bound).
    """

    flavour = DETECTRON2_DELTAS

    def __init__(self, weights: Sequence[float], scale_clamp: float = DEFAULT_SCALE_CLAMP) -> None:
        self.weights = check.numbers("weights", weights, length=4, low=0, low_open=True)
        self.scale_clamp = check.number("scale_clamp", scale_clamp, low=0, low_open=True)
        super().__init__((0.0,) * 4, tuple(1.0 / w for w in self.weights), self.scale_clamp,
                         weights=self.weights)

    def get_deltas(self, src_boxes: Tensor, target_boxes: Tensor) -> Tensor:
        """(N, 4) src_boxes, (N, 4) target_boxes, xyxy -> (N, 4) weighted deltas.

        Dtype: promoted from the inputs. Raises ValueError if a source box has
        width or height <= 0 (detectron2 asserts on widths, COD-17).
        """
        return self._encode("src_boxes", src_boxes, "target_boxes", target_boxes)

    def apply_deltas(self, deltas: Tensor, boxes: Tensor) -> Tensor:
        """(N, K*4) deltas applied to (N, 4) boxes -> (N, K*4) boxes, always float32.

        detectron2 casts the deltas (and boxes) to float32 "for decoding precision".
        """
        return self._decode(
            "boxes", boxes, "deltas", deltas,
            scale_clamp=self.scale_clamp, ctr_clamp=None, max_shape=None,
        )


class BoxCoder(_DeltaCoder):
    """torchvision ``BoxCoder`` (``models.detection._utils``), single-image methods.

    weights: 4 positive floats, as in ``Box2BoxTransform``.
    bbox_xform_clip: decoded dw, dh are clamped to ``<= bbox_xform_clip``.
    Note the argument order of ``encode_single``: the ground truth comes FIRST.
    """

    flavour = TORCHVISION_DELTAS

    def __init__(self, weights: Sequence[float],
                 bbox_xform_clip: float = DEFAULT_SCALE_CLAMP) -> None:
        self.weights = check.numbers("weights", weights, length=4, low=0, low_open=True)
        self.bbox_xform_clip = check.number("bbox_xform_clip", bbox_xform_clip, low=0,
                                            low_open=True)
        super().__init__((0.0,) * 4, tuple(1.0 / w for w in self.weights), self.bbox_xform_clip,
                         weights=self.weights)

    def encode_single(self, reference_boxes: Tensor, proposals: Tensor) -> Tensor:
        """Deltas moving ``proposals`` onto ``reference_boxes`` (the gts), (N, 4) each.

        Returns (N, 4) in the promoted dtype. A proposal with zero width or height
        gives inf/NaN in its row.
        """
        return self._encode("proposals", proposals, "reference_boxes", reference_boxes)

    def decode_single(self, rel_codes: Tensor, boxes: Tensor) -> Tensor:
        """(N, K*4) rel_codes applied to (N, 4) boxes -> (N, K*4), in rel_codes' dtype."""
        return self._decode(
            "boxes", boxes, "rel_codes", rel_codes,
            scale_clamp=self.bbox_xform_clip, ctr_clamp=None, max_shape=None,
        )


# --------------------------------------------------------------------------- distance coder
def _check_points_and_boxes(points, points_name: str, boxes, boxes_name: str) -> torch.dtype:
    """Points (..., 2) or (..., 4) (x, y, stride_w, stride_h) broadcastable to boxes (..., 4)."""
    check.tensor(points_name, points, min_ndim=2, last=(2, 4), dtype="floating")
    check.tensor(boxes_name, boxes, min_ndim=2, last=4, dtype="floating")
    check.same_device(**{points_name: points, boxes_name: boxes})
    try:
        leading = torch.broadcast_shapes(points.shape[:-1], boxes.shape[:-1])
    except RuntimeError:
        leading = None
    if leading != boxes.shape[:-1]:
        raise check.fail(points_name, f"a leading shape that broadcasts to {boxes_name}'s "
                         f"{tuple(boxes.shape[:-1])}", points)
    return torch.promote_types(points.dtype, boxes.dtype)


def bbox2distance(points: Tensor, bbox: Tensor, max_dis: float | None = None,
                  eps: float = 0.1) -> Tensor:
    """Distances from each point to the four sides of its box.

    points: (..., N, 2) (x, y), or (..., N, 4) with the strides appended (ignored);
        its leading shape must broadcast to bbox's.
    bbox: (..., N, 4) xyxy.
    max_dis, eps: if max_dis is given, every distance is clamped to
        ``[0, max_dis - eps]`` (requires max_dis > eps); otherwise distances are
        left as they are, negative for a point outside its box.
    Returns (..., N, 4) (left, top, right, bottom) in the promoted dtype.
    """
    dtype = _check_points_and_boxes(points, "points", bbox, "bbox")
    if max_dis is not None:
        max_dis = check.number("max_dis", max_dis, low=0, low_open=True)
        eps = check.number("eps", eps, low=0)
        if max_dis <= eps:
            raise check.fail("max_dis", f"a number > eps = {eps}", max_dis)
    px, py = points[..., 0].to(dtype), points[..., 1].to(dtype)
    bbox = bbox.to(dtype)
    distances = torch.stack(
        [px - bbox[..., 0], py - bbox[..., 1], bbox[..., 2] - px, bbox[..., 3] - py], dim=-1
    )  # (..., N, 4)
    if max_dis is not None:
        distances = distances.clamp(min=0, max=max_dis - eps)
    return distances


def distance2bbox(points: Tensor, distance: Tensor, max_shape: MaxShape | None = None) -> Tensor:
    """Boxes from a point and its distances to the four sides.

    points: (..., N, 2) or (..., N, 4) as in ``bbox2distance``; a (N, 2) points
        tensor broadcasts over a batch of (B, N, 4) distances, as RTMDet's head does.
    distance: (..., N, 4) (left, top, right, bottom).
    max_shape: (H, W) or one per image for (B, N, 4); if given, the boxes are
        clipped to [0, W] x [0, H].
    Returns (..., N, 4) xyxy ``(px - l, py - t, px + r, py + b)``, promoted dtype.
    """
    dtype = _check_points_and_boxes(points, "points", distance, "distance")
    px, py = points[..., 0].to(dtype), points[..., 1].to(dtype)
    distance = distance.to(dtype)
    boxes = torch.stack(
        [px - distance[..., 0], py - distance[..., 1], px + distance[..., 2],
         py + distance[..., 3]], dim=-1,
    )  # (..., N, 4)
    if max_shape is not None:
        boxes = _clip_to_image(boxes, _as_max_shape(max_shape, boxes))
    return boxes


class DistancePointBBoxCoder:
    """mmdet 3.x ``DistancePointBBoxCoder`` (RTMDet): the two functions above.

    clip_border: when False, ``decode`` ignores ``max_shape``.
    """

    def __init__(self, clip_border: bool = True) -> None:
        self.clip_border = check.flag("clip_border", clip_border)

    def encode(self, points: Tensor, gt_bboxes: Tensor, max_dis: float | None = None,
               eps: float = 0.1) -> Tensor:
        """(N, 2) points, (N, 4) gt_bboxes -> (N, 4) (l, t, r, b); see bbox2distance."""
        _check_points_and_boxes(points, "points", gt_bboxes, "gt_bboxes")  # this call's names
        return bbox2distance(points, gt_bboxes, max_dis, eps)

    def decode(self, points: Tensor, pred_bboxes: Tensor,
               max_shape: MaxShape | None = None) -> Tensor:
        """(N, 2) points, (N, 4) (l, t, r, b) -> (N, 4) xyxy; see distance2bbox."""
        _check_points_and_boxes(points, "points", pred_bboxes, "pred_bboxes")  # this call's names
        return distance2bbox(points, pred_bboxes, max_shape if self.clip_border else None)


# --------------------------------------------------------------------------- one call shape
class DeltaCodec:
    """Any of the three delta coders behind one call shape, as detectors and
    ``reference.targets`` use them (prior first, as mmdet orders its arguments):

    * ``encode(priors (N, 4), gts (N, 4)) -> deltas (N, 4)``;
    * ``decode(priors (N, 4), deltas (N, K*4)) -> boxes (N, K*4)``, unclipped.

    mmdet ``encode(bboxes, gt_bboxes)`` / ``decode(bboxes, pred)``, detectron2
    ``get_deltas(src, target)`` / ``apply_deltas(deltas, boxes)`` and torchvision
    ``encode_single(gts, proposals)`` / ``decode_single(codes, boxes)`` only
    differ in argument order; the arithmetic stays the wrapped coder's.
    """

    def __init__(self, coder: Union[DeltaXYWHBBoxCoder, Box2BoxTransform, BoxCoder]) -> None:
        if not isinstance(coder, (DeltaXYWHBBoxCoder, Box2BoxTransform, BoxCoder)):
            raise check.fail("coder", "a DeltaXYWHBBoxCoder, Box2BoxTransform or BoxCoder",
                             coder, TypeError)
        self.coder = coder

    def __repr__(self) -> str:
        return f"DeltaCodec({type(self.coder).__name__}, stds={self.coder._stds})"

    def encode(self, priors: Tensor, gts: Tensor) -> Tensor:
        check.tensor("priors", priors, ndim=2, last=4, dtype="floating")
        check.tensor("gts", gts, ndim=2, last=4, dtype="floating")
        c = self.coder
        if isinstance(c, DeltaXYWHBBoxCoder):
            return c.encode(priors, gts)
        if isinstance(c, Box2BoxTransform):
            return c.get_deltas(priors, gts)
        return c.encode_single(gts, priors)

    def decode(self, priors: Tensor, deltas: Tensor) -> Tensor:
        check.tensor("priors", priors, ndim=2, last=4, dtype="floating")
        check.tensor("deltas", deltas, ndim=2, groups_of=4, dtype="floating")
        c = self.coder
        if isinstance(c, DeltaXYWHBBoxCoder):
            return c.decode(priors, deltas)
        if isinstance(c, Box2BoxTransform):
            return c.apply_deltas(deltas, priors)
        return c.decode_single(deltas, priors)
