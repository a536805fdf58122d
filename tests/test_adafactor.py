"""Adafactor against its oracles: torch.optim.Adafactor, optax.adafactor, and a float64 NumPy
transcription of Shazeer and Stern's algorithm written here (every backend)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from matsign import optim
from matsign.optim.adafactor import factored_axes
from matsign.testing import assert_close

STEPS = 50
SHAPES = [(5, 7), (7,), (2, 3, 4), ()]  # matrix, vector, stack over the last two axes, scalar


def _rng(seed=0):
    return np.random.default_rng(seed)


def _rms(x):
    return np.sqrt(np.mean(x * x))


def _paper_adafactor(X, grads, *, lr=1e-2, relative_step=True, eps1=1e-30, eps2=1e-3, d=1.0,
                     decay_rate=0.8, b1=None, weight_decay=0.0, clamp=False):
    """Shazeer and Stern's Algorithms 4 (matrices, here over the last two axes) and 5
    (vectors), float64: row and column *sums* R, C of G^2 + eps1, V = R C / (1^T R),
    U = G / sqrt(V), clipped by max(1, RMS(U) / d), stepped by max(eps2, RMS(X)) rho_t,
    rho_t = min(lr, 1/sqrt(t)). ``b1``: tensor2tensor's momentum over those steps;
    ``weight_decay``: torch's ``X <- X - lr wd X``. ``clamp``: torch's placement of eps1
    (the normaliser clamped at eps1 per entry, V at eps1^2) instead of adding it."""
    X = np.array(X, dtype=np.float64)
    factored = X.ndim >= 2
    R = C = V = M = 0.0
    for t, G in enumerate(grads, start=1):
        G = np.asarray(G, dtype=np.float64)
        beta2 = 1.0 - t ** -decay_rate
        squared = G * G + (0.0 if clamp else eps1)
        if factored:
            rows, cols = G.shape[-2:]
            R = beta2 * R + (1 - beta2) * squared.sum(axis=-1, keepdims=True)
            C = beta2 * C + (1 - beta2) * squared.sum(axis=-2, keepdims=True)
            total = R.sum(axis=-2, keepdims=True)
            if clamp:
                total = np.maximum(total, eps1 * rows * cols)
            estimate = R * C / total
        else:
            V = beta2 * V + (1 - beta2) * squared
            estimate = V
        if clamp:
            estimate = np.maximum(estimate, eps1 * eps1)
        U = G / np.sqrt(estimate)
        U = U / max(1.0, _rms(U) / d)
        rho = min(lr, 1 / np.sqrt(t)) if relative_step else lr
        step = max(eps2, _rms(X)) * rho * U
        if b1 is not None:
            M = b1 * M + (1 - b1) * step
            step = M
        X = X - step - lr * weight_decay * X
    return X


CONFIGS = {
    "paper": ({"eps_mode": "add", "eps": 1e-30}, {}),
    "torch-eps": ({"eps": 1e-6}, {"eps1": 1e-6, "clamp": True}),
    "momentum-decay": ({"eps_mode": "add", "eps": 1e-30, "b1": 0.9, "weight_decay": 0.1,
                        "learning_rate": 0.05, "clipping_threshold": 0.5},
                       {"b1": 0.9, "weight_decay": 0.1, "lr": 0.05, "d": 0.5}),
    "absolute-step": ({"eps_mode": "add", "eps": 1e-30, "relative_step": False,
                       "learning_rate": 3e-3, "decay_rate": 0.5, "min_scale": 0.1},
                      {"relative_step": False, "lr": 3e-3, "decay_rate": 0.5, "eps2": 0.1}),
}


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_stepper_follows_the_paper_transcription(backend, config, shape):
    options, reference = CONFIGS[config]
    dtype = "float64" if "float64" in backend.dtypes else "float32"
    rng = _rng(len(shape))
    X0 = 0.3 * rng.standard_normal(shape)
    grads = rng.standard_normal((20, *shape))
    expected = _paper_adafactor(X0, grads, **reference)
    opt = optim.adafactor(**options)
    W = backend.asarray(X0, dtype)
    state = opt.init(W)
    for g in grads:
        u, state = opt.update(backend.asarray(g, dtype), state, W)
        W = optim.apply_updates(W, u)
    eps = np.finfo(np.float64 if dtype == "float64" else np.float32).eps
    assert_close(W, expected, rtol=1e3 * eps, atol=1e3 * eps, xp=backend.xp,
                 dtype=backend.dtypes[dtype], device=backend.device)
    assert not np.allclose(expected, X0, rtol=1e-2)  # the steps moved the parameter


def test_state_is_factored_over_the_last_two_axes():
    opt = optim.scale_by_adafactor()
    assert opt.init(np.zeros((2, 3, 4)))._fields == ("step", "row_var", "col_var")
    state = opt.init(np.zeros((2, 3, 4)))
    assert state.row_var.shape == (2, 3, 1) and state.col_var.shape == (2, 1, 4)
    assert opt.init(np.zeros(4))._fields == ("step", "variance")
    assert optim.scale_by_adafactor(factored=False).init(np.zeros((3, 4))).variance.shape == (3, 4)


@pytest.mark.parametrize(("shape", "options", "expected"), [
    ((3, 4), {}, (0, 1)),
    ((2, 3, 4), {}, (1, 2)),
    ((1, 5), {}, (0, 1)),                                        # torch factors any matrix
    ((5,), {}, None),
    ((3, 4), {"factored": False}, None),
    ((3, 3, 130, 140), {"factor_axes": "largest"}, (2, 3)),
    ((140, 3, 130), {"factor_axes": "largest"}, (2, 0)),
    ((128, 128), {"factor_axes": "largest"}, (0, 1)),             # ties: the earlier first
    ((3, 3, 64, 140), {"factor_axes": "largest", "min_dim_size_to_factor": 128}, None),
    ((256, 127), {"min_dim_size_to_factor": 128}, None),
])
def test_factored_axes(shape, options, expected):
    assert factored_axes(shape, **options) == expected


def test_stepper_does_not_stack_same_shape_parameters():
    """The RMS of the update and of the parameter are per parameter: no stacks."""
    params = {"a": np.ones((3, 4)), "b": 2 * np.ones((3, 4))}
    state = optim.multi(optim.adafactor()).init(params)
    assert [keys for _, keys in state.groups] == [("a",), ("b",)]


def test_zero_learning_rate_leaves_parameters_and_gives_no_nan():
    opt = optim.adafactor(0.0, weight_decay=0.1)
    W = np.ones((3, 4))
    u, _ = opt.update(np.ones((3, 4)), opt.init(W), W)
    assert np.array_equal(u, np.zeros_like(u))


def test_parameter_scale_needs_params_and_bad_options_are_named():
    opt = optim.adafactor()
    with pytest.raises(ValueError, match="reads the parameters"):
        opt.update(np.ones(3), opt.init(np.ones(3)), None)
    u, _ = optim.scale_by_adafactor(multiply_by_parameter_scale=False).update(
        np.ones(3), opt.init(np.ones(3))[0], None)
    np.testing.assert_allclose(u, np.ones(3))
    for options, word in [({"eps_mode": "sum"}, "eps_mode"), ({"factor_axes": "first"},
                          "factor_axes"), ({"decay_rate": -0.8}, "decay_rate"),
                          ({"clipping_threshold": 0.0}, "clipping_threshold"),
                          ({"eps": -1.0}, "eps")]:
        with pytest.raises(ValueError, match=word):
            optim.scale_by_adafactor(**options)


# --- jax.jit and optax ------------------------------------------------------------------------


JIT_CONFIGS = {
    "torch-defaults": {},
    "optax-momentum": {"learning_rate": lambda t: 0.1 / (1.0 + t), "relative_step": False,
                       "eps_mode": "add", "b1": 0.9, "weight_decay": 0.01,
                       "factor_axes": "largest", "min_dim_size_to_factor": 3},
}


@pytest.mark.parametrize("config", JIT_CONFIGS)
@pytest.mark.parametrize("shape", [(6, 4), (4,), (2, 3, 4)], ids=str)
def test_jitted_steps_equal_the_eager_numpy_float64_steps(config, shape):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    opt = optim.adafactor(**JIT_CONFIGS[config])
    rng = _rng(3)
    w_np = rng.standard_normal(shape)
    w_jx = jnp.asarray(w_np)
    s_np, s_jx = opt.init(w_np), opt.init(w_jx)
    step = jax.jit(opt.update)
    for g in rng.standard_normal((3, *shape)):
        u_np, s_np = opt.update(g, s_np, w_np)
        u_jx, s_jx = step(jnp.asarray(g), s_jx, w_jx)
        w_np, w_jx = w_np + u_np, w_jx + u_jx
    assert w_jx.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(w_jx), w_np, rtol=1e-12, atol=1e-14)


def _optax_params():
    """A factored matrix (both axes >= 128), a tall one, a square one, one too small to
    factor, a conv kernel in flax's layout (factored over its two largest axes) and a vector."""
    rng = _rng(7)
    shapes = {"dense": (256, 160), "tall": (300, 129), "square": (128, 128), "small": (64, 32),
              "conv": (3, 3, 130, 140), "bias": (160,)}
    return {k: (0.05 * rng.standard_normal(s)).astype(np.float32) for k, s in shapes.items()}


