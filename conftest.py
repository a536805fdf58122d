"""Collection rules for the doctests in ``matsign/`` (pytest runs ``--doctest-modules``).

``matsign/optim/torch.py`` is the torch.optim adapter: importing it needs torch, an
optional dependency. Without torch its doctests are not collected; with torch they run.
"""

import importlib.util

collect_ignore = [] if importlib.util.find_spec("torch") else ["matsign/optim/torch.py"]
