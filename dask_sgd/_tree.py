"""Optimizer states as trees: tuples and named tuples whose leaves are arrays or scalars."""

from __future__ import annotations

from typing import Any


def map_tree(fn, *trees):
    """Apply ``fn`` to the corresponding leaves of trees of one structure."""
    first = trees[0]
    if isinstance(first, tuple):
        children = [map_tree(fn, *group) for group in zip(*trees, strict=True)]
        return type(first)(*children) if hasattr(first, "_fields") else tuple(children)
    return fn(*trees)


def tree_leaves(tree) -> list[Any]:
    """The leaves, depth first."""
    leaves: list[Any] = []
    map_tree(leaves.append, tree)
    return leaves


def tree_unflatten(like, leaves: list[Any]):
    """A tree shaped as ``like`` whose leaves are ``leaves``, in :func:`tree_leaves`' order."""
    remaining = iter(leaves)
    tree = map_tree(lambda _: next(remaining), like)
    if next(remaining, None) is not None:
        raise ValueError("More leaves than the tree has.")
    return tree
