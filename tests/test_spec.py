"""SPEC.md and the conformance suite stay in step: every clause is checked by some
test, and every clause a test names exists."""

from __future__ import annotations

import re
from pathlib import Path

from conformance.plugin import read_clauses
from golden.cases import all_cases

ROOT = Path(__file__).resolve().parents[1]
MARK = re.compile(r"""mark\.spec\(\s*["']([^"']+)["']""")
CLAUSE_STRING = re.compile(r"""["']([A-Z][A-Z0-9]*-S?\d+[a-z]?)["']""")


def _clauses_named_by_tests() -> set[str]:
    named: set[str] = set()
    for path in (ROOT / "conformance").glob("test_*.py"):
        text = path.read_text(encoding="utf-8")
        named |= set(MARK.findall(text))
        # Parametrised tests may carry their clause in a table of ids.
        named |= set(CLAUSE_STRING.findall(text))
    named |= {case.clause for case in all_cases()}
    return named


def test_spec_has_clauses():
    assert len(read_clauses()) > 100


def test_clause_ids_are_unique():
    text = (ROOT / "SPEC.md").read_text(encoding="utf-8")
    ids = re.findall(r"\*\*\[([A-Z][A-Za-z0-9.\-]+)\]\*\*", text)
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    assert not dupes, f"clause ids defined twice in SPEC.md: {dupes}"


def test_every_clause_is_checked_by_some_test():
    clauses = set(read_clauses())
    # HAR-1 and HAR-2 are the harness's own clauses, checked in tests/test_plugin.py;
    # HAR-3 is what conformance/test_golden.py does for every case (each of those
    # tests names the clause its case pins).
    unchecked = sorted(clauses - _clauses_named_by_tests() - {"HAR-1", "HAR-2", "HAR-3"})
    assert not unchecked, f"SPEC.md clauses no conformance test names: {unchecked}"


def test_every_clause_a_test_names_exists():
    clauses = set(read_clauses())
    missing = sorted(c for c in _clauses_named_by_tests()
                     if c not in clauses and re.fullmatch(r"[A-Z]+-S?\d+", c))
    assert not missing, f"tests name clauses missing from SPEC.md: {missing}"


def test_every_clause_says_must_or_strict():
    bad = [cid for cid, text in read_clauses().items()
           if not (text.startswith("MUST") or text.startswith("STRICT"))]
    assert not bad, f"clauses without MUST/STRICT: {bad}"
