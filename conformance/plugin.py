"""The pytest plugin behind ``pytest conformance --impl=NAME``.

What it does, in the order a run sees it:

1. ``--impl`` loads the implementation under test (see ``implementation.py``); the
   run's header names it, its version and the file it was loaded from.
2. Every conformance test carries ``@pytest.mark.component(...)`` and
   ``@pytest.mark.spec("CLAUSE-ID")``; the clause must exist in SPEC.md, and a
   failure report quotes the clause text.
3. ``@pytest.mark.flavour(name)`` tests run only if the implementation claims
   that flavour; ``@pytest.mark.strict_tier`` tests run only with ``--strict-tier``.
4. Declared deviations (a per-implementation file of test-id prefixes with
   reasons) become expected failures, or skips with ``--skip-deviations``; a
   declared deviation that passes is reported as an unexpected pass, and a prefix
   that matches no test is warned about. A declared deviation that is a
   hypothesis test runs without hypothesis' shrink phase (its first failing draw
   decides it), and a draw raising ``NotImplementedError`` is set aside rather than
   shrunk (``pytest_runtest_call``): shrinking those took minutes per test.
5. At the end a per-component table (passed / failed / not implemented /
   deviations) is printed, then the same counts per tier, and
   ``--conformance-report=PATH`` writes it as JSON.
6. Every clause belongs to a tier: *validation* (what bad input raises; SPEC.md
   writes ``MUST (validation):``) or *semantics* (everything else).
   ``--tier=semantics|validation`` runs one tier only (default both), and every
   line of pytest's short summary names the failing test's clause
   (``FAILED conformance/test_x.py::test_y [COD-7] - ...``).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import re
import warnings
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, Phase, settings

from conformance.implementation import Implementation, NotImplementedInImpl, load_implementation

if TYPE_CHECKING:
    import torch

# torch is imported where a device is first needed, not here: installed, this module
# loads in every pytest run of the environment (dormant there), and a run of a suite
# that never asks for ``device`` (a port without torch, the plugin's own toy suites)
# should not pay the seconds torch takes to import.

# --------------------------------------------------------------------------- hypothesis
settings.register_profile(
    "ci",
    max_examples=30,
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --------------------------------------------------------------------------- SPEC.md clauses
CLAUSE_RE = re.compile(r"\*\*\[(?P<id>[A-Z][A-Z0-9]*-[A-Za-z0-9.\-]+)\]\*\*\s*(?P<text>.*)")
# "MUST (validation): ...", "MUST (detectron2; validation): ...": the words in
# parentheses after the clause word; "validation" among them names the tier.
CLAUSE_WORDS_RE = re.compile(r"^(?:MUST|STRICT)\s*(?:\((?P<words>[^)]*)\))?\s*:")
TIERS = ("semantics", "validation")


def clause_tier(text: str) -> str:
    """The tier of a clause from its text: ``validation`` or ``semantics``."""
    m = CLAUSE_WORDS_RE.match(text)
    words = re.split(r"[;,\s]+", m.group("words") or "") if m else []
    return "validation" if "validation" in words else "semantics"


def spec_path() -> Path | None:
    """SPEC.md beside the package (a clone) or inside it (an installed copy)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "SPEC.md", here / "SPEC.md"):
        if candidate.is_file():
            return candidate
    return None


def read_clauses() -> dict[str, str]:
    path = spec_path()
    if path is None:
        return {}
    clauses = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = CLAUSE_RE.search(line)
        if m:
            clauses[m.group("id")] = m.group("text").strip()
    return clauses


