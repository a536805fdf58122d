"""Every public name of matsign is listed in the API reference, docs/api.rst.

The public names are read from the ``__all__`` of each public namespace; the listed ones
from the page's ``currentmodule`` / ``automodule`` directives, ``autosummary`` entries and
``py:data`` directives, each under the module in force where it stands. A re-export (the
top-level ``matsign.dualize`` is ``matsign.duality.dualize``) counts as listed when the
same object is listed under another name.
"""

from __future__ import annotations

import importlib
import re
import types
import warnings
from pathlib import Path

import pytest

API = Path(__file__).resolve().parents[1] / "docs" / "api.rst"

NAMESPACES = [
    "matsign",
    "matsign.polynomials",
    "matsign.duality",
    "matsign.kron",
    "matsign.optim",
    "matsign.optim.plan",
    "matsign.optim.adamuon",
    "matsign.testing",
    "matsign.optim.optax",  # needs jax and optax
    "matsign.optim.torch",  # needs torch
]
OPTIONAL = {"matsign.optim.optax": ("jax", "optax"), "matsign.optim.torch": ("torch",)}
NOT_DOCUMENTED = {"__version__"}  # printed in every page's title instead


def documented(text):
    """The fully qualified names that ``text`` (an api.rst) documents, and its modules."""
    names, modules, module, in_autosummary = set(), set(), None, False
    for line in text.splitlines():
        if match := re.match(r"\.\. (currentmodule|automodule):: (\S+)", line):
            module, in_autosummary = match[2], False
            if match[1] == "automodule":
                modules.add(module)
        elif match := re.match(r"\.\. py:data:: (\S+)", line):
            names.add(f"{module}.{match[1]}")
            in_autosummary = False
        elif line.startswith(".. autosummary::"):
            in_autosummary = True
        elif in_autosummary and (match := re.match(r"   (\w+)\s*$", line)):
            names.add(f"{module}.{match[1]}")
        elif in_autosummary and line and not line.startswith(" "):
            in_autosummary = False
    return names, modules


def public_names(namespace):
    for package in OPTIONAL.get(namespace, ()):
        pytest.importorskip(package)
    module = importlib.import_module(namespace)
    return module, [name for name in module.__all__ if name not in NOT_DOCUMENTED]


def test_the_parser_reads_the_page():
    names, modules = documented(API.read_text(encoding="utf-8"))
    assert "matsign.msign" in names
    assert "matsign.duality.KINDS" in names
    assert {"matsign.polynomials", "matsign.optim.torch"} <= modules


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_every_public_name_is_in_the_api_reference(namespace):
    names, modules = documented(API.read_text(encoding="utf-8"))
    module, public = public_names(namespace)
    elsewhere = {id(obj) for obj in map(_resolve, names) if obj is not None}
    missing = []
    for name in public:
        qualified, obj = f"{namespace}.{name}", getattr(module, name)
        if isinstance(obj, types.ModuleType):
            if qualified not in modules:
                missing.append(f"{qualified} (no automodule section)")
        elif qualified not in names and id(obj) not in elsewhere:  # a re-export is fine
            missing.append(qualified)
    assert not missing, f"add to docs/api.rst: {', '.join(missing)}"


def test_every_listed_name_exists():
    names, _ = documented(API.read_text(encoding="utf-8"))
    absent = []
    for qualified in sorted(names):
        namespace, _, name = qualified.rpartition(".")
        try:
            module = importlib.import_module(namespace)
        except ImportError:  # an optional dependency that is not installed
            continue
        if name not in dir(module) and name not in getattr(module, "__all__", ()) \
                and not _module_getattr(module, name):
            absent.append(qualified)
    assert not absent, f"docs/api.rst lists names that do not exist: {absent}"


def _resolve(qualified):
    """The object that ``qualified`` names, or None (an optional dependency missing)."""
    namespace, _, name = qualified.rpartition(".")
    try:
        module = importlib.import_module(namespace)
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return getattr(module, name, None)


def _module_getattr(module, name):
    """A name served by the module's ``__getattr__`` (a deprecated spelling)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return hasattr(module, name)
