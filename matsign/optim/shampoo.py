"""Shampoo and SOAP on `matsign.kron`: Kronecker-factored preconditioning of any order."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from .. import _xp, kron
from .._checks import as_bound, as_rate
from .._typing import Array
from ._base import Stepper, chain
from .transforms import (
    adam_ratio,
    add_decayed_weights,
    moments,
    scale_by_learning_rate,
    zeros_count,
)

__all__ = ["SOAPState", "ShampooState", "scale_by_shampoo", "scale_by_soap", "shampoo", "soap"]


def _check_count(owner, name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"{owner}: {name} must be an int >= 1; got {value!r}"
        raise ValueError(msg)


def _check_choice(owner, name, value, choices):
    if value not in choices:
        msg = f"{owner}: {name} must be one of {choices}; got {value!r}"
        raise ValueError(msg)


def _optional(check):
    return lambda owner, name, value: None if value is None else check(owner, name, value)


def _fraction(owner, name, value):
    as_rate(value, name, owner)


def _nonnegative(owner, name, value):
    as_bound(value, name, owner)


def _flag(owner, name, value):
    _check_choice(owner, name, value, (False, True))


# The options of scale_by_shampoo and scale_by_soap, checked by them.
OPTION_CHECKS = {
    "b1": _fraction, "b2": _fraction, "beta": _optional(_fraction), "eps": _nonnegative,
    "every": _check_count, "start": _check_count, "max_dim": _optional(_check_count),
    "max_precond_dim": _optional(_check_count), "root_eps": _nonnegative,
    "rank_rtol": _optional(_nonnegative),
    "root_eps_mode": lambda o, n, v: _check_choice(o, n, v, ("relative", "absolute")),
    "root_method": lambda o, n, v: _check_choice(o, n, v, ("auto", "eigh", "newton")),
    "graft": _flag, "merge_small": _flag, "precondition_1d": _flag, "normalize": _flag,
}


def _check_options(owner, options):
    """Each option in `OPTION_CHECKS`, by its rule; the error names ``owner`` and the value."""
    for key, value in options.items():
        check = OPTION_CHECKS.get(key)
        if check is not None:
            check(owner, key, value)


class ShampooState(NamedTuple):
    """State of `scale_by_shampoo`.

    Attributes
    ----------
    step : array
        0-d step count.
    factors : matsign.kron.KronState
        Factor statistics.
    preconditioners : matsign.kron.Preconditioners
        The inverse roots last computed (zeros before ``start``).
    exp_avg, exp_avg_sq : array
        Adam's moments: the first is what Shampoo preconditions, both give the
        grafted step length.
    """

    step: Any
    factors: Any
    preconditioners: Any
    exp_avg: Any
    exp_avg_sq: Any


def _correction(b, step, xp):
    """Adam's bias correction ``1 - b^step`` for the 0-d ``step``, in its dtype and place.

    Formed as ``-expm1(step log b)``: ``1 - b^step`` in float32 would lose five digits
    to cancellation early on (``b = 0.999``: the rounding of ``b`` alone is 1e-5 of it).
    """
    if b == 0.0:
        return xp.ones_like(step)  # 1 - 0^step, step >= 1
    return -xp.expm1(step * math.log(b))


def _on_schedule(step, start, every):
    """Whether the 0-d ``step`` is one of ``start, start + every, ...`` (True: all are)."""
    if start == 1 and every == 1:
        return True
    due = step >= start
    return due if every == 1 else due & ((step - start) % every == 0)


def _adam(grad, step, m, v, b1, b2, eps, xp):
    """Adam's moments and bias-corrected direction, the 0-d ``step`` counted from 1."""
    m, v = moments(m, v, grad, b1, b2)
    m_hat = m / xp.astype(_correction(b1, step, xp), m.dtype)
    v_hat = v / xp.astype(_correction(b2, step, xp), v.dtype)
    return m, v, m_hat, adam_ratio(m_hat, v_hat, eps, xp=xp)


def _norm(x, xp):
    return xp.sqrt(xp.sum(x * x))


