"""Functional steppers on every backend, against closed forms and float64 loops written here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from matsign import optim
from matsign._xp import to_numpy
from matsign.optim import transforms

JORDAN = (3.4445, -4.7750, 2.0315)


def _as(backend, a):
    """``a`` on the backend in its widest float (float32 where float64 is missing)."""
    return backend.asarray(a, "float64" if "float64" in backend.dtypes else "float32")


def _rng(seed=0):
    return np.random.default_rng(seed)


def _reference_newton_schulz(G, coefficients, steps):
    """Jordan et al.'s loop in float64 NumPy: normalise, iterate on the wide side."""
    X = G.T if G.shape[0] > G.shape[1] else G
    X = X / max(np.linalg.norm(X), 1e-7)
    for _ in range(steps):
        A = X @ X.T
        X = coefficients[0] * X + (coefficients[1] * A + coefficients[2] * A @ A) @ X
    return X.T if G.shape[0] > G.shape[1] else X


def _polar_factor(G):
    U, _, Vh = np.linalg.svd(G, full_matrices=False)
    return U @ Vh


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (3, 5, 4)])
def test_orthogonalize_matches_reference_loop(backend, shape):
    """float32 and float64 (bfloat16 is checked against torch.optim.Muon elsewhere)."""
    G = _rng().standard_normal(shape)
    expected = np.stack([_reference_newton_schulz(g, JORDAN, 5)
                         for g in G.reshape(-1, *shape[-2:])]).reshape(shape)
    block = optim.orthogonalize(schedule=JORDAN, steps=5)
    for dtype in ("float32", "float64"):
        if dtype not in backend.dtypes:
            continue
        out, _ = block.update(backend.asarray(G, dtype), (), None)
        assert out.dtype == backend.dtypes[dtype] and tuple(out.shape) == shape
        atol = 1e-12 if dtype == "float64" else 3e-5
        np.testing.assert_allclose(to_numpy(out), expected, atol=atol)


def test_orthogonalize_svd_is_polar_factor(backend):
    G = _rng(1).standard_normal((5, 3))
    out, _ = optim.orthogonalize(method="svd").update(_as(backend, G), (), None)
    np.testing.assert_allclose(to_numpy(out), _polar_factor(G), atol=1e-6)


@pytest.mark.parametrize(("shape", "mode", "expected"), [
    ((1024, 256), "jordan", 2.0), ((256, 1024), "jordan", 1.0),
    ((256, 1024), "moonlight", 0.2 * 32.0), ((100, 25), "spectral", 2.0),
    ((25, 100), "spectral", 0.5), ((7, 9), "none", 1.0),
])
def test_shape_scale_closed_forms(shape, mode, expected):
    assert math.isclose(optim.shape_scale(shape, mode), expected)


def test_shape_scale_rejects_unknown():
    with pytest.raises(ValueError, match="update scale"):
        optim.scale_by_shape("bogus")


@pytest.mark.parametrize("update_scale", ["jordan", "moonlight", "spectral"])
def test_muon_first_step_closed_form(backend, update_scale):
    """Step 1: buffer (1-mu) g, Nesterov look-ahead a positive multiple of g -> U V^T."""
    rng = _rng(2)
    G, W = rng.standard_normal((8, 5)), rng.standard_normal((8, 5))
    opt = optim.muon(0.1, weight_decay=0.3, update_scale=update_scale, method="svd")
    u, state = opt.update(_as(backend, G), opt.init(_as(backend, W)), _as(backend, W))
    scale = optim.shape_scale((8, 5), update_scale)
    expected = -0.1 * (scale * _polar_factor(G) + 0.3 * W)
    np.testing.assert_allclose(to_numpy(u), expected, atol=1e-6)
    np.testing.assert_allclose(to_numpy(state[0].momentum_buffer), 0.05 * G, atol=1e-7)


def test_trace_sum_and_ema_closed_forms(backend):
    g1, g2 = np.array([1.0, -2.0]), np.array([3.0, 0.5])
    for ema, nesterov, expected in [
        (False, False, 0.9 * g1 + g2),
        (False, True, g2 + 0.9 * (0.9 * g1 + g2)),
        (True, False, 0.9 * 0.1 * g1 + 0.1 * g2),
        (True, True, 0.1 * g2 + 0.9 * (0.9 * 0.1 * g1 + 0.1 * g2)),
    ]:
        t = optim.trace(0.9, nesterov=nesterov, ema=ema)
        s = t.init(_as(backend, g1))
        _, s = t.update(_as(backend, g1), s, None)
        u, _ = t.update(_as(backend, g2), s, None)
        np.testing.assert_allclose(to_numpy(u), expected, rtol=1e-6)


