"""Newton–Schulz kernels: the plain loop, the Gram-space loop, and the accuracy-controlled loop.

Every kernel takes ``X`` of shape (..., m, n) with m <= n and spectral norm at most one,
and a sequence of coefficient tuples ``(c0, c1, ...)`` for ``p(x) = c0 x + c1 x^3 + ...``.
Each step is ``X <- q(X X^T) X`` with ``q(A) = c0 I + c1 A + c2 A^2 + ...``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from . import _xp
from .polynomials import Schedule, band

__all__ = ["ConvergenceError", "LinAlgError", "gram_space", "standard", "until_orthogonal"]


class LinAlgError(np.linalg.LinAlgError):
    """A matrix the routine cannot take: singular or indefinite where it must not be.

    A `numpy.linalg.LinAlgError` (so a ``ValueError``), as scipy.linalg users catch it.
    """


class ConvergenceError(LinAlgError, ArithmeticError):
    """An iteration did not reach the requested accuracy within its step limit.

    A `LinAlgError` (and so a `numpy.linalg.LinAlgError` and a ``ValueError``), and an
    ``ArithmeticError`` as in earlier releases.
    """


LinAlgError.__module__ = ConvergenceError.__module__ = "matsign"  # their public home


def gram_polynomial(A, coefficients, *, xp, constant=True, symmetric=True):
    """``c0 I + c1 A + c2 A^2 + ...`` for symmetric ``A`` by Horner's rule, fused if possible.

    With ``constant=False`` the ``c0 I`` term is left out (see `standard`). With
    ``symmetric=True`` the products are the symmetric ones of `matsign._xp` (half the
    flops where they win); ``symmetric=False`` keeps one plain fused product each.
    """
    c = coefficients
    if len(c) == 1:
        return c[0] * _xp.eye_like(A, xp=xp)
    if len(c) == 2:
        B = c[1] * A
    else:
        B = _xp.symmetric_square_add(A, alpha=c[-1], beta=c[-2], xp=xp, symmetric=symmetric)
    for ck in reversed(c[1:-2]):
        # B and A are polynomials of A, so B A is symmetric
        B = _xp.symmetric_product_add(B, A, A, alpha=1.0, beta=ck, xp=xp, symmetric=symmetric)
    return _xp.add_diagonal(B, c[0], xp=xp) if constant else B


def standard(X, polynomials, *, xp, symmetric=True):
    """Apply the steps directly: per quintic step ``4 m^2 n + 2 m^3`` flops.

    ``symmetric=True`` forms ``X X^T`` and ``A^2`` from their upper block triangles where
    that wins (`matsign._xp.gram`); ``symmetric=False`` keeps the plain products, on torch
    exactly torch.optim.Muon's operations.
    """
    for coefficients in polynomials:
        if len(coefficients) == 1:
            X = coefficients[0] * X
            continue
        A = _xp.gram(X, xp=xp, symmetric=symmetric)
        B = gram_polynomial(A, coefficients, xp=xp, constant=False, symmetric=symmetric)
        X = _xp.add_constant_then_matmul(B, X, coefficients[0], xp=xp, symmetric=symmetric)
    return X


def gram_space(X, polynomials, *, restarts=None, xp, symmetric=True):
    """Iterate on the m x m Gram matrix and touch the m x n matrix only at (re)starts.

    With ``R = X X^T`` and ``B = q(R)``, one step maps ``X -> B X`` and ``R -> B R B``;
    the products ``B_k ... B_1`` accumulate in ``Q`` and ``X`` is formed once at the end.
    At each step index in ``restarts`` (default: halfway and the last step) the
    accumulated product is applied and ``R`` recomputed from ``X``. Round-off in ``R``
    otherwise turns the singular vectors as the steps go on; with the two restarts the
    output is as close to ``U V^T`` as the standard iteration's (measured at 512 x 2048
    and 1024 x 4096; a restart before the last step alone leaves 2-4 times more).
    All of ``R``, ``B`` and ``Q`` are polynomials of the first ``R``, so the products
    ``B Q`` and ``(B R) B`` are symmetric ones (`matsign._xp.symmetric_product`) and
    ``B R``, ``Q X`` multiply by a symmetric left factor (`matsign._xp.symmetric_matmul`),
    unless ``symmetric=False``.
    """
    polynomials = list(polynomials)
    k = len(polynomials)
    restarts = {k // 2, k - 1} if restarts is None else set(restarts)
    R = _xp.gram(X, xp=xp, symmetric=symmetric)
    Q = None
    for k, coefficients in enumerate(polynomials):
        if k in restarts and Q is not None:
            X, Q = _xp.symmetric_matmul(Q, X, xp=xp, symmetric=symmetric), None
            R = _xp.gram(X, xp=xp, symmetric=symmetric)
        B = gram_polynomial(R, coefficients, xp=xp, symmetric=symmetric)
        Q = B if Q is None else _xp.symmetric_product(B, Q, xp=xp, symmetric=symmetric)
        if k + 1 < len(polynomials) and k + 1 not in restarts:
            BR = _xp.symmetric_matmul(B, R, xp=xp, symmetric=symmetric)
            R = _xp.symmetric_product(BR, B, xp=xp, symmetric=symmetric)
    return X if Q is None else _xp.symmetric_matmul(Q, X, xp=xp, symmetric=symmetric)


def until_orthogonal(X, polynomials, *, tol, max_steps, xp, symmetric=True):
    """Run the steps until the orthogonality error ``max |sigma_i - 1|`` is at most ``tol``.

    Before each step, ``delta = ||X X^T - I||_F`` (free from the Gram matrix the step
    computes anyway) bounds ``|sigma_i^2 - 1|``, so every ``sigma_i`` lies in
    ``[sqrt(1 - delta), sqrt(1 + delta)]``. The exact image of that interval under the
    step's polynomial (`matsign.polynomials.band`) bounds the error after the step; the
    loop stops as soon as either bound is at most ``tol``. Reading ``delta`` is one host
    sync per step; ``polynomials`` may be an endless iterator.

    Raises
    ------
    ConvergenceError
        If neither bound reaches ``tol`` within ``max_steps`` steps.
    """
    delta = float("inf")
    steps = itertools.chain(itertools.islice(polynomials, max_steps), [None])
    for coefficients in steps:
        A = _xp.gram(X, xp=xp, symmetric=symmetric)
        delta = _gram_defect(A, xp=xp)
        if delta <= tol or coefficients is None:
            break
        B = gram_polynomial(A, coefficients, xp=xp, symmetric=symmetric)
        X = _xp.symmetric_matmul(B, X, xp=xp, symmetric=symmetric)
        if _error_after(coefficients, delta) <= tol:
            return X
    if delta <= tol:
        return X
    msg = (f"Newton–Schulz did not reach orthogonality error {tol:g} in {max_steps} steps "
           f"(bound ||X X^T - I||_F = {delta:.3g}); raise max_steps or tol, or use "
           f"method='svd'")
    raise ConvergenceError(msg)


def _gram_defect(A, *, xp):
    """``max ||A - I||_F`` over a stack, zero matrices excluded (they map to zero exactly)."""
    defect = _xp.frobenius_norm(A - _xp.eye_like(A, xp=xp), xp=xp)
    defect = xp.where(_xp.frobenius_norm(A, xp=xp) > 0, defect, xp.zeros_like(defect))
    return float(xp.max(defect))


def _error_after(coefficients, delta):
    """Bound on ``max |p(sigma) - 1|`` over ``sigma^2`` in ``[1 - delta, 1 + delta]``."""
    if delta >= 1.0:
        return float("inf")
    step = Schedule("step", (tuple(coefficients),), tail="stop", default_steps=1)
    lo, hi = band(step, math.sqrt(1.0 - delta), upper=math.sqrt(1.0 + delta))
    return max(1.0 - lo, hi - 1.0)
