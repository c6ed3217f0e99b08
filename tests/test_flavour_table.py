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


# --------------------------------------------------------------------------- docs/flavours.md
CELL_RE = r"(pass|not implemented|partial \d+/\d+|n/a|(deviation|FAIL)( \[\d+\])?)"


def test_committed_flavour_table_is_in_the_generators_format():
    """docs/flavours.md is ``python -m conformance table``'s output, not hand-written:
    it opens with the generator's own preamble (compared with what build_table writes
    for a tiny fake run), says what ran with versions, and every table row has one
    cell per implementation from the generator's vocabulary, every footnote used."""
    import re

    from conformance.table import DEFAULT_IMPLS, ORDER

    page = (REPO / "docs" / "flavours.md").read_text(encoding="utf-8")
    fresh = build_table({"fake": _report("0.0.1", [("iou", "IOU-1", "passed", None)])},
                        ["IOU-1"], {"IOU-1": "MUST: area"}, {"python": "3"})
    preamble = fresh[: fresh.index("- python: 3")]
    assert page.startswith(preamble), "docs/flavours.md does not start as the generator writes"
    lines = page.splitlines()
    ran = lines[lines.index("## What ran") + 1: lines.index("## Totals (tests)")]
    for key in ("python", "torch", "torchvision", "hypothesis profile"):
        assert any(line.startswith(f"- {key}: ") for line in ran), key
    for name in DEFAULT_IMPLS:  # each implementation with its version, or why it did not run
        assert any(re.match(rf"- \*\*{name}\*\*( \S.* \(flavours claimed: .*\)|: not run \(.+\))$",
                            line) for line in ran), name
    names = [line.split("**")[1] for line in ran if line.startswith("- **") and "not run" not in line]
    totals = lines.index("## Totals (tests)")
    assert lines[totals + 2] == ("| implementation | " + " | ".join(s.replace("_", " ") for s in ORDER)
                                 + " |")
    header = "| clause | " + " | ".join(names) + " |"
    sections = [i for i, line in enumerate(lines) if line.startswith("## ")
                and line not in ("## What ran", "## Totals (tests)")]
    assert sections, "no component tables"
    for k, start in enumerate(sections):
        end = sections[k + 1] if k + 1 < len(sections) else len(lines)
        assert lines[start + 2] == header, (lines[start], lines[start + 2])
        used, notes, i = set(), set(), start + 4
        while i < end and lines[i].startswith("| "):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", lines[i])[1:-1]]
            assert len(cells) == len(names) + 1, lines[i]
            assert re.match(r"([A-Z][A-Z0-9]*-[A-Za-z0-9.\-]+|-)( |$)", cells[0]), lines[i]
            for cell in cells[1:]:
                assert re.fullmatch(CELL_RE, cell), (lines[i], cell)
                used.update(re.findall(r"\[(\d+)\]", cell))
            i += 1
        for line in lines[i:end]:  # footnotes number afresh in each component
            m = re.match(r"\[(\d+)\] (\S+), (\S+): \S.*$", line)
            if m:
                assert m.group(2) in names, line
                notes.add(m.group(1))
        assert used == notes, (lines[start], sorted(used ^ notes))


def test_jobs_run_implementations_at_once_and_keep_the_order_asked(tmp_path, monkeypatch):
    import threading
    import time

    from conformance import table

    running, peak, lock = [0], [0], threading.Lock()

    def fake_run_suite(impl, report, pytest_args, profile):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.2 if impl == "a" else 0.05)  # "a" finishes last
        with lock:
            running[0] -= 1
        return _report(f"{impl}-1", [("iou", "IOU-1", "passed", None)])

    monkeypatch.setattr(table, "run_suite", fake_run_suite)
    out = tmp_path / "t.md"
    assert table.main(["--out", str(out), "--jobs", "3", "--impl", "a", "--impl", "b",
                       "--impl", "c"]) == 0
    assert peak[0] > 1
    assert "| clause | a | b | c |" in out.read_text(encoding="utf-8").splitlines()


def test_an_implementation_that_kills_the_run_is_reported_not_run_with_the_signal(tmp_path):
    """A native crash leaves no report: the page says which signal ended the run (the
    segfaults torchvision's RoIAlign kernel caused read as a progress line before)."""
    from conformance.table import run_suite

    crash = tmp_path / "crash.py"
    crash.write_text("import os, signal\n"
                     "def box_area(boxes):\n"
                     "    os.kill(os.getpid(), signal.SIGSEGV)\n", encoding="utf-8")
    report = run_suite(str(crash), tmp_path / "crash.json", ["-k", "box_area_matches"], "ci")
    assert "SIGSEGV" in report["not_run"] and "--impl=" in report["not_run"], report
