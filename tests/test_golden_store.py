"""The golden store's own machinery, on a throw-away store with toy cases."""

from __future__ import annotations

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
