"""Losses: the classification and box losses of RetinaNet, Faster R-CNN and RTMDet.

Every loss here is computed in three steps, the same for all of them:

1. an *element-wise* loss (one value per logit, per box coordinate or per row);
2. multiplication by optional element weights (``weight``), which is how targets
   mark anchors as ignored (weight 0) or positive-only (box weights);
3. a reduction (``weight_reduce_loss``): ``"none"`` keeps the element-wise tensor,
   ``"sum"`` adds it up, ``"mean"`` divides the sum by the number of elements or,
   when ``avg_factor`` is given, by ``avg_factor + eps`` with
   ``eps = torch.finfo(torch.float32).eps`` (mmdet's contract, SPEC [LOSS-2]).
   The result is finally multiplied by ``loss_weight``.

Conventions (SPEC.md, Losses):

- Class logits are ``(N, C)`` for sigmoid losses, C foreground classes; integer
  labels lie in ``[0, C]`` and ``C`` means background (an all-zero target row).
- Softmax cross-entropy takes ``(N, K)`` logits whose K columns include the
  background class (mmdet and detectron2 put it last, torchvision first; the loss
  does not care which).
- Boxes are ``(n, 4)`` xyxy.
- An empty input gives a *differentiable zero*: a 0-dim tensor equal to 0 that
  is still connected to ``pred`` (``loss.sum()`` of nothing), never NaN.

The per-detector normalisers (how many anchors a summed loss is divided by) live
at the end: RetinaNet's ``num_total_pos``, RTMDet's clamped sum of assign metrics,
detectron2's RPN ``1 / (batch_size_per_image * num_images)`` and EMA normaliser,
and torchvision's per-image mean.

Shape letters: ``N`` rows (anchors, points or RoIs), ``C`` foreground classes,
``K`` softmax columns (classes plus background), ``n`` boxes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import torch
import torch.nn.functional as F

from reference import validate as check

__all__ = [
    "LOSS_REDUCTIONS",
    "AVG_FACTOR_EPS",
    "GIoULossEps",
    "GIOU_LOSS_EPS",
    "weight_reduce_loss",
    "sigmoid_focal_loss",
    "quality_focal_loss",
    "giou_loss",
    "l1_loss",
    "smooth_l1_loss",
    "cross_entropy_loss",
    "binary_cross_entropy_loss",
    "retinanet_num_total_pos",
    "rtmdet_avg_factor",
    "detectron2_rpn_normalizer",
    "EmaLossNormalizer",
    "torchvision_per_image_mean",
    "TotalPositives",
    "TotalSamples",
    "PerImageMean",
    "SampledMean",
    "FixedBatch",
]

LOSS_REDUCTIONS = ("none", "mean", "sum")

# mmdet's weight_reduce_loss adds float32's machine epsilon to avg_factor so that an
# avg_factor of 0 gives 0 instead of NaN; the value is the same for any loss dtype.
AVG_FACTOR_EPS = torch.finfo(torch.float32).eps  # 1.1920929e-07


@dataclasses.dataclass(frozen=True)
class GIoULossEps:
    """How a GIoU loss keeps its two divisions (by union, by enclosing area) finite.

    value: the epsilon.
    clamp: True divides by ``max(x, value)`` (mmdet's bbox_overlaps); False divides
        by ``x + value`` (torchvision's generalized_box_iou_loss, fvcore for
        detectron2).
    """

    value: float
    clamp: bool


GIOU_LOSS_EPS = {
    "mmdet": GIoULossEps(value=1e-6, clamp=True),  # GIoULoss(eps=1e-6) in the configs
    "torchvision": GIoULossEps(value=1e-7, clamp=False),
    "detectron2": GIoULossEps(value=1e-7, clamp=False),  # fvcore.nn.giou_loss
}


# --------------------------------------------------------------------------- validation
# The generic checks live in reference/validate.py (one message form); these
# two read the loss-specific rules: reductions, and labels with background C.
def _check_reduction(reduction, avg_factor) -> None:
    if reduction not in LOSS_REDUCTIONS:
        raise ValueError(f"reduction: got {reduction!r}, expected one of {LOSS_REDUCTIONS}")
    if avg_factor is not None and reduction == "sum":
        raise ValueError(
            "avg_factor: got a value with reduction='sum'; avg_factor only applies to "
            "reduction='mean' (and is ignored by 'none')"
        )
    if avg_factor is not None:
        value = float(avg_factor)  # a Python number or a 0-dim tensor
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"avg_factor: got {value}, expected a finite number >= 0")


def _check_labels(labels, num_classes: int, num_rows: int, pred: torch.Tensor,
                  name: str = "target") -> None:
    """Integer labels (N,) in [0, num_classes]; num_classes is background."""
    check.tensor(name, labels)
    check.same_device(pred=pred, **{name: labels})
    if labels.shape != (num_rows,):
        raise ValueError(f"{name}: integer labels of shape {tuple(labels.shape)}, "
                         f"expected ({num_rows},) to match pred's rows")
    if labels.numel() and (labels.min() < 0 or labels.max() > num_classes):
        raise ValueError(
            f"{name}: labels in [{int(labels.min())}, {int(labels.max())}], expected "
            f"[0, {num_classes}] ({num_classes} = background)"
        )


def _check_weight(weight, loss_shape: torch.Size, pred: torch.Tensor,
                  allowed: Sequence[tuple[int, ...]]) -> None:
    if weight is None:
        return
    check.tensor("weight", weight, dtype="floating")
    check.same_device(pred=pred, **{"weight": weight})
    if tuple(weight.shape) not in [tuple(s) for s in allowed]:
        raise ValueError(
            f"weight: shape {tuple(weight.shape)}, expected one of "
            f"{[tuple(s) for s in allowed]} for a loss of shape {tuple(loss_shape)}"
        )


# --------------------------------------------------------------------------- reduction
def _reduce(loss: torch.Tensor, weight, reduction: str, avg_factor) -> torch.Tensor:
    """weight_reduce_loss without validation (internals trust their inputs)."""
    if weight is not None:
        loss = loss * weight
    if reduction == "none":
        return loss
    if reduction == "sum" or loss.numel() == 0:
        # The sum of nothing is a zero that still has a grad_fn; torch's mean of
        # nothing would be NaN.
        return loss.sum()
    if avg_factor is None:
        return loss.mean()
    return loss.sum() / (avg_factor + AVG_FACTOR_EPS)


def weight_reduce_loss(loss: torch.Tensor, weight: torch.Tensor | None = None,
                       reduction: str = "mean", avg_factor=None) -> torch.Tensor:
    """Weight an element-wise loss and reduce it (mmdet's contract, SPEC [LOSS-1..5]).

    Args:
        loss: element-wise loss, any shape, floating point.
        weight: None or a tensor broadcastable to ``loss`` (e.g. ``(N, 1)`` for
            per-row weights of an ``(N, C)`` loss); multiplies the loss first.
        reduction: ``"none"`` (the weighted loss, same shape), ``"sum"`` or
            ``"mean"``.
        avg_factor: None, a number or a 0-dim tensor. With ``"mean"`` the result is
            ``sum(loss * weight) / (avg_factor + AVG_FACTOR_EPS)``; with ``"none"``
            it is ignored; with ``"sum"`` it is an error.

    Returns:
        the reduced loss: a 0-dim tensor, or the weighted loss for ``"none"``.
        An empty loss reduces to a differentiable zero.
    """
    check.tensor("loss", loss, dtype="floating")
    _check_reduction(reduction, avg_factor)
    if weight is not None:
        check.tensor("weight", weight, dtype="floating")
        check.same_device(loss=loss, weight=weight)
        try:
            shape = torch.broadcast_shapes(loss.shape, weight.shape)
        except RuntimeError:
            shape = None
        if shape != loss.shape:
            raise ValueError(f"weight: shape {tuple(weight.shape)} does not broadcast to "
                             f"the loss shape {tuple(loss.shape)}")
    return _reduce(loss, weight, reduction, avg_factor)


# --------------------------------------------------------------------------- class targets
def _labels_to_one_hot(labels: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """(N,) labels in [0, C] -> (N, C) float one-hot; background C is an all-zero row."""
    one_hot = F.one_hot(labels.long(), num_classes + 1)  # (N, C + 1)
    return one_hot[:, :num_classes].to(dtype)  # (N, C): drop the background column


def _class_target(pred: torch.Tensor, target, name: str = "target") -> torch.Tensor:
    """Integer labels or a float target of pred's shape -> float target of pred's shape."""
    check.tensor(name, target)
    if target.is_floating_point():
        check.same_device(pred=pred, **{name: target})
        if target.shape != pred.shape:
            raise ValueError(f"{name}: float target of shape {tuple(target.shape)}, expected "
                             f"pred's shape {tuple(pred.shape)}")
        return target.to(pred.dtype)
    if target.dtype == torch.bool or pred.dim() != 2:
        raise ValueError(
            f"{name}: dtype {target.dtype} with pred of shape {tuple(pred.shape)}; expected "
            "int64 labels (N,) with pred (N, C), or a float target of pred's shape"
        )
    _check_labels(target, pred.shape[1], pred.shape[0], pred, name)
    return _labels_to_one_hot(target, pred.shape[1], pred.dtype)


def _row_or_element_weight(weight, pred: torch.Tensor):
    """Per-row weights (N,) of a (N, C) loss broadcast over classes, as in mmdet."""
    allowed = [tuple(pred.shape)]
    if pred.dim() == 2:
        allowed.append((pred.shape[0],))
    _check_weight(weight, pred.shape, pred, allowed)
    if weight is not None and weight.shape != pred.shape:
        weight = weight[:, None]  # (N, 1)
    return weight


# --------------------------------------------------------------------------- focal losses
def sigmoid_focal_loss(pred: torch.Tensor, target: torch.Tensor,
                       weight: torch.Tensor | None = None, gamma: float = 2.0,
                       alpha: float = 0.25, reduction: str = "mean", avg_factor=None,
                       loss_weight: float = 1.0) -> torch.Tensor:
    """Sigmoid focal loss (RetinaNet), SPEC [LOSS-6..9].

    Per element, with p = sigmoid(pred) and t the 0/1 (or soft) target:
        loss = BCE(pred, t) * (1 - p_t) ** gamma * alpha_t
        p_t = p * t + (1 - p) * (1 - t),  alpha_t = alpha * t + (1 - alpha) * (1 - t)
    A negative ``alpha`` switches alpha_t off (torchvision's form).

    Args:
        pred: (N, C) logits (any shape with a float target), floating point.
        target: int64 labels (N,) in [0, C] with C = background (mmdet), or a float
            target of pred's shape (torchvision).
        weight: None, (N,) per-row weights, or pred's shape.
        gamma, alpha: focusing and balancing parameters (0.25, 2 everywhere).
        reduction, avg_factor: see ``weight_reduce_loss``.
        loss_weight: multiplies the reduced loss.

    Returns:
        0-dim loss, or the (N, C) weighted element-wise loss for ``"none"``.
    """
    check.tensor("pred", pred, dtype="floating")
    _check_reduction(reduction, avg_factor)
    t = _class_target(pred, target)  # (N, C)
    weight = _row_or_element_weight(weight, pred)
    gamma = check.number("gamma", gamma, low=0)
    alpha = check.number("alpha", alpha)

    p = pred.sigmoid()  # (N, C)
    ce = F.binary_cross_entropy_with_logits(pred, t, reduction="none")  # (N, C)
    p_t = p * t + (1 - p) * (1 - t)  # probability given to the true side
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        # alpha weights the positives, 1 - alpha the negatives.
        loss = loss * (alpha * t + (1 - alpha) * (1 - t))
    return loss_weight * _reduce(loss, weight, reduction, avg_factor)


def quality_focal_loss(pred: torch.Tensor, target, weight: torch.Tensor | None = None,
                       beta: float = 2.0, reduction: str = "mean", avg_factor=None,
                       loss_weight: float = 1.0) -> torch.Tensor:
    """Quality focal loss (GFL; RTMDet's classification loss), SPEC [LOSS-10..11].

    Each class column is supervised by a soft score s (the IoU of the assigned box
    for the positive class, 0 elsewhere):
        loss[i, c] = BCE(pred[i, c], s[i, c]) * |s[i, c] - sigmoid(pred[i, c])| ** beta
    and the loss of row i is the sum over its C columns. For a negative column
    (s = 0) this is BCE(pred, 0) * sigmoid(pred) ** beta, exactly mmdet's
    negative term, so one formula covers both.

    Args:
        pred: (N, C) logits, floating point.
        target: either a tuple ``(labels, scores)`` with labels int64 (N,) in
            [0, C] (C = background) and scores float (N,), or a float (N, C)
            soft one-hot target (mmdet's tensor-target form).
        weight: None or (N,) per-row weights.
        beta: modulating exponent, 2 by default.
        reduction, avg_factor, loss_weight: see ``weight_reduce_loss``.

    Returns:
        0-dim loss, or the (N,) weighted per-row loss for ``"none"``.
    """
    check.tensor("pred", pred, ndim=2, dtype="floating")
    _check_reduction(reduction, avg_factor)
    beta = check.number("beta", beta, low=0)
    num_rows, num_classes = pred.shape
    if isinstance(target, (tuple, list)):
        if len(target) != 2:
            raise ValueError(f"target: a tuple of {len(target)} items, expected (labels, scores)")
        labels, scores = target
        _check_labels(labels, num_classes, num_rows, pred, "target labels")
        check.tensor("target scores", scores, dtype="floating")
        check.same_device(pred=pred, **{"target scores": scores})
        if scores.shape != (num_rows,):
            raise ValueError(f"target scores: shape {tuple(scores.shape)}, expected ({num_rows},)")
        one_hot = _labels_to_one_hot(labels, num_classes, pred.dtype)  # (N, C)
        soft = one_hot * scores.to(pred.dtype)[:, None]  # (N, C)
    else:
        check.tensor("target", target, dtype="floating")
        check.same_device(pred=pred, **{"target": target})
        if target.shape != pred.shape:
            raise ValueError(f"target: soft target of shape {tuple(target.shape)}, expected "
                             f"pred's shape {tuple(pred.shape)}")
        soft = target.to(pred.dtype)  # (N, C)
    _check_weight(weight, (num_rows,), pred, [(num_rows,)])

    p = pred.sigmoid()  # (N, C)
    ce = F.binary_cross_entropy_with_logits(pred, soft, reduction="none")  # (N, C)
    loss = (ce * (soft - p).abs() ** beta).sum(dim=1)  # (N,)
    return loss_weight * _reduce(loss, weight, reduction, avg_factor)


# --------------------------------------------------------------------------- box losses
def _aligned_giou(pred: torch.Tensor, target: torch.Tensor, eps: GIoULossEps) -> torch.Tensor:
    """GIoU of pred[i] with target[i]; (n, 4) xyxy each -> (n,)."""
    area_p = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])  # (n,)
    area_t = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])  # (n,)
    inter_wh = (torch.min(pred[:, 2:], target[:, 2:])
                - torch.max(pred[:, :2], target[:, :2])).clamp(min=0)  # (n, 2)
    inter = inter_wh[:, 0] * inter_wh[:, 1]  # (n,)
    union = area_p + area_t - inter  # (n,)
    # The smallest box enclosing both; clamped like the intersection in case a
    # predicted box is inverted.
    enclose_wh = (torch.max(pred[:, 2:], target[:, 2:])
                  - torch.min(pred[:, :2], target[:, :2])).clamp(min=0)  # (n, 2)
    enclose = enclose_wh[:, 0] * enclose_wh[:, 1]  # (n,)
    if eps.clamp:
        # mmdet clamps the areas themselves, so the clamped values are used
        # everywhere, the gap term's numerator included.
        union, enclose = union.clamp(min=eps.value), enclose.clamp(min=eps.value)
        union_den, enclose_den = union, enclose
    else:
        # torchvision and fvcore only pad the denominators.
        union_den, enclose_den = union + eps.value, enclose + eps.value
    return inter / union_den - (enclose - union) / enclose_den


def giou_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
              reduction: str = "mean", avg_factor=None, *, flavour: str = "mmdet",
              eps: float | None = None, loss_weight: float = 1.0) -> torch.Tensor:
    """GIoU loss ``1 - GIoU(pred[i], target[i])``, SPEC [LOSS-12..14].

    Args:
        pred, target: (n, 4) xyxy boxes, finite, floating point.
        weight: None, (n,) or (n, 4); an (n, 4) weight is averaged over its last
            axis first, as mmdet's GIoULoss does with box weights.
        reduction, avg_factor, loss_weight: see ``weight_reduce_loss``.
        flavour: which epsilon rule (``GIOU_LOSS_EPS``): "mmdet" divides by
            max(x, 1e-6); "torchvision" and "detectron2" divide by x + 1e-7.
        eps: overrides the flavour's epsilon value (keeps its clamp/add rule).

    Returns:
        0-dim loss, or the (n,) weighted loss for ``"none"``.
    """
    _check_reduction(reduction, avg_factor)
    check.boxes("pred", pred)  # finite, within the coordinate range (SPEC.md IOU-18)
    check.boxes("target", target)
    check.same_device(pred=pred, target=target)
    if target.shape != pred.shape:
        raise ValueError(f"target: shape {tuple(target.shape)}, expected pred's shape "
                         f"{tuple(pred.shape)}")
    if flavour not in GIOU_LOSS_EPS:
        raise ValueError(f"flavour: got {flavour!r}, expected one of {sorted(GIOU_LOSS_EPS)}")
    rule = GIOU_LOSS_EPS[flavour]
    if eps is not None:
        if not eps > 0:
            raise ValueError(f"eps: got {eps}, expected > 0")
        rule = dataclasses.replace(rule, value=float(eps))
    n = pred.shape[0]
    _check_weight(weight, (n,), pred, [(n,), (n, 4)])
    if weight is not None and weight.dim() == 2:
        weight = weight.mean(dim=-1)  # (n,)

    loss = 1 - _aligned_giou(pred, target.to(pred.dtype), rule)  # (n,)
    return loss_weight * _reduce(loss, weight, reduction, avg_factor)


def _check_regression_inputs(pred, target, weight) -> None:
    check.tensor("pred", pred, dtype="floating")
    check.tensor("target", target, dtype="floating")
    check.same_device(pred=pred, **{"target": target})
    if target.shape != pred.shape:
        raise ValueError(f"target: shape {tuple(target.shape)}, expected pred's shape "
                         f"{tuple(pred.shape)}")
    _check_weight(weight, pred.shape, pred, [tuple(pred.shape)])


def l1_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
            reduction: str = "mean", avg_factor=None, loss_weight: float = 1.0) -> torch.Tensor:
    """L1 loss ``|pred - target|`` per element, SPEC [LOSS-15].

    Args:
        pred, target: same shape, e.g. (N, 4) deltas; floating point.
        weight: None or pred's shape (mmdet's bbox_weights, 1 on positives).
        reduction, avg_factor, loss_weight: see ``weight_reduce_loss``.
    """
    _check_reduction(reduction, avg_factor)
    _check_regression_inputs(pred, target, weight)
    loss = (pred - target).abs()
    return loss_weight * _reduce(loss, weight, reduction, avg_factor)


def smooth_l1_loss(pred: torch.Tensor, target: torch.Tensor,
                   weight: torch.Tensor | None = None, beta: float = 1.0,
                   reduction: str = "mean", avg_factor=None,
                   loss_weight: float = 1.0) -> torch.Tensor:
    """Smooth L1 (Huber / beta) loss per element, SPEC [LOSS-16..17].

    With d = |pred - target|: ``0.5 * d**2 / beta`` where ``d < beta`` (strict), else
    ``d - 0.5 * beta``. ``beta = 0`` is exactly L1 (detectron2's Faster R-CNN
    default) with finite gradients; torchvision's R-CNN uses beta 1/9.

    Args:
        pred, target: same shape; floating point.
        weight: None or pred's shape.
        beta: transition point, >= 0.
        reduction, avg_factor, loss_weight: see ``weight_reduce_loss``.
    """
    _check_reduction(reduction, avg_factor)
    _check_regression_inputs(pred, target, weight)
    beta = check.number("beta", beta, low=0)
    d = (pred - target).abs()
    if beta == 0:
        loss = d  # the quadratic branch would divide by zero (NaN gradients)
    else:
        loss = torch.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)
    return loss_weight * _reduce(loss, weight, reduction, avg_factor)


# --------------------------------------------------------------------------- cross-entropy
CROSS_ENTROPY_FLAVOURS = ("mmdet", "detectron2", "torchvision")


def cross_entropy_loss(pred: torch.Tensor, target: torch.Tensor,
                       weight: torch.Tensor | None = None, reduction: str = "mean",
                       avg_factor=None, ignore_index: int = -100,
                       loss_weight: float = 1.0, *, flavour: str = "mmdet") -> torch.Tensor:
    """Softmax cross-entropy over K columns that include background, SPEC [LOSS-18].

    Args:
        pred: (N, K) logits; background is one of the K columns (mmdet and
            detectron2: K - 1 = num_classes; torchvision: 0).
        target: int64 (N,) labels in [0, K), or ``ignore_index`` for rows that
            contribute 0 (they still count in a plain mean, as mmdet's default).
        weight: None or (N,) per-row weights.
        reduction, avg_factor, loss_weight: see ``weight_reduce_loss``.
        flavour: what a plain ``"mean"`` (no avg_factor) divides by. "mmdet": every
            row, ignored ones included (mmdet 2.11 ``cross_entropy_loss.py``
            ``cross_entropy``, 3.3 the same with its default ``avg_non_ignore=False``);
            "detectron2" / "torchvision": the rows not ignored, as their
            ``F.cross_entropy`` does (0 when none is left, never NaN).

    Returns:
        0-dim loss, or the (N,) weighted loss for ``"none"``.
    """
    check.tensor("pred", pred, dtype="floating")
    _check_reduction(reduction, avg_factor)
    if pred.dim() != 2:
        raise ValueError(f"pred: shape {tuple(pred.shape)}, expected (N, K) logits")
    check.tensor("target", target)
    check.same_device(pred=pred, **{"target": target})
    num_rows, k = pred.shape
    if target.is_floating_point() or target.dtype == torch.bool or target.shape != (num_rows,):
        raise ValueError(f"target: {target.dtype} of shape {tuple(target.shape)}, expected "
                         f"integer labels of shape ({num_rows},)")
    kept = target[target != ignore_index]
    if kept.numel() and (kept.min() < 0 or kept.max() >= k):
        raise ValueError(f"target: labels in [{int(kept.min())}, {int(kept.max())}], expected "
                         f"[0, {k - 1}] or ignore_index={ignore_index}")
    _check_weight(weight, (num_rows,), pred, [(num_rows,)])

    if flavour not in CROSS_ENTROPY_FLAVOURS:
        raise ValueError(f"flavour: expected one of {list(CROSS_ENTROPY_FLAVOURS)}, "
                         f"got {flavour!r}")

    loss = F.cross_entropy(pred, target.long(), reduction="none",
                           ignore_index=ignore_index)  # (N,), 0 where ignored
    if flavour != "mmdet" and reduction == "mean" and avg_factor is None:
        counted = (target != ignore_index).sum().clamp(min=1)  # torch's mean: rows not ignored
        return loss_weight * (_reduce(loss, weight, "sum", None) / counted)
    return loss_weight * _reduce(loss, weight, reduction, avg_factor)


def binary_cross_entropy_loss(pred: torch.Tensor, target: torch.Tensor,
                              weight: torch.Tensor | None = None, reduction: str = "mean",
                              avg_factor=None, loss_weight: float = 1.0) -> torch.Tensor:
    """Sigmoid binary cross-entropy on logits, SPEC [LOSS-19].

    Args:
        pred: logits, (N, C) with integer labels or any shape with a float target.
        target: int64 labels (N,) in [0, C] (C = background, an all-zero row, as
            mmdet's expanded one-hot labels) or a float target of pred's shape
            (detectron2's RPN objectness, with ignored anchors weighted 0).
        weight: None, (N,) per-row weights (with (N, C) pred) or pred's shape.
        reduction, avg_factor, loss_weight: see ``weight_reduce_loss``.
    """
    check.tensor("pred", pred, dtype="floating")
    _check_reduction(reduction, avg_factor)
    t = _class_target(pred, target)
    weight = _row_or_element_weight(weight, pred)
    loss = F.binary_cross_entropy_with_logits(pred, t, reduction="none")
    return loss_weight * _reduce(loss, weight, reduction, avg_factor)


# --------------------------------------------------------------------------- normalisers
def _counts(values, name: str) -> list[int]:
    if isinstance(values, torch.Tensor):
        values = values.reshape(-1).tolist()
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise check.fail(name, "a sequence of counts (one per image)", values, TypeError)
    counts = list(values)
    return [check.integer(name, c, low=0) if not isinstance(c, float) or not c.is_integer()
            else int(c) for c in counts]


def _batch_inputs(loss_sums, num_pos, num_neg, batch_size_per_image, need_neg: bool = False):
    """The batch normalisers' one call shape, checked: (B, T) floating loss sums, B
    positive counts, B negative counts (or None unless ``need_neg``), a batch size per
    image >= 1 or None."""
    check.tensor("loss_sums", loss_sums, ndim=2, dtype="floating")
    num_images = int(loss_sums.shape[0])
    num_pos = _counts(num_pos, "num_pos")
    if len(num_pos) != num_images:
        raise check.fail("num_pos", f"{num_images} counts (one per row of loss_sums)", num_pos)
    if num_neg is None and need_neg:
        raise check.fail("num_neg", "one count per image (this normaliser counts negatives)",
                         num_neg, TypeError)
    if num_neg is not None:
        num_neg = _counts(num_neg, "num_neg")
        if len(num_neg) != num_images:
            raise check.fail("num_neg", f"{num_images} counts (one per row of loss_sums)", num_neg)
    if batch_size_per_image is not None:
        batch_size_per_image = check.integer("batch_size_per_image", batch_size_per_image, low=1)
    return loss_sums, num_pos, num_neg, batch_size_per_image


def retinanet_num_total_pos(num_pos_per_image, num_neg_per_image=None) -> int:
    """mmdet's anchor-head avg_factor, SPEC [LOSS-20].

    ``sum_i max(num_pos_i, 1)``: every image counts at least once, so a batch with
    no positives still divides by the number of images. Heads that sample
    (``num_neg_per_image`` given) add ``sum_i max(num_neg_i, 1)``.

    Args:
        num_pos_per_image: sequence or 1-D tensor of per-image positive counts.
        num_neg_per_image: None, or the per-image negative counts (sampling heads).
    """
    total = sum(max(n, 1) for n in _counts(num_pos_per_image, "num_pos_per_image"))
    if num_neg_per_image is not None:
        total += sum(max(n, 1) for n in _counts(num_neg_per_image, "num_neg_per_image"))
    return total


def rtmdet_avg_factor(assign_metrics) -> float:
    """RTMDet's normaliser: the sum of assign metrics, clamped to >= 1, SPEC [LOSS-21].

    Args:
        assign_metrics: a float tensor (any shape) or a sequence of them (one per
            level): the IoU quality of each positive prior, 0 elsewhere. For the
            box loss pass the metrics of the positives only (the box weights).

    In distributed training mmdet first averages the sum over processes
    (reduce_mean); in one process it is the local sum.
    """
    if isinstance(assign_metrics, torch.Tensor):
        assign_metrics = [assign_metrics]
    assign_metrics = check.sequence("assign_metrics", assign_metrics, of="tensors")
    total = 0.0
    for i, m in enumerate(assign_metrics):
        check.tensor(f"assign_metrics[{i}]", m, dtype="floating")
        total += float(m.detach().sum())
    if not math.isfinite(total):
        raise ValueError(f"assign_metrics: sum is {total}, expected a finite number")
    return max(total, 1.0)


def detectron2_rpn_normalizer(batch_size_per_image: int, num_images: int) -> float:
    """detectron2's RPN loss scale ``1 / (batch_size_per_image * num_images)``.

    SPEC [LOSS-22].

    The RPN's summed objectness and box losses are multiplied by it, whatever the
    number of anchors actually sampled (256 per image by default).
    """
    check.integer("batch_size_per_image", batch_size_per_image, low=1)
    check.integer("num_images", num_images, low=1)
    return 1.0 / (batch_size_per_image * num_images)


class EmaLossNormalizer:
    """detectron2 RetinaNet's normaliser: an EMA of the positive count, SPEC [LOSS-23].

    ``value <- momentum * value + (1 - momentum) * max(num_pos, 1)``, starting from
    ``initial`` (100); the summed losses are divided by the updated value.
    """

    def __init__(self, momentum: float = 0.9, initial: float = 100.0) -> None:
        self.momentum = check.number("momentum", momentum, low=0, high=1)
        self.value = check.number("initial", initial, low=0, low_open=True)

    def __call__(self, loss_sums: torch.Tensor, num_pos, num_neg=None,
                 batch_size_per_image=None) -> torch.Tensor:
        """``loss_sums.sum(0) / update(sum(num_pos))``: one update per batch (see
        ``TotalPositives`` for the arguments)."""
        loss_sums, num_pos, _, _ = _batch_inputs(loss_sums, num_pos, num_neg, batch_size_per_image)
        return loss_sums.sum(dim=0) / self.update(sum(num_pos))

    def update(self, num_pos: int) -> float:
        """Fold in this batch's total positive count; returns the new normaliser."""
        (num_pos,) = _counts([num_pos], "num_pos")
        self.value = self.momentum * self.value + (1 - self.momentum) * max(num_pos, 1)
        return self.value


def torchvision_per_image_mean(loss_per_image, num_foreground_per_image) -> torch.Tensor:
    """torchvision RetinaNet's reduction: ``mean_i(loss_i / max(1, fg_i))``, SPEC [LOSS-24].

    Args:
        loss_per_image: 1-D float tensor (num_images,) or a sequence of 0-dim
            tensors: each image's summed loss.
        num_foreground_per_image: per-image foreground counts, same length.
    """
    if not isinstance(loss_per_image, torch.Tensor):
        loss_per_image = torch.stack(check.sequence("loss_per_image", loss_per_image, of="tensors"))
    check.tensor("loss_per_image", loss_per_image, dtype="floating")
    counts = _counts(num_foreground_per_image, "num_foreground_per_image")
    if loss_per_image.dim() != 1 or loss_per_image.numel() != len(counts):
        raise ValueError(f"loss_per_image: shape {tuple(loss_per_image.shape)}, expected "
                         f"({len(counts)},) to match num_foreground_per_image")
    if not counts:
        raise ValueError("loss_per_image: no images; expected at least one")
    divisors = loss_per_image.new_tensor([max(1, c) for c in counts])  # (num_images,)
    return (loss_per_image / divisors).mean()


# --------------------------------------------------------------------------- batch reductions
# One call shape for every flavour's loss normaliser, so a detector preset holds the
# normaliser itself: ``normaliser(loss_sums (B, T), num_pos (B,), num_neg (B,),
# batch_size_per_image) -> (T,)`` turns the per-image summed losses of T loss terms
# (e.g. classification and box) into the batch's T losses. Each wraps the upstream
# rule above; only ``EmaLossNormalizer`` keeps state (build one per model).
class TotalPositives:
    """mmdet anchor heads without sampling (RetinaNet): ``sum / retinanet_num_total_pos``."""

    def __call__(self, loss_sums, num_pos, num_neg=None, batch_size_per_image=None):
        loss_sums, num_pos, _, _ = _batch_inputs(loss_sums, num_pos, num_neg, batch_size_per_image)
        return loss_sums.sum(dim=0) / retinanet_num_total_pos(num_pos)


class TotalSamples:
    """mmdet anchor heads with a real sampler (RPN): ``sum / (sum_i max(pos_i, 1) +
    sum_i max(neg_i, 1))`` (``retinanet_num_total_pos`` with the negatives)."""

    def __call__(self, loss_sums, num_pos, num_neg=None, batch_size_per_image=None):
        loss_sums, num_pos, num_neg, _ = _batch_inputs(loss_sums, num_pos, num_neg,
                                                       batch_size_per_image, need_neg=True)
        return loss_sums.sum(dim=0) / retinanet_num_total_pos(num_pos, num_neg)


class PerImageMean:
    """torchvision RetinaNet: ``torchvision_per_image_mean`` of each loss term."""

    def __call__(self, loss_sums, num_pos, num_neg=None, batch_size_per_image=None):
        loss_sums, num_pos, _, _ = _batch_inputs(loss_sums, num_pos, num_neg, batch_size_per_image)
        return torch.stack([torch.as_tensor(torchvision_per_image_mean(loss_sums[:, k], num_pos))
                            for k in range(loss_sums.shape[1])])


class SampledMean:
    """torchvision RPN: the mean over all sampled anchors of the batch,
    ``sum / sum_i (pos_i + neg_i)`` (``binary_cross_entropy_with_logits`` on the
    sampled logits, box loss ``/ sampled_inds.numel()``); at least 1."""

    def __call__(self, loss_sums, num_pos, num_neg=None, batch_size_per_image=None):
        loss_sums, num_pos, num_neg, _ = _batch_inputs(loss_sums, num_pos, num_neg,
                                                       batch_size_per_image, need_neg=True)
        return loss_sums.sum(dim=0) / max(sum(num_pos) + sum(num_neg), 1)


class FixedBatch:
    """detectron2 RPN: ``sum * detectron2_rpn_normalizer(batch_size_per_image, B)``,
    whatever the number actually sampled."""

    def __call__(self, loss_sums, num_pos, num_neg=None, batch_size_per_image=None):
        loss_sums, _, _, batch_size_per_image = _batch_inputs(loss_sums, num_pos, num_neg,
                                                              batch_size_per_image)
        return loss_sums.sum(dim=0) * detectron2_rpn_normalizer(batch_size_per_image,
                                                                int(loss_sums.shape[0]))
