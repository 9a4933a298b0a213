"""Session set-up shared by every test file."""

import pytest


@pytest.fixture(scope="session", autouse=True)
def _compiled_kernels():
    """Compile (or load) every numba kernel once, before the first test.

    On a fresh cache (CI) the first match would otherwise compile inside whichever test
    runs first, and its "compiling its numba kernels" notice would land in that test's
    captured stderr. The notice itself is tested in test_cli.py.
    """
    from skyeq import _kernels, stats

    stats._noticed = stats._noticed_pairs = True  # the notice is for users, not the log
    _kernels.warmup(parallel=True)
