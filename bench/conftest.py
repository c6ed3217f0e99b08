"""pytest-benchmark harness: the same work on several implementations in one run.

Every benchmark is parametrised over the implementations of this session: the
reference, torchvision (through the conformance adapter, where it has the
component) and the one given with ``--impl`` (if any). For each case it records
the median time (pytest-benchmark) and the peak memory of one extra call:
CUDA max-allocated on a GPU, the profiler's traced allocations on the CPU.
At the end it writes ``bench/results/<device>.json`` and ``<device>.md``, a
Markdown table of medians, peak memory and ratios to the reference.

Benchmarks assert nothing about time. What is timed is checked once per case
against the reference (``check`` in ``bench_case``).
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
import tempfile
from pathlib import Path

import pytest
import torch

RESULTS = Path(__file__).resolve().parent / "results"
_RECORDS: list[dict] = []


def pytest_addoption(parser):
    group = parser.getgroup("bench", "detection benchmarks")
    group.addoption("--bench-device", default="cpu", help="cpu or cuda (default cpu)")
    try:
        group.addoption("--impl", default=None,
                        help="an extra implementation to time beside reference and torchvision")
    except ValueError:  # the conformance plugin already defines --impl in this session
        pass
    group.addoption("--bench-threads", type=int, default=None,
                    help="torch CPU threads (default: torch's own choice)")
    group.addoption("--bench-results", default=str(RESULTS),
                    help="folder for the JSON results and Markdown table")


def pytest_configure(config):
    threads = config.getoption("--bench-threads")
    if threads:
        torch.set_num_threads(threads)


def pytest_report_header(config):
    device = config.getoption("--bench-device")
    names = ", ".join(name for name, _ in _implementations(config))
    lines = [f"bench: device {device}; implementations {names}"]
    if device.startswith("cuda") and not torch.cuda.is_available():
        lines.append("bench: no CUDA device is present: every GPU benchmark is skipped")
    return lines


def _implementations(config) -> list[tuple[str, object]]:
    impls = [("reference", importlib.import_module("reference")),
             ("torchvision", importlib.import_module("conformance.adapters.torchvision_adapter"))]
    extra = config.getoption("--impl", default=None)
    if extra and extra not in ("reference", "torchvision"):
        from conformance.implementation import load_implementation
        loaded = load_implementation(extra)
        impls.append((loaded.name, loaded.module))
    return impls


def pytest_generate_tests(metafunc):
    if "impl_name" in metafunc.fixturenames:
        names = [name for name, _ in _implementations(metafunc.config)]
        metafunc.parametrize("impl_name", names)


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


def peak_memory_bytes(fn, device: torch.device) -> int:
    """Peak bytes allocated by one call of ``fn`` beyond what was live before it."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        out = fn()
        _sync(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del out
        return int(peak)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
        del out
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    live = peak = 0
    for event in sorted((e for e in events if e.get("name") == "[memory]"), key=lambda e: e["ts"]):
        if event["args"].get("Device Type", 0) != 0:
            continue
        live += int(event["args"]["Bytes"])
        peak = max(peak, live)
    return peak


@pytest.fixture()
def bench_case(benchmark, bench_device, implementations, request):
    """Time ``make(impl)`` for one implementation and record it.

    ``bench_case(workload, impl_name, make, check=None, output_bytes=None)``:
    ``make(impl_module)`` looks up the protocol names it needs and returns a
    zero-argument callable doing the work; a missing name (AttributeError) or
    NotImplementedError while making it skips the case. ``check(result_impl, result_ref)``
    compares the result once with the reference's.
    """

    def run(workload: str, impl_name: str, make, check=None, output_bytes: int | None = None,
            rounds: int | None = None):
        module = implementations[impl_name]
        try:
            fn = make(module)
        except (NotImplementedError, AttributeError) as exc:
            pytest.skip(f"{impl_name} has no {workload}: {exc}")
        try:
            result = fn()
        except NotImplementedError as exc:
            pytest.skip(f"{impl_name}: {exc}")
        if check is not None and impl_name != "reference":
            check(result, make(implementations["reference"])())
        del result

        def timed():
            out = fn()
            _sync(bench_device)
            return out

        if rounds:
            benchmark.pedantic(timed, rounds=rounds, iterations=1, warmup_rounds=1)
        else:
            benchmark(timed)
        if benchmark.disabled:  # --benchmark-disable: a correctness-only run, nothing timed
            return
        peak = peak_memory_bytes(fn, bench_device)
        benchmark.extra_info.update(workload=workload, impl=impl_name, peak_bytes=peak,
                                    output_bytes=output_bytes)
        _RECORDS.append({
            "workload": workload,
            "impl": impl_name,
            "median_s": benchmark.stats.stats.median,
            "mean_s": benchmark.stats.stats.mean,
            "rounds": benchmark.stats.stats.rounds,
            "peak_bytes": peak,
            "output_bytes": output_bytes,
            "device": str(bench_device),
        })

    return run


def _machine(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
           f"torch threads {torch.get_num_threads()}"


def _fmt_time(s: float) -> str:
    return f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def _fmt_bytes(b) -> str:
    if b is None:
        return "-"
    return f"{b / 2**20:.1f} MiB"


def markdown_table(records: list[dict], device: str) -> str:
    lines = [
        f"# Benchmarks on {device}",
        "",
        f"Machine: {_machine(device)}. torch {torch.__version__}. "
        f"Written {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by "
        "`pytest bench` (see bench/conftest.py). Ratio = median / reference median "
        "(below 1 is faster than the reference); peak = traced allocations of one call.",
        "",
        "| workload | implementation | median | ratio to reference | peak memory | peak / output |",
        "|---|---|---|---|---|---|",
    ]
    ref = {r["workload"]: r for r in records if r["impl"] == "reference"}
    for r in sorted(records, key=lambda r: (r["workload"], r["impl"] != "reference", r["impl"])):
        base = ref.get(r["workload"])
        ratio = f"{r['median_s'] / base['median_s']:.2f}x" if base else "-"
        per_out = (f"{r['peak_bytes'] / r['output_bytes']:.2f}"
                   if r.get("output_bytes") else "-")
        lines.append(f"| {r['workload']} | {r['impl']} | {_fmt_time(r['median_s'])} | {ratio} | "
                     f"{_fmt_bytes(r['peak_bytes'])} | {per_out} |")
    return "\n".join(lines) + "\n"


def pytest_sessionfinish(session, exitstatus):
    if not _RECORDS:
        return
    device = session.config.getoption("--bench-device")
    folder = Path(session.config.getoption("--bench-results"))
    folder.mkdir(parents=True, exist_ok=True)
    stem = "cpu" if device == "cpu" else "gpu"
    (folder / f"{stem}.json").write_text(json.dumps(
        {"device": device, "machine": _machine(device), "torch": torch.__version__,
         "records": _RECORDS}, indent=2))
    (folder / f"{stem}.md").write_text(markdown_table(_RECORDS, device))