def _optax_run(opt, params, grads):
    import jax
    import optax

    state = opt.init(params)
    step = jax.jit(opt.update)
    for g in grads:
        updates, state = step(g, state, params)
        params = optax.apply_updates(params, updates)
    return params


OPTAX_CONFIGS = {
    "lr": {"learning_rate": 1e-2},
    "defaults": {},  # no learning rate: the parameter scale alone sets the step
    "schedule-momentum-decay": {"learning_rate": lambda count: 1e-2 / (1.0 + count),
                                "momentum": 0.9, "weight_decay_rate": 1e-3},
    "unfactored-unclipped": {"learning_rate": 3e-3, "factored": False,
                             "clipping_threshold": None, "multiply_by_parameter_scale": False},
}


@pytest.mark.parametrize("config", OPTAX_CONFIGS)
def test_optax_adafactor_follows_optax(config):
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    import jax.numpy as jnp

    from matsign.optim import optax as mo

    params = jax.tree.map(jnp.asarray, _optax_params())
    rng = _rng(8)
    grads = [jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32),
                          params) for _ in range(STEPS)]
    options = OPTAX_CONFIGS[config]
    expected = _optax_run(optax.adafactor(**options), params, grads)
    got = _optax_run(mo.adafactor(**options), params, grads)
    for key, value in expected.items():
        assert got[key].dtype == jnp.float32 and got[key].shape == value.shape
        moved = float(jnp.linalg.norm(value - params[key]) / jnp.linalg.norm(params[key]))
        assert moved > 1e-3, key
        error = float(jnp.linalg.norm(got[key] - value) / jnp.linalg.norm(value))
        assert error <= 1e-5, (key, error)


