"""Nested parameters on every backend: dicts, lists and tuples of arrays, named by path.

A leaf is anything that is not a dict (any Mapping), list or tuple (NamedTuples
included, by field); ``None`` and empty containers (optax's ``MaskedNode``) are empty
subtrees, as in JAX. A leaf's key is its path joined with dots, as
``torch.nn.Module.named_parameters`` names it (``"block.0.weight"``); a leaf at the top
keeps its own key (a dict key, a list position or a field name), so flat dicts and lists
read as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["leaves", "rebuild"]


def _is_node(tree) -> bool:
    return isinstance(tree, (Mapping, list, tuple))


def _children(tree):
    if isinstance(tree, Mapping):
        return tree.items()
    if hasattr(tree, "_fields"):  # a NamedTuple: by field name, as JAX
        return zip(tree._fields, tree, strict=True)
    return enumerate(tree)


def _join(prefix, key):
    return key if prefix is None else f"{prefix}.{key}"


def leaves(tree: Any) -> list[tuple[Any, Any]]:
    """``(key, leaf)`` for every leaf of ``tree``, in order (dicts in insertion order).

    Parameters
    ----------
    tree : array, or dict, list or tuple of (nested) arrays
        The parameters.

    Returns
    -------
    list of (key, leaf)
        An array alone is one leaf with key None.

    Raises
    ------
    ValueError
        If two leaves get the same key (``{"a.b": x, "a": {"b": y}}``).

    Examples
    --------
    >>> from matsign.optim._tree import leaves
    >>> leaves({"w": 1, "block": [2, {"b": 3}], "skip": None})
    [('w', 1), ('block.0', 2), ('block.1.b', 3)]
    """
    out: list[tuple[Any, Any]] = []

    def visit(prefix, node):
        if node is None:
            return
        if not _is_node(node):
            out.append((prefix, node))
            return
        for key, child in _children(node):
            visit(_join(prefix, key), child)

    visit(None, tree)
    keys = [key for key, _ in out]
    if len(set(keys)) != len(keys):
        twice = sorted({str(k) for k in keys if keys.count(k) > 1})
        msg = f"two parameters share the name {twice[0]!r}: rename one (keys join with '.')"
        raise ValueError(msg)
    return out


def rebuild(tree: Any, value: Callable[[Any, Any], Any]) -> Any:
    """``tree``'s structure with each leaf replaced by ``value(key, leaf)``.

    Parameters
    ----------
    tree : array, or dict, list or tuple of (nested) arrays
        The structure (dicts come back as dicts, lists as lists, tuples as tuples).
    value : callable
        ``value(key, leaf)``, with keys as in `leaves`.

    Returns
    -------
    Same structure as ``tree``; None stays None.
    """

    def visit(prefix, node):
        if node is None:
            return None
        if not _is_node(node):
            return value(prefix, node)
        children = [(key, visit(_join(prefix, key), child)) for key, child in _children(node)]
        if isinstance(node, Mapping):
            return dict(children)
        if hasattr(node, "_fields"):
            return type(node)(*(child for _, child in children))
        return type(node)(child for _, child in children)

    return visit(None, tree)
