"""SOAP against a float64 NumPy re-implementation of the reference code's semantics.

The oracle below is written from the reference optimizer (github.com/nikhilvyas/SOAP,
``soap.py``; Vyas et al., arXiv:2409.11321), not from `matsign.optim.scale_by_soap`:
it keeps the first moment in the *rotated* coordinates and re-rotates it when the basis
changes, rotates with ``tensordot`` mode by mode instead of `matsign.kron`'s blocks, puts
the bias correction into the step size, and decays the weights after the step. The two
must agree trajectory-wise on a small noisy quadratic problem whose gradients depend on
the parameters (so any early difference would feed back and grow).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from matsign import optim
from matsign._xp import to_numpy

STEPS = 20


def _as(backend, a):
    """``a`` on the backend in its widest float (float32 where float64 is missing)."""
    return backend.asarray(a, "float64" if "float64" in backend.dtypes else "float32")


def _eps(backend):
    return float(np.finfo(np.float64 if "float64" in backend.dtypes else np.float32).eps)


# ---------------------------------------------------------------- the reference, in NumPy


def _apply(X, M, axis):
    """``M`` applied to ``X``'s axis ``axis`` (the mode-``axis`` product ``X x_axis M``)."""
    return np.moveaxis(np.tensordot(M, X, axes=(1, axis)), 0, axis)


def _rotate(X, Q):
    for axis, q in enumerate(Q):
        X = X if q is None else _apply(X, q.T, axis)
    return X


def _rotate_back(X, Q):
    for axis, q in enumerate(Q):
        X = X if q is None else _apply(X, q, axis)
    return X


def _merged_shape(shape, limit):
    """The reference's ``merge_dims``: fold axes while their product stays within ``limit``."""
    out, current = [], 1
    for d in shape:
        if current * d > limit:
            if current > 1:
                out.append(current)
                current = d
            else:
                out.append(d)
                current = 1
        else:
            current *= d
    if current > 1 or not out:
        out.append(current)
    return tuple(out)


class _ReferenceSOAP:
    """One parameter's SOAP state and step, with the reference code's semantics."""

    def __init__(self, *, lr, b1=0.95, b2=0.95, shampoo_beta=-1.0, eps=1e-8,
                 weight_decay=0.01, every=10, max_precond_dim=10000, merge_dims=False,
                 precondition_1d=False, normalize_grads=False, decay_after_step=True):
        self.lr, self.b1, self.b2, self.eps, self.wd = lr, b1, b2, eps, weight_decay
        self.beta = shampoo_beta if shampoo_beta >= 0 else b2
        self.every, self.limit, self.merge = every, max_precond_dim, merge_dims
        self.precondition_1d, self.normalize = precondition_1d, normalize_grads
        self.decay_after_step = decay_after_step  # False: p - lr (u + wd p), as matsign
        self.step, self.Q = 0, None

    def _view(self, X):
        return X.reshape(_merged_shape(X.shape, self.limit)) if self.merge else X

    def _update_factors(self, g):
        for axis, F in enumerate(self.GG):
            if F is not None:
                unfolded = np.moveaxis(g, axis, 0).reshape(g.shape[axis], -1)
                self.GG[axis] = self.beta * F + (1 - self.beta) * unfolded @ unfolded.T

    def _refresh(self):
        """One power iteration and a QR per factor, ``exp_avg_sq`` sorted to follow."""
        for axis, (F, q) in enumerate(zip(self.GG, self.Q, strict=True)):
            if F is not None:
                order = np.argsort(-np.diag(q.T @ F @ q), kind="stable")
                self.exp_avg_sq = np.take(self.exp_avg_sq, order, axis=axis)
                self.Q[axis] = np.linalg.qr(F @ q[:, order])[0]

    def update(self, p, grad):
        """The new parameter after one ``opt.step()``."""
        g = self._view(grad)
        if self.Q is None:  # first call: statistics and an eigh, no step
            kept = g.ndim > 1 or self.precondition_1d
            self.GG = [np.zeros((d, d)) if kept and d <= self.limit else None for d in g.shape]
            self.exp_avg, self.exp_avg_sq = np.zeros(g.shape), np.zeros(g.shape)
            self._update_factors(g)
            self.Q = [None if F is None else np.linalg.eigh(F)[1][:, ::-1] for F in self.GG]
            return p
        rotated = _rotate(g, self.Q)
        self.step += 1
        b1, b2, s = self.b1, self.b2, self.step
        self.exp_avg = b1 * self.exp_avg + (1 - b1) * rotated
        self.exp_avg_sq = b2 * self.exp_avg_sq + (1 - b2) * rotated**2
        u = _rotate_back(self.exp_avg / (np.sqrt(self.exp_avg_sq) + self.eps), self.Q)
        if self.normalize:
            u = u / (1e-30 + np.sqrt(np.mean(u**2)))
        decay = self.lr * self.wd * p
        p = p - self.lr * math.sqrt(1 - b2**s) / (1 - b1**s) * u.reshape(p.shape)
        p = p - (self.lr * self.wd * p if self.decay_after_step else decay)
        m = _rotate_back(self.exp_avg, self.Q)
        self._update_factors(g)
        if s % self.every == 0:
            self._refresh()
        self.exp_avg = _rotate(m, self.Q)
        return p