def test_optax_configuration_of_the_functional_adafactor_follows_optax():
    """optim.adafactor with the options the docs map to optax.adafactor's, through as_optax;
    optax's absolute decay rate r is weight_decay=r/lr at a constant learning rate."""
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    import jax.numpy as jnp

    from matsign.optim.optax import as_optax

    params = jax.tree.map(jnp.asarray, _optax_params())
    rng = _rng(9)
    grads = [jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32),
                          params) for _ in range(STEPS)]
    lr, rate = 1e-2, 1e-3
    expected = _optax_run(optax.adafactor(lr, momentum=0.9, weight_decay_rate=rate),
                          params, grads)
    mine = optim.adafactor(lr, relative_step=False, eps_mode="add", eps=1e-30, b1=0.9,
                           factor_axes="largest", min_dim_size_to_factor=128,
                           weight_decay=rate / lr)
    got = _optax_run(as_optax(mine, reshape="batch"), params, grads)
    for key, value in expected.items():
        error = float(jnp.linalg.norm(got[key] - value) / jnp.linalg.norm(value))
        assert error <= 1e-5, (key, error)


def test_optax_weight_decay_mask_decays_only_the_masked_parameters():
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    import jax.numpy as jnp

    from matsign.optim import optax as mo

    params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
    grads = jax.tree.map(jnp.zeros_like, params)
    mask = {"w": True, "b": False}
    peer = optax.adafactor(1e-2, weight_decay_rate=0.5, weight_decay_mask=mask)
    expected, _ = peer.update(grads, peer.init(params), params)
    for opt in (mo.adafactor(1e-2, weight_decay_rate=0.5, weight_decay_mask=mask),
                mo.adafactor(1e-2, weight_decay_rate=0.5,
                             weight_decay_mask=lambda p: jax.tree.map(lambda x: x.ndim == 2, p))):
        updates, _ = opt.update(grads, opt.init(params), params)
        np.testing.assert_allclose(np.asarray(updates["w"]), -0.5)
        np.testing.assert_allclose(np.asarray(updates["b"]), 0.0)
        for key in params:
            np.testing.assert_allclose(np.asarray(updates[key]), np.asarray(expected[key]))


