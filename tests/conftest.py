import os
import shutil
import tempfile

# One persistent compilation cache per test run, shared by the pytest-xdist workers and by
# the subprocesses the tests start (notebooks, command lines), which inherit the
# environment. Many tests compile the same program more than once: tune_grid, fine_tune,
# optimize_noise and the training loops jit fresh closures on every call, and each
# subprocess starts with an empty in-memory cache. A hit loads XLA's executable for the
# same program instead of compiling it again (about 40% of test_tune_grid.py's time). The
# cache starts empty and is removed at the end, so no run depends on an earlier one; a
# JAX_COMPILATION_CACHE_DIR already set is used as it is.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="samplax-tests-jax-cache-")

import jax  # noqa: E402
import pytest  # noqa: E402
from convergence import problem  # noqa: E402, F401  (the exact problem of the convergence tests, a fixture)

jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])


def pytest_unconfigure(config):
    if _OWN_CACHE:
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


@pytest.fixture
def x64():
    """Run the test body in float64, without changing the precision of other tests."""
    with jax.enable_x64(True):
        yield
