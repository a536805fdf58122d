"""Small building blocks: momentum, Adam and Lion directions, orthogonalisation, decay, scales.

Each factory returns a `Stepper`. Blocks before `scale_by_learning_rate` produce a
*direction* (a step is taken against it); `scale_by_learning_rate` multiplies by
``-lr`` and so turns the direction into the update that `apply_updates` adds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from .. import _xp
from .._checks import as_bound, as_rate
from .._typing import Array, DType
from ..duality import rms_to_rms_scale
from ..polar import check_options, msign, newton_schulz
from ..polynomials import Schedule, preset
from ._base import Stepper, every_matrix, stateless

__all__ = [
    "AMSGradState",
    "AdamState",
    "CountState",
    "LionState",
    "TraceState",
    "add_decayed_weights",
    "cautious",
    "orthogonalize",
    "scale",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_lion",
    "scale_by_shape",
    "trace",
]

SHAPE_SCALES = ("jordan", "moonlight", "spectral", "none")


class TraceState(NamedTuple):
    """Momentum buffer of `trace` (named as in ``torch.optim``)."""

    momentum_buffer: Any


class CountedTraceState(NamedTuple):
    """State of `trace` with ``bias_correction=True``: step count and momentum buffer."""

    step: Any
    momentum_buffer: Any


class AdamState(NamedTuple):
    """State of `scale_by_adam`: step count and the two moment estimates."""

    step: Any
    exp_avg: Any
    exp_avg_sq: Any


class AMSGradState(NamedTuple):
    """State of `scale_by_adam` with ``amsgrad=True``: also the running maximum of ``v``."""

    step: Any
    exp_avg: Any
    exp_avg_sq: Any
    max_exp_avg_sq: Any


class LionState(NamedTuple):
    """State of `scale_by_lion`: the momentum."""

    exp_avg: Any


class CountState(NamedTuple):
    """Step count of a scheduled block."""

    step: Any


def zeros_count(param: Array) -> Array:
    """A 0-d step counter on ``param``'s device, float32 or wider (exact to 2**24 steps)."""
    xp = _xp.namespace(param)
    dtype = _xp.decomposition_dtype(_xp.result_dtype(param, xp), xp)
    return xp.zeros((), dtype=dtype, device=_xp.device(param))


def eps_safe(fn: Callable[..., Array], eps: float, *arrays: Array, xp) -> Array:
    """``fn(*arrays)`` in float32 where ``eps`` lies below the arrays' normal range.

    Adam-type denominators ``sqrt(v) + eps`` need ``eps`` to count: in float16
    (smallest normal 6.1e-5) the default 1e-8 rounds to 0, and a zero moment gives
    0 / 0 = NaN. There the ratio is formed in float32, as torch's fused AdamW does, and
    returned in the first array's dtype; every other dtype runs ``fn`` as it is.
    """
    dtype = arrays[0].dtype
    if eps == 0.0 or xp.finfo(dtype).smallest_normal <= eps:
        return fn(*arrays)
    wide = fn(*(xp.astype(a, xp.float32) for a in arrays))
    return xp.astype(wide, dtype)


def adam_ratio(m: Array, v: Array, eps: float, *, xp) -> Array:
    """Adam's ``m / (sqrt(v) + eps)``, by `eps_safe` (float32 where ``eps`` underflows)."""
    return eps_safe(lambda m, v: m / (xp.sqrt(v) + eps), eps, m, v, xp=xp)


def lerp(start: Array, end: Array, weight: float) -> Array:
    """``start + weight * (end - start)`` in the rounding order of ``torch.lerp``."""
    if hasattr(start, "lerp") and hasattr(end, "lerp"):
        # torch's fused kernel, so that momentum matches torch.optim bit for bit
        return start.lerp(end, weight)
    if weight < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1.0 - weight)