# --- matsign.optim.torch.Adafactor against torch.optim.Adafactor -------------------------------


@pytest.fixture
def torch():
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors on shared cores
    yield torch
    torch.set_num_threads(threads)


def _model(torch, conv=False):
    torch.manual_seed(0)
    if conv:  # kernels (out, in, 3, 3): torch factors their last two axes
        return torch.nn.Sequential(torch.nn.Conv2d(2, 6, 3), torch.nn.Tanh(),
                                   torch.nn.Conv2d(6, 4, 3), torch.nn.Flatten(),
                                   torch.nn.Linear(4 * 4 * 4, 3))
    return torch.nn.Sequential(torch.nn.Linear(12, 24), torch.nn.Tanh(),
                               torch.nn.Linear(24, 24), torch.nn.Tanh(),
                               torch.nn.Linear(24, 8))


def _batches(torch, steps, conv=False, seed=1):
    g = torch.Generator().manual_seed(seed)
    x_shape, y_shape = ((16, 2, 8, 8), (16, 3)) if conv else ((32, 12), (32, 8))
    return [(torch.randn(x_shape, generator=g), torch.randn(y_shape, generator=g))
            for _ in range(steps)]


def _train(model, opt, batches, scheduler=None):
    for x, y in batches:
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
    return model.parameters()


def _flat(torch, params):
    return torch.cat([p.detach().ravel() for p in params])


def _relative(torch, got, expected):
    got, expected = _flat(torch, got), _flat(torch, expected)
    return float((got - expected).norm() / expected.norm())


TORCH_CONFIGS = [
    {},
    {"lr": 0.05, "weight_decay": 0.1},
    {"lr": 0.3, "d": 2.0, "beta2_decay": -0.5, "eps": (1e-6, 1e-2)},
    {"lr": 1e-3, "maximize": True},
]


@pytest.mark.parametrize("conv", [False, True], ids=["linear", "conv"])
@pytest.mark.parametrize("kwargs", TORCH_CONFIGS, ids=str)
def test_torch_class_reproduces_torch_optim_adafactor(torch, kwargs, conv):
    from matsign.optim.torch import Adafactor

    batches = _batches(torch, STEPS, conv)
    start = _flat(torch, _model(torch, conv).parameters())
    peer = _model(torch, conv)
    expected = _train(peer, torch.optim.Adafactor(peer.parameters(), foreach=False, **kwargs),
                      batches)
    mine = _model(torch, conv)
    got = _train(mine, Adafactor(mine.parameters(), **kwargs), batches)
    expected = list(expected)
    assert float((_flat(torch, expected) - start).norm() / start.norm()) > 1e-3
    assert _relative(torch, got, expected) <= 1e-5


def test_torch_class_follows_a_scheduler_and_param_groups_like_torch(torch):
    from matsign.optim.torch import Adafactor

    batches = _batches(torch, 12)
    results = []
    for cls in (torch.optim.Adafactor, Adafactor):
        model = _model(torch)
        layers = [m for m in model if isinstance(m, torch.nn.Linear)]
        opt = cls([{"params": layers[0].parameters(), "lr": 0.2, "weight_decay": 0.1},
                   {"params": [p for m in layers[1:] for p in m.parameters()]}], lr=0.05)
        scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.3)
        results.append(list(_train(model, opt, batches, scheduler)))
    assert _relative(torch, results[1], results[0]) <= 1e-5


