"""The checks every public function of the reference runs on its arguments.

One vocabulary, one message form: every failure is a ``ValueError`` (``TypeError``
for a value of the wrong type) reading ``"<argument>: expected <what>, got <seen>"``,
so the argument, the value seen and what was expected are always named (SPEC.md,
"Conventions"; the validation tier). The stage files call these at their public
boundary, once, and then trust their inputs.

Each check returns the value in its usable form (a float, an int, an ``(h, w)``
pair), so a call site reads ``thr = number("iou_threshold", iou_threshold)``.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Iterable, Sequence

import torch

__all__: list[str] = []  # internal: nothing here is a protocol name

# The largest coordinate magnitude the spec guarantees for boxes (SPEC.md IOU-18).
# Within it float32 areas stay finite ((2e18)^2 = 4e36 < 3.4e38, also for the GIoU
# enclosing box and a sum of two areas); beyond it they overflow to inf and IoU
# becomes inf / inf = NaN, so boxes checks reject larger coordinates.
COORD_LIMIT = 1e18


def _seen(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 60 else f"a {type(value).__name__} of length {len(value)}" \
        if hasattr(value, "__len__") else f"a {type(value).__name__}"


def fail(name: str, expected: str, value: Any, error: type = ValueError) -> Exception:
    """The one message form: ``name: expected ..., got ...`` (returned, to raise)."""
    return error(f"{name}: expected {expected}, got {_seen(value)}")


# --------------------------------------------------------------------------- tensors
def tensor(name: str, value: Any, *, ndim: int | Iterable[int] | None = None,
           min_ndim: int | None = None, last: int | Iterable[int] | None = None,
           groups_of: int | None = None, dtype: str | None = None) -> torch.Tensor:
    """``value`` is a tensor with the given number of dims, last dim and dtype kind.

    last: the last dim (or the allowed ones); groups_of: the last dim is ``K * groups_of``
    with K >= 1 (class-specific boxes). dtype: ``"floating"``, ``"integer"`` (no bool),
    ``"bool"``, or None (any).
    """
    if not isinstance(value, torch.Tensor):
        raise fail(name, "a torch.Tensor", value, TypeError)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.dim() not in allowed:
            dims = " or ".join(str(d) for d in allowed)
            raise fail(name, f"{dims} dims", value)
    if min_ndim is not None and value.dim() < min_ndim:
        raise fail(name, f"at least {min_ndim} dims", value)
    if last is not None:
        allowed = (last,) if isinstance(last, int) else tuple(last)
        if value.dim() == 0 or value.shape[-1] not in allowed:
            raise fail(name, "a last dim of " + " or ".join(str(d) for d in allowed), value)
    if groups_of is not None and (value.dim() == 0 or value.shape[-1] == 0
                                  or value.shape[-1] % groups_of):
        raise fail(name, f"a last dim of K*{groups_of} (K >= 1)", value)
    if dtype == "floating" and not value.is_floating_point():
        raise fail(name, "a floating dtype", value)
    if dtype == "integer" and (value.is_floating_point() or value.is_complex()
                               or value.dtype == torch.bool):
        raise fail(name, "an integer dtype", value)
    if dtype == "bool" and value.dtype != torch.bool:
        raise fail(name, "a bool dtype", value)
    return value


def boxes(name: str, value: Any, *, ndim: int | Iterable[int] | None = 2,
          min_ndim: int | None = None) -> torch.Tensor:
    """(..., N, 4) floating boxes with finite coordinates within ``COORD_LIMIT``."""
    tensor(name, value, ndim=ndim, min_ndim=min_ndim, last=4, dtype="floating")
    return in_range(name, value)


def in_range(name: str, value: torch.Tensor, limit: float = COORD_LIMIT) -> torch.Tensor:
    """Finite values of magnitude <= ``limit`` (one reduction: NaN fails the test too)."""
    if value.numel() and not bool(value.abs().amax() <= limit):
        bad = value[~(value.abs() <= limit)].flatten()[0].item()
        raise ValueError(f"{name}: expected finite coordinates of magnitude <= {limit:g}, "
                         f"got {bad}")
    return value


def finite(name: str, value: torch.Tensor) -> torch.Tensor:
    if value.numel() and not bool(torch.isfinite(value).all()):
        raise fail(name, "finite values", "NaN or inf")
    return value


def no_nan(name: str, value: torch.Tensor) -> torch.Tensor:
    # One reduction for floating tensors (amin propagates NaN), not a boolean copy.
    if not value.numel():
        return value
    if bool(torch.isnan(value.amin() if value.is_floating_point() else value).any()):
        raise fail(name, "no NaN", "NaN")
    return value


def rows(name: str, value: torch.Tensor, count: int, other: str) -> torch.Tensor:
    """``value`` has ``count`` rows (dim 0), one per row of ``other``."""
    if value.dim() == 0 or value.shape[0] != count:
        raise fail(name, f"{count} rows (one per row of {other})", value)
    return value


def labels(name: str, value: Any, count: int, other: str, *,
           num_classes: int | None = None) -> torch.Tensor | None:
    """None, or a (count,) integer tensor, one label per row of ``other`` (values in
    ``[0, num_classes)`` when given)."""
    if value is None:
        return None
    tensor(name, value, ndim=1, dtype="integer")
    rows(name, value, count, other)
    if num_classes is not None and value.numel() and (
            int(value.min()) < 0 or int(value.max()) >= num_classes):
        raise fail(name, f"values in [0, {num_classes})",
                   f"values in [{int(value.min())}, {int(value.max())}]")
    return value


def leading_shape(name: str, value: torch.Tensor, other: str, like: torch.Tensor) -> None:
    """``value`` has ``like``'s shape but for the last dim."""
    if value.shape[:-1] != like.shape[:-1]:
        raise fail(name, f"the leading shape {tuple(like.shape[:-1])} of {other}", value)


