"""The symmetric products of matsign._xp (X X^T, b A + c A^2, commuting products) against
float64 NumPy, on every backend; exact symmetry and torch.optim.Muon's operations on torch."""

from __future__ import annotations

import numpy as np
import pytest

from matsign import _iterations, _xp, polynomials
from matsign.testing import assert_close

SHAPES = [(37, 53), (53, 37), (16, 20), (1, 5), (2, 3, 50, 41)]
LEAF = 16  # small leaves so that test sizes recurse; 37 and 53 do not split evenly


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocked products from 2 rows on, with leaves of LEAF rows (where they apply)."""
    monkeypatch.setattr(_xp, "SYMMETRIC_BLOCKED_FROM", 2)
    monkeypatch.setattr(_xp, "SYMMETRIC_BLOCKED_FROM_HALF", 2)
    monkeypatch.setattr(_xp, "SYMMETRIC_LEAF", LEAF)


def _random(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _symmetric(m, batch=(), seed=0):
    """A symmetric matrix of norm about one, exactly symmetric in any dtype."""
    X = _random((*batch, m, m), seed)
    upper = np.triu(X)
    return (upper + np.swapaxes(np.triu(X, 1), -1, -2)) / np.sqrt(m)


def _eps(backend, dtype):
    return float(backend.xp.finfo(backend.dtypes[dtype]).eps)


def _host(x):
    return np.asarray(_xp.to_numpy(x), dtype=np.float64)


def _check(actual, expected, bound, backend, dtype):
    """``|actual - expected| <= bound`` elementwise, in ``backend`` with ``dtype``."""
    bound = np.broadcast_to(bound, np.shape(expected))
    assert_close(actual, expected, atol=float(bound.max()), xp=backend.xp,
                 dtype=backend.dtypes[dtype], device=backend.device)
    excess = np.abs(_host(actual) - expected) - bound
    assert excess.max() <= 0, f"out of bound by {excess.max():.3g} at {np.argmax(excess)}"


@pytest.mark.dtypes("float32", "float64", "bfloat16")
@pytest.mark.parametrize("shape", SHAPES)
def test_gram_matches_float64(backend, dtype, shape, small_blocks):
    X = backend.asarray(_random(shape), dtype)
    host = _host(X)  # the oracle sees the rounded input
    expected = host @ np.swapaxes(host, -1, -2)
    n = shape[-1]
    bound = (n + 2) * _eps(backend, dtype) * (np.abs(host) @ np.swapaxes(np.abs(host), -1, -2))
    _check(_xp.gram(X, xp=backend.xp), expected, bound, backend, dtype)


@pytest.mark.dtypes("float32", "float64", "bfloat16")
@pytest.mark.parametrize("m", [37, 16, 1])
@pytest.mark.parametrize("batch", [(), (3,)])
def test_symmetric_square_add_matches_float64(backend, dtype, m, batch, small_blocks):
    A = backend.asarray(_symmetric(m, batch), dtype)
    a = _host(A)
    alpha, beta = 2.0315, -4.7750  # Jordan's quintic
    expected = beta * a + alpha * (a @ a)
    size = abs(beta) * np.abs(a) + abs(alpha) * (np.abs(a) @ np.abs(a))
    bound = (m + 3) * _eps(backend, dtype) * size
    got = _xp.symmetric_square_add(A, alpha=alpha, beta=beta, xp=backend.xp)
    _check(got, expected, bound, backend, dtype)


@pytest.mark.dtypes("float32", "float64")
@pytest.mark.parametrize("m", [37, 53])
def test_symmetric_product_add_of_commuting_matrices(backend, dtype, m, small_blocks):
    """``c + B A`` with ``B = A^2``: the Horner step of a degree-7 polynomial."""
    xp = backend.xp
    A = backend.asarray(_symmetric(m, (2,)), dtype)
    B = A @ A
    a, b = _host(A), _host(B)
    expected = 0.5 * a + b @ a
    bound = (m + 3) * _eps(backend, dtype) * (0.5 * np.abs(a) + np.abs(b) @ np.abs(a))
    got = _xp.symmetric_product_add(B, A, A, alpha=1.0, beta=0.5, xp=xp)
    _check(got, expected, bound, backend, dtype)
    bound = (m + 2) * _eps(backend, dtype) * (np.abs(b) @ np.abs(a))
    _check(_xp.symmetric_product(B, A, xp=xp), b @ a, bound, backend, dtype)


@pytest.mark.parametrize("shape", SHAPES)
def test_blocked_products_are_exactly_symmetric(backend, shape, small_blocks):
    xp = backend.xp
    X = backend.asarray(_random(shape), "float32")
    if not _xp._blocked(X, xp):
        pytest.skip(f"{backend.name} keeps the plain products")
    A = _xp.gram(X, xp=xp)
    S = _xp.symmetric_square_add(A, alpha=0.5, beta=-1.5, xp=xp)
    for C in (A, S, _xp.symmetric_product(S, A, xp=xp)):
        assert bool(xp.all(C == xp.matrix_transpose(C)))


def test_natural_thresholds_block_at_size(backend):
    """At the measured sizes (no patched constants) the result is right and, if blocked, exact."""
    xp = backend.xp
    m = max(_xp.SYMMETRIC_BLOCKED_FROM, _xp.SYMMETRIC_LEAF + 1) + 5
    X = backend.asarray(_random((m, m + 7)), "float32")
    host = _host(X)
    bound = (m + 9) * _eps(backend, "float32") * (np.abs(host) @ np.swapaxes(np.abs(host), -1, -2))
    A = _xp.gram(X, xp=xp)
    _check(A, host @ np.swapaxes(host, -1, -2), bound, backend, "float32")
    if _xp._blocked(X, xp):
        assert bool(xp.all(A == xp.matrix_transpose(A)))


def test_below_threshold_is_the_plain_product(backend):
    xp = backend.xp
    X = backend.asarray(_random((3, 40, 50)), "float32")
    assert not _xp._blocked(X, xp)
    assert bool(xp.all(_xp.gram(X, xp=xp) == X @ xp.matrix_transpose(X)))


def _svd_oracle(X, polynomials_):
    """``U p_k(...p_1(S)) V^T`` in float64: the iteration's exact result."""
    U, s, Vh = np.linalg.svd(_host(X), full_matrices=False)
    for coefficients in polynomials_:
        s = sum(c * s ** (2 * i + 1) for i, c in enumerate(coefficients))
    return (U * s[..., None, :]) @ Vh


