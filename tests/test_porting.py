"""What a porter meets when adopting the suite: deviations, failure output, reports.

Like test_plugin.py, each test writes a throw-away implementation and a tiny
conformance test file and runs pytest on them in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

IMPL = '''
import numpy as np

CONFORMANCE = {"name": "port", "version": "0.3", "deviations": "port.deviations"}

def box_iou(a, b=None):
    return 2 * a

def nms(boxes, scores, thr):
    raise NotImplementedError("port has no NMS yet")
'''

TESTS = '''
import numpy as np
import pytest
from hypothesis import given, strategies as st

from conformance.checks import assert_close

pytestmark = pytest.mark.component("toy")

@pytest.mark.spec("HAR-1")
def test_close_fails(impl):
    assert_close(np.asarray(impl.get("box_iou")(np.ones(3))), np.ones(3), impl, what="iou")

@pytest.mark.spec("HAR-1")
def test_missing_name(impl):
    impl.get("box_area")

@pytest.mark.spec("HAR-1")
def test_not_implemented_call(impl):
    impl.get("nms")(None, None, 0.5)

@pytest.mark.spec("HAR-1")
@given(x=st.integers(0, 100))
def test_property_fails(impl, x):
    assert impl.get("box_iou")(x) < 50

@pytest.mark.spec("HAR-2")
def test_renamed_deviation_one(impl):
    assert impl.get("box_iou")(1) == 1

@pytest.mark.spec("HAR-2")
def test_renamed_deviation_two(impl):
    assert impl.get("box_iou")(2) == 2
'''


def _write_port(root: Path) -> Path:
    pkg = root / "conformance"
    pkg.mkdir()
    (pkg / "conftest.py").write_text("from conformance.conftest import *  # noqa\n")
    (pkg / "test_toy.py").write_text(TESTS)
    (root / "port.py").write_text(IMPL)
    (root / "port.deviations").write_text("# by clause id\nHAR-2  # port counts twice\n")
    return root


@pytest.fixture()
def port(tmp_path):
    return _write_port(tmp_path)


def run(port: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", str(port / "conformance" / "test_toy.py"),
           "-p", "no:cacheprovider", "--rootdir", str(port), "--impl", str(port / "port.py"),
           "-rA", *args]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=port, env=env, timeout=120)


def _status(report: Path) -> dict[str, str]:
    return {t["nodeid"].split("::")[-1]: t["status"]
            for t in json.loads(report.read_text())["tests"]}


@pytest.fixture(scope="module")
def reported_run(tmp_path_factory):
    """One run of the port as written, with the JSON report, a fixed hypothesis seed and
    long tracebacks, shared by the tests that only read its output (each run is a fresh
    interpreter: seconds). The report's messages do not depend on --tb (exconly())."""
    port = _write_port(tmp_path_factory.mktemp("port"))
    report = port / "r.json"
    proc = run(port, f"--conformance-report={report}", "--hypothesis-seed=7", "--tb=long")
    return proc, report


# --------------------------------------------------------------------------- item 6: deviations
def test_a_deviation_may_name_a_clause_id(reported_run):
    _, report = reported_run
    status = _status(report)
    assert status["test_renamed_deviation_one"] == "deviation"
    assert status["test_renamed_deviation_two"] == "deviation"
    assert status["test_close_fails"] == "failed"  # HAR-1 is not declared


@pytest.fixture(scope="module")
def stale_clauses_run(tmp_path_factory) -> str:
    """One run whose deviations name a clause no toy test checks and one SPEC.md lacks
    (each is warned about on its own line; one run serves both tests)."""
    port = _write_port(tmp_path_factory.mktemp("port"))
    (port / "port.deviations").write_text("HAR-3  # no toy test checks it\nNOPE-7  # typo\n")
    return run(port).stdout


def test_a_clause_deviation_matching_nothing_is_warned_about(stale_clauses_run):
    assert "deviation clause 'HAR-3' matches no collected test" in stale_clauses_run


def test_a_clause_deviation_naming_no_clause_of_the_spec_says_so(stale_clauses_run):
    assert "'NOPE-7' (not a clause of SPEC.md)" in stale_clauses_run


def test_readme_and_spec_say_the_deviations_file_is_package_data():
    for doc in ("README.md", "SPEC.md"):
        text = (REPO / doc).read_text(encoding="utf-8")
        assert "package data" in text and "package-data" in text, doc
        assert "NMS-2  # " in text, doc