def same_dtype(**tensors: torch.Tensor | None) -> None:
    """Every given tensor has the dtype of the first."""
    named = [(k, v) for k, v in tensors.items() if isinstance(v, torch.Tensor)]
    for name, value in named[1:]:
        if value.dtype != named[0][1].dtype:
            raise fail(name, f"{named[0][0]}'s dtype {named[0][1].dtype}", value)


def same_device(**tensors: torch.Tensor | None) -> None:
    """Every given tensor lies on the device of the first."""
    named = [(k, v) for k, v in tensors.items() if isinstance(v, torch.Tensor)]
    for name, value in named[1:]:
        if value.device != named[0][1].device:
            raise fail(name, f"{named[0][0]}'s device {named[0][1].device}", str(value.device))


# --------------------------------------------------------------------------- numbers
def number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
           low_open: bool = False) -> float:
    """A finite real number (not a bool or a string) in [low, high] (or (low, high])."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype == torch.bool:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Real):
        raise fail(name, "a number", value, TypeError)
    value = float(value)
    lo = "(" if low_open else "["
    what = "a finite number" if low is None and high is None else (
        f"a finite number in {lo}{'-inf' if low is None else f'{low:g}'}, "
        f"{'inf' if high is None else f'{high:g}'}]")
    if not math.isfinite(value):
        raise fail(name, what, value)
    if low is not None and (value < low or (low_open and value == low)):
        raise fail(name, what, value)
    if high is not None and value > high:
        raise fail(name, what, value)
    return value


def integer(name: str, value: Any, *, low: int | None = None) -> int:
    """An int (not a bool, float or string) >= low."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise fail(name, "an int", value, TypeError)
    if low is not None and value < low:
        raise fail(name, f"an int >= {low}", value)
    return int(value)


