"""Kronecker factors, Shampoo preconditioning and SOAP eigenbases against float64 NumPy oracles."""

from __future__ import annotations

import numpy as np
import pytest

from matsign import _xp
from matsign.kron import (
    eigenbases,
    init_factors,
    kron_layout,
    precondition,
    preconditioners,
    project,
    refresh_eigenbases,
    unproject,
    update_factors,
)
from matsign.testing import assert_close, matrix_with_singular_values

RNG = np.random.default_rng(11)


def eps_of(backend, dtype):
    return float(backend.xp.finfo(backend.dtypes[dtype]).eps)


def work_eps(backend, dtype):
    """Decompositions run in float32 at least."""
    return min(eps_of(backend, dtype), float(np.finfo(np.float32).eps))


def unfold(a, mode):
    """Mode-``mode`` unfolding (d_mode, rest) in float64, the textbook definition."""
    return np.moveaxis(a, mode, 0).reshape(a.shape[mode], -1)


def matrix_power(F, e):
    """``F^e`` for symmetric positive definite ``F`` by float64 eigh."""
    w, V = np.linalg.eigh(F)
    return (V * w**e) @ V.T


def truncated_polar(a):
    U, _, Vh = np.linalg.svd(a, full_matrices=False)
    return U @ Vh


def ridge_oracle(a, eps):
    """Shampoo at beta = 0 with a ridge, L = G G^T + eps I and R = G^T G + eps I, maps
    each singular value sigma to sigma / sqrt(sigma^2 + eps)."""
    U, s, Vh = np.linalg.svd(a, full_matrices=False)
    return (U * (s / np.sqrt(s**2 + eps))) @ Vh


def host(x):
    return _xp.to_numpy(x).astype(np.float64)


@pytest.mark.dtypes("float32", "float64")  # the oracle's conditioning is beyond bfloat16
@pytest.mark.parametrize("shape", [(4, 5), (3, 4, 5)], ids=["matrix", "order3"])
def test_precondition_equals_explicit_kronecker_product(backend, dtype, shape):
    """Summed factors of three gradients; oracle: kron(P_1, ..., P_k) @ vec(G), row-major."""
    grads = [backend.asarray(RNG.standard_normal(shape), dtype) for _ in range(3)]
    state = init_factors(grads[0])
    for G in grads:
        state = update_factors(G, state)
    got = precondition(grads[-1], preconditioners(state))
    hosts = [host(G) for G in grads]
    e = -1 / (2 * len(shape))
    powers = [matrix_power(sum(unfold(a, i) @ unfold(a, i).T for a in hosts), e)
              for i in range(len(shape))]
    kron = powers[0]
    for P in powers[1:]:
        kron = np.kron(kron, P)
    expected = (kron @ hosts[-1].ravel()).reshape(shape)
    tol = 2e3 * work_eps(backend, dtype) * np.abs(expected).max()
    assert_close(got, expected, atol=tol, xp=backend.xp, dtype=grads[0].dtype,
                 device=_xp.device(grads[0]))


def test_shampoo_beta_zero_is_msign(backend, dtype):
    """(G G^T)^(-1/4) G (G^T G)^(-1/4) = U V^T, with the pseudo-inverse on the null space."""
    G = backend.asarray(RNG.standard_normal((6, 10)), dtype)
    state = update_factors(G, init_factors(G), beta=0.0)
    got = precondition(G, preconditioners(state, rank_rtol=1e-4))
    expected = truncated_polar(host(G))
    tol = 300 * eps_of(backend, dtype) if dtype == "bfloat16" else 300 * work_eps(backend, dtype)
    assert_close(got, expected, atol=tol, xp=backend.xp, dtype=G.dtype)


def test_shampoo_beta_zero_with_ridge(backend):
    """With eps: L = G G^T + eps I, R = G^T G + eps I, so sigma -> sigma / sqrt(sigma^2 + eps)."""
    a = RNG.standard_normal((5, 7))
    G = backend.asarray(a, "float32")
    state = update_factors(G, init_factors(G), beta=0.0)
    got = precondition(G, preconditioners(state, eps=0.5))
    assert_close(got, ridge_oracle(host(G), 0.5), atol=1e-5, xp=backend.xp)


def test_blocks_are_preconditioned_on_their_own(backend):
    """beta = 0 on 6 x 10 with blocks of 4: each (zero-padded) block maps to its own msign."""
    a = np.zeros((6, 10))
    for rows in (slice(0, 4), slice(4, 6)):  # well-conditioned blocks: a float32 oracle
        for cols in (slice(0, 4), slice(4, 8), slice(8, 10)):
            m, n = rows.stop - rows.start, cols.stop - cols.start
            s = np.linspace(1.0, 0.5, min(m, n))
            a[rows, cols] = matrix_with_singular_values(s, m, n, rng=RNG)
    G = backend.asarray(a, "float32")
    state = update_factors(G, init_factors(G, max_dim=4), beta=0.0)
    assert state.layout.grid == (2, 3) and state.layout.block == (4, 4)
    got = precondition(G, preconditioners(state, rank_rtol=1e-4))
    expected = np.zeros_like(a)
    for rows in (slice(0, 4), slice(4, 6)):
        for cols in (slice(0, 4), slice(4, 8), slice(8, 10)):
            expected[rows, cols] = truncated_polar(a[rows, cols])
    assert_close(got, expected, atol=1e-4, xp=backend.xp)


