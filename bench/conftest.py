"""Benchmark harness: the same work on several implementations, interleaved.

Every benchmark (``bench_case``) runs its workload on each implementation of the
session: the reference, torchvision (through the conformance adapter), mmdetection
when its adapter imports (``conformance.adapters.mmdet_adapter``: mmdet installed),
and the one given with ``--impl``. The implementations are timed round by round in
one loop (reference, torchvision, ..., then again), so a burst of load on a shared
machine lands on all of them alike; each round times ``iterations`` calls (enough
for about 5 ms), and the table gives min / median / max over the rounds. A
"floor" row per workload with a known output size times writing that output
(``torch.empty(...).fill_``): no implementation can be faster than it.

Peak memory of one call: CUDA max-allocated on a GPU; on the CPU the process'
high-water resident set (``VmHWM`` after ``/proc/self/clear_refs``, as the
conformance memory clauses measure it), so NumPy's allocations count too.

A protocol name an implementation lacks (or a ``NotImplementedError``) skips that
implementation for that workload; ``make(impl)`` looks names up before the timed
callable exists. What is timed is checked once against the reference's result.

Results go to ``$DETSPEC_CACHE/bench`` (default ``~/.cache/detspec/bench``) or
``--bench-results DIR``; the committed ``bench/results/<device>.md`` the README links
is written only with ``--bench-publish``. Nothing is asserted about time.
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import re
import statistics
import time
from pathlib import Path

import pytest
import torch

from conformance.machine import cpu_model

COMMITTED = Path(__file__).resolve().parent / "results"
_RECORDS: list[dict] = []
_ITER_TARGET_S = 0.005  # one round times enough calls to take about this long
DEFAULT_ROUNDS = 5


def default_results_dir() -> Path:
    cache = os.environ.get("DETSPEC_CACHE") or str(Path.home() / ".cache" / "detspec")
    return Path(cache) / "bench"


def pytest_addoption(parser, pluginmanager):
    group = parser.getgroup("bench", "detection benchmarks")
    group.addoption("--bench-device", default="cpu", help="cpu or cuda (default cpu)")
    # An installed detspec registers the conformance plugin (pytest11 entry point),
    # whose --impl names the extra implementation here too.
    if not pluginmanager.has_plugin("conformance.plugin"):
        group.addoption("--impl", default=None,
                        help="an extra implementation to time beside reference and torchvision")
    group.addoption("--bench-threads", type=int, default=None,
                    help="torch CPU threads (default: torch's own choice)")
    group.addoption("--bench-results", default=None, metavar="DIR",
                    help="folder for the JSON results and Markdown table "
                    f"(default $DETSPEC_CACHE/bench, i.e. {default_results_dir()})")
    group.addoption("--bench-publish", action="store_true",
                    help=f"write the committed table instead: {COMMITTED}/<device>.md")
    group.addoption("--bench-rounds", type=int, default=None,
                    help="rounds per workload (default: the workload's own, else 5)")


_LOAD_AT_START: list[float] = []  # the 1-minute load average when the session began


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        return None


def pytest_configure(config):
    _LOAD_AT_START[:] = [x for x in [_load_average()] if x is not None]
    threads = config.getoption("--bench-threads")
    if threads:
        torch.set_num_threads(threads)


def results_dir(config) -> Path:
    if config.getoption("--bench-publish"):
        return COMMITTED
    chosen = config.getoption("--bench-results")
    return Path(chosen) if chosen else default_results_dir()


def pytest_report_header(config):
    device = config.getoption("--bench-device")
    names = ", ".join(name for name, _ in _implementations(config))
    lines = [f"bench: device {device}; implementations {names} (interleaved round by round); "
             f"results to {results_dir(config)}"]
    if device.startswith("cuda") and not torch.cuda.is_available():
        lines.append("bench: no CUDA device is present: every GPU benchmark is skipped")
    return lines


# Peers timed beside the reference when they import: (name, module path).
PEERS = (("torchvision", "conformance.adapters.torchvision_adapter"),
         ("mmdet", "conformance.adapters.mmdet_adapter"))


def _implementations(config) -> list[tuple[str, object]]:
    cached = getattr(config, "_bench_impls", None)
    if cached is not None:
        return cached
    impls = [("reference", importlib.import_module("reference"))]
    for name, path in PEERS:
        try:
            impls.append((name, importlib.import_module(path)))
        except ImportError:  # e.g. mmdet not installed: not a peer in this run
            pass
    extra = config.getoption("--impl", default=None)
    if extra and extra not in [n for n, _ in impls]:
        from conformance.implementation import load_implementation
        loaded = load_implementation(extra)
        impls.append((loaded.name, loaded.module))
    config._bench_impls = impls
    return impls


@pytest.fixture(scope="session")
def bench_device(request) -> torch.device:
    name = request.config.getoption("--bench-device")
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("--bench-device=cuda but no CUDA device is present: GPU benchmarks skipped")
    return torch.device(name)


@pytest.fixture(scope="session")
def implementations(request) -> dict[str, object]:
    return dict(_implementations(request.config))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class MissingName(AttributeError):
    """A protocol name the implementation does not expose."""


class Protocol:
    """What ``make`` sees: the implementation's names, looked up eagerly."""

    def __init__(self, name: str, module) -> None:
        self.bench_name = name
        self._module = module

    def __getattr__(self, attr: str):
        try:
            return getattr(self._module, attr)
        except AttributeError:
            raise MissingName(f"{self.bench_name} does not expose {attr!r}") from None