def test_torch_class_loads_torch_optim_adafactor_state_and_resumes(torch):
    from matsign.optim.torch import Adafactor

    batches = _batches(torch, 10)
    model = _model(torch)
    peer = torch.optim.Adafactor(model.parameters(), lr=0.05)
    straight = list(_train(model, peer, batches))
    model = _model(torch)
    peer = torch.optim.Adafactor(model.parameters(), lr=0.05)
    _train(model, peer, batches[:5])
    mine = Adafactor(model.parameters())
    mine.load_state_dict(peer.state_dict())
    assert mine.param_groups[0]["lr"] == 0.05
    assert _relative(torch, _train(model, mine, batches[5:]), straight) <= 1e-6


def test_torch_class_state_dict_round_trip_resumes_bit_for_bit(torch):
    from matsign.optim.torch import Adafactor

    batches = _batches(torch, 8)
    model = _model(torch)
    straight = _flat(torch, _train(model, Adafactor(model.parameters(), weight_decay=0.1),
                                   batches))
    model = _model(torch)
    opt = Adafactor(model.parameters(), weight_decay=0.1)
    _train(model, opt, batches[:4])
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    resumed = _model(torch)
    resumed.load_state_dict(saved["model"])
    resumed_opt = Adafactor(resumed.parameters(), lr=0.5)  # lr comes back from the state dict
    resumed_opt.load_state_dict(saved["opt"])
    assert torch.equal(_flat(torch, _train(resumed, resumed_opt, batches[4:])), straight)


def test_torch_class_skips_a_nonfinite_step(torch):
    from matsign.optim.torch import Adafactor

    model = _model(torch)
    opt = Adafactor(model.parameters(), weight_decay=0.1)
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


def test_torch_class_rejects_bad_arguments_and_sharded_parameters(torch, monkeypatch):
    from matsign.optim import _torch_distributed
    from matsign.optim.torch import Adafactor

    w = torch.nn.Parameter(torch.ones(3, 4))
    for kwargs, message in [({"beta2_decay": 0.8}, "beta2_decay"), ({"d": 0.5}, "Clipping"),
                            ({"eps": (-1.0, 1e-3)}, "epsilon1"), ({"lr": -1.0}, "Learning"),
                            ({"nonfinite": "maybe"}, "nonfinite")]:
        with pytest.raises(ValueError, match=message):
            Adafactor([w], **kwargs)
    opt = Adafactor([w])
    w.grad = torch.ones(3, 4)
    monkeypatch.setattr(_torch_distributed, "placement",
                        lambda p, group=None: _torch_distributed.Placement(None, True))
    with pytest.raises(ValueError, match=r"shape \(3, 4\) is sharded"):
        opt.step()


def test_torch_class_in_bfloat16_stays_within_its_rounding_of_torch(torch):
    """bfloat16 parameters: moments in bfloat16 as torch's, scalars in float32 (torch:
    float64 on the host); 10 steps apart by a few bfloat16 roundings at most."""
    from matsign.optim.torch import Adafactor

    batches = _batches(torch, 10)
    results = []
    for cls in (torch.optim.Adafactor, Adafactor):
        model = _model(torch).to(torch.bfloat16)
        opt = cls(model.parameters(), lr=0.05)
        for x, y in batches:
            opt.zero_grad()
            ((model(x.bfloat16()) - y.bfloat16()).float() ** 2).mean().backward()
            opt.step()
        results.append(list(model.parameters()))
    assert all(p.dtype == torch.bfloat16 for p in results[1])
    assert {k: v.dtype for k, v in opt.state[results[1][0]].items()} == {
        "step": torch.float32, "row_var": torch.bfloat16, "col_var": torch.bfloat16}
    error = _relative(torch, [p.float() for p in results[1]], [p.float() for p in results[0]])
    assert error <= 2 * torch.finfo(torch.bfloat16).eps
