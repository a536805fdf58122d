"""`matsign.optim.optax` against optax's own transformations and float64 loops written here.

Oracles: `optax.contrib.muon` (bias-corrected Nesterov, Jordan's quintic, its width and
``consistent_rms`` scales), `optax.adamw`, `optax.adam`, `optax.lion`, and `MuonReference`,
Muon's formulas in float64 NumPy (checked against `optax.contrib.muon` below). Parameters
are compared by `relative_error`: the largest entry-wise difference of a leaf over the
largest entry of the oracle's leaf, the worst leaf.

Float64 tests enter ``jax.enable_x64(True)`` themselves (another module turns it on for the
whole session; it is never turned off here); float32 tests make float32 arrays explicitly.
The 4-device test runs in a subprocess: the host device count is fixed before jax starts.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
import jax.numpy as jnp  # noqa: E402
from optax.contrib import MuonDimensionNumbers  # noqa: E402

from matsign import optim  # noqa: E402
from matsign.optim import optax as mo  # noqa: E402

# Trees of bare matrices have no output head: matsign.optim.route warns that the last
# matrix goes to Muon, which is what optax.contrib.muon does with every matrix here.
pytestmark = pytest.mark.filterwarnings("ignore:route. no output head:UserWarning")

JORDAN = (3.4445, -4.7750, 2.0315)
MOMENTUM = 0.95
TOL = {np.float64: 1e-6, np.float32: 1e-5}  # relative_error of a 50-step trajectory
# (fan_in, fan_out): tall, wide, square, and a same-shape pair that is stacked
MATRICES = {"tall": (24, 8), "wide": (8, 24), "square": (16, 16), "pair_a": (12, 20),
            "pair_b": (12, 20)}


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


# --- Oracles and helpers --------------------------------------------------------------------


def newton_schulz_reference(X):
    """Jordan's quintic for 5 steps on the last two axes, after Frobenius normalisation."""
    X = np.asarray(X, np.float64)
    X = X / np.linalg.norm(X, axis=(-2, -1), keepdims=True)
    tall = X.shape[-2] > X.shape[-1]
    X = np.swapaxes(X, -1, -2) if tall else X  # iterate on the small Gram side
    a, b, c = JORDAN
    for _ in range(5):
        A = X @ np.swapaxes(X, -1, -2)
        X = a * X + (b * A + c * A @ A) @ X
    return np.swapaxes(X, -1, -2) if tall else X


class MuonReference:
    """Muon on one float64 array ``(..., fan_in, fan_out)``, written from its definition.

    ``buf <- mu buf + (1 - mu) g``; the look-ahead is ``mu buf + (1 - mu) g`` or, with
    ``bias_correction``, ``mu buf / (1 - mu^(t+1)) + (1 - mu) g / (1 - mu^t)`` (optax);
    ``W <- W - lr (s NS(look) + wd W)`` with ``s = sqrt(max(1, fan_out / fan_in))``
    (``"jordan"``) or ``c sqrt(max(fan_in, fan_out))`` (a float ``c``).
    """

    def __init__(self, lr, *, weight_decay=0.0, update_scale="jordan", bias_correction=True):
        self.lr, self.wd, self.scale = lr, weight_decay, update_scale
        self.bias_correction = bias_correction
        self.buf, self.t = 0.0, 0

    def step(self, W, g):
        mu, self.t = MOMENTUM, self.t + 1
        self.buf = mu * self.buf + (1 - mu) * g
        if self.bias_correction:
            look = mu * self.buf / (1 - mu ** (self.t + 1)) + (1 - mu) * g / (1 - mu**self.t)
        else:
            look = mu * self.buf + (1 - mu) * g
        fan_in, fan_out = W.shape[-2:]
        if self.scale == "jordan":
            s = np.sqrt(max(1.0, fan_out / fan_in))
        else:
            s = self.scale * np.sqrt(max(fan_in, fan_out))
        return W - self.lr * (s * newton_schulz_reference(look) + self.wd * W)


class OptaxLeaf:
    """An optax transformation stepping one array alone, as `MuonReference` does."""

    def __init__(self, tx):
        self.tx, self.update, self.state = tx, jax.jit(tx.update), None

    def step(self, W, g):
        W, g = {"x": jnp.asarray(W)}, {"x": jnp.asarray(g)}
        self.state = self.tx.init(W) if self.state is None else self.state
        u, self.state = self.update(g, self.state, W)
        return np.asarray(optax.apply_updates(W, u)["x"], np.float64)


