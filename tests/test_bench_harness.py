"""The benchmark harness (bench/conftest.py) on a toy workload file and a toy port.

One subprocess: implementations interleaved round by round, min/median/max, a
floor row, NumPy memory counted (process high-water RSS), a port lacking a name
skipped rather than failing, workloads sorted numerically, results written
outside the tree unless --bench-publish.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PORT = '''
import numpy as np

CONFORMANCE = {"name": "toyport", "version": "0.1"}

def box_area(boxes):
    scratch = np.ones((64, 1024, 1024), dtype=np.uint8)  # 64 MiB NumPy scratch, every page written
    del scratch
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
'''

BENCH = '''
import json, os
from pathlib import Path

import torch

CALLS = []


def _logged(name, fn):
    def run():
        CALLS.append(name)
        return fn()
    return run


def _area_case(bench_case, n):
    boxes = torch.rand(n, 4) * 10
    boxes[:, 2:] += boxes[:, :2]

    def make(m):
        box_area = m.box_area
        return _logged(m.bench_name, lambda: box_area(boxes))
    bench_case(f"area {n}", make, check=lambda a, b: torch.testing.assert_close(a, b),
               output_bytes=n * 4, rounds=4)


def test_area_100(bench_case):
    _area_case(bench_case, 100)


def test_area_20(bench_case):
    _area_case(bench_case, 20)


def test_giou(bench_case):
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0]])

    def make(m):
        giou_loss = m.giou_loss  # toyport has none: skipped, not failed
        return lambda: giou_loss(boxes, boxes)
    bench_case("giou 1", make, rounds=2)


def test_zz_dump_calls():
    Path(os.environ["BENCH_CALLS_LOG"]).write_text(json.dumps(CALLS))
'''


def _collapse(seq):
    out = []
    for x in seq:
        if not out or out[-1] != x:
            out.append(x)
    return out


def test_bench_harness_end_to_end(tmp_path):
    toy = tmp_path / "toybench"
    toy.mkdir()
    (toy / "conftest.py").write_text("from bench.conftest import *  # noqa\n")
    (toy / "test_toy_bench.py").write_text(BENCH)
    (tmp_path / "toyport.py").write_text(PORT)
    committed = (REPO / "bench" / "results" / "cpu.md").read_bytes()
    log = tmp_path / "calls.json"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}",
           "DETSPEC_CACHE": str(tmp_path / "cache"), "BENCH_CALLS_LOG": str(log)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(toy), "-p", "no:cacheprovider", "--rootdir",
         str(toy), "--impl=toyport", "--bench-threads=1", "-q"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out  # the missing giou_loss skipped the port, no failure
    assert (REPO / "bench" / "results" / "cpu.md").read_bytes() == committed
    folder = tmp_path / "cache" / "bench"
    assert f"bench: table written to {folder / 'cpu.md'}" in out
    records = json.loads((folder / "cpu.json").read_text())["records"]
    by = {(r["workload"], r["impl"]): r for r in records}
    assert "does not expose 'giou_loss'" in by[("giou 1", "toyport")]["skipped"]
    ran = [r["impl"] for r in records if r["workload"] == "area 20" and "median_s" in r]
    assert {"reference", "toyport", "floor"} <= set(ran)
    for impl in ran:
        r = by[("area 20", impl)]
        assert r["min_s"] <= r["median_s"] <= r["max_s"] and len(r["samples_s"]) == 4
    # NumPy's 64 MiB scratch shows in the port's peak (process RSS), not in the reference's.
    assert by[("area 20", "toyport")]["peak_bytes"] >= 48 * 2**20
    assert by[("area 20", "reference")]["peak_bytes"] < 16 * 2**20
    # Interleaved: per workload, warm-up, calibration, 4 rounds (each a run of calls
    # per implementation), one peak-memory call; timed in blocks, each implementation
    # would appear 2-3 times per workload, not 7.
    calls = _collapse(json.loads(log.read_text()))
    impls = [i for i in ran if i != "floor"]
    per_workload = 2 + 4 + 1
    for impl in impls:
        assert calls.count(impl) == 2 * per_workload, (impl, calls)  # two area workloads
    table = (folder / "cpu.md").read_text()
    assert "| workload | implementation | min | median | max |" in table
    assert table.index("| area 20 |") < table.index("| area 100 |")  # numeric, not string order
    assert "| area 20 | floor (write the output) |" in table
    assert table.index("| area 20 | reference |") < table.index("| area 20 | floor")


def test_results_go_outside_the_tree_unless_published(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO))
    from bench import conftest as bc

    class Config:
        def __init__(self, **opts):
            self.opts = opts

        def getoption(self, name):
            return self.opts.get(name)

    monkeypatch.setenv("DETSPEC_CACHE", str(tmp_path))
    assert bc.results_dir(Config()) == tmp_path / "bench"
    assert bc.results_dir(Config(**{"--bench-results": "x"})) == Path("x")
    assert bc.results_dir(Config(**{"--bench-publish": True})) == REPO / "bench" / "results"
