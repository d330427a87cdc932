"""The one helper every frozen-dataclass pytree of samplax uses for its static fields."""

from __future__ import annotations

import dataclasses

__all__ = ["static_field"]


def static_field(default=dataclasses.MISSING, **options):
    """A dataclass field that `jax.tree_util.register_dataclass` treats as static: part of
    the tree's structure (hashed, compared, never traced) rather than a leaf."""
    return dataclasses.field(default=default, metadata={"static": True}, **options)
