"""Checkpoints of ``reference.train``: build a model by name, save, load, verify.

Train, evaluate and predict import this module (and not each other). A checkpoint is
a ``torch.save`` of a plain dict (tensors, numbers, strings, lists, dicts) and is
always read with ``torch.load(weights_only=True)``: a file from someone else can
hold only data, never code to run. Its keys:

    model            the detector's state dict
    optimizer, scaler, rng, ...   what ``--resume`` needs (see ``reference.train``)
    model_name       one of ``reference.detectors.DETECTOR_NAMES``, or the
                     ``module:function`` builder the run was started with
    model_overrides  keyword arguments of the builder
    num_classes, label_to_cat_id, class_names, data, args, epoch, step, ...
    payload_sha256   sha256 over every other entry, in a canonical order
                     (``payload_digest``); checked on every load

Loading refuses, each with one line naming the file (``CheckpointError``): a file
that is missing, truncated or not a checkpoint; one holding pickled objects other
than data; a digest mismatch (a flipped byte); non-finite weights; a model name
outside ``DETECTOR_NAMES`` unless the caller names that same builder itself
(``trusted_builder``: a name typed on the command line, never one read from the
file); and weights that do not fit the model (wrong detector or class count).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CheckpointError",
    "CHECKPOINT_NAME",
    "build_model",
    "payload_digest",
    "save_checkpoint",
    "load_checkpoint",
    "model_from_checkpoint",
    "load_model_from_checkpoint",
    "find_checkpoint",
]

CHECKPOINT_NAME = "checkpoint.pth"  # the file a run writes into its --output-dir
_DIGEST_KEY = "payload_sha256"
_REQUIRED_KEYS = ("model", "model_name", "model_overrides", "num_classes")


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, unsafe or does not fit; the message names it."""


# --------------------------------------------------------------------------- models
def build_model(name: str, num_classes: int, overrides: dict | None = None, *,
                allow_builder: bool = True) -> torch.nn.Module:
    """The detector ``name`` for ``num_classes`` foreground classes.

    ``name`` is one of ``reference.detectors.DETECTOR_NAMES``, or (only when
    ``allow_builder``) ``"module:function"`` naming a builder called as
    ``function(num_classes=..., **overrides)``. Model names read from files are
    built with ``allow_builder=False``: importing a name from a file runs its code.
    """
    from reference.detectors import DETECTOR_NAMES, build_detector

    overrides = dict(overrides or {})
    if name in DETECTOR_NAMES:
        return build_detector(name, num_classes=num_classes, **overrides)
    if ":" in name and allow_builder:
        module_name, _, fn_name = name.partition(":")
        builder = getattr(importlib.import_module(module_name), fn_name)
        return builder(num_classes=num_classes, **overrides)
    raise ValueError(f"model {name!r}: expected one of {list(DETECTOR_NAMES)}"
                     + (" or module:function" if allow_builder else ""))


# --------------------------------------------------------------------------- digest
def _feed(h, obj: Any) -> None:
    """Hash ``obj`` canonically: type tags, dict keys sorted, tensors by dtype/shape/bytes."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for key in sorted(obj, key=repr):
            _feed(h, key)
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for item in obj:
            _feed(h, item)
    elif obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        h.update(f"S{type(obj).__name__}:{obj!r};".encode())
    else:
        raise TypeError(f"checkpoint entry of type {type(obj).__name__}: expected tensors, "
                        "numbers, strings, lists, tuples and dicts only")


def payload_digest(state: dict) -> str:
    """sha256 (hex) of every entry of ``state`` except the digest itself."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in state.items() if k != _DIGEST_KEY})
    return h.hexdigest()


# --------------------------------------------------------------------------- save / load
def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write ``state`` plus its digest to ``path`` atomically (tmp, fsync, rename):
    a reader, or a run killed during the write, sees the old file or the new one."""
    path = Path(path)
    state = {**state, _DIGEST_KEY: payload_digest(state)}
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def find_checkpoint(path: str | Path) -> Path | None:
    """``path`` itself if a file, ``path/checkpoint.pth`` if a folder holding one, else None."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if path.is_dir() and (path / CHECKPOINT_NAME).is_file():
        return path / CHECKPOINT_NAME
    return None


