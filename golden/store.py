"""The golden store on disk: ``golden/data/<case>.npz`` plus ``golden/manifest.json``.

``regenerate`` runs every case on the reference, runs its cross-check, and writes
the arrays and a manifest entry (inputs, producer, flavour, torch version, sha256,
cross-check). ``check`` verifies each file's sha256 against the manifest and that
regenerating reproduces it within the case's tolerance. Files are written to a
temporary name and renamed, so an interrupted run never leaves a torn file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
from pathlib import Path

import numpy as np
import torch

from golden.case import Arrays, GoldenCase
from golden.cases import all_cases

ROOT = Path(__file__).resolve().parent
DATA = ROOT / "data"
MANIFEST = ROOT / "manifest.json"


class GoldenStoreError(RuntimeError):
    """A golden file is missing, corrupt, or disagrees with its manifest."""


def _atomic_write(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def npz_bytes(arrays: Arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: arrays[k] for k in sorted(arrays)})
    return buf.getvalue()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_manifest() -> dict:
    if not MANIFEST.is_file():
        raise GoldenStoreError(f"{MANIFEST} is missing; run `python -m golden regenerate`")
    try:
        return json.loads(MANIFEST.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise GoldenStoreError(f"{MANIFEST} is not valid JSON: {exc}") from exc


def load(case: GoldenCase) -> Arrays:
    """The stored arrays of ``case``, after checking the file against the manifest."""
    path = DATA / f"{case.name}.npz"
    if not path.is_file():
        raise GoldenStoreError(f"golden file {path} is missing; run `python -m golden regenerate`")
    entry = read_manifest().get("cases", {}).get(case.name)
    if entry is None:
        raise GoldenStoreError(f"case {case.name!r} has no manifest entry")
    digest = sha256_of(path)
    if digest != entry["sha256"]:
        raise GoldenStoreError(
            f"{path}: sha256 {digest[:16]}... does not match the manifest "
            f"{entry['sha256'][:16]}...; the file was edited or corrupted"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise GoldenStoreError(f"{path}: cannot read as .npz ({exc})") from exc


def _manifest_entry(case: GoldenCase, path: Path, arrays: Arrays) -> dict:
    return {
        "component": case.component,
        "clause": case.clause,
        "producer": case.producer,
        "flavour": case.flavour,
        "inputs": case.inputs,
        "outputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()},
        "exact": list(case.exact),
        "tolerance": {"rtol": case.rtol, "atol": case.atol},
        "cross_checked": case.cross_checked,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "sha256": sha256_of(path),
        "bytes": path.stat().st_size,
    }


def regenerate(names: list[str] | None = None, log=print) -> dict:
    """Rebuild the chosen cases (all by default) from the reference."""
    import reference

    cases = _select(names)
    manifest = read_manifest() if MANIFEST.is_file() else {"cases": {}}
    manifest["generator"] = "python -m golden regenerate"
    manifest["producer_module"] = "reference"
    known = {c.name for c in all_cases()}
    manifest["cases"] = {k: v for k, v in manifest.get("cases", {}).items() if k in known}
    for i, case in enumerate(cases, start=1):
        log(f"[{i}/{len(cases)}] {case.name}: running {case.producer} ({case.flavour})")
        arrays = case.outputs(reference, "cpu")
        if case.cross_check is not None:
            case.cross_check(arrays)
            log(f"    cross-checked against {case.cross_checked}")
        path = DATA / f"{case.name}.npz"
        _atomic_write(path, npz_bytes(arrays))
        manifest["cases"][case.name] = _manifest_entry(case, path, arrays)
        # Written after every case: an interrupted run keeps what it finished.
        _atomic_write(MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    for stale in DATA.glob("*.npz"):
        if stale.stem not in known:
            log(f"removing stale {stale.name}")
            stale.unlink()
    return manifest


def check(names: list[str] | None = None, log=print) -> list[str]:
    """Problems found (empty when the store is sound and reproducible)."""
    import reference

    problems: list[str] = []
    cases = _select(names)
    manifest = read_manifest()
    for case in cases:
        try:
            stored = load(case)
        except GoldenStoreError as exc:
            problems.append(str(exc))
            log(f"FAIL {case.name}: {exc}")
            continue
        fresh = case.outputs(reference, "cpu")
        diffs = case.compare(fresh, stored)
        entry = manifest["cases"][case.name]
        if entry.get("clause") != case.clause or entry.get("producer") != case.producer:
            diffs.append("manifest clause/producer disagree with the case definition")
        if diffs:
            problems.extend(f"{case.name}: {d}" for d in diffs)
            log(f"FAIL {case.name}: " + "; ".join(diffs))
        else:
            log(f"ok   {case.name} ({entry['bytes']} bytes, sha256 {entry['sha256'][:12]})")
    orphans = set(manifest.get("cases", {})) - {c.name for c in all_cases()}
    for name in sorted(orphans):
        problems.append(f"manifest lists {name!r} but no case defines it")
    return problems


def _select(names: list[str] | None) -> list[GoldenCase]:
    cases = all_cases()
    if not names:
        return cases
    by_name = {c.name: c for c in cases}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise GoldenStoreError(f"unknown golden case(s) {unknown}; known: {sorted(by_name)}")
    return [by_name[n] for n in names]
