import jax
import pytest
from convergence import problem  # noqa: F401  (the exact problem of the convergence tests, a fixture)


@pytest.fixture
def x64():
    """Run the test body in float64, without changing the precision of other tests."""
    with jax.enable_x64(True):
        yield
