"""The deviations files shipped beside the upstream adapters name tests that exist.

The plugin warns about a deviation entry that matches no collected test (SPEC.md,
"Declaring an implementation"); here the warning is an error for the adapters that
import in the test environment, so that renaming or merging a conformance test
cannot silently orphan a declared deviation (the torchvision file once had four).
Collection only: nothing is run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _collect(impl: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "CONFORMANCE_PROFILE": "ci"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "conformance", f"--impl={impl}", "--collect-only",
         "-q", "-p", "no:cacheprovider", "-W", "error::pytest.PytestWarning"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("impl", ["torchvision"])
def test_every_deviation_entry_matches_a_collected_test(impl):
    done = _collect(impl)
    out = done.stdout + done.stderr
    assert "matches no collected test" not in out, out[-3000:]
    assert done.returncode == 0, out[-3000:]
    assert " tests collected" in out, out[-3000:]
