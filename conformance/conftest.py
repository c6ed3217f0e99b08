"""Registers the conformance plugin for ``pytest conformance`` from a clone or an installed copy.

By name, so that an installed detspec, whose pytest11 entry point of the same name has
registered the plugin already, does not get its hooks twice."""

pytest_plugins = ["conformance.plugin"]