def peak_memory_bytes(fn, device: torch.device) -> int | None:
    """Peak bytes one call of ``fn`` adds: CUDA allocator stats, or the process'
    high-water RSS (the conformance suite's measure); None where unavailable."""
    from conformance.checks import peak_extra_bytes

    try:
        peak, out = peak_extra_bytes(fn, device)
    except pytest.skip.Exception:  # no /proc/self/clear_refs on this platform
        return None
    del out
    return int(peak)


def _time_once(fn, iterations: int, device: torch.device) -> float:
    t0 = time.perf_counter()
    for _ in range(iterations):
        out = fn()
    _sync(device)
    elapsed = time.perf_counter() - t0
    del out
    return elapsed / iterations


@pytest.fixture()
def bench_case(bench_device, implementations, request):
    """Time ``make(impl)`` on every implementation, interleaved, and record it.

    ``bench_case(workload, make, check=None, output_bytes=None, rounds=None)``:
    ``make(impl)`` looks up the protocol names it needs (a missing one skips that
    implementation) and returns a zero-argument callable doing the work;
    ``check(result_impl, result_ref)`` compares one result with the reference's.
    ``output_bytes`` (float32 output) adds the floor row and the peak/output column.
    """
    config = request.config

    def run(workload: str, make, check=None, output_bytes: int | None = None,
            rounds: int | None = None):
        fns, skipped, firsts = {}, {}, {}
        for name, module in implementations.items():
            try:
                fn = make(Protocol(name, module))
                first = fn()  # also the warm-up
            except (MissingName, NotImplementedError) as exc:
                skipped[name] = str(exc) or type(exc).__name__
                continue
            _sync(bench_device)
            fns[name], firsts[name] = fn, first
        if check is not None and "reference" in firsts:
            for name, result in firsts.items():
                if name != "reference":
                    check(result, firsts["reference"])
        del firsts
        if output_bytes:
            numel = output_bytes // 4
            fns["floor"] = lambda: torch.empty(numel, dtype=torch.float32,
                                               device=bench_device).fill_(1.0)
        for name, reason in skipped.items():
            _RECORDS.append({"workload": workload, "impl": name, "skipped": reason,
                             "device": str(bench_device)})
        if config.getoption("benchmark_disable", default=False) or not fns:
            return  # a correctness-only run (--benchmark-disable), nothing timed
        n_rounds = config.getoption("--bench-rounds") or rounds or DEFAULT_ROUNDS
        iterations = {}
        for name, fn in fns.items():
            one = _time_once(fn, 1, bench_device)
            iterations[name] = max(1, min(1000, int(_ITER_TARGET_S / max(one, 1e-9))))
        times: dict[str, list[float]] = {name: [] for name in fns}
        order = list(fns)
        for r in range(n_rounds):
            # Round by round, rotating who goes first, so load bursts and cache
            # warmth fall on every implementation alike.
            for name in order[r % len(order):] + order[:r % len(order)]:
                times[name].append(_time_once(fns[name], iterations[name], bench_device))
        for name, fn in fns.items():
            samples = times[name]
            _RECORDS.append({
                "workload": workload,
                "impl": name,
                "min_s": min(samples),
                "median_s": statistics.median(samples),
                "max_s": max(samples),
                "rounds": n_rounds,
                "iterations": iterations[name],
                "samples_s": samples,
                "peak_bytes": peak_memory_bytes(fn, bench_device),
                "output_bytes": output_bytes,
                "device": str(bench_device),
            })

    return run


