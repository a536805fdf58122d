"""AdaMuon and NorMuon against float64 NumPy transcriptions of the reference code (every
backend; stacks; jax.jit; the torch classes, their state dicts and non-finite skips; optax;
two gloo ranks, replicated and sharded, against the single-process run).

The oracles transcribe Si et al.'s ``gpt2/models/optimizers/adamuon.py`` and Li et al.'s
``normuon.py`` (``normuon_update``), with the exact polar factor ``U V^T`` by SVD in place
of their Newton–Schulz (``method="svd"`` here) or with their Newton–Schulz loop itself.
"""

from __future__ import annotations

import io
import json
import math
import os
import socket
import tempfile
import time
import traceback

import numpy as np
import pytest

from matsign import optim
from matsign.testing import assert_close

STEPS = 8
JORDAN = (3.4445, -4.7750, 2.0315)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _svd_polar(X):
    """``U_r V_r^T`` of each matrix (the last two axes), float64: directions of singular
    values below 1e-10 sigma_max map to 0, as under Newton–Schulz (sign matrices of small
    shapes are often singular)."""
    U, s, Vh = np.linalg.svd(X, full_matrices=False)
    kept = s > 1e-10 * s[..., :1]
    return (U * kept[..., None, :]) @ Vh


def _reference_ns(G, steps=5):
    """The references' ``zeropower_via_newtonschulz5`` in float64 (no bfloat16 cast)."""
    a, b, c = JORDAN
    tall = G.shape[-2] > G.shape[-1]
    X = np.swapaxes(G, -1, -2) if tall else G
    X = X / (np.linalg.norm(X, axis=(-2, -1), keepdims=True) + 1e-7)
    for _ in range(steps):
        A = X @ np.swapaxes(X, -1, -2)
        B = b * A + c * A @ A
        X = a * X + B @ X
    return np.swapaxes(X, -1, -2) if tall else X


def _norm(X):
    return np.linalg.norm(X, axis=(-2, -1), keepdims=True)


def _adamuon(theta, grads, *, lr, weight_decay=0.0, momentum=0.95, nesterov=True, eps=1e-8,
             b2=None, sign=True, rms=0.2, bias_correction=False, polar=_svd_polar):
    """Si et al.'s step per matrix: buf.lerp_(g, 1 - mu); n = g.lerp_(buf, mu);
    O = NS(sign(n)); v = mu v + (1 - mu) O^2; O = O / (sqrt(v) + eps);
    O *= 0.2 sqrt(m n) / (||O|| + eps); p *= 1 - lr wd; p -= lr O."""
    theta = np.array(theta, dtype=np.float64)
    b2 = momentum if b2 is None else b2
    buf, v = np.zeros_like(theta), np.zeros_like(theta)
    m, n = theta.shape[-2:]
    for t, g in enumerate(grads, start=1):
        buf = buf + (1 - momentum) * (g - buf)
        look = g + momentum * (buf - g) if nesterov else buf
        O = polar(np.sign(look) if sign else look)
        v = b2 * v + (1 - b2) * O * O
        vhat = v / (1 - b2 ** t) if bias_correction else v
        O = O / (np.sqrt(vhat) + eps)
        O = O * (rms * math.sqrt(m * n) / (_norm(O) + eps))
        theta = theta * (1 - lr * weight_decay) - lr * O
    return theta


def _normuon(theta, grads, *, lr, weight_decay=0.0, momentum=0.95, b2=0.95, nesterov=True,
             neurons="rows", rms=None, cautious_weight_decay=False, polar=_svd_polar):
    """Li et al.'s normuon_update per matrix: vnorm = ||O||; v.lerp_(mean(O^2, -1), 1 - b2);
    O *= 1 / (sqrt(v) + 1e-10); O *= vnorm / (||O|| + 1e-10); O *= sqrt(max(1, m/n));
    p *= 1 - lr wd; p -= lr O. ``neurons="longer"`` reduces as modded-nanogpt's
    ``_apply_normuon_variance_reduction`` (over -1 when m >= n, else -2, with its clamps);
    ``rms=0.2`` is the paper's Algorithm 1 (0.2 sqrt(m n) / ||O||, no shape scale)."""
    theta = np.array(theta, dtype=np.float64)
    m, n = theta.shape[-2:]
    axis = -1 if neurons == "rows" or (neurons == "longer" and m >= n) else -2
    buf = np.zeros_like(theta)
    v = np.zeros_like(np.mean(theta, axis=axis, keepdims=True))
    for g in grads:
        buf = buf + (1 - momentum) * (g - buf)
        O = polar(g + momentum * (buf - g) if nesterov else buf)
        vnorm = _norm(O)
        v = v + (1 - b2) * (np.mean(O * O, axis=axis, keepdims=True) - v)
        if neurons == "longer":
            O = O / np.sqrt(np.maximum(v, 1e-10))
            O = O * (vnorm / np.maximum(_norm(O), 1e-10))
        else:
            O = O * (1 / (np.sqrt(v) + 1e-10))
            O = O * (vnorm / (_norm(O) + 1e-10) if rms is None
                     else rms * math.sqrt(m * n) / (_norm(O) + 1e-10))
        if rms is None:
            O = O * max(1, m / n) ** 0.5
        decay = weight_decay * (np.where(O * theta > 0, theta, 0.0) if cautious_weight_decay
                                else theta)
        theta = theta - lr * (O + decay)
    return theta


