"""The command line behind ``python -m matsign``: one module per subcommand.

Each subcommand module (`compare`, `design`, `plan`, `demo` for ``train-demo``) has
``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args)``; `matsign.__main__`
registers them. `timing` holds the flop model, the paired GEMM timing and the thread
pinning shared with the asv benchmarks in ``benchmarks/``.

Modules here may import torch, cupy, scipy or matplotlib, lazily; ``import matsign``
never imports this package.
"""

__all__ = ["UsageError"]


class UsageError(Exception):
    """A bad option value; the command line prints it on one line and exits with 2."""
