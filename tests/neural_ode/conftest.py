import jax
import pytest


@pytest.fixture(autouse=True)
def _float64():
    """These tests compare against analytic values in float64. The precision is switched on
    per test, never globally, so it does not leak into other tests of the same process."""
    with jax.enable_x64(True):
        yield
