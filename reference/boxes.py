"""Boxes: areas and overlaps (IoU, IoF, GIoU) of axis-aligned boxes.

Every box here is ``(x1, y1, x2, y2)`` ("xyxy") in absolute pixels, with
``x1 <= x2`` and ``y1 <= y2`` for a proper box. Boxes are never repaired: an
inverted box (``x2 < x1``) has a negative area and overlaps nothing.

Overlap of box a with box b, as mmdetection's ``bbox_overlaps`` defines it
(SPEC.md clauses IOU-*):

1. intersection = max(0, min(a.x2, b.x2) - max(a.x1, b.x1))
                * max(0, min(a.y2, b.y2) - max(a.y1, b.y1))
2. union        = area(a) + area(b) - intersection     (mode "iou" and "giou")
   or area(a)                                           (mode "iof": over foreground)
3. ratio        = intersection / max(union, eps)
4. mode "giou" only: enclose = area of the smallest box holding a and b,
   clamped to >= eps; giou = ratio - (enclose - union) / enclose.

The three code bases agree on steps 1 and 2 and differ only in step 3 when the
union is (near) zero, e.g. for two zero-area boxes. That difference is data, one
``IouFlavour`` preset each: mmdet clamps the union to ``eps`` (so 0/0 -> 0),
detectron2's ``pairwise_iou`` returns 0 wherever the intersection is 0, and
torchvision's ``box_iou`` divides as is (0/0 -> NaN).

Memory: the naive pairwise computation materialises about nine (M, N) float
tensors (mmdet's note: 512 gts x 400000 anchors need 8 GB in fp32). Here the
(M, N) output is allocated once and filled a slice of the larger side at a time
(``_fill_pairwise_in_chunks``), so the peak is the output plus a few MiB.
Speed: plain IoU of many rows against boxes in spatial order (anchors) computes
only the pairs whose boxes can intersect (``rows_meeting_blocks``): all others
are exactly +0, which the output starts as. Same values, bit for bit.

Protocol names: ``box_area``, ``box_iou`` (mmdet), ``pairwise_iou`` (detectron2),
``box_iou_torchvision`` (torchvision).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from reference import validate as check

__all__ = ["box_area", "box_iou", "pairwise_iou", "box_iou_torchvision", "clip_boxes"]

MODES = ("iou", "iof", "giou")


# --------------------------------------------------------------------------- flavours
@dataclasses.dataclass(frozen=True)
class IouFlavour:
    """How a code base turns (intersection, union) into a ratio when the union may be 0.

    clamp_union_to_eps: divide by ``max(union, eps)`` (mmdet), so a zero union gives 0.
    zero_without_intersection: the ratio is 0 wherever the intersection is 0
        (detectron2's ``torch.where(inter > 0, inter / union, 0)``).
    With neither, 0 / 0 is NaN (torchvision).
    """

    name: str
    clamp_union_to_eps: bool
    zero_without_intersection: bool


MMDET_IOU = IouFlavour("mmdet", clamp_union_to_eps=True, zero_without_intersection=False)
DETECTRON2_IOU = IouFlavour("detectron2", clamp_union_to_eps=False,
                            zero_without_intersection=True)
TORCHVISION_IOU = IouFlavour("torchvision", clamp_union_to_eps=False,
                             zero_without_intersection=False)


# --------------------------------------------------------------------------- public API
def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Area ``(x2 - x1) * (y2 - y1)`` of each box, not clamped.

    boxes: (..., 4) floating xyxy boxes.
    Returns: (...) of the same dtype; negative for an inverted box, as in all three
    code bases. Non-finite coordinates propagate (no finiteness check here).
    """
    _check_boxes("boxes", boxes, min_ndim=1)
    return _area(boxes)


def box_iou(
    boxes1: torch.Tensor,
    boxes2: torch.Tensor,
    mode: str = "iou",
    is_aligned: bool = False,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Overlaps between two sets of boxes, with mmdetection ``bbox_overlaps`` semantics.

    boxes1: (..., M, 4) floating xyxy boxes, all coordinates finite.
    boxes2: (..., N, 4) same dtype, device and leading (batch) dims as boxes1.
    mode: "iou" (intersection over union), "iof" (intersection over the area of
        the boxes1 box) or "giou" (generalized IoU, in [-1, 1]).
    is_aligned: False -> every pair, result (..., M, N);
        True -> row i of boxes1 with row i of boxes2, result (..., M); needs M == N.
    eps: > 0; the union (and for giou the enclosing area) is clamped to >= eps, so
        zero-area boxes give 0, never NaN.

    Returns a tensor of boxes1's dtype. float16/bfloat16 inputs are computed in
    float32 and rounded once at the end (box areas above 65504 px^2 would overflow
    in float16). Empty inputs give an empty (..., M, N) or (..., M) result.
    Raises TypeError/ValueError naming the argument for bad inputs (SPEC.md IOU-V*).
    """
    _check_mode(mode)
    if not isinstance(is_aligned, bool):
        raise TypeError(f"is_aligned must be a bool, got {type(is_aligned).__name__}")
    eps = check.number("eps", eps, low=0, low_open=True)
    _check_pair(boxes1, boxes2, min_ndim=2)
    if is_aligned and boxes1.shape[-2] != boxes2.shape[-2]:
        raise ValueError(
            f"is_aligned=True needs as many boxes1 as boxes2, got M={boxes1.shape[-2]} "
            f"and N={boxes2.shape[-2]}"
        )

    def ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return _overlap_of_broadcast_boxes(a, b, mode, eps, MMDET_IOU)

    if is_aligned:
        return _aligned(boxes1, boxes2, ratio)
    return _pairwise(boxes1, boxes2, ratio, MMDET_IOU if mode == "iou" else None, eps)


def clip_boxes(boxes: torch.Tensor, height, width) -> torch.Tensor:
    """xyxy boxes (..., 4) with x clamped to [0, width] and y to [0, height].

    The one clipper of the package (detectors, proposals, post-processing): every
    upstream clamps each coordinate separately, so a box wholly outside the image
    becomes a zero-width (or zero-height) box on its border. Returns a new tensor
    of boxes' dtype.
    """
    x = boxes[..., 0::2].clamp(min=0, max=width)  # (..., 2) x1, x2
    y = boxes[..., 1::2].clamp(min=0, max=height)  # (..., 2) y1, y2
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


def pairwise_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU of every pair, detectron2 flavour: exactly 0 wherever the boxes do not intersect.

    boxes1: (M, 4), boxes2: (N, 4) floating xyxy boxes, finite, same dtype and device.
    Returns (M, N) of boxes1's dtype. Unlike ``box_iou`` there is no eps: a positive
    intersection is divided by the exact union, so two identical tiny boxes give 1.
    """
    _check_pair(boxes1, boxes2, min_ndim=2, max_ndim=2)
    return _pairwise(boxes1, boxes2, _iou_rule(DETECTRON2_IOU), DETECTRON2_IOU)


def box_iou_torchvision(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU of every pair, torchvision flavour: intersection / union, NaN where the union is 0.

    boxes1: (M, 4), boxes2: (N, 4) floating xyxy boxes, finite, same dtype and device.
    Returns (M, N) of boxes1's dtype (what ``torchvision.ops.box_iou`` returns).
    """
    _check_pair(boxes1, boxes2, min_ndim=2, max_ndim=2)
    return _pairwise(boxes1, boxes2, _iou_rule(TORCHVISION_IOU), TORCHVISION_IOU)


# --------------------------------------------------------------------------- the formula
def _overlap_of_broadcast_boxes(
    a: torch.Tensor, b: torch.Tensor, mode: str, eps: float, flavour: IouFlavour
) -> torch.Tensor:
    """Steps 1-4 of the module docstring for boxes a (..., 4) and b (..., 4).

    a and b broadcast against each other: (m, 1, 4) with (1, n, 4) gives the (m, n)
    pairwise block, (n, 4) with (n, 4) the aligned pairs. Out-of-place throughout so
    gradients flow (GIoU loss differentiates through this).
    """
    area_a = _area(a)  # (..., m, 1) or (..., n)
    area_b = _area(b)  # (..., 1, n) or (..., n)
    # 1. intersection rectangle; a negative extent means "no overlap", hence 0.
    inter_w = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(0)
    inter_h = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(0)
    inter = inter_w * inter_h  # (..., m, n) or (..., n)
    # 2. the denominator
    if mode == "iof":
        union = area_a.expand_as(inter)
    else:
        union = area_a + area_b - inter
    # 3. the flavour's division
    if flavour.clamp_union_to_eps:
        union = union.clamp(min=eps)
    ratio = inter / union
    if flavour.zero_without_intersection:
        ratio = torch.where(inter > 0, ratio, 0.0)
    if mode != "giou":
        return ratio
    # 4. GIoU: penalise the part of the enclosing box that neither box covers.
    enclose_w = (torch.maximum(a[..., 2], b[..., 2]) - torch.minimum(a[..., 0], b[..., 0])).clamp(0)
    enclose_h = (torch.maximum(a[..., 3], b[..., 3]) - torch.minimum(a[..., 1], b[..., 1])).clamp(0)
    enclose = (enclose_w * enclose_h).clamp(min=eps)
    return ratio - (enclose - union) / enclose


def _area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])  # (...)


def _iou_rule(flavour: IouFlavour) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return _overlap_of_broadcast_boxes(a, b, "iou", 0.0, flavour)

    return ratio


# --------------------------------------------------------------------------- shapes & memory
# Each slice's temporaries hold about this many elements (512 KiB of float32 each):
# small enough to stay in cache and keep the peak near the output's own size,
# large enough for torch's intra-op threads (which split work above 32768 elements).
# Measured on 100 gts x 182403 anchors, 2 CPU threads: about 5x faster than
# torchvision.ops.box_iou, peak about 1.1x the output (torchvision: about 9x).
_CHUNK_ELEMENTS = 1 << 17


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half precision is computed in float32: a 400 x 400 box's area overflows float16."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _aligned(boxes1, boxes2, ratio) -> torch.Tensor:
    """(..., N) overlaps of row i with row i; O(N) memory, no chunking needed."""
    work = _compute_dtype(boxes1.dtype)
    return ratio(boxes1.to(work), boxes2.to(work)).to(boxes1.dtype)  # (..., N)


def _pairwise(boxes1, boxes2, ratio, flavour: IouFlavour | None = None,
              eps: float = 0.0) -> torch.Tensor:
    """(..., M, N) overlaps of every pair, filled into one preallocated output.

    flavour: set for plain IoU of 2-d inputs without gradients, which then takes
    the in-place path ``iou_block_into`` (same values, bit for bit).
    """
    out = boxes1.new_empty(boxes1.shape[:-1] + boxes2.shape[-2:-1])  # (..., M, N)
    if out.numel() == 0:
        return out
    work = _compute_dtype(boxes1.dtype)
    boxes1, boxes2 = boxes1.to(work), boxes2.to(work)
    fast = (flavour is not None and out.dim() == 2 and work == out.dtype
            and not (torch.is_grad_enabled() and (boxes1.requires_grad or boxes2.requires_grad)))
    if fast:
        num_rows, num_cols = out.shape
        if num_rows < num_cols and _fill_iou_of_meeting_pairs(out, boxes1, boxes2, flavour, eps):
            return out
        if num_rows >= num_cols:  # slice the longer side
            step = max(1, _CHUNK_ELEMENTS // num_cols)
            for start in range(0, num_rows, step):
                n = min(step, num_rows - start)
                iou_block_into(out.narrow(0, start, n), boxes1.narrow(0, start, n), boxes2,
                               flavour, eps)
        else:
            step = max(1, _CHUNK_ELEMENTS // num_rows)
            for start in range(0, num_cols, step):
                n = min(step, num_cols - start)
                iou_block_into(out.narrow(1, start, n), boxes1, boxes2.narrow(0, start, n),
                               flavour, eps)
        return out
    _fill_pairwise_in_chunks(out, boxes1, boxes2, ratio)
    return out


def iou_block_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, flavour: IouFlavour,
                   eps: float = 0.0) -> torch.Tensor:
    """out (m, n) <- IoU of a (m, 4) with b (n, 4), mode "iou", in place.

    Steps 1-3 of the module docstring in the same float operations, in the same
    order, as ``_overlap_of_broadcast_boxes`` (so the values are identical; tested
    against it), but into two reused (m, n) buffers and ``out`` itself instead of
    a fresh tensor per step: about a third fewer passes over memory. Just an
    optimisation for large pairwise blocks (no autograd).
    """
    ax1, ay1, ax2, ay2 = (a[:, k:k + 1] for k in range(4))  # (m, 1) each
    bx1, by1, bx2, by2 = b.unbind(-1)  # (n,) each
    area_a = (ax2 - ax1) * (ay2 - ay1)  # (m, 1)
    area_b = (bx2 - bx1) * (by2 - by1)  # (n,)
    inter = torch.minimum(ax2, bx2)  # (m, n) buffer 1
    spare = torch.maximum(ax1, bx1)  # (m, n) buffer 2
    inter.sub_(spare).clamp_(min=0)  # intersection width
    torch.minimum(ay2, by2, out=spare)
    torch.maximum(ay1, by1, out=out)  # out as scratch
    inter.mul_(spare.sub_(out).clamp_(min=0))  # width * height
    union = torch.add(area_a, area_b, out=spare).sub_(inter)  # (area_a + area_b) - inter
    if flavour.clamp_union_to_eps:
        union.clamp_(min=eps)
    torch.div(inter, union, out=out)
    if flavour.zero_without_intersection:
        torch.where(inter > 0, out, out.new_zeros(()), out=out)
    return out


def iou_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, flavour: IouFlavour,
             eps: float = 0.0) -> torch.Tensor:
    """out (m, n) <- IoU of a (m, 4) with b (n, 4), mode "iou", in place: only the
    pairs that can intersect are computed (``_fill_iou_of_meeting_pairs``) where
    that pays, else every pair (``iou_block_into``). The same values bit for bit
    either way; what the assigners' block scans call (no autograd)."""
    if a.shape[0] < b.shape[0] and _fill_iou_of_meeting_pairs(out, a, b, flavour, eps):
        return out
    return iou_block_into(out, a, b, flavour, eps)


def _iou_of_gathered_into(out: torch.Tensor, a: torch.Tensor, table: torch.Tensor,
                          blocks: torch.Tensor, flavour: IouFlavour, eps: float) -> torch.Tensor:
    """out (k, n) <- IoU of box a[j] with the n boxes of block blocks[j], for each j.

    a: (k, 4) boxes; table: (5, B, n) x1, y1, x2, y2 and area of the blocked boxes;
    blocks: (k,) int64. The float operations of ``iou_block_into`` in its order
    (``area_a + area_b`` commutes exactly), each corner gathered just before its use
    into one of two (k, n) buffers (out the third): 3 (k, n) tensors in all.
    """
    ax1, ay1, ax2, ay2 = (a[:, c:c + 1] for c in range(4))  # (k, 1) each
    shape = (a.shape[0], table.shape[2])
    first, second = out.new_empty(shape), out.new_empty(shape)  # (k, n) each

    def gather(c: int, into: torch.Tensor) -> torch.Tensor:
        return torch.index_select(table[c], 0, blocks, out=into)

    inter = torch.minimum(ax2, gather(2, first), out=first)
    inter.sub_(torch.maximum(ax1, gather(0, second), out=second)).clamp_(min=0)  # width
    height = torch.minimum(ay2, gather(3, second), out=second)
    height.sub_(torch.maximum(ay1, gather(1, out), out=out)).clamp_(min=0)
    inter.mul_(height)  # width * height
    union = gather(4, second).add_((ax2 - ax1) * (ay2 - ay1)).sub_(inter)  # (a_a + a_b) - inter
    if flavour.clamp_union_to_eps:
        union.clamp_(min=eps)
    torch.div(inter, union, out=out)
    if flavour.zero_without_intersection:
        torch.where(inter > 0, out, out.new_zeros(()), out=out)
    return out


# Columns of boxes2 per block of the pair culling below; measured on the RetinaNet
# anchors with 100 random gts: 11% of the (gt, block) pairs remain at 64 columns
# (5% of the gt-anchor pairs intersect), 21% at 256, 36% at 1310.
_PAIR_BLOCK = 64


def rows_meeting_blocks(a: torch.Tensor, blocks: torch.Tensor, flavour: IouFlavour) -> torch.Tensor:
    """(B, m) bool: may box a[i] have a nonzero IoU with a box of block k? False only
    where the IoU of a[i] with every box of blocks[k] is exactly +0.

    a: (m, 4), blocks: (B, n, 4) finite xyxy boxes. A box a[i] cannot intersect any
    box of a block when it lies left of (``a.x2 <= min x1``), right of (``a.x1 >=
    max x2``), above or below the block's bounding box: then for every pair
    ``min(x2) - max(x1) <= 0`` (or the same in y), so the clamped intersection is
    +0 and the IoU is +0 (mmdet divides by union >= eps; detectron2 gives 0
    without intersection). torchvision divides as is: there a row also stays True
    unless ``area(a[i]) + min area(block) > 0`` (0 / 0 is NaN, 0 / negative -0).
    """
    # a.x2 > least x1, a.y2 > least y1, a.x1 < greatest x2, a.y1 < greatest y2, as one
    # comparison: negation is exact, so -a.x1 > -greatest x2 says the same.
    bounds = torch.cat([blocks[..., :2].amin(dim=1), -blocks[..., 2:].amax(dim=1)], 1)  # (B, 4)
    corners = torch.cat([a[:, 2:], -a[:, :2]], 1)  # (m, 4): x2, y2, -x1, -y1
    meets = (corners > bounds[:, None, :]).all(dim=2)  # (B, m)
    if not (flavour.clamp_union_to_eps or flavour.zero_without_intersection):
        area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])  # (m,)
        area_b = (blocks[..., 2] - blocks[..., 0]) * (blocks[..., 3] - blocks[..., 1])  # (B, n)
        meets |= ~(area_a + area_b.amin(dim=1, keepdim=True) > 0)
    return meets


def _fill_iou_of_meeting_pairs(out, boxes1, boxes2, flavour: IouFlavour, eps: float) -> bool:
    """out (M, N) <- IoU of every pair, computing only the (row, block of _PAIR_BLOCK
    columns) pairs that ``rows_meeting_blocks`` keeps; every other value is the +0
    the formula gives there.

    The kept pairs are computed together, a bounded group at a time: their corners
    gathered into (k, _PAIR_BLOCK) tensors, written back with one indexed copy.
    Returns False (out untouched) where culling would not pay: few rows, or more
    than half the pairs kept (boxes2 in no spatial order). Memory beyond out: one
    group's three (k, _PAIR_BLOCK) tensors (3 x out.numel() / 16 elements at most)
    and the (5, N) table of corners and areas (M >= 32: out.numel() * 5 / 32 at
    most), so the peak stays within IOU-14's 1.5 outputs. Few groups (two for 100 x
    182403) also means few operations, each large: what keeps a second torch thread
    from waiting on a busy core after every small one.
    """
    num_rows, num_cols = out.shape
    n = _PAIR_BLOCK
    num_blocks = num_cols // n  # whole blocks; the tail columns are computed in full
    if num_rows < 32 or num_blocks == 0:
        return False
    head = boxes2.narrow(0, 0, num_blocks * n).view(num_blocks, n, 4)  # (B, n, 4)
    pairs = torch.nonzero(rows_meeting_blocks(boxes1, head, flavour))  # (K, 2): block, row
    if 2 * pairs.shape[0] > num_blocks * num_rows:
        return False
    out.zero_()
    x1, y1, x2, y2 = head.unbind(-1)  # (B, n) each
    table = torch.stack([x1, y1, x2, y2, (x2 - x1) * (y2 - y1)])  # (5, B, n): + area
    dest = out.narrow(1, 0, num_blocks * n).view(num_rows, num_blocks, n)  # (M, B, n) view
    group = max(1, out.numel() // 16 // n)  # pairs at a time: two groups for 100 x 182403
    for start in range(0, pairs.shape[0], group):
        block, row = pairs[start:start + group].unbind(1)  # (k,), (k,)
        scratch = out.new_empty((block.shape[0], n))  # (k, n)
        dest[row, block] = _iou_of_gathered_into(scratch, boxes1.index_select(0, row), table,
                                                 block, flavour, eps)
    if num_cols > num_blocks * n:
        tail = num_cols - num_blocks * n
        iou_block_into(out.narrow(1, num_blocks * n, tail), boxes1,
                       boxes2.narrow(0, num_blocks * n, tail), flavour, eps)
    return True


def _fill_pairwise_in_chunks(out, boxes1, boxes2, ratio) -> None:
    """Fill out (..., M, N) with ratio(rows (..., m, 1, 4), cols (..., 1, n, 4)).

    Slices the larger of M and N so that each call's temporaries stay near
    _CHUNK_ELEMENTS; peak memory is the output plus a few such temporaries.
    Just an optimisation: a single call over all rows and columns gives the same values.
    """
    num_rows, num_cols = out.shape[-2], out.shape[-1]
    batch = out.numel() // (num_rows * num_cols)
    side = -1 if num_cols >= num_rows else -2  # the dim of `out` that is sliced
    other = num_rows if side == -1 else num_cols
    step = max(1, _CHUNK_ELEMENTS // (batch * other))
    length = out.shape[side]
    for start in range(0, length, step):
        n = min(step, length - start)
        rows = boxes1 if side == -1 else boxes1.narrow(-2, start, n)  # (..., m, 4)
        cols = boxes2.narrow(-2, start, n) if side == -1 else boxes2  # (..., n, 4)
        block = ratio(rows[..., :, None, :], cols[..., None, :, :])  # (..., m, n)
        out.narrow(side, start, n).copy_(block)


# --------------------------------------------------------------------------- validation
def _check_mode(mode) -> None:
    check.choice("mode", mode, MODES)


def _check_boxes(name: str, boxes, min_ndim: int, max_ndim: int | None = None) -> None:
    """Type, dtype and shape of one box argument."""
    ndim = None if max_ndim is None else range(min_ndim, max_ndim + 1)
    check.tensor(name, boxes, ndim=ndim, min_ndim=min_ndim, last=4, dtype="floating")


def _check_finite(name: str, boxes: torch.Tensor) -> None:
    # One reduction and one host sync per argument; cheap next to the (M, N) work.
    # Finite and within COORD_LIMIT, where float32 areas cannot overflow (IOU-18).
    check.in_range(name, boxes)


def _check_pair(boxes1, boxes2, min_ndim: int, max_ndim: int | None = None) -> None:
    """Both box arguments, then how they relate, then (last: it reads the data) finiteness."""
    _check_boxes("boxes1", boxes1, min_ndim, max_ndim)
    _check_boxes("boxes2", boxes2, min_ndim, max_ndim)
    if boxes2.dtype != boxes1.dtype:
        raise check.fail("boxes2", f"boxes1's dtype {boxes1.dtype}", boxes2)
    check.same_device(boxes1=boxes1, boxes2=boxes2)
    if boxes1.shape[:-2] != boxes2.shape[:-2]:
        raise check.fail("boxes2", f"boxes1's leading (batch) dims {tuple(boxes1.shape[:-2])}",
                         boxes2)
    _check_finite("boxes1", boxes1)
    _check_finite("boxes2", boxes2)
