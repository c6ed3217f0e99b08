"""Loop-based oracles for the samplers (SPEC.md "Samplers"). Imports nothing from
``reference``."""

from __future__ import annotations


def sample_counts(num_pos_available, num_neg_available, num, pos_fraction, neg_pos_ub=-1):
    """(num_pos, num_neg) as every upstream sampler computes them."""
    num_pos = int(num * pos_fraction)
    if num_pos_available < num_pos:
        num_pos = num_pos_available
    num_neg = num - num_pos
    if neg_pos_ub >= 0:
        upper = int(neg_pos_ub * max(1, num_pos))
        if num_neg > upper:
            num_neg = upper
    if num_neg_available < num_neg:
        num_neg = num_neg_available
    return num_pos, num_neg


def pseudo_sample(gt_inds):
    """(pos_inds, neg_inds) ascending: gt_inds > 0 and gt_inds == 0."""
    pos, neg = [], []
    for i, g in enumerate(gt_inds):
        if g > 0:
            pos.append(i)
        elif g == 0:
            neg.append(i)
    return pos, neg


def prepend_gts(gt_inds, labels, max_overlaps, gt_labels):
    """mmdet add_gt_as_proposals: gt k becomes prior k, assigned to itself."""
    num_gts = len(gt_labels)
    new_inds = [k + 1 for k in range(num_gts)] + list(gt_inds)
    new_overlaps = [1.0] * num_gts + list(max_overlaps)
    new_labels = None if labels is None else [int(x) for x in gt_labels] + list(labels)
    return new_inds, new_labels, new_overlaps
