"""Sphinx configuration for the matsign documentation.

Build with ``python -m sphinx -n -W --keep-going -b html docs docs/_build/html`` and run
the examples in these pages with ``python -m sphinx -W -b doctest docs docs/_build/doctest``.
The build reaches no network: no intersphinx inventories, no remote images, MathJax served
locally. At build start, every ``docs/make_*.py`` draws its figures from the code into
``docs/_static/generated/`` (see `make_figures`).
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path

import matsign

DOCS = Path(__file__).resolve().parent

project = "matsign"
author = "The matsign developers"
copyright = "2025, The matsign developers"
version = release = matsign.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax served from _static/mathjax: math renders offline
    "numpydoc",
]

root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]
html_static_path = ["_static"]
html_css_files = ["matsign.css"]  # wide tables scroll, long code lines wrap
default_role = "py:obj"

# --- Nitpicky builds (-n): every reference resolves ---------------------------------------
# Names of other projects, which the offline build has no inventory for (no intersphinx).
nitpick_ignore = [
    ("py:obj", "numpy.linalg.LinAlgError"),
    ("py:obj", "optax.adafactor"),
    ("py:obj", "scipy.linalg.fractional_matrix_power"),
]

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
    "header_links_before_dropdown": 4,  # the rest of the guide under "More"
    "secondary_sidebar_items": ["page-toc", "sourcelink"],
}
# The pages form one flat list (the header has them), so no page has a section
# navigation to show: no left sidebar anywhere, and the text column gets its width.
html_sidebars = {"**": []}


# --- Figures drawn from the code at build start --------------------------------------------
def make_figures(app):
    """Run the ``main()`` of every ``docs/make_*.py``: they write ``_static/generated/``.

    A script that fails (matplotlib missing, say) fails the build: no stale figure.
    """
    sys.path.insert(0, str(DOCS))
    try:
        for script in sorted(DOCS.glob("make_*.py")):
            module = importlib.import_module(script.stem)
            print(f"docs/{script.name}: main()")
            module.main()
    finally:
        sys.path.remove(str(DOCS))


def skip_aliases(app, what, name, obj, skip, options):
    """Leave out class attributes bound to a function of another name.

    ``Shampoo.factory = staticmethod(shampoo)`` is `matsign.optim.shampoo`, documented
    on its own page; repeated in the class it would be the same text out of its context.
    """
    function = getattr(obj, "__func__", obj)
    if inspect.isfunction(function) and function.__name__ != name.rpartition(".")[2]:
        return True
    return None


def setup(app):
    app.connect("builder-inited", make_figures)
    app.connect("autodoc-skip-member", skip_aliases)
