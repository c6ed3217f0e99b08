"""Sampling: which assigned priors take part in the loss.

After assignment every prior is positive, negative or ignored. Dense heads trained
with focal-type losses keep all of them (``PseudoSampler``); RPN and R-CNN heads draw
a fixed-size batch with a target positive fraction (SPEC.md "Samplers", SMP-*):

* ``RandomSampler`` - mmdetection; gts can be PREPENDED as proposals;
  indices come back sorted (mmdet applies ``unique``).
* ``subsample_labels`` - detectron2; indices come back in random order.
* ``BalancedPositiveNegativeSampler`` - torchvision; returns per-image masks
  (appending gts as proposals is the caller's job in torchvision).

Every flavour draws the same counts (SMP-1):
    num_pos = min(#positives, int(num * pos_fraction))
    num_neg = min(#negatives, num - num_pos)
Randomness comes from an optional ``torch.Generator`` (a CPU generator; the
permutations are drawn on the CPU, so a seed gives the same sample on any device).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import torch

from reference import validate as check

from reference.assignment import AssignResult

__all__ = [
    "SamplingResult",
    "PseudoSampler",
    "RandomSampler",
    "subsample_labels",
    "BalancedPositiveNegativeSampler",
    "Detectron2Sampler",
    "TorchvisionSampler",
]


# --------------------------------------------------------------------------- result
@dataclasses.dataclass(frozen=True)
class SamplingResult:
    """The sampled priors of one image (mmdet ``SamplingResult``).

    pos_inds / neg_inds: (P,) / (Q,) int64 indices into ``priors`` (which, with gts
        added as proposals, start with the G gt boxes).
    priors: (N, 4) the boxes the indices refer to.
    pos_is_gt: (P,) uint8, 1 where the positive is a gt added as a proposal.
    num_gts: number of gts.
    pos_assigned_gt_inds: (P,) int64 0-based gt index of each positive.
    pos_gt_bboxes: (P, 4) the assigned gt box of each positive.
    pos_gt_labels: (P,) int64 class of each positive, or None without labels.
    avg_factor_with_neg: whether ``avg_factor`` counts negatives too.
    """

    pos_inds: torch.Tensor
    neg_inds: torch.Tensor
    priors: torch.Tensor
    pos_is_gt: torch.Tensor
    num_gts: int
    pos_assigned_gt_inds: torch.Tensor
    pos_gt_bboxes: torch.Tensor
    pos_gt_labels: Optional[torch.Tensor]
    avg_factor_with_neg: bool = True

    @property
    def pos_priors(self) -> torch.Tensor:
        """(P, 4) the positive priors."""
        return self.priors[self.pos_inds]

    @property
    def neg_priors(self) -> torch.Tensor:
        """(Q, 4) the negative priors."""
        return self.priors[self.neg_inds]

    @property
    def num_pos(self) -> int:
        """max(#positives, 1), as mmdet counts it for normalisation."""
        return max(int(self.pos_inds.numel()), 1)

    @property
    def num_neg(self) -> int:
        """max(#negatives, 1)."""
        return max(int(self.neg_inds.numel()), 1)

    @property
    def avg_factor(self) -> int:
        """num_pos + num_neg when avg_factor_with_neg, else num_pos."""
        return self.num_pos + self.num_neg if self.avg_factor_with_neg else self.num_pos


def _make_result(pos_inds, neg_inds, priors, gt_bboxes, assign_result: AssignResult,
                 gt_flags, avg_factor_with_neg: bool) -> SamplingResult:
    pos_assigned_gt_inds = assign_result.gt_inds[pos_inds] - 1  # (P,)
    if gt_bboxes.numel() == 0:
        pos_gt_bboxes = gt_bboxes.new_zeros((0, 4))
    else:
        pos_gt_bboxes = gt_bboxes.reshape(-1, 4)[pos_assigned_gt_inds]  # (P, 4)
    labels = None if assign_result.labels is None else assign_result.labels[pos_inds]
    return SamplingResult(
        pos_inds=pos_inds, neg_inds=neg_inds, priors=priors, pos_is_gt=gt_flags[pos_inds],
        num_gts=int(gt_bboxes.reshape(-1, 4).shape[0]),
        pos_assigned_gt_inds=pos_assigned_gt_inds, pos_gt_bboxes=pos_gt_bboxes,
        pos_gt_labels=labels, avg_factor_with_neg=avg_factor_with_neg)


def _check_inputs(assign_result, priors, gt_bboxes, gt_labels=None) -> None:
    if not isinstance(assign_result, AssignResult):
        raise check.fail("assign_result", "an AssignResult", assign_result, TypeError)
    check.tensor("priors", priors, ndim=2, last=4, dtype="floating")
    check.tensor("gt_bboxes", gt_bboxes, ndim=2, last=4, dtype="floating")
    check.rows("priors", priors, assign_result.num_priors, "the assign result's priors")
    check.rows("gt_bboxes", gt_bboxes, assign_result.num_gts, "the assign result's gts")
    if gt_labels is not None:
        check.tensor("gt_labels", gt_labels, ndim=1, dtype="integer")
        check.rows("gt_labels", gt_labels, gt_bboxes.shape[0], "gt_bboxes")


# --------------------------------------------------------------------------- counts
def _sample_counts(num_pos_available: int, num_neg_available: int, num: int,
                   pos_fraction: float, neg_pos_ub: float = -1) -> tuple[int, int]:
    """(num_pos, num_neg) drawn by every flavour (SMP-1); mmdet's neg_pos_ub >= 0 caps
    negatives at int(neg_pos_ub * max(num_pos, 1))."""
    num_pos = min(num_pos_available, int(num * pos_fraction))
    num_neg = num - num_pos
    if neg_pos_ub >= 0:
        num_neg = min(num_neg, int(neg_pos_ub * max(1, num_pos)))
    return num_pos, min(num_neg_available, num_neg)


def _random_subset(indices: torch.Tensor, count: int,
                   generator: Optional[torch.Generator]) -> torch.Tensor:
    """``count`` entries of ``indices`` in the order of a random permutation."""
    perm = torch.randperm(indices.numel(), generator=generator)[:count]  # on CPU
    return indices[perm.to(indices.device)]


# --------------------------------------------------------------------------- mmdet
class PseudoSampler:
    """Keeps every positive and every negative (mmdet ``PseudoSampler``, SMP-2).

    ``sample(assign_result, priors, gt_bboxes)``: positives are gt_inds > 0,
    negatives gt_inds == 0, both sorted; ``avg_factor`` counts positives only.
    """

    def sample(self, assign_result: AssignResult, priors: torch.Tensor,
               gt_bboxes: torch.Tensor, gt_labels: Optional[torch.Tensor] = None,
               generator: Optional[torch.Generator] = None) -> SamplingResult:
        """gt_labels and generator are accepted for a uniform sampler interface and unused."""
        _check_inputs(assign_result, priors, gt_bboxes, gt_labels)
        pos_inds = (assign_result.gt_inds > 0).nonzero().squeeze(1)  # (P,)
        neg_inds = (assign_result.gt_inds == 0).nonzero().squeeze(1)  # (Q,)
        gt_flags = torch.zeros(priors.shape[0], dtype=torch.uint8, device=priors.device)
        return _make_result(pos_inds, neg_inds, priors, gt_bboxes, assign_result, gt_flags,
                            avg_factor_with_neg=False)


@dataclasses.dataclass(frozen=True)
class RandomSampler:
    """mmdet's RandomSampler (SMP-3 .. SMP-6).

    num: total samples per image (RPN 256, R-CNN 512).
    pos_fraction: target positive fraction (RPN 0.5, R-CNN 0.25).
    neg_pos_ub: if >= 0, at most int(neg_pos_ub * max(num_pos, 1)) negatives.
    add_gt_as_proposals: the G gt boxes are PREPENDED to the priors (indices 0..G-1,
        assigned to themselves, pos_is_gt = 1) before sampling.

    ``sample(assign_result, priors, gt_bboxes, gt_labels=None, generator=None)``:
    positives drawn uniformly without replacement among gt_inds > 0, negatives among
    gt_inds == 0; both returned sorted ascending.
    """

    num: int
    pos_fraction: float
    neg_pos_ub: float = -1
    add_gt_as_proposals: bool = True

    def __post_init__(self) -> None:
        check.integer("num", self.num, low=0)
        check.number("pos_fraction", self.pos_fraction, low=0, high=1)
        check.flag("add_gt_as_proposals", self.add_gt_as_proposals)

    def sample(self, assign_result: AssignResult, priors: torch.Tensor,
               gt_bboxes: torch.Tensor, gt_labels: Optional[torch.Tensor] = None,
               generator: Optional[torch.Generator] = None) -> SamplingResult:
        _check_inputs(assign_result, priors, gt_bboxes, gt_labels)
        check.generator("generator", generator)
        gt_flags = torch.zeros(priors.shape[0], dtype=torch.uint8, device=priors.device)
        if self.add_gt_as_proposals and gt_bboxes.shape[0] > 0:
            if assign_result.labels is not None and gt_labels is None:
                raise ValueError("gt_labels: required with add_gt_as_proposals when the "
                                 "assign result carries labels, got None")
            priors = torch.cat([gt_bboxes.to(priors.dtype), priors])  # (G + N, 4)
            assign_result = assign_result.with_gts_prepended(gt_labels)
            gt_flags = torch.cat([gt_flags.new_ones(gt_bboxes.shape[0]), gt_flags])

        positives = (assign_result.gt_inds > 0).nonzero().squeeze(1)
        negatives = (assign_result.gt_inds == 0).nonzero().squeeze(1)
        num_pos, num_neg = _sample_counts(positives.numel(), negatives.numel(), self.num,
                                          self.pos_fraction, self.neg_pos_ub)
        pos_inds = _random_subset(positives, num_pos, generator).sort().values
        neg_inds = _random_subset(negatives, num_neg, generator).sort().values
        return _make_result(pos_inds, neg_inds, priors, gt_bboxes, assign_result, gt_flags,
                            avg_factor_with_neg=True)


# --------------------------------------------------------------------------- detectron2
def subsample_labels(labels: torch.Tensor, num_samples: int, positive_fraction: float,
                     bg_label: int, generator: Optional[torch.Generator] = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """detectron2's subsample_labels (SMP-7).

    labels: (N,) int; -1 ignore, ``bg_label`` negative, anything else positive.
    Returns (pos_idx, neg_idx), int64 indices into labels in random order.
    """
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels: expected a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() != 1 or labels.is_floating_point():
        raise ValueError(f"labels: expected a 1-d integer tensor, got shape "
                         f"{tuple(labels.shape)} dtype {labels.dtype}")
    check.integer("num_samples", num_samples, low=0)
    check.number("positive_fraction", positive_fraction, low=0, high=1)
    check.generator("generator", generator)
    bg_label = check.integer("bg_label", bg_label)
    positive = ((labels != -1) & (labels != bg_label)).nonzero().squeeze(1)
    negative = (labels == bg_label).nonzero().squeeze(1)
    num_pos, num_neg = _sample_counts(positive.numel(), negative.numel(), num_samples,
                                      positive_fraction)
    return _random_subset(positive, num_pos, generator), _random_subset(negative, num_neg,
                                                                        generator)


# --------------------------------------------------------------------------- torchvision
class BalancedPositiveNegativeSampler:
    """torchvision's sampler (SMP-8), flavour ``torchvision``.

    ``sampler(matched_idxs, generator=None)`` with a list of (N_i,) int tensors per
    image (>= 1 positive, 0 negative, -1 ignored) returns two lists of (N_i,) uint8
    masks: the sampled positives and the sampled negatives of each image.
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float) -> None:
        check.integer("batch_size_per_image", batch_size_per_image, low=0)
        check.number("positive_fraction", positive_fraction, low=0, high=1)
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = float(positive_fraction)

    def __call__(self, matched_idxs: Sequence[torch.Tensor],
                 generator: Optional[torch.Generator] = None
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        check.generator("generator", generator)
        matched_idxs = check.sequence("matched_idxs", matched_idxs, of="tensors")
        pos_masks, neg_masks = [], []
        for i, labels in enumerate(matched_idxs):  # one image at a time
            check.tensor(f"matched_idxs[{i}]", labels, ndim=1, dtype="integer")
            positive = (labels >= 1).nonzero().squeeze(1)
            negative = (labels == 0).nonzero().squeeze(1)
            num_pos, num_neg = _sample_counts(positive.numel(), negative.numel(),
                                              self.batch_size_per_image, self.positive_fraction)
            pos_mask = torch.zeros_like(labels, dtype=torch.uint8)
            neg_mask = torch.zeros_like(labels, dtype=torch.uint8)
            pos_mask[_random_subset(positive, num_pos, generator)] = 1
            neg_mask[_random_subset(negative, num_neg, generator)] = 1
            pos_masks.append(pos_mask)
            neg_masks.append(neg_mask)
        return pos_masks, neg_masks


# --------------------------------------------------------------------------- adapters
def _labels_from(assign_result: AssignResult) -> torch.Tensor:
    """(N,) int64 in the detectron2/torchvision sampler encoding: 1 positive, 0 negative,
    -1 ignored (from mmdet's gt_inds)."""
    gt_inds = assign_result.gt_inds
    return torch.where(gt_inds > 0, 1, torch.where(gt_inds == 0, 0, -1)).to(torch.int64)


@dataclasses.dataclass(frozen=True)
class _FixedBatchSampler:
    """What the two adapters below share: ``num`` priors per image, ``pos_fraction`` of
    them at most positive, checked once here."""

    num: int
    pos_fraction: float

    def __post_init__(self) -> None:
        check.integer("num", self.num, low=0)
        check.number("pos_fraction", self.pos_fraction, low=0, high=1)


@dataclasses.dataclass(frozen=True)
class Detectron2Sampler(_FixedBatchSampler):
    """``subsample_labels`` behind mmdet's sampler call (SMP-7), for detectors and
    ``reference.targets``: ``sample(assign_result, priors, gt_bboxes, gt_labels=None,
    generator=None) -> SamplingResult`` with the indices in detectron2's random order.

    Gts are never added here: detectron2 appends them to the proposals BEFORE
    matching (``add_ground_truth_to_proposals``), which is the caller's step.
    """

    def sample(self, assign_result: AssignResult, priors: torch.Tensor,
               gt_bboxes: torch.Tensor, gt_labels: Optional[torch.Tensor] = None,
               generator: Optional[torch.Generator] = None) -> SamplingResult:
        _check_inputs(assign_result, priors, gt_bboxes)
        pos_inds, neg_inds = subsample_labels(_labels_from(assign_result), self.num,
                                              self.pos_fraction, 0, generator)
        gt_flags = torch.zeros(priors.shape[0], dtype=torch.uint8, device=priors.device)
        return _make_result(pos_inds, neg_inds, priors, gt_bboxes, assign_result, gt_flags,
                            avg_factor_with_neg=True)


@dataclasses.dataclass(frozen=True)
class TorchvisionSampler(_FixedBatchSampler):
    """``BalancedPositiveNegativeSampler`` behind mmdet's sampler call (SMP-8): one
    image's masks turned into ascending indices (torchvision reads them through
    ``torch.where(mask)``). Adding gts as proposals is the caller's step, as in
    torchvision."""

    def sample(self, assign_result: AssignResult, priors: torch.Tensor,
               gt_bboxes: torch.Tensor, gt_labels: Optional[torch.Tensor] = None,
               generator: Optional[torch.Generator] = None) -> SamplingResult:
        _check_inputs(assign_result, priors, gt_bboxes)
        sampler = BalancedPositiveNegativeSampler(self.num, self.pos_fraction)
        (pos_mask,), (neg_mask,) = sampler([_labels_from(assign_result)], generator)
        pos_inds = pos_mask.nonzero().squeeze(1)  # (P,) ascending
        neg_inds = neg_mask.nonzero().squeeze(1)  # (Q,) ascending
        gt_flags = torch.zeros(priors.shape[0], dtype=torch.uint8, device=priors.device)
        return _make_result(pos_inds, neg_inds, priors, gt_bboxes, assign_result, gt_flags,
                            avg_factor_with_neg=True)
