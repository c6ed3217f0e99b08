"""scripts/measure_readme.py: the README's figures come from a script that names the machine."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "measure_readme.py"


def _module():
    spec = importlib.util.spec_from_file_location("measure_readme", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_runs_give_the_spread_the_machine_and_the_load(tmp_path):
    from reference.data import SyntheticShapesConfig, ensure_synthetic_dataset

    data = ensure_synthetic_dataset(
        SyntheticShapesConfig(image_size=48, num_train=8, num_val=4, object_size=(12, 24),
                              objects=(1, 2)), cache_dir=tmp_path / "cache")
    tiny = [f"--train-arg={a}" for a in (
        "--model=test_train:build_standin", f"--data-path={data}", "--min-size=48",
        "--max-size=48", "--batch-size=4", "--workers=0", "--device=cpu", "--epochs=1")]
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--runs", "2", *tiny, "--out-dir",
                           str(tmp_path / "out"), "--work-dir", str(tmp_path / "work"),
                           "--note", "A test.", "--parallel"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "out" / "figures.json").read_text())
    m = report["machine"]
    assert m["cores"] >= 1 and m["cpu"] and m["torch"] and len(m["load_at_start"]) == 3
    runs = report["training"]
    assert [r["seed"] for r in runs] == [0, 1]
    for r in runs:
        assert r["wall_s"] > 0 and 0 <= r["ap"] <= 1 and len(r["ap_per_epoch"]) == 1
        assert r["steps"] == 2 and r["load_1min"]["max"] >= 0
    assert report["dataset_write_s"] is None  # own data: nothing written to the cache
    text = (tmp_path / "out" / "figures.md").read_text()
    assert "--parallel" in text and "side by side" in text and report["parallel"]
    assert "2 runs" in text and "cores usable" in text and "load average" in text
    assert f"torch {m['torch']}" in text and text.rstrip().endswith("A test.")
    assert "test_train:build_standin" in text  # a figure of a custom command says so


def test_a_run_over_budget_is_stopped_and_reported_as_not_finished(tmp_path):
    from reference.data import SyntheticShapesConfig, ensure_synthetic_dataset

    data = ensure_synthetic_dataset(
        SyntheticShapesConfig(image_size=48, num_train=8, num_val=4, object_size=(12, 24),
                              objects=(1, 2)), cache_dir=tmp_path / "cache")
    slow = [f"--train-arg={a}" for a in (
        "--model=test_train:build_standin", f"--data-path={data}", "--min-size=48",
        "--max-size=48", "--batch-size=4", "--workers=0", "--device=cpu", "--epochs=50",
        "--model-override=delay=1.0", "--no-eval")]
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--runs", "1", *slow, "--budget-min",
                           "0.1", "--out-dir", str(tmp_path / "out"), "--work-dir",
                           str(tmp_path / "work")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (run,) = json.loads((tmp_path / "out" / "figures.json").read_text())["training"]
    assert run["finished"] is False and run["ap"] is None and run["wall_s"] >= 6
    assert run["steps_done"] < 100  # 50 epochs x 2 steps of >= 1 s each
    text = (tmp_path / "out" / "figures.md").read_text()
    assert "seed 0 NOT finished" in text and "--budget-min 0.1" in text
    assert "No final AP was measured." in text


def test_readme_blocks_are_replaced_and_a_missing_one_is_an_error(tmp_path):
    module = _module()
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- measured:training -->\nold\n<!-- /measured:training -->\nb\n")
    assert module.update_readme(readme, {"training": "new figures"}) == ["training"]
    assert readme.read_text() == ("a\n<!-- measured:training -->\nnew figures\n"
                                  "<!-- /measured:training -->\nb\n")
    with pytest.raises(ValueError, match="measured:suite"):
        module.update_readme(readme, {"suite": "x"})


def test_spread_is_median_min_max():
    module = _module()
    assert module.spread([3.0, 1.0, 2.0], lambda v: f"{v:.1f}") == "2.0 (min 1.0, max 3.0, 3 runs)"
    assert module.spread([0.8], lambda v: f"{v:.3f}") == "0.800"
    assert module._mmss(140.4) == "2 min 20 s" and module._mmss(59) == "59 s"
    assert module._mmss(3.14) == "3.1 s"


def test_a_suite_only_run_keeps_the_training_figures_it_did_not_measure(tmp_path):
    module = _module()
    old_machine = {"cpu": "old CPU"}
    (tmp_path / "figures.json").write_text(json.dumps(
        {"machine": old_machine, "training": [{"seed": 0, "ap": 0.8}]}))
    (tmp_path / "figures.md").write_text(
        "# Measured figures\n\n**training**: ten minutes, AP 0.8.\n")  # before "texts" existed
    new = {"machine": {"cpu": "new CPU"}, "suite": {"wall_s": 60.0},
           "texts": {"suite": "one minute."}}
    merged = module.keep_unmeasured(tmp_path / "figures.json", new)
    assert merged["texts"] == {"training": "ten minutes, AP 0.8.", "suite": "one minute."}
    assert merged["training"] == [{"seed": 0, "ap": 0.8}] and merged["suite"] == {"wall_s": 60.0}
    assert merged["machine_of"] == {"training": old_machine, "suite": {"cpu": "new CPU"}}
    # measured again: the new figures replace the old ones
    again = module.keep_unmeasured(tmp_path / "figures.json", {
        "machine": {"cpu": "x"}, "training": [], "texts": {"training": "new."}})
    assert again["texts"] == {"training": "new."} and again["training"] == []
