"""``python -m conformance table``: the executable flavour table.

Runs the conformance suite on the reference and on every shipped upstream
adapter that imports here (torchvision, mmdet, detectron2), one pytest process
each with ``--conformance-report``, and writes one Markdown table per component:
a row per SPEC.md clause, a column per implementation, each cell one of

- ``pass``: every test of the clause that ran passed;
- ``deviation [n]``: a declared deviation (footnote n gives the implementation's
  reason, from its deviations file);
- ``not implemented``: the implementation lacks the protocol name or option;
  ``partial p/t`` when p of the t tests ran and the rest are not implemented;
- ``FAIL``: a test failed (or a declared deviation unexpectedly passed);
- ``n/a``: no test of the clause applies (a flavour the implementation does not
  claim, or the strict tier).

Declared deviations are skipped, not run (``--skip-deviations``): the table shows
them with their reasons without waiting for hypothesis to shrink a known failure;
run pytest on one implementation to see whether a declared deviation still fails.
The page states the versions it ran (each implementation's, Python's, torch's),
the hypothesis profile, the machine (CPU model, cores usable, memory), ``--jobs``,
the 1-minute load average at start and end, and each implementation's wall time:
the suite's duration depends on all of them. ``docs/flavours.md`` is this command's output: it is
generated, never edited by hand.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from conformance.machine import describe, duration, load_average

DEFAULT_IMPLS = ("reference", "torchvision", "mmdet", "detectron2")
ORDER = ("failed", "unexpected_pass", "deviation", "not_implemented", "passed", "skipped")


# --------------------------------------------------------------------------- running
def run_suite(impl: str, report: Path, pytest_args: list[str], profile: str) -> dict:
    """Run the suite on ``impl`` in a subprocess; return its report, or why it did not run."""
    here = Path(__file__).resolve().parent
    cmd = [sys.executable, "-m", "pytest", str(here), "--rootdir", str(here.parent),
           "-p", "no:cacheprovider", "-q", "--no-header", "-p", "no:randomly",
           f"--impl={impl}", f"--conformance-report={report}", "--skip-deviations",
           *pytest_args]
    env = dict(os.environ, CONFORMANCE_PROFILE=profile)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if report.is_file():
        data = json.loads(report.read_text(encoding="utf-8"))
        data["exit_code"] = proc.returncode
        return data
    if proc.returncode < 0:  # killed by a signal: no report, and no error line to quote
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        return {"not_run": f"the pytest process died of {name} before writing its report "
                f"(rerun: python -X faulthandler -m pytest conformance --impl={impl})"}
    lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    reason = next((ln for ln in lines if "ERROR" in ln or "Error" in ln), None)
    return {"not_run": (reason or (lines[-1] if lines else f"exit code {proc.returncode}"))
            .removeprefix("ERROR: ").strip()}


# --------------------------------------------------------------------------- building
def clause_order() -> list[str]:
    from conformance.plugin import read_clauses
    return list(read_clauses())


def _cell(statuses: list[str]) -> str:
    counts = defaultdict(int)
    for s in statuses:
        counts[s] += 1
    ran = sum(counts[s] for s in ("failed", "unexpected_pass", "deviation",
                                  "not_implemented", "passed"))
    if ran == 0:
        return "n/a"
    if counts["failed"] or counts["unexpected_pass"]:
        return "FAIL"
    if counts["deviation"]:
        return "deviation"
    if counts["not_implemented"] and counts["passed"]:
        return f"partial {counts['passed']}/{ran}"
    if counts["not_implemented"]:
        return "not implemented"
    return "pass"


def build_table(reports: dict[str, dict], clauses: list[str] | None = None,
                clause_text: dict[str, str] | None = None,
                environment: dict[str, str] | None = None) -> str:
    """The Markdown page for ``reports`` ({impl name: report dict or {"not_run": why}})."""
    clauses = clauses or []
    clause_text = clause_text or {}
    ran = {name: r for name, r in reports.items() if "not_run" not in r}
    names = list(ran)
    # (component, clause) -> impl -> [statuses]; reasons per (component, clause, impl)
    cells: dict[tuple[str, str], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    reasons: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for name, report in ran.items():
        for test in report["tests"]:
            key = (test["component"], test["clause"] or "-")
            cells[key][name].append(test["status"])
            if test["status"] in ("deviation", "unexpected_pass") and test.get("deviation"):
                if test["deviation"] not in reasons[key + (name,)]:
                    reasons[key + (name,)].append(test["deviation"])
    rank = {c: i for i, c in enumerate(clauses)}

    out = ["# Flavour table: the conformance suite on the reference and on upstream",
           "",
           "Generated by `python -m conformance table` (do not edit by hand). Each cell is "
           "one SPEC.md clause on one implementation: `pass` (every test of the clause "
           "that ran passed), `deviation [n]` (a declared deviation; footnote n quotes its "
           "reason), `not implemented` (the protocol name or option is absent; `partial "
           "p/t`: p of t tests passed, the rest not implemented), `FAIL`, or `n/a` (the clause belongs to a flavour "
           "the implementation does not claim, or to the strict tier).",
           "",
           "## What ran", ""]
    for key, value in (environment or {}).items():
        out.append(f"- {key}: {value}")
    for name, report in reports.items():
        if "not_run" in report:
            out.append(f"- **{name}**: not run ({report['not_run']})")
            continue
        impl = report["implementation"]
        flavours = ", ".join(impl.get("flavours") or []) or "none"
        line = f"- **{name}** {impl['version']} (flavours claimed: {flavours})"
        if report.get("wall_s") is not None:
            line += f": {duration(report['wall_s'])} wall"
        out.append(line)
        for note in impl.get("notes") or []:
            out.append(f"  - note: {note}")
    out += ["", "## Totals (tests)", "",
            "| implementation | " + " | ".join(s.replace("_", " ") for s in ORDER) + " |",
            "|---|" + "---:|" * len(ORDER)]
    for name in names:
        totals = defaultdict(int)
        for test in ran[name]["tests"]:
            totals[test["status"]] += 1
        out.append(f"| {name} | " + " | ".join(str(totals[s]) for s in ORDER) + " |")

    by_component: dict[str, list[str]] = defaultdict(list)
    for component, clause in cells:
        by_component[component].append(clause)
    for component in sorted(by_component):
        out += ["", f"## {component}", "",
                "| clause | " + " | ".join(names) + " |",
                "|---|" + "---|" * len(names)]
        notes: list[str] = []
        for clause in sorted(by_component[component], key=lambda c: (rank.get(c, 10**6), c)):
            row = []
            for name in names:
                cell = _cell(cells[(component, clause)].get(name, []))
                why = reasons.get((component, clause, name))
                if why and cell in ("deviation", "FAIL"):
                    notes.append(f"[{len(notes) + 1}] {name}, {clause}: " + "; ".join(why))
                    cell = f"{cell} [{len(notes)}]"
                row.append(cell)
            text = clause_text.get(clause, "")
            label = f"{clause}" + (f" {_short(text)}" if text else "")
            out.append(f"| {label} | " + " | ".join(row) + " |")
        if notes:
            out.append("")
            out += [f"{n}  " for n in notes]
    return "\n".join(out).rstrip() + "\n"


def _short(text: str, width: int = 70) -> str:
    text = re.sub(r"^(MUST|STRICT)( \([a-z0-9]+\))?:\s*", "", text).replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def environment(profile: str, run: dict | None = None) -> dict[str, str]:
    """The page's "What ran" lines: versions, profile and, for a page whose suites ran
    now, how (``run``: jobs, start date, 1-minute load at start and end, seconds in all)."""
    import torch
    import torchvision
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "hypothesis profile": profile,
        "machine": describe(),
    }
    if run is None:
        return env
    if run.get("from_reports"):
        env["run"] = (f"page built from the reports in {run['from_reports']} (nothing ran; "
                      "the wall times are those of the runs that wrote them)")
        return env
    start, end = run.get("load_start"), run.get("load_end")
    env["jobs"] = (f"{run['jobs']} (implementations run at once, one pytest process each; "
                   "a wall time below includes waiting for the cores the others used)")
    threads = os.environ.get("OMP_NUM_THREADS")
    env["torch threads"] = (f"OMP_NUM_THREADS={threads}" if threads else
                            "torch's default (OMP_NUM_THREADS unset)")
    env["started"] = run["started"]
    env["1-minute load average"] = (f"{start[0]:.1f} at start, {end[0]:.1f} at end"
                                    if start and end else "unknown on this platform")
    env["wall time in all"] = duration(run["wall_s"])
    return env


# --------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conformance table",
        description="Run the suite on the reference and every importable upstream adapter "
        "and write the per-clause flavour table (Markdown).")
    parser.add_argument("--out", default="docs/flavours.md", help="where to write the table")
    parser.add_argument("--impl", action="append", default=None,
                        help="an implementation to run (repeatable; default: "
                        + ", ".join(DEFAULT_IMPLS) + ")")
    parser.add_argument("--profile", default="ci", choices=("ci", "dev", "thorough"),
                        help="hypothesis profile of every run (default ci: derandomized)")
    parser.add_argument("--reports", default=None, metavar="DIR",
                        help="keep each run's JSON report in DIR")
    parser.add_argument("--from-reports", default=None, metavar="DIR",
                        help="build the page from the JSON reports a previous run kept "
                        "with --reports DIR (one NAME.json per implementation), running "
                        "nothing")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="run up to N implementations' suites at once (default 1; each "
                        "is one pytest process)")
    parser.add_argument("--fail-on-failure", action="store_true",
                        help="exit 1 when a test failed on some implementation (one that "
                        "could not be imported is reported, not failed)")
    parser.add_argument("pytest_args", nargs="*",
                        help="extra pytest arguments after --, e.g. -- -k nms")
    args = parser.parse_args(argv)
    impls = args.impl or list(DEFAULT_IMPLS)
    from conformance.plugin import read_clauses
    texts = read_clauses()
    reports: dict[str, dict] = {}
    if args.jobs < 1:
        parser.error(f"--jobs={args.jobs}: expected a positive number of processes")
    began = time.perf_counter()
    run_info: dict = ({"from_reports": args.from_reports} if args.from_reports else
                      {"jobs": args.jobs, "load_start": load_average(),
                       "started": datetime.datetime.now(datetime.timezone.utc)
                       .strftime("%Y-%m-%d %H:%M UTC")})
    if args.from_reports:
        for impl in impls:
            path = Path(args.from_reports) / f"{Path(impl).stem}.json"
            reports[Path(impl).stem] = (json.loads(path.read_text(encoding="utf-8"))
                                        if path.is_file() else {"not_run": f"no {path}"})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.reports) if args.reports else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        def run(impl: str) -> tuple[str, dict]:
            label = Path(impl).stem if impl.endswith(".py") else impl
            print(f"conformance table: running the suite on {impl} ...", flush=True)
            start = time.perf_counter()
            path = folder / f"{label}.json"
            report = run_suite(impl, path, args.pytest_args, args.profile)
            report["wall_s"] = round(time.perf_counter() - start, 1)
            if path.is_file():  # kept with --reports: --from-reports shows the same time
                path.write_text(json.dumps(report), encoding="utf-8")
            if "not_run" in report:
                print(f"conformance table: {impl} not run: {report['not_run']}", flush=True)
            else:
                print(f"conformance table: {impl} done in {duration(report['wall_s'])}",
                      flush=True)
            return label, report

        todo = [] if args.from_reports else impls
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for label, report in pool.map(run, todo):  # results in the order asked
                reports[label] = report
    if not args.from_reports:
        run_info.update(load_end=load_average(), wall_s=time.perf_counter() - began)
    page = build_table(reports, list(texts), texts, environment(args.profile, run_info))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    print(f"conformance table: wrote {out}")
    failed = [name for name, r in reports.items() if "not_run" not in r and any(
        t["status"] in ("failed", "unexpected_pass") for t in r["tests"])]
    for name in failed:
        print(f"conformance table: {name} has failing tests", flush=True)
    return 1 if failed and args.fail_on_failure else 0


if __name__ == "__main__":
    raise SystemExit(main())
