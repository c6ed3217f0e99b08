"""The conformance suite inside your own test suite, as scikit-learn's
``parametrize_with_checks`` puts its estimator checks in yours.

In a test module of your project (detspec installed, so the plugin is loaded by
its pytest11 entry point; otherwise add ``pytest_plugins = ["conformance.plugin"]``
to your top-level ``conftest.py``)::

    # tests/test_detspec.py
    from conformance.embed import conformance_suite

    conformance_suite(globals(), "mypkg", components=["iou", "nms"])

``pytest tests/test_detspec.py`` then runs the suite's tests on ``mypkg`` (a
``--impl`` on the command line still wins), with its header, per-component
table, deviations and ``--conformance-report``. Each suite module becomes one
class (``TestBoxes`` for ``test_boxes.py``), so ``-k TestNms`` picks a module,
and a deviation's test-id prefix ``conformance/test_nms.py::...`` matches the
embedded test as it matches the original.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Iterable

PACKAGE_DIR = Path(__file__).resolve().parent


def suite_modules() -> list[str]:
    """Names of the suite's test modules, e.g. ``["test_anchors", ...]``."""
    return sorted(p.stem for p in PACKAGE_DIR.glob("test_*.py"))


def _is_fixture(obj: Any) -> bool:
    try:  # pytest >= 8.4 wraps fixture functions in this class
        from _pytest.fixtures import FixtureFunctionDefinition
    except ImportError:  # pragma: no cover - older pytest marks the function itself
        return hasattr(obj, "_pytestfixturefunction")
    return isinstance(obj, FixtureFunctionDefinition) or hasattr(obj, "_pytestfixturefunction")


def _class_name(module: str) -> str:
    return "Test" + "".join(part.capitalize() for part in module.split("_")[1:])


def conformance_suite(namespace: dict, impl: str, *,
                      components: Iterable[str] | None = None) -> list[str]:
    """Put the suite's tests into ``namespace`` (a test module's ``globals()``).

    impl: the implementation under test, as ``--impl`` takes it.
    components: run only these components (``"iou"``, ``"nms"``, ... as in the
        summary table); default all. Returns the names of the classes added.
    """
    if not isinstance(namespace, dict):
        raise TypeError(f"namespace: expected a module's globals() dict, got {type(namespace).__name__}")
    if not isinstance(impl, str) or not impl:
        raise TypeError(f"impl: expected a module name or a path to a .py file, got {impl!r}")
    wanted = None
    if components is not None:
        if isinstance(components, str):
            raise TypeError(f"components: expected a list of names, got the string {components!r}")
        wanted = tuple(str(c) for c in components)
    namespace["__conformance__"] = {"impl": impl, "components": wanted}
    added = []
    for name in suite_modules():
        module = importlib.import_module(f"conformance.{name}")
        body: dict[str, Any] = {"__conformance_module__": f"{name}.py",
                                "__module__": namespace.get("__name__", __name__)}
        marks = getattr(module, "pytestmark", [])
        body["pytestmark"] = list(marks) if isinstance(marks, (list, tuple)) else [marks]
        for attr, obj in vars(module).items():
            if getattr(obj, "__module__", None) != module.__name__:
                continue  # imported helpers, not the module's own
            if _is_fixture(obj):
                if attr in namespace and namespace[attr] is not obj:
                    raise ValueError(f"conformance_suite: fixture {attr!r} of {name}.py clashes "
                                     "with a name already in the embedding module")
                namespace[attr] = obj
            elif attr.startswith("test") and callable(obj):
                body[attr] = staticmethod(obj)
        cls_name = _class_name(name)
        if cls_name in namespace:
            raise ValueError(f"conformance_suite: {cls_name} is already defined in the "
                             "embedding module")
        namespace[cls_name] = type(cls_name, (), body)
        added.append(cls_name)
    return added