def _adamw_reference(grads, w, lr, b1, b2, eps, wd):
    """Loshchilov and Hutter's AdamW in float64, written out."""
    m = v = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        w = w * (1 - lr * wd)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        w = w - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return w


def test_adamw_matches_written_out_reference(backend):
    rng = _rng(3)
    grads, w0 = rng.standard_normal((4, 3, 2)), rng.standard_normal((3, 2))
    opt = optim.adamw(0.05, weight_decay=0.1)
    w = _as(backend, w0)
    state = opt.init(w)
    for g in grads:
        u, state = opt.update(_as(backend, g), state, w)
        w = optim.apply_updates(w, u)
    expected = _adamw_reference(grads, w0, 0.05, 0.9, 0.999, 1e-8, 0.1)
    np.testing.assert_allclose(to_numpy(w), expected, rtol=1e-5)


def test_lion_closed_form(backend):
    g1, g2, w = np.array([1.0, -1.0, 2.0]), np.array([-3.0, -1.0, 0.5]), np.ones(3)
    opt = optim.lion(0.1, weight_decay=0.5)
    s = opt.init(_as(backend, w))
    _, s = opt.update(_as(backend, g1), s, _as(backend, w))
    u, _ = opt.update(_as(backend, g2), s, _as(backend, w))
    m = 0.01 * g1  # after step 1: lerp(0, g1, 1 - 0.99)
    expected = -0.1 * (np.sign(0.9 * m + 0.1 * g2) + 0.5 * w)
    np.testing.assert_allclose(to_numpy(u), expected, rtol=1e-6)


def test_cautious_weight_decay_only_where_signs_agree(backend):
    d = optim.add_decayed_weights(0.5, cautious=True)
    u, _ = d.update(_as(backend, [1.0, 1.0, -1.0]), (), _as(backend, [2.0, -2.0, -4.0]))
    np.testing.assert_allclose(to_numpy(u), [2.0, 1.0, -3.0])


def test_cautious_mask_rescales_kept_entries(backend):
    c = optim.cautious(optim.scale(1.0))
    g = np.array([[1.0, -1.0], [1.0, 1.0]])
    u, _ = c.update(_as(backend, g), c.init(_as(backend, g)), None)
    np.testing.assert_allclose(to_numpy(u), g * 4 / 5)  # all four agree: 4 / (4 + 1)


def test_learning_rate_schedule_counts_steps(backend):
    s = optim.scale_by_learning_rate(lambda step: 1.0 / (1.0 + step))
    state = s.init(_as(backend, [0.0]))
    seen = []
    for _ in range(3):
        u, state = s.update(_as(backend, [2.0]), state, None)
        seen.append(float(to_numpy(u)[0]))
    assert seen == pytest.approx([-2.0, -1.0, -2.0 / 3.0])


def _model_params(rng):
    shapes = {"embed.weight": (10, 4), "l1.weight": (4, 6), "l2.weight": (4, 6),
              "l1.bias": (4,), "conv.weight": (4, 2, 3, 3), "head.weight": (3, 4)}
    return {k: rng.standard_normal(s) for k, s in shapes.items()}


def _steppers():
    return {"muon": optim.muon(0.1, weight_decay=0.01), "adamw": optim.adamw(0.01)}


def test_multi_equals_per_parameter_application(backend, monkeypatch):
    rng = _rng(4)
    host = _model_params(rng)
    grads = {k: rng.standard_normal(p.shape) for k, p in host.items()}
    params = {k: _as(backend, p) for k, p in host.items()}
    labels = optim.route(params)
    calls = []
    real = transforms.newton_schulz  # the public routine: one Newton–Schulz path
    monkeypatch.setattr(transforms, "newton_schulz",
                        lambda G, *a, **k: calls.append(tuple(G.shape)) or real(G, *a, **k))
    step = optim.multi(_steppers(), labels)
    updates, _ = step.update({k: _as(backend, g) for k, g in grads.items()},
                             step.init(params), params)
    assert sorted(calls) == [(2, 4, 6), (4, 18)]  # l1+l2 stacked; conv flattened to 4 x 18
    for key, p in params.items():
        single = _steppers()[labels[key]]
        view = optim.matrix_shape(p.shape, "flatten")
        g = backend.xp.reshape(_as(backend, grads[key]), view)
        q = backend.xp.reshape(p, view)
        u, _ = single.update(g, single.init(q), q)
        np.testing.assert_allclose(to_numpy(updates[key]), to_numpy(u).reshape(p.shape),
                                   atol=1e-6)


