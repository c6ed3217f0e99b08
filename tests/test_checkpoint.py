"""Checkpoints from anyone: loaded as data only, verified, and refused in one clear line.

The files are made by a short stand-in run (``test_train.build_standin``) and then
tampered with the way an attacker or a bad disk would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reference import evaluate, predict
from reference.checkpoint import (
    CheckpointError,
    build_model,
    load_checkpoint,
    load_model_from_checkpoint,
    payload_digest,
    save_checkpoint,
)
from reference.data import SyntheticShapesConfig, ensure_synthetic_dataset
from reference.train import main as train_main

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent
STANDIN = "test_train:build_standin"
RESUME_FLAGS: list[str] = []  # the run's data flags, set by the ``run`` fixture


@pytest.fixture(autouse=True)
def _importable_standin(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS_DIR))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A one-epoch stand-in run on a tiny synthetic set; returns its output folder."""
    sys.path.insert(0, str(TESTS_DIR))
    try:
        config = SyntheticShapesConfig(image_size=48, num_train=8, num_val=2,
                                       object_size=(12, 24), objects=(1, 2))
        data = ensure_synthetic_dataset(config, cache_dir=tmp_path_factory.mktemp("cache"))
        out = tmp_path_factory.mktemp("run")
        RESUME_FLAGS[:] = ["--data-path", str(data), "--min-size", "48", "--max-size", "48",
                           "--batch-size", "4", "--workers", "0", "--device", "cpu"]
        assert train_main(["--model", STANDIN, "--output-dir", str(out), *RESUME_FLAGS,
                           "--epochs", "1", "--no-eval"]) == 0
    finally:
        sys.path.remove(str(TESTS_DIR))
    return out


def _tampered(run: Path, tmp_path: Path, **changes) -> Path:
    """The run's checkpoint with ``changes`` applied and a freshly computed digest
    (an attacker can always recompute it; the digest guards against accidents)."""
    state = torch.load(run / "checkpoint.pth", weights_only=True)
    state.update(changes)
    path = tmp_path / "tampered.pth"
    save_checkpoint(state, path)
    return path


def _all_clis_refuse(path: Path, capsys, needle: str, tmp_path: Path) -> None:
    """evaluate, predict and train --resume each exit 2 with one 'error:' line."""
    runs = {
        "evaluate": lambda: evaluate.main(["--checkpoint", str(path), "--model", STANDIN]),
        "predict": lambda: predict.main(["--checkpoint", str(path), "--model", STANDIN,
                                         "--image", str(_an_image(tmp_path)),
                                         "--out", str(tmp_path / "o.png")]),
        "train --resume": lambda: train_main(["--resume", str(path), "--model", STANDIN,
                                              *RESUME_FLAGS,
                                              "--output-dir", str(tmp_path / "resumed")]),
    }
    for name, call in runs.items():
        capsys.readouterr()
        assert call() == 2, name
        err = capsys.readouterr().err.strip()
        assert "Traceback" not in err, name
        last = err.splitlines()[-1]
        assert last.startswith("error:") and str(path) in last and needle in last, (name, err)


def _an_image(tmp_path: Path) -> Path:
    from PIL import Image
    path = tmp_path / "in.png"
    if not path.exists():
        Image.new("RGB", (48, 48), (90, 120, 30)).save(path)
    return path


