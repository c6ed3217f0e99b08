"""Helpers the conformance tests share: building inputs and comparing outputs.

Inputs are built with plain NumPy and torch, never with the implementation under
test, so one broken component cannot cascade into unrelated failures.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

# Default (rtol, atol) per dtype of the implementation's output, compared with a
# float64 oracle. An implementation may override them in CONFORMANCE["tolerance"].
DEFAULT_TOLERANCE = {
    "float64": (1e-9, 1e-9),
    "float32": (1e-5, 1e-5),
    "float16": (2e-3, 2e-3),
    "bfloat16": (2e-2, 2e-2),
}


def tensor(array, device, dtype=torch.float32) -> torch.Tensor:
    """A torch tensor on ``device`` from a NumPy array or nested list."""
    return torch.as_tensor(np.asarray(array), dtype=dtype, device=device)


def to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64 if x.is_floating_point() else x.dtype).numpy()
    return np.asarray(x)


def tolerance_for(impl, dtype: torch.dtype, scale: float = 1.0) -> tuple[float, float]:
    key = str(dtype).replace("torch.", "")
    rtol, atol = impl.tolerance.get(key, DEFAULT_TOLERANCE.get(key, (1e-5, 1e-5)))
    return rtol * scale, atol * scale


def assert_close(actual, expected, impl=None, *, rtol=None, atol=None, what="output") -> None:
    """Compare an implementation's output with the oracle's float64 answer.

    Shapes must match exactly; NaN only matches NaN. Tolerances default to the
    output dtype's entry in DEFAULT_TOLERANCE (or the implementation's override).
    """
    __tracebackhide__ = True  # a failure points at the test's line, not at this helper
    if isinstance(actual, torch.Tensor) and (rtol is None or atol is None):
        d_rtol, d_atol = (
            tolerance_for(impl, actual.dtype) if impl is not None
            else DEFAULT_TOLERANCE.get(str(actual.dtype).replace("torch.", ""), (1e-5, 1e-5))
        )
        rtol = d_rtol if rtol is None else rtol
        atol = d_atol if atol is None else atol
    rtol = 1e-5 if rtol is None else rtol
    atol = 1e-5 if atol is None else atol
    a, e = to_numpy(actual), np.asarray(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape}, expected {e.shape}"
    np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, equal_nan=True, err_msg=what)


def raises_value_error(fn, *args, match: str | None = None, **kwargs) -> str:
    """Call fn and require a ValueError/TypeError (the spec's "clear error")."""
    __tracebackhide__ = True
    try:
        fn(*args, **kwargs)
    except NotImplementedError:
        raise
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        if match is not None:
            assert match.lower() in msg.lower(), f"error message {msg!r} does not mention {match!r}"
        return msg
    raise AssertionError(f"{getattr(fn, '__name__', fn)} accepted bad input without an error")


def peak_extra_bytes(fn, device) -> tuple[int, object]:
    """Peak memory the call adds: CUDA allocator stats, or Linux VmHWM after clear_refs."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        result = fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before, result

    def status(key):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
        raise KeyError(key)

    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets the peak resident set size (VmHWM)
    except OSError:
        pytest.skip("cannot reset the peak RSS on this platform (/proc/self/clear_refs)")
    before = status("VmRSS")
    result = fn()
    return status("VmHWM") - before, result


def assert_same_detections(got, expected, box_atol=1e-3, score_atol=1e-4, what="detections") -> None:
    """Same detections as sets: tied scores make the order implementation-defined, so
    each expected detection must pair with a distinct got one of the same label, box
    within ``box_atol`` and score within ``score_atol``. ``got`` / ``expected``: dicts
    of "boxes" (k, 4), "scores" (k,), "labels" (k,), tensors or arrays."""
    gb, gs, gl = (np.asarray(to_numpy(got[k]), dtype=np.float64) for k in ("boxes", "scores", "labels"))
    eb, es, el = (np.asarray(to_numpy(expected[k]), dtype=np.float64)
                  for k in ("boxes", "scores", "labels"))
    gb, eb = gb.reshape(-1, 4), eb.reshape(-1, 4)
    assert gb.shape == eb.shape, f"{what}: {gb.shape[0]} detections, expected {eb.shape[0]}"
    free = np.ones(len(gb), dtype=bool)
    for i in range(len(eb)):
        ok = free & (gl == el[i]) & (np.abs(gb - eb[i]).max(axis=1) <= box_atol) & \
            (np.abs(gs - es[i]) <= score_atol)
        assert ok.any(), f"{what}: expected detection {eb[i]} score {es[i]} label {el[i]} not found"
        free[np.flatnonzero(ok)[0]] = False