def moments(
    m: Array, v: Array, grad: Array, b1: float, b2: float, *, squared: Array | None = None,
) -> tuple[Array, Array]:
    """Adam's moment estimates after one more gradient: ``lerp(m, g, 1 - b1)`` and ``v``.

    Parameters
    ----------
    m, v : array
        First and second moments so far.
    grad : array
        The gradient.
    b1, b2 : float
        Decay rates.
    squared : array, optional
        What enters ``v`` squared, if not ``grad`` (SOAP: the rotated gradient).

    Returns
    -------
    m, v : array
        ``m + (1 - b1) (g - m)`` (torch's ``lerp`` rounding) and
        ``b2 v + (1 - b2) x^2`` with ``x`` = ``squared`` or ``grad``.
    """
    x = grad if squared is None else squared
    return lerp(m, grad, 1.0 - b1), b2 * v + (1.0 - b2) * (x * x)


def trace(
    momentum: float, *, nesterov: bool = False, ema: bool = False,
    bias_correction: bool = False,
) -> Stepper:
    """Heavy-ball momentum, as a sum or an exponential moving average, optionally Nesterov.

    Parameters
    ----------
    momentum : float
        ``mu`` in [0, 1).
    nesterov : bool, default False
        Return the look-ahead ``g + mu * buf`` (sum) or ``lerp(g, buf, mu)`` (EMA).
    ema : bool, default False
        ``buf <- mu * buf + (1 - mu) * g`` (torch.optim.Muon) instead of
        ``buf <- mu * buf + g`` (SGD, the original Muon).
    bias_correction : bool, default False
        With ``ema``: divide by ``1 - mu^t`` as Adam does, ``t`` counted from 1. The
        Nesterov look-ahead is then ``mu buf / (1 - mu^(t+1)) + (1 - mu) g / (1 - mu^t)``
        (``optax.contrib.muon`` and NAdam); without Nesterov it is ``buf / (1 - mu^t)``.

    Returns
    -------
    Stepper
        State `TraceState`, or `CountedTraceState` with ``bias_correction``.

    Raises
    ------
    ValueError
        For ``bias_correction`` without ``ema`` (a sum has no bias to correct).

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import optim
    >>> t = optim.trace(0.5)
    >>> s = t.init(np.zeros(1))
    >>> u, s = t.update(np.ones(1), s, None)
    >>> u, s = t.update(np.ones(1), s, None)
    >>> u
    array([1.5])
    >>> t = optim.trace(0.5, ema=True, bias_correction=True)   # a constant gradient
    >>> t.update(np.ones(1), t.init(np.zeros(1)), None)[0]     # is its own average
    array([1.])
    """
    mu = as_rate(momentum, "momentum", "trace")
    if bias_correction and not ema:
        msg = "trace: bias_correction needs ema=True (a sum of gradients has no bias)"
        raise ValueError(msg)

    def average(grad, buf):
        buf = lerp(buf, grad, 1.0 - mu) if ema else mu * buf + grad
        if not nesterov:
            return buf, buf
        return (lerp(grad, buf, mu) if ema else grad + mu * buf), buf

    def init(param):
        xp = _xp.namespace(param)
        if bias_correction:
            return CountedTraceState(zeros_count(param), xp.zeros_like(param))
        return TraceState(xp.zeros_like(param))

    def update(grad, state, param):
        if not bias_correction:
            out, buf = average(grad, state.momentum_buffer)
            return out, TraceState(buf)
        xp = _xp.namespace(grad)
        step = state.step + 1.0
        buf = lerp(state.momentum_buffer, grad, 1.0 - mu)

        def correction(t):  # 1 - mu^t on the device, in the buffer's dtype
            return xp.astype(1.0 - xp.pow(xp.full_like(step, mu), t), buf.dtype)

        if nesterov:
            out = buf * (mu / correction(step + 1.0)) + grad * ((1.0 - mu) / correction(step))
        else:
            out = buf / correction(step)
        return out, CountedTraceState(step, buf)

    return Stepper(init, update)


