"""Registers the conformance plugin for ``pytest conformance``."""

from conformance.plugin import (  # noqa: F401  (pytest finds hooks and fixtures by name)
    device,
    impl,
    pytest_addoption,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_report_header,
    pytest_runtest_makereport,
    pytest_terminal_summary,
)
