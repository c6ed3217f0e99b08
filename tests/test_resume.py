"""Losing nothing: Ctrl-C / SIGTERM / kill -9 at any moment, resumed, end bit-identical.

The runs use the stand-in detector of ``test_train`` (milliseconds per step, a
``delay`` per step so a signal can land mid-run) on a 12-image synthetic set: 3 steps
per epoch x 3 epochs. Signals go to real subprocesses; the resumes run in-process
(the same ``main``), which keeps the file cheap. ``DETSPEC_LONG_TESTS=1`` adds
many more random kill moments (see README, "Tests").
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from reference.data import SyntheticShapesConfig, ensure_synthetic_dataset
from reference.train import main

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent
STANDIN = "test_train:build_standin"
STEPS = list(range(1, 10))  # 3 epochs x 3 steps


@pytest.fixture(autouse=True)
def _importable_standin(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS_DIR))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    config = SyntheticShapesConfig(image_size=48, num_train=12, num_val=4,
                                   object_size=(12, 24), objects=(1, 2))
    return ensure_synthetic_dataset(config, cache_dir=tmp_path_factory.mktemp("cache"))


def _argv(data: Path, out: Path, *extra: str, workers: int = 0) -> list[str]:
    return ["--model", STANDIN, "--data-path", str(data), "--output-dir", str(out),
            "--min-size", "48", "--max-size", "48", "--batch-size", "4", "--workers",
            str(workers), "--device", "cpu", "--lr", "0.01", "--warmup-iters", "2",
            "--print-freq", "1", "--epochs", "3", "--threads", "1", "--no-eval", *extra]


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _weights(out: Path) -> dict:
    return torch.load(out / "checkpoint.pth", weights_only=True)["model"]


@pytest.fixture(scope="module")
def reference_weights(data, tmp_path_factory) -> dict:
    """An uninterrupted run with --workers 0."""
    sys.path.insert(0, str(TESTS_DIR))
    try:
        out = tmp_path_factory.mktemp("uninterrupted")
        assert main(_argv(data, out)) == 0
    finally:
        sys.path.remove(str(TESTS_DIR))
    return _weights(out)


def _assert_identical(weights: dict, reference: dict) -> None:
    assert weights.keys() == reference.keys()
    for key in reference:
        assert torch.equal(weights[key], reference[key]), key


def _signal_mid_run(data: Path, out: Path, sig: int, after_steps: int, *extra: str,
                    workers: int = 0, group: bool = False,
                    settle: float = 0.0) -> subprocess.CompletedProcess:
    """Start a training subprocess and send ``sig`` once it logged ``after_steps`` steps
    (0: as soon as it started), ``settle`` seconds later; ``group``: to its whole process
    group (the DataLoader workers too), as a terminal's Ctrl-C and many schedulers'
    SIGTERM do."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), str(REPO)]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "reference.train",
           *_argv(data, out, "--model-override", "delay=0.25", *extra, workers=workers)]
    proc = subprocess.Popen(cmd, env=env, cwd=out.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    log = out / "log.jsonl"
    deadline = time.monotonic() + 240
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            logged = log.read_text().count('"type": "step"') if log.is_file() else 0
            if logged >= after_steps and (after_steps or log.is_file()):
                time.sleep(settle)
                if group:
                    os.killpg(proc.pid, sig)
                else:
                    proc.send_signal(sig)
                break
            time.sleep(0.02)
        _, stderr = proc.communicate(timeout=240)
    finally:
        try:  # orphaned DataLoader workers of a kill -9
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(cmd, proc.returncode, "", stderr)


def _resume_and_check(data: Path, out: Path, reference: dict, workers: int) -> None:
    """Resume with --resume auto (which also covers a kill before any checkpoint)."""
    assert main(_argv(data, out, "--resume", "auto", workers=workers)) == 0
    _assert_identical(_weights(out), reference)
    steps = [e["step"] for e in _log(out) if e["type"] == "step"]
    assert steps == STEPS  # no step twice, none missing


# --------------------------------------------------------------------------- signals
@pytest.mark.parametrize("sig, workers, resume_workers, group, after", [
    (signal.SIGINT, 2, 0, True, None),  # Ctrl-C: the terminal signals the process group
    (signal.SIGTERM, 0, 2, False, None),
    # A scheduler's SIGTERM to the group, workers included, while the main process is
    # inside a forward (0.1 s into the stand-in's 0.25 s; step 5's batch is prefetched):
    # a worker dying of it made torch raise "DataLoader worker ... killed by signal"
    # there, a traceback instead of the save.
    (signal.SIGTERM, 2, 0, True, 4),
])
def test_a_signal_saves_the_current_step_prints_the_resume_command_and_resumes_exactly(
        data, tmp_path, reference_weights, sig, workers, resume_workers, group, after):
    out = tmp_path / "run"
    settle = 0.1 if after else 0.0
    after = after or random.Random(sig).randint(1, 7)  # mid-epoch for most draws
    proc = _signal_mid_run(data, out, sig, after, workers=workers, group=group, settle=settle)
    assert proc.returncode == 128 + sig, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "DataLoader worker" not in proc.stderr, \
        proc.stderr[-2000:]
    assert proc.stderr.count("interrupted") == 1 and "\n\n" not in proc.stderr, \
        proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"interrupted by {signal.Signals(sig).name}") and \
        f"resume with: python -m reference.train --resume {out}" in last, proc.stderr
    checkpoint = torch.load(out / "checkpoint.pth", weights_only=True)
    logged = [e for e in _log(out) if e["type"] == "step"]
    assert checkpoint["step"] == logged[-1]["step"] >= after  # saved at the current step
    assert _log(out)[-1]["type"] == "interrupted"
    _resume_and_check(data, out, reference_weights, resume_workers)