def test_one_sided_above_max_precond_dim(backend):
    """The 50-wide side is not preconditioned: L^(-1/4) G."""
    a = RNG.standard_normal((3, 50))
    G = backend.asarray(a, "float32")
    state = update_factors(G, init_factors(G, max_precond_dim=10))
    assert state.factors[1] is None
    got = precondition(G, preconditioners(state))
    expected = matrix_power(host(G) @ host(G).T, -0.25) @ host(G)
    assert_close(got, expected, atol=1e-4, xp=backend.xp)


def test_exponent_zero_skips_a_mode(backend):
    a = RNG.standard_normal((4, 6))
    G = backend.asarray(a, "float32")
    state = update_factors(G, init_factors(G))
    got = precondition(G, preconditioners(state, exponents=(0.0, -0.5), rank_rtol=1e-5))
    b = host(G)
    expected = b @ _pinv_sqrt(b.T @ b)
    assert_close(got, expected, atol=1e-4, xp=backend.xp)


def _pinv_sqrt(F, rtol=1e-5):
    w, V = np.linalg.eigh(F)
    keep = w > rtol * w.max()
    return (V * np.where(keep, 1 / np.sqrt(np.where(keep, w, 1)), 0)) @ V.T


def test_vector_rule_is_full_matrix_adagrad(backend):
    """A 1-D parameter: one factor g g^T, exponent -1/2; beta = 0 gives g / ||g||."""
    g = RNG.standard_normal(7)
    G = backend.asarray(g, "float32")
    state = update_factors(G, init_factors(G), beta=0.0)
    got = precondition(G, preconditioners(state, rank_rtol=1e-5))
    assert_close(got, g / np.linalg.norm(g), atol=1e-5, xp=backend.xp)


def test_layout_merges_blocks_and_skips():
    assert kron_layout((64, 3, 3), max_dim=1024).modes == (576,)
    assert kron_layout((64, 3, 3), max_dim=1024, merge_small=False).modes == (64, 3, 3)
    layout = kron_layout((1024, 4096), max_dim=1024)
    assert layout.grid == (1, 4) and layout.block == (1024, 1024)
    assert kron_layout((50000, 768), max_precond_dim=10000).preconditioned == (False, True)
    assert kron_layout(()).modes == (1,)


def test_factor_statistics_sum_and_ema(backend, dtype):
    shape = (3, 2, 4)
    a, b = RNG.standard_normal(shape), RNG.standard_normal(shape)
    A, B = backend.asarray(a, dtype), backend.asarray(b, dtype)
    summed = update_factors(B, update_factors(A, init_factors(A, merge_small=False)))
    ema = update_factors(B, update_factors(A, init_factors(A, max_dim=24), beta=0.9), beta=0.9)
    atol = 100 * eps_of(backend, dtype)
    for i in range(3):
        ga, gb = (unfold(host(x), i) @ unfold(host(x), i).T for x in (A, B))
        assert_close(summed.factors[i][0, 0, 0, ...], ga + gb, atol=atol * np.abs(ga + gb).max(),
                     xp=backend.xp, dtype=A.dtype, device=_xp.device(A))
    flat_a, flat_b = host(A).reshape(1, -1), host(B).reshape(1, -1)  # merged: one mode of 24
    expected = 0.9 * 0.1 * flat_a.T @ flat_a + 0.1 * flat_b.T @ flat_b
    assert ema.layout.modes == (24,)
    assert_close(ema.factors[0][0, ...], expected, atol=atol * np.abs(expected).max(),
                 xp=backend.xp)


def test_eigenbases_diagonalise_factors(backend, dtype):
    G = backend.asarray(RNG.standard_normal((5, 8)), dtype)
    state = update_factors(G, init_factors(G))
    for F, Q in zip(state.factors, eigenbases(state).bases, strict=True):
        q, f = host(Q)[0, 0], host(F)[0, 0]
        tol = 50 * eps_of(backend, dtype) * np.sqrt(q.shape[0])
        np.testing.assert_allclose(q.T @ q, np.eye(q.shape[0]), atol=tol)
        D = q.T @ f @ q
        np.testing.assert_allclose(D - np.diag(np.diag(D)), 0, atol=tol * np.abs(f).max())
        assert np.all(np.diff(np.diag(D)) <= tol * np.abs(f).max())


