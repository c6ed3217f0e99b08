import sys

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """Tests that call ``reference.train.main`` in-process (``--threads``) set torch's
    thread count; restore it so that later tests run with the threads they had."""
    torch = sys.modules.get("torch")  # only where torch is already imported
    before = torch.get_num_threads() if torch is not None else None
    yield
    if before is not None and torch.get_num_threads() != before:
        torch.set_num_threads(before)
