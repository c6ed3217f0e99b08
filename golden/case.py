"""What a golden case is.

A golden case reads as Python: the inputs it builds, the protocol call it makes,
the arrays it stores, the tolerance it is compared with, and what the stored
numbers were cross-checked against. ``python -m golden regenerate`` runs every
case on the reference and writes ``golden/data/<name>.npz`` plus an entry in
``golden/manifest.json``; the conformance suite runs the same ``run`` on any
implementation and compares with the stored arrays.

Large deterministic outputs are *summarised* before storing (shapes, sampled
rows, sums, checksums of exactly representable tensors) so the store stays small.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Callable

import numpy as np
import torch

Arrays = dict[str, np.ndarray]


def as_array(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def exact_sha256(x: Any) -> np.ndarray:
    """sha256 of an exactly representable array (bools, ints), as a uint8 array.

    Stored instead of the array itself; any single flipped element changes it.
    """
    a = np.ascontiguousarray(as_array(x))
    if a.dtype.kind == "b":
        a = a.astype(np.uint8)
    elif a.dtype.kind in "iu":
        a = a.astype(np.int64)
    else:
        raise TypeError(f"exact_sha256 expects a bool or integer array, got {a.dtype}")
    h = hashlib.sha256(str(a.shape).encode() + a.tobytes()).digest()
    return np.frombuffer(h, dtype=np.uint8).copy()


def sampled_rows(x: Any, count: int = 256) -> np.ndarray:
    """Rows at evenly spaced indices (first and last included), in float64."""
    a = as_array(x)
    if len(a) == 0:
        return a.astype(np.float64)
    idx = np.unique(np.linspace(0, len(a) - 1, num=min(count, len(a))).round().astype(np.int64))
    return a[idx].astype(np.float64)


@dataclasses.dataclass(frozen=True)
class GoldenCase:
    """One golden case.

    name: file stem of the stored ``.npz``; unique across the store.
    component / clause: the SPEC.md component and clause the case pins.
    producer / flavour: the protocol call that makes the output, and its flavour.
    inputs: a JSON-able description of the inputs (recorded in the manifest).
    run: ``run(impl_module, device) -> dict[str, array]`` builds the inputs with
        plain torch and calls the implementation; arrays may be torch tensors.
        Exact keys (ints/bools, or summaries like ``exact_sha256``) compare exactly.
    exact: the output keys that must match bit for bit.
    rtol / atol: tolerance for the other keys (float32 outputs against the store).
    cross_checked: what the stored numbers were checked against, in words.
    cross_check: ``cross_check(outputs)`` raises AssertionError unless the
        reference output agrees with that independent source; run on regenerate.
    """

    name: str
    component: str
    clause: str
    producer: str
    flavour: str
    inputs: dict
    run: Callable[[Any, torch.device], dict[str, Any]]
    cross_checked: str
    cross_check: Callable[[Arrays], None] | None = None
    exact: tuple[str, ...] = ()
    rtol: float = 1e-5
    atol: float = 1e-4

    def outputs(self, impl_module, device: torch.device | str = "cpu") -> Arrays:
        raw = self.run(impl_module, torch.device(device))
        return {k: as_array(v) for k, v in raw.items()}

    def compare(self, actual: Arrays, expected: Arrays, rtol: float | None = None,
                atol: float | None = None) -> list[str]:
        """Differences between two output dicts, as human-readable lines."""
        rtol = self.rtol if rtol is None else rtol
        atol = self.atol if atol is None else atol
        problems = []
        if set(actual) != set(expected):
            problems.append(f"keys {sorted(actual)} != stored {sorted(expected)}")
        for key in sorted(set(actual) & set(expected)):
            a, e = actual[key], expected[key]
            if a.shape != e.shape:
                problems.append(f"{key}: shape {a.shape} != stored {e.shape}")
                continue
            if key in self.exact:
                if not np.array_equal(a, e):
                    n = int((a != e).sum())
                    where = tuple(int(i) for i in np.argwhere(a != e)[0]) if a.ndim else ()
                    problems.append(f"{key}: {n} of {a.size} elements differ (exact comparison); "
                                    f"first at {where}: {a[where].item()} vs stored "
                                    f"{e[where].item()}")
            else:
                a64, e64 = a.astype(np.float64), e.astype(np.float64)
                bad = ~np.isclose(a64, e64, rtol=rtol, atol=atol, equal_nan=True)
                if bad.any():
                    # Plain Python numbers: a NumPy scalar's repr reads np.float64(...).
                    where = tuple(int(i) for i in np.argwhere(bad)[0]) if a.ndim else ()
                    problems.append(
                        f"{key}: {int(bad.sum())} of {a.size} elements outside rtol={rtol}, "
                        f"atol={atol}; first at {where}: {float(a64[where])!r} vs "
                        f"stored {float(e64[where])!r}"
                    )
        return problems
