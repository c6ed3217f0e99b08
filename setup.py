"""Packaging hook: ship SPEC.md inside the installed ``conformance`` package.

SPEC.md lives at the top of the repository, where readers look for it; an
installed copy of the suite (``python -m conformance``) needs it too, to quote
clauses in failures and to check that every test names a real clause.
Everything else about the package is in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithSpec(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "conformance" / "SPEC.md"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(__file__).resolve().parent / "SPEC.md", target)


setup(cmdclass={"build_py": BuildWithSpec})
