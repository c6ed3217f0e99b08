"""Conformance suite: checks any implementation of the detection building blocks
against SPEC.md. Run ``pytest conformance --impl=NAME`` from a clone, or
``python -m conformance --impl=NAME`` from an installed copy."""

__version__ = "0.1.0"
