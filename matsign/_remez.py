"""Best odd polynomial approximation of the constant 1 on an interval (private).

The one problem solved here: given ``0 < lower <= upper`` and an odd degree ``d = 2q + 1``,
find ``p(x) = c0 x + c1 x^3 + ... + cq x^d`` minimising ``max |1 - p(x)|`` over
``[lower, upper]``. By the equioscillation theorem the optimum touches its error ``E``
with alternating signs at ``q + 2`` points: both endpoints and the ``q`` interior
critical points of ``p``. Remez's exchange algorithm finds them.

The odd-monomial basis is badly conditioned on the narrow intervals near 1 that late
Newton–Schulz steps see (a float64 solve loses ``eps / width^2`` in the coefficients;
the published Polar Express list carries such an error in its seventh polynomial), so
the small linear systems and the error at the reference points are computed exactly in
rational arithmetic. Only the root finding for the next reference runs in float64, on
a polynomial shifted and scaled to the interval, where its roots are well conditioned.

Everything is plain Python and NumPy float64 on the host.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

__all__ = ["minimax_odd", "pade", "remez"]

#: Intervals narrower than this (relative half-width) get the limit polynomial: the
#: optimum differs from ``pade(d)(x / midpoint)`` by O(width^2), below float64 there.
NARROW = 1e-9


def minimax_odd(lower, upper, degree):
    """Coefficients ``(c0, c1, ...)`` of the best odd approximation of 1 on [lower, upper].

    Closed forms for degrees 1 and 3, the limit polynomial for intervals narrower than
    `NARROW`, and `remez` otherwise. See the module docstring.
    """
    lower, upper, q = _validate(lower, upper, degree)
    if upper - lower <= NARROW * (upper + lower) / 2:
        return _scaled_pade(q, (lower + upper) / 2)
    if q == 0:
        return (2.0 / (lower + upper),)
    if q == 1:
        return _optimal_cubic(lower, upper)
    return remez(lower, upper, degree)[0]


def _validate(lower, upper, degree):
    lower, upper = float(lower), float(upper)
    if not (0 < lower <= upper < math.inf):
        msg = f"need 0 < lower <= upper < inf; got lower={lower}, upper={upper}"
        raise ValueError(msg)
    if int(degree) != degree or degree < 1 or degree % 2 == 0:
        msg = f"degree must be a positive odd integer; got {degree!r}"
        raise ValueError(msg)
    return lower, upper, (int(degree) - 1) // 2


def _optimal_cubic(lower, upper):
    """Closed form (Chen & Chow; Amsel et al. 2025, sec. 4.2): ``beta p_NS(alpha x)``."""
    alpha = math.sqrt(3.0 / (upper * upper + lower * upper + lower * lower))
    beta = 4.0 / (2.0 + lower * upper * (lower + upper) * alpha**3)
    return (1.5 * alpha * beta, -0.5 * alpha**3 * beta)


def pade(degree):
    """Exact coefficients of the degree-``d`` Newton–Schulz (Padé) polynomial.

    ``x * sum_{k<=q} binom(2k, k) / 4^k * (1 - x^2)^k``, the truncated series of
    ``x (1 - (1 - x^2))^(-1/2)``: ``p(1) = 1`` with its first ``q`` derivatives zero.

    Examples
    --------
    >>> from matsign._remez import pade
    >>> [str(c) for c in pade(5)]
    ['15/8', '-5/4', '3/8']
    """
    q = (int(degree) - 1) // 2
    coefficients = [Fraction(0)] * (q + 1)
    for k in range(q + 1):
        weight = Fraction(math.comb(2 * k, k), 4**k)
        for j in range(k + 1):  # (1 - y)^k = sum_j binom(k, j) (-y)^j
            coefficients[j] += weight * math.comb(k, j) * (-1) ** j
    return tuple(coefficients)


def _scaled_pade(q, midpoint):
    """``pade(2q + 1)(x / midpoint)``: the optimum's limit as the interval shrinks."""
    return tuple(float(c) / midpoint ** (2 * k + 1) for k, c in enumerate(pade(2 * q + 1)))


