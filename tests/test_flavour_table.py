"""``python -m conformance table``: its cell rules on hand-made reports, and one real
run on a tiny fake implementation (a few box_area tests only, so it stays cheap)."""

from __future__ import annotations

import json
import os
import re
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
    reports["up"]["wall_s"] = 389.4
    page = build_table(reports, ["IOU-1", "IOU-2", "NMS-1"],
                       {"IOU-1": "MUST: area is w * h", "NMS-1": "MUST: greedy | strict"},
                       {"torch": "2.x"})
    lines = page.splitlines()
    assert "| clause | ref | up |" in lines
    assert "| IOU-1 area is w * h | pass | deviation [1] |" in lines
    assert "| IOU-2 | pass | not implemented |" in lines
    assert "| NMS-1 greedy \\| strict | pass | FAIL |" in lines  # pipes escaped
    assert "[1] up, IOU-1: no eps floor (x.py:12)  " in lines
    assert "- **up** 3.3 (flavours claimed: mmdet): 6 min 29 s wall" in lines
    assert "  - note: kernels stubbed" in lines
    assert "- **ref** 1.0 (flavours claimed: mmdet)" in lines  # no time measured: none stated
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


CRASH = ("import os, signal\n"
         "def box_area(boxes):\n"
         "    os.kill(os.getpid(), signal.SIGSEGV)\n")


def test_the_command_runs_the_suite_and_writes_the_page(tmp_path):
    """One real run (three pytest processes at once, so CI waits for one): a fake port,
    a missing file, and a port whose native crash leaves no report: the page says which
    signal ended that run (the segfaults torchvision's RoIAlign kernel caused read as a
    progress line before). "What ran" names the machine, --jobs and each run's time."""
    (tmp_path / "fake.py").write_text(textwrap.dedent(FAKE), encoding="utf-8")
    (tmp_path / "fake.deviations").write_text(FAKE_DEVIATIONS, encoding="utf-8")
    (tmp_path / "crash.py").write_text(CRASH, encoding="utf-8")
    out = tmp_path / "flavours.md"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "conformance", "table", "--out", str(out), "--jobs", "3",
         "--impl", str(tmp_path / "fake.py"), "--impl", str(tmp_path / "missing_impl.py"),
         "--impl", str(tmp_path / "crash.py"),
         # Those tests all live in test_boxes.py: collecting only it spares each of the
         # three pytest processes importing the other suite modules (seconds each). An
         # absolute pattern: pytest prefixes a relative one with the cwd (tmp_path).
         "--", "-k", "box_area_matches or box_area_rejects or test_zero_area",
         f"--ignore-glob={REPO / 'conformance'}/test_[!b]*.py"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    page = out.read_text(encoding="utf-8")
    lines = page.splitlines()
    assert any(re.fullmatch(r"- \*\*fake\*\* 0\.0\.1 \(flavours claimed: mmdet\): "
                            r"(\d+\.\d s|\d+ s|\d+ min \d\d s) wall", ln) for ln in lines), page
    assert "- **missing_impl**: not run (" in page and "no such file" in page
    crash = next(ln for ln in lines if ln.startswith("- **crash**: not run ("))
    assert "SIGSEGV" in crash and "--impl=" in crash, crash
    assert any(ln.startswith("- jobs: 3 (") for ln in lines)
    assert any(re.fullmatch(r"- machine: .+, \d+ cores usable(, [\d.]+ GiB)?", ln) for ln in lines)
    assert any(re.fullmatch(r"- 1-minute load average: (\d+\.\d at start, \d+\.\d at end|"
                            r"unknown on this platform)", ln) for ln in lines), page
    rows = {line.split(" ")[1]: line for line in lines if line.startswith("| IOU-")}
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
    for key in ("python", "torch", "torchvision", "hypothesis profile", "machine", "jobs",
                "torch threads", "started", "1-minute load average", "wall time in all"):
        assert any(line.startswith(f"- {key}: ") for line in ran), key  # how it ran, where
    for name in DEFAULT_IMPLS:  # each with its version and wall time, or why it did not run
        assert any(re.match(rf"- \*\*{name}\*\*( \S.* \(flavours claimed: .*\): \S.* wall|"
                            r": not run \(.+\))$", line) for line in ran), name
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
        data = _report(f"{impl}-1", [("iou", "IOU-1", "passed", None)])
        report.write_text(json.dumps(data), encoding="utf-8")  # as --conformance-report does
        return data

    monkeypatch.setattr(table, "run_suite", fake_run_suite)
    loads = iter([[1.31, 1.0, 1.0], [3.5, 2.0, 1.0]])  # the 1-minute load at start, at end
    monkeypatch.setattr(table, "load_average", lambda: next(loads))
    out = tmp_path / "t.md"
    assert table.main(["--out", str(out), "--jobs", "3", "--impl", "a", "--impl", "b",
                       "--impl", "c", "--reports", str(tmp_path / "kept")]) == 0
    assert peak[0] > 1
    lines = out.read_text(encoding="utf-8").splitlines()
    assert "| clause | a | b | c |" in lines
    # "What ran" says how it ran: the machine, --jobs, the load, each run's wall time
    from conformance.machine import describe
    assert f"- machine: {describe()}" in lines and "cores usable" in describe()
    assert any(line.startswith("- jobs: 3 (") for line in lines)
    assert "- 1-minute load average: 1.3 at start, 3.5 at end" in lines
    assert any(re.fullmatch(r"- started: \d{4}-\d\d-\d\d \d\d:\d\d UTC", ln) for ln in lines)
    walls = {}
    for line in lines:
        m = re.fullmatch(r"- \*\*(\w)\*\* \w-1 \(flavours claimed: mmdet\): (\d+\.\d) s wall", line)
        if m:
            walls[m.group(1)] = float(m.group(2))
    assert sorted(walls) == ["a", "b", "c"] and walls["a"] >= 0.2, walls  # "a" slept 0.2 s
    total = next(ln for ln in lines if ln.startswith("- wall time in all: "))
    assert float(total.split(": ")[1].removesuffix(" s")) >= walls["a"]
    # a page rebuilt from the kept reports keeps their times and says nothing ran now
    again = tmp_path / "again.md"
    assert table.main(["--out", str(again), "--impl", "a", "--from-reports",
                       str(tmp_path / "kept")]) == 0
    rebuilt = again.read_text(encoding="utf-8").splitlines()
    assert f"- **a** a-1 (flavours claimed: mmdet): {walls['a']} s wall" in rebuilt
    assert any(ln.startswith("- run: page built from the reports in ") for ln in rebuilt)
    assert not any(ln.startswith(("- jobs:", "- 1-minute load")) for ln in rebuilt)


