"""The type aliases of matsign's signatures: arrays, namespaces, dtypes.

``Array`` stands for an array of any supported backend (NumPy, CuPy, torch, JAX, any array-API
namespace). The standard has no runtime protocol that every backend satisfies, so it is
``typing.Any`` spelled for readers: ``def msign(G: Array, /, ...) -> Array``. Import it as
``from ._typing import Array`` (``from .._typing import Array`` in subpackages).
``Namespace`` (an ``xp=``) and ``DType`` (a ``dtype=``) are ``Any`` for the same reason.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Array", "DType", "Namespace"]

Array = Any
"""An array of the caller's backend; the namespace is inferred from it at run time."""

Namespace = Any
"""An array namespace (``xp``): ``numpy``, ``torch``, ``array_api_strict``, ..."""

DType = Any
"""A dtype of some namespace, e.g. ``numpy.float32`` or ``torch.bfloat16``."""
