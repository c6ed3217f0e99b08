"""Measure the figures the README states, on this machine, and say which machine.

    python scripts/measure_readme.py --runs 3                 # default training, 3 seeds
    python scripts/measure_readme.py --runs 2 --suite         # + the CI test command
    python scripts/measure_readme.py --runs 2 --update-readme # rewrite README's blocks
    python scripts/measure_readme.py --runs 2 --parallel --train-arg=--threads=1

What it measures:

training   ``python -m reference.train --seed K`` (otherwise exactly the README's
           no-argument command) for K = 0 .. runs-1 in a fresh output folder each:
           wall time of the whole command, time in the training loop and in the
           evaluations (from log.jsonl), final COCO bbox AP; min / median / max over
           the runs. Seed 0 is what a user's first run gives; the spread over seeds is
           what a user should expect. ``--budget-min`` stops runs that a busy machine
           makes too slow and reports how far they got. The synthetic dataset is written to the cache
           before the first run (timed separately), as a user's first run does once.
suite      (``--suite``) the CI test command (``pytest tests conformance
           --impl=reference -q`` with ``CONFORMANCE_PROFILE=ci``): wall time and the
           closing counts line.

The machine: CPU model, cores usable, memory, Python/torch/torchvision versions, the
torch threads a run used, the git commit, and the 1-minute load average sampled
every 5 s during each run (other jobs on a shared machine slow every figure down:
the load says how busy it was). Output: ``docs/figures.json`` and
``docs/figures.md`` (``--out-dir``), printed too; with ``--update-readme`` the text
between ``<!-- measured:training -->`` and ``<!-- /measured:training -->`` in README.md
(and ``measured:suite`` with ``--suite``) is replaced by the generated sentences.
Extra ``--train-arg`` values are appended to every training command (tests use a tiny
stand-in; a figure measured with them is labelled so).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MARKERS = {"training": ("<!-- measured:training -->", "<!-- /measured:training -->"),
           "suite": ("<!-- measured:suite -->", "<!-- /measured:suite -->")}


# --------------------------------------------------------------------------- machine
# CPU model, memory, cores and load come from conformance/machine.py (shared with the
# flavour table and the benchmarks); this script runs from a checkout, so import that
# checkout's copy.
sys.path.insert(0, str(REPO))
from conformance.machine import cores_usable, cpu_model, duration, memory_gib  # noqa: E402

_mmss = duration


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True).stdout
        return commit + ("+local changes" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict:
    import torch
    import torchvision

    return {"cpu": cpu_model(), "cores": cores_usable(), "memory_gib": memory_gib(),
            "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "commit": git_commit(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "load_at_start": [round(v, 2) for v in os.getloadavg()]}


class LoadSampler:
    """The 1-minute load average every ``period`` seconds while a command runs."""

    def __init__(self, period: float = 5.0) -> None:
        self.period, self.samples = period, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            if self._stop.wait(self.period):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        s = self.samples or [os.getloadavg()[0]]
        return {"mean": round(statistics.fmean(s), 2), "max": round(max(s), 2)}


# --------------------------------------------------------------------------- runs
def _env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                     else "")
    env.update(extra or {})
    return env


def _timed(cmd: list[str], env: dict, log_file: Path) -> tuple[float, int, dict]:
    with LoadSampler() as load, open(log_file, "w") as log:
        start = time.perf_counter()
        code = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        seconds = time.perf_counter() - start
    return seconds, code, load.summary()


def prepare_dataset(train_args: list[str]) -> float | None:
    """Write the default synthetic dataset to the cache (seconds), unless the runs
    bring their own data."""
    if any(a.startswith(("--data-path", "--train-ann")) for a in train_args):
        return None
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from reference.data import ensure_synthetic_dataset;"
                    "ensure_synthetic_dataset()"], cwd=REPO, env=_env(), check=True)
    return round(time.perf_counter() - start, 1)


def training_runs(seeds: list[int], work: Path, train_args: list[str],
                  parallel: bool = False, budget_s: float | None = None) -> list[dict]:
    """One training per seed, one after the other, or all at once (``parallel``: each
    run's wall time is then its own, measured while the others ran beside it).

    budget_s: a run still going after this many seconds is stopped with SIGTERM (it
    saves a checkpoint at its current step and exits); its result then says how far
    it got (``finished`` False) instead of a final AP.
    """
    groups = [seeds] if parallel else [[seed] for seed in seeds]
    results = []
    for group in groups:
        procs, starts, logs, stopped, seconds = {}, {}, {}, set(), {}
        with LoadSampler() as load:
            for seed in group:
                logs[seed] = open(work / f"train_seed{seed}.txt", "w")
                starts[seed] = time.perf_counter()
                procs[seed] = subprocess.Popen(_train_cmd(seed, work, train_args), cwd=REPO,
                                               env=_env(), stdout=logs[seed],
                                               stderr=subprocess.STDOUT)
            while len(seconds) < len(group):
                for seed, proc in procs.items():
                    if seed in seconds:
                        continue
                    if proc.poll() is not None:
                        seconds[seed] = time.perf_counter() - starts[seed]
                        logs[seed].close()
                    elif (budget_s is not None and seed not in stopped
                          and time.perf_counter() - starts[seed] > budget_s):
                        proc.send_signal(signal.SIGTERM)  # train checkpoints and exits
                        stopped.add(seed)
                time.sleep(0.2)
        results += [_run_result(seed, work, seconds[seed], procs[seed].returncode,
                                load.summary(), seed in stopped) for seed in group]
    return results


def _train_cmd(seed: int, work: Path, train_args: list[str]) -> list[str]:
    return [sys.executable, "-m", "reference.train", "--seed", str(seed), "--output-dir",
            str(work / f"train_seed{seed}"), *train_args]


def _run_result(seed: int, work: Path, seconds: float, code: int, load: dict,
                stopped: bool = False) -> dict:
    out = work / f"train_seed{seed}"
    if code != 0 and not stopped:
        tail = (work / f"train_seed{seed}.txt").read_text()[-2000:]
        raise RuntimeError(f"training seed {seed} exited {code}:\n{tail}")
    log = out / "log.jsonl"  # absent when a budget stopped the run before it started
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    start = next((r for r in records if r["type"] == "start"),
                 {"args": {"model": "?", "epochs": "?"}, "total_steps": 0, "threads": 0,
                  "train_images": "?"})
    end = next((r for r in records if r["type"] == "end"), None)
    epochs = [r for r in records if r["type"] == "epoch"]
    steps = [r["step"] for r in records if r["type"] == "step"]
    loop = sum(r.get("train_seconds") or 0 for r in epochs)
    return {"seed": seed, "finished": end is not None, "wall_s": round(seconds, 1),
            "train_loop_s": round(loop, 1), "ap": end["final_ap"] if end else None,
            "ap_per_epoch": [r["coco"]["AP"] for r in epochs if r.get("coco")],
            "steps_done": max(steps, default=0),
            "model": start["args"]["model"], "epochs": start["args"]["epochs"],
            "steps": start["total_steps"], "threads": start["threads"],
            "train_images": start["train_images"], "load_1min": load,
            "output_dir": str(out)}


def suite_run(work: Path) -> dict:
    cmd = [sys.executable, "-m", "pytest", "tests", "conformance", "--impl=reference", "-q",
           "-p", "no:cacheprovider"]
    seconds, code, load = _timed(cmd, _env({"CONFORMANCE_PROFILE": "ci"}), work / "suite.txt")
    text = (work / "suite.txt").read_text()
    counts = [line.strip("= ") for line in text.splitlines()
              if re.search(r"\d+ (passed|failed)", line)]
    return {"wall_s": round(seconds, 1), "exit_code": code,
            "counts": counts[-1] if counts else "no counts line", "load_1min": load}


# --------------------------------------------------------------------------- report
def read_figures_md(path: Path) -> dict:
    """{name: text} of a figures.md ("**name**: text" paragraphs); {} if unreadable."""
    try:
        paragraphs = path.read_text().split("\n\n")
    except OSError:
        return {}
    found = (re.fullmatch(r"\*\*(\w+)\*\*: (.*)", p.strip(), re.S) for p in paragraphs)
    return {m.group(1): m.group(2) for m in found if m and m.group(1) in MARKERS}


def keep_unmeasured(path: Path, report: dict) -> dict:
    """The new report, plus the sections of the one at ``path`` that this run did
    not measure (a ``--runs 0 --suite`` run keeps the training figures): each
    section keeps the machine, commit and time it was measured with."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return report
    if not isinstance(old, dict):
        return report
    if not isinstance(old.get("texts"), dict):  # written before "texts": its figures.md
        old["texts"] = read_figures_md(path.with_name("figures.md"))
    texts = dict(report["texts"])
    for name in MARKERS:
        if name not in texts and name in old["texts"] and name in old:
            report[name] = old[name]
            report.setdefault("machine_of", {})[name] = old.get("machine_of", {}).get(
                name, old.get("machine"))
            texts[name] = old["texts"][name]
    for name in report["texts"]:
        report.setdefault("machine_of", {})[name] = report["machine"]
    report["texts"] = {name: texts[name] for name in MARKERS if name in texts}
    return report


def spread(values: list[float], fmt) -> str:
    if len(values) == 1:
        return fmt(values[0])
    return (f"{fmt(statistics.median(values))} (min {fmt(min(values))}, max "
            f"{fmt(max(values))}, {len(values)} runs)")


def machine_line(m: dict) -> str:
    omp = f", OMP_NUM_THREADS={m['OMP_NUM_THREADS']}" if m.get("OMP_NUM_THREADS") else ""
    return (f"{m['cpu']}, {m['cores']} cores usable, {m['memory_gib']} GiB; Python "
            f"{m['python']}, torch {m['torch']}, torchvision {m['torchvision']}{omp}; commit "
            f"{m['commit']}, {m['date']}")


def training_text(m: dict, runs: list[dict], custom: list[str], note: str,
                  parallel: bool = False, budget_s: float | None = None) -> str:
    first = runs[0]
    loads = [r["load_1min"]["mean"] for r in runs]
    args = " ".join(custom)
    what = (f"`python -m reference.train{' ' + args if args else ''}` ({first['model']}, "
            f"{first['train_images']} train images, {first['epochs']} epochs, {first['steps']} "
            f"steps, {first['threads']} torch thread{'s' if first['threads'] != 1 else ''})")
    flags = (f"{' --parallel' if parallel else ''}"
             f"{f' --budget-min {budget_s / 60:g}' if budget_s is not None else ''}")
    head = (f"Measured with `scripts/measure_readme.py --runs {len(runs)}{flags}`: {what}, "
            f"seeds 0..{len(runs) - 1}{' run side by side' if parallel else ''}: ")
    done = [r for r in runs if r["finished"]]
    if len(done) == len(runs):
        body = (f"wall time {spread([r['wall_s'] for r in runs], _mmss)}, of which the "
                f"training loop {spread([r['train_loop_s'] for r in runs], _mmss)}; final "
                f"bbox AP@[.5:.95] on val {spread([r['ap'] for r in runs], lambda v: f'{v:.3f}')}"
                f" (seed 0: {first['ap']:.3f}).")
    else:
        parts = []
        for r in runs:
            if r["finished"]:
                parts.append(f"seed {r['seed']} finished in {_mmss(r['wall_s'])}, AP "
                             f"{r['ap']:.3f}")
                continue
            if not r["steps_done"]:
                parts.append(f"seed {r['seed']} NOT finished: stopped after "
                             f"{_mmss(r['wall_s'])}, before its first step was logged")
                continue
            pace = r["wall_s"] / r["steps_done"]
            aps = ", ".join(f"{v:.3f}" for v in r["ap_per_epoch"]) or "none yet"
            parts.append(f"seed {r['seed']} NOT finished: stopped after {_mmss(r['wall_s'])} at "
                         f"step {r['steps_done']} of {r['steps']} ({pace:.1f} s per step with "
                         f"start-up and evaluations; at that pace the whole run would take "
                         f"about {_mmss(pace * r['steps'])}), AP after each finished epoch: "
                         f"{aps}")
        body = "; ".join(parts) + ". No final AP was measured."
    tail = (f" Machine: {machine_line(m)}; 1-minute load average during the runs "
            f"{min(loads):.1f}-{max(r['load_1min']['max'] for r in runs):.1f} (mean "
            f"{statistics.fmean(loads):.1f}).")
    return head + body + tail + (f" {note}" if note else "")


def suite_text(m: dict, suite: dict, note: str) -> str:
    text = (f"Measured with `scripts/measure_readme.py --suite`: the CI test command took "
            f"{_mmss(suite['wall_s'])} ({suite['counts']}, exit {suite['exit_code']}) on "
            f"{machine_line(m)}; 1-minute load average {suite['load_1min']['mean']:.1f} "
            f"(max {suite['load_1min']['max']:.1f}).")
    return text + (f" {note}" if note else "")


def update_readme(path: Path, blocks: dict[str, str]) -> list[str]:
    """Replace each ``<!-- measured:NAME -->`` block's text; returns the names replaced."""
    text, done = path.read_text(), []
    for name, body in blocks.items():
        start, end = MARKERS[name]
        pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
        if not pattern.search(text):
            raise ValueError(f"{path}: no {start} ... {end} block to replace")
        text = pattern.sub(lambda _: f"{start}\n{body}\n{end}", text, count=1)
        done.append(name)
    path.write_text(text)
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="training runs (seeds 0..N-1); 0 skips")
    p.add_argument("--parallel", action="store_true", help="start the training runs at "
                   "once instead of one after the other (the figures say so)")
    p.add_argument("--budget-min", type=float, default=None, metavar="MINUTES",
                   help="stop a training run after this long (SIGTERM: it checkpoints); "
                   "the figures then give its pace, steps done and AP so far, no final AP")
    p.add_argument("--suite", action="store_true", help="also time the CI test command")
    p.add_argument("--train-arg", action="append", default=[], metavar="ARG",
                   help="appended to every training command (e.g. --train-arg=--epochs=1)")
    p.add_argument("--note", default="", help="a sentence appended to the figures "
                   "(e.g. who else was using the machine)")
    p.add_argument("--out-dir", default=str(REPO / "docs"), help="figures.json / figures.md")
    p.add_argument("--work-dir", default=None, help="run folders (default: a temp folder)")
    p.add_argument("--update-readme", action="store_true",
                   help="rewrite README.md's measured:training / measured:suite blocks")
    args = p.parse_args(argv)
    if args.runs < 0:
        p.error(f"--runs {args.runs}: expected >= 0")
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="detspec-measure-"))
    work.mkdir(parents=True, exist_ok=True)
    m = machine()
    report: dict = {"machine": m, "train_args": args.train_arg, "note": args.note}
    blocks = {}
    if args.runs:
        report["dataset_write_s"] = prepare_dataset(args.train_arg)
        budget = None if args.budget_min is None else args.budget_min * 60
        runs = training_runs(list(range(args.runs)), work, args.train_arg, args.parallel,
                             budget)
        for r in runs:
            print(f"training seed {r['seed']}: {r['wall_s']} s, finished {r['finished']}, "
                  f"step {r['steps_done']}/{r['steps']}, AP {r['ap']}, load {r['load_1min']}",
                  flush=True)
        report["training"], report["parallel"] = runs, args.parallel
        blocks["training"] = training_text(m, runs, args.train_arg, args.note, args.parallel,
                                           budget)
    if args.suite:
        report["suite"] = suite_run(work)
        blocks["suite"] = suite_text(m, report["suite"], args.note)
    m["load_at_end"] = [round(v, 2) for v in os.getloadavg()]
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report["texts"] = blocks
    report = keep_unmeasured(out_dir / "figures.json", report)
    (out_dir / "figures.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = "\n\n".join(f"**{name}**: {body}" for name, body in report["texts"].items())
    (out_dir / "figures.md").write_text(f"# Measured figures\n\n{markdown}\n")
    print(markdown)
    if args.update_readme and blocks:
        print("README blocks replaced:", ", ".join(update_readme(REPO / "README.md", blocks)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