def test_route_labels():
    labels = optim.route(_model_params(_rng()), other="lion")
    assert labels == {"embed.weight": "lion", "l1.weight": "muon", "l2.weight": "muon",
                      "l1.bias": "lion", "conv.weight": "muon", "head.weight": "lion"}


def test_batch_reshape_scales_per_matrix(backend):
    """A (heads, m, n) parameter with reshape='batch': scale from m x n, per head."""
    G = _rng(5).standard_normal((3, 8, 2))
    step = optim.multi(optim.muon(1.0, method="svd"), reshape="batch")
    p = [_as(backend, np.zeros_like(G))]
    u, _ = step.update([_as(backend, G)], step.init(p), p)
    expected = -2.0 * np.stack([_polar_factor(g) for g in G])
    np.testing.assert_allclose(to_numpy(u[0]), expected, atol=1e-6)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_nonfinite_skip_leaves_state_and_params(backend, bad):
    rng = _rng(6)
    params = [_as(backend, rng.standard_normal((3, 3))), _as(backend, rng.standard_normal(3))]
    step = optim.multi({"muon": optim.muon(0.1), "adamw": optim.adamw(0.1)},
                       optim.route(params, head=None))
    state = step.init(params)
    good = [_as(backend, np.ones((3, 3))), _as(backend, np.ones(3))]
    _, state = step.update(good, state, params)
    bad_grads = [_as(backend, np.ones((3, 3))), _as(backend, np.array([1.0, bad, 1.0]))]
    updates, new_state = step.update(bad_grads, state, params)
    for u in updates:
        assert np.all(to_numpy(u) == 0.0)
    for a, b in zip(_leaves(state.states), _leaves(new_state.states), strict=True):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


def _leaves(state):
    if isinstance(state, tuple):
        return [leaf for part in state for leaf in _leaves(part)]
    return [state]


def test_nonfinite_raise(backend):
    params = [_as(backend, np.ones((2, 2)))]
    step = optim.multi(optim.muon(0.1), nonfinite="raise")
    with pytest.raises(ValueError, match="non-finite"):
        step.update([_as(backend, np.array([[1.0, np.nan], [0.0, 1.0]]))],
                    step.init(params), params)


def test_unknown_nonfinite_policy():
    with pytest.raises(ValueError, match="nonfinite"):
        optim.multi(optim.adamw(), nonfinite="hope")


def test_shampoo_first_step_is_the_polar_factor(backend):
    """(G G^T)^-1/4 G (G^T G)^-1/4 = U V^T; G G^T is singular: pseudo-inverse roots."""
    G = _rng(7).standard_normal((5, 3))
    s = optim.scale_by_shampoo(b1=0.0, graft=False, root_eps=0.0, rank_rtol=1e-5)
    d, _ = s.update(_as(backend, G), s.init(_as(backend, G)), _as(backend, G))
    np.testing.assert_allclose(to_numpy(d), _polar_factor(G), atol=2e-4)


def test_shampoo_adam_before_start_and_roots_every_k(backend):
    rng = _rng(8)
    grads = rng.standard_normal((5, 4, 3))
    s = optim.scale_by_shampoo(start=3, every=2, graft=False)
    W = _as(backend, np.zeros((4, 3)))
    state = s.init(W)
    adam = optim.scale_by_adam()
    adam_state = adam.init(W)
    kept = []
    for t, g in enumerate(grads, start=1):
        d, state = s.update(_as(backend, g), state, W)
        a, adam_state = adam.update(_as(backend, g), adam_state, W)
        if t < 3:
            np.testing.assert_allclose(to_numpy(d), to_numpy(a), rtol=1e-4)
        kept.append(to_numpy(state.preconditioners.matrices[0]))
    assert np.all(kept[1] == 0) and np.any(kept[2] != 0)  # first roots at the start step
    np.testing.assert_array_equal(kept[2], kept[3])       # held between recomputations
    assert np.any(kept[4] != kept[3])


