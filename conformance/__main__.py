"""``python -m conformance --impl=NAME [pytest options]``: run the installed suite
(``python -m conformance table``: the flavour table, see ``conformance/table.py``).

Works from an installed package as well as from a clone: it points pytest at
this package's own directory, so a third party needs no copy of the tests.
"""

import os
import sys
from pathlib import Path

import pytest


def hypothesis_home() -> Path:
    """Where hypothesis keeps its example database for this command.

    Not ``./.hypothesis`` (hypothesis' default): the command runs from anywhere and
    must leave the caller's directory as it found it. ``$DETSPEC_CACHE/hypothesis``
    (default ``~/.cache/detspec/hypothesis``) keeps failing examples replayable.
    """
    cache = os.environ.get("DETSPEC_CACHE") or str(Path.home() / ".cache" / "detspec")
    return Path(cache) / "hypothesis"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Read lazily by hypothesis, on its first database access; an explicit setting wins.
    os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(hypothesis_home()))
    if argv[:1] == ["table"]:  # python -m conformance table: the flavour table
        from conformance.table import main as table_main
        return table_main(argv[1:])
    here = Path(__file__).resolve().parent
    # The package directory is the test root; rootdir beside it keeps node ids as
    # "conformance/test_x.py::..." so deviation prefixes match in both layouts.
    # No cache provider and no pytest-benchmark (the suite times nothing): both
    # would write a folder (.pytest_cache, .benchmarks) into the caller's directory.
    args = [str(here), "--rootdir", str(here.parent), "-p", "no:cacheprovider",
            "-p", "no:benchmark", *argv]
    return int(pytest.main(args))


if __name__ == "__main__":
    raise SystemExit(main())