# --------------------------------------------------------------------------- item 3: JSON report
def test_the_json_report_says_what_to_act_on(reported_run):
    proc, report = reported_run
    data = json.loads(report.read_text())
    tests = {t["nodeid"].split("::")[-1]: t for t in data["tests"]}
    close = tests["test_close_fails"]
    assert close["status"] == "failed"
    assert "Mismatched elements" in close["message"] and "iou" in close["message"]
    prop = tests["test_property_fails"]
    # hypothesis' note: "Falsifying example: ..." before 6.16x, "Failing test case: ..." after
    assert ("Falsifying example" in prop["message"] or "Failing test case" in prop["message"]) \
        and "x=25" in prop["message"], prop
    missing = tests["test_missing_name"]
    assert missing["missing_name"] == "box_area"
    assert "does not expose 'box_area'" in missing["reason"]
    assert tests["test_not_implemented_call"]["reason"] == "not implemented: port has no NMS yet"
    assert tests["test_renamed_deviation_one"]["reason"] == "declared deviation: port counts twice"
    assert all(isinstance(t["duration_s"], float) for t in data["tests"])
    versions = data["versions"]
    import hashlib

    import torch
    assert versions["torch"] == torch.__version__
    assert versions["spec_md_sha256"] == hashlib.sha256((REPO / "SPEC.md").read_bytes()).hexdigest()
    assert versions["detspec"] and versions["hypothesis_profile"] in ("ci", "dev", "thorough")
    assert versions["hypothesis_seed"] == 7
    har1 = data["clauses"]["HAR-1"]
    assert har1["verdict"] == "failed" and har1["failed"] == 2 and har1["not_implemented"] == 2
    assert data["clauses"]["HAR-2"]["verdict"] == "deviation"
    assert data["protocol_names"] == {"exposed": ["box_iou", "nms"], "lacking": ["box_area"]}
    out = proc.stdout
    assert out.count("protocol names exposed by port (2 of the 3 the tests asked for): "
                     "box_iou, nms") == 1, out
    assert "protocol names port lacks (1): box_area" in out


# --------------------------------------------------------------------------- item 4: failures
def test_failure_output_is_short(reported_run):
    out = reported_run[0].stdout
    failure = out.split("test_close_fails", 1)[1]
    assert "<Implementation port 0.3>" in failure
    assert "Implementation(" not in out  # not the dataclass repr with module and deviations
    # assert_close hides its own frame: its body (np.testing call) is not printed.
    assert "np.testing.assert_allclose(" not in failure
    assert "Mismatched elements" in failure  # the comparison itself still is


def test_golden_mismatch_prints_plain_numbers():
    from golden.case import GoldenCase

    case = GoldenCase(name="t", component="iou", clause="IOU-1", producer="box_iou",
                      flavour="mmdet", inputs={}, run=lambda m, d: {}, cross_checked="-",
                      exact=("labels",), rtol=0.0, atol=0.0)
    problems = case.compare(
        {"boxes": np.array([[1.0, 404.98]]), "labels": np.array([1, 2])},
        {"boxes": np.array([[1.0, 405.0]]), "labels": np.array([1, 3])},
    )
    text = "\n".join(problems)
    assert "np." not in text, text
    assert "first at (0, 1): 404.98 vs stored 405.0" in text
    assert "first at (1,): 2 vs stored 3" in text


# --------------------------------------------------------------------------- item 7: warnings
def test_golden_cases_are_parametrized_from_a_list():
    """pytest 9.1 deprecates a generator in parametrize (PytestRemovedIn10Warning)."""
    import conformance.test_golden as tg

    marks = [m for m in tg.test_golden_case_reproduced.pytestmark if m.name == "parametrize"]
    assert marks and isinstance(marks[0].args[1], (list, tuple))


def test_python_m_conformance_leaves_the_callers_directory_alone(tmp_path):
    cwd = tmp_path / "caller"
    cwd.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "DETSPEC_CACHE": str(tmp_path / "cache")}
    env.pop("HYPOTHESIS_STORAGE_DIRECTORY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "conformance", "--impl=reference", "-q",
         "-k", "test_iou_is_symmetric_and_in_unit_interval"],
        capture_output=True, text=True, timeout=300, cwd=cwd, env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
    assert sorted(p.name for p in cwd.iterdir()) == []  # no .hypothesis, no .benchmarks
    assert (tmp_path / "cache" / "hypothesis").is_dir()


# --------------------------------------------------------------------------- item 2: embedding
MYPORT = '''
import torch

CONFORMANCE = {"name": "myport", "version": "1.0", "deviations": "myport.deviations"}

def box_area(boxes):
    if not isinstance(boxes, torch.Tensor) or not boxes.is_floating_point():
        raise TypeError(f"boxes: expected a floating tensor, got {getattr(boxes, 'dtype', boxes)!r}")
    if boxes.dim() == 0 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes: expected a last dim of 4, got shape {tuple(boxes.shape)}")
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
'''


def _porter_repo(tmp_path: Path, conftest: bool) -> Path:
    repo = tmp_path / "myrepo"
    (repo / "tests").mkdir(parents=True)
    (repo / "myport.py").write_text(MYPORT)
    (repo / "myport.deviations").write_text(
        "conformance/test_boxes.py::test_box_area_is_not_clamped  # pinned by prefix\n")
    (repo / "pytest.ini").write_text("[pytest]\ntestpaths = tests\naddopts = -p no:cacheprovider\n")
    if conftest:  # what a porter adds when detspec's entry point is not installed
        (repo / "conftest.py").write_text('pytest_plugins = ["conformance.plugin"]\n')
    (repo / "tests" / "test_own.py").write_text("def test_porters_own_test():\n    assert True\n")
    (repo / "tests" / "test_detspec.py").write_text(
        "from conformance.embed import conformance_suite\n\n"
        "conformance_suite(globals(), 'myport', components=['iou'])\n")
    return repo