def numbers(name: str, value: Any, *, length: int | None = None, low: float | None = None,
            low_open: bool = False, nonzero: bool = False) -> tuple[float, ...]:
    """A list or tuple of finite real numbers (``length`` of them), each >= low (> low
    when ``low_open``; not 0 when ``nonzero``)."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    bound = "" if low is None else f" {'>' if low_open else '>='} {low:g}"
    what = (f"{length} " if length is not None else "") + f"finite numbers{bound}" + (
        ", none 0" if nonzero else "")
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise fail(name, what, value, TypeError)
    value = list(value)
    if any(isinstance(v, bool) or not isinstance(v, Real) for v in value):
        raise fail(name, what, value, TypeError)
    out = tuple(float(v) for v in value)
    if length is not None and len(out) != length:
        raise fail(name, what, value)
    for v in out:
        if not math.isfinite(v) or (low is not None and (v < low or (low_open and v == low))) \
                or (nonzero and v == 0):
            raise fail(name, what, value)
    return out


def provides(name: str, value: Any, *methods: str) -> Any:
    """A stage object (assigner, sampler, coder) with the given methods."""
    if isinstance(value, (str, bytes)) or not all(callable(getattr(value, m, None)) for m in methods):
        raise fail(name, "an object with " + ", ".join(f"{m}()" for m in methods), value, TypeError)
    return value


def generator(name: str, value: Any) -> torch.Generator | None:
    """None or a ``torch.Generator`` (the samplers' only source of randomness)."""
    if value is not None and not isinstance(value, torch.Generator):
        raise fail(name, "a torch.Generator or None", value, TypeError)
    return value


def choice(name: str, value: Any, options: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in options:
        raise fail(name, "one of " + ", ".join(repr(o) for o in options), value)
    return value


def size(name: str, value: Any, *, extra: bool = False, integer: bool = False
         ) -> tuple[float, float]:
    """An ``(h, w)`` pair of finite positive numbers (``(h, w, c)`` too when ``extra``;
    ints only when ``integer``)."""
    lengths = (2, 3) if extra else (2,)
    what = (f"an (h, w) pair of positive {'ints' if integer else 'numbers'}"
            + (" (or (h, w, c))" if extra else ""))
    if isinstance(value, torch.Size):
        value = tuple(value)
    if not isinstance(value, (tuple, list)) or len(value) not in lengths:
        raise fail(name, what, value, TypeError if not isinstance(value, (tuple, list)) else ValueError)
    for v in value[:2]:
        if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v) or v <= 0:
            raise fail(name, what, value)
        if integer and not isinstance(v, Integral):
            raise fail(name, what, value)
    return value[0], value[1]


def flag(name: str, value: Any) -> bool:
    """A bool (numpy's and torch's one-element bools too), never a string or a number."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dtype == torch.bool:
        value = bool(value.item())
    if type(value).__name__ == "bool_":  # numpy.bool_
        value = bool(value)
    if not isinstance(value, bool):
        raise fail(name, "True or False", value, TypeError)
    return value


def sequence(name: str, value: Any, *, length: int | None = None, of: str | None = None,
             like: str | None = None) -> list:
    """A list or tuple (of ``length`` entries, one per entry of ``like``; of tensors
    when ``of == "tensors"``)."""
    if not isinstance(value, (list, tuple)):
        raise fail(name, "a list" + (" of tensors" if of == "tensors" else ""), value, TypeError)
    if length is not None and len(value) != length:
        per = f" (one per entry of {like})" if like else ""
        raise ValueError(f"{name}: expected {length} entries{per}, got {len(value)}")
    if of == "tensors":
        for k, v in enumerate(value):
            if not isinstance(v, torch.Tensor):
                raise fail(f"{name}[{k}]", "a torch.Tensor", v, TypeError)
    return list(value)


def compute_dtype(x: torch.Tensor | torch.dtype) -> torch.dtype:
    """float32 for float16/bfloat16 (SPEC.md IOU-13: the float32 answer, rounded), else x's."""
    dtype = x if isinstance(x, torch.dtype) else x.dtype
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