def scale_by_shampoo(
    *, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, beta: float | None = None,
    every: int = 10, start: int = 1, max_dim: int | None = None,
    max_precond_dim: int | None = None, exponents: Sequence[float] | None = None,
    root_eps: float = 1e-6, root_eps_mode: str = "relative", rank_rtol: float | None = None,
    graft: bool = True, root_method: str = "auto",
) -> Stepper:
    """Shampoo's direction, grafted onto Adam's step length.

    Parameters
    ----------
    b1, b2, eps : float
        Adam's moments (``b1`` is also the momentum Shampoo preconditions).
    beta : float, optional
        Factor statistics: None sums ``G G^T`` (original Shampoo), a float keeps an EMA.
    every : int, default 10
        Recompute the inverse roots every ``every`` steps.
    start : int, default 1
        First step that uses Shampoo; before it the direction is Adam's.
    max_dim, max_precond_dim, exponents
        Blocking and per-mode powers, see `matsign.kron.kron_layout` and
        `matsign.kron.preconditioners` (default ``-1/(2k)``: ``L^-1/4 . R^-1/4``).
    root_eps, root_eps_mode, rank_rtol, root_method
        The regularisation of `matsign.inverse_root`: a ridge ``root_eps`` relative
        to each factor's largest eigenvalue by default; ``rank_rtol`` pseudo-inverts.
    graft : bool, default True
        Rescale Shampoo's direction to the Frobenius norm of Adam's (layer-wise
        grafting), so the learning rate is Adam's. False returns it unscaled.

    Returns
    -------
    Stepper
        State `ShampooState`; not stackable (every axis is a tensor mode).

    Notes
    -----
    The step count stays a 0-d array. Whether a step recomputes the roots is taken
    where the step count lives: under ``jax.jit`` on the device (``lax.cond``: no host
    sync, and the roots are computed only on the steps that need them); on NumPy and
    torch on the CPU on the host, at no cost; for CUDA tensors and CuPy arrays outside
    a trace by one host read of the step count per step (none when ``start`` and
    ``every`` are 1). Before ``start`` Adam's
    direction is selected element-wise (``where``). Called eagerly, the root
    computation still checks its factors on the host (finite, definite): the stepper
    is marked ``host_step`` (see `matsign.optim.Stepper`).

    References
    ----------
    Gupta, Koren and Singer, Shampoo (arXiv:1802.09568); Anil et al., Scalable
    Second Order Optimization (arXiv:2002.09018) for grafting and the start step.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import msign, optim
    >>> s = optim.scale_by_shampoo(b1=0.0, graft=False, root_eps=0.0)
    >>> G = np.array([[2.0, 1.0], [0.0, 1.0]])
    >>> d, _ = s.update(G, s.init(G), G)   # first step: (G G^T)^-1/4 G (G^T G)^-1/4
    >>> bool(np.allclose(d, msign(G)))
    True
    """
    _check_options("scale_by_shampoo", locals())  # the keyword arguments, before any other name
    root_options = {"eps": root_eps, "eps_mode": root_eps_mode, "rank_rtol": rank_rtol,
                    "method": root_method}

    def init(param):
        xp = _xp.namespace(param)
        factors = kron.init_factors(param, max_dim=max_dim, max_precond_dim=max_precond_dim)
        zeros = kron.Preconditioners(
            tuple(None if F is None else xp.zeros_like(F) for F in factors.factors),
            factors.layout)
        return ShampooState(zeros_count(param), factors, zeros, xp.zeros_like(param),
                            xp.zeros_like(param))

    def roots(factors):
        return kron.preconditioners(factors, exponents=exponents, **root_options)

    def update(grad, state, param):
        xp = _xp.namespace(grad)
        step = state.step + 1.0
        factors = kron.update_factors(grad, state.factors, beta=beta)
        m, v, m_hat, adam = _adam(grad, step, state.exp_avg, state.exp_avg_sq, b1, b2, eps, xp)
        pre = _xp.cond(_on_schedule(step, start, every), roots,
                       lambda _: state.preconditioners, factors)
        direction = kron.precondition(m_hat, pre, xp=xp)
        if graft:
            norm = _norm(direction, xp)
            direction = direction * (_norm(adam, xp) / _xp.safe_divisor(norm, xp=xp))
        if start > 1:  # before start the roots are zero, so the direction is finite
            direction = xp.where(step < start, adam, direction)
        return direction, ShampooState(step, factors, pre, m, v)

    return Stepper(init, update, stackable=False, host_step=True)


class SOAPState(NamedTuple):
    """State of `scale_by_soap`: step, factors, eigenbases, Adam's moments.

    ``exp_avg`` lives in the parameter's coordinates, ``exp_avg_sq`` in the
    eigenbases (blocked shape, see `matsign.kron.project`).
    """

    step: Any
    factors: Any
    bases: Any
    exp_avg: Any
    exp_avg_sq: Any


