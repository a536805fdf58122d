"""The rest of the public API under ``jax.jit`` with defaults: kron, duality, the steppers.

Every public function that takes arrays is named in `COVERED` with the test that jits it
(tests/test_jit.py covers the routines of ``matsign``), and `test_every_public_function_
is_jitted_somewhere` fails when a new one is not. Oracles: float64 NumPy closed forms
(eigh powers, SVDs, the documented dual-norm formulas) and the eager call where the
eager path is itself tested against one elsewhere.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

import matsign  # noqa: E402
from matsign import duality, kron, optim  # noqa: E402

RNG = np.random.default_rng(5)
G = RNG.standard_normal((6, 4))
CONV = RNG.standard_normal((4, 3, 3, 3))  # (out, in, kh, kw)


def _host(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


def _spd_power(a, alpha):
    w, V = np.linalg.eigh(a)
    return (V * w[..., None, :] ** alpha) @ np.swapaxes(V, -1, -2)


def _factors_after(grads):
    state = kron.init_factors(jnp.asarray(grads[0]))
    for g in grads:
        state = jax.jit(lambda g, s: kron.update_factors(g, s))(jnp.asarray(g), state)
    return state


def test_kron_factors_and_preconditioning_under_jit_match_eigh():
    """L = sum G G^T, R = sum G^T G; precondition = L^-1/4 G R^-1/4 (float64 eigh)."""
    grads = RNG.standard_normal((3, 6, 4))
    state = _factors_after(grads)
    L = sum(g @ g.T for g in grads)
    R = sum(g.T @ g for g in grads)
    np.testing.assert_allclose(np.asarray(state.factors[0]).reshape(6, 6), L, atol=1e-12)
    np.testing.assert_allclose(np.asarray(state.factors[1]).reshape(4, 4), R, atol=1e-12)
    pre = jax.jit(lambda s: kron.preconditioners(s))(state)
    out = jax.jit(lambda g, p: kron.precondition(g, p))(jnp.asarray(G), pre)
    expected = _spd_power(L, -0.25) @ G @ _spd_power(R, -0.25)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-8, atol=1e-10)


def test_kron_eigenbases_project_and_refresh_under_jit():
    """Bases diagonalise the factors; project = Q_L^T G Q_R; unproject inverts it."""
    state = _factors_after(RNG.standard_normal((3, 6, 4)))
    bases = jax.jit(lambda s: kron.eigenbases(s))(state)
    QL, QR = (np.asarray(Q).reshape(Q.shape[-2:]) for Q in bases.bases)
    for Q, F in zip((QL, QR), state.factors, strict=True):
        F = np.asarray(F).reshape(Q.shape)
        D = Q.T @ F @ Q
        np.testing.assert_allclose(D - np.diag(np.diag(D)), 0.0, atol=1e-10)
    P = jax.jit(lambda g, b: kron.project(g, b))(jnp.asarray(G), bases)
    np.testing.assert_allclose(np.asarray(P).reshape(6, 4), QL.T @ G @ QR, atol=1e-12)
    back = jax.jit(lambda p, b: kron.unproject(p, b))(P, bases)
    np.testing.assert_allclose(np.asarray(back), G, atol=1e-12)
    refreshed, _ = jax.jit(lambda s, b: kron.refresh_eigenbases(s, b))(state, bases)
    for Q in refreshed.bases:
        Q = np.asarray(Q).reshape(Q.shape[-2:])
        np.testing.assert_allclose(Q.T @ Q, np.eye(len(Q)), atol=1e-12)


def test_kron_blocks_round_trip_under_jit():
    layout = kron.kron_layout(G.shape, max_dim=4)
    blocks = jax.jit(lambda g: kron.to_blocks(g, layout))(jnp.asarray(G))
    assert blocks.shape[:2] == layout.grid
    np.testing.assert_array_equal(np.asarray(blocks)[0, 0], G[:4, :4])  # the first block
    back = jax.jit(lambda b: kron.from_blocks(b, layout))(blocks)
    np.testing.assert_array_equal(np.asarray(back), G)


def _dual_norm_formula(g, norm):
    """The documented dual norms (`matsign.duality.dual_norm`), in float64 NumPy."""
    if norm == "conv":
        taps = np.moveaxis(g.reshape(*g.shape[:2], -1), -1, 0)
        nuclear = sum(np.linalg.svd(t, compute_uv=False).sum() for t in taps)
        return np.sqrt(g.shape[0] / g.shape[1]) / len(taps) * nuclear
    s = np.linalg.svd(g, compute_uv=False)
    m, n = g.shape
    return {"spectral": s.sum(), "rms_to_rms": np.sqrt(m / n) * s.sum(),
            "frobenius": np.linalg.norm(g), "linf": np.abs(g).sum(),
            "l1_to_rms": np.sqrt(m) * np.linalg.norm(g, axis=0).sum()}[norm]


@pytest.mark.parametrize("norm", duality.NORMS)
def test_duality_maps_under_jit(norm):
    """dual_norm is the documented formula; dualize(G) has unit norm and <G, D> = ||G||_*."""
    g = CONV if norm == "conv" else G
    x = jnp.asarray(g)
    dual = float(jax.jit(lambda a: duality.dual_norm(a, norm))(x))
    np.testing.assert_allclose(dual, _dual_norm_formula(g, norm), rtol=1e-10)
    D = jax.jit(lambda a: duality.dualize(a, norm=norm))(x)
    np.testing.assert_allclose(float(jax.jit(lambda a: duality.norm(a, norm))(D)), 1.0,
                               rtol=1e-8)
    np.testing.assert_allclose(float(jnp.sum(x * D)), dual, rtol=1e-8)


def test_spectral_norm_under_jit_is_the_largest_singular_value():
    out = jax.jit(duality.spectral_norm)(jnp.asarray(np.stack([G, 2 * G])))
    sigma = np.linalg.norm(G, 2)
    np.testing.assert_allclose(np.asarray(out), [sigma, 2 * sigma], rtol=1e-5)


STEPPERS = {
    "muon": lambda: optim.muon(0.1, weight_decay=0.1),
    "adamw": lambda: optim.adamw(0.1),
    "lion": lambda: optim.lion(0.1, weight_decay=0.1),
    "cautious adamw": lambda: optim.adamw(0.1, cautious_mask=True, amsgrad=True),
    "scheduled": lambda: optim.chain(optim.trace(0.9, ema=True, bias_correction=True),
                                     optim.scale_by_learning_rate(lambda t: 0.1 / (1 + t))),
}


@pytest.mark.parametrize("name", STEPPERS)
def test_steppers_under_jit_equal_the_eager_numpy_steps(name):
    """Three steps, state in and out of jit, against the same stepper on NumPy float64."""
    stepper = STEPPERS[name]()
    grads = RNG.standard_normal((3, 6, 4))
    w_np, w_jx = G, jnp.asarray(G)
    s_np, s_jx = stepper.init(w_np), stepper.init(w_jx)
    step = jax.jit(stepper.update)
    for g in grads:
        u_np, s_np = stepper.update(g, s_np, w_np)
        u_jx, s_jx = step(jnp.asarray(g), s_jx, w_jx)
        w_np, w_jx = w_np + u_np, w_jx + u_jx
    np.testing.assert_allclose(np.asarray(w_jx), w_np, rtol=1e-10, atol=1e-12)


def test_multi_state_passes_through_jit_and_scan():
    """MultiState (stacking layout static) as a jit argument and a lax.scan carry:
    ten scanned steps equal ten eager NumPy steps."""
    host = {"a": G, "b": G[::-1].copy(), "bias": RNG.standard_normal(4)}
    stepper = optim.multi({"muon": optim.muon(0.05), "adamw": optim.adamw(0.01)},
                          optim.route(host, head=None))
    grads = RNG.standard_normal((10, 6, 4))

    def grad_tree(g):
        return {"a": g, "b": 2 * g, "bias": g[0]}

    params, state = host, stepper.init(host)
    for g in grads:
        u, state = stepper.update(grad_tree(g), state, params)
        params = optim.apply_updates(params, u)

    def body(carry, g):
        p, s = carry
        u, s = stepper.update(grad_tree(g), s, p)
        return (optim.apply_updates(p, u), s), None

    start = jax.tree_util.tree_map(jnp.asarray, host)
    (out, scanned), _ = jax.jit(lambda p, s, gs: jax.lax.scan(body, (p, s), gs))(
        start, stepper.init(start), jnp.asarray(grads))
    assert scanned.groups == state.groups
    for key in host:
        np.testing.assert_allclose(np.asarray(out[key]), params[key], rtol=1e-10, atol=1e-12)


def test_nonfinite_raise_is_a_clear_error_under_jit():
    stepper = optim.multi(optim.adamw(), nonfinite="raise")
    params = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match="cannot happen while tracing"):
        jax.jit(stepper.update)(params, stepper.init(params), params)


# Every public function that takes arrays, and where it is jitted (module::test).
COVERED = {
    "matsign.msign": "test_jit", "matsign.polar": "test_jit",
    "matsign.newton_schulz": "test_jit", "matsign.orthogonality_error": "test_jit",
    "matsign.inverse_root": "test_jit", "matsign.matrix_root": "test_jit",
    "matsign.psd_power": "test_jit", "matsign.dualize": "test_jit",
    "matsign.kron.init_factors": "kron_factors", "matsign.kron.update_factors": "kron_factors",
    "matsign.kron.preconditioners": "kron_factors", "matsign.kron.precondition": "kron_factors",
    "matsign.kron.eigenbases": "kron_eigenbases", "matsign.kron.project": "kron_eigenbases",
    "matsign.kron.unproject": "kron_eigenbases",
    "matsign.kron.refresh_eigenbases": "kron_eigenbases",
    "matsign.kron.to_blocks": "kron_blocks", "matsign.kron.from_blocks": "kron_blocks",
    "matsign.duality.norm": "duality_maps", "matsign.duality.dual_norm": "duality_maps",
    "matsign.duality.dualize": "duality_maps", "matsign.duality.spectral_norm": "spectral_norm",
    "matsign.optim.apply_updates": "multi_state", "matsign.optim.every_matrix": "steppers",
    "matsign.optim.route": "multi_state", "matsign.optim.qk_clip": "test_clip",
    "matsign.optim.qk_clip_mla": "test_clip", "matsign.optim.clip_factors": "test_clip",
    "matsign.optim.qk_factors": "test_clip",
    "matsign.optim.stack": "multi_state", "matsign.optim.unstack": "multi_state",
    "matsign.optim.step_stacks": "multi_state",
}
# Functions of shapes and options only (no arrays), and stepper constructors, whose
# ``update`` the stepper tests jit (Shampoo and SOAP in tests/test_jit.py).
NOT_ARRAYS = {"matsign.kron.kron_layout", "matsign.duality.rms_to_rms_scale",
              "matsign.optim.shape_scale", "matsign.optim.matrix_shape",
              "matsign.optim.group_keys"}


def test_every_public_function_is_jitted_somewhere():
    public = set()
    for module in (matsign, kron, duality, optim):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isfunction(obj):
                public.add(f"{module.__name__}.{name}")
    constructors = {f"matsign.optim.{name}" for name in optim.__all__
                    if inspect.isfunction(getattr(optim, name))
                    and inspect.signature(getattr(optim, name)).return_annotation == "Stepper"}
    missing = public - set(COVERED) - NOT_ARRAYS - constructors
    assert not missing, f"public functions no test jits: {sorted(missing)}"
