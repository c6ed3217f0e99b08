"""The conformance plugin's own behaviour, checked on a throw-away implementation.

Each test writes a tiny implementation module and a tiny conformance test file,
runs pytest on them in a subprocess with the plugin loaded, and reads the outcome.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

IMPL = '''
CONFORMANCE = {"name": "toy", "version": "9.9", "flavours": ["mmdet"],
               "deviations": "toy.deviations"}

def double(x):
    return 2 * x

def triple(x):
    return 3 * x + 1          # wrong on purpose

def unsupported(x):
    raise NotImplementedError("toy has no such option")
'''

TESTS = '''
import pytest

pytestmark = pytest.mark.component("toy")

@pytest.mark.spec("HAR-1")
def test_double_passes(impl):
    assert impl.get("double")(2) == 4

@pytest.mark.spec("HAR-1")
def test_missing_name_is_not_implemented(impl):
    impl.get("quadruple")

@pytest.mark.spec("HAR-1")
def test_triple_fails(impl):
    assert impl.get("triple")(2) == 6

@pytest.mark.spec("HAR-1")
def test_declared_deviation_that_fails(impl):
    assert impl.get("triple")(1) == 3

@pytest.mark.spec("HAR-1")
def test_declared_deviation_that_passes(impl):
    assert impl.get("double")(1) == 2

@pytest.mark.spec("HAR-1")
def test_not_implemented_error_is_not_implemented(impl):
    impl.get("unsupported")(1)

@pytest.mark.spec("HAR-1")
@pytest.mark.flavour("detectron2")
def test_unclaimed_flavour_is_skipped(impl):
    raise AssertionError("must not run")

@pytest.mark.spec("HAR-2")
@pytest.mark.strict_tier
def test_strict_tier_is_opt_in(impl):
    assert impl.get("double")(0) == 0
'''

DEVIATIONS = '''
# prefix  # reason
conformance/test_toy.py::test_declared_deviation_that_fails   # toy adds one
conformance/test_toy.py::test_declared_deviation_that_passes  # toy used to differ
conformance/test_toy.py::test_no_such_test                     # stale entry
'''


def _write_toy(root: Path) -> Path:
    pkg = root / "conformance"
    pkg.mkdir()
    (pkg / "conftest.py").write_text("from conformance.conftest import *  # noqa\n")
    (pkg / "test_toy.py").write_text(TESTS)
    (root / "toy.py").write_text(IMPL)
    (root / "toy.deviations").write_text(DEVIATIONS)
    return root


@pytest.fixture()
def toy(tmp_path):
    return _write_toy(tmp_path)


def run(toy: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", str(toy / "conformance" / "test_toy.py"),
           "-p", "no:cacheprovider", "--rootdir", str(toy), "--impl", str(toy / "toy.py"),
           "-rA", *args]
    # The toy 'conformance' folder must not shadow the real package: run the plugin
    # from the repository (PYTHONPATH) and the tests from the toy folder.
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(toy)}
    import os
    env = {**os.environ, **env}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=toy, env=env, timeout=120)


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    """One run of the toy suite as written, with a JSON report into a folder that does
    not exist yet: the tests that only read its output and report share it (each run
    costs a fresh interpreter importing the plugin, several CPU-seconds)."""
    toy = _write_toy(tmp_path_factory.mktemp("toy"))
    report = toy / "out" / "report.json"
    proc = run(toy, f"--conformance-report={report}")
    return toy, proc, report


def test_report_classifies_every_outcome(plain_run):
    toy, proc, report = plain_run
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out  # test_triple_fails fails
    data = json.loads(report.read_text())
    status = {t["nodeid"].split("::")[-1]: t["status"] for t in data["tests"]}
    assert status == {
        "test_double_passes": "passed",
        "test_missing_name_is_not_implemented": "not_implemented",
        "test_triple_fails": "failed",
        "test_declared_deviation_that_fails": "deviation",
        "test_declared_deviation_that_passes": "unexpected_pass",
        "test_not_implemented_error_is_not_implemented": "not_implemented",
        "test_unclaimed_flavour_is_skipped": "skipped",
        "test_strict_tier_is_opt_in": "skipped",
    }
    assert data["components"]["toy"]["passed"] == 1
    assert data["components"]["toy"]["not_implemented"] == 2
    assert all(t["clause"] in ("HAR-1", "HAR-2") for t in data["tests"])
    assert data["implementation"]["name"] == "toy"
    assert data["implementation"]["version"] == "9.9"


def test_header_names_the_implementation_version_and_location(plain_run):
    toy, proc, _ = plain_run
    out = proc.stdout
    assert "conformance: implementation toy version 9.9" in out
    assert f"loaded from {toy / 'toy.py'}" in out


def test_summary_table_and_unexpected_pass_are_printed(plain_run):
    out = plain_run[1].stdout
    assert "conformance of toy 9.9" in out
    assert "UNEXPECTED PASS of declared deviation" in out
    assert "toy used to differ" in out


def test_failure_quotes_the_spec_clause(plain_run):
    out = plain_run[1].stdout
    assert "SPEC.md clause" in out and "[HAR-1]" in out


def test_unmatched_deviation_prefix_is_warned_about(plain_run):
    out = plain_run[1].stdout
    assert "test_no_such_test" in out and "matches no collected test" in out


def test_skip_deviations_turns_them_into_skips(toy):
    report = toy / "r.json"
    run(toy, "--skip-deviations", f"--conformance-report={report}")
    status = {t["nodeid"].split("::")[-1]: t["status"] for t in json.loads(report.read_text())["tests"]}
    assert status["test_declared_deviation_that_fails"] == "deviation"
    assert status["test_declared_deviation_that_passes"] == "deviation"


def test_strict_tier_runs_when_asked(toy):
    report = toy / "r.json"
    run(toy, "--strict-tier", f"--conformance-report={report}")
    status = {t["nodeid"].split("::")[-1]: t["status"] for t in json.loads(report.read_text())["tests"]}
    assert status["test_strict_tier_is_opt_in"] == "passed"


def test_deviation_without_reason_is_a_usage_error(toy):
    (toy / "toy.deviations").write_text("conformance/test_toy.py::test_triple_fails\n")
    proc = run(toy)
    assert proc.returncode == 4
    assert "has no reason" in proc.stderr


def test_unknown_implementation_is_a_clear_usage_error(toy):
    proc = run(toy, "--impl=no_such_module_xyz")
    assert proc.returncode == 4
    assert "no_such_module_xyz" in proc.stderr and "importable" in proc.stderr


def test_unknown_flavour_in_declaration_is_a_usage_error(toy):
    (toy / "toy.py").write_text(IMPL.replace('["mmdet"]', '["mmdet", "yolo"]'))
    proc = run(toy)
    assert proc.returncode == 4 and "yolo" in proc.stderr


def test_bad_device_is_a_usage_error(toy):
    proc = run(toy, "--device=tpu")
    assert proc.returncode == 4 and "--device=tpu" in proc.stderr


def test_unknown_clause_is_a_usage_error(toy):
    (toy / "conformance" / "test_toy.py").write_text(TESTS.replace('"HAR-2"', '"NOPE-99"'))
    proc = run(toy)
    assert proc.returncode == 4 and "NOPE-99" in proc.stderr


def test_python_m_conformance_runs_the_installed_suite():
    proc = subprocess.run(
        [sys.executable, "-m", "conformance", "--impl=reference", "--co", "-q",
         "-k", "golden"],
        capture_output=True, text=True, timeout=300, cwd="/",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "test_golden.py" in proc.stdout


def test_an_installed_copy_runs_without_the_clone(tmp_path):
    """A non-editable install carries the suite, SPEC.md and the golden store."""
    import os

    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    assert (target / "conformance" / "SPEC.md").is_file()
    assert (target / "golden" / "manifest.json").is_file()
    env = {**os.environ, "PYTHONPATH": str(target)}
    # Each run collects only the suite file its -k test lives in (--ignore-glob, an
    # absolute pattern: pytest prefixes a relative one with the cwd): the other
    # modules' imports would cost seconds per run and check nothing here.
    suite = target / "conformance"
    proc = subprocess.run(
        [sys.executable, "-m", "conformance", "--impl=reference", "-k", "roi_align_5x5",
         f"--ignore-glob={suite}/test_[!g]*.py"],  # the golden case, from the installed store
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"loaded from {target / 'reference' / '__init__.py'}" in out
    assert f"SPEC.md {target / 'conformance' / 'SPEC.md'}" in out
    assert "1 passed" in out and "PytestUnknownMarkWarning" not in out

    # The pytest11 entry point: `pytest --impl=NAME` in a porter's own repository
    # (no conftest, no clone) runs the installed suite on their module...
    porter = tmp_path / "porter"
    porter.mkdir()
    (porter / "myport.py").write_text("def box_area(b):\n    return (b[..., 2] - b[..., 0]) * "
                                      "(b[..., 3] - b[..., 1])\n")
    (porter / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    env_porter = {**env, "PYTHONPATH": f"{target}{os.pathsep}{porter}"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--impl=myport", "-k", "box_area_is_not_clamped",
         f"--ignore-glob={suite}/test_[!b]*.py"],
        capture_output=True, text=True, timeout=300, cwd=porter, env=env_porter,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "conformance: implementation myport" in out and "1 passed" in out, out
    # ...and inside this repository, where conformance/conftest.py also names the
    # plugin, it is registered once (twice would fail on the --impl option).
    env_repo = {**env, "PYTHONPATH": f"{REPO}{os.pathsep}{target}"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "conformance/test_boxes.py", "--impl=reference",
         "-k", "box_area_is_not_clamped", "--trace-config", "-p", "no:cacheprovider"],
        capture_output=True, text=True, timeout=300, cwd=REPO, env=env_repo,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "1 passed" in out and out.count("conformance: implementation reference") == 1, out
    assert "conformance.plugin" in out  # --trace-config lists it: the entry point loaded it


# --------------------------------------------------------------------------- hypothesis
HYPOTHESIS_TESTS = '''
import pytest
from hypothesis import given, strategies as st

pytestmark = pytest.mark.component("toy")

def _log(name, x):
    with open(name, "a") as f:
        f.write(f"{x}\\n")

@pytest.mark.spec("HAR-1")
@given(st.integers(0, 10**6))
def test_hypothesis_deviation(impl, x):
    _log("deviation.log", x)
    assert x < 1000

@pytest.mark.spec("HAR-1")
@given(st.integers(0, 10**6))
def test_hypothesis_failure(impl, x):
    _log("failure.log", x)
    assert x < 1000

@pytest.mark.spec("HAR-1")
@given(st.integers(0, 10**6))
def test_hypothesis_partly_unsupported(impl, x):
    _log("unsupported.log", x)
    if x % 2:
        impl.get("unsupported")(x)

@pytest.mark.spec("HAR-1")
@given(st.integers(0, 10**6))
def test_hypothesis_unsupported_and_wrong(impl, x):
    if x % 2:
        impl.get("unsupported")(x)
    assert x < 1000
'''


def test_hypothesis_shrinks_only_real_failures(toy):
    """A declared deviation stops at its first failing draw (no shrink phase) and a
    draw raising NotImplementedError is set aside (the causes of a 40-minute
    ``--impl=mmdet`` run); an undeclared failure is still shrunk to the minimal
    example, also when other draws are not implemented."""
    (toy / "conformance" / "test_toy.py").write_text(HYPOTHESIS_TESTS)
    (toy / "toy.deviations").write_text(
        "conformance/test_toy.py::test_hypothesis_deviation  # toy differs on x >= 1000\n")
    report = toy / "r.json"
    run(toy, f"--conformance-report={report}")
    status = {t["nodeid"].split("::")[-1]: t["status"]
              for t in json.loads(report.read_text())["tests"]}
    assert status == {"test_hypothesis_deviation": "deviation",
                      "test_hypothesis_failure": "failed",
                      "test_hypothesis_partly_unsupported": "not_implemented",
                      "test_hypothesis_unsupported_and_wrong": "failed"}
    deviation = [int(x) for x in (toy / "deviation.log").read_text().split()]
    failure = [int(x) for x in (toy / "failure.log").read_text().split()]
    first = next(i for i, x in enumerate(deviation) if x >= 1000)
    assert len(deviation) - first <= 2, deviation  # the failing draw and its replay
    assert failure[-1] == 1000 and len(failure) - first > 2, failure  # shrunk to 1000
    # a draw raising NotImplementedError is set aside, not shrunk: the run is the
    # profile's plain draws, and the test ends not implemented
    unsupported = [int(x) for x in (toy / "unsupported.log").read_text().split()]
    odd = [x for x in unsupported if x % 2]
    assert odd and len(unsupported) <= 110, unsupported
    assert sorted(set(odd)) != [1], unsupported  # never shrunk towards the minimal 1


# --------------------------------------------------------------------------- tiers
TIER_TESTS = TESTS + '''

@pytest.mark.spec("IOU-V6")
def test_a_validation_clause_that_fails(impl):
    with pytest.raises(ValueError):
        impl.get("double")("x")
'''


def test_tier_option_runs_one_tier_and_summary_lines_name_clauses(toy):
    (toy / "conformance" / "test_toy.py").write_text(TIER_TESTS)
    runs = {}
    for tier in ("validation", "both"):
        report = toy / f"{tier}.json"
        proc = run(toy, f"--tier={tier}", f"--conformance-report={report}")
        runs[tier] = (proc.stdout, json.loads(report.read_text()))
    names = {tier: {t["nodeid"].split("::")[-1]: t["tier"] for t in data["tests"]}
             for tier, (_, data) in runs.items()}
    assert names["validation"] == {"test_a_validation_clause_that_fails": "validation"}
    assert names["both"]["test_triple_fails"] == "semantics"
    assert len(names["both"]) == 9 and "8 deselected" in runs["validation"][0]
    tiers = runs["both"][1]["tiers"]
    assert tiers["validation"]["failed"] == 1 and tiers["semantics"]["failed"] == 1
    assert runs["validation"][1]["tiers"]["semantics"]["passed"] == 0
    out = runs["both"][0]
    assert re.search(r"tier semantics\s+1\s+1\s", out), out
    assert re.search(r"tier validation\s+0\s+1\s", out), out
    assert re.search(r"^FAILED conformance/test_toy.py::test_triple_fails \[HAR-1\]", out, re.M), out
    assert re.search(r"^FAILED conformance/test_toy.py::test_a_validation_clause_that_fails "
                     r"\[IOU-V6\]", out, re.M), out


def _suite(impl: str, *args: str, extra_path: str = "") -> tuple[str, dict]:
    """The real suite on one file of it, in a subprocess; returns output and report."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "r.json"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), extra_path) if p),
               "CONFORMANCE_PROFILE": "ci"}
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "conformance/test_boxes.py", "-q", "-p",
             "no:cacheprovider", "-W", "ignore", f"--impl={impl}",
             f"--conformance-report={report}", *args],
            capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
        return proc.stdout + proc.stderr, json.loads(report.read_text())