def scale_by_adam(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, *, amsgrad: bool = False,
) -> Stepper:
    """Adam's direction ``m_hat / (sqrt(v_hat) + eps)`` with bias correction.

    Parameters
    ----------
    b1, b2 : float
        Decay rates of the first and second moments.
    eps : float
        Added to ``sqrt(v_hat)``.
    amsgrad : bool, default False
        Divide by the running maximum of ``v`` (Reddi et al., arXiv:1904.09237).

    Returns
    -------
    Stepper
        State `AdamState` (``step``, ``exp_avg``, ``exp_avg_sq``, as torch.optim.AdamW),
        `AMSGradState` with ``amsgrad``.

    References
    ----------
    Kingma and Ba, Adam (arXiv:1412.6980).

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import optim
    >>> a = optim.scale_by_adam()
    >>> u, _ = a.update(np.array([3.0, -0.5]), a.init(np.zeros(2)), None)
    >>> np.round(u, 6)
    array([ 1., -1.])
    """
    b1, b2 = as_rate(b1, "b1", "scale_by_adam"), as_rate(b2, "b2", "scale_by_adam")
    eps = as_bound(eps, "eps", "scale_by_adam")

    def init(param):
        xp = _xp.namespace(param)
        moments = (zeros_count(param), xp.zeros_like(param), xp.zeros_like(param))
        return AMSGradState(*moments, xp.zeros_like(param)) if amsgrad else AdamState(*moments)

    def update(grad, state, param):
        xp = _xp.namespace(grad)
        step = state.step + 1.0
        m, v = moments(state.exp_avg, state.exp_avg_sq, grad, b1, b2)
        v_max = xp.maximum(state.max_exp_avg_sq, v) if amsgrad else v
        correction1 = 1.0 - xp.pow(xp.full_like(step, b1), step)
        correction2 = xp.sqrt(1.0 - xp.pow(xp.full_like(step, b2), step))

        def direction(m, v):
            denom = xp.sqrt(v) / xp.astype(correction2, v.dtype) + eps
            return m / denom / xp.astype(correction1, m.dtype)

        new = AMSGradState(step, m, v, v_max) if amsgrad else AdamState(step, m, v)
        return eps_safe(direction, eps, m, v_max, xp=xp), new

    return Stepper(init, update)


def scale_by_lion(b1: float = 0.9, b2: float = 0.99) -> Stepper:
    """Lion's direction ``sign(lerp(m, g, 1 - b1))``, then ``m <- lerp(m, g, 1 - b2)``.

    Parameters
    ----------
    b1 : float
        Interpolation for the direction.
    b2 : float
        Decay of the momentum.

    Returns
    -------
    Stepper
        State `LionState`.

    References
    ----------
    Chen et al., Symbolic Discovery of Optimization Algorithms (arXiv:2302.06675).

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import optim
    >>> s = optim.scale_by_lion()
    >>> u, _ = s.update(np.array([0.3, -2.0, 0.0]), s.init(np.zeros(3)), None)
    >>> u
    array([ 1., -1.,  0.])
    """
    b1 = as_rate(b1, "b1", "scale_by_lion", closed=True)
    b2 = as_rate(b2, "b2", "scale_by_lion", closed=True)

    def init(param):
        return LionState(_xp.namespace(param).zeros_like(param))

    def update(grad, state, param):
        xp = _xp.namespace(grad)
        direction = _xp.sign(lerp(state.exp_avg, grad, 1.0 - b1), xp=xp)
        return direction, LionState(lerp(state.exp_avg, grad, 1.0 - b2))

    return Stepper(init, update)


