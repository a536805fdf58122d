"""matsign: the matrix functions behind matrix-aware optimizers, on any array library.

``import matsign`` imports no torch, cupy or jax; the backend is the caller's arrays.
"""

from . import polynomials
from ._iterations import ConvergenceError
from .polar import msign, newton_schulz, orthogonality_error, polar

__version__ = "0.1.0"

__all__ = [
    "ConvergenceError",
    "__version__",
    "msign",
    "newton_schulz",
    "orthogonality_error",
    "polar",
    "polynomials",
]