# --------------------------------------------------------------------------- options
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance", "detection conformance suite")
    group.addoption(
        "--impl",
        default=None,
        help="implementation under test: an importable module/package name, a path to a "
        ".py file, or 'torchvision' for the shipped adapter (default: $CONFORMANCE_IMPL, "
        "else what an embedded suite names, else reference). Given with no test paths "
        "outside this project, it runs the installed suite",
    )
    group.addoption(
        "--deviations",
        default=None,
        help="deviations file to use instead of the one the implementation declares",
    )
    group.addoption(
        "--skip-deviations",
        action="store_true",
        help="skip declared deviations instead of running them as expected failures",
    )
    group.addoption(
        "--strict-tier",
        action="store_true",
        help="also run reference-specific (strict tier) clauses, e.g. order under tied scores",
    )
    group.addoption(
        "--tier",
        dest="conformance_tier",
        default="both",
        choices=("semantics", "validation", "both"),
        help="run the semantics clauses (conventions, numbers), the validation clauses "
        "(what bad input raises), or both (default)",
    )
    group.addoption(
        "--device",
        dest="conformance_device",
        default="cpu",
        help="device for the inputs the tests build: cpu or cuda[:N] (default cpu)",
    )
    group.addoption(
        "--conformance-report",
        default=None,
        metavar="PATH",
        help="write the per-test results and per-component table as JSON to PATH",
    )
    group.addoption(
        "--hypothesis-profile-name",
        dest="conformance_profile",
        default=None,
        help="hypothesis profile: ci, dev or thorough (also CONFORMANCE_PROFILE env var; "
        "default dev, ci when CI is set)",
    )


class ConformanceSession:
    def __init__(self, config: pytest.Config, impl_spec: str) -> None:
        self.config = config
        self.impl: Implementation = load_implementation(impl_spec, config.getoption("--deviations"))
        dev = config.getoption("conformance_device")
        if not re.fullmatch(r"cpu|cuda(:\d+)?", dev):
            raise pytest.UsageError(f"--device={dev}: expected cpu or cuda[:N]")
        self.device_name = dev  # validated; torch.device(dev) is made on first use
        self.cuda_missing = dev.startswith("cuda") and not _torch().cuda.is_available()
        self.clauses = read_clauses()
        self.matched_prefixes: set[str] = set()
        self.results: dict[str, dict] = {}
        self.unknown_clauses: list[tuple[str, str]] = []

    @functools.cached_property
    def device(self) -> torch.device:
        return _torch().device(self.device_name)


def _torch():
    import torch
    return torch


_SESSION_KEY = pytest.StashKey[ConformanceSession]()


def session_of(config: pytest.Config) -> ConformanceSession:
    s = config.stash.get(_SESSION_KEY, None)
    if s is None:
        raise pytest.UsageError(
            "the conformance fixtures need a conformance run: pass --impl=NAME, run the "
            "suite's folder, or embed it with conformance.embed.conformance_suite")
    return s


# --------------------------------------------------------------------------- activation
# Installed, the plugin is registered in every pytest run of the environment (the
# pytest11 entry point). It stays dormant (no profile, no import of an
# implementation, no header or table) unless the run asks for the suite: --impl
# or $CONFORMANCE_IMPL, a test path inside this package, or a collected test
# carrying @pytest.mark.spec (the suite embedded in another project's tests).
PACKAGE_DIR = Path(__file__).resolve().parent
EMBED_ATTR = "__conformance__"  # set by conformance.embed on the embedding module


def _explicit_impl(config: pytest.Config) -> str | None:
    return config.getoption("--impl", default=None) or os.environ.get("CONFORMANCE_IMPL") or None


def _runs_the_package(config: pytest.Config) -> bool:
    for arg in config.args:
        path = Path(arg.split("::")[0])
        path = path if path.is_absolute() else Path(config.invocation_params.dir) / path
        path = path.resolve()
        if path == PACKAGE_DIR or PACKAGE_DIR in path.parents:
            return True
    return False


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser, args: list[str]) -> None:
    """``pytest --impl=NAME`` with no test paths, in a project other than this one,
    runs the installed suite (reached here only when the entry point loaded us)."""
    ns = early_config.known_args_namespace
    if not getattr(ns, "impl", None) or getattr(ns, "file_or_dir", None):
        return
    testpaths = early_config.getini("testpaths") or []
    if any(Path(p).name == PACKAGE_DIR.name for p in testpaths):
        return  # this project's own checkout: its testpaths already hold the suite
    args.append(str(PACKAGE_DIR))
    ns.file_or_dir = [*(ns.file_or_dir or []), str(PACKAGE_DIR)]