def cautious(inner: Stepper) -> Stepper:
    """Mask ``inner``'s direction where it disagrees in sign with the gradient.

    Parameters
    ----------
    inner : Stepper
        Produces the direction ``u`` from the gradient ``g``.

    Returns
    -------
    Stepper
        ``u * mask * (size / (sum(mask) + 1))`` with ``mask = (u * g > 0)``, per matrix
        (per array for 0-d and 1-d parameters; stacked groups are masked per member).

    References
    ----------
    Liang et al., Cautious Optimizers (arXiv:2411.16085).

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import optim
    >>> c = optim.cautious(optim.trace(0.9))
    >>> s = c.init(np.zeros(2))
    >>> s = s._replace(momentum_buffer=np.array([-5.0, 5.0]))
    >>> u, _ = c.update(np.array([1.0, 1.0]), s, None)
    >>> u   # buffer [-3.5, 5.5]; one of two entries kept, scaled by 2 / (1 + 1)
    array([0. , 5.5])
    """

    def update(grad, state, param):
        xp = _xp.namespace(grad)
        direction, state = inner.update(grad, state, param)
        agree = direction * grad > 0
        axes = tuple(range(max(0, grad.ndim - 2), grad.ndim))
        size = math.prod(grad.shape[a] for a in axes)
        mask = xp.astype(agree, direction.dtype)
        count = xp.sum(mask, axis=axes, keepdims=True) if axes else mask
        kept = xp.where(agree, direction, xp.zeros_like(direction))
        return kept * (size / (count + 1.0)), state

    return inner._replace(update=update)


def add_decayed_weights(weight_decay: float, *, cautious: bool = False) -> Stepper:
    """Add ``weight_decay * param`` to the direction (decoupled weight decay).

    Parameters
    ----------
    weight_decay : float
        Decay coefficient; multiplied by the learning rate downstream.
    cautious : bool, default False
        Decay only the entries where the direction and the parameter share a sign,
        i.e. where the step already shrinks the parameter.

    Returns
    -------
    Stepper
        Stateless.

    References
    ----------
    Loshchilov and Hutter, Decoupled Weight Decay Regularization (arXiv:1711.05101);
    Chen et al., Cautious Weight Decay (arXiv:2510.12402).

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import optim
    >>> d = optim.add_decayed_weights(0.5, cautious=True)
    >>> u, _ = d.update(np.array([1.0, 1.0]), d.init(None), np.array([2.0, -2.0]))
    >>> u
    array([2., 1.])
    """
    wd = as_bound(weight_decay, "weight_decay", "add_decayed_weights")

    def direction(grad, param):
        if wd == 0.0:
            return grad
        if param is None:
            msg = ("weight decay reads the parameters: pass params to update "
                   "(optax: update(updates, state, params))")
            raise ValueError(msg)
        if not cautious:
            return grad + wd * param
        xp = _xp.namespace(grad)
        return grad + wd * xp.where(grad * param > 0, param, xp.zeros_like(param))

    return stateless(direction)


def scale(factor: float) -> Stepper:
    """Multiply the direction by a constant.

    Parameters
    ----------
    factor : float
        The constant.

    Returns
    -------
    Stepper
        Stateless.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import optim
    >>> optim.scale(3.0).update(np.ones(1), (), None)[0]
    array([3.])
    """
    factor = float(factor)
    return stateless(lambda grad, param: factor * grad)


def scale_by_learning_rate(learning_rate: float | Callable[[Array], Array | float]) -> Stepper:
    """Multiply by ``-learning_rate``: the direction becomes the update to add.

    Parameters
    ----------
    learning_rate : float or callable
        A constant, or a schedule ``learning_rate(step) -> float array or float``
        called with the 0-d step count (0 at the first step).

    Returns
    -------
    Stepper
        Stateless for a constant, state `CountState` for a schedule.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import optim
    >>> s = optim.scale_by_learning_rate(lambda step: 0.1 / (1.0 + step))
    >>> state = s.init(np.zeros(1))
    >>> u, state = s.update(np.ones(1), state, None)
    >>> u, state = s.update(np.ones(1), state, None)
    >>> u
    array([-0.05])
    """
    if not callable(learning_rate):
        lr = float(learning_rate)
        if not math.isfinite(lr):  # a negative rate ascends (as optax; the torch classes use it)
            msg = f"learning_rate must be a finite number; got {learning_rate!r}"
            raise ValueError(msg)
        return scale(-lr)

    def init(param):
        return CountState(zeros_count(param))

    def update(grad, state, param):
        xp = _xp.namespace(grad)
        lr = learning_rate(state.step)
        lr = xp.astype(lr, grad.dtype) if hasattr(lr, "dtype") else float(lr)
        return -lr * grad, CountState(state.step + 1.0)

    return Stepper(init, update)


