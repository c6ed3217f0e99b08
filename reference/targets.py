"""Training targets of dense heads: per-anchor labels, weights and box targets.

For each image (SPEC.md "Targets", TGT-*):
  1. keep the anchors that are valid and inside the image (``anchor_inside_flags``);
  2. assign gts to them, then sample (``PseudoSampler`` keeps everything);
  3. fill targets: labels = background (``num_classes``) everywhere, the gt class at
     positives (0, the single foreground class, when gt labels are absent: RPN);
     label_weights 1 at positives (``pos_weight`` if > 0) and negatives, 0 at ignored;
     box targets = ``box_coder.encode(pos priors, pos gts)`` (or the gt boxes
     themselves with ``reg_decoded_bbox``) with box weights 1 at positives;
  4. ``unmap`` back to all anchors: outside anchors get background / zeros.
Then the batch: stack the images and split by level (``images_to_levels``), and
count ``num_total_pos = sum_i max(#pos_i, 1)`` (and the same for negatives).

RTMDet's variant (``rtmdet_targets``) assigns with the DynamicSoftLabelAssigner on
predicted scores and boxes, regresses decoded gt boxes and adds ``assign_metrics``:
the IoU of each positive with its gt (its QualityFocalLoss soft target).

Shape letters (the package legend, ``reference/__init__.py``): ``B`` images, ``N``
anchors of one image (all levels), ``N_in`` those inside it, ``n_l`` anchors of level
l, ``G`` gts, ``C`` classes, ``R`` sampled RoIs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import torch

from reference import validate as check

from reference import anchors as _anchors
from reference.assignment import AssignResult, DynamicSoftLabelAssigner
from reference.sampling import PseudoSampler, SamplingResult

__all__ = [
    "unmap",
    "images_to_levels",
    "ImageTargets",
    "LevelTargets",
    "anchor_targets_single",
    "anchor_targets",
    "rtmdet_targets_single",
    "rtmdet_targets",
    "RoITargets",
    "roi_targets_single",
]


# --------------------------------------------------------------------------- helpers
def unmap(data: torch.Tensor, count: int, inds: torch.Tensor, fill=0) -> torch.Tensor:
    """Scatter ``data`` (rows for the True entries of ``inds``) back into ``count`` rows.

    data: (M, ...) with M = inds.sum(). inds: (count,) bool mask.
    Returns (count, ...) of data's dtype, ``fill`` in the rows where inds is False.
    """
    check.tensor("data", data, min_ndim=1)
    count = check.integer("count", count, low=0)
    check.tensor("inds", inds, ndim=1, dtype="bool")
    if inds.shape[0] != count:
        raise check.fail("inds", f"shape ({count},) (count)", inds)
    mask = inds
    check.rows("data", data, int(mask.sum()), "the True entries of inds")
    out = data.new_full((count,) + tuple(data.shape[1:]), fill)  # (count, ...)
    out[mask] = data
    return out


def images_to_levels(targets: Sequence[torch.Tensor],
                     num_level_anchors: Sequence[int]) -> list[torch.Tensor]:
    """Per-image targets -> per-level targets.

    targets: B tensors of shape (N, ...), N = sum(num_level_anchors).
    Returns one tensor per level, shape (B, n_l, ...), levels in order.
    """
    counts = [check.integer("num_level_anchors", n, low=0)
              for n in check.sequence("num_level_anchors", num_level_anchors)]
    total = sum(counts)
    for i, t in enumerate(check.sequence("targets", targets, of="tensors")):
        check.tensor(f"targets[{i}]", t, min_ndim=1)
        check.rows(f"targets[{i}]", t, total, "the sum of num_level_anchors")
    if not targets:
        raise check.fail("targets", "at least one image", targets)
    stacked = torch.stack(list(targets), dim=0)  # (B, N, ...)
    return list(torch.split(stacked, counts, dim=1))


# --------------------------------------------------------------------------- results
@dataclasses.dataclass(frozen=True)
class ImageTargets:
    """Targets of one image. With unmap_outputs, rows are all N anchors; otherwise
    only the anchors inside the image.

    labels: (N,) int64, background = num_classes. label_weights: (N,) float32.
    bbox_targets: (N, 4) float. bbox_weights: (N, 4) float.
    pos_inds / neg_inds: int64 indices into the INSIDE anchors (as upstream).
    assign_metrics: (N,) float32 for RTMDet, None otherwise.
    """

    labels: torch.Tensor
    label_weights: torch.Tensor
    bbox_targets: torch.Tensor
    bbox_weights: torch.Tensor
    pos_inds: torch.Tensor
    neg_inds: torch.Tensor
    sampling_result: SamplingResult
    assign_result: AssignResult
    assign_metrics: Optional[torch.Tensor] = None


@dataclasses.dataclass(frozen=True)
class LevelTargets:
    """Targets of a batch, split by level: each list has one (B, n_l, ...) tensor per level.

    num_total_pos / num_total_neg: sum over images of max(#pos_i, 1) / max(#neg_i, 1).
    assign_metrics: per level (B, n_l), RTMDet only.
    """

    labels: list[torch.Tensor]
    label_weights: list[torch.Tensor]
    bbox_targets: list[torch.Tensor]
    bbox_weights: list[torch.Tensor]
    num_total_pos: int
    num_total_neg: int
    images: list[ImageTargets]
    assign_metrics: Optional[list[torch.Tensor]] = None

    def num_total_samples(self, sampling: bool) -> int:
        """The loss normaliser: pos + neg with a real sampler, pos alone without."""
        return self.num_total_pos + self.num_total_neg if sampling else self.num_total_pos


# --------------------------------------------------------------------------- one image
def _fill_targets(anchors, sampling_result: SamplingResult, num_classes: int,
                  gt_labels, pos_weight: float, pos_bbox_targets):
    """Step 3 on the inside anchors: (labels, label_weights, bbox_targets, bbox_weights)."""
    num_inside = anchors.shape[0]
    labels = torch.full((num_inside,), num_classes, dtype=torch.int64,
                        device=anchors.device)  # (N_in,) background everywhere
    label_weights = anchors.new_zeros(num_inside, dtype=torch.float32)  # (N_in,)
    bbox_targets = torch.zeros_like(anchors, dtype=pos_bbox_targets.dtype)  # (N_in, 4)
    bbox_weights = torch.zeros_like(anchors, dtype=pos_bbox_targets.dtype)  # (N_in, 4)
    pos_inds, neg_inds = sampling_result.pos_inds, sampling_result.neg_inds
    if pos_inds.numel() > 0:
        bbox_targets[pos_inds] = pos_bbox_targets
        bbox_weights[pos_inds] = 1.0
        if gt_labels is None:
            labels[pos_inds] = 0  # RPN: the single foreground class is label 0
        else:
            labels[pos_inds] = gt_labels.to(torch.int64)[sampling_result.pos_assigned_gt_inds]
        label_weights[pos_inds] = pos_weight if pos_weight > 0 else 1.0
    if neg_inds.numel() > 0:
        label_weights[neg_inds] = 1.0
    return labels, label_weights, bbox_targets, bbox_weights


def _check_image_inputs(flat_anchors, valid_flags, gt_bboxes, gt_labels, num_classes,
                        anchors_name: str = "flat_anchors") -> None:
    check.integer("num_classes", num_classes, low=1)
    check.boxes(anchors_name, flat_anchors)
    check.boxes("gt_bboxes", gt_bboxes)
    check.tensor("valid_flags", valid_flags, ndim=1, dtype="bool")
    check.rows("valid_flags", valid_flags, flat_anchors.shape[0], anchors_name)
    if gt_labels is not None:
        check.tensor("gt_labels", gt_labels, ndim=1, dtype="integer")
        check.rows("gt_labels", gt_labels, gt_bboxes.shape[0], "gt_bboxes")
        if gt_labels.numel() and (gt_labels.min() < 0 or gt_labels.max() >= num_classes):
            raise check.fail("gt_labels", f"values in [0, {num_classes})",
                             f"[{int(gt_labels.min())}, {int(gt_labels.max())}]")
    check.same_device(**{anchors_name: flat_anchors, "valid_flags": valid_flags,
                         "gt_bboxes": gt_bboxes, "gt_labels": gt_labels})


def anchor_targets_single(flat_anchors: torch.Tensor, valid_flags: torch.Tensor,
                          gt_bboxes: torch.Tensor, img_shape: Sequence[int], *,
                          assigner: Any, num_classes: int, box_coder: Any = None,
                          sampler: Any = None, gt_labels: Optional[torch.Tensor] = None,
                          gt_bboxes_ignore: Optional[torch.Tensor] = None,
                          allowed_border: float = -1, pos_weight: float = -1.0,
                          reg_decoded_bbox: bool = False, unmap_outputs: bool = True,
                          generator: Optional[torch.Generator] = None
                          ) -> Optional[ImageTargets]:
    """Targets of one image for an anchor head (RetinaNet, RPN), mmdet semantics.

    flat_anchors: (N, 4) float xyxy, all levels concatenated. valid_flags: (N,) bool.
    gt_bboxes: (G, 4) float xyxy. img_shape: (H, W[, C]) before padding.
    assigner: has ``assign(anchors, gt_bboxes, gt_bboxes_ignore, gt_labels)`` (e.g.
        MaxIoUAssigner). sampler: ``sample(assign_result, priors, gt_bboxes,
        gt_labels=..., generator=...)``; None means PseudoSampler.
    box_coder: has ``encode(priors, gt_bboxes)``; required unless reg_decoded_bbox.
    gt_labels: (G,) int64 in [0, num_classes), or None for RPN (positives get label 0).
    Returns None when no anchor is inside the image.
    """
    _check_image_inputs(flat_anchors, valid_flags, gt_bboxes, gt_labels, num_classes)
    if box_coder is None and not reg_decoded_bbox:
        raise ValueError("box_coder: required unless reg_decoded_bbox=True, got None")
    sampler = PseudoSampler() if sampler is None else sampler

    # 1. anchors that are valid and inside the image
    inside = _anchors.anchor_inside_flags(flat_anchors, valid_flags, img_shape,
                                          allowed_border)  # (N,)
    if not inside.any():
        return None
    anchors = flat_anchors[inside]  # (N_in, 4) the inside anchors

    # 2. assign and sample
    assign_result = assigner.assign(anchors, gt_bboxes, gt_bboxes_ignore, gt_labels)
    sampling_result = sampler.sample(assign_result, anchors, gt_bboxes, gt_labels=gt_labels,
                                     generator=generator)

    # 3. targets on the inside anchors
    if reg_decoded_bbox:
        pos_bbox_targets = sampling_result.pos_gt_bboxes  # (P, 4)
    elif sampling_result.pos_inds.numel() > 0:
        pos_bbox_targets = box_coder.encode(sampling_result.pos_priors,
                                            sampling_result.pos_gt_bboxes)  # (P, 4)
    else:
        pos_bbox_targets = anchors.new_zeros((0, 4), dtype=torch.float32)
    labels, label_weights, bbox_targets, bbox_weights = _fill_targets(
        anchors, sampling_result, num_classes, gt_labels, pos_weight, pos_bbox_targets)

    # 4. back to all anchors: outside ones are background with zero weights
    if unmap_outputs:
        n = flat_anchors.shape[0]
        labels = unmap(labels, n, inside, fill=num_classes)
        label_weights = unmap(label_weights, n, inside)
        bbox_targets = unmap(bbox_targets, n, inside)
        bbox_weights = unmap(bbox_weights, n, inside)
    return ImageTargets(labels, label_weights, bbox_targets, bbox_weights,
                        sampling_result.pos_inds, sampling_result.neg_inds, sampling_result,
                        assign_result)


def rtmdet_targets_single(cls_scores: torch.Tensor, decoded_bboxes: torch.Tensor,
                          flat_priors: torch.Tensor, valid_flags: torch.Tensor,
                          gt_bboxes: torch.Tensor, gt_labels: torch.Tensor,
                          img_shape: Sequence[int], *, num_classes: int,
                          assigner: Optional[DynamicSoftLabelAssigner] = None,
                          allowed_border: float = -1, pos_weight: float = -1.0,
                          unmap_outputs: bool = True) -> Optional[ImageTargets]:
    """Targets of one image for RTMDet (mmdet 3 ``RTMDetHead._get_targets_single``).

    cls_scores: (N, C) logits. decoded_bboxes: (N, 4) predicted xyxy boxes.
    flat_priors: (N, 4) points with strides (x, y, stride_w, stride_h).
    valid_flags: (N,) bool. gt_bboxes: (G, 4). gt_labels: (G,) int64.
    bbox_targets are the gt boxes themselves (decoded regression); assign_metrics is
    the positive's IoU with its gt, 0 elsewhere.
    """
    _check_image_inputs(flat_priors, valid_flags, gt_bboxes, gt_labels, num_classes,
                        anchors_name="flat_priors")
    if gt_labels is None:
        raise check.fail("gt_labels", "a (G,) integer tensor (RTMDet has classes)", gt_labels,
                         TypeError)
    check.tensor("cls_scores", cls_scores, ndim=2, dtype="floating")
    check.rows("cls_scores", cls_scores, flat_priors.shape[0], "flat_priors")
    if cls_scores.shape[1] != num_classes:
        raise check.fail("cls_scores", f"{num_classes} columns (num_classes)", cls_scores)
    check.no_nan("cls_scores", cls_scores)
    check.boxes("decoded_bboxes", decoded_bboxes)
    check.rows("decoded_bboxes", decoded_bboxes, flat_priors.shape[0], "flat_priors")
    assigner = DynamicSoftLabelAssigner() if assigner is None else assigner
    inside = _anchors.anchor_inside_flags(flat_priors, valid_flags, img_shape,
                                          allowed_border)  # (N,)
    if not inside.any():
        return None
    priors = flat_priors[inside]  # (N_in, 4) the inside priors
    assign_result = assigner.assign(cls_scores[inside], decoded_bboxes[inside], priors,
                                    gt_bboxes, gt_labels)
    sampling_result = PseudoSampler().sample(assign_result, priors, gt_bboxes)
    labels, label_weights, bbox_targets, bbox_weights = _fill_targets(
        priors, sampling_result, num_classes, gt_labels, pos_weight,
        sampling_result.pos_gt_bboxes.to(priors.dtype))
    assign_metrics = priors.new_zeros(priors.shape[0], dtype=torch.float32)  # (N_in,)
    pos_inds = sampling_result.pos_inds
    assign_metrics[pos_inds] = assign_result.max_overlaps[pos_inds].float()

    if unmap_outputs:
        n = flat_priors.shape[0]
        labels = unmap(labels, n, inside, fill=num_classes)
        label_weights = unmap(label_weights, n, inside)
        bbox_targets = unmap(bbox_targets, n, inside)
        bbox_weights = unmap(bbox_weights, n, inside)
        assign_metrics = unmap(assign_metrics, n, inside)
    return ImageTargets(labels, label_weights, bbox_targets, bbox_weights, pos_inds,
                        sampling_result.neg_inds, sampling_result, assign_result,
                        assign_metrics)


# --------------------------------------------------------------------------- batch
def _per_image(name: str, values, num_images: int, *, of: str | None = None) -> list:
    """One entry per image (None: one None each); ``of="tensors"``: every entry a tensor."""
    if values is None:
        return [None] * num_images
    return check.sequence(name, values, length=num_images, like="anchor_list", of=of)


def _concat_levels(anchor_list, valid_flag_list) -> tuple[list[int], list, list]:
    """Per image, the levels' priors (N, 4) and flags (N,) concatenated; the level sizes."""
    anchor_list = check.sequence("anchor_list", anchor_list)
    if not anchor_list:
        raise check.fail("anchor_list", "at least one image", anchor_list)
    valid_flag_list = _per_image("valid_flag_list", valid_flag_list, len(anchor_list))
    num_level_anchors = None
    flat_anchors, flat_valid = [], []
    for i, (levels, flags) in enumerate(zip(anchor_list, valid_flag_list)):
        levels = check.sequence(f"anchor_list[{i}]", levels, of="tensors")
        flags = check.sequence(f"valid_flag_list[{i}]", flags, length=len(levels), of="tensors",
                               like=f"anchor_list[{i}]")
        for level, (a, f) in enumerate(zip(levels, flags)):
            check.boxes(f"anchor_list[{i}][{level}]", a)
            check.tensor(f"valid_flag_list[{i}][{level}]", f, ndim=1, dtype="bool")
            check.rows(f"valid_flag_list[{i}][{level}]", f, a.shape[0], f"anchor_list[{i}][{level}]")
        sizes = [int(a.shape[0]) for a in levels]
        if num_level_anchors is None:
            num_level_anchors = sizes
        elif sizes != num_level_anchors:
            raise check.fail(f"anchor_list[{i}]", f"levels of sizes {num_level_anchors} "
                             "like anchor_list[0]", sizes)
        flat_anchors.append(torch.cat(levels))  # (N, 4)
        flat_valid.append(torch.cat(flags))  # (N,)
    return num_level_anchors, flat_anchors, flat_valid


def _check_per_image(gt_bboxes_list, gt_labels_list, img_shapes) -> None:
    """Each image's entry, checked under the list's name (the per-image function checks
    the rest under its own argument names)."""
    for i, gt in enumerate(gt_bboxes_list):
        check.boxes(f"gt_bboxes_list[{i}]", gt)
    for i, lab in enumerate(gt_labels_list):
        if lab is not None:
            check.tensor(f"gt_labels_list[{i}]", lab, ndim=1, dtype="integer")
            check.rows(f"gt_labels_list[{i}]", lab, gt_bboxes_list[i].shape[0],
                       f"gt_bboxes_list[{i}]")
    for i, shape in enumerate(img_shapes):
        check.size(f"img_shapes[{i}]", shape, extra=True, integer=True)


def _gather(images: list[ImageTargets], num_level_anchors, with_metrics: bool) -> LevelTargets:
    def levels(field: str) -> list[torch.Tensor]:
        return images_to_levels([getattr(t, field) for t in images], num_level_anchors)

    return LevelTargets(
        labels=levels("labels"), label_weights=levels("label_weights"),
        bbox_targets=levels("bbox_targets"), bbox_weights=levels("bbox_weights"),
        num_total_pos=sum(max(int(t.pos_inds.numel()), 1) for t in images),
        num_total_neg=sum(max(int(t.neg_inds.numel()), 1) for t in images),
        images=images,
        assign_metrics=levels("assign_metrics") if with_metrics else None)


def anchor_targets(anchor_list: Sequence[Sequence[torch.Tensor]],
                   valid_flag_list: Sequence[Sequence[torch.Tensor]],
                   gt_bboxes_list: Sequence[torch.Tensor],
                   img_shapes: Sequence[Sequence[int]], *,
                   gt_labels_list: Optional[Sequence[torch.Tensor]] = None,
                   gt_bboxes_ignore_list: Optional[Sequence[torch.Tensor]] = None,
                   **single_kwargs) -> Optional[LevelTargets]:
    """Targets of a batch for an anchor head, split by level (mmdet ``get_targets``).

    anchor_list / valid_flag_list: per image, per level (n_l, 4) / (n_l,) tensors.
    gt_bboxes_list: per image (G_i, 4). img_shapes: per image (H, W[, C]).
    gt_labels_list: per image (G_i,) int64, or None (RPN).
    single_kwargs: passed to ``anchor_targets_single`` (assigner, num_classes, ...);
    a ``generator`` is shared by the images in order.
    Returns None if some image has no anchor inside it.
    Everything is computed on the full batch with unmapped outputs.
    """
    num_level_anchors, flat_anchors, flat_valid = _concat_levels(anchor_list, valid_flag_list)
    num_images = len(flat_anchors)
    gt_bboxes_list = _per_image("gt_bboxes_list", gt_bboxes_list, num_images, of="tensors")
    img_shapes = _per_image("img_shapes", img_shapes, num_images)
    gt_labels_list = _per_image("gt_labels_list", gt_labels_list, num_images, of="tensors")
    ignore_list = _per_image("gt_bboxes_ignore_list", gt_bboxes_ignore_list, num_images)
    _check_per_image(gt_bboxes_list, gt_labels_list, img_shapes)
    images = []
    for i in range(num_images):  # one image at a time, as upstream
        t = anchor_targets_single(flat_anchors[i], flat_valid[i], gt_bboxes_list[i],
                                  img_shapes[i], gt_labels=gt_labels_list[i],
                                  gt_bboxes_ignore=ignore_list[i], unmap_outputs=True,
                                  **single_kwargs)
        if t is None:
            return None
        images.append(t)
    return _gather(images, num_level_anchors, with_metrics=False)


def rtmdet_targets(cls_scores: torch.Tensor, decoded_bboxes: torch.Tensor,
                   anchor_list: Sequence[Sequence[torch.Tensor]],
                   valid_flag_list: Sequence[Sequence[torch.Tensor]],
                   gt_bboxes_list: Sequence[torch.Tensor],
                   gt_labels_list: Sequence[torch.Tensor],
                   img_shapes: Sequence[Sequence[int]], **single_kwargs
                   ) -> Optional[LevelTargets]:
    """RTMDet targets of a batch, split by level (mmdet 3 ``RTMDetHead.get_targets``).

    cls_scores: (B, N, C) logits. decoded_bboxes: (B, N, 4) xyxy.
    anchor_list / valid_flag_list: per image, per level (n_l, 4) points with strides
    / (n_l,) bool. gt_bboxes_list / gt_labels_list / img_shapes: per image.
    single_kwargs: passed to ``rtmdet_targets_single`` (num_classes, assigner, ...).
    """
    num_level_anchors, flat_priors, flat_valid = _concat_levels(anchor_list, valid_flag_list)
    num_images, num_priors = len(flat_priors), int(flat_priors[0].shape[0])
    check.tensor("cls_scores", cls_scores, ndim=3, dtype="floating")
    if cls_scores.shape[:2] != (num_images, num_priors):
        raise check.fail("cls_scores", f"shape ({num_images}, {num_priors}, C) (images, priors)",
                         cls_scores)
    check.boxes("decoded_bboxes", decoded_bboxes, ndim=3)
    if decoded_bboxes.shape[:2] != (num_images, num_priors):
        raise check.fail("decoded_bboxes", f"shape ({num_images}, {num_priors}, 4) (images, priors)",
                         decoded_bboxes)
    gt_bboxes_list = _per_image("gt_bboxes_list", gt_bboxes_list, num_images, of="tensors")
    if gt_labels_list is None:
        raise check.fail("gt_labels_list", "one (G_i,) integer tensor per image (RTMDet has "
                         "classes)", gt_labels_list, TypeError)
    gt_labels_list = _per_image("gt_labels_list", gt_labels_list, num_images, of="tensors")
    img_shapes = _per_image("img_shapes", img_shapes, num_images)
    _check_per_image(gt_bboxes_list, gt_labels_list, img_shapes)
    images = []
    for i in range(num_images):
        t = rtmdet_targets_single(cls_scores[i].detach(), decoded_bboxes[i].detach(),
                                  flat_priors[i], flat_valid[i], gt_bboxes_list[i],
                                  gt_labels_list[i], img_shapes[i], unmap_outputs=True,
                                  **single_kwargs)
        if t is None:
            return None
        images.append(t)
    return _gather(images, num_level_anchors, with_metrics=True)


# --------------------------------------------------------------------------- R-CNN RoIs
@dataclasses.dataclass(frozen=True)
class RoITargets:
    """The sampled RoIs of one image and their box-head targets, positives first
    (mmdet ``bbox_head.get_targets`` order).

    rois: (R, 4) xyxy boxes the box head is trained on (gts included where the
        flavour adds them). labels: (R,) int64, the gt class at positives,
        ``num_classes`` (background) at negatives. bbox_targets: (R, 4) encoded
        deltas at positives, 0 at negatives. num_pos: P, the first P rows.
    """

    rois: torch.Tensor
    labels: torch.Tensor
    bbox_targets: torch.Tensor
    num_pos: int
    sampling_result: SamplingResult
    assign_result: AssignResult


def roi_targets_single(proposals: torch.Tensor, gt_bboxes: torch.Tensor,
                       gt_labels: torch.Tensor, *, assigner: Any, sampler: Any,
                       box_coder: Any, num_classes: int, append_gts: bool,
                       generator: Optional[torch.Generator] = None) -> RoITargets:
    """Targets of one image for the second stage of Faster R-CNN.

    proposals: (k, 4) xyxy RPN proposals (detached). gt_bboxes: (G, 4).
    gt_labels: (G,) int64 in [0, num_classes).
    append_gts: detectron2 (``add_ground_truth_to_proposals``) and torchvision
        (``add_gt_proposals``) append the gts to the proposals BEFORE matching; mmdet
        leaves that to its sampler (``RandomSampler(add_gt_as_proposals=True)``
        prepends them AFTER assignment, each assigned to itself).
    assigner / sampler / box_coder: as for ``anchor_targets_single``.

    Steps: (append gts) -> assign -> sample -> labels and ``box_coder.encode``
    of the positives towards their gts.
    """
    check.boxes("proposals", proposals)
    if gt_labels is None:
        raise check.fail("gt_labels", "a (G,) integer tensor (the box head has classes)",
                         gt_labels, TypeError)
    _check_image_inputs(proposals, torch.ones(proposals.shape[0], dtype=torch.bool,
                                              device=proposals.device),
                        gt_bboxes, gt_labels, num_classes, anchors_name="proposals")
    check.flag("append_gts", append_gts)
    check.provides("assigner", assigner, "assign")
    check.provides("sampler", sampler, "sample")
    check.provides("box_coder", box_coder, "encode")
    gt_bboxes = gt_bboxes.to(proposals.dtype)
    priors = torch.cat([proposals, gt_bboxes]) if append_gts else proposals  # (k [+ G], 4)
    assign_result = assigner.assign(priors, gt_bboxes, None, gt_labels)
    result = sampler.sample(assign_result, priors, gt_bboxes, gt_labels=gt_labels,
                            generator=generator)
    pos, neg = result.pos_inds, result.neg_inds
    rois = torch.cat([result.priors[pos], result.priors[neg]])  # (R, 4) positives first
    labels = torch.full((rois.shape[0],), num_classes, dtype=torch.int64, device=rois.device)
    labels[: pos.numel()] = gt_labels.to(torch.int64)[result.pos_assigned_gt_inds]
    bbox_targets = rois.new_zeros((rois.shape[0], 4))  # (R, 4)
    if pos.numel() > 0:
        bbox_targets[: pos.numel()] = box_coder.encode(result.pos_priors, result.pos_gt_bboxes)
    return RoITargets(rois, labels, bbox_targets, int(pos.numel()), result, assign_result)