@pytest.mark.parametrize("impl_name", ["reference", "torchvision"])
def test_tier_option_on_the_shipped_implementations(impl_name):
    out, data = _suite(impl_name, "--tier=validation", "-k", "mode")
    assert data["tests"] and {t["tier"] for t in data["tests"]} == {"validation"}, out
    assert data["tiers"]["semantics"]["passed"] == 0 and "deselected" in out
    assert data["tiers"]["validation"]["failed"] == 0, out


def test_tier_option_separates_a_faithful_port_without_input_checks():
    """tests/thirdparty/miniport computes IoU as SPEC.md says and checks nothing: the
    semantics tier passes, the validation tier fails, each line naming its clause."""
    path = str(REPO / "tests" / "thirdparty")
    out, data = _suite("miniport", "--tier=semantics", "-k", "oracle", extra_path=path)
    assert data["tiers"]["semantics"]["failed"] == 0 and data["tiers"]["semantics"]["passed"] >= 10, out
    assert data["tiers"]["validation"]["passed"] == 0
    out, data = _suite("miniport", "--tier=validation", "-k", "mode", extra_path=path)
    assert data["tiers"]["validation"]["failed"] >= 4 and data["tiers"]["semantics"]["passed"] == 0
    assert re.search(r"^FAILED \S+::test_unknown_mode_raises_naming_mode\S* \[IOU-V6\]", out, re.M), out