def shape_scale(shape: Sequence[int], mode: str | float | None) -> float:
    """The Muon update scale for a matrix of ``shape`` (the last two axes).

    Parameters
    ----------
    shape : tuple of int
        ``(..., m, n)``: m outputs (fan-out), n inputs (fan-in).
    mode : {"jordan", "moonlight", "spectral", "none"} or float
        ``sqrt(max(1, m/n))`` (Jordan), ``0.2 * sqrt(max(m, n))`` (Moonlight, to share
        AdamW's learning rate), ``sqrt(m/n)`` (spectral, RMS->RMS), or 1. A number
        ``c`` gives ``c * sqrt(max(m, n))``: an update of RMS ``c`` for a full-rank
        orthogonal direction (``optax.contrib.muon``'s ``consistent_rms``; Moonlight
        is ``c = 0.2``).

    Returns
    -------
    float

    Raises
    ------
    ValueError
        For an unknown mode.

    Examples
    --------
    >>> from matsign.optim.transforms import shape_scale
    >>> shape_scale((1024, 256), "jordan"), shape_scale((256, 1024), "moonlight")
    (2.0, 6.4)
    """
    m, n = shape[-2], shape[-1]
    empty = m == 0 or n == 0  # an empty update: any scale is exact; checked, then 1
    if isinstance(mode, (int, float)) and not isinstance(mode, bool):
        if not (math.isfinite(mode) and mode > 0):
            msg = f"an update scale given as a number is a target RMS > 0; got {mode!r}"
            raise ValueError(msg)
        return 1.0 if empty else float(mode) * math.sqrt(max(m, n))
    if mode in ("jordan", "moonlight", "spectral") and empty:
        return 1.0
    if mode == "jordan":
        return math.sqrt(max(1.0, m / n))
    if mode == "moonlight":
        return 0.2 * math.sqrt(max(m, n))
    if mode == "spectral":
        return rms_to_rms_scale(shape)
    if mode in ("none", None):
        return 1.0
    msg = f"update scale must be one of {SHAPE_SCALES}; got {mode!r}"
    raise ValueError(msg)


def scale_by_shape(
    mode: str | float = "jordan", *, split: int | Sequence[int] | None = None,
    split_axis: int = -2,
) -> Stepper:
    """Multiply by the Muon update scale of the matrix (see `shape_scale`).

    Parameters
    ----------
    mode : {"jordan", "moonlight", "spectral", "none"} or float, default "jordan"
        The rule; a number is a target RMS.
    split, split_axis
        Scale each block by its own shape (see `orthogonalize`).

    Returns
    -------
    Stepper
        Stateless; the scale is read from the last two axes of the direction.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import optim
    >>> optim.scale_by_shape("spectral").update(np.ones((4, 1)), (), None)[0].ravel()
    array([2., 2., 2., 2.])
    """
    shape_scale((1, 1), mode)
    check_split(split, split_axis)
    return stateless(lambda grad, param: blockwise(
        lambda block: shape_scale(block.shape, mode) * block, grad, split, split_axis))


def check_split(split: int | Sequence[int] | None, axis: int) -> None:
    """Raise ValueError unless ``split`` is None, a count >= 1 or positive block sizes.

    Parameters
    ----------
    split : int, sequence of int or None
        See `orthogonalize`.
    axis : int
        -2 (rows) or -1 (columns).

    Raises
    ------
    ValueError
        For anything else.
    """
    if axis not in (-2, -1):
        msg = f"split_axis must be -2 (rows, fan-out) or -1 (columns, fan-in); got {axis!r}"
        raise ValueError(msg)
    if split is None:
        return
    sizes = tuple(split) if isinstance(split, Sequence) else (split,)
    if not sizes or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1
                            for k in sizes):
        msg = f"split must be a block count >= 1 or a sequence of block sizes >= 1; got {split!r}"
        raise ValueError(msg)


