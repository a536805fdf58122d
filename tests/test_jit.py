"""Every public routine under ``jax.jit`` with its default arguments, against float64 oracles.

Host-read checks are skipped while tracing (`matsign._xp.is_traced`): non-finite input
propagates as NaN; the loops that stop on a host-read residual raise one clear error.
"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

from matsign import (  # noqa: E402
    dualize,
    inverse_root,
    matrix_root,
    msign,
    newton_schulz,
    orthogonality_error,
    polar,
    psd_power,
)

RNG = np.random.default_rng(3)
G = RNG.standard_normal((2, 6, 4))  # a stack: batched under jit as well
A = np.einsum("kmi,kmj->kij", G, G) + np.eye(4)  # symmetric positive definite


def polar_factor(g):
    U, _, Vh = np.linalg.svd(g, full_matrices=False)
    return U @ Vh


def spd_power(a, alpha):
    w, V = np.linalg.eigh(a)
    return (V * w[..., None, :] ** alpha) @ np.swapaxes(V, -1, -2)


def jitted(fn, *args):
    out = jax.jit(fn)(*(jnp.asarray(a) for a in args))
    return jax.tree_util.tree_map(np.asarray, out)


def test_msign_svd_and_polar_under_jit_match_the_svd():
    np.testing.assert_allclose(jitted(lambda g: msign(g, method="svd"), G), polar_factor(G),
                               atol=1e-12)
    Q, H = jitted(polar, G)
    np.testing.assert_allclose(Q @ H, G, atol=1e-10)


def test_default_msign_and_newton_schulz_under_jit_equal_the_eager_call():
    # the traced and the eager call run the same operations: equal to rounding
    for fn in (msign, lambda g: newton_schulz(g, "jordan")):
        np.testing.assert_allclose(jitted(fn, G), np.asarray(fn(jnp.asarray(G))), atol=1e-12)


def test_orthogonality_error_under_jit_equals_the_eager_call():
    X = G / np.linalg.norm(G, axis=(-2, -1), keepdims=True)  # far from orthogonal
    np.testing.assert_allclose(jitted(orthogonality_error, X),
                               np.asarray(orthogonality_error(jnp.asarray(X))), atol=1e-12)


@pytest.mark.parametrize(("fn", "alpha"), [
    (lambda a: inverse_root(a, 2), -0.5),
    (lambda a: inverse_root(a, 4), -0.25),
    (lambda a: matrix_root(a, 2), 0.5),
    (lambda a: psd_power(a, 0.75), 0.75),
])
def test_roots_under_jit_match_float64_eigh(fn, alpha):
    np.testing.assert_allclose(jitted(fn, A), spd_power(A, alpha), rtol=1e-10, atol=1e-12)


def test_dualize_under_jit_is_the_polar_factor_by_default():
    np.testing.assert_allclose(jitted(dualize, G[0]), np.asarray(dualize(jnp.asarray(G[0]))),
                               atol=1e-12)


def test_non_finite_input_propagates_as_nan_under_jit():
    bad = A.copy()
    bad[0, 0, 0] = np.nan
    out = jitted(lambda a: inverse_root(a, 2), bad)
    assert np.isnan(out[0]).all()  # the NaN matrix, every entry
    np.testing.assert_allclose(out[1], spd_power(A[1], -0.5), rtol=1e-10)  # the other, exact
    with pytest.raises(ValueError, match="non-finite"):  # eager: the check still runs
        inverse_root(jnp.asarray(bad), 2)


@pytest.mark.parametrize(("fn", "what"), [
    (lambda g: msign(g, method="newton_schulz", tol=1e-3), "Newton–Schulz with tol="),
    (lambda g: inverse_root(jnp.swapaxes(g, -1, -2) @ g + jnp.eye(4), 2, method="newton"),
     r"inverse_root\(method='newton'\)"),
])
def test_host_read_stopping_rules_raise_one_clear_error_under_jit(fn, what):
    with pytest.raises(ValueError, match=what + ".*while tracing"):
        jax.jit(fn)(jnp.asarray(G))
