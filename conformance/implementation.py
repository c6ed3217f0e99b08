"""Loading the implementation under test and reading what it declares.

An implementation is any module or package (importable by name, or a path to a
``.py`` file) that exposes some of the protocol names listed in SPEC.md. It may
declare, in one module-level dict named ``CONFORMANCE``::

    CONFORMANCE = {
        "flavours": ["mmdet", "detectron2", "torchvision"],  # flavours it claims
        "deviations": "mypkg.deviations",  # a data file (not a module path) beside
                                           # the module's own file: ship it as
                                           # package data
        "tolerance": {"float32": (1e-5, 1e-4)},  # optional (rtol, atol) overrides
    }

Names it does not expose are reported as *not implemented* (skipped), never as
errors. A protocol callable may also raise ``NotImplementedError`` for an option
it does not support; the test is then reported as not implemented too.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

KNOWN_FLAVOURS = ("mmdet", "detectron2", "torchvision")

# Implementations that ship with the suite, reachable by a short name.
BUILTIN_ADAPTERS = {
    "torchvision": "conformance.adapters.torchvision_adapter",
    "detectron2": "conformance.adapters.detectron2_adapter",
    "mmdet": "conformance.adapters.mmdet_adapter",
}


class NotImplementedInImpl(pytest.skip.Exception):
    """Raised (as a skip) when the implementation lacks a protocol name."""


# A SPEC.md clause id such as "NMS-2" or "IOU-4.1" (plugin.CLAUSE_RE's id part).
CLAUSE_ID_RE = re.compile(r"[A-Z][A-Z0-9]*-[A-Za-z0-9.\-]+")


@dataclasses.dataclass(frozen=True)
class Deviation:
    # A test-id prefix, e.g. "conformance/test_boxes.py::test_iou_is_finite", or a
    # SPEC.md clause id, e.g. "NMS-2" (every test marked with that clause).
    prefix: str
    reason: str
    line: int

    @property
    def is_clause(self) -> bool:
        return CLAUSE_ID_RE.fullmatch(self.prefix) is not None

    def matches(self, nodeid: str, relative_nodeid: str, clause: str | None) -> bool:
        if self.is_clause:
            return clause == self.prefix
        return relative_nodeid.startswith(self.prefix) or nodeid.startswith(self.prefix)


@dataclasses.dataclass
class Implementation:
    """The implementation under test, as the tests see it."""

    name: str
    module: ModuleType
    version: str
    location: str
    flavours: tuple[str, ...]
    deviations: tuple[Deviation, ...]
    deviations_file: str | None
    tolerance: dict[str, tuple[float, float]]
    # Every protocol name a test asked for, and whether the implementation has it.
    requested: dict[str, bool] = dataclasses.field(default_factory=dict, compare=False)
    notes: tuple[str, ...] = ()  # lines the run header prints (e.g. stubbed kernels)

    def __repr__(self) -> str:
        # Short: pytest prints it beside every failing test that takes ``impl``.
        return f"<Implementation {self.name} {self.version}>"

    def _repr_pretty_(self, printer, cycle) -> None:
        # Hypothesis' "Falsifying example" pretty-prints dataclasses field by field.
        printer.text(repr(self))

    def has(self, name: str) -> bool:
        return hasattr(self.module, name)

    def get(self, name: str) -> Any:
        """Return the protocol name ``name``, or skip the test as not implemented."""
        found = hasattr(self.module, name)
        self.requested[name] = found
        if not found:
            exc = NotImplementedInImpl(f"not implemented: {self.name} does not expose {name!r}")
            exc.protocol_name = name
            raise exc
        return getattr(self.module, name)

    def claims(self, flavour: str) -> bool:
        return flavour in self.flavours


def _import(spec: str) -> ModuleType:
    target = BUILTIN_ADAPTERS.get(spec, spec)
    path = Path(target)
    if target.endswith(".py") or path.is_file():
        if not path.is_file():
            raise pytest.UsageError(f"--impl={spec}: no such file {path}")
        mod_name = f"_conformance_impl_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(mod_name, path)
        if module_spec is None or module_spec.loader is None:
            raise pytest.UsageError(f"--impl={spec}: cannot load {path} as a Python module")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[mod_name] = module
        module_spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(target)
    except ImportError as exc:
        if spec in BUILTIN_ADAPTERS:  # a shipped adapter whose upstream is not installed
            raise pytest.UsageError(f"--impl={spec}: {exc}") from exc
        raise pytest.UsageError(
            f"--impl={spec}: cannot import {target!r} ({exc}); expected an importable "
            "module or package name, or a path to a .py file"
        ) from exc


def parse_deviations(path: Path) -> tuple[Deviation, ...]:
    """Read a deviations file.

    Format: one deviation per line, ``<test-id prefix or SPEC.md clause id>  # <reason>``
    (``conformance/test_nms.py::test_nms_keeps  # ...`` or ``NMS-2  # ...``); blank
    lines and lines starting with ``#`` are comments. The reason is required.
    """
    out = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        prefix, sep, reason = line.partition("#")
        prefix, reason = prefix.strip(), reason.strip()
        if not sep or not reason:
            raise pytest.UsageError(
                f"{path}:{number}: deviation {prefix!r} has no reason; "
                "expected '<test-id prefix>  # <reason>'"
            )
        if re.search(r"\s", prefix):
            raise pytest.UsageError(f"{path}:{number}: test-id prefix {prefix!r} contains spaces")
        out.append(Deviation(prefix=prefix, reason=reason, line=number))
    return tuple(out)


def load_implementation(spec: str, deviations_override: str | None = None) -> Implementation:
    module = _import(spec)
    declared = dict(getattr(module, "CONFORMANCE", {}) or {})
    unknown_keys = set(declared) - {"flavours", "deviations", "tolerance", "name", "version",
                                    "notes"}
    if unknown_keys:
        raise pytest.UsageError(
            f"--impl={spec}: CONFORMANCE has unknown keys {sorted(unknown_keys)}; "
            "expected flavours, deviations, tolerance, name, version, notes"
        )
    flavours = tuple(declared.get("flavours", ()))
    bad = [f for f in flavours if f not in KNOWN_FLAVOURS]
    if bad:
        raise pytest.UsageError(
            f"--impl={spec}: unknown flavours {bad}; expected a subset of {list(KNOWN_FLAVOURS)}"
        )
    location = getattr(module, "__file__", None) or "<namespace>"
    dev_file: Path | None = None
    if deviations_override:
        dev_file = Path(deviations_override)
    elif declared.get("deviations"):
        dev_file = Path(location).parent / declared["deviations"]
    deviations: tuple[Deviation, ...] = ()
    if dev_file is not None:
        if not dev_file.is_file():
            raise pytest.UsageError(f"--impl={spec}: deviations file {dev_file} does not exist")
        deviations = parse_deviations(dev_file)
    version = str(declared.get("version") or getattr(module, "__version__", "unknown"))
    return Implementation(
        name=str(declared.get("name") or spec),
        module=module,
        version=version,
        location=str(location),
        flavours=flavours,
        deviations=deviations,
        deviations_file=str(dev_file) if dev_file else None,
        tolerance={k: tuple(v) for k, v in declared.get("tolerance", {}).items()},
        notes=tuple(str(n) for n in declared.get("notes", ())),
    )
