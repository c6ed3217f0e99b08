"""The machine a figure was measured on: CPU model, cores usable, memory, load average.

Every figure the project states names the machine it came from: the flavour table
(``python -m conformance table``), ``scripts/measure_readme.py`` and the benchmark
tables read these helpers. Standard library only, so it imports without torch.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def memory_gib() -> float | None:
    """Total memory in GiB (one decimal) from /proc/meminfo; None where it is absent."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def cores_usable() -> int | None:
    """The cores this process may run on (its affinity mask), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count()


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages (two decimals); None where unknown."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):  # Windows has no load average
        return None


def describe() -> str:
    """One line naming the machine, e.g. ``AMD EPYC, 2 cores usable, 23.5 GiB``."""
    memory = memory_gib()
    return (f"{cpu_model()}, {cores_usable()} cores usable"
            + (f", {memory} GiB" if memory is not None else ""))


def duration(seconds: float) -> str:
    """``6.5 s``, ``42 s``, ``6 min 29 s``: how the project writes a wall time."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"