def optax_muon(lr, *, weight_decay=0.0, consistent_rms=None, dims=None):
    """`optax.contrib.muon` with Jordan's coefficients; ``dims``: for a leaf ``"x"``."""
    return optax.contrib.muon(
        lr, ns_coeffs=JORDAN, ns_steps=5, beta=MOMENTUM, eps=1e-8, weight_decay=weight_decay,
        nesterov=True, consistent_rms=consistent_rms,
        muon_weight_dimension_numbers=None if dims is None else {"x": dims})


def relative_error(actual, expected):
    """Worst leaf's ``max |actual - expected| / max |expected|``."""
    pairs = zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True)
    return max(float(np.max(np.abs(np.asarray(a, np.float64) - e)) / np.max(np.abs(e)))
               for a, e in pairs)


def as_numpy(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def random_tree(shapes, seed, scale=1.0):
    """A pytree of Gaussian float64 arrays with the structure of ``shapes`` (tuples)."""
    rng = np.random.default_rng(seed)

    def is_shape(s):
        return isinstance(s, tuple) and all(isinstance(d, int) for d in s)

    return jax.tree.map(lambda s: scale * rng.standard_normal(s), shapes, is_leaf=is_shape)


def least_squares(shapes, seed=1):
    """The gradient of ``sum 0.5 |X W - Y|^2 / 32`` per matrix, ``0.5 d (b - t)^2`` per vector."""
    rng = np.random.default_rng(seed)
    data = {k: (rng.standard_normal((32, s[0])), rng.standard_normal((32, s[-1])))
            for k, s in shapes.items()}

    def grad(params):
        out = {}
        for k, W in params.items():
            X, Y = (jnp.asarray(a, W.dtype) for a in data[k])
            out[k] = X.T @ (X @ W - Y) / 32 if W.ndim == 2 else X[0] ** 2 * (W - Y[0])
        return out

    return grad


def trajectory(tx, params, grad, steps=50):
    """Parameters after ``steps`` jitted steps of ``tx`` on ``grad(params)``."""

    @jax.jit
    def step(params, state):
        updates, state = tx.update(grad(params), state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for _ in range(steps):
        params, state = step(params, state)
    return as_numpy(params)


def initial(shapes, dtype, seed=0):
    """Parameters ``N(0, 1 / fan_in)`` in ``dtype`` as jax arrays."""
    rng = np.random.default_rng(seed)
    return {k: jnp.asarray((rng.standard_normal(s) / np.sqrt(s[0])).astype(dtype))
            for k, s in shapes.items()}


# --- The oracle itself ----------------------------------------------------------------------


def test_reference_muon_is_optax_contrib_muon(x64):
    """`MuonReference` agrees with optax.contrib.muon (to its ``+ 1e-8`` in the norm)."""
    W, G = random_tree(((12, 20), [(12, 20)] * 3), seed=4)
    ours, theirs = MuonReference(0.02, weight_decay=0.1), OptaxLeaf(optax_muon(0.02,
                                                                               weight_decay=0.1))
    A = B = W
    for g in G:
        A, B = ours.step(A, g), theirs.step(B, g)
    assert relative_error(A, B) < 1e-7


# --- a. Muon: 50 steps against optax.contrib.muon -------------------------------------------


@pytest.mark.parametrize(("update_scale", "consistent_rms"), [("jordan", None), (0.2, 0.2)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_muon_trajectory_matches_optax_contrib_muon(x64, dtype, update_scale, consistent_rms):
    """matsign in ``dtype`` against optax in float64, fed the gradients of a least-squares loss.

    optax divides by ``||x||_F + 1e-8``, matsign by ``max(||x||_F, eps)``: the same at these
    scales (the gradients' norms are of order one).
    """
    ours = mo.muon(0.02, momentum=MOMENTUM, nesterov=True, bias_correction=True,
                   weight_decay=0.1, update_scale=update_scale)
    got = trajectory(ours, initial(MATRICES, dtype), least_squares(MATRICES))
    want = optax_muon_trajectory(consistent_rms)
    assert relative_error(initial(MATRICES, np.float64), want) > 0.5  # the weights did move
    assert relative_error(got, want) < TOL[dtype]


@functools.cache
def optax_muon_trajectory(consistent_rms):
    """The oracle of the test above, in float64 (shared by its float32 and float64 cases)."""
    with jax.enable_x64(True):
        theirs = optax_muon(0.02, weight_decay=0.1, consistent_rms=consistent_rms)
        return trajectory(theirs, initial(MATRICES, np.float64), least_squares(MATRICES))


@pytest.mark.parametrize(("update_scale", "factor"), [
    ("moonlight", 0.2), ("none", None), ("jordan", "jordan"), (0.5, 0.5)])
@pytest.mark.parametrize("shape", [(24, 8), (8, 24)])
def test_muon_update_scales(x64, update_scale, factor, shape):
    """``"moonlight"`` is ``0.2 sqrt(max(fan_in, fan_out))``, ``"none"`` is 1."""
    factor = 1.0 / np.sqrt(max(shape)) if factor is None else factor  # "none": c sqrt(max) = 1
    W, grads = random_tree((shape, [shape] * 3), seed=5)
    ours = mo.muon(0.02, weight_decay=0.1, update_scale=update_scale)
    theirs = MuonReference(0.02, weight_decay=0.1, update_scale=factor, bias_correction=False)
    params, want = {"x": jnp.asarray(W)}, W
    state = ours.init(params)
    for g in grads:
        u, state = ours.update({"x": jnp.asarray(g)}, state, params)
        params, want = optax.apply_updates(params, u), theirs.step(want, g)
    assert relative_error(params["x"], want) < 1e-9


@pytest.mark.parametrize(("orientation", "shape", "dims"), [
    # a flax conv kernel (kh, kw, in, out) is the matrix (kh kw in, out)
    ("in_out", (3, 3, 4, 8), MuonDimensionNumbers((0, 1, 2), 3)),
    # torch: a Linear weight is (out, in), a conv kernel (out, in, kh, kw)
    ("out_in", (24, 8), MuonDimensionNumbers(1, 0)),
    ("out_in", (8, 24), MuonDimensionNumbers(1, 0)),
    ("out_in", (8, 4, 3, 3), MuonDimensionNumbers((1, 2, 3), 0)),
])
def test_muon_layout_and_flattening_match_optax_dimension_numbers(x64, orientation, shape, dims):
    grads = random_tree([shape] * 5, seed=2)
    W = random_tree(shape, seed=3)
    ours = mo.muon(0.02, bias_correction=True, weight_decay=0.1, orientation=orientation)
    theirs = OptaxLeaf(optax_muon(0.02, weight_decay=0.1, dims=dims))
    params, want = {"x": jnp.asarray(W)}, W
    state = ours.init(params)
    for g in grads:
        u, state = ours.update({"x": jnp.asarray(g)}, state, params)
        params = optax.apply_updates(params, u)
        want = theirs.step(want, g)
    assert relative_error(params["x"], want) < 1e-6


# --- b. AdamW and Lion: 50 steps against optax ----------------------------------------------


ELEMENTWISE = {"w": (12, 20), "tall": (24, 8), "bias": (20,), "scale": (8,)}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_adamw_trajectory_matches_optax_adamw(x64, dtype):
    grad = least_squares(ELEMENTWISE)
    ours = mo.adamw(3e-3, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.05)
    theirs = optax.adamw(3e-3, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.05)
    got = trajectory(ours, initial(ELEMENTWISE, dtype), grad)
    want = trajectory(theirs, initial(ELEMENTWISE, np.float64), grad)
    assert relative_error(initial(ELEMENTWISE, np.float64), want) > 0.05
    assert relative_error(got, want) < TOL[dtype]


def test_lion_trajectory_matches_optax_lion(x64):
    grad = least_squares(ELEMENTWISE)
    ours = mo.lion(1e-3, b1=0.9, b2=0.99, weight_decay=0.1)
    theirs = optax.lion(1e-3, b1=0.9, b2=0.99, weight_decay=0.1)
    got = trajectory(ours, initial(ELEMENTWISE, np.float64), grad, steps=20)
    want = trajectory(theirs, initial(ELEMENTWISE, np.float64), grad, steps=20)
    assert relative_error(got, want) < 1e-9


# --- c. Composition with optax, nested pytrees, jit -----------------------------------------


NESTED = {"block": {"w": (8, 16), "b": (16,)}, "experts": (4, 8, 12), "head": [(16, 8)]}
EXPERTS = MuonDimensionNumbers(reduction_axis=1, output_axis=2)  # per slice (fan_in, fan_out)


def run_jitted(tx, params, grads):
    """Parameters after one jitted step of ``tx`` per gradient; the step traces once."""
    traces = []

    @jax.jit
    def step(params, state, g):
        traces.append(1)
        updates, state = tx.update(g, state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for g in grads:
        params, state = step(params, state, g)
    assert len(traces) == 1, f"the step was traced {len(traces)} times"
    assert jax.tree.structure(state) == jax.tree.structure(tx.init(params))
    return as_numpy(params)


def run_per_leaf(oracles, params, grads, *, clip=None):
    """Each leaf stepped by its own oracle (same tree as the params), after an optional clip."""
    params = as_numpy(params)
    steppers = jax.tree.leaves(oracles, is_leaf=lambda o: hasattr(o, "step"))
    for g in grads:
        if clip is not None:
            g, _ = optax.clip_by_global_norm(clip).update(g, optax.EmptyState())
        leaves, tree = jax.tree.flatten(params)
        new = [o.step(W, np.asarray(d)) for o, W, d in
               zip(steppers, leaves, jax.tree.leaves(g), strict=True)]
        params = jax.tree.unflatten(tree, new)
    return params


def nested_case(seed=0):
    params = jax.tree.map(jnp.asarray, random_tree(NESTED, seed, scale=0.3))
    grads = [jax.tree.map(jnp.asarray, random_tree(NESTED, seed + 1 + i)) for i in range(3)]
    return params, grads


def test_chain_with_clip_and_default_routing_under_jit(x64):
    """clip_by_global_norm, then Muon on block.w and the experts (per slice), AdamW on the rest.

    The default labels send the head (a matrix named like one) and the bias to ``other``.
    """
    params, grads = nested_case()
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     mo.muon(0.02, bias_correction=True, weight_decay=0.1, reshape="batch",
                             other=optim.adamw(3e-3, weight_decay=0.0)))
    oracles = {"block": {"w": OptaxLeaf(optax_muon(0.02, weight_decay=0.1)),
                         "b": OptaxLeaf(optax.adamw(3e-3, eps=1e-8, weight_decay=0.0))},
               "experts": OptaxLeaf(optax_muon(0.02, weight_decay=0.1, dims=EXPERTS)),
               "head": [OptaxLeaf(optax.adamw(3e-3, eps=1e-8, weight_decay=0.0))]}
    want = run_per_leaf(oracles, params, grads, clip=1.0)
    assert relative_error(run_jitted(tx, params, grads), want) < 1e-6


def test_muon_default_other_is_adamw_at_the_same_learning_rate(x64):
    """As optax.contrib.muon: Adam at Muon's learning rate, undecayed, on what Muon leaves."""
    params, grads = nested_case(seed=5)
    tx = mo.muon(0.02, bias_correction=True, weight_decay=0.1, reshape="batch")
    adam = optax.adamw(0.02, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0)
    oracles = {"block": {"w": OptaxLeaf(optax_muon(0.02, weight_decay=0.1)),
                         "b": OptaxLeaf(adam)},
               "experts": OptaxLeaf(optax_muon(0.02, weight_decay=0.1, dims=EXPERTS)),
               "head": [OptaxLeaf(adam)]}
    want = run_per_leaf(oracles, params, grads)
    assert relative_error(run_jitted(tx, params, grads), want) < 1e-6


def test_inside_optax_multi_transform_under_jit(x64):
    params, grads = nested_case(seed=10)
    labels = {"block": {"w": "m", "b": "a"}, "experts": "m", "head": ["m"]}
    tx = optax.multi_transform(
        {"m": mo.muon(0.02, bias_correction=True, weight_decay=0.1, reshape="batch",
                      labels=lambda p: jax.tree.map(lambda _: "muon", p)),
         "a": optax.adam(3e-3)}, labels)
    oracles = {"block": {"w": OptaxLeaf(optax_muon(0.02, weight_decay=0.1)),
                         "b": OptaxLeaf(optax.adam(3e-3))},
               "experts": OptaxLeaf(optax_muon(0.02, weight_decay=0.1, dims=EXPERTS)),
               "head": [OptaxLeaf(optax_muon(0.02, weight_decay=0.1))]}
    want = run_per_leaf(oracles, params, grads)
    assert relative_error(run_jitted(tx, params, grads), want) < 1e-6


def test_as_optax_routes_matsign_steppers_by_label_under_jit(x64):
    """matsign's own Muon (Nesterov without bias correction) and AdamW by a labels tree."""
    params, grads = nested_case(seed=20)
    labels = {"block": {"w": "muon", "b": "adamw"}, "experts": "muon", "head": ["adamw"]}
    tx = mo.as_optax({"muon": optim.muon(0.02, weight_decay=0.1),
                      "adamw": optim.adamw(3e-3, weight_decay=0.01)}, labels, reshape="batch")

    def muon():
        return MuonReference(0.02, weight_decay=0.1, bias_correction=False)

    def adamw():
        return OptaxLeaf(optax.adamw(3e-3, eps=1e-8, weight_decay=0.01))

    oracles = {"block": {"w": muon(), "b": adamw()}, "experts": muon(), "head": [adamw()]}
    want = run_per_leaf(oracles, params, grads)
    assert relative_error(run_jitted(tx, params, grads), want) < 1e-6
    # a callable gives the labels from the params, as for optax.multi_transform
    by_rank = mo.as_optax({"muon": optim.muon(0.02, weight_decay=0.1),
                           "adamw": optim.adamw(3e-3, weight_decay=0.01)},
                          lambda p: jax.tree.map(lambda a: "muon" if a.ndim > 1 else "adamw", p),
                          reshape="batch")
    oracles = {"block": {"w": muon(), "b": adamw()}, "experts": muon(), "head": [muon()]}
    want = run_per_leaf(oracles, params, grads)
    assert relative_error(run_jitted(by_rank, params, grads), want) < 1e-6


def test_pytrees_of_lists_and_tuples_keep_their_structure(x64):
    """Two (weight, bias) tuples in a list: the weights are stacked, the updates come back."""
    params = {"layers": [tuple(jnp.asarray(a) for a in random_tree(((6, 4), (4,)), seed=s))
                         for s in (70, 71)]}
    grads = jax.tree.map(jnp.asarray, random_tree(jax.tree.map(np.shape, params), seed=72))
    tx = mo.muon(0.02)
    updates, _ = tx.update(grads, tx.init(params), params)
    assert jax.tree.structure(updates) == jax.tree.structure(params)
    for (W, _), (g, _), (u, _) in zip(params["layers"], grads["layers"], updates["layers"],
                                      strict=True):
        want = MuonReference(0.02, bias_correction=False).step(np.asarray(W), np.asarray(g))
        assert relative_error(np.asarray(W) + np.asarray(u), want) < 1e-9


def test_update_without_params(x64):
    params, grads = nested_case(seed=30)
    tx = mo.muon(0.02, weight_decay=0.0, reshape="batch")
    state = tx.init(params)
    with_params, _ = tx.update(grads[0], state, params)
    without, _ = tx.update(grads[0], state)  # nothing reads the params
    assert relative_error(without, as_numpy(with_params)) == 0.0
    decayed = mo.muon(0.02, weight_decay=0.1, reshape="batch")
    with pytest.raises((ValueError, TypeError), match="params"):
        decayed.update(grads[0], decayed.init(params), None)


def test_nonfinite_gradient_is_skipped_under_jit(x64):
    params, grads = nested_case(seed=40)
    tx = mo.muon(0.02, weight_decay=0.1, reshape="batch")
    step = jax.jit(tx.update)
    _, state = step(grads[0], tx.init(params), params)
    bad = jax.tree.map(lambda g: g, grads[1])
    bad["block"]["w"] = bad["block"]["w"].at[0, 0].set(jnp.nan)
    updates, skipped = step(bad, state, params)
    assert all(not np.any(np.asarray(u)) for u in jax.tree.leaves(updates))
    for old, new in zip(jax.tree.leaves(state), jax.tree.leaves(skipped), strict=True):
        np.testing.assert_array_equal(np.asarray(new), np.asarray(old))


def _dot_generals(jaxpr):
    """Number of dot_general equations, sub-jaxprs (pjit, cond, scan bodies) included."""
    count = 0
    for eqn in jaxpr.eqns:
        count += eqn.primitive.name == "dot_general"
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else [value]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    count += _dot_generals(inner)
    return count


def test_same_shape_matrices_are_orthogonalised_in_one_batched_call(x64):
    """The matrix products of a step do not grow with the number of same-shape matrices."""

    def products(tx, k):
        params = {f"w{i}": jnp.ones((8, 12)) for i in range(k)}
        state = tx.init(params)
        return _dot_generals(jax.make_jaxpr(tx.update)(params, state, params).jaxpr)

    per_matrix = products(optax_muon(0.02), 1)
    assert products(optax_muon(0.02), 4) == 4 * per_matrix  # optax: one loop per leaf
    assert products(mo.muon(0.02), 4) == products(mo.muon(0.02), 1) > 0


# --- Shampoo and SOAP: the adapter against the functional stepper on each leaf -------------


class StepperLeaf:
    """A matsign functional stepper on one NumPy float64 (fan_in, fan_out) leaf, eagerly.

    It sees the matrix as (fan_out, fan_in), matsign's convention; Shampoo and SOAP are
    the same on the transpose, so this checks the adapter's plumbing, not the stepper.
    """

    def __init__(self, stepper):
        self.stepper, self.state = stepper, None

    def step(self, W, g):
        W, g = np.asarray(W).T, np.asarray(g).T
        self.state = self.stepper.init(W) if self.state is None else self.state
        u, self.state = self.stepper.update(g, self.state, W)
        return (W + u).T


@pytest.mark.parametrize(("name", "shape"), [("shampoo", (8, 12)), ("soap", (10, 10))])
def test_shampoo_and_soap_adapters_follow_the_functional_steppers(x64, name, shape):
    """Both against the functional stepper per leaf, SOAP on a square matrix.

    After one gradient a wide matrix's larger SOAP factor is singular: its null space has
    no preferred basis, and the basis eigh picks there changes every later step.
    """
    shapes = {"w": shape, "v": (12,)}
    params = jax.tree.map(jnp.asarray, random_tree(shapes, seed=50, scale=0.3))
    grads = [jax.tree.map(jnp.asarray, random_tree(shapes, seed=51 + i)) for i in range(12)]
    functional, adapter = getattr(optim, name), getattr(mo, name)
    oracles = {k: StepperLeaf(functional(1e-2, weight_decay=0.01)) for k in shapes}
    want = run_per_leaf(oracles, params, grads)
    got = run_jitted(adapter(1e-2, weight_decay=0.01), params, grads)
    assert relative_error(got, want) < 1e-8


# --- d. Four host devices: the stack axis sharded over a mesh -------------------------------


COLLECTIVE = re.compile(r"\s(all-gather|all-reduce|all-to-all|collective-permute|"
                        r"reduce-scatter)(?:-start)?\(")

SHARDED_RUN = """
import json, re, sys
import numpy as np
import jax, jax.numpy as jnp, optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from matsign.optim import optax as mo

folder, COLLECTIVE = sys.argv[1], re.compile(sys.argv[2])
mesh = Mesh(np.array(jax.devices()), ("x",))
data = dict(np.load(folder + "/case.npz"))
report = {"devices": len(jax.devices())}

def collectives(hlo):
    out = {}
    for name in COLLECTIVE.findall(hlo):
        out[name] = out.get(name, 0) + 1
    return out

def run(params, grads, **options):
    tx = mo.muon(0.02, weight_decay=0.1, **options)
    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s
    step = jax.jit(step)
    state = tx.init(params)
    hlo = step.lower(params, state, grads[0]).compile().as_text()
    for g in grads:
        params, state = step(params, state, g)
    return params, collectives(hlo)

# 1. one (8, 32, 16) expert weight, sharded on its stack axis
shard = NamedSharding(mesh, P("x"))
params = {"experts": jax.device_put(data["experts"], shard)}
grads = [{"experts": jax.device_put(g, shard)} for g in data["expert_grads"]]
out, report["experts_collectives"] = run(params, grads, reshape="batch", mesh=mesh, axis="x")
plain, _ = run({"experts": jnp.asarray(data["experts"])},
               [{"experts": jnp.asarray(g)} for g in data["expert_grads"]], reshape="batch")
report["experts_sharding"] = str(out["experts"].sharding)
np.save(folder + "/experts.npy", np.asarray(out["experts"]))
np.save(folder + "/experts_plain.npy", np.asarray(plain["experts"]))

# 2. four (32, 16) matrices replicated on every device: one stack of 4, one per device
every = NamedSharding(mesh, P())
params = {f"w{i}": jax.device_put(data["matrices"][i], every) for i in range(4)}
grads = [{f"w{i}": jax.device_put(g[i], every) for i in range(4)} for g in data["matrix_grads"]]
out, report["matrices_collectives"] = run(params, grads, mesh=mesh, axis="x")
report["matrices_sharding"] = str(out["w0"].sharding)
np.save(folder + "/matrices.npy", np.stack([np.asarray(out[f"w{i}"]) for i in range(4)]))

# 3. transformations with step counters (0-d arrays) on a sharded parameter
report["init_errors"] = {}
for name, tx in [("adamw", mo.adamw(1e-3)), ("muon_bias_correction",
                  mo.muon(0.02, bias_correction=True, reshape="batch", mesh=mesh, axis="x"))]:
    try:
        state = tx.init(params := {"experts": jax.device_put(data["experts"], shard)})
        jax.block_until_ready(jax.jit(tx.update)(params, state, params))
    except Exception as error:  # reported to the parent, which asserts
        report["init_errors"][name] = f"{type(error).__name__}: {error}"
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """The 4-device run's report, its inputs, and the folder holding its results."""
    folder = tmp_path_factory.mktemp("sharded")
    rng = np.random.default_rng(60)
    data = {"experts": 0.3 * rng.standard_normal((8, 32, 16)),
            "expert_grads": rng.standard_normal((2, 8, 32, 16)),
            "matrices": 0.3 * rng.standard_normal((4, 32, 16)),
            "matrix_grads": rng.standard_normal((2, 4, 32, 16))}
    np.savez(folder / "case.npz", **data)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu", "JAX_ENABLE_X64": "1"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(SHARDED_RUN), str(folder),
                           COLLECTIVE.pattern], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["devices"] == 4
    return report, data, folder


def reference_trajectory(W, grads):
    muon = MuonReference(0.02, weight_decay=0.1, bias_correction=False)
    for g in grads:
        W = muon.step(W, g)
    return W


def test_stacks_sharded_over_four_host_devices(sharded):
    """Each device orthogonalises its own matrices: no all-gather, the unsharded result.

    The collectives of both programs are printed (``pytest -s``) for the record.
    """
    report, data, folder = sharded
    print({k: v for k, v in report.items() if k != "init_errors"})
    experts = np.load(folder / "experts.npy")
    want = reference_trajectory(data["experts"], data["expert_grads"])
    assert relative_error(experts, want) < 1e-9
    assert relative_error(experts, np.load(folder / "experts_plain.npy")) < 1e-10
    assert "all-gather" not in report["experts_collectives"], report
    want = np.stack([reference_trajectory(data["matrices"][i], data["matrix_grads"][:, i])
                     for i in range(4)])
    assert relative_error(np.load(folder / "matrices.npy"), want) < 1e-9


def test_step_counters_on_sharded_parameters(sharded):
    """AdamW's and bias-corrected Muon's 0-d counters next to a sharded parameter."""
    report, _, _ = sharded
    assert report["init_errors"] == {}


def _jit_entries(opt, steps=3):
    """Entries in ``jax.jit(opt.update)``'s cache after ``steps`` steps of one model."""
    params = {"hidden": jnp.ones((16, 8)) / 8, "head": jnp.ones((8, 4)) / 8}
    state = opt.init(params)
    update = jax.jit(opt.update)
    for _ in range(steps):
        _, state = update(params, state, params)
    return update._cache_size()


@pytest.mark.parametrize("name", ["muon", "adamw", "lion", "shampoo", "soap"])
def test_a_jitted_update_compiles_once_as_optax(name):
    """The state ``init`` makes is placed as ``update``'s outputs are (uncommitted beside
    uncommitted params), so the second step reuses the first one's executable, as
    optax's own transformations do (the oracle)."""
    assert _jit_entries(optax.adamw(0.02)) == 1
    assert _jit_entries(getattr(mo, name)(0.02)) == 1


def test_state_beside_committed_params_is_committed_to_their_device():
    device = jax.devices()[0]
    params = {"w": jax.device_put(jnp.ones((16, 8)), device)}
    state = mo.adamw(0.02).init(params)
    leaves = jax.tree_util.tree_leaves(state)
    assert leaves and all(leaf.committed and leaf.devices() == {device} for leaf in leaves)
