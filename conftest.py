"""Collection rules for the doctests in ``matsign/`` (pytest runs ``--doctest-modules``).

The framework adapters need their framework, an optional dependency:
``matsign/optim/torch.py`` needs torch, ``matsign/optim/optax.py`` needs jax and optax.
Without it an adapter's doctests are not collected; with it they run.
"""

import importlib.util

ADAPTERS = {"matsign/optim/torch.py": ("torch",),
            "matsign/optim/optax.py": ("jax", "optax")}

collect_ignore = [path for path, needs in ADAPTERS.items()
                  if not all(importlib.util.find_spec(name) for name in needs)]