# ---------------------------------------------------------------- the problem


def _problem(shapes, seed=0):
    """A noisy quadratic per parameter: ``g = A (X - X*) B + noise`` (matrices) or
    ``g = c * (X - X*) + noise`` (other orders); returns (start, grad(name, t, X))."""
    rng = np.random.default_rng(seed)
    start = {k: rng.standard_normal(s) for k, s in shapes.items()}
    target = {k: rng.standard_normal(s) for k, s in shapes.items()}
    noise = {k: 0.3 * rng.standard_normal((STEPS, *s)) for k, s in shapes.items()}
    curvature = {}
    for k, s in shapes.items():
        if len(s) == 2:
            A, B = (rng.standard_normal((d, d)) / math.sqrt(d) for d in s)
            curvature[k] = (A @ A.T + 0.1 * np.eye(s[0]), B @ B.T + 0.1 * np.eye(s[1]))
        else:
            curvature[k] = rng.uniform(0.2, 2.0, s)

    def grad(name, t, X):
        c, E = curvature[name], X - target[name]
        return (c[0] @ E @ c[1] if isinstance(c, tuple) else c * E) + noise[name][t]

    return start, grad


def _run_reference(shapes, options, seed=0):
    start, grad = _problem(shapes, seed)
    opts = {k: _ReferenceSOAP(**options) for k in shapes}
    params, out = dict(start), []
    for t in range(STEPS):
        params = {k: opts[k].update(p, grad(k, t, p)) for k, p in params.items()}
        out.append(params)
    return out


def _run_matsign(backend, shapes, stepper, seed=0):
    start, grad = _problem(shapes, seed)
    params = {k: _as(backend, p) for k, p in start.items()}
    states = {k: stepper.init(p) for k, p in params.items()}
    out = []
    for t in range(STEPS):
        new = {}
        for k, p in params.items():
            g = _as(backend, grad(k, t, to_numpy(p)))
            u, states[k] = stepper.update(g, states[k], p)
            new[k] = optim.apply_updates(p, u)
        params = new
        out.append({k: to_numpy(p) for k, p in params.items()})
    return out


def _assert_trajectories_close(got, expected, atol):
    for t, (a, b) in enumerate(zip(got, expected, strict=True), start=1):
        for k in b:
            np.testing.assert_allclose(a[k], b[k], rtol=0, atol=atol, err_msg=f"step {t}, {k}")