def test_soap_first_step_only_sets_up_the_bases(backend):
    G = _as(backend, _rng(9).standard_normal((4, 6)))
    s = optim.scale_by_soap()
    d, state = s.update(G, s.init(G), G)
    assert np.all(to_numpy(d) == 0) and np.all(to_numpy(state.exp_avg) == 0)


def test_soap_is_adam_in_the_refreshed_basis(backend):
    """Written-out SOAP in float64 (eigh at step 1, QR refresh every 2 Adam steps)."""
    rng = _rng(10)
    grads = rng.standard_normal((7, 3, 4))
    s = optim.scale_by_soap(every=2)
    W = _as(backend, np.zeros((3, 4)))
    state = s.init(W)
    got = []
    for g in grads:
        d, state = s.update(_as(backend, g), state, W)
        got.append(to_numpy(d))
    atol = 1e-10 if "float64" in backend.dtypes else 1e-4  # eigenbases in float32 otherwise
    np.testing.assert_allclose(np.stack(got), _soap_reference(grads, every=2), atol=atol)


def _soap_reference(grads, every, b1=0.95, b2=0.95, eps=1e-8, beta=0.95):
    m = np.zeros(grads.shape[1:])
    v = np.zeros(grads.shape[1:])
    L, R = (1 - beta) * grads[0] @ grads[0].T, (1 - beta) * grads[0].T @ grads[0]
    QL, QR = (np.linalg.eigh(F)[1][:, ::-1] for F in (L, R))
    out = [np.zeros(grads.shape[1:])]
    for t, g in enumerate(grads[1:], start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * (QL.T @ g @ QR) ** 2
        rot = QL.T @ m @ QR / (np.sqrt(v) + eps)  # bias correction outside eps (reference)
        out.append(QL @ rot @ QR.T * (np.sqrt(1 - b2**t) / (1 - b1**t)))
        L, R = beta * L + (1 - beta) * g @ g.T, beta * R + (1 - beta) * g.T @ g
        if t % every == 0:
            new = []
            for axis, (F, Q) in enumerate(((L, QL), (R, QR))):
                order = np.argsort(-np.diag(Q.T @ F @ Q), kind="stable")
                v = np.take(v, order, axis=axis)
                new.append(np.linalg.qr(F @ Q[:, order])[0])
            QL, QR = new
    return np.stack(out)


def test_multi_does_not_stack_shampoo(backend):
    params = [_as(backend, np.eye(3)), _as(backend, np.eye(3))]
    step = optim.multi(optim.shampoo(0.1))
    assert [keys for _, keys in step.init(params).groups] == [(0,), (1,)]


def test_orthogonalize_work_seam_decides_who_computes_which_matrices(backend):
    """A ``work`` that computes the stack in two shares gives the single-call result."""
    xp = backend.xp
    G = _as(backend, _rng(11).standard_normal((5, 6, 8)))
    shares = []

    def two_shares(fn, stacked):
        parts = [fn(stacked[:2, ...]), fn(stacked[2:, ...])]
        shares.extend(tuple(p.shape) for p in parts)
        return xp.concat(parts, axis=0)

    whole, _ = optim.orthogonalize(steps=5).update(G, (), None)
    split, _ = optim.orthogonalize(steps=5, work=two_shares).update(G, (), None)
    assert shares == [(2, 6, 8), (3, 6, 8)]
    eps = float(xp.finfo(G.dtype).eps)
    np.testing.assert_allclose(to_numpy(split), to_numpy(whole), atol=64 * eps)
    expected = np.stack([_reference_newton_schulz(g, JORDAN, 5) for g in to_numpy(G)])
    np.testing.assert_allclose(to_numpy(split), expected, atol=1e-12 if eps < 1e-15 else 3e-5)


def test_multi_update_without_params_for_steppers_that_do_not_read_them(backend):
    """``params=None`` (no decay inside the steppers) gives the same updates."""
    rng = _rng(12)
    params = {k: _as(backend, rng.standard_normal((4, 6))) for k in "ab"}
    grads = {k: _as(backend, rng.standard_normal((4, 6))) for k in "ab"}
    step = optim.multi(optim.chain(optim.trace(0.9), optim.orthogonalize(steps=5)))
    state = step.init(params)
    with_params, _ = step.update(grads, state, params)
    without, _ = step.update(grads, state)
    for k in params:
        assert np.array_equal(to_numpy(with_params[k]), to_numpy(without[k]))
        expected = _reference_newton_schulz(to_numpy(grads[k]).astype(np.float64), JORDAN, 5)
        np.testing.assert_allclose(to_numpy(without[k]), expected, atol=1e-5)


def test_orthogonalize_checks_its_options_with_newton_schulz_rules():
    """A bad ``match`` or step count fails when the stepper is built, in newton_schulz's words."""
    with pytest.raises(ValueError, match=r"match must be one of \(None, 'torch.optim.Muon'\)"):
        optim.orthogonalize(match="torch")
    with pytest.raises(ValueError, match=r"match must be one of"):
        from matsign import newton_schulz

        newton_schulz(np.eye(2), match="torch")


def _nested_params(rng):
    """A flax-like tree: nested dicts, a list, a tuple, in (fan_in, fan_out) layout."""
    return {"block": {"attn": rng.standard_normal((6, 4)), "mlp": rng.standard_normal((6, 4)),
                      "norm": rng.standard_normal(4)},
            "layers": [rng.standard_normal((3, 3, 2, 4)), (rng.standard_normal((4, 5)),)],
            "embed": {"table": rng.standard_normal((9, 6))}}


def test_route_keeps_the_structure_and_names_nested_paths():
    labels = optim.route(_nested_params(_rng()), head=None)
    assert labels == {"block": {"attn": "muon", "mlp": "muon", "norm": "adamw"},
                      "layers": ["muon", ("muon",)], "embed": {"table": "adamw"}}


def test_nested_trees_equal_per_parameter_application(backend):
    """multi over nested dicts/lists/tuples, flax orientation: each leaf as if alone.

    Oracle: the same stepper on each leaf by itself, seen as a torch-layout matrix
    (the transpose of the (fan_in, fan_out) weight; a conv (kh, kw, in, out) kernel as
    out x (kh kw in)), its update transposed back.
    """
    rng = _rng(11)
    host = _nested_params(rng)
    flat = dict(optim._tree.leaves(host))
    grads_host = optim._tree.rebuild(host, lambda key, p: rng.standard_normal(p.shape))
    on = lambda tree: optim._tree.rebuild(tree, lambda key, a: _as(backend, a))  # noqa: E731
    params, grads = on(host), on(grads_host)
    step = optim.multi(_steppers(), optim.route(params, head=None), orientation="in_out")
    state = step.init(params)
    assert next(keys for _, keys in state.groups) == ("block.attn", "block.mlp")
    updates, _ = step.update(grads, state, params)
    assert optim._tree.rebuild(updates, lambda key, u: tuple(u.shape)) == \
        optim._tree.rebuild(host, lambda key, p: p.shape)
    labels = dict(optim._tree.leaves(optim.route(host, head=None)))
    grad_leaves = dict(optim._tree.leaves(grads_host))
    for key, u in optim._tree.leaves(updates):
        p, g = flat[key], grad_leaves[key]
        if p.ndim >= 2:  # torch layout: (fan_out, fan_in)
            p, g = (a.reshape(-1, a.shape[-1]).T for a in (p, g))
        single = _steppers()[labels[key]]
        q = _as(backend, p)
        expected, _ = single.update(_as(backend, g), single.init(q), q)
        expected = to_numpy(expected)
        if flat[key].ndim >= 2:
            expected = expected.T.reshape(flat[key].shape)
        np.testing.assert_allclose(to_numpy(u), expected, atol=1e-6, err_msg=key)


def test_apply_updates_on_nested_trees(backend):
    params = {"a": [_as(backend, np.ones(2)), (_as(backend, np.zeros(1)),)], "b": None}
    updates = {"a": [_as(backend, np.full(2, 0.5)), (_as(backend, np.ones(1)),)], "b": None}
    new = optim.apply_updates(params, updates)
    assert new["b"] is None and isinstance(new["a"][1], tuple)
    np.testing.assert_array_equal(to_numpy(new["a"][0]), [1.5, 1.5])
    np.testing.assert_array_equal(to_numpy(new["a"][1][0]), [1.0])
    with pytest.raises(KeyError, match="no entry"):
        optim.apply_updates(params, {"a": [updates["a"][0]]})


def test_colliding_names_and_missing_labels_are_clear_errors():
    with pytest.raises(ValueError, match=r"share the name .a\.b."):
        optim.multi(optim.adamw()).init({"a.b": np.ones(2), "a": {"b": np.ones(2)}})
    step = optim.multi({"adamw": optim.adamw()}, {"w": "adamw"})
    with pytest.raises(KeyError, match="labels have no entry for the parameter 'v'"):
        step.init({"w": np.ones(2), "v": np.ones(2)})
    with pytest.raises(ValueError, match="orientation"):
        optim.multi(optim.adamw(), orientation="fan_in")


def test_weight_decay_without_params_is_a_clear_error():
    step = optim.multi(optim.muon(0.1, weight_decay=0.1))
    params = {"w": np.eye(2)}
    with pytest.raises(ValueError, match="pass params"):
        step.update({"w": np.eye(2)}, step.init(params), None)


@pytest.mark.parametrize("nesterov", [False, True])
def test_bias_corrected_trace_matches_the_closed_form(backend, nesterov):
    """EMA m_t = sum_s (1-mu) mu^(t-s) g_s; corrected m_t / (1 - mu^t) (Adam's rule);
    Nesterov: mu m_t / (1 - mu^(t+1)) + (1 - mu) g_t / (1 - mu^t) (optax.contrib.muon)."""
    mu, grads = 0.9, _rng(12).standard_normal((4, 3))
    t = optim.trace(mu, ema=True, nesterov=nesterov, bias_correction=True)
    state = t.init(_as(backend, np.zeros(3)))
    for step in range(1, 5):
        out, state = t.update(_as(backend, grads[step - 1]), state, None)
        m = sum((1 - mu) * mu ** (step - s) * grads[s - 1] for s in range(1, step + 1))
        expected = (mu * m / (1 - mu ** (step + 1)) + (1 - mu) * grads[step - 1] / (1 - mu**step)
                    if nesterov else m / (1 - mu**step))
        np.testing.assert_allclose(to_numpy(out), expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="ema"):
        optim.trace(mu, bias_correction=True)


def test_numeric_update_scale_is_a_target_rms():
    """c sqrt(max(m, n)) makes a full-rank orthogonal m x n update's RMS exactly c."""
    for shape in [(8, 2), (2, 8), (5, 5)]:
        Q = _polar_factor(_rng(13).standard_normal(shape))
        u, _ = optim.scale_by_shape(0.3).update(Q, (), None)
        assert math.isclose(float(np.sqrt(np.mean(u * u))), 0.3, rel_tol=1e-12)
    assert optim.shape_scale((8, 2), 0.2) == optim.shape_scale((8, 2), "moonlight")
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="RMS"):
            optim.scale_by_shape(bad)