def _start(config: pytest.Config, impl_spec: str) -> ConformanceSession:
    profile = (
        config.getoption("conformance_profile")
        or os.environ.get("CONFORMANCE_PROFILE")
        or ("ci" if os.environ.get("CI") else "dev")
    )
    if profile not in ("ci", "dev", "thorough"):
        raise pytest.UsageError(f"hypothesis profile {profile!r}: expected ci, dev or thorough")
    settings.load_profile(profile)
    s = ConformanceSession(config, impl_spec)
    config.stash[_SESSION_KEY] = s
    return s


def pytest_configure(config: pytest.Config) -> None:
    # Registered here too, not only in pyproject.toml: an installed copy of the
    # suite runs without the project's configuration file.
    for line in (
        "spec(clause): the SPEC.md clause a conformance test checks",
        "component(name): the pipeline component a conformance test belongs to",
        "flavour(name): runs only when the implementation claims this flavour",
        "strict_tier: reference-specific behaviour, run only with --strict-tier",
        "slow: a test that takes more than a few seconds",
    ):
        config.addinivalue_line("markers", line)
    explicit = _explicit_impl(config)
    if explicit or _runs_the_package(config):
        _start(config, explicit or "reference")


def pytest_report_header(config: pytest.Config) -> list[str]:
    s = config.stash.get(_SESSION_KEY, None)
    return [] if s is None else _header_lines(s)


def _header_lines(s: ConformanceSession) -> list[str]:
    impl = s.impl
    return [
        f"conformance: implementation {impl.name} version {impl.version}",
        f"conformance: loaded from {impl.location}",
        f"conformance: flavours claimed {list(impl.flavours) or 'none'}; "
        f"deviations {len(impl.deviations)} from {impl.deviations_file or 'none'}",
        f"conformance: device {s.device_name}; hypothesis profile {settings._current_profile}; "
        f"SPEC.md {spec_path() or 'not found'}",
        *(f"conformance: note: {note}" for note in impl.notes),
    ]


# --------------------------------------------------------------------------- collection
def _marker_arg(item: pytest.Item, name: str) -> str | None:
    m = item.get_closest_marker(name)
    return str(m.args[0]) if m and m.args else None


def _is_conformance(item: pytest.Item) -> bool:
    return item.get_closest_marker("spec") is not None


def _tier_of(s: "ConformanceSession", item: pytest.Item) -> str:
    return clause_tier(s.clauses.get(_marker_arg(item, "spec") or "", ""))


def _start_for_embedded(config: pytest.Config, items: list[pytest.Item]) -> ConformanceSession | None:
    """A dormant plugin wakes up when the collection holds conformance tests."""
    declared = {}
    for item in items:
        module = getattr(item, "module", None)
        decl = getattr(module, EMBED_ATTR, None) if module is not None else None
        if decl:
            declared.setdefault(decl["impl"], item.nodeid)
    if len(declared) > 1:
        listing = ", ".join(f"{name!r} ({nodeid})" for name, nodeid in declared.items())
        raise pytest.UsageError(
            f"embedded conformance suites name different implementations: {listing}; "
            "one implementation per run (or pass --impl=NAME)")
    if not declared and not any(_is_conformance(i) for i in items):
        return None
    s = _start(config, next(iter(declared), "reference"))
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        for line in _header_lines(s):
            tr.write_line(line)
    return s


