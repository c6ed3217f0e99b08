"""Every golden case, run on the implementation under test.

The stored arrays come from ``python -m golden regenerate`` on the reference; the
case says which SPEC.md clause it pins and its tolerance. An implementation that
lacks the protocol names a case needs is reported as not implemented.
"""

from __future__ import annotations

import pytest

from conformance.implementation import KNOWN_FLAVOURS
from golden import store
from golden.cases import all_cases

CASES = all_cases()


def _params() -> list:
    # A list, not a generator: pytest 9.1 deprecates generators in parametrize.
    return [
        pytest.param(
            case,
            id=case.name,
            marks=[pytest.mark.component(case.component), pytest.mark.spec(case.clause)]
            + ([pytest.mark.flavour(case.flavour)] if case.flavour in KNOWN_FLAVOURS else []),
        )
        for case in CASES
    ]


@pytest.mark.parametrize("case", _params())
def test_golden_case_reproduced(case, impl, device):
    expected = store.load(case)
    actual = case.outputs(_ImplModule(impl), device)
    rtol, atol = case.rtol, case.atol
    override = impl.tolerance.get(f"golden:{case.name}")
    if override:
        rtol, atol = override
    problems = case.compare(actual, expected, rtol=rtol, atol=atol)
    assert not problems, f"golden case {case.name} ({case.cross_checked}):\n" + "\n".join(problems)


class _ImplModule:
    """Attribute access on the implementation that skips for missing names."""

    def __init__(self, impl):
        self._impl = impl

    def __getattr__(self, name):
        return self._impl.get(name)