ADAMUON_CONFIGS = {
    "reference": {"lr": 1e-3, "weight_decay": 0.1},
    "v1-code": {"lr": 1e-3, "sign": False, "b2": 0.999, "bias_correction": True},
    "plain-momentum": {"lr": 1e-3, "nesterov": False, "eps": 1e-6, "rms": 0.3},
}
NORMUON_CONFIGS = {
    "reference": {"lr": 0.02, "weight_decay": 0.1},
    "paper": {"lr": 1e-3, "nesterov": False, "rms": 0.2},
    "columns": {"lr": 0.02, "neurons": "columns", "b2": 0.9},
    "modded-nanogpt": {"lr": 0.02, "neurons": "longer", "weight_decay": 0.1,
                       "cautious_weight_decay": True},
}
SHAPES = [(5, 7), (7, 5), (3, 4, 6)]  # wide, tall, a stack of three matrices


def _run(opt, backend, theta, grads, dtype):
    """``opt``'s steps on ``backend`` (None: plain NumPy float64)."""
    move = np.asarray if backend is None else lambda a: backend.asarray(a, dtype)
    W = move(theta)
    state = opt.init(W)
    for g in grads:
        u, state = opt.update(move(g), state, W)
        W = optim.apply_updates(W, u)
    return W


def _tolerance(backend, dtype):
    return 1e-9 if dtype == "float64" else 2e-4


def _dtype(backend):
    return "float64" if "float64" in backend.dtypes else "float32"


@pytest.mark.parametrize("config", ADAMUON_CONFIGS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_adamuon_follows_the_reference_transcription(backend, config, shape):
    options = dict(ADAMUON_CONFIGS[config])
    rng = _rng(len(shape))
    theta0, grads = rng.standard_normal(shape), rng.standard_normal((STEPS, *shape))
    expected = _adamuon(theta0, grads, **options)
    dtype = _dtype(backend)
    got = _run(optim.adamuon(options.pop("lr"), method="svd", **options), backend, theta0,
               grads, dtype)
    tol = _tolerance(backend, dtype)
    assert_close(got, expected, rtol=tol, atol=tol * 1e-2, xp=backend.xp,
                 dtype=backend.dtypes[dtype], device=backend.device)


@pytest.mark.parametrize("config", NORMUON_CONFIGS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_normuon_follows_the_reference_transcription(backend, config, shape):
    options = dict(NORMUON_CONFIGS[config])
    rng = _rng(len(shape) + 10)
    theta0, grads = rng.standard_normal(shape), rng.standard_normal((STEPS, *shape))
    expected = _normuon(theta0, grads, **options)
    dtype = _dtype(backend)
    got = _run(optim.normuon(options.pop("lr"), method="svd", **options), backend, theta0,
               grads, dtype)
    tol = _tolerance(backend, dtype)
    assert_close(got, expected, rtol=tol, atol=tol * 1e-2, xp=backend.xp,
                 dtype=backend.dtypes[dtype], device=backend.device)


@pytest.mark.parametrize("shape", [(6, 10), (10, 6), (2, 8, 8)], ids=str)
def test_newton_schulz_runs_match_the_reference_loop(shape):
    """Jordan's quintic, 5 steps, in float64: the references' loop (eps added to the norm)
    and matsign's (eps as a lower clamp) agree to the eps's size relative to the norm."""
    rng = _rng(5)
    theta0, grads = rng.standard_normal(shape), rng.standard_normal((STEPS, *shape))
    got = _run(optim.adamuon(1e-3), None, theta0, grads, "float64")
    want = _adamuon(theta0, grads, lr=1e-3, polar=_reference_ns)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=3e-8)
    got = _run(optim.normuon(0.02), None, theta0, grads, "float64")
    want = _normuon(theta0, grads, lr=0.02, polar=_reference_ns)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=3e-8)