def _blocks_polar(G, sizes, axis):
    """Each block's polar factor (float64 SVD), reassembled: the oracle of split=."""
    cuts = np.cumsum(sizes)[:-1]
    parts = np.split(G, cuts, axis=axis)
    return np.concatenate([_polar_factor(b) for b in parts], axis=axis)


@pytest.mark.parametrize(("split", "axis", "sizes"), [
    (3, -2, (2, 2, 2)),          # fused QKV rows
    (6, -2, (1,) * 6),           # one row per "head"
    ((4, 1, 1), -2, (4, 1, 1)),  # grouped-query attention: d_q, d_kv, d_kv
    (2, -1, (2, 2)),             # heads of an output projection (columns)
])
def test_split_orthogonalises_each_block(backend, monkeypatch, split, axis, sizes):
    """msign of each block, scaled by the block's own shape, in one call per block size."""
    G = _rng(14).standard_normal((6, 4))
    calls = []
    real = transforms.msign
    monkeypatch.setattr(transforms, "msign",
                        lambda X, **k: calls.append(tuple(X.shape)) or real(X, **k))
    step = optim.muon(1.0, method="svd", split=split, split_axis=axis, nesterov=False)
    u, _ = step.update(_as(backend, G), step.init(_as(backend, G)), None)
    scales = np.concatenate([np.full(k, math.sqrt(max(1.0, k / 4)) if axis == -2
                                     else math.sqrt(max(1.0, 6 / k))) for k in sizes])
    expected = -_blocks_polar(G, sizes, axis)
    expected = expected * (scales[:, None] if axis == -2 else scales[None, :])
    np.testing.assert_allclose(to_numpy(u), expected, atol=1e-6)
    assert len(calls) == len(set(sizes))  # one batched call per distinct block size


