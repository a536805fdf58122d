"""Tiger against a float64 NumPy transcription of its update rule (every backend; the torch
class; jax.jit; optax)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

from matsign import optim
from matsign.testing import assert_close

STEPS = 20


def _rng(seed=0):
    return np.random.default_rng(seed)


def _tiger(theta, grads, *, lr, beta=0.945, weight_decay=0.0, cautious_mask=False,
           cautious_weight_decay=False):
    """Su's rule in float64: m <- beta m + (1 - beta) g, theta <- theta - lr (u + wd theta),
    u = sign(m); cautiously, u is kept where u g > 0 and rescaled by size / (kept + 1) per
    matrix (the last two axes), and the decay acts only where u theta > 0."""
    theta = np.array(theta, dtype=np.float64)
    m = np.zeros_like(theta)
    axes = tuple(range(max(0, theta.ndim - 2), theta.ndim))
    for g in grads:
        m = beta * m + (1 - beta) * g
        u = np.sign(m)
        if cautious_mask:
            agree = u * g > 0
            size = math.prod(theta.shape[a] for a in axes)
            kept = agree.sum(axis=axes, keepdims=True) if axes else agree
            u = np.where(agree, u, 0.0) * (size / (kept + 1.0))
        decayed = np.where(u * theta > 0, theta, 0.0) if cautious_weight_decay else theta
        theta = theta - lr * (u + weight_decay * decayed)
    return theta


CONFIGS = {
    "plain": {"lr": 0.01},
    "decay": {"lr": 0.01, "beta": 0.965, "weight_decay": 0.5},
    "cautious": {"lr": 0.01, "weight_decay": 0.5, "cautious_mask": True,
                 "cautious_weight_decay": True},
}


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("shape", [(5, 7), (7,), (2, 3, 4)], ids=str)
def test_tiger_follows_its_formula(backend, config, shape):
    options = dict(CONFIGS[config])
    dtype = "float64" if "float64" in backend.dtypes else "float32"
    rng = _rng(len(shape))
    theta0 = rng.standard_normal(shape)
    grads = rng.standard_normal((STEPS, *shape))
    expected = _tiger(theta0, grads, **options)
    opt = optim.tiger(options.pop("lr"), **options)
    W = backend.asarray(theta0, dtype)
    state = opt.init(W)
    for g in grads:
        u, state = opt.update(backend.asarray(g, dtype), state, W)
        W = optim.apply_updates(W, u)
    eps = np.finfo(np.float64 if dtype == "float64" else np.float32).eps
    assert_close(W, expected, rtol=100 * eps, atol=100 * eps, xp=backend.xp,
                 dtype=backend.dtypes[dtype], device=backend.device)


def test_tiger_is_lion_with_equal_betas():
    rng = _rng(1)
    tiger, lion = optim.scale_by_tiger(0.9), optim.scale_by_lion(0.9, 0.9)
    s_t, s_l = tiger.init(np.zeros(5)), lion.init(np.zeros(5))
    for g in rng.standard_normal((6, 5)):
        (u_t, s_t), (u_l, s_l) = tiger.update(g, s_t, None), lion.update(g, s_l, None)
        np.testing.assert_array_equal(u_t, u_l)
        np.testing.assert_array_equal(s_t.exp_avg, s_l.exp_avg)


def test_bad_beta_is_named():
    with pytest.raises(ValueError, match="beta"):
        optim.scale_by_tiger(1.0)


def test_jitted_tiger_equals_the_eager_numpy_float64_steps():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    opt = optim.tiger(lambda t: 0.1 / (1.0 + t), weight_decay=0.1, cautious_mask=True)
    rng = _rng(2)
    w_np = rng.standard_normal((6, 4))
    w_jx = jnp.asarray(w_np)
    s_np, s_jx = opt.init(w_np), opt.init(w_jx)
    step = jax.jit(opt.update)
    for g in rng.standard_normal((3, 6, 4)):
        u_np, s_np = opt.update(g, s_np, w_np)
        u_jx, s_jx = step(jnp.asarray(g), s_jx, w_jx)
        w_np, w_jx = w_np + u_np, w_jx + u_jx
    np.testing.assert_allclose(np.asarray(w_jx), w_np, rtol=1e-12, atol=1e-14)


def test_optax_tiger_follows_the_formula():
    jax = pytest.importorskip("jax")
    pytest.importorskip("optax")
    import jax.numpy as jnp
    import optax

    from matsign.optim import optax as mo

    rng = _rng(3)
    params = {"w": rng.standard_normal((4, 3)), "b": rng.standard_normal(3)}
    grads = [{k: rng.standard_normal(v.shape) for k, v in params.items()} for _ in range(STEPS)]
    opt = mo.tiger(0.01, beta=0.9, weight_decay=0.2)
    p = jax.tree.map(jnp.asarray, params)
    state = opt.init(p)
    step = jax.jit(opt.update)
    for g in grads:
        u, state = step(jax.tree.map(jnp.asarray, g), state, p)
        p = optax.apply_updates(p, u)
    for key, value in params.items():
        expected = _tiger(value, [g[key] for g in grads], lr=0.01, beta=0.9, weight_decay=0.2)
        np.testing.assert_allclose(np.asarray(p[key]), expected, rtol=1e-12, atol=1e-13)


# --- matsign.optim.torch.Tiger ------------------------------------------------------------------


@pytest.fixture
def torch():
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)


def _model(torch, dtype=None):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 24), torch.nn.Tanh(),
                                torch.nn.Linear(24, 8))
    return model if dtype is None else model.to(dtype)


def _batches(torch, steps, dtype=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = [(torch.randn(32, 12, generator=g), torch.randn(32, 8, generator=g))
           for _ in range(steps)]
    return out if dtype is None else [(x.to(dtype), y.to(dtype)) for x, y in out]


def _train(model, opt, batches):
    grads = []
    for x, y in batches:
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        grads.append([p.grad.detach().clone() for p in model.parameters()])
        opt.step()
    return grads


@pytest.mark.parametrize("options", [
    {"lr": 0.01}, {"lr": 0.01, "weight_decay": 0.3, "beta": 0.9, "maximize": True},
    {"lr": 0.01, "weight_decay": 0.3, "cautious_mask": True, "cautious_weight_decay": True},
], ids=str)
def test_torch_tiger_follows_the_formula(torch, options):
    from matsign.optim.torch import Tiger

    options = dict(options)
    model = _model(torch, torch.float64)
    start = [p.detach().double().numpy().copy() for p in model.parameters()]
    grads = _train(model, Tiger(model.parameters(), **options), _batches(torch, STEPS,
                                                                          torch.float64))
    sign = -1.0 if options.pop("maximize", False) else 1.0
    for i, p in enumerate(model.parameters()):
        expected = _tiger(start[i], [sign * g[i].numpy() for g in grads], **options)
        np.testing.assert_allclose(p.detach().numpy(), expected, rtol=1e-13, atol=1e-14)


def test_torch_tiger_defaults_and_state_names(torch):
    from matsign.optim.torch import Tiger

    model = _model(torch)
    opt = Tiger(model.parameters())
    assert {k: opt.defaults[k] for k in ("lr", "beta", "weight_decay")} == {
        "lr": 1e-4, "beta": 0.945, "weight_decay": 0.0}
    _train(model, opt, _batches(torch, 1))
    assert all(sorted(s) == ["exp_avg"] for s in opt.state.values())
    with pytest.raises(ValueError, match="beta"):
        Tiger(model.parameters(), beta=1.5)


def test_torch_tiger_state_dict_round_trip_resumes_bit_for_bit(torch):
    from matsign.optim.torch import Tiger

    batches = _batches(torch, 8)
    model = _model(torch)
    _train(model, Tiger(model.parameters(), lr=0.01, weight_decay=0.1), batches)
    straight = [p.detach().clone() for p in model.parameters()]
    model = _model(torch)
    opt = Tiger(model.parameters(), lr=0.01, weight_decay=0.1)
    _train(model, opt, batches[:4])
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    resumed = _model(torch)
    resumed.load_state_dict(saved["model"])
    resumed_opt = Tiger(resumed.parameters(), lr=0.5)  # lr comes back from the state dict
    resumed_opt.load_state_dict(saved["opt"])
    _train(resumed, resumed_opt, batches[4:])
    assert all(torch.equal(a, b.detach()) for a, b in zip(straight, resumed.parameters(),
                                                          strict=True))


def test_torch_tiger_skips_a_nonfinite_step(torch):
    from matsign.optim.torch import Tiger

    model = _model(torch)
    opt = Tiger(model.parameters(), lr=0.01, weight_decay=0.1)
    _train(model, opt, _batches(torch, 2))
    before = [p.detach().clone() for p in model.parameters()]
    state = {(id(p), k): v.clone() for p, s in opt.state.items() for k, v in s.items()}
    opt.zero_grad()
    ((model(_batches(torch, 1)[0][0]) - 1.0) ** 2).mean().backward()
    next(model.parameters()).grad[0, 0] = float("inf")
    opt.step()
    assert all(torch.equal(a, b.detach()) for a, b in zip(before, model.parameters(),
                                                          strict=True))
    after = {(id(p), k): v for p, s in opt.state.items() for k, v in s.items()}
    assert all(torch.equal(state[k], after[k]) for k in state)


# --- The sign Tiger, Lion, AdaMuon and the l-inf dual map take -----------------------------

SIGNS = [math.nan, -math.inf, -3.0, -1.0, -0.7, -1e-30, -0.0, 0.0, 1e-30, 0.25, 1.0, 2.5,
         math.inf]


def test_sign_matches_numpy_and_keeps_nan(backend, dtype):
    from matsign import _xp

    x = backend.asarray(np.array(SIGNS), dtype)
    got = _xp.sign(x, xp=backend.xp)
    assert got.dtype == x.dtype
    np.testing.assert_array_equal(_xp.to_numpy(got).astype(np.float64), np.sign(SIGNS))


def test_torch_sign_of_subnormals_and_of_a_nan_momentum(torch):
    from array_api_compat import torch as xp

    from matsign import _xp

    tiny = torch.tensor([-1e-40, 1e-40, -1e-45, 1e-45], dtype=torch.float32)  # subnormal
    np.testing.assert_array_equal(_xp.sign(tiny, xp=xp).numpy(), [-1.0, 1.0, -1.0, 1.0])
    opt = optim.tiger(0.1)
    u, _ = opt.update(torch.tensor([1.0, math.nan, -2.0]), opt.init(torch.zeros(3)),
                      torch.zeros(3))
    assert math.isnan(float(u[1])) and float(u[0]) < 0 < float(u[2])  # NaN is not hidden as 0
