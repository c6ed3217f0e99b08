"""Training: one flat loop with numbered steps, single process or torchrun + DDP.

    python -m reference.train                       # RetinaNet on the synthetic shapes
    python -m reference.train --model faster_rcnn --epochs 8
    python -m reference.train --data-path /data/coco --model retinanet_r50_fpn \\
        --epochs 26 --lr-steps 16 22 --aspect-ratio-group-factor 3 --lr 0.01 \\
        --optimizer sgd --weight-decay 1e-4 --lr-schedule multistep \\
        --weights-backbone ~/weights/resnet50-0676ba61.pth
    torchrun --nproc_per_node=2 -m reference.train --epochs 2

The command line follows torchvision's detection reference. What a run writes into
``--output-dir``:

    log.jsonl        one JSON object per logging step ({"type": "step", ...}),
                     per epoch ({"type": "epoch", ..., "coco": {12 stats}}) and per
                     event (start, resume, interrupted, nonfinite, end)
    checkpoint.pth   written atomically (tmp, fsync, os.replace) at the end of every
                     epoch (before its evaluation, and again after it), every
                     ``--checkpoint-every`` steps, and on Ctrl-C / SIGTERM (at the
                     current step); see ``reference.checkpoint``
    curves.png       loss per component, learning rate (per logging step) and COCO AP
                     per epoch, drawn from log.jsonl with matplotlib at the end

Resuming is exact: ``--resume DIR`` (or ``auto``) continues from the checkpoint's own
arguments, at the step it was saved, and ends bit-identical to an uninterrupted run
at the same thread count, whatever ``--workers``. Three things make that so: the
learning rate is a pure function of the global step (``lr_factor``); every image's
augmentation is drawn under its own seed, a pure function of (seed, epoch, index)
(``reference.data.EpochBatches``); and the model's own random draws (samplers) are
seeded at every step from (seed, rank, step). Steps a killed run logged after its
last checkpoint are removed from log.jsonl when it resumes, so no step appears twice.

Steps of one run (``main``):
 1) distributed setup (torchrun's env vars; gloo on CPU, nccl on CUDA)
 2) data: the dataset (synthetic by default), transforms, grouped batches
 3) model (``reference.detectors.build_detector``), optional backbone weights,
    SyncBN for RTMDet on CUDA, DDP
 4) optimizer; the learning rate is a pure function of the global step
    (``lr_factor``), which is what makes resuming exact
 5) resume, then for each epoch: train, checkpoint, evaluate (COCO bbox), checkpoint
 6) curves
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import hashlib
import random
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from reference.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    build_model,
    find_checkpoint,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from reference.data import (
    CocoDetection,
    DatasetError,
    EpochBatches,
    GroupedBatchSampler,
    SeededSamples,
    aspect_ratio_group_ids,
    build_transforms,
    collate_lists,
    load_coco,
    resolve_data_paths,
)
from reference.evaluate import evaluate_model, format_summary

__all__ = [
    "Schedule",
    "lr_factor",
    "NonFiniteLossError",
    "build_parser",
    "load_backbone_weights",
    "save_curves",
]

# (min_size, max_size) when --min-size is not given: the synthetic set's own 128 px,
# COCO's usual 800 / 1333 otherwise.
DEFAULT_SIZES = {"synthetic": (128, 128), "coco": (800, 1333)}
# Own data whose median shorter side is under 800 / UPSCALE_LIMIT trains at its own
# size instead: upscaling 192x160 images to 800 px costs 25x the memory and time and
# teaches nothing the small images do not show.
UPSCALE_LIMIT = 2.0

# Per-model changes to the command-line defaults (explicit flags still win). The
# small RTMDet (from scratch, soft-label assignment, no EMA) is still climbing
# after 5 epochs and its AP varies a lot from run to run there; 10 epochs at the
# same AdamW/cosine recipe settle it (bbox AP ~0.8 on the synthetic val set).
MODEL_TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "rtmdet": {"epochs": 10},
}


# --------------------------------------------------------------------------- schedule
@dataclasses.dataclass(frozen=True)
class Schedule:
    """Learning-rate schedule, in global optimiser steps.

    kind: "multistep" (multiply by ``gamma`` at each epoch in ``lr_steps``) or
        "cosine" (half cosine from 1 to 0 over all steps).
    warmup_iters / warmup_factor: the first ``warmup_iters`` steps ramp linearly
        from ``warmup_factor`` to 1 (multiplied into the main schedule).
    """

    steps_per_epoch: int
    epochs: int
    kind: str = "multistep"
    lr_steps: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_iters: int = 0
    warmup_factor: float = 0.001

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs


def lr_factor(step: int, schedule: Schedule) -> float:
    """Multiplier of the base learning rate at global step ``step`` (0-based)."""
    # 1) main schedule
    if schedule.kind == "cosine":
        progress = min(step / max(1, schedule.total_steps), 1.0)
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif schedule.kind == "multistep":
        epoch = step // max(1, schedule.steps_per_epoch)
        factor = schedule.gamma ** sum(epoch >= m for m in schedule.lr_steps)
    else:
        raise ValueError(f"lr schedule {schedule.kind!r}: expected multistep or cosine")
    # 2) linear warmup on top
    if step < schedule.warmup_iters:
        alpha = step / schedule.warmup_iters
        factor *= schedule.warmup_factor * (1 - alpha) + alpha
    return factor


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m reference.train",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train a detector of the reference (RetinaNet, Faster R-CNN, RTMDet). "
        "With no arguments: a small RetinaNet on the built-in synthetic shapes dataset "
        "(written once to $DETSPEC_CACHE or ~/.cache/detspec), evaluated with COCO "
        "bbox AP after every epoch. Multi-process: torchrun --nproc_per_node=N -m "
        "reference.train ...")
    d = p.add_argument_group("data (default: the built-in synthetic dataset)")
    d.add_argument("--data-path", default=None, help="COCO root with annotations/"
                   "instances_{train,val}2017.json, train2017/ and val2017/")
    d.add_argument("--train-ann", default=None, help="train COCO instances JSON")
    d.add_argument("--train-images", default=None, help="folder of the train images")
    d.add_argument("--val-ann", default=None, help="val COCO instances JSON")
    d.add_argument("--val-images", default=None, help="folder of the val images")
    d.add_argument("--min-size", type=int, default=None, help="shorter image side after "
                   "resizing (default: 128 synthetic; 800 otherwise, unless the data's median "
                   "shorter side is under 400: then the data's own size; printed at the start)")
    d.add_argument("--max-size", type=int, default=None, help="cap on the longer side "
                   "(default 128 synthetic, 1333 otherwise, or the data's median longer side)")
    d.add_argument("--aspect-ratio-group-factor", type=int, default=3,
                   help="batch images of similar width/height in 2k+2 groups; -1 turns it off")
    d.add_argument("--workers", type=int, default=2, help="data loading processes per rank")

    m = p.add_argument_group("model")
    m.add_argument("--model", default="retinanet", help="retinanet, faster_rcnn, rtmdet "
                   "(small CPU configs), retinanet_r50_fpn, faster_rcnn_r50_fpn, "
                   "rtmdet_tiny (upstream configs), or module:function for your own "
                   "builder taking num_classes=")
    m.add_argument("--model-override", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword passed to the model builder; VALUE is read as JSON if it "
                   "parses, else as a string (repeatable)")
    m.add_argument("--weights-backbone", default=None, metavar="PATH", help="backbone "
                   "weights: a local .pth file (a torchvision weights name such as "
                   "ResNet50_Weights.IMAGENET1K_V1 is used only if already in the torch "
                   "hub cache; nothing is downloaded)")
    m.add_argument("--sync-bn", choices=("auto", "on", "off"), default="auto",
                   help="SyncBatchNorm under DDP; auto = on for models whose class sets "
                   "sync_bn_under_ddp (RTMDet, as mmdet's configs) (CUDA only: "
                   "PyTorch has no CPU SyncBN)")

    o = p.add_argument_group("optimisation")
    # Defaults are tuned for the no-argument run (synthetic shapes, small RetinaNet
    # from scratch): AdamW 1e-3, wd 0.05, cosine over 5 epochs reaches bbox AP
    # ~0.8 on val. For COCO pass torchvision's recipe (--optimizer sgd --lr 0.01
    # --weight-decay 1e-4 --lr-schedule multistep --lr-steps 16 22 --epochs 26).
    o.add_argument("--epochs", type=int, default=5, help="epochs to train (rtmdet: 10, see "
                   "MODEL_TRAIN_DEFAULTS)")
    o.add_argument("--batch-size", type=int, default=8, help="images per step per process")
    o.add_argument("--optimizer", choices=("sgd", "adamw"), default="adamw")
    o.add_argument("--lr", type=float, default=0.001, help="base learning rate")
    o.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    o.add_argument("--weight-decay", type=float, default=0.05)
    o.add_argument("--norm-weight-decay", type=float, default=None,
                   help="weight decay of normalisation layers (default: --weight-decay)")
    o.add_argument("--lr-schedule", choices=("multistep", "cosine"), default="cosine")
    o.add_argument("--lr-steps", type=int, nargs="*", default=None, metavar="EPOCH",
                   help="multistep: epochs at which lr *= --lr-gamma (default: at 2/3 "
                   "and 8/9 of the epochs)")
    o.add_argument("--lr-gamma", type=float, default=0.1)
    o.add_argument("--warmup-iters", type=int, default=None, help="linear warmup steps "
                   "(default: min(1000, steps per epoch - 1), torchvision's rule, so a short "
                   "run's warmup ends within its first epoch)")
    o.add_argument("--warmup-factor", type=float, default=0.001,
                   help="lr multiplier at step 0 of the warmup")
    o.add_argument("--clip-grad", type=float, default=None, metavar="MAX_NORM",
                   help="clip the gradient norm (off when not given)")
    o.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")

    r = p.add_argument_group("run")
    r.add_argument("--device", default=None, help="cpu, cuda (default: cuda if available)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--output-dir", default="runs/train", help="log, checkpoint and curves")
    r.add_argument("--resume", default=None, metavar="CHECKPOINT|DIR|auto",
                   help="continue a run from its checkpoint (a file, a run folder, or auto: "
                   "the --output-dir's checkpoint if there is one, else start afresh) with "
                   "the arguments it was started with; flags that change the data, model, "
                   "classes or sizes are refused, schedule flags are taken with a warning")
    r.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                   help="also save a checkpoint every N steps (0: only at epoch ends, "
                   "Ctrl-C and SIGTERM)")
    r.add_argument("--threads", type=int, default=None, help="torch CPU threads "
                   "(torch.set_num_threads; default: torch's own, or the cores shared "
                   "between torchrun processes). On a busy machine 1-2 threads can be "
                   "several times faster than the default; OMP_NUM_THREADS sets the same "
                   "for all libraries. Results are bit-identical only at a fixed thread count")
    r.add_argument("--print-freq", type=int, default=20, help="steps between log lines")
    r.add_argument("--no-eval", action="store_true", help="skip the per-epoch evaluation")
    return p


# --------------------------------------------------------------------------- model
def _parse_overrides(items: list[str]) -> dict[str, Any]:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--model-override {item!r}: expected KEY=VALUE")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def _weights_file_for_name(name: str) -> Path:
    """The torch hub cache file of a torchvision weights enum name, or a clear error."""
    from torchvision.models import get_weight
    try:
        weights = get_weight(name)
    except Exception:  # noqa: BLE001 - torchvision raises several types here
        raise ValueError(f"--weights-backbone {name!r}: not a file and not a torchvision "
                         "weights name (e.g. ResNet50_Weights.IMAGENET1K_V1)") from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not cached.is_file():
        raise ValueError(f"--weights-backbone {name!r} would need a download from "
                         f"{weights.url}; this script never downloads. Fetch the file on a "
                         f"machine with network access and pass its path, or place it at "
                         f"{cached}")
    return cached


def load_backbone_weights(model: torch.nn.Module, source: str) -> dict[str, int]:
    """Load a backbone state dict from a local file into the model's backbone.

    The weights go into whichever of ``model.backbone.body``, ``model.backbone``,
    ``model`` matches most of the file's keys with equal shapes; extra keys (an
    ImageNet classifier's ``fc.*``) are skipped. Returns the counts loaded/skipped.
    """
    path = Path(source).expanduser()
    if not path.is_file():
        path = _weights_file_for_name(source)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    candidates = [getattr(getattr(model, "backbone", None), "body", None),
                  getattr(model, "backbone", None), model]
    best, best_keys = None, {}
    for module in candidates:
        if module is None:
            continue
        own = module.state_dict()
        keys = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if len(keys) > len(best_keys):
            best, best_keys = module, keys
    if best is None:
        raise ValueError(f"--weights-backbone {source!r}: no parameter name and shape "
                         "matches the model's backbone")
    best.load_state_dict(best_keys, strict=False)
    return {"loaded": len(best_keys), "skipped": len(state) - len(best_keys)}


# --------------------------------------------------------------------------- logging
class RunLog:
    """JSONL log and a one-line progress display on stderr; silent off rank 0."""

    def __init__(self, output_dir: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.path = output_dir / "log.jsonl"
        self.tty = sys.stderr.isatty()

    def record(self, kind: str, **fields) -> None:
        if not self.enabled:
            return
        entry = {"type": kind, "time": round(time.time(), 3), **fields}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")

    def drop_after(self, step: int, completed_epochs: int, evaluated: bool) -> int:
        """Remove the step/epoch records a killed run wrote after its checkpoint
        (so a resumed run logs no step twice); returns how many were removed."""
        if not self.enabled or not self.path.is_file():
            return 0
        keep, dropped = [], 0
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a line torn by a kill -9
                dropped += 1
                continue
            kind = entry.get("type")
            stale = (kind == "step" and entry.get("step", 0) > step) or (
                kind == "epoch" and (entry.get("epoch", 0) + 1 > completed_epochs or (
                    entry.get("epoch", 0) + 1 == completed_epochs and not evaluated)))
            if stale:
                dropped += 1
            else:
                keep.append(line)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
        os.replace(tmp, self.path)
        return dropped

    def bar(self, total: int, initial: int, desc: str):
        """A tqdm progress bar on a terminal; None otherwise (then ``progress`` lines)."""
        if not (self.enabled and self.tty):
            return None
        try:
            from tqdm import tqdm
        except ImportError:  # pragma: no cover - tqdm is a dependency; stay usable without
            return None
        return tqdm(total=total, initial=initial, desc=desc, file=sys.stderr,
                    dynamic_ncols=True, unit="step", leave=True)

    def progress(self, text: str, final: bool = False) -> None:
        if not self.enabled or not (text or self.tty):  # "" ends a terminal's line only
            return
        if self.tty:
            sys.stderr.write("\r" + text.ljust(100) + ("\n" if final else ""))
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def say(self, text: str) -> None:
        if self.enabled:
            print(text, file=sys.stderr, flush=True)


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; training stops and keeps the last checkpoint."""


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM arrived; raised at a step boundary, after the checkpoint."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


