import jax
import pytest


@pytest.fixture
def x64():
    """Run the test body in float64, without changing the precision of other tests."""
    with jax.enable_x64(True):
        yield