def test_kill_9_resumes_from_the_last_periodic_checkpoint_exactly(data, tmp_path,
                                                                  reference_weights):
    out = tmp_path / "run"
    proc = _signal_mid_run(data, out, signal.SIGKILL, 5, "--checkpoint-every", "2", workers=2)
    assert proc.returncode == -signal.SIGKILL
    saved = torch.load(out / "checkpoint.pth", weights_only=True)
    assert saved["step"] == 4 and (saved["epoch"], saved["epoch_step"]) == (1, 1)
    assert max(e["step"] for e in _log(out) if e["type"] == "step") >= 5  # steps to drop
    _resume_and_check(data, out, reference_weights, 0)


@pytest.mark.skipif(os.environ.get("DETSPEC_LONG_TESTS") != "1",
                    reason="set DETSPEC_LONG_TESTS=1 for many random kill moments")
@pytest.mark.slow
@pytest.mark.parametrize("trial", range(6))
def test_random_kills_of_every_kind_resume_bit_identical(data, tmp_path, reference_weights,
                                                         trial):
    rng = random.Random(trial)
    out = tmp_path / "run"
    workers = trial % 2 * 2
    for kill in range(2):  # two interruptions in one run
        sig = rng.choice([signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
        extra = ["--resume", "auto"] + (["--checkpoint-every", "3"] if sig == signal.SIGKILL
                                        else [])
        _signal_mid_run(data, out, sig, rng.randint(0, 8), *extra, workers=workers,
                        group=rng.random() < 0.5)
    _resume_and_check(data, out, reference_weights, 2 - workers)


# --------------------------------------------------------------------------- in-process
def test_workers_do_not_change_the_result(data, tmp_path, reference_weights):
    assert main(_argv(data, tmp_path / "w2", workers=2)) == 0
    _assert_identical(_weights(tmp_path / "w2"), reference_weights)


def test_checkpoint_every_n_steps_saves_mid_epoch(data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setenv("STANDIN_INTERRUPT_AFTER", "5")  # a simulated crash in step 6
    with pytest.raises(KeyboardInterrupt):
        main(_argv(data, out, "--checkpoint-every", "2"))
    saved = torch.load(out / "checkpoint.pth", weights_only=True)
    assert (saved["step"], saved["epoch"], saved["epoch_step"]) == (4, 1, 1)


def test_resume_takes_the_checkpoint_arguments(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_argv(data, out, "--epochs", "1")) == 0
    # Only --resume (and --model, to trust the test's own builder): same data and sizes.
    assert main(["--resume", str(out), "--model", STANDIN, "--epochs", "2"]) == 0
    err = capsys.readouterr().err
    assert "resuming with --epochs 2 instead of the checkpoint's 1" in err
    start = [e for e in _log(out) if e["type"] == "start"][-1]
    assert start["args"]["data_path"] == str(data) and start["args"]["min_size"] == 48
    assert [e["step"] for e in _log(out) if e["type"] == "step"] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("flag", [["--min-size", "64"], ["--data-path", "elsewhere"],
                                  ["--model", "retinanet"], ["--batch-size", "2"]])
def test_resume_refuses_flags_that_change_data_model_or_sizes(data, tmp_path, capsys, flag):
    out = tmp_path / "run"
    assert main(_argv(data, out, "--epochs", "1")) == 0
    capsys.readouterr()
    assert main(["--resume", str(out / "checkpoint.pth"), *flag]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --resume") and flag[0] in err and "Traceback" not in err


def test_resume_of_a_custom_builder_needs_it_named_on_the_command_line(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_argv(data, out, "--epochs", "1")) == 0
    capsys.readouterr()
    assert main(["--resume", str(out)]) == 2
    assert f"(--model {STANDIN})" in capsys.readouterr().err


def test_resume_auto_starts_afresh_without_a_checkpoint_and_a_missing_one_is_an_error(
        data, tmp_path, capsys):
    out = tmp_path / "fresh"
    assert main(_argv(data, out, "--epochs", "1", "--resume", "auto")) == 0
    assert "starting a new run" in capsys.readouterr().err
    assert main(["--resume", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_evaluation_runs_after_the_epoch_checkpoint_is_saved(data, tmp_path, monkeypatch):
    import reference.train as train

    def crash(*args, **kwargs):
        raise RuntimeError("evaluation crashed")

    out = tmp_path / "run"
    argv = [a for a in _argv(data, out, "--epochs", "1") if a != "--no-eval"]
    with monkeypatch.context() as m:
        m.setattr(train, "evaluate_model", crash)
        with pytest.raises(RuntimeError, match="evaluation crashed"):
            main(argv)
    saved = torch.load(out / "checkpoint.pth", weights_only=True)
    assert (saved["epoch"], saved["step"], saved["evaluated"]) == (1, 3, False)
    # The resumed run does the evaluation the crash cut short, and logs the epoch once.
    assert main(argv + ["--resume", "auto"]) == 0
    epochs = [e for e in _log(out) if e["type"] == "epoch"]
    assert len(epochs) == 1 and len(epochs[0]["coco"]) == 12
    assert torch.load(out / "checkpoint.pth", weights_only=True)["evaluated"]


def test_a_divergence_raised_inside_the_detector_goes_through_the_non_finite_handler(
        data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_argv(data, out, "--model-override", "fpe_after=4")) == 1
    err = capsys.readouterr().err
    assert "non-finite predictions" in err and "Last good checkpoint kept" in err
    assert _log(out)[-1]["type"] == "nonfinite"
    assert torch.load(out / "checkpoint.pth", weights_only=True)["step"] == 3


def test_readme_says_what_a_group_signal_and_torchrun_print():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert "python -m torch.distributed.run --nproc_per_node=2 -m reference.train" in text
    assert "whole process group got the signal" in text and "SignalException" in text