def test_the_readmes_flavour_table_totals_are_the_committed_pages():
    """README states the committed page's totals: they come from docs/flavours.md (which
    names the machine and the time each run took), so a regenerated page that changes
    them must change the README too."""
    import re

    from conformance.table import ORDER

    page = (REPO / "docs" / "flavours.md").read_text(encoding="utf-8").splitlines()
    start = page.index("## Totals (tests)") + 4
    totals = {}
    for line in page[start:]:
        if not line.startswith("| "):
            break
        name, *counts = [c.strip() for c in line.strip("|").split("|")]
        totals[name] = dict(zip(ORDER, map(int, counts)))
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    said = re.search(r"The committed page: 0 failures on all four; reference (\d+) passed, "
                     r"torchvision (\d+) passed and (\d+) declared deviations, mmdet \S+ (\d+) "
                     r"and (\d+), detectron2 \(\w+\) (\d+) and (\d+)\.", readme)
    assert said, "README's sentence on the committed flavour table's totals is gone"
    assert sorted(totals) == ["detectron2", "mmdet", "reference", "torchvision"], totals
    assert all(t["failed"] == t["unexpected_pass"] == 0 for t in totals.values()), totals
    stated = [int(n) for n in said.groups()]
    assert stated == [totals["reference"]["passed"],
                      totals["torchvision"]["passed"], totals["torchvision"]["deviation"],
                      totals["mmdet"]["passed"], totals["mmdet"]["deviation"],
                      totals["detectron2"]["passed"], totals["detectron2"]["deviation"]]
