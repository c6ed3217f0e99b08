"""The upstream adapters load, or fail with a message that says how to make them load.

detectron2 is not on the package index: ``--impl=detectron2`` needs a source checkout
on PYTHONPATH or in DETECTRON2_PATH. Where it is importable, a small slice of the
suite runs on it here (the whole run is ``pytest conformance --impl=detectron2``).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.update(extra)
    return env


def _detectron2_importable() -> bool:
    path = os.environ.get("DETECTRON2_PATH")
    if path and path not in sys.path:
        sys.path.insert(0, path)
    return importlib.util.find_spec("detectron2") is not None and \
        importlib.util.find_spec("fvcore") is not None


def test_detectron2_adapter_without_detectron2_says_how_to_get_it(tmp_path):
    code = ("import sys; sys.modules['detectron2'] = None\n"
            "import conformance.adapters.detectron2_adapter")
    env = _env()
    env.pop("DETECTRON2_PATH", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode != 0
    assert "DETECTRON2_PATH" in out.stderr and "not on the package index" in out.stderr


@pytest.mark.slow
def test_detectron2_suite_slice_runs_green(tmp_path):
    if not _detectron2_importable():
        pytest.skip("detectron2 is not importable: set DETECTRON2_PATH (or PYTHONPATH) to a "
                    "detectron2 source checkout and install fvcore, omegaconf to run this")
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "conformance"), "--impl=detectron2", "-q",
           "-p", "no:cacheprovider", "-k", "proposals or fast_rcnn or pairwise_iou or Matcher "
           "or matcher or detectron2"]
    out = subprocess.run(cmd, env=_env(CONFORMANCE_PROFILE="ci"), capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout


# --------------------------------------------------------------------------- kernel guard
_CRASHING_ROI_ALIGN_CALLS = {
    "3-D input": "input=torch.zeros(3, 8, 8), rois=rois, output_size=(2, 2)",
    "zero output size": "input=torch.zeros(1, 3, 8, 8), rois=rois, output_size=(0, 2)",
    "negative output size": "input=torch.zeros(1, 3, 8, 8), rois=rois, output_size=-2",
    "NaN spatial_scale": "input=torch.zeros(1, 3, 8, 8), rois=rois, output_size=(2, 2), "
                         "spatial_scale=float('nan')",
}


def test_roi_align_guard_names_the_inputs_that_crash_torchvisions_kernel():
    from conformance.adapters.torchvision_kernels import roi_align_would_crash
    import torch

    x4 = torch.zeros(1, 3, 8, 8)
    assert roi_align_would_crash(torch.zeros(3, 8, 8), (2, 2), 1.0)
    assert roi_align_would_crash(x4, (0, 2), 1.0)
    assert roi_align_would_crash(x4, -1, 1.0)
    assert roi_align_would_crash(x4, (2, 2), float("nan"))
    assert not roi_align_would_crash(x4, (2, 2), 1.0)
    assert not roi_align_would_crash(x4, 7, 0.25)
    assert not roi_align_would_crash(x4, (True, 2), 1.0)  # bool sizes are the kernel's TypeError


def _adapter_roi_align_survives(adapter: str, env) -> None:
    """The crashing calls in one fresh process (a segfault ends it with a signal, which
    is what the guard prevents): each must report NotImplementedError naming the kernel."""
    lines = ["import torch, importlib",
             f"m = importlib.import_module('conformance.adapters.{adapter}')",
             "rois = torch.tensor([[0., 1., 1., 5., 5.]])"]
    for what, kwargs in _CRASHING_ROI_ALIGN_CALLS.items():
        lines += ["try:", f"    m.roi_align({kwargs})", f"    print({what!r}, 'ran')",
                  "except NotImplementedError as exc:",
                  f"    print({what!r}, 'NotImplementedError', 'RoIAlign' in str(exc))"]
    out = subprocess.run([sys.executable, "-c", "\n".join(lines)], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, f"{adapter}: rc {out.returncode}\n{out.stdout}\n{out.stderr[-2000:]}"
    for what in _CRASHING_ROI_ALIGN_CALLS:
        assert f"{what} NotImplementedError True" in out.stdout, (what, out.stdout)


def test_torchvision_adapter_refuses_roi_align_inputs_that_crash_the_kernel():
    _adapter_roi_align_survives("torchvision_adapter", _env(OMP_NUM_THREADS="1"))


def test_detectron2_adapter_refuses_roi_align_inputs_that_crash_the_kernel():
    if not _detectron2_importable():
        pytest.skip("detectron2 is not importable: set DETECTRON2_PATH (or PYTHONPATH) to a "
                    "detectron2 source checkout and install fvcore, omegaconf to run this")
    _adapter_roi_align_survives("detectron2_adapter", _env(OMP_NUM_THREADS="1"))


def test_both_adapters_share_one_roi_align_guard():
    """One guard for every adapter over torchvision's RoIAlign kernel, not a copy each."""
    for name in ("torchvision_adapter.py", "detectron2_adapter.py"):
        text = (ROOT / "conformance" / "adapters" / name).read_text(encoding="utf-8")
        assert "from conformance.adapters.torchvision_kernels import refuse_crashing_roi_align" in text
        assert "input.dim() != 4" not in text, f"{name} keeps its own copy of the guard"


# --------------------------------------------------------------------------- probe
def test_probe_reports_an_empty_call_refused_as_not_implemented():
    """VAL-4's empty form: NotImplementedError (an option the implementation lacks, such
    as detectron2's map_rois_to_levels(mapping='mmdet')) is not implemented, as in the
    dtype and non-contiguous forms, not an error."""
    import types

    from conformance.probe import TABLE, getter, probe_every_call

    entry = next(e for e in TABLE if e.name == "map_rois_to_levels")

    def map_rois_to_levels(boxes, mapping="detectron2", min_level=2, max_level=5):
        if mapping != "detectron2":
            raise NotImplementedError("only its own mapping")
        return boxes[:, 0].long()

    fake = types.SimpleNamespace(map_rois_to_levels=map_rois_to_levels)
    outcomes = probe_every_call(entry, getter(fake))
    empty = [o for o in outcomes if o.what == "empty"]
    assert [o.status for o in empty] == ["not_implemented"], empty


@pytest.mark.parametrize("input_shape, size, scale", [((3, 8, 8), (2, 2), 1.0), ((1, 3, 8, 8), (-8, 2), 1.0),
                                                      ((1, 3, 8, 8), (2, 2), float("nan"))])
def test_mmcv_stub_roi_align_refuses_inputs_that_crash_torchvisions_kernel(input_shape, size, scale):
    """``--impl=mmdet``'s VAL-1 probe of roi_align once segfaulted the whole run: the
    mmcv stub passed a 3-D input (or a negative size, a NaN scale) to torchvision's
    native RoIAlign. It now reports those calls as not implemented, as the torchvision
    adapter does."""
    import torch

    from conformance.adapters import mmcv_ops_stub

    rois = torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0]])
    output = torch.zeros(1, 3, 2, 2)
    with pytest.raises(NotImplementedError, match="crashes the process"):
        mmcv_ops_stub._roi_align_forward(torch.zeros(input_shape), rois, output, None, None, size[0],
                                         size[1], scale, 2, 1, True)
