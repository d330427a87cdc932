"""The string registry of solvers for command lines and configs.

Every solver module ends with a table `SOLVERS = {"name": solver, ...}` in which each
name is written out, so `grep '"dpm++2m"' samplax/` finds where a solver is defined. The
registry reads the table of every module of `samplax.solvers`, so what `get` knows never
depends on which modules happen to have been imported, and a new solver module needs no
line anywhere else. `register` adds solvers of your own.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

__all__ = ["get", "names", "register"]

_REGISTERED: dict[str, object] = {}


@functools.cache
def _built_in() -> dict[str, object]:
    import samplax.solvers as package

    tables: dict[str, object] = {}
    for module_info in sorted(pkgutil.iter_modules(package.__path__), key=lambda info: info.name):
        module = importlib.import_module(f"{package.__name__}.{module_info.name}")
        for name, solver in vars(module).get("SOLVERS", {}).items():
            if name in tables:
                raise ValueError(f"solver name {name!r} is defined twice (in {module_info.name})")
            tables[name] = solver
    return tables


def register(name: str, solver) -> None:
    """Make `get(name)` return `solver` (a solver object of your own). Names are unique."""
    from samplax.solvers.base import Solver

    if not isinstance(name, str) or not name:
        raise TypeError(f"register(): name must be a non-empty string, got {name!r} ({type(name).__name__})")
    if not isinstance(solver, Solver):
        raise TypeError(f"register() takes a solver object (a samplax.solvers.Solver), got {type(solver).__name__}")
    if name in _built_in() or name in _REGISTERED:
        raise ValueError(f"solver name {name!r} is already registered")
    _REGISTERED[name] = solver


def names() -> list[str]:
    """All registered solver names."""
    return sorted({**_built_in(), **_REGISTERED})


def get(name: str):
    """The solver registered as `name`, e.g. "dpm++2m" or "ddim". Solvers are immutable,
    so the registered object itself is returned."""
    if not isinstance(name, str):
        raise TypeError(f"a solver name must be a string, got {type(name).__name__}")
    solver = _built_in().get(name, _REGISTERED.get(name))
    if solver is None:
        raise ValueError(f"unknown solver {name!r}; known solvers: {', '.join(names())}")
    return solver