def test_refresh_stays_orthonormal_and_converges_to_eigh(backend, dtype):
    """Orthogonal iteration on a fixed factor with eigenvalues 2^-i reaches eigh's basis."""
    if dtype == "bfloat16":
        dtype = "float32"
    n = 6
    V, _ = np.linalg.qr(RNG.standard_normal((n, n)))
    F = (V * 2.0 ** -np.arange(n)) @ V.T
    G = backend.asarray(np.linalg.cholesky(F), dtype)  # G G^T = F, so L = F
    state = update_factors(G, init_factors(G, merge_small=False))
    start, _ = np.linalg.qr(RNG.standard_normal((n, n)))
    bases = eigenbases(state)
    bases = bases._replace(bases=(backend.asarray(start[None, None], dtype), bases.bases[1]))
    tol = 20 * eps_of(backend, dtype) * n
    for _ in range(60):
        bases, orders = refresh_eigenbases(state, bases)
        q = host(bases.bases[0])[0, 0]
        np.testing.assert_allclose(q.T @ q, np.eye(n), atol=tol)
    assert tuple(orders[0].shape) == (1, 1, n)
    np.testing.assert_allclose(np.abs(q.T @ V), np.eye(n), atol=1e3 * eps_of(backend, dtype))


def test_project_unproject_round_trip_with_padding(backend, dtype):
    a = RNG.standard_normal((6, 10))
    G = backend.asarray(a, dtype)
    state = update_factors(G, init_factors(G, max_dim=4))
    bases = eigenbases(state)
    P = project(G, bases)
    assert tuple(P.shape) == (2, 3, 4, 4)
    tol = 30 * eps_of(backend, dtype) * np.abs(a).max()
    assert_close(unproject(P, bases), host(G), atol=tol, xp=backend.xp, dtype=G.dtype,
                 device=_xp.device(G))
    block = host(G)[:4, :4]
    q0, q1 = host(bases.bases[0])[0, 0], host(bases.bases[1])[0, 0]
    np.testing.assert_allclose(host(P)[0, 0], q0.T @ block @ q1, atol=tol)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda s: update_factors(np.ones((3, 3)), s), "expected an array of shape"),
        (lambda s: update_factors(np.ones((2, 3)), s, beta=1.0), "beta must be"),
        (lambda s: preconditioners(s, exponents=(-0.25,)), "exponents must be"),
        (lambda s: preconditioners(s, exponents=(0.25, -0.25)), "exponents must be"),
        (lambda s: kron_layout((2, 3), max_dim=0), "max_dim must be an integer >= 1"),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call(init_factors(np.ones((2, 3))))


def test_newton_inverse_roots_pass_through(backend):
    """method="newton" (coupled Newton, matmul-only) reaches the closed form, as eigh does."""
    G = backend.asarray(RNG.standard_normal((4, 6)), "float32")
    state = update_factors(G, init_factors(G), beta=0.0)
    expected = ridge_oracle(host(G), 0.5)
    tol = 100 * eps_of(backend, "float32")  # two roots of condition number < 1e2, in float32
    for options in ({}, {"method": "newton"}, {"method": "newton", "max_steps": 50}):
        got = precondition(G, preconditioners(state, eps=0.5, **options))
        assert_close(got, expected, atol=tol, xp=backend.xp, dtype=G.dtype)


def test_deprecated_max_iter_passes_through_as_max_steps(backend):
    """The 0.1 spelling ``max_iter=`` of the root options still works until 0.3."""
    G = backend.asarray(RNG.standard_normal((4, 6)), "float32")
    state = update_factors(G, init_factors(G), beta=0.0)
    with pytest.warns(DeprecationWarning, match=r"preconditioners: max_iter= is deprecated"):
        pre = preconditioners(state, method="newton", eps=0.5, max_iter=50)
    assert_close(precondition(G, pre), ridge_oracle(host(G), 0.5),
                 atol=100 * eps_of(backend, "float32"), xp=backend.xp)
    with pytest.raises(TypeError, match="both max_steps= and its deprecated spelling max_iter="):
        preconditioners(state, method="newton", max_steps=50, max_iter=50)


def test_all_zero_blocks_get_zero_preconditioners_and_others_their_roots(backend):
    """6 x 8 in blocks of 4 with the second row-block never reached by a gradient: its
    factor blocks are zero (no scale for a relative ridge), so its preconditioners are 0;
    the other blocks get ``(F + eps lambda_max I)^(-1/4)`` by float64 eigh."""
    a = np.zeros((6, 8))
    a[:4] = RNG.standard_normal((4, 8))
    G = backend.asarray(a, "float32")
    state = update_factors(G, init_factors(G, max_dim=4), beta=0.0)
    pre = preconditioners(state, eps=1e-3, eps_mode="relative")
    for F, P in zip(state.factors, pre.matrices, strict=True):
        F, P = host(F), host(P)
        for index in np.ndindex(*F.shape[:-2]):
            block = F[index]
            if not block.any():
                assert not P[index].any()
                continue
            top = np.linalg.eigvalsh(block)[-1]
            expected = matrix_power(block + 1e-3 * top * np.eye(len(block)), -0.25)
            np.testing.assert_allclose(P[index], expected, rtol=1e-3,
                                       atol=1e-3 * abs(expected).max())
    assert not host(precondition(G, pre))[4:].any()  # the unreached rows stay zero