@pytest.mark.parametrize("opt", [optim.adamuon(1e-3, weight_decay=0.1),
                                 optim.normuon(0.02, neurons="longer", weight_decay=0.1),
                                 optim.normuon(0.02, rms=0.2, method="svd")],
                         ids=["adamuon", "normuon", "normuon-svd"])
def test_a_stack_equals_each_matrix_alone(opt):
    rng = _rng(6)
    params = {f"w{i}": rng.standard_normal((6, 9)) for i in range(3)}
    engine = optim.multi(opt)
    state = engine.init(params)
    assert [keys for _, keys in state.groups] == [("w0", "w1", "w2")]
    alone = {k: opt.init(w) for k, w in params.items()}
    separate = dict(params)
    for _ in range(4):
        grads = {k: rng.standard_normal((6, 9)) for k in params}
        updates, state = engine.update(grads, state, params)
        params = optim.apply_updates(params, updates)
        for k in separate:
            u, alone[k] = opt.update(grads[k], alone[k], separate[k])
            separate[k] = separate[k] + u
    for k in params:
        np.testing.assert_allclose(params[k], separate[k], rtol=1e-12, atol=1e-14)


def test_states_and_their_shapes():
    W = np.zeros((3, 5, 4))
    assert optim.scale_by_adamuon().init(W).v_buffer.shape == (3, 5, 4)
    counted = optim.scale_by_adamuon(bias_correction=True).init(W)
    assert counted.step.shape == () and counted.v_buffer.shape == (3, 5, 4)
    for neurons, shape in [("rows", (3, 5, 1)), ("columns", (3, 1, 4)), ("longer", (3, 5, 1))]:
        state = optim.scale_by_normuon(neurons=neurons).init(W)
        assert state.second_momentum_buffer.shape == shape
    assert optim.scale_by_normuon(neurons="longer").init(np.zeros((4, 5))) \
        .second_momentum_buffer.shape == (1, 5)


def test_zero_gradients_give_zero_updates_and_no_nan():
    for opt in (optim.adamuon(1e-3), optim.normuon(0.02), optim.normuon(0.02, rms=0.2)):
        W = np.ones((4, 3))
        u, state = opt.update(np.zeros((4, 3)), opt.init(W), W)
        assert np.array_equal(u, np.zeros((4, 3)))
        assert all(np.all(np.isfinite(np.asarray(a))) for part in state for a in part)


def test_bad_options_are_named():
    for make, kwargs, word in [(optim.scale_by_adamuon, {"b2": 1.0}, "b2"),
                               (optim.scale_by_adamuon, {"rms": 0.0}, "rms"),
                               (optim.scale_by_normuon, {"neurons": "heads"}, "neurons"),
                               (optim.scale_by_normuon, {"eps": -1.0}, "eps"),
                               (optim.adamuon, {"momentum": 1.0}, "momentum"),
                               (optim.normuon, {"schedule": "nope"}, "nope")]:
        with pytest.raises((ValueError, KeyError), match=word):
            make(**kwargs)


@pytest.mark.parametrize("kind", ["adamuon", "normuon"])
def test_jitted_steps_equal_the_eager_numpy_float64_steps(kind):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    schedule = lambda t: 1e-3 / (1.0 + t)  # noqa: E731
    opt = (optim.adamuon(schedule, weight_decay=0.1, bias_correction=True) if kind == "adamuon"
           else optim.normuon(schedule, weight_decay=0.1, cautious_weight_decay=True))
    rng = _rng(7)
    w_np = rng.standard_normal((3, 6, 4))
    w_jx = jnp.asarray(w_np)
    s_np, s_jx = opt.init(w_np), opt.init(w_jx)
    step = jax.jit(opt.update)
    for g in rng.standard_normal((3, 3, 6, 4)):
        u_np, s_np = opt.update(g, s_np, w_np)
        u_jx, s_jx = step(jnp.asarray(g), s_jx, w_jx)
        w_np, w_jx = w_np + u_np, w_jx + u_jx
    assert w_jx.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(w_jx), w_np, rtol=1e-11, atol=1e-13)


