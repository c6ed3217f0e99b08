"""The golden store's own machinery, on a throw-away store with toy cases."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from golden import store
from golden.case import GoldenCase, exact_sha256, sampled_rows


def _toy_cases(scale=1.0):
    def run(module, device):
        x = torch.arange(12, dtype=torch.float32, device=device).reshape(6, 2) * scale
        return {"values": x, "flags": exact_sha256(x > 3)}

    return [GoldenCase(name="toy", component="toy", clause="HAR-3", producer="arange",
                       flavour="none", inputs={"n": 12}, run=run, exact=("flags",),
                       cross_checked="by eye", cross_check=None)]


@pytest.fixture()
def toy_store(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "DATA", tmp_path / "data")
    monkeypatch.setattr(store, "MANIFEST", tmp_path / "manifest.json")
    monkeypatch.setattr(store, "all_cases", lambda: _toy_cases())
    return tmp_path


def test_regenerate_writes_npz_and_manifest_with_provenance(toy_store):
    manifest = store.regenerate(log=lambda *_: None)
    entry = manifest["cases"]["toy"]
    assert (toy_store / "data" / "toy.npz").is_file()
    assert entry["sha256"] == store.sha256_of(toy_store / "data" / "toy.npz")
    assert entry["torch_version"] == torch.__version__
    assert entry["cross_checked"] == "by eye" and entry["clause"] == "HAR-3"
    assert store.check(log=lambda *_: None) == []


def test_check_detects_an_edited_file(toy_store):
    store.regenerate(log=lambda *_: None)
    path = toy_store / "data" / "toy.npz"
    np.savez_compressed(path, values=np.zeros((6, 2), np.float32), flags=np.zeros(32, np.uint8))
    problems = store.check(log=lambda *_: None)
    assert problems and "sha256" in problems[0]


def test_check_detects_a_corrupt_manifest(toy_store):
    store.regenerate(log=lambda *_: None)
    (toy_store / "manifest.json").write_text("{not json")
    with pytest.raises(store.GoldenStoreError, match="not valid JSON"):
        store.check(log=lambda *_: None)


def test_check_detects_drift_of_the_reference(toy_store, monkeypatch):
    store.regenerate(log=lambda *_: None)
    monkeypatch.setattr(store, "all_cases", lambda: _toy_cases(scale=1.5))
    problems = store.check(log=lambda *_: None)
    assert any("values" in p for p in problems)


def test_missing_file_names_the_fix(toy_store):
    store.regenerate(log=lambda *_: None)
    (toy_store / "data" / "toy.npz").unlink()
    problems = store.check(log=lambda *_: None)
    assert "python -m golden regenerate" in problems[0]


def test_unknown_case_name_is_a_clear_error(toy_store):
    with pytest.raises(store.GoldenStoreError, match="unknown golden case"):
        store.check(["nope"], log=lambda *_: None)


def test_exact_keys_compare_bit_for_bit():
    case = _toy_cases()[0]
    a = {"values": np.ones(3), "flags": np.array([1, 2, 3])}
    b = {"values": np.ones(3) + 1e-9, "flags": np.array([1, 2, 4])}
    problems = case.compare(a, b)
    assert len(problems) == 1 and "flags" in problems[0]


def test_sampled_rows_keep_first_and_last():
    x = torch.arange(1000).reshape(500, 2)
    rows = sampled_rows(x, count=10)
    assert rows.shape == (10, 2)
    assert rows[0].tolist() == [0, 1] and rows[-1].tolist() == [998, 999]


def test_the_shipped_store_is_sound_and_reproducible():
    assert store.check(log=lambda *_: None) == []


# --------------------------------------------------------------------------- tampering
def _two_cases():
    first = _toy_cases()[0]
    second = dataclasses.replace(first, name="toy_b", clause="HAR-4", inputs={"n": 12, "b": 1})
    return [first, second]


@pytest.fixture()
def two_store(toy_store, monkeypatch):
    monkeypatch.setattr(store, "all_cases", _two_cases)
    store.regenerate(log=lambda *_: None)
    return toy_store


def _edit_manifest(root, edit, reseal=True):
    path = root / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    if reseal:  # as someone who knows the format would
        manifest["manifest_sha256"] = store.manifest_digest(manifest)
    path.write_text(json.dumps(manifest))


def _check():
    lines = []
    problems = store.check(log=lines.append)
    return problems, lines


def test_a_corrupt_npz_is_reported_for_its_case_and_the_others_are_still_checked(two_store):
    path = two_store / "data" / "toy.npz"
    path.write_bytes(b"PK\x03\x04 not a zip at all")
    _edit_manifest(two_store, lambda m: m["cases"]["toy"].update(sha256=store.sha256_of(path)))
    problems, lines = _check()
    assert len(problems) == 1 and problems[0].startswith("toy: ") and \
        "cannot read as .npz (BadZipFile" in problems[0]
    assert any(line.startswith("ok   toy_b") for line in lines)


@pytest.mark.parametrize("edit, needle", [
    (lambda m: m["cases"].__setitem__("toy", "oops"), "not an object with a sha256"),
    (lambda m: m["cases"]["toy"].pop("sha256"), "not an object with a sha256"),
    (lambda m: m["cases"]["toy"].pop("outputs"), "manifest outputs None"),
    (lambda m: m["cases"]["toy"].update(inputs={"n": 13}), "manifest inputs"),
    (lambda m: m["cases"]["toy"].update(cross_checked="nothing"), "manifest cross_checked"),
    (lambda m: m["cases"]["toy"].update(tolerance=None), "manifest tolerance"),
    (lambda m: m["cases"]["toy"].update(flavour=["x"]), "manifest flavour"),
])
def test_manifest_edits_are_reported_per_case_never_a_crash(two_store, edit, needle):
    _edit_manifest(two_store, edit)
    problems, lines = _check()
    assert problems and all(p.startswith("toy: ") for p in problems), problems
    assert needle in problems[0]
    assert any(line.startswith("ok   toy_b") for line in lines)


def test_a_hand_edited_provenance_field_breaks_the_manifest_checksum(two_store):
    _edit_manifest(two_store, lambda m: m["cases"]["toy"].update(torch_version="0.0.1"),
                   reseal=False)
    problems, _ = _check()
    assert problems == [problems[0]] and problems[0].startswith("manifest: manifest checksum")
    with pytest.raises(store.GoldenStoreError, match="edited by hand"):
        store.load(_two_cases()[1])


def test_a_stray_npz_without_a_case_or_entry_is_reported(two_store):
    np.savez_compressed(two_store / "data" / "extra.npz", x=np.zeros(2))
    problems, _ = _check()
    assert len(problems) == 1 and problems[0].startswith("extra.npz: stray file")


def test_the_cli_exits_non_zero_and_lists_each_problem(two_store, capsys):
    from golden.__main__ import main

    (two_store / "data" / "toy.npz").write_bytes(b"garbage")
    np.savez_compressed(two_store / "data" / "extra.npz", x=np.zeros(2))
    assert main(["check"]) == 1
    out, err = capsys.readouterr()
    assert "FAIL toy:" in out and "FAIL extra.npz:" in out and "ok   toy_b" in out
    assert "2 problem(s)" in err