def _embedded_components(item: pytest.Item) -> tuple[str, ...] | None:
    decl = getattr(getattr(item, "module", None), EMBED_ATTR, None)
    return decl.get("components") if decl else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    s = config.stash.get(_SESSION_KEY, None) or _start_for_embedded(config, items)
    if s is None:
        return
    unwanted = [i for i in items if _embedded_components(i) is not None
                and _marker_arg(i, "component") not in _embedded_components(i)]
    if unwanted:
        config.hook.pytest_deselected(items=unwanted)
        dropped = set(unwanted)
        items[:] = [i for i in items if i not in dropped]
    strict = config.getoption("--strict-tier")
    skip_devs = config.getoption("--skip-deviations")
    tier = config.getoption("conformance_tier")
    package_dir = Path(__file__).resolve().parent
    for item in items:
        if not _is_conformance(item):
            if package_dir in Path(str(item.path)).resolve().parents:
                s.unknown_clauses.append((item.nodeid, "<no @pytest.mark.spec marker>"))
            continue
        clause = _marker_arg(item, "spec")
        if s.clauses and clause not in s.clauses:
            s.unknown_clauses.append((item.nodeid, clause))
        if s.cuda_missing:
            item.add_marker(pytest.mark.skip(reason="--device=cuda but CUDA is not available"))
            continue
        # A test may name several flavours (a clause relating two of them): it runs
        # only when the implementation claims every one.
        flavours = [str(m.args[0]) for m in item.iter_markers("flavour") if m.args]
        unclaimed = [f for f in flavours if not s.impl.claims(f)]
        if unclaimed:
            item.add_marker(pytest.mark.skip(
                reason=f"flavour {', '.join(unclaimed)} not claimed by {s.impl.name}"))
            continue
        if item.get_closest_marker("strict_tier") and not strict:
            item.add_marker(pytest.mark.skip(reason="strict tier: run with --strict-tier"))
            continue
        rel = _relative_nodeid(item)
        for dev in s.impl.deviations:
            if dev.matches(item.nodeid, rel, clause):
                s.matched_prefixes.add(dev.prefix)
                reason = f"declared deviation: {dev.reason}"
                if skip_devs:
                    item.add_marker(pytest.mark.skip(reason=reason))
                else:
                    item.add_marker(pytest.mark.xfail(reason=reason, strict=False))
                item.stash[_DEVIATION_KEY] = dev.reason
                break
    if s.unknown_clauses:
        listing = ", ".join(f"{c} ({n})" for n, c in s.unknown_clauses[:5])
        raise pytest.UsageError(f"conformance tests name clauses missing from SPEC.md: {listing}")
    if tier != "both":
        other = [i for i in items if _is_conformance(i) and _tier_of(s, i) != tier]
        if other:
            config.hook.pytest_deselected(items=other)
            dropped = set(other)
            items[:] = [i for i in items if i not in dropped]
    unmatched = [d for d in s.impl.deviations if d.prefix not in s.matched_prefixes]
    for dev in unmatched:
        what = "clause" if dev.is_clause else "prefix"
        unknown = " (not a clause of SPEC.md)" if dev.is_clause and s.clauses and \
            dev.prefix not in s.clauses else ""
        warnings.warn(
            f"{s.impl.deviations_file}:{dev.line}: deviation {what} {dev.prefix!r}{unknown} "
            "matches no collected test",
            pytest.PytestWarning,
        )


_DEVIATION_KEY = pytest.StashKey[str]()