def test_optax_wrappers_follow_the_transcriptions_in_flax_layout():
    jax = pytest.importorskip("jax")
    pytest.importorskip("optax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import optax

    from matsign.optim import optax as mo

    rng = _rng(8)
    params = {"dense": rng.standard_normal((6, 4)), "bias": rng.standard_normal(4),
              "head": rng.standard_normal((4, 3))}  # flax kernels: (fan_in, fan_out)
    grads = [{k: rng.standard_normal(v.shape) for k, v in params.items()} for _ in range(5)]
    for wrapper, oracle, lr in [(mo.adamuon, _adamuon, 1e-3), (mo.normuon, _normuon, 0.02)]:
        opt = wrapper(lr, method="svd")
        p = jax.tree.map(jnp.asarray, params)
        state = opt.init(p)
        step = jax.jit(opt.update)
        for g in grads:
            u, state = step(jax.tree.map(jnp.asarray, g), state, p)
            p = optax.apply_updates(p, u)
        # the stepper sees (fan_out, fan_in): the transcription runs on the transpose
        want = oracle(params["dense"].T, [g["dense"].T for g in grads], lr=lr).T
        np.testing.assert_allclose(np.asarray(p["dense"]), want, rtol=1e-10, atol=1e-12)
        assert list(state.groups) == [("other", ("bias",)), ("muon", ("dense",)),
                                      ("other", ("head",))]


# --- matsign.optim.torch.AdaMuon / NorMuon ------------------------------------------------------


@pytest.fixture
def torch():
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)


def _model(torch, dtype=None):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 24, bias=False), torch.nn.Tanh(),
                                torch.nn.Linear(24, 24, bias=False), torch.nn.Tanh(),
                                torch.nn.Linear(24, 24, bias=False), torch.nn.Tanh(),
                                torch.nn.Linear(24, 8, bias=False))
    return model if dtype is None else model.to(dtype)


def _batches(torch, steps, dtype=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = [(torch.randn(32, 12, generator=g), torch.randn(32, 8, generator=g))
           for _ in range(steps)]
    return out if dtype is None else [(x.to(dtype), y.to(dtype)) for x, y in out]


def _train(model, opt, batches, scale=1.0):
    grads = []
    for x, y in batches:
        opt.zero_grad()
        (scale * ((model(x) - y) ** 2).mean()).backward()
        grads.append([p.grad.detach().clone() for p in model.parameters()])
        opt.step()
    return grads


def _classes():
    from matsign.optim.torch import AdaMuon, NorMuon

    return {"AdaMuon": (AdaMuon, _adamuon), "NorMuon": (NorMuon, _normuon)}


TORCH_CONFIGS = {
    "AdaMuon": [{"lr": 1e-3, "weight_decay": 0.1},
                {"lr": 1e-3, "weight_decay": 0.0, "sign": False, "beta2": 0.999,
                 "bias_correction": True, "maximize": True}],
    "NorMuon": [{"lr": 0.02, "weight_decay": 0.1},
                {"lr": 1e-3, "nesterov": False, "rms": 0.2, "maximize": True},
                {"lr": 0.02, "neurons": "longer", "weight_decay": 0.1,
                 "cautious_weight_decay": True}],
}


@pytest.mark.parametrize(("name", "index"), [(n, i) for n, c in TORCH_CONFIGS.items()
                                             for i in range(len(c))])
def test_torch_classes_follow_the_transcription_with_the_reference_loop(torch, name, index):
    cls, oracle = _classes()[name]
    options = dict(TORCH_CONFIGS[name][index])
    model = _model(torch, torch.float64)
    start = [p.detach().numpy().copy() for p in model.parameters()]
    opt = cls(model.parameters(), ns_dtype=None, **options)
    assert len(opt._stacked(opt._stepper(opt.param_groups[0]),
                            tuple(model.parameters()), opt.param_groups[0]).groups) == 3
    # gradients of size 1 or more: the references add their 1e-7 to the norm, matsign clamps
    grads = _train(model, opt, _batches(torch, STEPS, torch.float64), scale=1e3)
    sign = -1.0 if options.pop("maximize", False) else 1.0
    if "beta2" in options:
        options["b2"] = options.pop("beta2")
    for i, p in enumerate(model.parameters()):
        expected = oracle(start[i], [sign * g[i].numpy() for g in grads],
                          polar=_reference_ns, **options)
        np.testing.assert_allclose(p.detach().numpy(), expected, rtol=1e-7, atol=1e-9)


def test_torch_defaults_and_state_names(torch):
    from matsign.optim.torch import AdaMuon, NorMuon

    model = _model(torch)
    ada = AdaMuon(model.parameters(), ns_dtype=None)
    assert {k: ada.defaults[k] for k in ("lr", "weight_decay", "momentum", "eps")} == {
        "lr": 6e-4, "weight_decay": 0.01, "momentum": 0.95, "eps": 1e-8}
    _train(model, ada, _batches(torch, 1))
    assert all(sorted(s) == ["momentum_buffer", "v_buffer"] for s in ada.state.values())
    nor = NorMuon(model.parameters())
    assert {k: nor.defaults[k] for k in ("lr", "weight_decay", "momentum", "beta2")} == {
        "lr": 0.02, "weight_decay": 0.0, "momentum": 0.95, "beta2": 0.95}
    _train(model, nor, _batches(torch, 1))
    shapes = {k: tuple(v.shape) for k, v in nor.state[model[0].weight].items()}
    assert shapes == {"momentum_buffer": (24, 12), "second_momentum_buffer": (24, 1)}


def test_torch_conv_kernels_are_flattened(torch):
    from matsign.optim.torch import NorMuon

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3, bias=False).double()
    start = conv.weight.detach().numpy().copy()
    opt = NorMuon(conv.parameters(), ns_dtype=None)
    grads = _train(conv, opt, [(torch.randn(2, 3, 5, 5, dtype=torch.float64),
                                torch.zeros(2, 8, 3, 3, dtype=torch.float64))] * 3, scale=1e3)
    want = _normuon(start.reshape(8, 27), [g[0].numpy().reshape(8, 27) for g in grads],
                    lr=0.02, polar=_reference_ns)
    np.testing.assert_allclose(conv.weight.detach().numpy().reshape(8, 27), want, rtol=1e-7,
                               atol=1e-9)
    assert tuple(opt.state[conv.weight]["second_momentum_buffer"].shape) == (8, 1)