def _machine(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    load = "".join(f", load average {x:.1f} at start" for x in _LOAD_AT_START) + "".join(
        f", {x:.1f} at end" for x in [_load_average()] if x is not None)
    cpu = cpu_model()
    return f"{cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}{load}"


def _fmt_time(s: float) -> str:
    return f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def _fmt_bytes(b) -> str:
    return "-" if b is None else f"{b / 2**20:.1f} MiB"


def natural_key(text: str) -> list:
    """'NMS 5000' before 'NMS 30000': digits compare as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def _impl_order(name: str) -> tuple:
    return (name == "floor", name != "reference", name)


def markdown_table(records: list[dict], device: str) -> str:
    rounds = sorted({r["rounds"] for r in records if "rounds" in r})
    lines = [
        f"# Benchmarks on {device}",
        "",
        f"Machine: {_machine(device)}. torch {torch.__version__}. "
        f"Written {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by "
        "`pytest bench` (see bench/conftest.py). Implementations interleaved round by round "
        f"({', '.join(map(str, rounds)) or '-'} rounds); min / median / max per call over the "
        "rounds. Ratio = median / reference median (below 1 is faster than the reference). "
        "Peak = the call's extra high-water memory (process RSS on the CPU, so NumPy counts; "
        "CUDA max-allocated on a GPU). floor = writing the output once (a lower bound).",
        "",
        "| workload | implementation | min | median | max | ratio to reference | peak memory "
        "| peak / output |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ref = {r["workload"]: r for r in records if r["impl"] == "reference" and "median_s" in r}
    for r in sorted(records, key=lambda r: (natural_key(r["workload"]), _impl_order(r["impl"]))):
        if "skipped" in r:
            lines.append(f"| {r['workload']} | {r['impl']} | - | - | - | skipped: "
                         f"{r['skipped']} | - | - |")
            continue
        base = ref.get(r["workload"])
        ratio = f"{r['median_s'] / base['median_s']:.2f}x" if base else "-"
        per_out = (f"{r['peak_bytes'] / r['output_bytes']:.2f}"
                   if r.get("output_bytes") and r.get("peak_bytes") is not None else "-")
        name = "floor (write the output)" if r["impl"] == "floor" else r["impl"]
        lines.append(f"| {r['workload']} | {name} | {_fmt_time(r['min_s'])} | "
                     f"{_fmt_time(r['median_s'])} | {_fmt_time(r['max_s'])} | {ratio} | "
                     f"{_fmt_bytes(r['peak_bytes'])} | {per_out} |")
    return "\n".join(lines) + "\n"


def pytest_sessionfinish(session, exitstatus):
    if not _RECORDS:
        return
    config = session.config
    device = config.getoption("--bench-device")
    folder = results_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    stem = "cpu" if device == "cpu" else "gpu"
    (folder / f"{stem}.json").write_text(json.dumps(
        {"device": device, "machine": _machine(device), "torch": torch.__version__,
         "records": _RECORDS}, indent=2))
    (folder / f"{stem}.md").write_text(markdown_table(_RECORDS, device))
    config._bench_written = folder / f"{stem}.md"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    written = getattr(config, "_bench_written", None)
    if written is not None:
        terminalreporter.write_line(f"bench: table written to {written}")
