"""Assignment: which ground-truth box (if any) each prior is responsible for.

A prior is an anchor box, a point, or a proposal. Given the priors of one image and
its ground-truth (gt) boxes, an assigner decides for every prior whether it is
positive (and for which gt), negative (background) or ignored. Three families live
here, one per upstream code base (SPEC.md "Assigners", clauses ASG-*):

* ``MaxIoUAssigner`` - mmdetection's IoU-threshold assigner (RetinaNet, RPN, R-CNN).
  Works on boxes (``assign``) or directly on an IoU matrix (``assign_wrt_overlaps``).
* ``Matcher`` (detectron2) and ``TorchvisionMatcher`` - the same thresholding idea
  with the other frameworks' encodings and low-quality rule.
* ``DynamicSoftLabelAssigner`` - RTMDet's cost-based assigner with a dynamic number
  of positives per gt.

Conventions (stated once, used everywhere below):

* Boxes are ``xyxy`` float tensors of shape ``(n, 4)``.
* ``overlaps`` / ``match_quality_matrix`` are ``(num_gts, num_priors)``: row = gt.
* mmdet encoding, ``AssignResult.gt_inds`` (int64, one per prior): ``k + 1`` when
  the prior is assigned to gt ``k`` (1-based), ``0`` negative, ``-1`` ignored.
  ``AssignResult.labels``: the assigned gt's class where ``gt_inds > 0``, else -1.
* detectron2 encoding: ``matches`` (argmax gt per prior) and ``labels`` in
  ``{-1 ignore, 0 negative, 1 positive}``.
* torchvision encoding: one tensor, gt index where positive, ``-1`` below the low
  threshold, ``-2`` between the thresholds.

Shape letters in comments (the package legend, ``reference/__init__.py``): ``G`` gts,
``N`` priors of one image, ``C`` classes.

No step loops over gt boxes. Where mmdet's reference code loops (low-quality
matching, DSL's per-gt top-k) the vectorised form reproduces the loop's outcome
exactly, ties included; the docstrings say how.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from reference import boxes as _boxes
from reference import validate as check

__all__ = [
    "AssignResult",
    "MaxIoUAssigner",
    "Matcher",
    "TorchvisionMatcher",
    "MatchResult",
    "DynamicSoftLabelAssigner",
    "DSL_INF",
    "MatcherAssigner",
]

# mmdet's DynamicSoftLabelAssigner marks unmatched priors' max_overlaps with -INF,
# where INF is the finite constant 1e8 (not float("inf")).
DSL_INF = 100000000.0
# Added to IoUs before the log in DSL's IoU cost (mmdet EPS = 1e-7).
_DSL_EPS = 1e-7

# Upper bound on the elements of one temporary (rows x column-chunk) block.
_CHUNK_ELEMENTS = 1 << 24


# --------------------------------------------------------------------------- results
@dataclasses.dataclass(frozen=True)
class AssignResult:
    """The outcome of assigning gts to the priors of one image (mmdet encoding).

    num_gts: number of gt boxes that took part.
    gt_inds: (N,) int64; k + 1 = assigned to gt k, 0 = negative, -1 = ignored.
    max_overlaps: (N,) float; MaxIoUAssigner: each prior's best IoU over all gts
        (0 when there are no gts). DynamicSoftLabelAssigner: IoU with the matched
        gt, ``-DSL_INF`` for unmatched priors.
    labels: (N,) int64 class of the assigned gt where gt_inds > 0, else -1; None
        when the caller gave no gt labels.
    """

    num_gts: int
    gt_inds: torch.Tensor
    max_overlaps: torch.Tensor
    labels: Optional[torch.Tensor] = None

    @property
    def num_priors(self) -> int:
        return int(self.gt_inds.numel())

    def with_gts_prepended(self, gt_labels: Optional[torch.Tensor]) -> "AssignResult":
        """The result after mmdet's "add gt as proposals": every gt becomes a prior
        in front of the others, assigned to itself with overlap 1.

        gt_labels: (G,) int64 or None (then ``labels`` stays None).
        """
        check.labels("gt_labels", gt_labels, self.num_gts, "the result's gts (num_gts)")
        device = self.gt_inds.device
        self_inds = torch.arange(1, self.num_gts + 1, dtype=torch.int64, device=device)  # (G,)
        gt_inds = torch.cat([self_inds, self.gt_inds])
        max_overlaps = torch.cat([self.max_overlaps.new_ones(self.num_gts), self.max_overlaps])
        labels = self.labels
        if labels is not None and gt_labels is not None:
            labels = torch.cat([gt_labels.to(device=device, dtype=torch.int64), labels])
        return AssignResult(self.num_gts, gt_inds, max_overlaps, labels)


class MatchResult(NamedTuple):
    """detectron2 matching outcome; unpacks as ``matches, labels``.

    matches: (N,) int64 index of the best gt of each prior (0 when there are no gts).
    labels: (N,) int8 in {-1 ignore, 0 negative, 1 positive}.
    """

    matches: torch.Tensor
    labels: torch.Tensor


# --------------------------------------------------------------------------- chunking
def _column_chunks(num_rows: int, num_cols: int):
    """Slices over columns such that a (num_rows, chunk) temporary stays bounded.

    Just a memory optimisation: the results do not depend on the chunk size.
    """
    step = max(1, _CHUNK_ELEMENTS // max(num_rows, 1))
    for start in range(0, num_cols, step):
        yield slice(start, min(start + step, num_cols))


def _last_row_where(mask_fn, num_rows: int, num_cols: int, device) -> torch.Tensor:
    """For each column c, the highest row index r with ``mask_fn(cols)[r, c]``, else -1.

    ``mask_fn(cols)`` returns the (num_rows, len(cols)) bool block for a column slice.
    """
    rows = torch.arange(num_rows, device=device)[:, None]  # (R, 1)
    last = torch.full((num_cols,), -1, dtype=torch.int64, device=device)  # (N,)
    for cols in _column_chunks(num_rows, num_cols):
        block = mask_fn(cols)  # (R, chunk) bool
        last[cols] = torch.where(block, rows, -1).amax(dim=0)
    return last


# --------------------------------------------------------------------------- one-pass scans
# Blocks of the one-pass scans hold about this many elements (2 MiB of float32):
# a (G, chunk) block stays in cache while its IoU, column max and row max are taken.
_SCAN_ELEMENTS = 1 << 19


def _scan_elements() -> int:
    """Elements of one scan block: _SCAN_ELEMENTS at one torch thread, 4 times that
    with more. With 2 threads on a busy machine every parallel operation waits for
    the second core, so few large blocks win (MaxIoU 100 x 182403: 57 s -> 13 s at
    load 11 on 2 cores); at one thread cache-sized blocks are faster. Since the
    blocks' IoU computes only pairs that can intersect (``boxes.iou_into``), 2^19
    at one thread and 2^21 at two were the best of 2^18 .. 2^22 (quiet 2-core
    machine, 100 and 500 gts x 182403 anchors)."""
    return _SCAN_ELEMENTS if torch.get_num_threads() == 1 else 4 * _SCAN_ELEMENTS


class _ColumnScan(NamedTuple):
    """What one pass over the column blocks of a (G, N) matrix yields.

    col_max, col_argmax: (N,) each column's max and the FIRST row reaching it
        (as ``matrix.max(dim=0)``). row_max: (G,) each row's max (``amax(dim=1)``).
    block_row_max: (B, G) each block's row maxima; blocks: the B column slices.
    """

    col_max: torch.Tensor
    col_argmax: torch.Tensor
    row_max: torch.Tensor
    block_row_max: torch.Tensor
    blocks: list


def _scan_columns(block_of, num_rows: int, num_cols: int, dtype, device) -> _ColumnScan:
    """One pass over (G, chunk) blocks instead of separate passes for each reduction.

    ``block_of(cols, rows)`` returns the matrix's block for a column slice and
    rows (a (r,) index tensor, or None for all): computed (IoU of boxes) or read
    (a given matrix). Every reduction sees exactly the values of the full matrix,
    so the results equal the full-matrix ones bit for bit, ties included.
    """
    step = max(1, _scan_elements() // max(num_rows, 1))
    blocks = [slice(start, min(start + step, num_cols)) for start in range(0, num_cols, step)]
    col_max = torch.empty(num_cols, dtype=dtype, device=device)  # (N,)
    col_argmax = torch.empty(num_cols, dtype=torch.int64, device=device)  # (N,)
    block_row_max = torch.empty((len(blocks), num_rows), dtype=dtype, device=device)  # (B, G)
    for b, cols in enumerate(blocks):
        block = block_of(cols, None)  # (G, chunk)
        torch.max(block, dim=0, out=(col_max[cols], col_argmax[cols]))
        torch.amax(block, dim=1, out=block_row_max[b])
    return _ColumnScan(col_max, col_argmax, block_row_max.amax(dim=0), block_row_max, blocks)


def _last_row_at_its_max(block_of, scan: _ColumnScan, eligible: torch.Tensor) -> torch.Tensor:
    """(N,) int64: for each column, the highest eligible row r with matrix[r, c] ==
    row_max[r] (exact ``==``, every tie), else -1.

    Only blocks in which a row reaches its overall max can hold such columns, and
    only those rows are looked at again: usually a few rows of a few blocks (a
    gt overlapping nothing ties at 0 everywhere: then its row, in every block).
    """
    num_cols = scan.col_max.shape[0]
    device = scan.col_max.device
    owner = torch.full((num_cols,), -1, dtype=torch.int64, device=device)  # (N,)
    reaches = (scan.block_row_max == scan.row_max) & eligible  # (B, G)
    for b in torch.nonzero(reaches.any(dim=1)).squeeze(1).tolist():
        cols = scan.blocks[b]
        rows = torch.nonzero(reaches[b]).squeeze(1)  # (r,)
        tied = block_of(cols, rows) == scan.row_max[rows, None]  # (r, chunk)
        owner[cols] = torch.where(tied, rows[:, None], -1).amax(dim=0)
    return owner


def _first_column_at_max(block_of, scan: _ColumnScan, rows: torch.Tensor) -> torch.Tensor:
    """(r,) int64: for the given rows, the FIRST column reaching the row's max
    (as ``matrix.max(dim=1)`` indices)."""
    first_block = (scan.block_row_max[:, rows] == scan.row_max[rows]).int().argmax(dim=0)  # (r,)
    columns = torch.empty_like(rows)  # (r,)
    for b in torch.unique(first_block).tolist():
        cols = scan.blocks[b]
        here = torch.nonzero(first_block == b).squeeze(1)  # positions in rows
        hit = block_of(cols, rows[here]) == scan.row_max[rows[here], None]  # (h, chunk)
        columns[here] = hit.int().argmax(dim=1) + cols.start
    return columns


def _matrix_blocks(matrix: torch.Tensor):
    """``block_of`` reading a given (G, N) matrix."""

    def block_of(cols: slice, rows: Optional[torch.Tensor]) -> torch.Tensor:
        return matrix[:, cols] if rows is None else matrix[rows, cols]

    return block_of


def _iou_blocks(gt_bboxes: torch.Tensor, bboxes: torch.Tensor,
                ignored: Optional[torch.Tensor]):
    """``block_of`` computing ``box_iou(gt_bboxes, bboxes)`` block by block (same
    values bit for bit), with ignored priors' columns set to -1."""
    work = _boxes._compute_dtype(bboxes.dtype)
    gts, priors = gt_bboxes.to(work), bboxes.to(work)
    buffer = torch.empty(gt_bboxes.shape[0] * min(bboxes.shape[0], max(
        1, _scan_elements() // max(gt_bboxes.shape[0], 1))), dtype=work, device=bboxes.device)

    def block_of(cols: slice, rows: Optional[torch.Tensor]) -> torch.Tensor:
        a = gts if rows is None else gts.index_select(0, rows)  # (r, 4)
        b = priors[cols]  # (chunk, 4)
        out = buffer[:a.shape[0] * b.shape[0]].view(a.shape[0], b.shape[0])  # (r, chunk)
        block = _boxes.iou_into(out, a, b, _boxes.MMDET_IOU, 1e-6).to(bboxes.dtype)
        if ignored is not None:
            block = block.masked_fill(ignored[cols], -1)
        return block

    return block_of


# --------------------------------------------------------------------------- mmdet MaxIoU
@dataclasses.dataclass(frozen=True)
class MaxIoUAssigner:
    """mmdetection's MaxIoUAssigner (SPEC ASG-1 .. ASG-12).

    pos_iou_thr: a prior whose best IoU is >= this is positive (step 3).
    neg_iou_thr: float t -> negative where 0 <= best IoU < t; tuple (lo, hi) ->
        negative where lo <= best IoU < hi (step 2).
    min_pos_iou: low-quality step only considers gts whose best IoU is >= this.
    match_low_quality: run step 4 (each gt also claims its best prior(s)).
    gt_max_assign_all: step 4 claims every prior tied at the gt's best IoU
        (exact ``==``); otherwise only the first argmax prior.
    ignore_iof_thr: > 0 enables ignore boxes: priors whose IoF with an ignore box
        exceeds it (strict ``>``) get overlap -1 with every gt, i.e. ignored.
    ignore_wrt_candidates: IoF over the prior's area (True) or the ignore box's.

    RetinaNet: (0.5, 0.4, min_pos_iou=0). RPN: (0.7, 0.3, min_pos_iou=0.3).
    Faster R-CNN box head: (0.5, 0.5, min_pos_iou=0.5, match_low_quality=False).
    """

    pos_iou_thr: float
    neg_iou_thr: Union[float, tuple[float, float]]
    min_pos_iou: float = 0.0
    gt_max_assign_all: bool = True
    ignore_iof_thr: float = -1.0
    ignore_wrt_candidates: bool = True
    match_low_quality: bool = True

    def __post_init__(self) -> None:
        check.number("pos_iou_thr", self.pos_iou_thr)
        check.number("min_pos_iou", self.min_pos_iou)
        check.number("ignore_iof_thr", self.ignore_iof_thr)
        for flag in ("gt_max_assign_all", "ignore_wrt_candidates", "match_low_quality"):
            check.flag(flag, getattr(self, flag))
        neg = self.neg_iou_thr
        if isinstance(neg, (tuple, list)):
            if len(neg) != 2:
                raise ValueError(f"neg_iou_thr: expected a float or a (lo, hi) pair, got {neg!r}")
            lo = check.number("neg_iou_thr[0]", neg[0])
            hi = check.number("neg_iou_thr[1]", neg[1])
            object.__setattr__(self, "neg_iou_thr", (lo, hi))
        else:
            check.number("neg_iou_thr", neg)

    def _negative_range(self) -> tuple[float, float]:
        # A float threshold means the range [0, thr): overlaps of -1 (ignored) stay out.
        if isinstance(self.neg_iou_thr, tuple):
            return self.neg_iou_thr
        return (0.0, float(self.neg_iou_thr))

    def assign(self, bboxes: torch.Tensor, gt_bboxes: torch.Tensor,
               gt_bboxes_ignore: Optional[torch.Tensor] = None,
               gt_labels: Optional[torch.Tensor] = None) -> AssignResult:
        """Assign gts to boxes by IoU.

        bboxes: (N, 4) float xyxy priors. gt_bboxes: (G, 4) float xyxy.
        gt_bboxes_ignore: (I, 4) float xyxy or None; used only if ignore_iof_thr > 0.
        gt_labels: (G,) int64 or None.
        """
        check.boxes("bboxes", bboxes)
        check.boxes("gt_bboxes", gt_bboxes)
        if gt_bboxes_ignore is not None:
            check.boxes("gt_bboxes_ignore", gt_bboxes_ignore)
        check.labels("gt_labels", gt_labels, gt_bboxes.shape[0], "gt_bboxes")
        check.same_dtype(bboxes=bboxes, gt_bboxes=gt_bboxes)  # as box_iou needs
        check.same_device(bboxes=bboxes, gt_bboxes=gt_bboxes,
                          gt_bboxes_ignore=gt_bboxes_ignore, gt_labels=gt_labels)

        use_ignore = (self.ignore_iof_thr > 0 and gt_bboxes_ignore is not None
                      and gt_bboxes_ignore.numel() > 0 and bboxes.numel() > 0)
        ignored = None  # (N,) bool: priors covered by an ignore box, overlap -1 with every gt
        if use_ignore:
            if self.ignore_wrt_candidates:
                iof = _boxes.box_iou(bboxes, gt_bboxes_ignore, mode="iof")  # (N, I)
                ignore_max = iof.amax(dim=1)  # (N,)
            else:
                iof = _boxes.box_iou(gt_bboxes_ignore, bboxes, mode="iof")  # (I, N)
                ignore_max = iof.amax(dim=0)  # (N,)
            ignored = ignore_max > self.ignore_iof_thr
        # The (G, N) IoU matrix is never held whole: see _scan_columns.
        return self._assign_blocks(_iou_blocks(gt_bboxes, bboxes, ignored), gt_bboxes.shape[0],
                                   bboxes.shape[0], bboxes.dtype, bboxes.device, gt_labels)

    def assign_wrt_overlaps(self, overlaps: torch.Tensor,
                            gt_labels: Optional[torch.Tensor] = None) -> AssignResult:
        """Assign from a precomputed (G, N) overlap matrix (row = gt, column = prior).

        Values are IoUs in [0, 1], or -1 for priors already marked ignored.
        gt_labels: (G,) int64 or None.
        """
        check.tensor("overlaps", overlaps, ndim=2, dtype="floating")
        check.no_nan("overlaps", overlaps)
        check.labels("gt_labels", gt_labels, overlaps.shape[0], "overlaps")
        check.same_device(overlaps=overlaps, gt_labels=gt_labels)
        return self._assign_blocks(_matrix_blocks(overlaps), *overlaps.shape, overlaps.dtype,
                                   overlaps.device, gt_labels)

    def _assign_blocks(self, block_of, num_gts: int, num_priors: int, dtype, device,
                       gt_labels: Optional[torch.Tensor]) -> AssignResult:
        """Steps 1-4 of ``_assign`` in one pass over column blocks of the overlaps.

        Just an optimisation of ``_assign`` (the step list on the whole matrix),
        tested against it bit for bit: the pass yields each prior's best gt and
        each gt's best IoU together; the low-quality step then revisits only the
        blocks where some gt reaches its best IoU.
        """
        if num_gts == 0 or num_priors == 0:
            empty = torch.empty((num_gts, num_priors), dtype=dtype, device=device)
            return self._assign(empty, gt_labels)
        gt_inds = torch.full((num_priors,), -1, dtype=torch.int64, device=device)  # (N,)
        scan = _scan_columns(block_of, num_gts, num_priors, dtype, device)
        max_overlaps, argmax_overlaps = scan.col_max, scan.col_argmax  # (N,), (N,)
        lo, hi = self._negative_range()
        gt_inds[(max_overlaps >= lo) & (max_overlaps < hi)] = 0
        pos = max_overlaps >= self.pos_iou_thr
        gt_inds[pos] = argmax_overlaps[pos] + 1
        if self.match_low_quality:
            eligible = scan.row_max >= self.min_pos_iou  # (G,)
            if self.gt_max_assign_all:
                owner = _last_row_at_its_max(block_of, scan, eligible)  # (N,)
            else:
                owner = torch.full((num_priors,), -1, dtype=torch.int64, device=device)
                gts = torch.nonzero(eligible).squeeze(1)  # (g,)
                if len(gts):
                    owner.scatter_reduce_(0, _first_column_at_max(block_of, scan, gts), gts,
                                          reduce="amax")
            claimed_by_some_gt = owner >= 0
            gt_inds[claimed_by_some_gt] = owner[claimed_by_some_gt] + 1
        labels = None if gt_labels is None else _labels_of(gt_inds, gt_labels)
        return AssignResult(num_gts, gt_inds, max_overlaps, labels)

    def _assign(self, overlaps: torch.Tensor, gt_labels: Optional[torch.Tensor]) -> AssignResult:
        """The step list on the whole (G, N) matrix: the readable version of _assign_blocks."""
        num_gts, num_priors = overlaps.shape
        device = overlaps.device

        # 1. everything starts ignored (-1)
        gt_inds = torch.full((num_priors,), -1, dtype=torch.int64, device=device)  # (N,)

        if num_gts == 0 or num_priors == 0:
            # No gts: every prior is negative. No priors: empty result.
            if num_gts == 0:
                gt_inds.fill_(0)
            max_overlaps = overlaps.new_zeros((num_priors,))
            labels = None if gt_labels is None else torch.full_like(gt_inds, -1)
            return AssignResult(num_gts, gt_inds, max_overlaps, labels)

        max_overlaps, argmax_overlaps = overlaps.max(dim=0)  # (N,), (N,) best gt per prior
        gt_max_overlaps, gt_argmax_overlaps = overlaps.max(dim=1)  # (G,), (G,) best prior per gt

        # 2. negatives: best IoU inside [lo, hi)
        lo, hi = self._negative_range()
        gt_inds[(max_overlaps >= lo) & (max_overlaps < hi)] = 0

        # 3. positives: best IoU >= pos_iou_thr, assigned to the argmax gt
        pos = max_overlaps >= self.pos_iou_thr
        gt_inds[pos] = argmax_overlaps[pos] + 1

        # 4. low-quality matches overwrite step 3. mmdet loops over gts in order, so
        #    for a prior claimed by several gts the LAST (highest-index) gt wins.
        if self.match_low_quality:
            eligible = gt_max_overlaps >= self.min_pos_iou  # (G,)
            if self.gt_max_assign_all:
                def claimed(cols: slice) -> torch.Tensor:
                    tied = overlaps[:, cols] == gt_max_overlaps[:, None]  # (G, chunk)
                    return tied & eligible[:, None]

                owner = _last_row_where(claimed, num_gts, num_priors, device)  # (N,)
            else:
                # Each eligible gt claims only its first argmax prior.
                owner = torch.full((num_priors,), -1, dtype=torch.int64, device=device)
                gt_index = torch.arange(num_gts, device=device)
                owner.scatter_reduce_(0, gt_argmax_overlaps[eligible], gt_index[eligible],
                                      reduce="amax")
            claimed_by_some_gt = owner >= 0
            gt_inds[claimed_by_some_gt] = owner[claimed_by_some_gt] + 1

        labels = None
        if gt_labels is not None:
            labels = _labels_of(gt_inds, gt_labels)
        return AssignResult(num_gts, gt_inds, max_overlaps, labels)


def _labels_of(gt_inds: torch.Tensor, gt_labels: torch.Tensor) -> torch.Tensor:
    """(N,) int64: the assigned gt's label where gt_inds > 0, else -1."""
    labels = torch.full_like(gt_inds, -1)  # (N,)
    pos = gt_inds > 0
    labels[pos] = gt_labels.to(torch.int64)[gt_inds[pos] - 1]
    return labels


# ------------------------------------------------------------------- detectron2 / torchvision
def _label_by_thresholds(values: torch.Tensor, thresholds: Sequence[float],
                         labels: Sequence[int]) -> torch.Tensor:
    """(N,) int8: labels[j] where thresholds[j] <= value < thresholds[j + 1].

    ``thresholds`` already carries -inf and +inf at its ends.
    """
    out = torch.ones(values.shape, dtype=torch.int8, device=values.device)  # (N,)
    for label, low, high in zip(labels, thresholds[:-1], thresholds[1:]):
        out[(values >= low) & (values < high)] = label
    return out


def _best_prior_columns(quality: torch.Tensor, scan: _ColumnScan) -> torch.Tensor:
    """(N,) bool: priors at some gt's maximum quality, ties included (exact ``==``).

    Readable form: ``(quality == quality.amax(dim=1)[:, None]).any(dim=0)``; here
    only the blocks where a gt reaches its maximum are compared again.
    """
    every_gt = torch.ones(quality.shape[0], dtype=torch.bool, device=quality.device)  # (G,)
    return _last_row_at_its_max(_matrix_blocks(quality), scan, every_gt) >= 0


class Matcher:
    """detectron2's Matcher (SPEC ASG-20 .. ASG-25).

    thresholds: ascending floats, the first > 0, e.g. [0.3, 0.7] for RPN.
    labels: one more than thresholds, each in {-1, 0, 1}; prior with best quality q
        gets labels[j] where thresholds[j-1] <= q < thresholds[j] (with -inf/+inf
        appended), e.g. [0, -1, 1]: q < 0.3 negative, [0.3, 0.7) ignored, >= 0.7 positive.
    allow_low_quality_matches: every prior at some gt's maximum (ties included, even
        when that maximum is 0) becomes positive; ``matches`` stays the argmax gt.

    ``matcher(match_quality_matrix)`` with a (G, N) float matrix of values >= 0 returns
    ``MatchResult(matches (N,) int64, labels (N,) int8)``. With no gts (G = 0) every
    prior gets matches 0 and labels[0].
    """

    def __init__(self, thresholds: Sequence[float], labels: Sequence[int],
                 allow_low_quality_matches: bool = False) -> None:
        thresholds = [check.number(f"thresholds[{i}]", t)
                      for i, t in enumerate(check.sequence("thresholds", thresholds))]
        if not thresholds or thresholds[0] <= 0:
            raise ValueError(
                f"thresholds: expected a non-empty list starting above 0, got {thresholds}")
        if any(a > b for a, b in zip(thresholds[:-1], thresholds[1:])):
            raise ValueError(f"thresholds: expected ascending values, got {thresholds}")
        labels = list(labels)
        if any(label not in (-1, 0, 1) for label in labels):
            raise ValueError(f"labels: expected values in {{-1, 0, 1}}, got {labels}")
        if len(labels) != len(thresholds) + 1:
            raise ValueError(
                f"labels: expected {len(thresholds) + 1} labels for {len(thresholds)} "
                f"thresholds, got {len(labels)}")
        self.thresholds = [-math.inf] + thresholds + [math.inf]
        self.labels = labels
        self.allow_low_quality_matches = check.flag("allow_low_quality_matches",
                                                    allow_low_quality_matches)

    def __call__(self, match_quality_matrix: torch.Tensor) -> MatchResult:
        quality = check.tensor("match_quality_matrix", match_quality_matrix, ndim=2,
                               dtype="floating")
        check.no_nan("match_quality_matrix", quality)
        num_gts, num_priors = quality.shape
        if num_gts == 0 or num_priors == 0:
            # No gts: IoU counts as 0, so every prior takes the lowest band's label.
            matches = torch.zeros(num_priors, dtype=torch.int64, device=quality.device)
            labels = torch.full((num_priors,), self.labels[0], dtype=torch.int8,
                                device=quality.device)
            return MatchResult(matches, labels)
        if bool(quality.amin() < 0):  # one reduction, no boolean copy
            raise check.fail("match_quality_matrix", "values >= 0",
                             f"a minimum of {float(quality.min())}")

        # One pass over column blocks gives the max and argmax of each column and each
        # gt's best quality (what quality.max(dim=0) and quality.amax(dim=1) give).
        scan = _scan_columns(_matrix_blocks(quality), num_gts, num_priors, quality.dtype,
                             quality.device)
        matched_vals, matches = scan.col_max, scan.col_argmax  # (N,), (N,)
        labels = _label_by_thresholds(matched_vals, self.thresholds, self.labels)  # (N,)
        if self.allow_low_quality_matches:
            labels[_best_prior_columns(quality, scan)] = 1
        return MatchResult(matches, labels)


class TorchvisionMatcher:
    """torchvision's Matcher (SPEC ASG-26 .. ASG-28), flavour ``torchvision``.

    ``matcher(match_quality_matrix)`` with a (G, N) float matrix returns (N,) int64:
    the argmax gt where best quality >= high_threshold, ``BELOW_LOW_THRESHOLD`` (-1)
    where < low_threshold, ``BETWEEN_THRESHOLDS`` (-2) in between. With
    allow_low_quality_matches, priors at some gt's maximum (ties included) get their
    argmax gt back. An empty matrix raises ValueError (torchvision callers handle
    images without gts themselves).
    """

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(self, high_threshold: float, low_threshold: float,
                 allow_low_quality_matches: bool = False) -> None:
        high = check.number("high_threshold", high_threshold)
        low = check.number("low_threshold", low_threshold)
        if low > high:
            raise ValueError(f"low_threshold: expected <= high_threshold {high}, got {low}")
        self.high_threshold = high
        self.low_threshold = low
        self.allow_low_quality_matches = check.flag("allow_low_quality_matches",
                                                    allow_low_quality_matches)

    def __call__(self, match_quality_matrix: torch.Tensor) -> torch.Tensor:
        quality = check.tensor("match_quality_matrix", match_quality_matrix, ndim=2,
                               dtype="floating")
        check.no_nan("match_quality_matrix", quality)
        if quality.shape[0] == 0:
            raise check.fail("match_quality_matrix", "at least one gt row (torchvision's "
                             "callers handle images without gts)", quality)
        if quality.shape[1] == 0:
            raise check.fail("match_quality_matrix", "at least one proposal column", quality)
        scan = _scan_columns(_matrix_blocks(quality), *quality.shape, quality.dtype,
                             quality.device)  # as in Matcher.__call__
        matched_vals, argmax = scan.col_max, scan.col_argmax  # (N,), (N,)
        # Same bands as detectron2 with thresholds [low, high], labels [-1, -2, keep].
        band = _label_by_thresholds(matched_vals, [-math.inf, self.low_threshold,
                                                   self.high_threshold, math.inf], [0, -1, 1])
        if self.allow_low_quality_matches:
            band[_best_prior_columns(quality, scan)] = 1
        matches = argmax.clone()
        matches[band == 0] = self.BELOW_LOW_THRESHOLD
        matches[band == -1] = self.BETWEEN_THRESHOLDS
        return matches


# --------------------------------------------------------------------------- RTMDet DSL
@dataclasses.dataclass(frozen=True)
class DynamicSoftLabelAssigner:
    """RTMDet's DynamicSoftLabelAssigner (SPEC ASG-30 .. ASG-40).

    soft_center_radius: r in the centre cost 10 ** (distance / stride - r).
    topk: how many best IoUs per gt are summed to get its dynamic k.
    iou_weight: weight of the IoU cost -log(IoU + 1e-7).

    Steps (upstream order):
      1. candidates: priors whose point is STRICTLY inside at least one gt;
      2. cost(p, g) = soft classification cost + iou_weight * -log(IoU + eps)
         + 10 ** (|point - gt centre| / stride - radius), for candidates only;
      3. k_g = max(1, int(sum of the min(topk, #candidates) largest IoUs of gt g));
      4. gt g selects its k_g cheapest candidates;
      5. a candidate selected by several gts goes to the gt of lowest cost over ALL
         gts (first on ties);
      6. max_overlaps = IoU with the matched gt; -DSL_INF for every other prior.
    """

    soft_center_radius: float = 3.0
    topk: int = 13
    iou_weight: float = 3.0

    def __post_init__(self) -> None:
        check.number("soft_center_radius", self.soft_center_radius)
        check.number("iou_weight", self.iou_weight, low=0)
        check.integer("topk", self.topk, low=1)

    # ---- public API
    def assign(self, pred_scores: torch.Tensor, decoded_bboxes: torch.Tensor,
               priors: torch.Tensor, gt_bboxes: torch.Tensor,
               gt_labels: torch.Tensor) -> AssignResult:
        """Assign gts to priors of one image.

        pred_scores: (N, C) float classification LOGITS (not probabilities).
        decoded_bboxes: (N, 4) float xyxy predicted boxes.
        priors: (N, 4) float points with strides, (x, y, stride_w, stride_h); only
            stride_w is used, as upstream.
        gt_bboxes: (G, 4) float xyxy. gt_labels: (G,) int64 in [0, C).
        """
        self._validate(pred_scores, decoded_bboxes, priors, gt_bboxes, gt_labels)
        out_dtype = decoded_bboxes.dtype
        # float16/bfloat16 run in float32: the float32 answer, rounded (SPEC.md VAL-2).
        pred_scores, decoded_bboxes, priors, gt_bboxes = (
            t.to(check.compute_dtype(t)) for t in (pred_scores, decoded_bboxes, priors, gt_bboxes))
        num_gts, num_priors = gt_bboxes.shape[0], priors.shape[0]
        device = priors.device
        gt_inds = torch.zeros(num_priors, dtype=torch.int64, device=device)  # (N,)
        labels = torch.full((num_priors,), -1, dtype=torch.int64, device=device)  # (N,)

        is_candidate = self._centre_inside_any_gt(priors, gt_bboxes)  # (N,)
        if num_gts == 0 or num_priors == 0 or not is_candidate.any():
            max_overlaps = decoded_bboxes.new_zeros((num_priors,), dtype=out_dtype)
            return AssignResult(num_gts, gt_inds, max_overlaps, labels)

        cand = is_candidate.nonzero().squeeze(1)  # (V,) candidate prior indices
        cost, ious = self._cost_and_ious(pred_scores[cand], decoded_bboxes[cand], priors[cand],
                                         gt_bboxes, gt_labels)  # (V, G), (V, G)
        matched_gt, matched_iou = self.dynamic_k_matching(cost, ious)  # (V,), (V,)

        max_overlaps = decoded_bboxes.new_full((num_priors,), -DSL_INF)  # (N,)
        won = matched_gt >= 0
        winners = cand[won]
        gt_inds[winners] = matched_gt[won] + 1
        labels[winners] = gt_labels.to(torch.int64)[matched_gt[won]]
        max_overlaps[winners] = matched_iou[won]
        return AssignResult(num_gts, gt_inds, max_overlaps.to(out_dtype), labels)

    def cost_matrix(self, pred_scores: torch.Tensor, decoded_bboxes: torch.Tensor,
                    priors: torch.Tensor, gt_bboxes: torch.Tensor,
                    gt_labels: torch.Tensor) -> torch.Tensor:
        """(N, G) matching cost of every given prior against every gt (step 2).

        Same arguments as ``assign``; computed for all given priors, inside a gt or not.
        """
        self._validate(pred_scores, decoded_bboxes, priors, gt_bboxes, gt_labels)
        out_dtype = decoded_bboxes.dtype
        pred_scores, decoded_bboxes, priors, gt_bboxes = (
            t.to(check.compute_dtype(t)) for t in (pred_scores, decoded_bboxes, priors, gt_bboxes))
        cost, _ = self._cost_and_ious(pred_scores, decoded_bboxes, priors, gt_bboxes, gt_labels)
        return cost.to(out_dtype)

    def dynamic_k_matching(self, cost: torch.Tensor, pairwise_ious: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps 3-5 on candidate priors.

        cost, pairwise_ious: (V, G) float, row = candidate prior, column = gt.
        Returns matched_gt (V,) int64 (-1 = unmatched) and matched_iou (V,) float
        (IoU with the matched gt, 0 where unmatched).

        A gt's k cheapest priors are taken in ascending cost; equal costs are taken
        in ascending prior index (upstream's per-gt topk leaves that order open).
        """
        check.tensor("cost", cost, ndim=2, dtype="floating")
        check.tensor("pairwise_ious", pairwise_ious, ndim=2, dtype="floating")
        if cost.shape != pairwise_ious.shape:
            raise check.fail("pairwise_ious", f"cost's shape {tuple(cost.shape)}", pairwise_ious)
        check.no_nan("cost", cost)
        check.no_nan("pairwise_ious", pairwise_ious)
        num_cand, num_gts = cost.shape
        device = cost.device
        matched_gt = torch.full((num_cand,), -1, dtype=torch.int64, device=device)  # (V,)
        if num_cand == 0 or num_gts == 0:
            return matched_gt, pairwise_ious.new_zeros((num_cand,))

        # 3. dynamic k per gt from the sum of its best IoUs (int() truncates)
        candidate_topk = min(self.topk, num_cand)
        topk_ious = pairwise_ious.topk(candidate_topk, dim=0).values  # (topk, G)
        dynamic_ks = topk_ious.sum(dim=0).int().clamp(min=1)  # (G,)

        # 4. every gt selects its k cheapest priors (stable: ties by prior index)
        k_max = int(dynamic_ks.max())
        cheapest = cost.argsort(dim=0, stable=True)[:k_max]  # (k_max, G) prior indices
        rank = torch.arange(k_max, device=device)[:, None]  # (k_max, 1)
        keep = rank < dynamic_ks[None, :]  # (k_max, G)
        gt_cols = torch.arange(num_gts, device=device).expand(k_max, num_gts)  # (k_max, G)
        selected = torch.zeros((num_cand, num_gts), dtype=torch.bool, device=device)  # (V, G)
        selected[cheapest[keep], gt_cols[keep]] = True

        # 5. a prior selected by several gts keeps the gt of lowest cost over all gts
        num_selected = selected.sum(dim=1)  # (V,)
        single = num_selected == 1
        multi = num_selected > 1
        matched_gt[single] = selected[single].int().argmax(dim=1)
        matched_gt[multi] = cost[multi].argmin(dim=1)

        matched = matched_gt >= 0
        matched_iou = pairwise_ious.new_zeros((num_cand,))  # (V,)
        matched_iou[matched] = pairwise_ious[matched, matched_gt[matched]]
        return matched_gt, matched_iou

    # ---- internals
    def _validate(self, pred_scores, decoded_bboxes, priors, gt_bboxes, gt_labels) -> None:
        check.tensor("pred_scores", pred_scores, ndim=2, dtype="floating")
        check.boxes("decoded_bboxes", decoded_bboxes)
        check.boxes("priors", priors)
        check.boxes("gt_bboxes", gt_bboxes)
        if gt_labels is None:
            raise check.fail("gt_labels", "a (G,) integer tensor", gt_labels, TypeError)
        check.labels("gt_labels", gt_labels, gt_bboxes.shape[0], "gt_bboxes",
                     num_classes=pred_scores.shape[1])
        check.rows("pred_scores", pred_scores, priors.shape[0], "priors")
        check.rows("decoded_bboxes", decoded_bboxes, priors.shape[0], "priors")
        check.no_nan("pred_scores", pred_scores)  # a NaN logit would make every cost NaN
        if priors.numel() and (priors[:, 2] <= 0).any():
            raise check.fail("priors", "positive strides in column 2",
                             f"a minimum stride of {float(priors[:, 2].min())}")
        check.same_device(pred_scores=pred_scores, decoded_bboxes=decoded_bboxes,
                          priors=priors, gt_bboxes=gt_bboxes, gt_labels=gt_labels)

    @staticmethod
    def _centre_inside_any_gt(priors: torch.Tensor, gt_bboxes: torch.Tensor) -> torch.Tensor:
        """(N,) bool: the prior point lies strictly inside at least one gt."""
        num_gts, num_priors = gt_bboxes.shape[0], priors.shape[0]
        inside = torch.zeros(num_priors, dtype=torch.bool, device=priors.device)  # (N,)
        x, y = priors[:, 0], priors[:, 1]
        for rows in _column_chunks(num_gts, num_priors):
            px, py = x[rows, None], y[rows, None]  # (chunk, 1)
            strictly = ((px > gt_bboxes[:, 0]) & (py > gt_bboxes[:, 1])
                        & (px < gt_bboxes[:, 2]) & (py < gt_bboxes[:, 3]))  # (chunk, G)
            inside[rows] = strictly.any(dim=1)
        return inside

    def _cost_and_ious(self, pred_scores, decoded_bboxes, priors, gt_bboxes, gt_labels):
        """(V, G) cost and (V, G) IoU for the given priors (step 2)."""
        ious = _boxes.box_iou(decoded_bboxes, gt_bboxes)  # (V, G)

        # Centre cost: distance in strides between prior point and gt centre.
        gt_centre = (gt_bboxes[:, :2] + gt_bboxes[:, 2:]) / 2.0  # (G, 2)
        distance = (priors[:, None, :2] - gt_centre[None]).pow(2).sum(-1).sqrt()  # (V, G)
        distance = distance / priors[:, 2:3]
        centre_cost = torch.pow(10.0, distance - self.soft_center_radius)  # (V, G)

        iou_cost = -torch.log(ious + _DSL_EPS) * self.iou_weight  # (V, G)
        cls_cost = _soft_label_class_cost(pred_scores, gt_labels, ious)  # (V, G)
        return cls_cost + iou_cost + centre_cost, ious


def _soft_label_class_cost(logits: torch.Tensor, gt_labels: torch.Tensor,
                           ious: torch.Tensor) -> torch.Tensor:
    """(V, G) DSL classification cost without the (V, G, C) tensor upstream builds.

    Upstream: sum over classes c of BCE(x_c, t_c) * |t_c - sigmoid(x_c)|^2 with the
    soft target t_c = IoU for the gt's class and 0 for every other class. Split the
    sum: the classes other than c_g contribute the "negative" term
    neg(x) = BCE(x, 0) * sigmoid(x)^2 = softplus(x) * sigmoid(x)^2, so

        cost(p, g) = S(p) - neg(x[p, c_g]) + BCE(x[p, c_g], iou) * |iou - sigmoid(x[p, c_g])|^2

    with S(p) = sum_c neg(x[p, c]) computed once per prior.
    """
    negative_term = F.softplus(logits) * torch.sigmoid(logits).pow(2)  # (V, C)
    all_negative = negative_term.sum(dim=1, keepdim=True)  # (V, 1)

    labels = gt_labels.to(torch.int64)
    x = logits[:, labels]  # (V, G) logit of each gt's own class
    positive = (F.binary_cross_entropy_with_logits(x, ious, reduction="none")
                * (ious - torch.sigmoid(x)).abs().pow(2))  # (V, G)
    return all_negative - negative_term[:, labels] + positive


# --------------------------------------------------------------------------- adapters
class MatcherAssigner:
    """A detectron2 ``Matcher`` or a ``TorchvisionMatcher`` behind mmdet's assigner call.

    Detectors and ``reference.targets`` call every assigner the same way:
    ``assign(priors (N, 4), gt_bboxes (G, 4), gt_bboxes_ignore=None, gt_labels=None)
    -> AssignResult``. This adapter computes the flavour's IoU matrix (G, N)
    (``pairwise_iou`` for detectron2, ``box_iou_torchvision`` for torchvision), runs
    the matcher and re-encodes its answer in mmdet's ``gt_inds``:

    * detectron2 labels 1 -> argmax gt + 1, 0 -> 0, -1 -> -1 (a low-quality match
      keeps the argmax gt, as detectron2's does);
    * torchvision index k >= 0 -> k + 1, ``BELOW_LOW_THRESHOLD`` -> 0,
      ``BETWEEN_THRESHOLDS`` -> -1; an image without gts has every prior negative
      (torchvision's callers special-case it so).

    ``max_overlaps`` is each prior's best IoU (0 without gts); ``labels`` the class
    of the assigned gt at positives, -1 elsewhere (None without gt_labels).
    ``gt_bboxes_ignore`` is not supported by either upstream matcher and must be None.
    """

    def __init__(self, matcher: Union[Matcher, "TorchvisionMatcher"]) -> None:
        if not isinstance(matcher, (Matcher, TorchvisionMatcher)):
            raise check.fail("matcher", "a Matcher or TorchvisionMatcher", matcher, TypeError)
        self.matcher = matcher

    def __repr__(self) -> str:
        m = self.matcher
        if isinstance(m, Matcher):
            return (f"MatcherAssigner(Matcher({m.thresholds[1:-1]}, {m.labels}, "
                    f"low_quality={m.allow_low_quality_matches}))")
        return (f"MatcherAssigner(TorchvisionMatcher({m.high_threshold}, {m.low_threshold}, "
                f"low_quality={m.allow_low_quality_matches}))")

    def assign(self, bboxes: torch.Tensor, gt_bboxes: torch.Tensor,
               gt_bboxes_ignore: Optional[torch.Tensor] = None,
               gt_labels: Optional[torch.Tensor] = None) -> AssignResult:
        if gt_bboxes_ignore is not None and gt_bboxes_ignore.numel() > 0:
            raise check.fail("gt_bboxes_ignore", "None (detectron2's and torchvision's "
                             "matchers have no ignore regions)", gt_bboxes_ignore)
        check.boxes("bboxes", bboxes)
        check.boxes("gt_bboxes", gt_bboxes)
        check.labels("gt_labels", gt_labels, gt_bboxes.shape[0], "gt_bboxes")
        check.same_device(bboxes=bboxes, gt_bboxes=gt_bboxes, gt_labels=gt_labels)
        num_gts, num_priors = gt_bboxes.shape[0], bboxes.shape[0]
        device = bboxes.device
        if num_gts == 0:
            zeros = torch.zeros(num_priors, dtype=torch.int64, device=device)
            labels = None if gt_labels is None else torch.full_like(zeros, -1)
            if isinstance(self.matcher, Matcher):  # every prior takes the lowest band's label
                gt_inds = torch.full_like(zeros, {1: 0, 0: 0, -1: -1}[self.matcher.labels[0]])
            else:
                gt_inds = zeros
            return AssignResult(0, gt_inds, bboxes.new_zeros(num_priors), labels)
        if isinstance(self.matcher, Matcher):
            quality = _boxes.pairwise_iou(gt_bboxes, bboxes)  # (G, N)
            matches, state = self.matcher(quality)  # (N,), (N,) in {-1, 0, 1}
            gt_inds = torch.where(state == 1, matches + 1,
                                  torch.where(state == 0, 0, -1)).to(torch.int64)
        else:
            quality = _boxes.box_iou_torchvision(gt_bboxes, bboxes)  # (G, N)
            idx = self.matcher(quality)  # (N,) k >= 0, -1 below, -2 between
            gt_inds = torch.where(idx >= 0, idx + 1, torch.where(idx == -1, 0, -1))
        max_overlaps = quality.max(dim=0).values  # (N,)
        labels = None if gt_labels is None else _labels_of(gt_inds, gt_labels)
        return AssignResult(num_gts, gt_inds, max_overlaps, labels)