def _kernels(xp):
    return {
        "standard": lambda X, p, sym: _iterations.standard(X, p, xp=xp, symmetric=sym),
        "gram_space": lambda X, p, sym: _iterations.gram_space(X, p, xp=xp, symmetric=sym),
    }


@pytest.mark.dtypes("float32", "float64")
@pytest.mark.parametrize("kernel", ["standard", "gram_space"])
@pytest.mark.parametrize("schedule", ["jordan", "polar_express", "septic"])
def test_kernels_with_symmetric_products_match_the_svd_oracle(backend, dtype, kernel, schedule,
                                                              small_blocks):
    """As close to ``U p(S) V^T`` as the plain products (degree 5 and higher polynomials)."""
    xp = backend.xp
    steps = list(polynomials.preset(schedule).polynomials(None))
    X = _random((2, 37, 61))
    X = backend.asarray(X / (1.01 * np.linalg.norm(X, axis=(-2, -1), keepdims=True)), dtype)
    expected = _svd_oracle(X, steps)
    run = _kernels(xp)[kernel]
    plain = np.abs(_host(run(X, steps, False)) - expected).max()
    got = run(X, steps, True)
    bound = 2 * plain + X.shape[-1] * _eps(backend, dtype)  # within the plain products' error
    _check(got, expected, bound, backend, dtype)


@pytest.mark.dtypes("float32", "float64")
def test_until_orthogonal_with_symmetric_products(backend, dtype, small_blocks):
    xp = backend.xp
    X = _random((37, 61))
    X = backend.asarray(X / np.linalg.norm(X), dtype)
    tol = 1e3 * _eps(backend, dtype)  # well above the 8 eps floor of newton_schulz
    quintic = (15 / 8, -10 / 8, 3 / 8)
    Q = _iterations.until_orthogonal(X, iter(lambda: quintic, None), tol=tol, max_steps=60,
                                     xp=xp, symmetric=True)
    U, _, Vh = np.linalg.svd(_host(X), full_matrices=False)
    _check(Q, U @ Vh, 2 * tol, backend, dtype)


def _muon_reference(X, steps, torch):
    """torch.optim.Muon's loop (``_zeropower_via_newtonschulz``), batched with baddbmm."""
    mm = torch.addmm if X.ndim == 2 else torch.baddbmm
    for a, b, c in steps:
        A = X @ X.mT
        B = mm(A, A, A, beta=b, alpha=c)
        X = mm(X, B, X, beta=a)
    return X


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape", [(37, 53), (3, 37, 53)])
def test_symmetric_false_is_torch_optim_muon_bit_for_bit(dtype, shape, small_blocks):
    torch = pytest.importorskip("torch")
    from array_api_compat import torch as xp

    X = torch.as_tensor(_random(shape)).to(getattr(torch, dtype))
    X = X / X.norm()
    steps = list(polynomials.preset("jordan").polynomials(5))
    assert _xp._blocked(X, xp)  # symmetric=True would take the blocked products here
    got = _iterations.standard(X, steps, xp=xp, symmetric=False)
    assert torch.equal(got, _muon_reference(X, steps, torch))
