"""Golden tensors: cases in ``golden/cases``, data in ``golden/data``, provenance in
``golden/manifest.json``. ``python -m golden regenerate`` / ``python -m golden check``."""