class _StopRequests:
    """SIGINT / SIGTERM handlers for the main process.

    While ``deferring`` (inside a training step or a checkpoint write) a signal is only
    noted and the loop stops at the next step boundary; elsewhere (setup, evaluation)
    it raises TrainingInterrupted at once. A second signal raises KeyboardInterrupt.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.deferring = False
        self._previous: dict = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}")
        self.signum = signum
        if not self.deferring:
            raise TrainingInterrupted(signum)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C and SIGTERM to the main process, which saves and
    then ends them through the loader's own queues. A terminal sends SIGINT, and
    schedulers, ``kill -TERM -PGID`` and container runtimes often send SIGTERM, to the
    whole process group: a worker that died of it would make torch raise "DataLoader
    worker ... killed by signal" in the main process wherever it happens to be, before
    or instead of the clean save. Torch's last resort for a worker that does not exit
    within seconds of the shutdown (``terminate``) is then ignored too; such a worker
    ends when its current item is done, or when it sees the main process gone."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # blocked while it was forked (see below)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


class _WorkerSafeLoader(torch.utils.data.DataLoader):
    """A DataLoader whose workers are forked with SIGINT/SIGTERM blocked: a forked worker
    inherits the mask, so a signal to the process group in the moment between fork and
    ``_ignore_stop_signals`` stays pending there and is dropped when that sets SIG_IGN,
    instead of reaching the main process' handler copied into the worker or torch's own
    worker handler. The main process gets its copy when the block ends."""

    def __iter__(self):
        if not hasattr(signal, "pthread_sigmask") or self.num_workers == 0 or \
                threading.current_thread() is not threading.main_thread():
            return super().__iter__()
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            return super().__iter__()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _step_seed(seed: int, rank: int, step: int) -> int:
    """Seed of the model's own random draws (e.g. proposal sampling) at ``step``."""
    digest = hashlib.sha256(f"step/{seed}/{rank}/{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def save_curves(log_path: str | Path, path: str | Path) -> None:
    """curves.png of a run from its ``log.jsonl``: loss per component, learning rate and
    COCO AP per epoch, drawn with matplotlib (``reference.visualize.draw_curves``).
    ``python -m reference.visualize curves --log DIR`` draws it again at any time."""
    try:
        import matplotlib  # noqa: F401 - a dependency; a run must not die for a picture
    except ImportError:
        print(f"warning: {path} not drawn: matplotlib is not installed (pip install "
              f"matplotlib, then: python -m reference.visualize curves --log {log_path} "
              f"--out {path})", file=sys.stderr, flush=True)
        return
    from reference.visualize import save_curves as draw

    draw(log_path, path)


# --------------------------------------------------------------------------- distributed
def _init_distributed(device_arg: str | None) -> tuple[int, int, torch.device]:
    """(rank, world_size, device); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wants_cuda = device_arg is None and torch.cuda.is_available() or (
        device_arg is not None and device_arg.startswith("cuda"))
    if wants_cuda:
        device = torch.device("cuda", local_rank) if world > 1 else torch.device(
            device_arg or "cuda")
    else:
        device = torch.device(device_arg or "cpu")
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    if device.type == "cpu" and world > 1:  # share the cores instead of oversubscribing
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    return rank, world, device


def _mean_over_ranks(values: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        values = values.clone()
        dist.all_reduce(values)
        values /= world
    return values


# --------------------------------------------------------------------------- training
def _optimizer(model: torch.nn.Module, args) -> torch.optim.Optimizer:
    norm_types = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm,
                  torch.nn.LayerNorm)
    norm_params, other_params = [], []
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if param.requires_grad:
                (norm_params if isinstance(module, norm_types) else other_params).append(param)
    norm_decay = args.weight_decay if args.norm_weight_decay is None else args.norm_weight_decay
    groups = [{"params": other_params, "weight_decay": args.weight_decay}]
    if norm_params:
        groups.append({"params": norm_params, "weight_decay": norm_decay})
    if args.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum)
    return torch.optim.AdamW(groups, lr=args.lr)


@dataclasses.dataclass
class _Run:
    """What the loop, the checkpoints and the handlers share during one run."""

    args: argparse.Namespace
    model: torch.nn.Module  # DDP-wrapped under torchrun
    model_without_ddp: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: Any
    loader: torch.utils.data.DataLoader
    batches: EpochBatches
    device: torch.device
    schedule: Schedule
    rank: int
    world: int
    runlog: RunLog
    history: dict
    stop: _StopRequests
    checkpoint_path: Path
    extra: dict  # model name, classes, data: constant entries of every checkpoint
    saved_step: int | None = None  # global step of the checkpoint on disk

    def save(self, completed_epochs: int, epoch_step: int, step: int, evaluated: bool) -> None:
        """Checkpoint at a step boundary (rank 0 writes; a signal waits until it is done)."""
        if self.rank != 0:
            return
        weights = self.model_without_ddp.state_dict()
        bad = [k for k, v in weights.items() if v.is_floating_point() and not v.isfinite().all()]
        if bad:  # never overwrite the last good checkpoint with diverged weights
            raise NonFiniteLossError(f"weights became non-finite ({len(bad)} tensors, e.g. "
                                     f"{bad[0]}) at step {step}")
        deferring, self.stop.deferring = self.stop.deferring, True
        try:
            save_checkpoint({
                "model": weights,
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "epoch": completed_epochs,
                "epoch_step": epoch_step,  # steps done inside epoch `completed_epochs`
                "step": step,
                "evaluated": evaluated,  # the last completed epoch's evaluation is done
                "schedule": dataclasses.asdict(self.schedule),
                "history": self.history,
                "args": vars(self.args),
                **self.extra,
            }, self.checkpoint_path)
        finally:
            self.stop.deferring = deferring
        self.saved_step = step


def train_one_epoch(run: _Run, epoch: int, start: int, step: int) -> int:
    """Steps ``start ..`` of ``epoch`` (0-based); returns the global step after them."""
    args, model, optimizer, scaler, device = run.args, run.model, run.optimizer, run.scaler, \
        run.device
    steps_per_epoch = run.schedule.steps_per_epoch
    model.train()
    run.batches.set_epoch(epoch, start)
    window_start, window_images = time.perf_counter(), 0
    epoch_start, done_here = time.perf_counter(), 0
    bar = run.runlog.bar(steps_per_epoch, start, f"epoch {epoch + 1}/{args.epochs}")
    batches = iter(run.loader)
    run.stop.deferring = True  # a signal from here on stops at the next step boundary
    try:
        for index in range(start, steps_per_epoch):
            # 1) the next batch; a stop request seen while waiting ends the run here
            try:
                images, targets = next(batches)
            except Exception as exc:  # noqa: BLE001 - a worker that died of our signal
                if run.stop.signum is None:
                    _reraise_worker_dataset_error(exc)
                    raise
                images = None
            if run.stop.signum is not None and (run.world == 1 or images is None):
                run.save(epoch, index, step, evaluated=True)
                raise TrainingInterrupted(run.stop.signum)
            # 2) learning rate and the seed of the model's own draws (pure functions of step)
            lr = args.lr * lr_factor(step, run.schedule)
            for group in optimizer.param_groups:
                group["lr"] = lr
            torch.manual_seed(_step_seed(args.seed, run.rank, step))
            # 3) forward: the detector returns a dict of scalar losses; its own
            #    divergence check (FloatingPointError) counts as a non-finite loss
            images = [image.to(device, non_blocking=True) for image in images]
            targets = [{k: (v.to(device) if isinstance(v, torch.Tensor) else v)
                        for k, v in t.items()} for t in targets]
            diverged = None
            try:
                with torch.autocast(device_type=device.type, enabled=args.amp):
                    losses = model(images, targets)
                total = sum(losses.values())
            except FloatingPointError as exc:
                diverged, losses = str(exc), {}
                total = torch.tensor(float("nan"), device=device)
            # 4) mean over ranks of the losses and of the stop flag: all ranks stop together
            names = sorted(losses)
            stop_flag = torch.tensor(float(run.stop.signum is not None), device=device)
            reduced = _mean_over_ranks(torch.stack(
                [total.detach().float()] + [losses[n].detach().float() for n in names]
                + [stop_flag]), run.world).tolist()
            logged, stop_now = reduced[:-1], reduced[-1] > 0
            if not math.isfinite(logged[0]):
                parts = diverged or ", ".join(f"{n}={v:.4g}" for n, v in zip(names, logged[1:]))
                error = NonFiniteLossError(f"loss is {logged[0]} at epoch {epoch} step {step} "
                                           f"({parts})")
                error.step = step
                raise error
            # 5) backward, optional clipping, step
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            if args.clip_grad:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            done_here += 1
            window_images += len(images) * run.world
            if bar is not None:
                bar.set_postfix_str(f"loss {logged[0]:.4f} lr {lr:.2e}", refresh=False)
                bar.update(1)
            # 6) log the first step at once, then every print_freq steps and the last one
            last = index + 1 == steps_per_epoch
            if done_here == 1 or step % args.print_freq == 0 or last:
                now = time.perf_counter()
                throughput = window_images / max(now - window_start, 1e-9)
                window_start, window_images = now, 0
                per_loss = {n: round(v, 5) for n, v in zip(names, logged[1:])}
                run.history["loss"].append((step, logged[0]))
                run.runlog.record("step", epoch=epoch, step=step, lr=lr,
                                  loss=round(logged[0], 5), losses=per_loss,
                                  images_per_s=round(throughput, 2))
                eta = (now - epoch_start) / done_here * (steps_per_epoch - index - 1)
                if bar is None:
                    run.runlog.progress(f"epoch {epoch + 1}/{args.epochs} [{index + 1:>5}/"
                                        f"{steps_per_epoch}] loss {logged[0]:.4f} lr "
                                        f"{lr:.2e} {throughput:6.1f} img/s eta {eta:5.0f}s",
                                        final=last)
            # 7) stop here when asked (checkpoint at this step), or a periodic checkpoint
            if stop_now or (run.world == 1 and run.stop.signum is not None):
                if not last:
                    run.save(epoch, index + 1, step, evaluated=True)
                else:
                    run.save(epoch + 1, 0, step, evaluated=args.no_eval)
                if run.world > 1:
                    dist.barrier()
                raise TrainingInterrupted(run.stop.signum or signal.SIGTERM)
            if args.checkpoint_every and step % args.checkpoint_every == 0 and not last:
                run.save(epoch, index + 1, step, evaluated=True)
    finally:
        run.stop.deferring = False
        if bar is not None:
            bar.close()
        del batches  # stops the workers now, even while an exception holds this frame
    return step


def _reraise_worker_dataset_error(exc: Exception) -> None:
    """A DatasetError raised in a DataLoader worker arrives with the worker's traceback
    as its text; raise it again as the one-line DatasetError it was."""
    text = str(exc).strip().splitlines()
    if text and text[-1].startswith(("reference.data.DatasetError: ", "DatasetError: ")):
        exc.__traceback__ = None  # its frames hold the DataLoader iterator and its workers
        raise DatasetError(text[-1].split(": ", 1)[1]) from None


def _wants_sync_bn(flag: str, model: torch.nn.Module) -> bool:
    """--sync-bn on/off, or auto: what the model says (``sync_bn_under_ddp``), never
    guessed from its name."""
    return flag == "on" or (flag == "auto" and bool(getattr(model, "sync_bn_under_ddp", False)))


def _image_sizes(args, synthetic: bool, train_set: CocoDetection) -> tuple[int, int, str]:
    """(min_size, max_size, a note saying where they come from; empty when given)."""
    defaults = DEFAULT_SIZES["synthetic" if synthetic else "coco"]
    if args.min_size or synthetic:
        min_size = args.min_size or defaults[0]
        return min_size, max(args.max_size or defaults[1], min_size), ""
    known = [(r["width"], r["height"]) for r in train_set.records if r["width"] and r["height"]]
    if not known:
        return defaults[0], max(args.max_size or defaults[1], defaults[0]), (
            f"note: images resized to shorter side {defaults[0]}, longer at most "
            f"{max(args.max_size or defaults[1], defaults[0])} (COCO's defaults; the "
            "annotation file gives no sizes); --min-size/--max-size choose others")
    shorter = int(np.median([min(w, h) for w, h in known]))
    longer = int(np.median([max(w, h) for w, h in known]))
    median = f"median train image {longer}x{shorter}"
    if shorter * UPSCALE_LIMIT < defaults[0]:
        max_size = max(args.max_size or longer, shorter)
        return shorter, max_size, (
            f"note: image sizes picked from the data: --min-size {shorter} --max-size "
            f"{max_size} ({median}; COCO's {defaults[0]} px would upscale it "
            f"{defaults[0] / shorter:.1f}x); pass --min-size/--max-size to choose others")
    max_size = max(args.max_size or defaults[1], defaults[0])
    return defaults[0], max_size, (
        f"note: images resized to shorter side {defaults[0]}, longer at most {max_size} "
        f"(COCO's defaults; {median}); --min-size/--max-size choose others")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- resume
# A resumed run takes the checkpoint's arguments. Flags given explicitly on the
# command line that would change what the weights were trained on are refused;
# schedule flags are taken with a warning (the run is then no longer identical to an
# uninterrupted one); the rest (device, workers, logging, output) are free.
FIXED_ON_RESUME = ("data_path", "train_ann", "train_images", "val_ann", "val_images",
                   "min_size", "max_size", "model", "model_override", "weights_backbone",
                   "batch_size", "aspect_ratio_group_factor", "seed", "optimizer")
SCHEDULE_FLAGS = ("epochs", "lr", "momentum", "weight_decay", "norm_weight_decay",
                  "lr_schedule", "lr_steps", "lr_gamma", "warmup_iters", "warmup_factor",
                  "clip_grad", "amp")
RESUME_KEYS = ("model", "optimizer", "scaler", "epoch", "epoch_step", "step", "evaluated",
               "schedule", "history", "args", "model_name", "model_overrides", "num_classes",
               "label_to_cat_id")


def _explicit_flags(argv: list[str] | None) -> dict[str, Any]:
    """The flags given on the command line (dest -> value), defaults left out."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return vars(parser.parse_args(argv))


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _resume_args(parser: argparse.ArgumentParser, args: argparse.Namespace,
                 explicit: dict) -> tuple[argparse.Namespace, dict | None, list[str]]:
    """(arguments to run with, the verified checkpoint or None, notes to print).

    Raises CheckpointError / ValueError with the message for the user.
    """
    from reference.detectors import DETECTOR_NAMES

    if args.resume == "auto":
        found = find_checkpoint(Path(args.output_dir))
        if found is None:
            args.resume = None
            return args, None, [f"--resume auto: no {CHECKPOINT_NAME} in {args.output_dir}; "
                                "starting a new run"]
    else:
        found = find_checkpoint(args.resume)
        if found is None:
            raise CheckpointError(f"checkpoint {args.resume!r} does not exist (expected a .pth "
                                  f"file or a run folder holding {CHECKPOINT_NAME})")
    checkpoint = load_checkpoint(found, require=RESUME_KEYS)
    stored = checkpoint["args"]
    if not isinstance(stored, dict):
        raise CheckpointError(f"checkpoint {str(found)!r}: 'args' is not a dict")
    merged = {**vars(parser.parse_args([])), **stored}
    refused, notes = [], []
    for dest, value in explicit.items():
        if dest == "resume" or value == merged.get(dest):
            continue
        if dest in FIXED_ON_RESUME:
            refused.append(f"{_flag(dest)} {value!r} (the checkpoint's: {merged.get(dest)!r})")
            continue
        if dest in SCHEDULE_FLAGS:
            notes.append(f"warning: resuming with {_flag(dest)} {value!r} instead of the "
                         f"checkpoint's {merged.get(dest)!r}: the run is no longer identical "
                         "to an uninterrupted one")
        merged[dest] = value
    if refused:
        raise ValueError(f"--resume {found}: " + "; ".join(refused) + " would change the data, "
                         "model, classes, sizes or sample order the checkpoint was trained "
                         "with. Resume without them, or start a new run in another "
                         "--output-dir")
    name = merged["model"]
    if name not in DETECTOR_NAMES and explicit.get("model") != name:
        raise CheckpointError(f"checkpoint {str(found)!r} names model {name!r}, which is not one "
                              f"of {list(DETECTOR_NAMES)}; a module:function builder is imported "
                              f"only when you name it yourself (--model {name})")
    if "output_dir" not in explicit:
        merged["output_dir"] = str(found.parent)
    merged["resume"] = str(found)
    return argparse.Namespace(**merged), checkpoint, notes


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    stop = _StopRequests()
    stop.install()  # from here on Ctrl-C / SIGTERM end the run cleanly
    try:
        return _main(parser, args, argv, stop)
    except TrainingInterrupted as exc:  # before the loop had anything to save
        print(f"interrupted by {exc}; nothing was saved", file=sys.stderr, flush=True)
        return 128 + exc.signum
    finally:
        stop.uninstall()


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace, argv, stop) -> int:
    explicit = _explicit_flags(argv)
    checkpoint, notes = None, []
    if args.resume:
        try:
            args, checkpoint, notes = _resume_args(parser, args, explicit)
        except ValueError as exc:  # CheckpointError included
            print(f"error: --resume: {exc}", file=sys.stderr)
            return 2
    if checkpoint is None and args.model in MODEL_TRAIN_DEFAULTS:
        # re-parse so explicit flags beat model defaults
        parser.set_defaults(**MODEL_TRAIN_DEFAULTS[args.model])
        args = parser.parse_args(argv)
        args.resume = None
    try:
        overrides = _parse_overrides(args.model_override)
    except ValueError as exc:
        parser.error(str(exc))
    for flag in ("checkpoint_every", "threads"):
        value = getattr(args, flag)
        if value is not None and value < (0 if flag == "checkpoint_every" else 1):
            parser.error(f"{_flag(flag)} {value}: expected a "
                         f"{'non-negative' if flag == 'checkpoint_every' else 'positive'} "
                         "integer")

    # 1) distributed setup
    rank, world, device = _init_distributed(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.amp and device.type != "cuda":
        parser.error("--amp needs a CUDA device (mixed precision is CUDA only here)")
    output_dir = Path(args.output_dir)
    if rank == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
    runlog = RunLog(output_dir, enabled=rank == 0)
    for note in notes:
        runlog.say(note)
    _seed_everything(args.seed + rank)

    try:
        # 2) data
        paths = resolve_data_paths(args.data_path, args.train_ann, args.train_images,
                                   args.val_ann, args.val_images)
        train_set = CocoDetection(paths.train_images, paths.train_ann, skip_empty=True)
        min_size, max_size, size_note = _image_sizes(args, paths.synthetic, train_set)
        train_set.transforms = build_transforms(True, min_size, max_size)
        val_coco = load_coco(paths.val_ann)
        val_set = CocoDetection(paths.val_images, coco=val_coco,
                                transforms=build_transforms(False, min_size, max_size))
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if len(train_set) == 0:
        print(f"error: {paths.train_ann} has no image with a usable box", file=sys.stderr)
        return 2
    if checkpoint is not None and checkpoint["label_to_cat_id"] != train_set.label_to_cat_id:
        print(f"error: --resume: the categories of {paths.train_ann} "
              f"{train_set.label_to_cat_id} differ from the checkpoint's "
              f"{checkpoint['label_to_cat_id']}", file=sys.stderr)
        return 2
    sampler = torch.utils.data.DistributedSampler(train_set, num_replicas=world, rank=rank,
                                                  shuffle=True, seed=args.seed)
    group_ids = aspect_ratio_group_ids(train_set.aspect_ratios(), args.aspect_ratio_group_factor)
    batches = EpochBatches(GroupedBatchSampler(sampler, group_ids, args.batch_size), args.seed)
    train_loader = _WorkerSafeLoader(
        SeededSamples(train_set), batch_sampler=batches, num_workers=args.workers,
        collate_fn=collate_lists, worker_init_fn=_ignore_stop_signals)
    val_loader = _WorkerSafeLoader(val_set, batch_size=args.batch_size, shuffle=False,
                                   num_workers=args.workers, collate_fn=collate_lists,
                                   worker_init_fn=_ignore_stop_signals)

    # 3) model
    model = build_model(args.model, train_set.num_classes, overrides)
    if checkpoint is not None:
        try:
            load_weights(model, checkpoint["model"], args.resume)
        except CheckpointError as exc:
            print(f"error: --resume: {exc}", file=sys.stderr)
            return 2
    elif args.weights_backbone:
        try:
            counts = load_backbone_weights(model, args.weights_backbone)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        runlog.say(f"backbone weights {args.weights_backbone}: {counts}")
    model.to(device)
    if world > 1 and _wants_sync_bn(args.sync_bn, model):
        if device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            runlog.say("note: SyncBN needs CUDA; keeping per-process BatchNorm on CPU")
    model_without_ddp = model
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    # 4) optimizer and schedule
    optimizer = _optimizer(model_without_ddp, args)
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp)
    lr_steps = args.lr_steps
    if lr_steps is None:
        lr_steps = [round(args.epochs * 2 / 3), round(args.epochs * 8 / 9)]
    schedule = Schedule(steps_per_epoch=batches.batches_per_epoch, epochs=args.epochs,
                        kind=args.lr_schedule, lr_steps=tuple(lr_steps), gamma=args.lr_gamma,
                        warmup_iters=(min(1000, batches.batches_per_epoch - 1)
                                      if args.warmup_iters is None else args.warmup_iters),
                        warmup_factor=args.warmup_factor)

    # 5) resume, then epochs of train / checkpoint / evaluate / checkpoint
    start_epoch, start_index, step = 0, 0, 0
    history: dict[str, list] = {"loss": [], "ap": []}
    evaluated = True
    if checkpoint is not None:
        if checkpoint["schedule"]["steps_per_epoch"] != schedule.steps_per_epoch and \
                checkpoint["epoch_step"]:
            print(f"error: --resume: {checkpoint['schedule']['steps_per_epoch']} steps per epoch "
                  f"in the checkpoint, {schedule.steps_per_epoch} now (the data changed?): its "
                  "position inside the epoch means nothing here", file=sys.stderr)
            return 2
        optimizer.load_state_dict(checkpoint["optimizer"])
        scaler.load_state_dict(checkpoint["scaler"])
        start_epoch, start_index = checkpoint["epoch"], checkpoint["epoch_step"]
        step, evaluated = checkpoint["step"], checkpoint["evaluated"]
        history = checkpoint["history"]
        if checkpoint["schedule"] != dataclasses.asdict(schedule):
            runlog.say(f"warning: schedule differs from the checkpoint's "
                       f"{checkpoint['schedule']}; using {dataclasses.asdict(schedule)}")
        dropped = runlog.drop_after(step, start_epoch, evaluated)
        runlog.record("resume", checkpoint=str(args.resume), epoch=start_epoch,
                      epoch_step=start_index, step=step, dropped_log_records=dropped)
    runlog.record("start", args=vars(args), world_size=world, device=str(device),
                  threads=torch.get_num_threads(),
                  train_images=len(train_set), val_images=len(val_set),
                  dropped_degenerate=train_set.dropped_degenerate + val_set.dropped_degenerate,
                  dropped_annotations={"train": train_set.dropped, "val": val_set.dropped},
                  steps_per_epoch=schedule.steps_per_epoch, total_steps=schedule.total_steps,
                  warmup_iters=schedule.warmup_iters, min_size=min_size, max_size=max_size)
    if size_note:
        runlog.say(size_note)
    for split, dataset, ann_file in (("train", train_set, paths.train_ann),
                                     ("val", val_set, paths.val_ann)):
        if dataset.dropped_total:
            counts = ", ".join(f"{n} {kind.replace('_', ' ')}"
                               for kind, n in dataset.dropped.items() if n)
            runlog.say(f"note: {split}: dropped {dataset.dropped_total} annotations of "
                       f"{ann_file} ({counts})")
    runlog.say(f"training {args.model} on {len(train_set)} images ({paths.train_ann}), "
               f"{schedule.steps_per_epoch} steps/epoch x {args.epochs} epochs, world size "
               f"{world}, device {device}, {torch.get_num_threads()} threads"
               + (f", resumed at step {step}" if checkpoint is not None else ""))

    checkpoint_path = output_dir / CHECKPOINT_NAME
    run = _Run(args=args, model=model, model_without_ddp=model_without_ddp, optimizer=optimizer,
               scaler=scaler, loader=train_loader, batches=batches, device=device,
               schedule=schedule, rank=rank, world=world, runlog=runlog, history=history,
               stop=stop, checkpoint_path=checkpoint_path,
               saved_step=step if checkpoint is not None else None,
               extra={"model_name": args.model, "model_overrides": overrides,
                      "num_classes": train_set.num_classes,
                      "label_to_cat_id": train_set.label_to_cat_id,
                      "class_names": train_set.class_names,
                      "data": {**dataclasses.asdict(paths), "min_size": min_size,
                               "max_size": max_size}})

    def end_of_epoch(epoch: int, step: int, train_seconds: float | None) -> None:
        stats = None
        if rank == 0 and not args.no_eval:
            stats = evaluate_model(model_without_ddp, val_loader, val_coco,
                                   val_set.label_to_cat_id, device, verbose=False)
            runlog.say(format_summary(stats))
            history["ap"].append((epoch + 1, stats["AP"]))
        runlog.record("epoch", epoch=epoch, step=step, train_seconds=train_seconds, coco=stats)
        if not args.no_eval:
            run.save(epoch + 1, 0, step, evaluated=True)
        if world > 1:
            dist.barrier()

    try:
        if not evaluated and start_epoch > 0 and start_index == 0:
            end_of_epoch(start_epoch - 1, step, None)  # the evaluation the kill cut short
        for epoch in range(start_epoch, args.epochs):
            epoch_start = time.perf_counter()
            step = train_one_epoch(run, epoch, start_index if epoch == start_epoch else 0, step)
            train_seconds = round(time.perf_counter() - epoch_start, 2)
            # saved before evaluating, so a crash in evaluation loses no training
            run.save(epoch + 1, 0, step, evaluated=args.no_eval)
            end_of_epoch(epoch, step, train_seconds)
    except TrainingInterrupted as exc:
        runlog.progress("", final=True)
        kept = checkpoint_path if run.saved_step is not None else None
        runlog.record("interrupted", signal=str(exc), step=run.saved_step,
                      checkpoint=str(kept) if kept else None)
        if kept is None:
            runlog.say(f"interrupted by {exc}; no checkpoint was written yet")
        else:
            launcher = (f"torchrun --nproc_per_node={world} -m reference.train" if world > 1
                        else "python -m reference.train")
            runlog.say(f"interrupted by {exc}: checkpoint at step {run.saved_step} in {kept}; "
                       f"resume with: {launcher} --resume {shlex.quote(str(output_dir))}")
        _finish_distributed(world)
        return 128 + exc.signum
    except NonFiniteLossError as exc:
        kept = checkpoint_path if checkpoint_path.is_file() else "none yet"
        message = f"stopping: {exc}. Last good checkpoint kept: {kept}"
        runlog.progress("", final=True)
        runlog.say(message)
        runlog.record("nonfinite", step=getattr(exc, "step", step), message=message)
        _finish_distributed(world)
        return 1
    except DatasetError as exc:  # an unreadable image mid-run (train or val)
        try:
            _reraise_worker_dataset_error(exc)
        except DatasetError as clean:
            exc = clean
        kept = checkpoint_path if checkpoint_path.is_file() else "none yet"
        runlog.progress("", final=True)
        message = f"error: {exc}. Last checkpoint kept: {kept}"
        runlog.say(message)
        runlog.record("data_error", step=step, message=message)
        _finish_distributed(world)
        return 1

    # 6) curves
    if rank == 0:
        save_curves(runlog.path, output_dir / "curves.png")
    runlog.record("end", step=step, epochs=args.epochs,
                  final_ap=history["ap"][-1][1] if history["ap"] else None)
    _finish_distributed(world)
    return 0


def _finish_distributed(world: int) -> None:
    if world > 1 and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
