"""``python -m conformance table``: its cell rules on hand-made reports, and one real
run on a tiny fake implementation (a few box_area tests only, so it stays cheap)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from conformance.table import _cell, build_table

REPO = Path(__file__).resolve().parents[1]


def _report(version, tests, notes=()):
    return {"implementation": {"name": "x", "version": version, "flavours": ["mmdet"],
                               "notes": list(notes)},
            "tests": [dict(nodeid=f"t{i}", component=c, clause=k, status=s, deviation=d,
                           flavour=None) for i, (c, k, s, d) in enumerate(tests)]}


def test_cell_rules():
    assert _cell(["passed", "passed"]) == "pass"
    assert _cell(["passed", "failed"]) == "FAIL"
    assert _cell(["passed", "unexpected_pass"]) == "FAIL"
    assert _cell(["passed", "deviation"]) == "deviation"
    assert _cell(["not_implemented", "not_implemented"]) == "not implemented"
    assert _cell(["passed", "not_implemented", "skipped"]) == "partial 1/2"
    assert _cell(["skipped"]) == "n/a" and _cell([]) == "n/a"


def test_table_has_a_row_per_clause_a_column_per_implementation_and_the_reasons():
    reports = {
        "ref": _report("1.0", [("iou", "IOU-1", "passed", None),
                               ("iou", "IOU-2", "passed", None),
                               ("nms", "NMS-1", "passed", None)]),
        "up": _report("3.3", [("iou", "IOU-1", "deviation", "no eps floor (x.py:12)"),
                              ("iou", "IOU-2", "not_implemented", None),
                              ("nms", "NMS-1", "failed", None)], notes=["kernels stubbed"]),
        "gone": {"not_run": "--impl=gone: cannot import 'gone'"},
    }
    page = build_table(reports, ["IOU-1", "IOU-2", "NMS-1"],
                       {"IOU-1": "MUST: area is w * h", "NMS-1": "MUST: greedy | strict"},
                       {"torch": "2.x"})
    lines = page.splitlines()
    assert "| clause | ref | up |" in lines
    assert "| IOU-1 area is w * h | pass | deviation [1] |" in lines
    assert "| IOU-2 | pass | not implemented |" in lines
    assert "| NMS-1 greedy \\| strict | pass | FAIL |" in lines  # pipes escaped
    assert "[1] up, IOU-1: no eps floor (x.py:12)  " in lines
    assert "- **up** 3.3 (flavours claimed: mmdet)" in lines and "  - note: kernels stubbed" in lines
    assert "- **gone**: not run (--impl=gone: cannot import 'gone')" in lines
    assert "- torch: 2.x" in lines
    assert lines.index("## iou") < lines.index("## nms")
    assert "| up | 1 | 0 | 1 | 1 | 0 | 0 |" in lines  # failed, unexp., dev., n/i, passed, skip


FAKE = '''
import torch
CONFORMANCE = {"name": "fake", "version": "0.0.1", "flavours": ["mmdet"],
               "deviations": "fake.deviations"}

def box_area(boxes):  # right values, no input validation at all
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
'''

FAKE_DEVIATIONS = ("conformance/test_boxes.py::test_box_area_rejects_integer_boxes"
                   "  # fake accepts integer boxes\n")


def test_the_command_runs_the_suite_and_writes_the_page(tmp_path):
    (tmp_path / "fake.py").write_text(textwrap.dedent(FAKE), encoding="utf-8")
    (tmp_path / "fake.deviations").write_text(FAKE_DEVIATIONS, encoding="utf-8")
    out = tmp_path / "flavours.md"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "conformance", "table", "--out", str(out),
         "--impl", str(tmp_path / "fake.py"), "--impl", str(tmp_path / "missing_impl.py"),
         "--", "-k", "box_area_matches or box_area_rejects or test_zero_area"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    page = out.read_text(encoding="utf-8")
    assert "- **fake** 0.0.1 (flavours claimed: mmdet)" in page
    assert "- **missing_impl**: not run (" in page and "no such file" in page
    rows = {line.split(" ")[1]: line for line in page.splitlines()
            if line.startswith("| IOU-")}
    assert rows["IOU-1"].endswith("| pass |")          # box_area values
    assert rows["IOU-11"].endswith("| not implemented |")  # box_iou is absent
    assert "| FAIL |" in rows["IOU-V1"]                   # no validation of the last dim
    assert "deviation [" in rows["IOU-V2"]                # declared: integer boxes
    assert "fake, IOU-V2: fake accepts integer boxes" in page


def test_mmdet_without_mmdet_is_one_clear_usage_error():
    import importlib.util

    import pytest

    from conformance.implementation import load_implementation
    if importlib.util.find_spec("mmdet") is not None:
        pytest.skip("mmdet is installed here")
    with pytest.raises(pytest.UsageError) as info:
        load_implementation("mmdet")
    message = str(info.value)
    assert "\n" not in message and message.startswith("--impl=mmdet: mmdetection 3.x")
    assert "pip install -e '.[upstream]'" in message
