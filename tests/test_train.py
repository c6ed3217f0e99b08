"""Training loop, schedule, checkpoints, resume, torchrun and the CLIs around them.

The runs use a stand-in detector defined here (``build_standin``, reachable as
``--model test_train:build_standin`` with ``tests/`` on PYTHONPATH) that honours the
detector interface of ``reference.detectors`` but costs milliseconds per step:
one conv, global pooling, one box and one class per image.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch
from torch import nn

from reference.checkpoint import load_model_from_checkpoint, save_checkpoint
from reference.data import SyntheticShapesConfig, ensure_synthetic_dataset
from reference.train import Schedule, build_parser, lr_factor, main

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent


# --------------------------------------------------------------------------- stand-in
class StandinDetector(nn.Module):
    """Predicts one box and class per image; losses against the image's first gt.

    nan_after / interrupt_after / fpe_after: after that many training forwards, return
    a NaN loss / raise KeyboardInterrupt (a simulated kill) / raise FloatingPointError
    (as the detectors' divergence check does). -1 disables. The environment variable
    STANDIN_INTERRUPT_AFTER overrides interrupt_after (a resumed run, which takes the
    checkpoint's overrides, can then run without it).
    delay: seconds to sleep per training forward (so a test can signal mid-run).
    """

    def __init__(self, num_classes: int, hidden: int = 8, nan_after: int = -1,
                 interrupt_after: int = -1, fpe_after: int = -1, delay: float = 0.0) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, hidden, 3, stride=4, padding=1), nn.BatchNorm2d(hidden), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.box = nn.Linear(hidden, 4)
        self.cls = nn.Linear(hidden, num_classes)
        self.nan_after, self.fpe_after, self.delay = nan_after, fpe_after, delay
        self.interrupt_after = int(os.environ.get("STANDIN_INTERRUPT_AFTER", interrupt_after))
        self.calls = 0

    def forward(self, images, targets=None):
        feats = torch.cat([self.features(im[None]) for im in images])  # (B, hidden)
        sizes = torch.tensor([[im.shape[-1], im.shape[-2]] * 2 for im in images],
                             dtype=torch.float32, device=feats.device)  # (B, 4)
        rel = torch.sigmoid(self.box(feats))  # (B, 4): cx, cy, w, h relative
        cxcy, wh = rel[:, :2], rel[:, 2:] / 2
        boxes = torch.cat([cxcy - wh / 2, cxcy + wh / 2], dim=1) * sizes  # (B, 4) xyxy
        logits = self.cls(feats)  # (B, C)
        if not self.training:
            scores, labels = logits.softmax(-1).max(-1)
            return [{"boxes": b[None], "scores": s[None], "labels": l[None]}
                    for b, s, l in zip(boxes, scores, labels)]
        self.calls += 1
        if self.calls - 1 == self.interrupt_after:
            raise KeyboardInterrupt("simulated kill")
        if self.calls - 1 == self.fpe_after:
            raise FloatingPointError("standin head: non-finite predictions during training")
        if self.delay:
            time.sleep(self.delay)
        gt_boxes = torch.stack([t["boxes"][0] for t in targets])  # (B, 4)
        gt_labels = torch.stack([t["labels"][0] for t in targets])  # (B,)
        loss_box = ((boxes - gt_boxes) / sizes).abs().mean()
        loss_cls = nn.functional.cross_entropy(logits, gt_labels)
        if self.calls - 1 >= self.nan_after >= 0:
            loss_cls = loss_cls * float("nan")
        return {"loss_cls": loss_cls, "loss_box": loss_box}


def build_standin(num_classes: int, **overrides) -> StandinDetector:
    return StandinDetector(num_classes, **overrides)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """A 12-train / 6-val image synthetic set at 48 px."""
    config = SyntheticShapesConfig(image_size=48, num_train=12, num_val=6,
                                   object_size=(12, 24), objects=(1, 2))
    return ensure_synthetic_dataset(config, cache_dir=tmp_path_factory.mktemp("cache"))


def _argv(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--model", "test_train:build_standin", "--data-path", str(data),
            "--output-dir", str(out), "--min-size", "48", "--max-size", "48",
            "--batch-size", "4", "--workers", "0", "--device", "cpu", "--lr", "0.01",
            "--warmup-iters", "2", "--print-freq", "1", *extra]


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.fixture(autouse=True)
def _importable_standin(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS_DIR))


# --------------------------------------------------------------------------- schedule
def test_warmup_ramps_linearly_from_warmup_factor_to_one():
    s = Schedule(steps_per_epoch=10, epochs=3, warmup_iters=4, warmup_factor=0.2)
    assert lr_factor(0, s) == pytest.approx(0.2)
    assert lr_factor(2, s) == pytest.approx(0.6)
    assert lr_factor(4, s) == pytest.approx(1.0)


def test_multistep_multiplies_by_gamma_at_each_listed_epoch():
    s = Schedule(steps_per_epoch=10, epochs=26, lr_steps=(16, 22), gamma=0.1)
    assert lr_factor(159, s) == pytest.approx(1.0)
    assert lr_factor(160, s) == pytest.approx(0.1)
    assert lr_factor(220, s) == pytest.approx(0.01)


def test_cosine_goes_from_one_to_zero_through_one_half():
    s = Schedule(steps_per_epoch=10, epochs=2, kind="cosine")
    assert lr_factor(0, s) == pytest.approx(1.0)
    assert lr_factor(10, s) == pytest.approx(0.5)
    assert lr_factor(20, s) == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------------- command line
def test_help_lists_the_torchvision_style_flags(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--data-path", "--epochs", "--lr-steps", "--aspect-ratio-group-factor",
                 "--weights-backbone", "--resume", "--amp", "--clip-grad", "--optimizer",
                 "--lr-schedule", "--warmup-iters", "--workers", "--seed", "--output-dir"):
        assert flag in text


def test_amp_on_cpu_is_a_clear_usage_error(tiny_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(_argv(tiny_data, tmp_path, "--amp"))
    assert exc.value.code == 2
    assert "--amp needs a CUDA device" in capsys.readouterr().err


def test_missing_annotation_file_stops_with_a_message_naming_it(tmp_path, capsys):
    code = main(["--model", "test_train:build_standin", "--train-ann", str(tmp_path / "no.json"),
                 "--train-images", str(tmp_path), "--val-ann", str(tmp_path / "no.json"),
                 "--val-images", str(tmp_path), "--output-dir", str(tmp_path / "out"),
                 "--device", "cpu"])
    assert code == 2
    assert "no.json" in capsys.readouterr().err


def test_named_backbone_weights_give_a_clear_offline_error(tiny_data, tmp_path, capsys,
                                                          monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    code = main(_argv(tiny_data, tmp_path / "out", "--epochs", "1",
                      "--weights-backbone", "ResNet50_Weights.IMAGENET1K_V1"))
    err = capsys.readouterr().err
    assert code == 2
    assert "never downloads" in err and "download.pytorch.org" in err


def test_local_backbone_weights_file_is_loaded(tiny_data, tmp_path, capsys):
    donor = build_standin(4)
    with torch.no_grad():
        donor.features[0].weight.fill_(0.125)
    torch.save(donor.state_dict(), tmp_path / "backbone.pth")
    out = tmp_path / "out"
    assert main(_argv(tiny_data, out, "--epochs", "1", "--lr", "0", "--no-eval",
                      "--weights-backbone", str(tmp_path / "backbone.pth"))) == 0
    assert "'loaded': 11" in capsys.readouterr().err
    model, _ = load_model_from_checkpoint(out / "checkpoint.pth",
                                          trusted_builder="test_train:build_standin")
    # lr 0 and no weight decay effect: the loaded values survive training
    assert torch.allclose(model.features[0].weight, torch.full_like(model.features[0].weight,
                                                                     0.125))


# --------------------------------------------------------------------------- training
def test_a_few_steps_write_log_checkpoint_curves_and_coco_stats(tiny_data, tmp_path):
    out = tmp_path / "run"
    assert main(_argv(tiny_data, out, "--epochs", "2")) == 0
    log = _log(out)
    steps = [e for e in log if e["type"] == "step"]
    epochs = [e for e in log if e["type"] == "epoch"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4, 5, 6]  # 12 images / 4 per step x 2
    assert all(math.isfinite(e["loss"]) and e["images_per_s"] > 0 for e in steps)
    assert set(steps[0]["losses"]) == {"loss_cls", "loss_box"}
    assert [e["epoch"] for e in epochs] == [0, 1]
    assert len(epochs[-1]["coco"]) == 12 and "AP" in epochs[-1]["coco"]
    checkpoint = torch.load(out / "checkpoint.pth", weights_only=False)
    assert (checkpoint["epoch"], checkpoint["step"]) == (2, 6)
    assert checkpoint["class_names"] == ["circle", "square", "triangle", "cross"]
    if find_spec("matplotlib") is not None or os.environ.get("CI"):  # a dependency
        from PIL import Image
        with Image.open(out / "curves.png") as curves:  # reference.visualize.draw_curves
            assert (curves.format, curves.size) == ("PNG", (1500, 460))
    assert not list(out.glob("*.tmp*"))  # atomic writes leave no temporaries


def test_resume_after_a_kill_ends_with_the_same_steps_as_an_uninterrupted_run(tiny_data,
                                                                              tmp_path,
                                                                              monkeypatch):
    # Uninterrupted: 3 epochs x 3 steps.
    full = tmp_path / "full"
    assert main(_argv(tiny_data, full, "--epochs", "3", "--no-eval")) == 0
    # Killed in the middle of epoch 2 (after 4 steps: 3 of epoch 1 + 1 of epoch 2).
    cut = tmp_path / "cut"
    monkeypatch.setenv("STANDIN_INTERRUPT_AFTER", "4")
    with pytest.raises(KeyboardInterrupt):
        main(_argv(tiny_data, cut, "--epochs", "3", "--no-eval"))
    monkeypatch.delenv("STANDIN_INTERRUPT_AFTER")
    assert torch.load(cut / "checkpoint.pth", weights_only=True)["epoch"] == 1
    # Resumed from the last checkpoint: epochs 2 and 3 run in full.
    assert main(_argv(tiny_data, cut, "--epochs", "3", "--no-eval",
                      "--resume", str(cut / "checkpoint.pth"))) == 0
    a = torch.load(full / "checkpoint.pth", weights_only=True)
    b = torch.load(cut / "checkpoint.pth", weights_only=True)
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (3, 9)
    log = _log(cut)
    assert [e["epoch"] for e in log if e["type"] == "epoch"] == [0, 1, 2]  # none lost/repeated
    assert [e["step"] for e in log if e["type"] == "step"] == list(range(1, 10))
    # Same data order, schedule and per-step seeds: bit-identical weights.
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_non_finite_loss_stops_with_a_message_and_keeps_the_last_checkpoint(tiny_data,
                                                                            tmp_path, capsys):
    out = tmp_path / "nan"
    code = main(_argv(tiny_data, out, "--epochs", "3", "--no-eval",
                      "--model-override", "nan_after=4"))
    err = capsys.readouterr().err
    assert code == 1
    assert "loss is nan at epoch 1 step 4" in err and "checkpoint.pth" in err
    checkpoint = torch.load(out / "checkpoint.pth", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["step"]) == (1, 3)
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values()
               if v.is_floating_point())
    assert _log(out)[-1]["type"] == "nonfinite"


def test_torchrun_with_two_cpu_processes_trains_with_ddp(tiny_data, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), str(REPO),
                                                         os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--standalone", "-m", "reference.train",
           *_argv(tiny_data, out, "--epochs", "2")]
    # Own process group, so a hang can be cleaned up with the workers, not just the launcher.
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-3000:]
    log = _log(out)
    start = next(e for e in log if e["type"] == "start")
    assert start["world_size"] == 2
    # 12 images over 2 ranks = 6 per rank = 2 steps of 4 (ceil) per epoch
    assert start["steps_per_epoch"] == 2
    steps = [e for e in log if e["type"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4]  # rank 0 alone logs
    assert all(e["images_per_s"] > 0 for e in steps)
    checkpoint = torch.load(out / "checkpoint.pth", weights_only=False)
    assert (checkpoint["epoch"], checkpoint["step"]) == (2, 4)
    assert not any(k.startswith("module.") for k in checkpoint["model"])


# --------------------------------------------------------------------------- other CLIs
def test_evaluate_and_predict_cli_use_the_checkpoint(tiny_data, tmp_path, capsys):
    from reference import evaluate, predict

    out = tmp_path / "run"
    assert main(_argv(tiny_data, out, "--epochs", "1", "--no-eval")) == 0
    capsys.readouterr()
    stats_file = tmp_path / "stats.json"
    assert evaluate.main(["--checkpoint", str(out / "checkpoint.pth"),
                          "--model", "test_train:build_standin",
                          "--json-out", str(stats_file)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("Average Precision") == 6 and printed.count("Average Recall") == 6
    stats = json.loads(stats_file.read_text())
    assert len(stats) == 13 and [r["name"] for r in stats["per_category"]] == [
        "circle", "square", "triangle", "cross"]
    image = tiny_data / "val2017" / "000000.png"
    drawn = tmp_path / "drawn.png"
    assert predict.main(["--checkpoint", str(out / "checkpoint.pth"),
                         "--model", "test_train:build_standin", "--image", str(image),
                         "--out", str(drawn), "--score-threshold", "0"]) == 0
    from PIL import Image
    with Image.open(drawn) as im, Image.open(image) as orig:
        assert orig.size == (48, 48) and im.width == 512  # enlarged to --min-side 512


def test_checkpoint_is_replaced_atomically(tmp_path):
    path = tmp_path / "c.pth"
    save_checkpoint({"a": 1}, path)
    save_checkpoint({"a": 2}, path)
    assert torch.load(path)["a"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["c.pth"]


def test_real_small_retinanet_trains_a_few_steps_and_evaluates(tiny_data, tmp_path):
    detectors = pytest.importorskip("reference.detectors")
    if "retinanet" not in detectors.DETECTOR_NAMES:
        pytest.skip("reference.detectors has no retinanet yet")
    out = tmp_path / "retina"
    argv = _argv(tiny_data, out, "--epochs", "1", "--model-override", "fpn_channels=16",
                 "--model-override", "head_channels=16", "--lr", "0.001")
    argv[argv.index("test_train:build_standin")] = "retinanet"
    assert main(argv) == 0
    epoch = next(e for e in _log(out) if e["type"] == "epoch")
    assert epoch["step"] == 3 and len(epoch["coco"]) == 12
    model, checkpoint = load_model_from_checkpoint(out / "checkpoint.pth")
    assert checkpoint["model_overrides"] == {"fpn_channels": 16, "head_channels": 16}


def test_a_real_divergence_stops_through_the_non_finite_handler(tiny_data, tmp_path, capsys):
    out = tmp_path / "diverged"
    argv = _argv(tiny_data, out, "--epochs", "1", "--model-override", "fpn_channels=16",
                 "--model-override", "head_channels=16", "--optimizer", "sgd", "--lr", "1e6",
                 "--warmup-iters", "0", "--no-eval")
    argv[argv.index("test_train:build_standin")] = "retinanet"
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "training has diverged" in err and "Last good checkpoint kept" in err
    record = _log(out)[-1]
    assert record["type"] == "nonfinite" and record["step"] >= 1


# --------------------------------------------------------------------------- files from others
def _copy_data(tiny_data: Path, tmp_path: Path, edit=None) -> Path:
    """A copy of the tiny set whose train and val JSON pass through ``edit``."""
    import shutil
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    for split in ("train2017", "val2017"):
        path = root / "annotations" / f"instances_{split}.json"
        coco = json.loads(path.read_text())
        if edit:
            edit(coco)
        path.write_text(json.dumps(coco))
    return root


def test_coco_files_without_iscrowd_and_area_train_and_evaluate(tiny_data, tmp_path, capsys):
    def strip(coco):
        for ann in coco["annotations"]:
            del ann["iscrowd"], ann["area"]
        coco["annotations"].append({"id": 999, "image_id": 1, "category_id": 77,
                                    "bbox": [1, 1, 9, 9]})

    data = _copy_data(tiny_data, tmp_path, strip)
    out = tmp_path / "run"
    assert main(_argv(data, out, "--epochs", "1")) == 0
    err = capsys.readouterr().err
    assert "train: dropped 1 annotations" in err and "1 unknown category" in err
    log = _log(out)
    start = next(e for e in log if e["type"] == "start")
    assert start["dropped_annotations"]["train"]["unknown_category"] == 1
    assert len(next(e for e in log if e["type"] == "epoch")["coco"]) == 12


def test_an_unreadable_image_mid_epoch_names_the_file_and_keeps_the_checkpoint(tiny_data,
                                                                             tmp_path, capsys):
    data = _copy_data(tiny_data, tmp_path)
    out = tmp_path / "run"
    assert main(_argv(data, out, "--epochs", "1")) == 0
    for image in (data / "train2017").glob("*.png"):
        image.write_bytes(b"\x89PNG garbage")
    capsys.readouterr()
    code = main(_argv(data, out, "--epochs", "2", "--workers", "2", "--resume", "auto"))
    err = capsys.readouterr().err.strip()
    assert code == 1 and "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith("error: cannot read image") and "train2017" in last and \
        "Last checkpoint kept" in last
    assert torch.load(out / "checkpoint.pth", weights_only=True)["epoch"] == 1
    import multiprocessing
    assert not multiprocessing.active_children()  # the DataLoader workers are gone


# --------------------------------------------------------------------------- short runs
def _without(argv: list[str], *flags: str) -> list[str]:
    """``argv`` without the given flags and their values."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in flags:
            skip = True
        else:
            out.append(a)
    return out


def test_defaults_fit_a_short_run_on_small_images_of_ones_own(tiny_data, tmp_path, capsys):
    # 12 images of 48x48 px given as one's own COCO data, 3 steps per epoch.
    out = tmp_path / "run"
    argv = _without(_argv(tiny_data, out, "--epochs", "2", "--no-eval", "--threads", "1"),
                    "--min-size", "--max-size", "--warmup-iters", "--print-freq")
    assert main(argv) == 0
    err = capsys.readouterr().err
    log = _log(out)
    start = next(e for e in log if e["type"] == "start")
    # sizes picked from the data (not upscaled to 800 px), and said so
    assert (start["min_size"], start["max_size"]) == (48, 48)
    assert "image sizes picked from the data: --min-size 48 --max-size 48" in err
    # warmup scaled to the run: min(1000, steps per epoch - 1), over within epoch 1
    assert start["warmup_iters"] == 2
    steps = [e for e in log if e["type"] == "step"]
    assert steps[-1]["lr"] == pytest.approx(0.01 * lr_factor(5, Schedule(3, 2, "cosine")))
    # the first step of each epoch is logged at once, though --print-freq 20 > 3 steps
    assert [e["step"] for e in steps] == [1, 3, 4, 6]
    assert start["threads"] == 1 and torch.get_num_threads() == 1


def test_big_images_keep_cocos_sizes_and_say_so(tiny_data, tmp_path, capsys):
    from reference.train import _image_sizes, build_parser
    from types import SimpleNamespace

    train_set = SimpleNamespace(records=[{"width": 640, "height": 480}] * 3)
    args = build_parser().parse_args([])
    assert _image_sizes(args, False, train_set)[:2] == (800, 1333)
    assert "COCO's defaults; median train image 640x480" in _image_sizes(args, False,
                                                                          train_set)[2]
    small = SimpleNamespace(records=[{"width": 192, "height": 160}] * 3)
    assert _image_sizes(args, False, small)[:2] == (160, 192)
    assert _image_sizes(build_parser().parse_args(["--min-size", "320"]), False,
                        small) == (320, 1333, "")


def test_a_terminal_gets_a_tqdm_progress_bar_and_a_pipe_the_line_log(tiny_data, tmp_path,
                                                                     capsys, monkeypatch):
    pytest.importorskip("tqdm")
    import reference.train as train

    monkeypatch.setattr(train.RunLog, "__init__", _tty_runlog_init)
    assert main(_argv(tiny_data, tmp_path / "tty", "--epochs", "1", "--no-eval")) == 0
    err = capsys.readouterr().err
    assert "epoch 1/1: 100%" in err and "3/3" in err and "loss" in err
    assert "[    1/3]" not in err  # no line log on a terminal
    monkeypatch.undo()
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    assert main(_argv(tiny_data, tmp_path / "pipe", "--epochs", "1", "--no-eval")) == 0
    err = capsys.readouterr().err
    assert "epoch 1/1 [    1/3] loss" in err and "100%" not in err


def _tty_runlog_init(self, output_dir, enabled):
    self.enabled, self.path, self.tty = enabled, output_dir / "log.jsonl", True


def test_sync_bn_auto_follows_the_model_not_its_name():
    from reference.detectors import build_detector
    from reference.train import _wants_sync_bn

    assert _wants_sync_bn("auto", build_detector("rtmdet", num_classes=2))
    assert not _wants_sync_bn("auto", build_detector("retinanet", num_classes=2))
    renamed = build_standin(2)  # e.g. --model mylib:rtmdet_like, a plain BatchNorm model
    assert not _wants_sync_bn("auto", renamed) and _wants_sync_bn("on", renamed)
    assert not _wants_sync_bn("off", build_detector("rtmdet", num_classes=2))