def remez(lower, upper, degree, *, max_steps=60, rtol=1e-13):
    """Remez exchange for the best odd degree-``d`` approximation of 1 on [lower, upper].

    Parameters
    ----------
    lower, upper : float
        The interval, ``0 < lower < upper``.
    degree : int
        Odd degree ``2q + 1 >= 3``.
    max_steps : int, default 60
        Exchange steps before giving up.
    rtol : float, default 1e-13
        Stop when the largest error at the critical points exceeds the levelled error
        by at most this fraction (de la Vallée Poussin: the optimum lies in between).

    Returns
    -------
    coefficients : tuple of float
        ``(c0, ..., cq)``.
    error : float
        The levelled (optimal) error ``E``.

    Raises
    ------
    RuntimeError
        If the reference loses its alternation or the exchange does not converge.

    Examples
    --------
    >>> from matsign._remez import remez
    >>> c, error = remez(0.5, 1.0, 5)
    >>> round(error, 6)
    0.024047
    """
    lower, upper, q = _validate(lower, upper, degree)
    points = _chebyshev_points(lower, upper, q + 2)
    worst = level = math.inf
    for _ in range(max_steps):
        coefficients, level = _levelled_solve(points, q)
        points = [lower, *_interior_extrema(coefficients, lower, upper, q, degree), upper]
        worst = max(abs(1 - _evaluate(coefficients, Fraction(x))) for x in points)
        if level > 0 and worst <= level * (1 + rtol):
            return tuple(float(c) for c in coefficients), float(level)
    msg = (f"Remez did not converge for degree {degree} on [{lower!r}, {upper!r}] in "
           f"{max_steps} steps: levelled error {float(level):.3e}, max error {float(worst):.3e}")
    raise RuntimeError(msg)


def _chebyshev_points(lower, upper, count):
    """Chebyshev–Lobatto points on [lower, upper]: l, (3l+u)/4, (l+3u)/4, u for the quintic."""
    angles = np.pi * np.arange(count) / (count - 1)
    points = lower + (upper - lower) * (1 - np.cos(angles)) / 2
    return [lower, *(float(x) for x in points[1:-1]), upper]


def _levelled_solve(points, q):
    """Exact ``p(x_i) + (-1)^i E = 1``: coefficients and ``E`` as Fractions."""
    rows = []
    for i, x in enumerate(points):
        x = Fraction(x)
        rows.append([x ** (2 * k + 1) for k in range(q + 1)] + [Fraction((-1) ** i)])
    solution = _solve_exact(rows, [Fraction(1)] * len(points))
    return solution[:-1], solution[-1]


def _solve_exact(rows, rhs):
    """Gaussian elimination in rational arithmetic (systems of size q + 2, tiny)."""
    n = len(rows)
    a = [[*row, b] for row, b in zip(rows, rhs, strict=True)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        if a[pivot][col] == 0:
            msg = "Remez reference points are not distinct"
            raise RuntimeError(msg)
        a[col], a[pivot] = a[pivot], a[col]
        for r in range(col + 1, n):
            factor = a[r][col] / a[col][col]
            a[r] = [v - factor * w for v, w in zip(a[r], a[col], strict=True)]
    solution = [Fraction(0)] * n
    for r in reversed(range(n)):
        tail = sum(a[r][k] * solution[k] for k in range(r + 1, n))
        solution[r] = (a[r][n] - tail) / a[r][r]
    return solution


def _evaluate(coefficients, x):
    """``sum c_k x^(2k+1)`` by Horner's rule in ``x^2`` (exact for Fractions)."""
    x2, acc = x * x, 0
    for c in reversed(coefficients):
        acc = acc * x2 + c
    return acc * x


def _interior_extrema(coefficients, lower, upper, q, degree):
    """The ``q`` critical points of ``p`` in (lower, upper), sorted; raises if not ``q``.

    ``p'(x) = D(x^2)`` with ``D(y) = sum (2k+1) c_k y^k``. ``D`` is shifted and scaled
    exactly to ``y = centre + half t``, ``t`` in [-1, 1], so that its float64 roots in
    ``t`` are well conditioned however narrow the interval.
    """
    derivative = [(2 * k + 1) * c for k, c in enumerate(coefficients)]
    lo2, hi2 = Fraction(lower) ** 2, Fraction(upper) ** 2
    centre, half = (lo2 + hi2) / 2, (hi2 - lo2) / 2
    shifted = [float(d) for d in _taylor_shift(derivative, centre, half)]
    roots = np.roots(shifted[::-1]) if any(shifted[1:]) else np.array([])
    real = roots[np.abs(roots.imag) <= 1e-9 * (1 + np.abs(roots))].real
    t = np.sort(real[(real > -1) & (real < 1)])
    x = [math.sqrt(float(centre) + float(half) * float(ti)) for ti in t]
    x = [xi for xi in x if lower < xi < upper]
    if len(x) != q:
        msg = (f"Remez lost the alternation for degree {degree} on [{lower!r}, {upper!r}]: "
               f"{len(x)} interior extrema instead of {q}")
        raise RuntimeError(msg)
    return x


def _taylor_shift(coefficients, centre, half):
    """Coefficients of ``D(centre + half t)`` in ``t`` (low order first), exactly."""
    out = [Fraction(0)] * len(coefficients)
    for k, c in enumerate(coefficients):
        for j in range(k + 1):  # (centre + half t)^k
            out[j] += c * math.comb(k, j) * centre ** (k - j) * half**j
    return out