@pytest.mark.parametrize("name", ["AdaMuon", "NorMuon"])
def test_torch_state_dict_round_trip_resumes_bit_for_bit(torch, name):
    cls, _ = _classes()[name]
    options = {"lr": 1e-3, "weight_decay": 0.1, "ns_dtype": None}
    batches = _batches(torch, 8)
    model = _model(torch)
    _train(model, cls(model.parameters(), **options), batches)
    straight = [p.detach().clone() for p in model.parameters()]
    model = _model(torch)
    opt = cls(model.parameters(), **options)
    _train(model, opt, batches[:4])
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    resumed = _model(torch)
    resumed.load_state_dict(saved["model"])
    resumed_opt = cls(resumed.parameters(), lr=0.5, ns_dtype=None)  # lr: from the state dict
    resumed_opt.load_state_dict(saved["opt"])
    _train(resumed, resumed_opt, batches[4:])
    assert all(torch.equal(a, b.detach()) for a, b in zip(straight, resumed.parameters(),
                                                          strict=True))


@pytest.mark.parametrize("name", ["AdaMuon", "NorMuon"])
def test_torch_classes_skip_a_nonfinite_step(torch, name):
    cls, _ = _classes()[name]
    model = _model(torch)
    opt = cls(model.parameters(), lr=1e-3, weight_decay=0.1, ns_dtype=None)
    _train(model, opt, _batches(torch, 2))
    before = [p.detach().clone() for p in model.parameters()]
    state = {(id(p), k): v.clone() for p, s in opt.state.items() for k, v in s.items()}
    opt.zero_grad()
    ((model(_batches(torch, 1)[0][0]) - 1.0) ** 2).mean().backward()
    next(model.parameters()).grad[0, 0] = float("nan")
    opt.step()
    assert all(torch.equal(a, b.detach()) for a, b in zip(before, model.parameters(),
                                                          strict=True))
    after = {(id(p), k): v for p, s in opt.state.items() for k, v in s.items()}
    assert state.keys() == after.keys()
    assert all(torch.equal(state[k], after[k]) for k in state)