def blockwise(
    fn: Callable[[Array], Array], X: Array, split: int | Sequence[int] | None, axis: int = -2,
) -> Array:
    """``fn`` applied to each block of every matrix of ``X``, in as few batched calls as can be.

    Parameters
    ----------
    fn : callable
        A batched matrix function (it acts on the last two axes).
    X : array of shape (..., m, n)
        The matrices.
    split : int, sequence of int or None
        ``k``: ``k`` equal blocks along ``axis`` (one call, on a reshaped view); a
        sequence: blocks of these sizes, in order (one call per distinct size); None:
        ``fn(X)``.
    axis : {-2, -1}
        Rows (fan-out) or columns (fan-in) of the matrices.

    Returns
    -------
    array
        ``X``'s shape, each block replaced by ``fn`` of it.

    Raises
    ------
    ValueError
        If the blocks do not tile the axis.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign.optim.transforms import blockwise
    >>> blockwise(lambda b: b * b.shape[-2], np.ones((5, 1)), (2, 3))[:, 0]
    array([2., 2., 3., 3., 3.])
    """
    if split is None:
        return fn(X)
    xp = _xp.namespace(X)
    length = X.shape[axis]
    sizes = (length // split,) * split if isinstance(split, int) else tuple(split)
    if sum(sizes) != length or (isinstance(split, int) and length % split):
        msg = f"split {split!r} does not tile the {length} {'rows' if axis == -2 else 'columns'}"
        raise ValueError(msg)
    if len(set(sizes)) == 1:
        return _equal_blocks(fn, X, len(sizes), axis, xp)
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    blocks = [X[..., a:a + k, :] if axis == -2 else X[..., a:a + k]
              for a, k in zip(starts, sizes, strict=True)]
    out = list(blocks)
    for size in dict.fromkeys(sizes):  # one batched call per block size
        chosen = [i for i, k in enumerate(sizes) if k == size]
        done = fn(xp.stack([blocks[i] for i in chosen]))
        for j, i in enumerate(chosen):
            out[i] = done[j, ...]
    return xp.concat(out, axis=axis)


def _equal_blocks(fn, X, count, axis, xp):
    """`blockwise` for ``count`` equal blocks: a reshaped view (rows) or a transpose (columns)."""
    *lead, m, n = X.shape
    if axis == -2:
        return xp.reshape(fn(xp.reshape(X, (*lead, count, m // count, n))), X.shape)
    B = xp.reshape(X, (*lead, m, count, n // count))
    B = fn(xp.permute_dims(B, (*range(len(lead)), len(lead) + 1, len(lead), len(lead) + 2)))
    B = xp.permute_dims(B, (*range(len(lead)), len(lead) + 1, len(lead), len(lead) + 2))
    return xp.reshape(B, X.shape)


def orthogonalize(
    *, schedule: str | Schedule | Sequence[float] = "jordan", steps: int | None = None,
    eps: float = 1e-7, dtype: DType | None = None, method: str = "newton_schulz",
    gram: bool | None = None, match: str | None = None,
    split: int | Sequence[int] | None = None, split_axis: int = -2,
    dual_norm_step: bool = False, update_scale: str | float | None = None,
    work: Callable[[Callable[[Array], Array], Array], Array] | None = None,
) -> Stepper:
    """Replace each matrix by (an approximation of) its matrix sign ``U V^T``.

    Parameters
    ----------
    schedule : str, Schedule or tuple of float, default "jordan"
        A preset name (`matsign.polynomials.names`), a `matsign.polynomials.Schedule`,
        or one coefficient tuple ``(a, b, c)`` repeated (``ns_coefficients``).
    steps : int, optional
        Newton–Schulz steps; the schedule's default (5 for ``"jordan"``) when omitted.
    eps : float, default 1e-7
        The Frobenius norm is clamped below at ``eps`` before dividing by it.
    dtype : dtype, optional
        Compute dtype of the iteration, e.g. ``torch.bfloat16`` as torch.optim.Muon;
        the result has the input's dtype.
    method : {"newton_schulz", "svd"}, default "newton_schulz"
        ``"svd"`` computes the exact ``U_r V_r^T`` by `matsign.msign`.
    gram : bool, optional
        Gram-space iteration for wide or tall matrices; chosen by aspect when None
        (see `matsign.newton_schulz`).
    match : {None, "torch.optim.Muon"}, optional
        Round exactly as torch.optim.Muon (see `matsign.newton_schulz`): with
        ``dtype=torch.bfloat16`` and Jordan's coefficients, bit for bit its update.
    split : int or sequence of int, optional
        Orthogonalise blocks of each matrix separately: ``3`` cuts a fused QKV weight's
        rows into Q, K and V; ``num_heads`` (or ``3 * num_heads``) gives one block per
        attention head; a sequence gives uneven sizes in order, e.g. ``(d_q, d_kv,
        d_kv)`` for grouped-query attention. Equal blocks are one batched call on a
        reshaped view; uneven ones one call per distinct size.
    split_axis : {-2, -1}, default -2
        Cut the rows (fan-out: fused QKV, heads of a query projection) or the columns
        (fan-in: heads of an output projection).
    dual_norm_step : bool, default False
        Scale each (block's) orthogonalised ``O`` by ``<N, O>``, the trace inner product
        with its input ``N``: the dual (nuclear) norm of ``N`` when ``O = U V^T``, so the
        step is steepest descent under the spectral norm, ``||N||_* U V^T`` (Carlson et
        al., stochastic spectral descent; ``optax.contrib.muon``'s ``adaptive=True``).
    update_scale : {"jordan", "moonlight", "spectral", "none"} or float, optional
        Multiply each matrix (or block) by its Muon update scale (`shape_scale`), as
        part of the matrix work: with ``split``, every block by its own. None: no scale.
    work : callable, optional
        ``work(fn, stack)``: who computes which matrices of a stack (the distribution
        seam, see `matsign.optim.every_matrix`, the default: all of them, here).

    Returns
    -------
    Stepper
        Stateless; works on the last two axes of arrays of shape (..., m, n).

    Notes
    -----
    This is `matsign.newton_schulz` (``method="newton_schulz"``) or `matsign.msign`
    (``"svd"``), the routines users call, on the stack the optimizer holds: same
    kernels (Gram space, symmetric products), schedules and compute dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import optim
    >>> o = optim.orthogonalize(schedule="quintic", steps=20)
    >>> u, _ = o.update(np.diag([2.0, 0.5]), (), None)
    >>> bool(np.allclose(u, np.eye(2), atol=1e-6))
    True
    """
    if method not in ("newton_schulz", "svd"):
        msg = f"method must be 'newton_schulz' or 'svd'; got {method!r}"
        raise ValueError(msg)
    schedule = _as_schedule(schedule)
    options = {"steps": steps, "eps": eps, "gram": gram, "dtype": dtype, "match": match}
    schedule.polynomials(steps)  # a bad step count or match fails here, not at step 1
    check_options(steps=steps, match=match)

    check_split(split, split_axis)
    if update_scale is not None:
        shape_scale((1, 1), update_scale)
    work = every_matrix if work is None else work

    def matrix_sign(G):
        if method == "svd":
            O = msign(G, method="svd", dtype=dtype)
        else:
            O = newton_schulz(G, schedule, **options)
        if dual_norm_step:
            xp = _xp.namespace(O)
            O = O * xp.sum(G * O, axis=(-2, -1), keepdims=True)
        return O if update_scale is None else shape_scale(O.shape, update_scale) * O

    def blocks(G):
        return blockwise(matrix_sign, G, split, split_axis)

    return stateless(lambda grad, param: work(blocks, grad))


def _as_schedule(schedule):
    """A Schedule from a preset name, a Schedule or one coefficient tuple."""
    if isinstance(schedule, Schedule):
        return schedule
    if isinstance(schedule, str):
        return preset(schedule)
    coefficients = tuple(float(c) for c in schedule)
    return Schedule("custom", (coefficients,), tail="repeat", default_steps=5)