def scale_by_soap(
    *, b1: float = 0.95, b2: float = 0.95, eps: float = 1e-8, beta: float | None = None,
    every: int = 10, max_dim: int | None = None, max_precond_dim: int | None = 10000,
    merge_small: bool = False, precondition_1d: bool = False, normalize: bool = False,
) -> Stepper:
    """SOAP's direction: Adam run in the eigenbases of Shampoo's factors.

    Parameters
    ----------
    b1, b2, eps : float
        Adam's moments and epsilon (the reference's defaults 0.95, 0.95, 1e-8).
    beta : float, optional
        EMA of the factor statistics (the reference's ``shampoo_beta``); None uses ``b2``.
    every : int, default 10
        Refresh the eigenbases every ``every`` Adam steps (one power iteration and a QR,
        `matsign.kron.refresh_eigenbases`); the first step takes a full eigh.
    max_dim : int, optional
        Cut modes larger than this into blocks, see `matsign.kron.kron_layout`.
    max_precond_dim : int or None, default 10000
        Modes larger than this keep the identity basis (the reference's default, which
        leaves vocabulary-sized axes unrotated). None rotates every mode.
    merge_small : bool, default False
        Merge neighbouring modes while their product stays within ``max_precond_dim``
        (the reference's ``merge_dims``).
    precondition_1d : bool, default False
        Rotate 1-D (and 0-D) parameters in the eigenbasis of ``g g^T`` too. By default
        they are left unrotated, so SOAP is plain Adam on biases and norm scales.
    normalize : bool, default False
        Rescale each parameter's direction to unit RMS before the bias correction (the
        reference's ``normalize_grads``).

    Returns
    -------
    Stepper
        State `SOAPState`; not stackable.

    Raises
    ------
    ValueError
        For an option out of its range (named with its value).

    Notes
    -----
    The first step only builds the factors and their eigenbases (direction 0, as in the
    reference code: the current gradient never sets the basis it is rotated into). Then,
    with ``s`` Adam steps counted from 1: ``m <- b1 m + (1 - b1) g``;
    ``v <- b2 v + (1 - b2) (Q^T g)^2`` in the rotated coordinates; direction
    ``Q (Q^T m / (sqrt(v) + eps)) * sqrt(1 - b2^s) / (1 - b1^s)`` (the bias correction
    sits outside ``eps``, as in the reference). The factors then take ``g`` and, every
    ``every`` Adam steps, the bases are refreshed and ``v`` permuted to follow their
    columns (refreshed bases keep the dtype of the old ones).

    The step count stays a 0-d array. Whether a step is the first one and whether it
    refreshes the bases is taken where the step count lives: under ``jax.jit`` on the
    device (``lax.cond``: no host sync, and eigh or the refresh run only on the steps
    that need them); on NumPy and torch on the CPU on the host, at no cost; for CUDA
    tensors and CuPy arrays outside a trace by host reads of the step count: one on
    the first step, two on each later one (one with ``every=1``).

    At the same learning rate SOAP may start slower than Adam, as the reference code
    does: the first bases come from one minibatch's statistics, and Adam's per-coordinate
    normalisation in them spends much of each early step on coordinates that hold mostly
    noise (early steps less aligned with the full-batch gradient, and shorter).

    References
    ----------
    Vyas et al., SOAP: Improving and Stabilizing Shampoo using Adam (arXiv:2409.11321);
    reference code github.com/nikhilvyas/SOAP.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import optim
    >>> s = optim.scale_by_soap()
    >>> G = np.array([[2.0, 1.0], [0.0, 1.0]])
    >>> d, state = s.update(G, s.init(G), G)   # the first step sets up the bases
    >>> d
    array([[0., 0.],
           [0., 0.]])
    >>> d, state = s.update(G, state, G)       # G in its own singular bases: U V^T
    >>> bool(np.allclose(d @ d.T, np.eye(2), atol=1e-6))
    True
    """
    _check_options("scale_by_soap", locals())  # the keyword arguments, before any other name
    factor_beta = b2 if beta is None else beta

    def init(param):
        xp = _xp.namespace(param)
        factors = kron.init_factors(param, max_dim=max_dim, max_precond_dim=max_precond_dim,
                                    merge_small=merge_small)
        if param.ndim < 2 and not precondition_1d:
            factors = _unrotated(factors)
        bases = kron.eigenbases(factors)
        rotated = kron.project(param, bases)
        return SOAPState(zeros_count(param), factors, bases, xp.zeros_like(param),
                         xp.zeros_like(rotated))

    def set_up(grad, state, factors):  # the first gradient only sets up the bases
        bases = kron.eigenbases(factors)
        return _xp.namespace(grad).zeros_like(grad), bases, state.exp_avg, state.exp_avg_sq

    def adam_step(grad, state, factors):
        xp = _xp.namespace(grad)
        bases, s = state.bases, state.step  # Adam steps taken so far, this one included
        rotated = kron.project(grad, bases, xp=xp)
        m, v = moments(state.exp_avg, state.exp_avg_sq, grad, b1, b2, squared=rotated)
        adam = adam_ratio(kron.project(m, bases, xp=xp), v, eps, xp=xp)
        direction = kron.unproject(adam, bases, xp=xp)
        if normalize:
            direction = direction / (xp.sqrt(xp.mean(direction * direction)) + 1e-30)
        correction = xp.sqrt(_correction(b2, s, xp)) / _correction(b1, s, xp)
        direction = direction * xp.astype(correction, direction.dtype)
        bases, v = _xp.cond(_on_schedule(s, every, every), _refresh, _kept, bases, v, factors)
        return direction, bases, m, v

    def update(grad, state, param):
        step = state.step + 1.0
        factors = kron.update_factors(grad, state.factors, beta=factor_beta)
        direction, bases, m, v = _xp.cond(step == 1.0, set_up, adam_step, grad, state, factors)
        return direction, SOAPState(step, factors, bases, m, v)

    return Stepper(init, update, stackable=False, host_step=True)


