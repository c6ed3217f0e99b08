"""Pictures a learner reads: training curves, predictions, the dataset browser.

Checked by content: the figure's axes, legends and values (matplotlib artists), the
PNG's own pixels (each class colour present, colours distinct), text sizes. The CLI
ones run as subprocesses on tiny inputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent

# matplotlib is a dependency (pyproject); a checkout without it skips here, CI never does.
needs_matplotlib = pytest.mark.skipif(
    find_spec("matplotlib") is None and not os.environ.get("CI"),
    reason="matplotlib is not installed here (a dependency: pip install -e .)")


def _run(*argv: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, *argv], cwd=cwd or REPO, env=env, text=True,
                          capture_output=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def _has_colour(pixels: np.ndarray, rgb, at_least: int = 20) -> bool:
    return int((pixels == np.asarray(rgb, dtype=np.uint8)).all(-1).sum()) >= at_least


# --------------------------------------------------------------------------- curves
def _log_records(epochs: int = 3, steps_per_epoch: int = 4) -> list[dict]:
    records = [{"type": "start", "args": {"model": "retinanet", "epochs": epochs},
                "train_images": 32, "steps_per_epoch": steps_per_epoch}]
    step = 0
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):
            step += 1
            records.append({"type": "step", "epoch": epoch, "step": step, "lr": 1e-3 * step / 12,
                            "loss": 3.0 - 0.1 * step,
                            "losses": {"loss_cls": 2.0 - 0.05 * step,
                                       "loss_bbox": 1.0 - 0.05 * step}})
        ap = 0.2 + 0.25 * epoch
        records.append({"type": "epoch", "epoch": epoch, "step": step,
                        "coco": {"AP": ap, "AP50": ap + 0.1, "AP75": ap - 0.05}})
    return records


@needs_matplotlib
def test_curves_show_every_loss_component_lr_and_ap_values_with_axis_titles():
    from reference.visualize import draw_curves

    records = _log_records()
    fig = draw_curves(records)
    ax_loss, ax_lr, ax_ap = fig.axes
    assert (ax_loss.get_xlabel(), ax_loss.get_ylabel()) == ("training step", "loss")
    assert (ax_lr.get_xlabel(), ax_lr.get_ylabel()) == ("training step", "learning rate")
    assert (ax_ap.get_xlabel(), ax_ap.get_ylabel()) == ("epoch", "AP")
    legend = [t.get_text() for t in ax_loss.get_legend().get_texts()]
    assert legend == ["total", "loss_bbox", "loss_cls", "epoch end"]
    lines = {line.get_label(): line for line in ax_loss.get_lines()}
    assert list(lines["loss_cls"].get_ydata()) == pytest.approx(
        [r["losses"]["loss_cls"] for r in records if r["type"] == "step"])
    lr_line = ax_lr.get_lines()[0]  # then the epoch-end lines
    assert list(lr_line.get_xdata()) == list(range(1, 13))
    assert max(lr_line.get_ydata()) == pytest.approx(1e-3)
    assert [t.get_text() for t in ax_ap.get_legend().get_texts()] == ["AP@[.5:.95]", "AP50",
                                                                      "AP75"]
    assert [t.get_text() for t in ax_ap.texts] == ["0.200", "0.450", "0.700"]
    for ax in fig.axes:  # ticks with labels on both axes
        fig.canvas.draw()
        assert [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert fig._suptitle.get_text() == "retinanet: 32 train images, 4 steps/epoch x 3 epochs"


@needs_matplotlib
def test_curves_without_evaluation_say_so_and_a_resumed_step_counts_once():
    from reference.visualize import draw_curves

    records = [r for r in _log_records() if r["type"] != "epoch"]
    records.append({**records[2], "loss": 9.0})  # step 2 logged again later: that one counts
    fig = draw_curves(records)
    ax_loss, _, ax_ap = fig.axes
    total = ax_loss.get_lines()[0]
    assert list(total.get_xdata()) == list(range(1, 13))
    assert list(total.get_ydata())[:3] == pytest.approx([2.9, 9.0, 2.7])
    assert "no evaluation logged" in ax_ap.texts[0].get_text()


@needs_matplotlib
def test_curves_cli_writes_a_png_with_the_curve_colours(tmp_path):
    from reference.visualize import PALETTE

    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in _log_records()) + "{torn line")
    out = tmp_path / "curves.png"
    done = _run("-m", "reference.visualize", "curves", "--log", str(tmp_path), "--out", str(out))
    assert "wrote" in done.stdout
    pixels = _pixels(out)
    assert pixels.shape == (460, 1500, 3)
    for rgb in [(0, 0, 0), PALETTE[0], PALETTE[1], PALETTE[2]]:  # total, components/AP, lr
        assert _has_colour(pixels, rgb), rgb
    missing = _run("-m", "reference.visualize", "curves", "--log", str(tmp_path / "nope"),
                   "--out", str(out), check=False)
    assert missing.returncode == 2 and "no such file" in missing.stderr
