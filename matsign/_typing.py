"""The one type alias for arrays in matsign's signatures.

``Array`` stands for an array of any supported backend (NumPy, CuPy, torch, JAX, any array-API
namespace). The standard has no runtime protocol that every backend satisfies, so it is
``typing.Any`` spelled for readers: ``def msign(G: Array, /, ...) -> Array``. Import it as
``from ._typing import Array`` (``from .._typing import Array`` in subpackages).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Array"]

Array = Any
"""An array of the caller's backend; the namespace is inferred from it at run time."""
