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
    optim,
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


# --- Shampoo and SOAP: the step count stays on the device --------------------------------

STEPS = RNG.standard_normal((12, 4, 6))  # 4 x 6: both factors full rank from step 2 on
SQUARE_STEPS = RNG.standard_normal((12, 5, 5))  # SOAP's first bases: no null space to choose
SQUARE_W = RNG.standard_normal((5, 5))
BIAS_STEPS = RNG.standard_normal((12, 4))


def spd_ridged_power(F, alpha, relative=1e-6):
    """``(F + relative * lambda_max I)^alpha``, Shampoo's default regularisation."""
    w, V = np.linalg.eigh(F)
    w = np.maximum(w, 0.0)
    return (V * (w + relative * w[-1]) ** alpha) @ V.T


def shampoo_reference(grads, *, every, start, lr, b1=0.9, b2=0.999, eps=1e-8):
    """Shampoo grafted onto Adam in float64 NumPy: updates and the roots after each step."""
    m = v = 0.0
    factors, roots, updates, held = None, None, [], []
    for t, g in enumerate(grads, start=1):
        grams = [np.outer(g, g)] if g.ndim == 1 else [g @ g.T, g.T @ g]
        factors = grams if factors is None else [F + S for F, S in zip(factors, grams, strict=True)]
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        adam = m_hat / (np.sqrt(v / (1 - b2**t)) + eps)
        if t >= start and (t - start) % every == 0:
            roots = [spd_ridged_power(F, -1 / (2 * len(factors))) for F in factors]
        d = adam
        if t >= start:
            d = roots[0] @ m_hat if g.ndim == 1 else roots[0] @ m_hat @ roots[1]
            d = d * np.linalg.norm(adam) / np.linalg.norm(d)
        updates.append(-lr * d)
        held.append(roots)
    return np.stack(updates), held


def soap_reference(grads, W, *, every, lr, wd, b1=0.95, b2=0.95, eps=1e-8):
    """SOAP (reference code's order) with decoupled weight decay, float64 NumPy."""
    m, v = np.zeros_like(W), np.zeros_like(W)
    L, R = (1 - b2) * grads[0] @ grads[0].T, (1 - b2) * grads[0].T @ grads[0]
    QL, QR = (np.linalg.eigh(F)[1][:, ::-1] for F in (L, R))
    updates = [np.zeros_like(W)]  # the first step only sets up the bases
    for s, g in enumerate(grads[1:], start=1):
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * (QL.T @ g @ QR) ** 2
        d = QL @ (QL.T @ m @ QR / (np.sqrt(v) + eps)) @ QR.T
        updates.append(-lr * (d * np.sqrt(1 - b2**s) / (1 - b1**s) + wd * W))
        W = W + updates[-1]
        L, R = b2 * L + (1 - b2) * g @ g.T, b2 * R + (1 - b2) * g.T @ g
        if s % every == 0:
            new = []
            for axis, (F, Q) in enumerate(((L, QL), (R, QR))):
                order = np.argsort(-np.diag(Q.T @ F @ Q), kind="stable")
                v = np.take(v, order, axis=axis)
                new.append(np.linalg.qr(F @ Q[:, order])[0])
            QL, QR = new
    return np.stack(updates)


def eager_numpy_updates(opt, W, grads):
    state, updates = opt.init(W), []
    for g in grads:
        u, state = opt.update(g, state, W)
        W = W + u
        updates.append(u)
    return np.stack(updates)


def test_shampoo_under_jit_recomputes_its_roots_on_schedule_and_compiles_once():
    opt = optim.shampoo(0.1, every=3, start=2)
    traces = []

    @jax.jit
    def step(W, state, g):
        traces.append(None)  # runs while tracing only
        u, state = opt.update(g, state, W)
        return W + u, state, u

    W = jnp.zeros((4, 6))
    state, updates, roots = opt.init(W), [], []
    for g in STEPS:
        W, state, u = step(W, state, jnp.asarray(g))
        updates.append(np.asarray(u))
        roots.append([np.asarray(P)[0, 0] for P in state[0].preconditioners.matrices])
    assert len(traces) == 1  # state in, state out: one compilation for the whole loop
    expected, held = shampoo_reference(STEPS, every=3, start=2, lr=0.1)
    np.testing.assert_allclose(np.stack(updates), expected, atol=1e-10)
    np.testing.assert_allclose(np.stack(updates),
                               eager_numpy_updates(opt, np.zeros((4, 6)), STEPS), atol=1e-10)
    assert all(np.all(P == 0) for P in roots[0])  # before start: no roots yet
    for t in range(2, 13):  # computed at steps 2, 5, 8, 11 and held in between
        for got, want in zip(roots[t - 1], held[t - 1], strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
        changed = any(np.any(a != b) for a, b in zip(roots[t - 1], roots[t - 2], strict=True))
        assert changed == ((t - 2) % 3 == 0)


def test_soap_under_jit_refreshes_its_bases_on_schedule_in_one_scan():
    opt = optim.soap(0.01, every=3)
    traces = []

    def body(carry, g):
        traces.append(None)
        W, state = carry
        u, state = opt.update(g, state, W)
        return (W + u, state), (u, state[0].bases.bases[0])

    W = jnp.asarray(SQUARE_W)
    _, (updates, bases) = jax.jit(lambda W, grads: jax.lax.scan(
        body, (W, opt.init(W)), grads))(W, jnp.asarray(SQUARE_STEPS))
    assert len(traces) == 1  # state in, state out: the scan traces its step once
    expected = soap_reference(SQUARE_STEPS, SQUARE_W, every=3, lr=0.01, wd=0.01)
    np.testing.assert_allclose(np.asarray(updates), expected, atol=1e-10)
    eager = eager_numpy_updates(opt, SQUARE_W, SQUARE_STEPS)
    np.testing.assert_allclose(np.asarray(updates), eager, atol=1e-10)
    bases = np.asarray(bases)
    changed = [t for t in range(2, 13) if np.any(bases[t - 1] != bases[t - 2])]
    assert changed == [4, 7, 10]  # eigh at step 1, then every 3 Adam steps


def test_multi_shampoo_under_jit_skips_a_nan_gradient():
    opt = optim.multi(optim.shampoo(0.1, every=2))  # default nonfinite="skip"
    params = {"w": jnp.zeros((4, 6)), "b": jnp.zeros(4)}
    step = jax.jit(opt.update)
    state, updates = opt.init(params), []
    for i, (g, gb) in enumerate(zip(STEPS, BIAS_STEPS, strict=True)):
        if i == 2:  # a roots step: eigh of NaN factors is computed, then discarded
            bad = {"w": jnp.full((4, 6), jnp.nan), "b": jnp.asarray(gb)}
            u, new = step(bad, state, params)
            assert all(np.all(np.asarray(x) == 0) for x in u.values())
            leaves = jax.tree_util.tree_leaves
            for a, b in zip(leaves(new), leaves(state), strict=True):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        u, state = step({"w": jnp.asarray(g), "b": jnp.asarray(gb)}, state, params)
        updates.append({k: np.asarray(x) for k, x in u.items()})
    for key, grads in (("w", STEPS), ("b", BIAS_STEPS)):
        expected, _ = shampoo_reference(grads, every=2, start=1, lr=0.1)
        np.testing.assert_allclose(np.stack([u[key] for u in updates]), expected, atol=1e-10)
