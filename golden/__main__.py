"""``python -m golden regenerate|check|list [CASE ...]``."""

from __future__ import annotations

import argparse
import sys

from golden import store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m golden",
        description="Regenerate or verify the golden tensors of the conformance suite.",
    )
    parser.add_argument(
        "command",
        choices=["regenerate", "check", "list"],
        help="regenerate: rebuild files and manifest from the reference; check: verify "
        "checksums and that regeneration reproduces every file; list: show the cases",
    )
    parser.add_argument("cases", nargs="*", help="case names (default: all)")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            for case in store._select(args.cases):
                print(f"{case.name:<40} {case.component:<12} {case.clause:<10} {case.producer}")
            return 0
        if args.command == "regenerate":
            manifest = store.regenerate(args.cases)
            print(f"wrote {len(manifest['cases'])} cases to {store.DATA}")
            return 0
        problems = store.check(args.cases)
    except store.GoldenStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if problems:
        print(f"{len(problems)} problem(s) in the golden store", file=sys.stderr)
        return 1
    print("golden store OK")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
