"""Public test helpers: a matrix zoo and an assertion that checks namespace, dtype and device.

The zoo is built in NumPy float64 on the host; tests move each matrix to the backend
under test and compare the result with float64 oracles computed from the same NumPy
array. Copying to NumPy happens here and in tests only, never in the library.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import _xp
from ._typing import Array, DType, Namespace

__all__ = ["ZooMatrix", "assert_close", "matrix_with_singular_values", "zoo"]


@dataclass(frozen=True)
class ZooMatrix:
    """A test matrix with its float64 singular values.

    Attributes
    ----------
    name : str
        What kind of matrix this is.
    matrix : numpy.ndarray
        The float64 matrix, shape (..., m, n).
    singular_values : numpy.ndarray
        Its singular values, descending, shape (..., min(m, n)).
    """

    name: str
    matrix: np.ndarray
    singular_values: np.ndarray


def matrix_with_singular_values(
    singular_values: Sequence[float] | np.ndarray, m: int, n: int, *, rng: np.random.Generator,
) -> np.ndarray:
    """A random m x n float64 matrix ``U diag(s) V^T`` with Haar-random U and V."""
    k = min(m, n)
    U, _ = np.linalg.qr(rng.standard_normal((m, k)))
    V, _ = np.linalg.qr(rng.standard_normal((n, k)))
    return (U * np.asarray(singular_values, dtype=np.float64)) @ V.T


def zoo(*, seed: int = 0, size: int = 32) -> dict[str, ZooMatrix]:
    """The matrix zoo used across the test suite.

    Parameters
    ----------
    seed : int, default 0
        Seed of the random generator.
    size : int, default 32
        The smaller dimension of the non-trivial matrices.

    Returns
    -------
    dict of str to ZooMatrix
        Gaussian, ill-conditioned (singular values log-spaced over 1e-6..1),
        rank-deficient, tall and wide (aspect 4), batched, 1 x 1, 1 x n and zero.

    Examples
    --------
    >>> from matsign.testing import zoo
    >>> sorted(zoo())[:3]
    ['batched', 'gaussian', 'ill_conditioned']
    """
    rng = np.random.default_rng(seed)
    k = size
    rank = k // 4
    matrices = {
        "gaussian": rng.standard_normal((k + k // 2, k)),
        "ill_conditioned": matrix_with_singular_values(np.logspace(0, -6, k), k, k, rng=rng),
        "rank_deficient": rng.standard_normal((k, rank)) @ rng.standard_normal((rank, 2 * k)),
        "tall": rng.standard_normal((4 * k, k)),
        "wide": rng.standard_normal((k, 5 * k)),
        "batched": rng.standard_normal((2, 3, k // 2, k)),
        "one_by_one": np.array([[-2.5]]),
        "row": rng.standard_normal((1, k)),
        "zero": np.zeros((k // 2, k)),
    }
    return {
        name: ZooMatrix(name, a, np.linalg.svd(a, compute_uv=False))
        for name, a in matrices.items()
    }


def assert_close(
    actual: Array, expected: ArrayLike, *, rtol: float = 0.0, atol: float = 0.0, xp: Namespace,
    dtype: DType | None = None, device: Any = None,
) -> None:
    """Assert ``actual`` lives in ``xp`` with the given dtype/device and matches ``expected``.

    Parameters
    ----------
    actual : array
        Result of the code under test.
    expected : array_like
        The oracle, any array convertible to NumPy (compared in float64).
    rtol, atol : float
        ``|actual - expected| <= atol + rtol * |expected|`` elementwise.
    xp : namespace
        The namespace ``actual`` must belong to.
    dtype, device : optional
        When given, ``actual`` must have exactly this dtype and device.

    Raises
    ------
    AssertionError
        On a namespace, dtype, device or shape mismatch, or values out of tolerance.
    """
    assert _xp.namespace(actual) is _xp.namespace(xp.asarray(0.0)), (
        f"result left its namespace: {type(actual)}"
    )
    if dtype is not None:
        assert actual.dtype == dtype, f"dtype {actual.dtype} != {dtype}"
    if device is not None:
        assert _xp.device(actual) == device, f"device {_xp.device(actual)} != {device}"
    got = _xp.to_numpy(actual).astype(np.float64)
    want = np.asarray(expected, dtype=np.float64)
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