# --------------------------------------------------------------------------- security
class _Payload:
    """Unpickling this creates ``marker``: proof that loading ran code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_payload_in_a_checkpoint_is_refused_and_never_run(run, tmp_path, capsys):
    marker = tmp_path / "pwned"
    state = torch.load(run / "checkpoint.pth", weights_only=True)
    state["extra"] = _Payload(marker)
    path = tmp_path / "evil.pth"
    torch.save(state, path)
    _all_clis_refuse(path, capsys, "other than tensors and plain data", tmp_path)
    assert not marker.exists()


def test_the_predict_command_refuses_a_pickle_payload(run, tmp_path):
    marker = tmp_path / "pwned"
    state = torch.load(run / "checkpoint.pth", weights_only=True)
    state["extra"] = _Payload(marker)
    torch.save(state, tmp_path / "evil.pth")
    proc = subprocess.run(
        [sys.executable, "-m", "reference.predict", "--checkpoint", str(tmp_path / "evil.pth"),
         "--image", str(_an_image(tmp_path)), "--out", str(tmp_path / "o.png")],
        capture_output=True, text=True, cwd=tmp_path,
        env={"PYTHONPATH": f"{REPO}:{TESTS_DIR}", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: checkpoint") and "Traceback" not in proc.stderr
    assert not marker.exists()


def test_a_model_name_from_the_file_is_never_imported(run, tmp_path, capsys, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "evilmod.py").write_text(
        f"open({str(marker)!r}, 'w').close()\ndef build(num_classes): raise SystemExit(9)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _tampered(run, tmp_path, model_name="evilmod:build")
    for call in (lambda: evaluate.main(["--checkpoint", str(path)]),
                 lambda: predict.main(["--checkpoint", str(path), "--image",
                                       str(_an_image(tmp_path)), "--out", str(tmp_path / "o.png")])):
        assert call() == 2
        err = capsys.readouterr().err
        assert "not one of" in err and "evilmod:build" in err
    assert not marker.exists()


def test_a_builder_named_by_the_user_is_allowed(run):
    model, checkpoint = load_model_from_checkpoint(run / "checkpoint.pth",
                                                   trusted_builder=STANDIN)
    assert checkpoint["model_name"] == STANDIN and not model.training


def test_build_model_refuses_module_function_names_unless_allowed():
    with pytest.raises(ValueError, match="expected one of"):
        build_model("os:system", 4, allow_builder=False)


# --------------------------------------------------------------------------- integrity
def test_one_flipped_byte_is_caught_by_the_digest(run, tmp_path, capsys):
    raw = bytearray((run / "checkpoint.pth").read_bytes())
    state = torch.load(run / "checkpoint.pth", weights_only=True)
    # Flip a byte inside the stored bytes of one weight, where the zip format itself
    # would not notice (the loader reads them as they are).
    weight = state["model"]["box.weight"].contiguous().view(torch.uint8).numpy().tobytes()
    at = bytes(raw).index(weight) + len(weight) // 2
    raw[at] ^= 0x10
    path = tmp_path / "flipped.pth"
    path.write_bytes(bytes(raw))
    _all_clis_refuse(path, capsys, "corrupt", tmp_path)


def test_non_finite_weights_are_refused(run, tmp_path, capsys):
    state = torch.load(run / "checkpoint.pth", weights_only=True)
    nan_model = {k: (torch.full_like(v, float("nan")) if v.is_floating_point() else v)
                 for k, v in state["model"].items()}
    path = _tampered(run, tmp_path, model=nan_model)
    _all_clis_refuse(path, capsys, "non-finite weights", tmp_path)


def test_the_digest_covers_every_entry_and_is_stable(run):
    state = load_checkpoint(run / "checkpoint.pth")
    assert payload_digest(state) == state["payload_sha256"]
    assert payload_digest({**state, "epoch": state["epoch"] + 1}) != state["payload_sha256"]
    assert payload_digest({**state, "args": {**state["args"], "lr": 2.0}}) != \
        state["payload_sha256"]


# --------------------------------------------------------------------------- bad files
@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "not_a_dict", "missing"])
def test_broken_checkpoints_give_one_line_naming_the_file(run, tmp_path, capsys, kind):
    path = tmp_path / f"{kind}.pth"
    raw = (run / "checkpoint.pth").read_bytes()
    needle = "truncated or not a torch checkpoint"
    if kind == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "garbage":
        path.write_bytes(bytes(range(256)) * 40)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "not_a_dict":
        torch.save([1, 2, 3], path)
        needle = "expected the dict"
    else:
        needle = "does not exist"
    _all_clis_refuse(path, capsys, needle, tmp_path)


def test_a_checkpoint_of_another_model_is_a_clear_error(run, tmp_path, capsys):
    weights = torch.load(run / "checkpoint.pth", weights_only=True)["model"]
    weights["head.conv.weight"] = weights.pop("box.weight")
    path = _tampered(run, tmp_path, model=weights)
    _all_clis_refuse(path, capsys, "does not fit the model", tmp_path)
    path = _tampered(run, tmp_path, model_name="retinanet")  # standin weights, other model
    for call in (evaluate.main, lambda argv: predict.main(
            argv + ["--image", str(_an_image(tmp_path)), "--out", str(tmp_path / "o.png")])):
        assert call(["--checkpoint", str(path)]) == 2
        assert "does not fit the model" in capsys.readouterr().err
    path = _tampered(run, tmp_path, num_classes=7)
    with pytest.raises(CheckpointError, match="another shape"):
        load_model_from_checkpoint(path, trusted_builder=STANDIN)