def load_checkpoint(path: str | Path, *, require: tuple[str, ...] = _REQUIRED_KEYS) -> dict:
    """The verified checkpoint dict at ``path`` (a file, or a run folder).

    Raises CheckpointError (one line naming the file) when it is missing, not a
    checkpoint, holds non-data objects, fails its digest, lacks a ``require`` key,
    or has non-finite weights.
    """
    found = find_checkpoint(path)
    if found is None:
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist (expected a .pth file "
                              f"or a run folder holding {CHECKPOINT_NAME})")
    name = str(found)
    try:
        state = torch.load(found, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = str(exc).strip().splitlines()
        reason = next((line for line in lines if "Unsupported global" in line), None)
        if reason is None:  # not a pickle of ours at all (random bytes, legacy format)
            detail = lines[-1].strip()[:200] if lines else "unpickling failed"
            raise CheckpointError(f"checkpoint {name!r} is truncated or not a torch "
                                  f"checkpoint ({detail})") from None
        raise CheckpointError(f"checkpoint {name!r} holds objects other than tensors and plain "
                              f"data, refused without running them ({reason.strip()[:200]})"
                              ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError,
            TypeError, AttributeError, IndexError) as exc:
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {name!r} is truncated or not a torch checkpoint "
                              f"({detail})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {name!r} holds a {type(state).__name__}, expected "
                              "the dict reference.train writes")
    missing = [k for k in require if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {name!r} lacks {missing}: not written by "
                              "reference.train")
    stored = state.get(_DIGEST_KEY)
    if stored is None:
        raise CheckpointError(f"checkpoint {name!r} has no {_DIGEST_KEY} (written before "
                              "checkpoints carried a digest): its integrity cannot be checked")
    try:
        digest = payload_digest(state)
    except TypeError as exc:
        raise CheckpointError(f"checkpoint {name!r}: {exc}") from None
    if digest != stored:
        raise CheckpointError(f"checkpoint {name!r} is corrupt: its content's sha256 "
                              f"{digest[:16]}... differs from the recorded {str(stored)[:16]}...")
    if not isinstance(state["model"], dict):
        raise CheckpointError(f"checkpoint {name!r}: 'model' is not a state dict")
    bad = [k for k, v in state["model"].items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not v.isfinite().all()]
    if bad:
        raise CheckpointError(f"checkpoint {name!r} has non-finite weights in {len(bad)} "
                              f"tensor(s), e.g. {bad[0]!r}: refused (the run diverged before "
                              "it was saved)")
    return state


def model_from_checkpoint(checkpoint: dict, path: str | Path = "checkpoint", *,
                          trusted_builder: str | None = None) -> torch.nn.Module:
    """The checkpoint's model, weights loaded, on CPU (in train mode).

    A ``model_name`` outside ``DETECTOR_NAMES`` is built only when it equals
    ``trusted_builder`` (a ``module:function`` the user typed, not one from the file).
    """
    from reference.detectors import DETECTOR_NAMES

    name = checkpoint["model_name"]
    if not isinstance(name, str):
        raise CheckpointError(f"checkpoint {str(path)!r}: model_name {name!r} is not a string")
    if name not in DETECTOR_NAMES and name != trusted_builder:
        raise CheckpointError(
            f"checkpoint {str(path)!r} names model {name!r}, which is not one of "
            f"{list(DETECTOR_NAMES)}; a module:function builder is imported only when you "
            f"name it yourself (--model {name})")
    overrides = checkpoint["model_overrides"]
    if not isinstance(overrides, dict):
        raise CheckpointError(f"checkpoint {str(path)!r}: model_overrides is not a dict")
    try:
        model = build_model(name, int(checkpoint["num_classes"]), overrides,
                            allow_builder=name == trusted_builder)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: cannot build its model "
                              f"{name!r}: {exc}") from None
    load_weights(model, checkpoint["model"], path)
    return model


def load_weights(model: torch.nn.Module, weights: dict, path: str | Path = "checkpoint") -> None:
    """``model.load_state_dict(weights)`` with a one-line CheckpointError on a mismatch."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [k for k in own if k in weights and isinstance(weights[k], torch.Tensor)
              and tuple(weights[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} of another shape (e.g. {k!r}: "
                         f"{tuple(weights[k].shape)} vs the model's {tuple(own[k].shape)})")
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit the model: weights "
                              + ", ".join(parts))
    model.load_state_dict(weights)


def load_model_from_checkpoint(path: str | Path, device: torch.device | str = "cpu", *,
                               trusted_builder: str | None = None):
    """``(model in eval mode on device, checkpoint dict)`` from a training checkpoint."""
    checkpoint = load_checkpoint(path)
    model = model_from_checkpoint(checkpoint, find_checkpoint(path) or path,
                                  trusted_builder=trusted_builder)
    return model.to(device).eval(), checkpoint