def _pytest_in_porter_repo(repo, tmp_path, *args, timeout):
    """``python -m pytest ARGS --conformance-report`` run in the porter's repository
    (CI profile, no CONFORMANCE_IMPL): (process, its output, the report, node id
    without its file -> status)."""
    report = tmp_path / "r.json"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{repo}", "CONFORMANCE_PROFILE": "ci"}
    env.pop("CONFORMANCE_IMPL", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", *args, f"--conformance-report={report}"],
                          capture_output=True, text=True, timeout=timeout, cwd=repo, env=env)
    out = proc.stdout + proc.stderr
    data = json.loads(report.read_text()) if report.exists() else {"tests": []}
    status = {t["nodeid"].split("::", 1)[1]: t["status"] for t in data["tests"]}
    return proc, out, data, status


def test_the_suite_embeds_in_a_porters_own_tests(tmp_path):
    repo = _porter_repo(tmp_path, conftest=True)
    proc, out, data, status = _pytest_in_porter_repo(
        repo, tmp_path, "-rA", "-k", "(TestBoxes and box_area) or porters_own", timeout=600)
    assert proc.returncode == 0, out
    assert out.count("conformance: implementation myport version 1.0") == 1, out
    assert "conformance of myport 1.0" in out
    assert status["TestBoxes::test_box_area_is_not_clamped_for_inverted_boxes"] == "unexpected_pass"
    assert status["TestBoxes::test_box_area_matches_the_oracle"] == "passed"
    assert {t["component"] for t in data["tests"]} == {"iou"}  # components=['iou']
    assert "PASSED tests/test_own.py::test_porters_own_test" in out  # their own tests run too


def test_pytest_impl_in_a_porters_repo_matches_deviation_prefixes_of_the_installed_suite(
        tmp_path):
    # `pytest --impl=myport` with no test paths runs the installed suite from outside the
    # rootdir, where its node ids read "test_boxes.py::..."; the documented prefix
    # "conformance/test_boxes.py::..." matched nothing there (the test ran as a plain pass)
    from importlib.metadata import entry_points

    if "conformance.plugin" not in {ep.name for ep in entry_points(group="pytest11")}:
        pytest.skip("detspec's pytest11 entry point is not installed (pip install -e .)")
    repo = _porter_repo(tmp_path, conftest=False)
    _, out, _, status = _pytest_in_porter_repo(
        repo, tmp_path, "--impl=myport", "-k", "test_box_area_is_not_clamped",
        f"--ignore-glob={REPO / 'conformance'}/test_[!b]*.py",  # collect test_boxes only
        timeout=300)
    assert status == {"test_box_area_is_not_clamped_for_inverted_boxes": "unexpected_pass"}, out
    assert "matches no collected test" not in out, out


def test_the_dormant_plugin_leaves_other_runs_alone(tmp_path):
    """No header, and nothing heavy imported: the plugin loads in every pytest run of an
    environment where detspec is installed, and torch alone takes seconds to import."""
    repo = _porter_repo(tmp_path, conftest=True)
    (repo / "tests" / "test_own.py").write_text(
        "import sys\n\n\ndef test_porters_own_test():\n"
        "    assert 'torch' not in sys.modules, 'the dormant plugin imported torch'\n")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{repo}"}
    env.pop("CONFORMANCE_IMPL", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/test_own.py", "-q"],
                          capture_output=True, text=True, timeout=300, cwd=repo, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "1 passed" in out and "conformance" not in out, out


def test_embedding_rejects_bad_arguments():
    from conformance.embed import conformance_suite

    with pytest.raises(TypeError, match="namespace"):
        conformance_suite([], "myport")
    with pytest.raises(TypeError, match="components"):
        conformance_suite({}, "myport", components="iou")


def test_readme_documents_the_entry_point_and_embedding():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert "pytest11" in text and "pytest --impl=mypkg" in text
    assert "conformance_suite(globals()" in text
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert '[project.entry-points.pytest11]\n"conformance.plugin" = "conformance.plugin"' in pyproject


# --------------------------------------------------------------------------- item 1: tox
def test_tox_is_not_advertised_for_ports_and_its_comment_is_honest():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "tox -e conformance -- --impl=NAME` runs" not in readme
    assert "tox -e bench -- --impl" not in readme
    assert "For a port, do not use tox" in readme
    tox = (REPO / "tox.ini").read_text(encoding="utf-8")
    assert "installed beside tox" not in tox  # the old claim: base site-packages only
    assert "never those of an activated venv" in tox
    assert "--impl=NAME\n" not in tox.split("[testenv:conformance]")[1].split("\n[")[0]