def test_split_keeps_stacks_in_one_call_and_rejects_bad_splits(monkeypatch):
    G = _rng(15).standard_normal((4, 6, 4))  # a stack of 4 fused QKV matrices
    calls = []
    real = transforms.newton_schulz
    monkeypatch.setattr(transforms, "newton_schulz",
                        lambda X, *a, **k: calls.append(tuple(X.shape)) or real(X, *a, **k))
    out, _ = optim.orthogonalize(split=3).update(G, (), None)
    assert calls == [(4, 3, 2, 4)]
    expected = np.stack([optim.orthogonalize().update(g.reshape(3, 2, 4), (), None)[0]
                         .reshape(6, 4) for g in G])
    np.testing.assert_allclose(out, expected, atol=1e-12)
    with pytest.raises(ValueError, match="does not tile"):
        optim.orthogonalize(split=4).update(G, (), None)
    for bad in (0, (2, 0), (), 1.5):
        with pytest.raises(ValueError, match="split"):
            optim.orthogonalize(split=bad)
    with pytest.raises(ValueError, match="split_axis"):
        optim.orthogonalize(split=2, split_axis=0)


def test_dual_norm_step_is_the_nuclear_norm_times_the_polar_factor(backend):
    """Steepest descent under the spectral norm: ||N||_* U V^T (exact by SVD)."""
    G = _rng(16).standard_normal((2, 5, 3))
    step = optim.orthogonalize(method="svd", dual_norm_step=True)
    u, _ = step.update(_as(backend, G), (), None)
    expected = np.stack([np.linalg.svd(g, compute_uv=False).sum() * _polar_factor(g)
                         for g in G])
    np.testing.assert_allclose(to_numpy(u), expected, rtol=1e-5, atol=1e-6)


