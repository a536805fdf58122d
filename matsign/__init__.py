"""matsign: the matrix functions behind matrix-aware optimizers, on any array library.

``import matsign`` imports no torch, cupy or jax; the backend is the caller's arrays.
"""

from . import duality, kron, polynomials
from ._iterations import ConvergenceError, LinAlgError
from .duality import dualize
from .polar import msign, newton_schulz, orthogonality_error, polar
from .roots import inverse_root, matrix_root, psd_power

__version__ = "0.1.0"

__all__ = [
    "ConvergenceError",
    "LinAlgError",
    "__version__",
    "duality",
    "dualize",
    "inverse_root",
    "kron",
    "matrix_root",
    "msign",
    "newton_schulz",
    "orthogonality_error",
    "polar",
    "polynomials",
    "psd_power",
]