def _refresh(bases, v, factors):
    """SOAP's refresh of ``bases`` (in their dtype) and ``v`` permuted to follow them."""
    xp = _xp.namespace(v)
    new, orders = kron.refresh_eigenbases(factors, bases, xp=xp)
    kept = tuple(None if Q is None else _xp.astype(Q, old.dtype, xp=xp)
                 for Q, old in zip(new.bases, bases.bases, strict=True))
    return kron.Eigenbases(kept, new.layout), _permute(v, orders, xp)


def _kept(bases, v, factors):
    """The bases and ``v`` as they are (a step without refresh)."""
    return bases, v


def _unrotated(factors):
    """The same blocked layout with no factor kept: every mode keeps the identity basis."""
    layout = factors.layout._replace(preconditioned=(False,) * len(factors.layout.modes))
    return kron.KronState((None,) * len(layout.modes), layout)


def _after_first_step(inner):
    """``inner`` with its whole first update zeroed (SOAP's set-up step moves nothing)."""

    def update(grad, state, param):
        first = state[0].step == 0.0  # on the device: no second host sync
        out, state = inner.update(grad, state, param)
        xp = _xp.namespace(out)
        return xp.where(first, xp.zeros_like(out), out), state

    return inner._replace(update=update)


def _permute(v, orders, xp):
    """Reorder the rotated second moment along each block axis to follow the bases."""
    k = len(orders)
    for i, order in enumerate(orders):
        if order is None:
            continue
        axis = v.ndim - k + i
        shape = [1] * v.ndim
        shape[: v.ndim - k] = v.shape[: v.ndim - k]
        shape[axis] = v.shape[axis]
        index = xp.broadcast_to(xp.reshape(order, tuple(shape)), v.shape)
        v = xp.take_along_axis(v, index, axis=axis)
    return v


def shampoo(
    learning_rate: float | Callable[[Array], Array | float] = 1e-3, *, weight_decay: float = 0.0,
    **options,
) -> Stepper:
    """Shampoo with Adam grafting and decoupled weight decay.

    Parameters
    ----------
    learning_rate : float or callable, default 1e-3
        Adam's learning rate (the direction is grafted onto Adam's step length).
    weight_decay : float, default 0.0
        Decoupled weight decay.
    **options
        Passed to `scale_by_shampoo`.

    Returns
    -------
    Stepper

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import optim
    >>> opt = optim.shampoo(0.1)
    >>> W = np.eye(2)
    >>> u, state = opt.update(np.ones((2, 2)), opt.init(W), W)
    """
    return chain(scale_by_shampoo(**options), add_decayed_weights(weight_decay),
                 scale_by_learning_rate(learning_rate))


def soap(
    learning_rate: float | Callable[[Array], Array | float] = 3e-3, *, weight_decay: float = 0.01,
    **options,
) -> Stepper:
    """SOAP with decoupled weight decay, with the reference code's defaults.

    Parameters
    ----------
    learning_rate : float or callable, default 3e-3
        Learning rate.
    weight_decay : float, default 0.01
        Decoupled weight decay (multiplied by the learning rate). Like the rest of the
        update it is skipped on the first step, which only sets up the eigenbases.
    **options
        Passed to `scale_by_soap`.

    Returns
    -------
    Stepper

    Notes
    -----
    The reference decays the weights after the Adam step, ``p <- (p - lr u)(1 - lr wd)``;
    here the decay is added to the direction, ``p <- p - lr (u + wd p)``: the two differ
    by ``lr^2 wd u`` per step.

    References
    ----------
    Vyas et al., SOAP: Improving and Stabilizing Shampoo using Adam (arXiv:2409.11321).

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import optim
    >>> opt = optim.soap(0.01)
    >>> W = np.eye(3)
    >>> u, state = opt.update(np.ones((3, 3)), opt.init(W), W)
    >>> bool(np.all(u == 0))   # the first step only sets up the eigenbases
    True
    """
    return _after_first_step(chain(scale_by_soap(**options), add_decayed_weights(weight_decay),
                                   scale_by_learning_rate(learning_rate)))