def _relative_nodeid(item: pytest.Item) -> str:
    """Node id from the conformance package on, whatever the rootdir; for a test
    embedded in another suite, the id it has in the package itself."""
    suite_file = getattr(getattr(item, "cls", None), "__conformance_module__", None)
    if suite_file:
        return f"conformance/{suite_file}::{item.name}"
    # the installed suite run from another project (``pytest --impl=NAME`` there): the
    # node id is relative to that project's rootdir or to the argument ("test_nms.py::")
    rest = item.nodeid.partition("::")[2]
    try:
        inside = Path(str(item.path)).resolve().relative_to(PACKAGE_DIR)
    except (AttributeError, ValueError, OSError):
        inside = None
    if inside is not None and rest:
        return f"conformance/{inside.as_posix()}::{rest}"
    idx = item.nodeid.find("conformance/")
    return item.nodeid[idx:] if idx >= 0 else item.nodeid


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def impl(request: pytest.FixtureRequest) -> Implementation:
    """The implementation under test; ``impl.get(name)`` skips when a name is missing."""
    return session_of(request.config).impl


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> torch.device:
    """The device the tests put their inputs on (``--device``)."""
    return session_of(request.config).device


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """Keep hypothesis from shrinking what needs no shrinking.

    - A declared deviation (an expected failure) runs without the shrink phase: its
      first failing draw already decides it. What each draw checks is unchanged.
    - A draw on which a protocol call raises ``NotImplementedError`` is not a
      failure to shrink: the draw is set aside, the other draws run as usual (a
      real failure among them is reported and shrunk), and if none failed the test
      ends with that ``NotImplementedError``, i.e. *not implemented*, as before.
    Shrinking such tests took minutes each on mmdet (a full ``--impl=mmdet`` run
    of over 40 minutes on 2 cores); the reference raises neither.
    """
    obj = getattr(item, "obj", None)
    fn = getattr(obj, "__func__", obj)
    current = getattr(fn, "_hypothesis_internal_use_settings", None)
    handle = getattr(fn, "hypothesis", None)
    if (not _is_conformance(item) or current is None or handle is None
            or not hasattr(handle, "inner_test")):
        yield
        return
    inner = handle.inner_test
    unimplemented: list[NotImplementedError] = []

    @functools.wraps(inner)  # hypothesis keys its database on the inner test's source
    def inner_setting_aside_not_implemented(*args, **kwargs):
        try:
            return inner(*args, **kwargs)
        except NotImplementedError as exc:
            unimplemented.append(exc)

    @functools.wraps(obj)
    def test_then_not_implemented(*args, **kwargs):
        result = obj(*args, **kwargs)
        if unimplemented:
            raise unimplemented[0]
        return result

    if _DEVIATION_KEY in item.stash and Phase.shrink in current.phases:
        fn._hypothesis_internal_use_settings = settings(
            current, phases=[p for p in current.phases if p is not Phase.shrink])
    handle.inner_test = inner_setting_aside_not_implemented
    item.obj = test_then_not_implemented
    try:
        yield
    finally:
        fn._hypothesis_internal_use_settings = current
        handle.inner_test = inner
        item.obj = obj


# --------------------------------------------------------------------------- reporting
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not _is_conformance(item):
        return
    # A protocol callable that raises NotImplementedError is "not implemented".
    if call.excinfo is not None and _only_not_implemented(call.excinfo.value):
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0,
                           f"not implemented: {call.excinfo.value}")
    s = session_of(item.config)
    clause = _marker_arg(item, "spec")
    report.conformance_clause = clause  # read back by the short summary
    if report.failed and clause:
        report.sections.append(
            ("SPEC.md clause", f"[{clause}] {s.clauses.get(clause, '(clause text not found)')}")
        )
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        s.results[item.nodeid] = {**_classify(item, report), **_details(report, call)}


MESSAGE_LIMIT = 4000  # characters of a failure message kept in the JSON report


def _details(report: pytest.TestReport, call: pytest.CallInfo) -> dict:
    """What a reader of the JSON report needs to act on one outcome."""
    out: dict = {"duration_s": round(report.duration, 6), "message": None, "reason": None,
                 "missing_name": None}
    exc = call.excinfo.value if call.excinfo is not None else None
    name = getattr(exc, "protocol_name", None)
    if name is None and isinstance(exc, BaseExceptionGroup):
        names = {getattr(e, "protocol_name", None) for e in exc.exceptions} - {None}
        name = ", ".join(sorted(names)) or None
    out["missing_name"] = name
    if report.skipped and isinstance(report.longrepr, tuple):
        out["reason"] = str(report.longrepr[2]).removeprefix("Skipped: ")
    if hasattr(report, "wasxfail"):
        out["reason"] = report.wasxfail or out["reason"]
    if call.excinfo is not None and not report.skipped:
        # exconly() keeps the assertion text (expected vs got) and the notes
        # hypothesis attaches (its shrunk "Falsifying example: ..." or, in newer
        # releases, "Failing test case: ...").
        text = call.excinfo.exconly()
        out["message"] = text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT] + " [...]"
    return out


