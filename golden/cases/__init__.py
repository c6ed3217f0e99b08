"""The golden cases, one module per pipeline component.

Each module defines ``CASES: list[GoldenCase]``; ``all_cases()`` gathers them.
"""

from __future__ import annotations

import importlib
import pkgutil

from golden.case import GoldenCase


def all_cases() -> list[GoldenCase]:
    cases: list[GoldenCase] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        cases.extend(getattr(module, "CASES", []))
    names = [c.name for c in cases]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise RuntimeError(f"golden case names must be unique; repeated: {sorted(dupes)}")
    return cases