# With max_precond_dim=8 (E's 12-axis unrotated) every factor below is full rank after
# one gradient or misses one dimension, so each eigenbasis is unique up to the signs of
# its columns, which SOAP does not see. (A larger null space would have an arbitrary
# basis, and Adam is not invariant under rotations inside it.)
SHAPES = {"W": (5, 4), "T": (3, 4, 2), "E": (6, 12), "b": (3,)}
CASES = {
    "defaults, every 3, a one-sided mode": (
        {"every": 3, "max_precond_dim": 8},
        {"every": 3, "max_precond_dim": 8},
    ),
    "betas, shampoo beta, normalize": (
        {"b1": 0.9, "b2": 0.99, "beta": 0.8, "every": 4, "normalize": True,
         "max_precond_dim": 8},
        {"b1": 0.9, "b2": 0.99, "shampoo_beta": 0.8, "every": 4, "normalize_grads": True,
         "max_precond_dim": 8},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_soap_direction_follows_the_reference_trajectory(backend, case):
    """The stepper's direction times ``-lr``, without decay, against the reference."""
    mine, theirs = CASES[case]
    lr = 0.02
    expected = _run_reference(SHAPES, {"lr": lr, "weight_decay": 0.0, **theirs})
    step = optim.chain(optim.scale_by_soap(**mine), optim.scale_by_learning_rate(lr))
    got = _run_matsign(backend, SHAPES, step)
    # Rounding in the factors, eighs and QRs is carried by up to 20 steps of lr-sized moves.
    _assert_trajectories_close(got, expected, atol=1e3 * _eps(backend) * lr * STEPS)


def test_soap_merged_modes_and_vectors_follow_the_reference(backend):
    """``merge_small`` folds (2, 2, 5) into (4, 5) like ``merge_dims``; a length-2 vector
    rotated by ``precondition_1d`` (its factor ``g g^T`` has a one-dimensional null space)."""
    shapes = {"T": (2, 2, 5), "b": (2,)}
    lr = 0.02
    expected = _run_reference(shapes, {"lr": lr, "weight_decay": 0.0, "every": 2,
                                       "max_precond_dim": 10, "merge_dims": True,
                                       "precondition_1d": True})
    mine = optim.scale_by_soap(every=2, max_precond_dim=10, merge_small=True,
                               precondition_1d=True)
    step = optim.chain(mine, optim.scale_by_learning_rate(lr))
    assert mine.init(np.zeros((2, 2, 5))).factors.layout.modes == (4, 5)
    got = _run_matsign(backend, shapes, step)
    _assert_trajectories_close(got, expected, atol=1e3 * _eps(backend) * lr * STEPS)


def test_soap_with_weight_decay_follows_the_reference(backend):
    """`matsign.optim.soap` adds ``wd p`` to the direction, the reference decays after the
    step: the same to rounding once the oracle does the former, and otherwise apart by
    about ``lr^2 wd |u|`` per step (``|u|`` below 3 here)."""
    lr, wd = 0.02, 0.05
    options = {"lr": lr, "weight_decay": wd, "every": 3, "max_precond_dim": 8}
    got = _run_matsign(backend, SHAPES, optim.soap(lr, weight_decay=wd, every=3,
                                                   max_precond_dim=8))
    rounding = 1e3 * _eps(backend) * lr * STEPS
    same_order = _run_reference(SHAPES, {**options, "decay_after_step": False})
    _assert_trajectories_close(got, same_order, atol=rounding)
    ordering = STEPS * lr**2 * wd * 3.0
    _assert_trajectories_close(got, _run_reference(SHAPES, options), atol=2 * ordering)


def test_soap_first_step_moves_nothing_not_even_weight_decay(backend):
    W = _as(backend, np.random.default_rng(1).standard_normal((4, 3)))
    opt = optim.soap(0.1, weight_decay=0.5)
    u, state = opt.update(W, opt.init(W), W)
    assert np.all(to_numpy(u) == 0)
    u, _ = opt.update(W, state, W)
    assert np.all(to_numpy(u) != 0)


# ---------------------------------------------------------------- properties


def _adam(grads, b1, b2, eps):
    """The reference's Adam (bias correction in the step size, outside ``eps``)."""
    m, v, out = 0.0, 0.0, []
    for s, g in enumerate(grads, start=1):
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g**2
        out.append(m / (np.sqrt(v) + eps) * math.sqrt(1 - b2**s) / (1 - b1**s))
    return np.array(out)


@pytest.mark.parametrize("every", [1, 3])
def test_soap_is_adam_in_fixed_singular_bases(backend, every):
    """Gradients ``U diag(d_t) V^T`` with fixed orthogonal ``U``, ``V``: every factor is
    diagonal in ``U`` or ``V``, the eigh and every refresh return them (up to signs and
    order), and SOAP is Adam on ``d_t`` from the second step. With ``beta=0`` (factors of
    the latest gradient) the spectrum's order jumps by a 3-cycle at step 9, so one refresh
    must carry ``v`` along a permutation that is not its own inverse.

    The rotated off-diagonal entries are rounding, ``delta ~ n eps |G|``, not zeros, and
    Adam divides them by at most its ``eps``: with ``eps=1e-2`` the identity holds to
    ``delta / 1e-2``. (With 1e-8 they would become sign-like steps in float32.)"""
    rng = np.random.default_rng(2)
    n = 4
    U, _ = np.linalg.qr(rng.standard_normal((n, n)))
    V, _ = np.linalg.qr(rng.standard_normal((n, n)))
    early, late = np.array([3.0, 2.0, 1.0, 0.5]), np.array([1.0, 3.0, 2.0, 0.5])
    d = np.array([(early if t < 8 else late) * (1 + 0.1 * rng.standard_normal(n))
                  for t in range(STEPS)])
    adam_eps = 1e-2
    s = optim.scale_by_soap(beta=0.0, every=every, eps=adam_eps)
    W = _as(backend, np.zeros((n, n)))
    state, got = s.init(W), []
    for t in range(STEPS):
        u, state = s.update(_as(backend, U @ np.diag(d[t]) @ V.T), state, W)
        got.append(to_numpy(u))
    expected = [np.zeros((n, n))] + [U @ np.diag(a) @ V.T
                                     for a in _adam(d[1:], 0.95, 0.95, adam_eps)]
    QL, QR = (to_numpy(Q)[0, 0] for Q in state.bases.bases)
    for X, Q in ((U, QL), (V, QR)):  # the bases' columns: the 3-cycle of U's and V's
        np.testing.assert_allclose(np.abs(X.T @ Q), np.eye(n)[:, [1, 2, 0, 3]], atol=1e-5)
    delta = n * _eps(backend) * np.abs(d).max()
    np.testing.assert_allclose(np.stack(got), np.stack(expected), rtol=0,
                               atol=10 * delta / adam_eps)


def test_soap_vectors_are_adam_by_default(backend):
    """The reference's 1-D rule: no rotation for vectors unless ``precondition_1d``."""
    grads = np.random.default_rng(3).standard_normal((STEPS, 5))
    s = optim.scale_by_soap()
    w = _as(backend, np.zeros(5))
    state, got = s.init(w), []
    for g in grads:
        u, state = s.update(_as(backend, g), state, w)
        got.append(to_numpy(u))
    assert state.factors.factors == (None,)
    expected = np.concatenate([np.zeros((1, 5)), _adam(grads[1:], 0.95, 0.95, 1e-8)])
    np.testing.assert_allclose(np.stack(got), expected, rtol=0, atol=1e2 * _eps(backend))


def test_soap_defaults_are_the_reference_defaults():
    """``shampoo_beta`` follows ``b2``; axes above 10000 stay unrotated; no merging."""
    G = np.random.default_rng(4).standard_normal((3, 10001))
    s = optim.scale_by_soap(b2=0.9)
    state = s.init(G)
    assert state.factors.factors[1] is None and state.factors.layout.modes == (3, 10001)
    _, state = s.update(G, state, G)
    np.testing.assert_allclose(state.factors.factors[0][0, 0], 0.1 * G @ G.T, rtol=1e-12)
    assert s.init(np.zeros((64, 3, 3))).factors.layout.modes == (64, 3, 3)


@pytest.mark.parametrize("stepper", [optim.scale_by_soap, optim.scale_by_shampoo])
def test_kron_steppers_check_their_own_options(stepper):
    """The steppers own their option checks (the torch adapters only build them)."""
    name = stepper.__name__
    with pytest.raises(ValueError, match=f"{name}: every must be an int >= 1; got 0"):
        stepper(every=0)
    with pytest.raises(ValueError, match=rf"{name}: b2 must lie in \[0, 1\); got b2=1.0"):
        stepper(b2=1.0)
    with pytest.raises(ValueError, match=f"{name}: eps must be a finite number >= 0; got eps=-1"):
        stepper(eps=-1)