def clause_rollup(results: dict[str, dict]) -> dict[str, dict]:
    """Per SPEC.md clause: its component(s), tier, counts per status and one verdict
    (failed > unexpected_pass > deviation > passed > not_implemented > skipped)."""
    rollup: dict[str, dict] = {}
    for r in results.values():
        if not r["clause"]:
            continue
        entry = rollup.setdefault(r["clause"], {"tier": r["tier"], "components": [],
                                                **{c: 0 for c in COLUMNS}})
        entry[r["status"]] += 1
        if r["component"] not in entry["components"]:
            entry["components"].append(r["component"])
    order = ("failed", "unexpected_pass", "deviation", "passed", "not_implemented", "skipped")
    for entry in rollup.values():
        entry["verdict"] = next(c for c in order if entry[c])
    return dict(sorted(rollup.items()))


def _version_of(name: str) -> str | None:
    """The version the run used: the module's ``__version__`` (``2.14.1+cu130``) when the
    run imported it, else the installed distribution's (``2.14.1``; not imported only
    for the versions, which takes seconds for torch), or None when it is not installed."""
    import importlib.metadata
    import sys

    module = sys.modules.get(name)
    if module is not None:
        return module.__version__
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _versions(s: ConformanceSession, config: pytest.Config) -> dict:
    import platform

    import hypothesis

    spec = spec_path()
    profile = settings._current_profile
    current = settings.get_profile(profile) if profile else settings.default
    seed = config.getoption("hypothesis_seed", default=None)
    if isinstance(seed, str) and seed.lstrip("-").isdigit():
        seed = int(seed)  # hypothesis reads a numeric --hypothesis-seed as that int
    from conformance import __version__ as suite_version
    return {
        "detspec": suite_version,
        "spec_md_sha256": hashlib.sha256(spec.read_bytes()).hexdigest() if spec else None,
        "torch": _version_of("torch"),
        "torchvision": _version_of("torchvision"),
        "hypothesis": hypothesis.__version__,
        "pytest": pytest.__version__,
        "python": platform.python_version(),
        "hypothesis_profile": profile,
        "hypothesis_derandomize": bool(current.derandomize),
        "hypothesis_max_examples": current.max_examples,
        # None: hypothesis drew a fresh seed per test (the failure message then
        # carries the reproduce blob); derandomized runs need none.
        "hypothesis_seed": seed,
    }


def _protocol_lines(s: ConformanceSession) -> list[str]:
    asked = s.impl.requested
    have = sorted(n for n, ok in asked.items() if ok)
    lack = sorted(n for n, ok in asked.items() if not ok)
    return [f"protocol names exposed by {s.impl.name} ({len(have)} of the {len(asked)} "
            f"the tests asked for): {', '.join(have) or 'none'}",
            f"protocol names {s.impl.name} lacks ({len(lack)}): {', '.join(lack) or 'none'}"]


