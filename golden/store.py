"""The golden store on disk: ``golden/data/<case>.npz`` plus ``golden/manifest.json``.

``regenerate`` runs every case on the reference, runs its cross-check, and writes
the arrays and a manifest entry (inputs, producer, flavour, torch version, sha256,
cross-check); the manifest as a whole carries ``manifest_sha256``, a checksum of
everything else in it, so an edited provenance field is caught like an edited file.
``check`` verifies that checksum, each file's sha256 and readability, that every
manifest entry agrees with its case's definition (provenance included), that no
stray ``.npz`` lies in the store, and that regenerating reproduces every file within
the case's tolerance; it reports each problem per case and keeps checking the
others. Files are written to a temporary name and renamed, so an interrupted run
never leaves a torn file.
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
        manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GoldenStoreError(f"{MANIFEST} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("cases"), dict):
        raise GoldenStoreError(f"{MANIFEST}: expected an object with a 'cases' object; "
                               "run `python -m golden regenerate`")
    return manifest


def manifest_digest(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON, without its own ``manifest_sha256``."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _manifest_problem(manifest: dict) -> str | None:
    stored = manifest.get("manifest_sha256")
    if stored is None:
        return "manifest has no manifest_sha256; run `python -m golden regenerate`"
    digest = manifest_digest(manifest)
    if stored != digest:
        return (f"manifest checksum {digest[:16]}... differs from its recorded "
                f"{str(stored)[:16]}...: an entry (provenance included) was edited by hand; "
                "run `python -m golden regenerate`")
    return None


def _entry(manifest: dict, name: str) -> dict:
    entry = manifest["cases"].get(name)
    if entry is None:
        raise GoldenStoreError(f"case {name!r} has no manifest entry; run "
                               "`python -m golden regenerate`")
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        raise GoldenStoreError(f"case {name!r}: its manifest entry is not an object with a "
                               "sha256; run `python -m golden regenerate`")
    return entry


def _read_npz(path: Path, entry: dict) -> Arrays:
    if not path.is_file():
        raise GoldenStoreError(f"golden file {path} is missing; run `python -m golden regenerate`")
    digest = sha256_of(path)
    if digest != entry["sha256"]:
        raise GoldenStoreError(
            f"{path}: sha256 {digest[:16]}... does not match the manifest "
            f"{entry['sha256'][:16]}...; the file was edited or corrupted"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - BadZipFile, OSError, ValueError, EOFError...
        raise GoldenStoreError(f"{path}: cannot read as .npz ({type(exc).__name__}: "
                               f"{exc})") from None


def load(case: GoldenCase) -> Arrays:
    """The stored arrays of ``case``, after checking the manifest's checksum and the
    file against its manifest entry."""
    manifest = read_manifest()
    problem = _manifest_problem(manifest)
    if problem:
        raise GoldenStoreError(f"{MANIFEST}: {problem}")
    return _read_npz(DATA / f"{case.name}.npz", _entry(manifest, case.name))


def _provenance(case: GoldenCase) -> dict:
    """The manifest fields a case's definition determines (JSON round trip applied)."""
    return json.loads(json.dumps({
        "component": case.component, "clause": case.clause, "producer": case.producer,
        "flavour": case.flavour, "inputs": case.inputs, "exact": list(case.exact),
        "tolerance": {"rtol": case.rtol, "atol": case.atol},
        "cross_checked": case.cross_checked,
    }))


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
        manifest["manifest_sha256"] = manifest_digest(manifest)
        _atomic_write(MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    for stale in DATA.glob("*.npz"):
        if stale.stem not in known:
            log(f"removing stale {stale.name}")
            stale.unlink()
    manifest["manifest_sha256"] = manifest_digest(manifest)
    _atomic_write(MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return manifest


def check(names: list[str] | None = None, log=print) -> list[str]:
    """Problems found (empty when the store is sound and reproducible), one line each,
    named by case; a broken case never stops the check of the others."""
    import reference

    problems: list[str] = []

    def fail(name: str, lines: list[str]) -> None:
        problems.extend(f"{name}: {line}" for line in lines)
        log(f"FAIL {name}: " + "; ".join(lines))

    cases = _select(names)
    manifest = read_manifest()  # unreadable: nothing to check against (GoldenStoreError)
    problem = _manifest_problem(manifest)
    if problem:
        fail("manifest", [problem])
    for case in cases:
        try:
            entry = _entry(manifest, case.name)
            stored = _read_npz(DATA / f"{case.name}.npz", entry)
        except GoldenStoreError as exc:
            fail(case.name, [str(exc)])
            continue
        diffs = [f"manifest {field} {entry.get(field)!r} disagrees with the case definition "
                 f"{expected!r}" for field, expected in _provenance(case).items()
                 if entry.get(field) != expected]
        recorded = entry.get("outputs")
        actual = {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in stored.items()}
        if recorded != actual:
            diffs.append(f"manifest outputs {recorded!r} disagree with the file's {actual!r}")
        try:
            fresh = case.outputs(reference, "cpu")
            diffs += case.compare(fresh, stored)
        except Exception as exc:  # noqa: BLE001 - the reference itself broke on this case
            diffs.append(f"regenerating raised {type(exc).__name__}: {exc}")
        if diffs:
            fail(case.name, diffs)
        else:
            log(f"ok   {case.name} ({entry.get('bytes')} bytes, sha256 {entry['sha256'][:12]})")
    known = {c.name for c in all_cases()}
    for name in sorted(set(manifest["cases"]) - known):
        fail(name, ["the manifest lists it but no case defines it"])
    if not names:
        listed = set(manifest["cases"])
        for path in sorted(DATA.glob("*")):
            if path.suffix == ".npz" and path.stem in known | listed:
                continue
            fail(path.name, [f"stray file {path} (no case or manifest entry); run `python -m "
                             "golden regenerate`, which removes stale files, or delete it"])
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