def test_torch_classes_reject_bad_arguments_and_sharded_column_statistics(torch, monkeypatch):
    from matsign.optim import _torch_distributed
    from matsign.optim.torch import AdaMuon, NorMuon

    w = torch.nn.Parameter(torch.ones(3, 4))
    for cls, kwargs, message in [(AdaMuon, {"momentum": 1.0}, "momentum"),
                                 (AdaMuon, {"rms": -1.0}, "rms"),
                                 (NorMuon, {"beta2": 1.5}, "beta2"),
                                 (NorMuon, {"neurons": "heads"}, "neurons"),
                                 (NorMuon, {"adjust_lr_fn": "x"}, "Adjust"),
                                 (NorMuon, {"lr": -1.0}, "Learning")]:
        with pytest.raises(ValueError, match=message):
            cls([w], **kwargs)
    with pytest.raises(ValueError, match="matrices"):
        NorMuon([torch.nn.Parameter(torch.ones(3))])
    opt = NorMuon([w], neurons="columns", ns_dtype=None)
    w.grad = torch.ones(3, 4)
    monkeypatch.setattr(_torch_distributed, "placement",
                        lambda p, group=None: _torch_distributed.Placement(None, True))
    with pytest.raises(ValueError, match=r"shape \(3, 4\) sharded by rows"):
        opt.step()


# --- two gloo ranks: replicated (DDP) and sharded (FSDP2) against the single process ------------

MATRICES = [(16, 12)] * 3 + [(12, 16)] * 2 + [(7, 10), (5, 6), (6, 2, 3, 3)]
TIMEOUT = 240.0


def _dist_optimizer(name, params, **extra):
    from matsign.optim import torch as mt

    if name == "AdaMuon":
        return mt.AdaMuon(params, lr=1e-3, weight_decay=0.01, ns_dtype=None, **extra)
    return mt.NorMuon(params, lr=0.02, weight_decay=0.01, ns_dtype=None, **extra)


def _dist_run(name, layout, steps=6):
    import torch
    import torch.distributed as dist

    g = torch.Generator().manual_seed(0)
    initial = [torch.randn(s, generator=g) for s in MATRICES]
    if layout == "single":
        params = [torch.nn.Parameter(w) for w in initial]
        opt = _dist_optimizer(name, params)
    elif layout == "replicated":
        params = [torch.nn.Parameter(w) for w in initial]
        opt = _dist_optimizer(name, params, process_group=dist.group.WORLD)
    else:
        from torch.distributed.fsdp import fully_shard

        model = torch.nn.Module()
        model.weights = torch.nn.ParameterList([torch.nn.Parameter(w) for w in initial])
        fully_shard(model)
        params = list(model.weights)
        opt = _dist_optimizer(name, params)
    for step in range(steps):
        grads = [torch.randn(s, generator=torch.Generator().manual_seed(100 + step))
                 for s in MATRICES]
        for p, grad in zip(params, grads, strict=True):
            if layout == "sharded":
                from torch.distributed.tensor import distribute_tensor

                grad = distribute_tensor(grad, p.device_mesh, p.placements)
            p.grad = grad
        opt.step()
    return [(p.full_tensor() if hasattr(p, "full_tensor") else p).detach() for p in params]


def _dist_worker(rank, world, port, folder):
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    results = {}
    try:
        for name in ("AdaMuon", "NorMuon"):
            want = _dist_run(name, "single")
            for layout in ("replicated", "sharded"):
                try:
                    got = _dist_run(name, layout)
                    pairs = zip(got, want, strict=True)
                    results[f"{name}/{layout}"] = max(
                        float((a - b).abs().max() / b.abs().max()) for a, b in pairs)
                except Exception:  # noqa: BLE001  (reported by the test)
                    results[f"{name}/{layout}"] = traceback.format_exc()
                    dist.barrier()
    finally:
        with open(os.path.join(folder, f"rank{rank}.json"), "w") as f:
            json.dump(results, f)
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks():
    pytest.importorskip("torch")
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = tempfile.mkdtemp(prefix="matsign-adamuon-")
    context = mp.start_processes(_dist_worker, args=(2, port, folder), nprocs=2, join=False,
                                 start_method="spawn")
    start = time.monotonic()
    while not context.join(timeout=max(0.0, TIMEOUT - (time.monotonic() - start))):
        if time.monotonic() - start >= TIMEOUT:
            for process in context.processes:
                process.kill()
            pytest.fail(f"2 processes did not finish within {TIMEOUT:.0f} s")
    ranks = []
    for rank in range(2):
        with open(os.path.join(folder, f"rank{rank}.json")) as f:
            ranks.append(json.load(f))
    return ranks


@pytest.mark.parametrize("layout", ["replicated", "sharded"])
@pytest.mark.parametrize("name", ["AdaMuon", "NorMuon"])
def test_distributed_steps_match_the_single_process_run(two_ranks, name, layout):
    for rank in two_ranks:
        found = rank[f"{name}/{layout}"]
        assert not isinstance(found, str), found
        assert found <= 1e-5  # float32, whole-matrix statistics on every transport