def _only_not_implemented(exc: BaseException) -> bool:
    """NotImplementedError, or a group of them (hypothesis groups distinct failures)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_not_implemented(e) for e in exc.exceptions)
    return isinstance(exc, NotImplementedError)


def _classify(item: pytest.Item, report: pytest.TestReport) -> dict:
    deviation = item.stash.get(_DEVIATION_KEY, None)
    if hasattr(report, "wasxfail"):
        status = "unexpected_pass" if report.passed else "deviation"
    elif report.skipped:
        text = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else ""
        if "not implemented" in text:
            status = "not_implemented"
        elif "declared deviation" in text:
            status = "deviation"
        else:
            status = "skipped"
    elif report.passed:
        status = "passed"
    else:
        status = "failed"
    return {
        "nodeid": item.nodeid,
        "component": _marker_arg(item, "component") or "other",
        "clause": _marker_arg(item, "spec"),
        "flavour": _marker_arg(item, "flavour"),
        "tier": _tier_of(session_of(item.config), item),
        "status": status,
        "deviation": deviation,
    }


COLUMNS = ("passed", "failed", "not_implemented", "deviation", "unexpected_pass", "skipped")


def component_table(results: dict[str, dict], key: str = "component") -> dict[str, dict[str, int]]:
    """Counts of each status per component (or per ``key``, e.g. ``"tier"``)."""
    table: dict[str, dict[str, int]] = defaultdict(lambda: {c: 0 for c in COLUMNS})
    for r in results.values():
        table[r[key]][r["status"]] += 1
    return dict(sorted(table.items()))


def _name_clauses_in_short_summary(terminalreporter) -> None:
    """``FAILED path::test_x [COD-7] - ...``: pytest prints the short summary after
    every plugin's ``pytest_terminal_summary``, from the reports in ``stats``, so
    those reports are swapped for copies whose node id carries the clause."""
    for stat in ("failed", "error", "xpassed"):
        reports = terminalreporter.stats.get(stat, [])
        for k, rep in enumerate(reports):
            clause = getattr(rep, "conformance_clause", None)
            if clause and not rep.nodeid.endswith(f"[{clause}]"):
                named = copy.copy(rep)
                named.nodeid = f"{rep.nodeid} [{clause}]"
                reports[k] = named


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    s = config.stash.get(_SESSION_KEY, None)
    if s is None:  # dormant: not a conformance run
        return
    _name_clauses_in_short_summary(terminalreporter)
    if not s.results:
        return
    table = component_table(s.results)
    tr = terminalreporter
    tr.section(f"conformance of {s.impl.name} {s.impl.version}")
    header = f"{'component':<16}" + "".join(f"{c.replace('_', ' '):>17}" for c in COLUMNS)
    tr.write_line(header)
    totals = {c: 0 for c in COLUMNS}
    for comp, row in table.items():
        tr.write_line(f"{comp:<16}" + "".join(f"{row[c]:>17}" for c in COLUMNS))
        for c in COLUMNS:
            totals[c] += row[c]
    tr.write_line(f"{'total':<16}" + "".join(f"{totals[c]:>17}" for c in COLUMNS))
    tiers = component_table(s.results, key="tier")
    selected = config.getoption("conformance_tier")
    for tier in TIERS:
        row = tiers.get(tier, {c: 0 for c in COLUMNS})
        tr.write_line(f"{'tier ' + tier:<16}" + "".join(f"{row[c]:>17}" for c in COLUMNS))
    for line in _protocol_lines(s):
        tr.write_line(line)
    unexpected = [r for r in s.results.values() if r["status"] == "unexpected_pass"]
    for r in unexpected:
        tr.write_line(
            f"UNEXPECTED PASS of declared deviation: {r['nodeid']} ({r['deviation']})",
            yellow=True,
        )
    path = config.getoption("--conformance-report")
    if path:
        payload = {
            "implementation": {
                "name": s.impl.name,
                "version": s.impl.version,
                "location": s.impl.location,
                "flavours": list(s.impl.flavours),
                "deviations_file": s.impl.deviations_file,
                "notes": list(s.impl.notes),
            },
            "device": s.device_name,
            "versions": _versions(s, config),
            "protocol_names": {"exposed": sorted(n for n, ok in s.impl.requested.items() if ok),
                               "lacking": sorted(n for n, ok in s.impl.requested.items()
                                                 if not ok)},
            "duration_s": round(sum(r["duration_s"] for r in s.results.values()), 3),
            "clauses": clause_rollup(s.results),
            "components": table,
            "tiers": {t: tiers.get(t, {c: 0 for c in COLUMNS}) for t in TIERS},
            "tier_selected": selected,
            "totals": totals,
            "tests": sorted(s.results.values(), key=lambda r: r["nodeid"]),
        }
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(str(path) + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2), encoding="utf-8")
        os.replace(tmp, path)
        tr.write_line(f"conformance report written to {path}")
