"""``python -m conformance --impl=NAME [pytest options]``: run the installed suite.

Works from an installed package as well as from a clone: it points pytest at
this package's own directory, so a third party needs no copy of the tests.
"""

import sys
from pathlib import Path

import pytest


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    here = Path(__file__).resolve().parent
    # The package directory is the test root; rootdir beside it keeps node ids as
    # "conformance/test_x.py::..." so deviation prefixes match in both layouts.
    args = [str(here), "--rootdir", str(here.parent), "-p", "no:cacheprovider", *argv]
    return int(pytest.main(args))


if __name__ == "__main__":
    raise SystemExit(main())
