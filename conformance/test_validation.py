"""Conformance: every protocol call, with one argument made wrong, and whole in every
floating dtype, non-contiguous and empty (SPEC.md "Every call", VAL-*).

The calls come from the probe's table (``conformance/probe.py``): one valid call per
public callable, and for each argument the ways it can be wrong. A test fails with the
list of probes that did not end as the clause says.
"""

from __future__ import annotations

import pytest

from conformance.probe import TABLE, probe_bad, probe_every_call


def _params():
    return [pytest.param(e, id=e.name, marks=pytest.mark.component(e.component)) for e in TABLE]


def _report(bad) -> str:
    return "\n".join(f"{o.status}: {o.entry}({o.arg} = {o.what}) {o.detail}" for o in bad)


def _skip_if_not_implemented(outcomes):
    if outcomes and all(o.status == "not_implemented" for o in outcomes):
        pytest.skip(f"not implemented: {outcomes[0].detail}")


@pytest.mark.spec("VAL-1")
@pytest.mark.parametrize("entry", _params())
def test_each_bad_argument_raises_naming_the_argument(impl, entry):
    outcomes = probe_bad(entry, impl.get)
    _skip_if_not_implemented(outcomes)
    bad = [o for o in outcomes if o.status not in ("clean", "not_implemented")]
    assert not bad, f"{len(bad)} of {len(outcomes)} bad calls not rejected cleanly:\n{_report(bad)}"


def _every_call(impl, entry, kinds):
    outcomes = [o for o in probe_every_call(entry, impl.get) if o.what in kinds
                or o.status == "not_implemented"]
    _skip_if_not_implemented(outcomes)
    if not outcomes:
        pytest.skip(f"{entry.name}: no such form")
    bad = [o for o in outcomes if o.status not in ("ok", "not_implemented")]
    assert not bad, _report(bad)


@pytest.mark.spec("VAL-2")
@pytest.mark.parametrize("entry", [p for p in _params() if p.values[0].dtypes])
def test_every_floating_dtype_gives_the_float32_answer_rounded(impl, entry):
    _every_call(impl, entry, ("float16", "bfloat16", "float64"))


@pytest.mark.spec("VAL-3")
@pytest.mark.parametrize("entry", [p for p in _params() if p.values[0].noncontig])
def test_non_contiguous_inputs_give_the_contiguous_answer(impl, entry):
    _every_call(impl, entry, ("non-contiguous",))


@pytest.mark.spec("VAL-4")
@pytest.mark.parametrize("entry", [p for p in _params() if p.values[0].empty is not None])
def test_empty_inputs_return_without_error(impl, entry):
    _every_call(impl, entry, ("empty",))