def test_dual_norm_step_follows_optax_adaptive_muon():
    """optax.contrib.muon(adaptive=True) scales by <mu_hat, O>: 20 steps agree (float64)."""
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    from matsign.optim import optax as mo

    with jax.enable_x64(True):
        rng = _rng(17)
        params = {"a": jax.numpy.asarray(rng.standard_normal((8, 12))),
                  "b": jax.numpy.asarray(rng.standard_normal((12, 8)))}
        ref = optax.contrib.muon(0.01, adaptive=True)
        ours = mo.muon(0.01, bias_correction=True, dual_norm_step=True,
                       labels={"a": "muon", "b": "muon"})
        p1, p2, s1, s2 = params, params, ref.init(params), ours.init(params)
        for _ in range(20):
            g = {k: jax.numpy.asarray(rng.standard_normal(v.shape)) for k, v in params.items()}
            u1, s1 = ref.update(g, s1, p1)
            u2, s2 = ours.update(g, s2, p2)
            p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
        for k in params:  # optax divides by ||X||_F + 1e-8, matsign by max(||X||_F, 1e-7):
            a, b = np.asarray(p2[k]), np.asarray(p1[k])  # 1e-9 apart at ||X||_F ~ 10
            assert np.max(np.abs(a - b)) <= 1e-7 * np.max(np.abs(b))


def test_route_never_sends_an_unnamed_head_to_muon_silently():
    """nn.Sequential names its layers by position: the head is found by order or named."""
    params = {"0.weight": np.zeros((8, 4)), "0.bias": np.zeros(8), "2.weight": np.zeros((3, 8))}
    with pytest.warns(UserWarning, match=r"the last one, '2\.weight', goes to Muon"):
        labels = optim.route(params)
    assert labels["2.weight"] == "muon"
    assert optim.route(params, head="last")["2.weight"] == "adamw"
    assert optim.route(params, head="2.weight") == optim.route(params, head="last")
    assert optim.route(params, head=None)["2.weight"] == "muon"
    with pytest.raises(KeyError, match="not a matrix parameter"):
        optim.route(params, head="0.bias")
    with pytest.warns(UserWarning, match="no output head"):  # lists carry no names
        optim.route([np.zeros((4, 4)), np.zeros((2, 4))])
