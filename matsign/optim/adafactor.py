"""The memory-lean optimizers: Adafactor (factored second moments) and Tiger (one momentum).

Adafactor keeps, for a matrix, one running mean of the squared gradient per row and one
per column instead of Adam's per-entry second moment, divides by their rank-one
reconstruction, clips the update by its RMS and steps relative to the parameter's RMS.
Tiger is Lion with ``b1 = b2``: the sign of one exponential moving average.

`scale_by_adafactor`'s options cover ``torch.optim.Adafactor`` and ``optax.adafactor``,
which differ in where ``eps`` enters, which axes are factored and what the learning rate
means; the docs page "Adafactor and Tiger" maps each option of both.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from .. import _xp
from .._checks import as_rate
from .._typing import Array
from ._base import Stepper, chain
from .transforms import (
    add_decayed_weights,
    cautious,
    lerp,
    scale_by_learning_rate,
    trace,
    zeros_count,
)

__all__ = [
    "AdafactorState",
    "AdafactorUnfactoredState",
    "TigerState",
    "adafactor",
    "scale_by_adafactor",
    "scale_by_tiger",
    "tiger",
]

EPS_MODES = ("clamp", "add")
FACTOR_AXES = ("last", "largest")
ADD_EPS = 1e-30  # the paper's and optax's eps1, added to the squared gradient


class AdafactorState(NamedTuple):
    """State of `scale_by_adafactor` for a factored parameter (torch.optim.Adafactor's names).

    ``row_var`` is the running mean of ``g^2`` over the column axis, kept with that axis
    of size 1 (``(..., m, 1)`` for the last two axes); ``col_var`` the mean over the row
    axis (``(..., 1, n)``).
    """

    step: Any
    row_var: Any
    col_var: Any


class AdafactorUnfactoredState(NamedTuple):
    """State of `scale_by_adafactor` for a vector, scalar or unfactored matrix."""

    step: Any
    variance: Any


class TigerState(NamedTuple):
    """State of `scale_by_tiger`: the momentum (named as Lion's)."""

    exp_avg: Any


def factored_axes(
    shape: tuple[int, ...], *, factored: bool = True, factor_axes: str = "last",
    min_dim_size_to_factor: int = 0,
) -> tuple[int, int] | None:
    """The axes ``(a, b)`` whose second moment `scale_by_adafactor` factors, or None.

    Parameters
    ----------
    shape : tuple of int
        The parameter's shape.
    factored : bool, default True
        False: never factor.
    factor_axes : {"last", "largest"}, default "last"
        The last two axes (torch.optim.Adafactor) or the two largest, the earlier of
        equal ones first (optax.adafactor, which sorts the shape as ``numpy.argsort``).
    min_dim_size_to_factor : int, default 0
        Factor only when both axes have at least this size (optax: 128).

    Returns
    -------
    tuple of int or None
        ``(a, b)`` with ``a < b`` for ``"last"``; rows run along ``a`` (``row_var``
        is the mean over ``b``), columns along ``b``. None for fewer than two axes.

    Examples
    --------
    >>> from matsign.optim.adafactor import factored_axes
    >>> factored_axes((8, 3, 5)), factored_axes((8, 3, 5), factor_axes="largest")
    ((1, 2), (2, 0))
    >>> print(factored_axes((64, 300), min_dim_size_to_factor=128))
    None
    """
    if not factored or len(shape) < 2:
        return None
    if factor_axes == "last":
        a, b = len(shape) - 2, len(shape) - 1
    else:
        order = sorted(range(len(shape)), key=lambda i: shape[i])  # stable, as argsort here
        a, b = order[-2], order[-1]
    return (a, b) if min(shape[a], shape[b]) >= min_dim_size_to_factor else None


def scale_by_adafactor(
    *, decay_rate: float = 0.8, eps: float | None = None, eps_mode: str = "clamp",
    clipping_threshold: float | None = 1.0, multiply_by_parameter_scale: bool = True,
    min_scale: float = 1e-3, relative_step: float | Callable[[Array], Any] | None = None,
    factored: bool = True, factor_axes: str = "last", min_dim_size_to_factor: int = 0,
) -> Stepper:
    """Adafactor's direction: the gradient over the root of a factored second moment.

    Parameters
    ----------
    decay_rate : float, default 0.8
        The second-moment decay ``beta2_t = 1 - t^(-decay_rate)`` at step ``t`` (from 1):
        the new statistic enters with weight ``t^(-decay_rate)``. torch.optim.Adafactor's
        ``beta2_decay`` is ``-decay_rate``.
    eps : float, optional
        The second moment's regulariser; None: ``finfo(dtype).eps`` for ``"clamp"``,
        ``1e-30`` for ``"add"``.
    eps_mode : {"clamp", "add"}, default "clamp"
        ``"clamp"`` (torch.optim.Adafactor): the row mean that normalises the estimate is
        clamped below at ``eps`` and the estimate at ``eps^2``. ``"add"`` (the paper,
        optax): ``g^2 + eps`` enters the moments.
    clipping_threshold : float or None, default 1.0
        ``d``: the update is divided by ``max(1, RMS(U) / d)``; None: no clipping.
    multiply_by_parameter_scale : bool, default True
        Multiply by ``max(min_scale, RMS(param))``: a step relative to the parameter.
    min_scale : float, default 1e-3
        The paper's ``eps2`` (torch's ``eps[1]``).
    relative_step : float or callable, optional
        The cap ``lr`` of the relative step size ``min(lr, 1/sqrt(t))`` (the paper's
        ``1e-2``, torch.optim.Adafactor's ``lr``), or a schedule of it: the direction is
        multiplied by ``min(1, 1/(lr sqrt(t)))``, so that a final
        ``scale_by_learning_rate(lr)`` steps by ``min(lr, 1/sqrt(t))``. None (optax):
        the learning rate is the step size.
    factored : bool, default True
        Factor the second moment of parameters with two or more axes.
    factor_axes : {"last", "largest"}, default "last"
        Which two axes: the last two (torch.optim.Adafactor) or the two largest, the
        earlier of equal ones first (optax.adafactor).
    min_dim_size_to_factor : int, default 0
        Factor only when both axes are at least this long (optax: 128).

    Returns
    -------
    Stepper
        State `AdafactorState` (factored) or `AdafactorUnfactoredState`; not stackable:
        the RMS of the update and of the parameter are those of the whole parameter.

    Raises
    ------
    ValueError
        For an option out of range; from ``update``, for ``param=None`` when the
        parameter scale is on.

    Notes
    -----
    With ``R`` the row and ``C`` the column means of ``g^2`` (EMAs over steps) the
    second moment is ``V = R C / mean(R)``: the rank-one matrix of the same row and
    column sums (Shazeer and Stern's sums and means give the same ``V``). Then
    ``U = g / sqrt(V)``, ``U <- U / max(1, RMS(U) / d)``, times
    ``max(min_scale, RMS(param))`` and the relative-step factor. Unfactored
    parameters keep the EMA of ``g^2`` itself.

    References
    ----------
    Shazeer and Stern, Adafactor: Adaptive Learning Rates with Sublinear Memory Cost
    (arXiv:1804.04235), Algorithms 4 and 5.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import optim
    >>> a = optim.scale_by_adafactor(multiply_by_parameter_scale=False)
    >>> G = np.array([[1.0, -2.0], [4.0, 0.5]])
    >>> u, state = a.update(G, a.init(G), None)
    >>> state.row_var.shape, state.col_var.shape
    ((2, 1), (1, 2))
    >>> bool(np.sqrt(np.mean(u ** 2)) <= 1.0)    # clipped to RMS 1
    True
    """
    _check_adafactor(decay_rate, eps, eps_mode, clipping_threshold, min_scale, factor_axes)
    where = {"factored": factored, "factor_axes": factor_axes,
             "min_dim_size_to_factor": min_dim_size_to_factor}

    def init(param):
        xp = _xp.namespace(param)
        step = zeros_count(param)
        axes = factored_axes(tuple(param.shape), **where)
        if axes is None:
            return AdafactorUnfactoredState(step, xp.zeros_like(param))
        a, b = axes
        return AdafactorState(step, xp.zeros_like(xp.mean(param, axis=b, keepdims=True)),
                              xp.zeros_like(xp.mean(param, axis=a, keepdims=True)))

    def update(grad, state, param):
        xp = _xp.namespace(grad)
        step = state.step + 1.0  # float32 or wider: the scalars are computed in its dtype
        weight = step ** (-float(decay_rate))
        tiny = _eps(eps, eps_mode, grad.dtype, xp)
        axes = factored_axes(tuple(grad.shape), **where)
        root, moments = _root_second_moment(grad, state, weight, axes, tiny, eps_mode, xp=xp)
        U = grad / root
        factor = _step_factor(U, param, state.step, clipping_threshold,
                              min_scale if multiply_by_parameter_scale else None,
                              relative_step, xp=xp)
        scaled = _xp.astype(U, factor.dtype, xp=xp) * factor  # half precision: one rounding
        return _xp.astype(scaled, U.dtype, xp=xp), type(state)(step, *moments)

    return Stepper(init, update, stackable=False)


def _check_adafactor(decay_rate, eps, eps_mode, clipping_threshold, min_scale, factor_axes):
    """ValueError naming the first option of `scale_by_adafactor` out of range."""
    if eps_mode not in EPS_MODES:
        msg = f"eps_mode must be one of {EPS_MODES}; got {eps_mode!r}"
        raise ValueError(msg)
    if factor_axes not in FACTOR_AXES:
        msg = f"factor_axes must be one of {FACTOR_AXES}; got {factor_axes!r}"
        raise ValueError(msg)
    checks = [("decay_rate", decay_rate, decay_rate >= 0.0),
              ("eps", eps, eps is None or eps >= 0.0),
              ("clipping_threshold", clipping_threshold,
               clipping_threshold is None or clipping_threshold > 0.0),
              ("min_scale", min_scale, min_scale >= 0.0)]
    for name, value, ok in checks:
        if not ok:
            msg = f"scale_by_adafactor: {name} out of range; got {value!r}"
            raise ValueError(msg)


def _eps(eps, eps_mode, dtype, xp):
    """The regulariser as a Python float: the option, or the mode's default."""
    if eps is not None:
        return float(eps)
    return float(xp.finfo(dtype).eps) if eps_mode == "clamp" else ADD_EPS


def _root_second_moment(grad, state, weight, axes, eps, eps_mode, *, xp):
    """``sqrt(V)`` for the estimate ``V`` of ``E[g^2]``, and the new moments.

    Factored: ``sqrt(V) = sqrt(R / mean(R)) sqrt(C)``, an outer product of two small
    factors (one full-size product); ``"clamp"`` takes ``max(sqrt(V), eps)``, which is
    ``sqrt(max(V, eps^2))``.
    """
    squared = grad * grad
    if eps_mode == "add":
        squared = squared + eps
    if axes is None:
        variance = _average(state.variance, squared, weight, xp=xp)
        root = xp.sqrt(variance)
        moments = (variance,)
    else:
        a, b = axes  # means, not norms: a norm across rows is 5x slower on torch's CPU
        row = _average(state.row_var, xp.mean(squared, axis=b, keepdims=True), weight, xp=xp)
        col = _average(state.col_var, xp.mean(squared, axis=a, keepdims=True), weight, xp=xp)
        normaliser = xp.mean(row, axis=a, keepdims=True)  # the mean of all of V
        if eps_mode == "clamp":
            normaliser = xp.clip(normaliser, min=eps)
        root = xp.sqrt(row / normaliser) * xp.sqrt(col)
        moments = (row, col)
    return (xp.clip(root, min=eps) if eps_mode == "clamp" else root), moments


def _average(old, new, weight, *, xp):
    """``old + weight (new - old)`` in ``weight``'s precision (float32 for half), as ``old``."""
    wide = weight.dtype
    start = _xp.astype(old, wide, xp=xp)
    out = start + weight * (_xp.astype(new, wide, xp=xp) - start)
    return _xp.astype(out, old.dtype, xp=xp)


def _rms(x, *, xp):
    return xp.linalg.vector_norm(x) / math.sqrt(max(1, math.prod(x.shape)))


def _step_factor(U, param, count, clipping_threshold, min_scale, relative_step, *, xp):
    """The 0-d multiplier of ``U``: clipping, parameter scale and relative step together.

    ``count`` is the step count before this step (a schedule's argument, as in
    `matsign.optim.scale_by_learning_rate`).
    """
    wide = count.dtype
    factor = xp.ones((), dtype=wide, device=_xp.device(count))
    if clipping_threshold is not None:
        rms = _xp.astype(_rms(U, xp=xp), wide, xp=xp)
        factor = factor / xp.clip(rms / float(clipping_threshold), min=1.0)
    if min_scale is not None:
        if param is None:
            msg = ("Adafactor's parameter scale reads the parameters: pass params to update, "
                   "or multiply_by_parameter_scale=False")
            raise ValueError(msg)
        rms = _xp.astype(_rms(param, xp=xp), wide, xp=xp)
        factor = factor * xp.clip(rms, min=float(min_scale))
    if relative_step is not None:
        cap = relative_step(count) if callable(relative_step) else float(relative_step)
        cap = _xp.astype(cap, wide, xp=xp) if hasattr(cap, "dtype") else cap
        # min(1, 1/(cap sqrt(t))), with no division by a cap of 0
        factor = factor / xp.clip(cap * xp.sqrt(count + 1.0), min=1.0)
    return factor


def adafactor(
    learning_rate: float | Callable[[Array], Any] = 1e-2, *, relative_step: bool = True,
    b1: float | None = None, decay_rate: float = 0.8, eps: float | None = None,
    eps_mode: str = "clamp", clipping_threshold: float | None = 1.0,
    multiply_by_parameter_scale: bool = True, min_scale: float = 1e-3,
    factored: bool = True, factor_axes: str = "last", min_dim_size_to_factor: int = 0,
    weight_decay: float = 0.0,
) -> Stepper:
    """Adafactor with the defaults and semantics of ``torch.optim.Adafactor``.

    Parameters
    ----------
    learning_rate : float or callable, default 1e-2
        With ``relative_step``: the cap of the relative step size, which is
        ``min(learning_rate, 1/sqrt(t))`` (torch's ``lr``; the paper's ``1e-2``).
        Without: the step size itself (optax). A constant or a schedule of the step count.
    relative_step : bool, default True
        Step by ``min(learning_rate, 1/sqrt(t))`` instead of ``learning_rate``.
    b1 : float, optional
        Momentum: an EMA ``m <- b1 m + (1 - b1) u`` of the clipped, scaled update (the
        paper's and optax's ``momentum``); None (torch): none, and no memory for it.
    decay_rate, eps, eps_mode, clipping_threshold, multiply_by_parameter_scale, min_scale
        See `scale_by_adafactor`.
    factored, factor_axes, min_dim_size_to_factor
        See `scale_by_adafactor`.
    weight_decay : float, default 0.0
        Decoupled: the step subtracts ``learning_rate * weight_decay * param`` (torch's;
        with a relative step, the cap times ``weight_decay``).

    Returns
    -------
    Stepper
        Not stackable (see `scale_by_adafactor`).

    Notes
    -----
    The chain is `scale_by_adafactor` (relative step folded in), `trace` (EMA) when
    ``b1`` is set, `add_decayed_weights` and `scale_by_learning_rate`. The paper's
    Algorithm 4 is ``eps_mode="add"`` with these defaults; ``optax.adafactor`` is
    ``relative_step=False, eps_mode="add", factor_axes="largest",
    min_dim_size_to_factor=128`` (`matsign.optim.optax.adafactor` takes optax's own
    signature).

    References
    ----------
    Shazeer and Stern, Adafactor (arXiv:1804.04235).

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import optim
    >>> opt = optim.adafactor()              # torch.optim.Adafactor's defaults
    >>> W = np.full((3, 4), 0.5)
    >>> u, state = opt.update(np.ones((3, 4)), opt.init(W), W)
    >>> float(u[0, 0])                        # -min(1e-2, 1/sqrt(1)) * RMS(W) * 1
    -0.005
    """
    direction = scale_by_adafactor(
        decay_rate=decay_rate, eps=eps, eps_mode=eps_mode,
        clipping_threshold=clipping_threshold,
        multiply_by_parameter_scale=multiply_by_parameter_scale, min_scale=min_scale,
        relative_step=learning_rate if relative_step else None, factored=factored,
        factor_axes=factor_axes, min_dim_size_to_factor=min_dim_size_to_factor)
    momentum = () if b1 is None else (trace(b1, ema=True),)
    return chain(direction, *momentum, add_decayed_weights(weight_decay),
                 scale_by_learning_rate(learning_rate))


def scale_by_tiger(beta: float = 0.945) -> Stepper:
    """Tiger's direction ``sign(m)`` after ``m <- lerp(m, g, 1 - beta)``.

    Parameters
    ----------
    beta : float, default 0.945
        Decay of the momentum, in [0, 1).

    Returns
    -------
    Stepper
        State `TigerState`.

    Raises
    ------
    ValueError
        For ``beta`` outside [0, 1).

    Notes
    -----
    Lion's `scale_by_lion` with ``b1 = b2 = beta``: the direction is the sign of the
    momentum just updated, so nothing but the momentum is kept (gradient accumulation
    can live in it).

    References
    ----------
    Su, Tiger: A Tight-fisted Optimizer (2023), https://github.com/bojone/tiger and
    https://kexue.fm/archives/9512.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import optim
    >>> s = optim.scale_by_tiger(0.5)
    >>> u, state = s.update(np.array([0.3, -2.0, 0.0]), s.init(np.zeros(3)), None)
    >>> u, state.exp_avg
    (array([ 1., -1.,  0.]), array([ 0.15, -1.  ,  0.  ]))
    """
    beta = as_rate(beta, "beta", "scale_by_tiger")

    def init(param):
        return TigerState(_xp.namespace(param).zeros_like(param))

    def update(grad, state, param):
        xp = _xp.namespace(grad)
        momentum = lerp(state.exp_avg, grad, 1.0 - beta)
        return _xp.sign(momentum, xp=xp), TigerState(momentum)

    return Stepper(init, update)


def tiger(
    learning_rate: float | Callable[[Array], Any] = 1e-4, *, beta: float = 0.945,
    weight_decay: float = 0.0, cautious_mask: bool = False,
    cautious_weight_decay: bool = False,
) -> Stepper:
    """Tiger: ``theta <- theta - lr (sign(m) + weight_decay theta)``, one momentum ``m``.

    Parameters
    ----------
    learning_rate : float or callable, default 1e-4
        A constant or a schedule of the step count; a sign step as Lion's, so Lion's
        learning rates carry over (3-10x below AdamW's).
    beta : float, default 0.945
        Momentum decay: Su's choice for vision, the mean of Lion's (0.9, 0.99); he gives
        0.965 for language models (the mean of (0.95, 0.98)), his code's default.
    weight_decay : float, default 0.0
        Decoupled weight decay.
    cautious_mask : bool, default False
        Mask the direction where it disagrees in sign with the gradient (`cautious`).
    cautious_weight_decay : bool, default False
        Decay only where the update and the parameter share a sign.

    Returns
    -------
    Stepper

    Notes
    -----
    This is the update rule of Su's post. His reference code adds per-parameter rules
    on top (a learning rate times ``RMS(theta)`` for matrices, half the learning rate and
    no decay for biases and norms, gradient accumulation, a shrink of the parameters on
    a NaN gradient); those are left to parameter groups here (see the docs page
    "Adafactor and Tiger").

    References
    ----------
    Su, Tiger: A Tight-fisted Optimizer (2023), https://github.com/bojone/tiger.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import optim
    >>> opt = optim.tiger(0.01, weight_decay=0.5)
    >>> w = np.array([1.0, 1.0])
    >>> opt.update(np.array([3.0, -0.1]), opt.init(w), w)[0]   # -0.01 (sign + 0.5 w)
    array([-0.015,  0.005])
    """
    direction = scale_by_tiger(beta)
    return chain(
        cautious(direction) if cautious_mask else direction,
        add_decayed_weights(weight_decay, cautious=cautious_weight_decay),
        scale_by_learning_rate(learning_rate),
    )
