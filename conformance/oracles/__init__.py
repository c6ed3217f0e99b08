"""Moved: the loop-based NumPy oracles are the top-level package ``oracles``.

They are shared by ``conformance`` (the suite) and ``golden`` (the cases' cross-checks),
so neither imports the other for them (golden -> oracles <- conformance, and
conformance -> golden for the stored tensors). This alias keeps
``from conformance.oracles import nms`` working for code written before the move;
new code imports ``oracles``.
"""

import importlib
import sys

for _name in ("anchors", "assignment", "boxes", "coders", "losses", "nms", "proposals", "roi",
              "sampling", "targets"):
    _module = importlib.import_module(f"oracles.{_name}")
    sys.modules[f"{__name__}.{_name}"] = _module
    globals()[_name] = _module
