"""Sphinx configuration for the matsign documentation.

Build with ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` and run
the examples in these pages with ``python -m sphinx -W -b doctest docs docs/_build/doctest``.
The build reaches no network: no intersphinx inventories, no remote images.
"""

from __future__ import annotations

import importlib.util

import matsign

project = "matsign"
author = "The matsign developers"
copyright = "2025, The matsign developers"
version = release = matsign.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "numpydoc",
]

root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]
html_static_path = []
default_role = "py:obj"

# --- API reference: stubs generated from the docstrings at build time ---------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_typehints = "none"

numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# --- Doctests in the .rst pages (the docstrings run under pytest --doctest-modules) -------
HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_JAX = all(importlib.util.find_spec(name) is not None for name in ("jax", "optax"))
doctest_global_setup = f"""
import numpy as np
HAS_TORCH = {HAS_TORCH!r}
HAS_JAX = {HAS_JAX!r}
"""
doctest_test_doctest_blocks = "default"

# --- HTML ----------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"matsign {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "navbar_align": "left",
}
html_sidebars = {"index": [], "benchmarks": []}
