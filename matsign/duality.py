"""Norms of deep learning and their duality maps: the steepest-descent direction per norm.

For a norm ``||.||`` on weight matrices, ``dualize(G)`` is the unit-norm direction
``argmax_{||T|| <= 1} <G, T>``; the maximum itself is the dual norm, ``<G, dualize(G)> =
dual_norm(G)``. Weights are stored ``(..., fan_out, fan_in)`` as in ``torch.nn.Linear``;
``orientation="in_out"`` reads them as ``(..., fan_in, fan_out)``.

Every function here chooses its norm with ``norm=`` (one of `NORMS`) and the axis order
with ``orientation=``. ``layout`` means a `matsign.kron.KronLayout` everywhere in matsign;
the 0.1 spellings ``kind=`` and ``layout=`` still work until 0.3, with a DeprecationWarning.
"""

from __future__ import annotations

import math
import warnings

from . import _checks, _xp
from ._iterations import ConvergenceError
from ._typing import Array, DType, Namespace
from .polar import msign
from .polynomials import Schedule

__all__ = [
    "NORMS", "ORIENTATIONS", "dual_norm", "dualize", "norm", "rms_to_rms_scale", "spectral_norm",
]

NORMS = ("spectral", "rms_to_rms", "frobenius", "linf", "l1_to_rms", "conv")
"""The norms that ``norm=`` chooses from, see `dualize`."""

ORIENTATIONS = ("out_in", "in_out")
"""The axis orders that ``orientation=`` chooses from, see `dualize`."""

_0_1_SPELLINGS = {"since": "0.2", "until": "0.3", "layout": "orientation"}  # deprecated


def __getattr__(name):
    """``KINDS``, the 0.1 name of `NORMS`, with a DeprecationWarning."""
    if name == "KINDS":
        msg = ("matsign.duality.KINDS is deprecated since matsign 0.2 and will be removed in "
               "0.3; use matsign.duality.NORMS (the same tuple)")
        warnings.warn(msg, DeprecationWarning, stacklevel=2)
        return NORMS
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


@_checks.renamed_keywords(**_0_1_SPELLINGS)
def dualize(
    G: Array, /, *, norm: str = "spectral", orientation: str = "out_in", kernel_ndim: int = 2,
    method: str = "auto", schedule: str | Schedule | None = None, steps: int | None = None,
    dtype: DType | None = None, xp: Namespace | None = None,
) -> Array:
    """The unit-norm steepest-descent direction ``argmax_{||T|| <= 1} <G, T>``.

    Parameters
    ----------
    G : array of shape (..., fan_out, fan_in)
        A gradient; for ``norm="conv"`` of shape ``(..., fan_out, fan_in, *kernel)``.
    norm : {"spectral", "rms_to_rms", "frobenius", "linf", "l1_to_rms", "conv"}
        The norm, see Notes.
    orientation : {"out_in", "in_out"}, default "out_in"
        ``"out_in"``: the last two (matrix) axes are (fan_out, fan_in), as in
        ``torch.nn.Linear`` and ``Conv2d``; ``"in_out"``: (fan_in, fan_out), as in
        ``torch.nn.Embedding`` or ``x @ W`` code. ``layout=`` is the deprecated 0.1
        spelling (removed in 0.3): in matsign a layout is a `matsign.kron.KronLayout`.
    kernel_ndim : int, default 2
        ``norm="conv"`` only: how many trailing axes are kernel taps.
    method, schedule, steps, dtype
        Passed to `matsign.msign` for the norms built on it (spectral, rms_to_rms, conv).
    xp : namespace, optional
        Array namespace; inferred from ``G`` when omitted.

    Returns
    -------
    array
        Same shape, namespace, dtype and device as ``G``. A zero gradient (or zero
        column, for l1_to_rms) gives a zero direction, never NaN.

    Raises
    ------
    ValueError
        For an unknown norm or orientation, or too few axes.
    TypeError
        For complex input or arrays of mixed libraries.

    Notes
    -----
    With ``G`` stored (fan_out, fan_in), ``d_out = fan_out``, ``d_in = fan_in``:

    ==========  =====================================  =================================
    norm        ``||W||``                              ``dualize(G)``
    ==========  =====================================  =================================
    spectral    ``sigma_max(W)``                       ``U V^T = msign(G)``
    rms_to_rms  ``sqrt(d_in/d_out) sigma_max(W)``      ``sqrt(d_out/d_in) msign(G)``
    frobenius   ``||W||_F``                            ``G / ||G||_F``
    linf        ``max |W_ij|``                         ``sign(G)``
    l1_to_rms   ``max_j ||W[:, j]||_2 / sqrt(d_out)``  ``sqrt(d_out) G[:, j]/||G[:, j]||``
    conv        ``T max_t rms_to_rms(W_t)``            ``sqrt(d_out/d_in) msign(G_t) / T``
    ==========  =====================================  =================================

    l1_to_rms is the operator norm from l1 to RMS: an embedding's one-hot input selects
    a column, so every column gets unit RMS. For conv, ``T`` is the number of kernel
    taps (``k^2`` for a k x k kernel) and ``G_t`` the (fan_out, fan_in) slice at tap
    ``t``, matching the Conv2D duality map of Bernstein & Newhouse (2024), where each
    tap is a Linear map and the ``1/k^2`` keeps the summed taps at unit RMS->RMS norm.

    References
    ----------
    J. Bernstein and L. Newhouse, "Modular duality in deep learning", arXiv:2410.21265
    (2024); Linear, Embed and Conv2D duality maps.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign.duality import dualize
    >>> G = np.array([[3.0, 0.0], [0.0, -4.0]])
    >>> dualize(G)
    array([[ 1.,  0.],
           [ 0., -1.]])
    >>> dualize(G, norm="frobenius")
    array([[ 0.6,  0. ],
           [ 0. , -0.8]])
    >>> dualize(np.zeros((2, 3)), norm="l1_to_rms")
    array([[0., 0., 0.],
           [0., 0., 0.]])
    """
    xp = _xp.namespace(G, xp=xp)
    G = _validated(G, norm, orientation, kernel_ndim, "dualize", xp)
    options = {"method": method, "schedule": schedule, "steps": steps, "dtype": dtype}
    if _checks.is_empty(G):  # zeros (no fan to scale by), the options checked all the same
        return msign(G, xp=xp, **options)
    if norm in ("spectral", "rms_to_rms"):
        Q = msign(G, xp=xp, **options)
        return Q if norm == "spectral" else Q * rms_to_rms_scale(G.shape, orientation=orientation)
    if norm == "frobenius":
        return G / _xp.safe_divisor(_xp.frobenius_norm(G, xp=xp), xp=xp)
    if norm == "linf":
        return _xp.sign(G, xp=xp)
    if norm == "l1_to_rms":
        return _dualize_l1_to_rms(G, orientation, xp)
    return _dualize_conv(G, orientation, kernel_ndim, options, xp)


def _validated(G, norm, orientation, kernel_ndim, name, xp):
    """Check the norm, orientation and shape; promote integers to float."""
    kernel_ndim = _checks.as_count(kernel_ndim, "kernel_ndim", name, minimum=0)
    if norm not in NORMS:
        msg = f"{name}: norm must be one of {', '.join(NORMS)}; got {norm!r}"
        raise ValueError(msg)
    if orientation not in ORIENTATIONS:
        msg = f"{name}: orientation must be 'out_in' or 'in_out'; got {orientation!r}"
        raise ValueError(msg)
    if norm == "conv" and G.ndim < 2 + kernel_ndim:
        msg = (f"{name}: norm 'conv' needs at least {2 + kernel_ndim} axes; "
               f"got shape {tuple(G.shape)}")
        raise ValueError(msg)
    return _checks.as_float_matrix(G, name, xp=xp)


def _fans(shape, orientation):
    """(fan_out, fan_in) of a matrix of ``shape`` (..., rows, cols) in ``orientation``."""
    rows, cols = int(shape[-2]), int(shape[-1])
    return (rows, cols) if orientation == "out_in" else (cols, rows)


def rms_to_rms_scale(shape: tuple, /, *, orientation: str = "out_in") -> float:
    """``sqrt(fan_out / fan_in)``: the RMS->RMS dual of ``msign(G)`` is this times it.

    Parameters
    ----------
    shape : tuple of int
        ``(..., rows, cols)`` of the matrix.
    orientation : {"out_in", "in_out"}, default "out_in"
        Which of rows and columns is the fan-out (see `dualize`).

    Returns
    -------
    float
        The factor between the spectral and the RMS->RMS duality maps; Muon's
        ``update_scale="spectral"``.

    Raises
    ------
    ValueError
        For fewer than two sizes, a negative size, a fan-in of 0 (the ratio has no
        value) or an unknown orientation.
    TypeError
        For a size that is not an integer.

    Examples
    --------
    >>> from matsign.duality import rms_to_rms_scale
    >>> rms_to_rms_scale((1024, 256)), rms_to_rms_scale((1024, 256), orientation="in_out")
    (2.0, 0.5)
    """
    name = "rms_to_rms_scale"
    if orientation not in ORIENTATIONS:
        msg = f"{name}: orientation must be 'out_in' or 'in_out'; got {orientation!r}"
        raise ValueError(msg)
    if len(shape) < 2:
        msg = f"{name} expects a shape (..., rows, cols); got {tuple(shape)}"
        raise ValueError(msg)
    sizes = [_checks.as_count(d, "each entry of shape", name, minimum=0) for d in shape[-2:]]
    fan_out, fan_in = _fans(sizes, orientation)
    if fan_in == 0:
        msg = f"{name}: shape {tuple(shape)} has fan-in 0; sqrt(fan_out / fan_in) has no value"
        raise ValueError(msg)
    return math.sqrt(fan_out / fan_in)


def _fan_out_axis(orientation):
    return -2 if orientation == "out_in" else -1


def _dualize_l1_to_rms(G, orientation, xp):
    """Each input's vector (a column for out_in) scaled to RMS one; zero vectors stay zero."""
    axis = _fan_out_axis(orientation)
    fan_out = int(G.shape[axis])
    lengths = _vector_norm(G, axis, xp)
    return G * (math.sqrt(fan_out) / _xp.safe_divisor(lengths, xp=xp))


def _vector_norm(G, axis, xp):
    """Euclidean norm along ``axis``, kept, scaled by the max so it neither over- nor underflows."""
    scale = xp.max(xp.abs(G), axis=axis, keepdims=True)
    safe = _xp.safe_divisor(scale, xp=xp)
    return scale * xp.sqrt(xp.sum((G / safe) ** 2, axis=axis, keepdims=True))


def _taps_first(G, kernel_ndim, xp):
    """(..., a, b, *kernel) -> (..., T, a, b) with ``T`` taps, and the way back."""
    nd, shape = G.ndim, tuple(G.shape)
    lead = tuple(range(nd - kernel_ndim - 2))
    order = (*lead, *range(nd - kernel_ndim, nd), nd - kernel_ndim - 2, nd - kernel_ndim - 1)
    moved = xp.permute_dims(G, order)
    flat = xp.reshape(moved, (*moved.shape[: len(lead)], -1, *moved.shape[-2:]))
    inverse = tuple(order.index(i) for i in range(nd))

    def back(X):
        return xp.permute_dims(xp.reshape(X, tuple(moved.shape)), inverse)

    return flat, back, math.prod(shape[nd - kernel_ndim :])


def _dualize_conv(G, orientation, kernel_ndim, options, xp):
    """Per tap ``sqrt(fan_out / fan_in) msign(G_t) / T`` (Bernstein & Newhouse, Conv2D)."""
    taps, back, T = _taps_first(G, kernel_ndim, xp)
    Q = msign(taps, xp=xp, **options)
    return back(Q * (rms_to_rms_scale(taps.shape, orientation=orientation) / T))


@_checks.renamed_keywords(**_0_1_SPELLINGS, kind="norm")
def norm(
    G: Array, /, norm: str = "spectral", *, orientation: str = "out_in", kernel_ndim: int = 2,
    xp: Namespace | None = None,
) -> Array:
    """The norm ``||G||`` chosen by ``norm``, per matrix (or per kernel for conv).

    Parameters
    ----------
    G : array of shape (..., fan_out, fan_in)
        Weights or a direction; ``(..., fan_out, fan_in, *kernel)`` for conv.
    norm : {"spectral", "rms_to_rms", "frobenius", "linf", "l1_to_rms", "conv"}
        See `dualize` for the definitions; positional or keyword. ``kind=`` is the
        deprecated 0.1 spelling (removed in 0.3).
    orientation : {"out_in", "in_out"}, default "out_in"
        Axis order of the matrix, see `dualize` (``layout=``, deprecated).
    kernel_ndim : int, default 2
        Conv only: the number of trailing kernel axes.
    xp : namespace, optional
        Array namespace; inferred from ``G`` when omitted.

    Returns
    -------
    array of shape (...)
        In ``G``'s dtype, float32 for half precisions. Spectral norms are exact (SVD);
        see `spectral_norm` for the cheap estimate.

    Raises
    ------
    ValueError
        As `dualize`.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign.duality import norm
    >>> W = np.array([[3.0, 0.0], [0.0, -4.0]])
    >>> float(norm(W)), float(norm(W, "frobenius")), float(norm(W, "linf"))
    (4.0, 5.0, 4.0)
    """
    return _measure(G, norm, orientation, kernel_ndim, xp, dual=False)


@_checks.renamed_keywords(**_0_1_SPELLINGS, kind="norm")
def dual_norm(
    G: Array, /, norm: str = "spectral", *, orientation: str = "out_in", kernel_ndim: int = 2,
    xp: Namespace | None = None,
) -> Array:
    """The dual norm ``max_{||T|| <= 1} <G, T> = <G, dualize(G)>`` of the norm ``norm``.

    Parameters
    ----------
    G : array of shape (..., fan_out, fan_in)
        A gradient; ``(..., fan_out, fan_in, *kernel)`` for conv.
    norm : {"spectral", "rms_to_rms", "frobenius", "linf", "l1_to_rms", "conv"}
        The primal norm, see `dualize`; positional or keyword. ``kind=`` is the
        deprecated 0.1 spelling (removed in 0.3).
    orientation : {"out_in", "in_out"}, default "out_in"
        Axis order of the matrix, see `dualize` (``layout=``, deprecated).
    kernel_ndim : int, default 2
        Conv only: the number of trailing kernel axes.
    xp : namespace, optional
        Array namespace; inferred from ``G`` when omitted.

    Returns
    -------
    array of shape (...)
        In ``G``'s dtype, float32 for half precisions.

    Raises
    ------
    ValueError
        As `dualize`.

    Notes
    -----
    Nuclear norm ``sum sigma_i`` for spectral, ``sqrt(d_out/d_in)`` times it for
    rms_to_rms, Frobenius for Frobenius, ``sum |G_ij|`` for linf,
    ``sqrt(d_out) sum_j ||G[:, j]||_2`` for l1_to_rms and
    ``sqrt(d_out/d_in) / T * sum_t ||G_t||_*`` for conv.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign.duality import dual_norm
    >>> G = np.array([[3.0, 0.0], [0.0, -4.0]])
    >>> float(dual_norm(G)), float(dual_norm(G, "linf"))
    (7.0, 7.0)
    """
    return _measure(G, norm, orientation, kernel_ndim, xp, dual=True)


def _measure(G, norm, orientation, kernel_ndim, xp, *, dual):
    """Shared body of `norm` and `dual_norm`: work dtype, then one formula per norm."""
    xp = _xp.namespace(G, xp=xp)
    G = _validated(G, norm, orientation, kernel_ndim, "dual_norm" if dual else "norm", xp)
    work = _xp.decomposition_dtype(G.dtype, xp)
    G = _xp.astype(G, work, xp=xp)
    if _checks.is_empty(G):  # every norm of an empty matrix (or kernel) is 0
        core = 2 + (kernel_ndim if norm == "conv" else 0)
        return xp.zeros(G.shape[:-core], dtype=work, device=_xp.device(G))
    if norm in ("spectral", "rms_to_rms"):
        return _operator_measure(G, norm, orientation, xp, dual=dual)
    if norm == "frobenius":
        return _xp.frobenius_norm(G, xp=xp)[..., 0, 0]
    if norm == "linf":
        return xp.sum(xp.abs(G), axis=(-2, -1)) if dual else xp.max(xp.abs(G), axis=(-2, -1))
    if norm == "l1_to_rms":
        return _l1_to_rms_measure(G, orientation, xp, dual=dual)
    taps, _, T = _taps_first(G, kernel_ndim, xp)
    per_tap = _operator_measure(taps, "rms_to_rms", orientation, xp, dual=dual)
    return xp.sum(per_tap, axis=-1) / T if dual else T * xp.max(per_tap, axis=-1)


def _operator_measure(G, norm, orientation, xp, *, dual):
    """Nuclear (dual) or spectral norm from exact singular values, RMS-scaled if asked."""
    def measure(X):
        S = xp.linalg.svdvals(X)
        return xp.sum(S, axis=-1) if dual else xp.max(S, axis=-1)

    value = _checks.nan_where_nonfinite(measure, G, xp=xp)
    if norm == "spectral":
        return value
    scale = rms_to_rms_scale(G.shape, orientation=orientation)
    return value * scale if dual else value / scale


def _l1_to_rms_measure(G, orientation, xp, *, dual):
    """``max_j ||G_j|| / sqrt(d_out)`` or its dual ``sqrt(d_out) sum_j ||G_j||``."""
    axis = _fan_out_axis(orientation)
    root = math.sqrt(int(G.shape[axis]))
    lengths = xp.squeeze(_vector_norm(G, axis, xp), axis=axis)
    return root * xp.sum(lengths, axis=-1) if dual else xp.max(lengths, axis=-1) / root


def spectral_norm(
    G: Array, /, *, tol: float | None = 1e-6, max_steps: int = 100,
    xp: Namespace | None = None,
) -> Array:
    """The largest singular value of each matrix by batched power iteration.

    Parameters
    ----------
    G : array of shape (..., m, n)
        Real input.
    tol : float or None, default 1e-6
        Stop once every matrix's estimate changed by at most ``tol`` times itself in
        one step. On JAX the loop runs on the device (``lax.while_loop``, under
        ``jax.jit`` too); elsewhere each step reads the test on the host (free on the
        CPU, one sync per step on CUDA). None runs exactly ``max_steps`` steps without
        a sync.
    max_steps : int, default 100
        Step limit.
    xp : namespace, optional
        Array namespace; inferred from ``G`` when omitted.

    Returns
    -------
    array of shape (...)
        The estimate, a lower bound on ``sigma_max`` (Rayleigh quotient), in ``G``'s
        dtype, float32 for half precisions. Zero for a zero matrix; NaN for a matrix
        holding inf or NaN (the others of the stack as if alone).

    Raises
    ------
    ConvergenceError
        With ``tol``, if ``max_steps`` steps do not reach it (one host read at the
        end; under ``jax.jit`` nothing is read and the last estimate is returned).
    ValueError
        For fewer than two axes.
    TypeError
        For complex input or arrays of mixed libraries.

    Notes
    -----
    Iterates ``v <- G^T G v / ||G^T G v||`` on the smaller side from a fixed,
    dense start vector, and returns ``||G v||``. The relative error of the estimate
    falls like ``(sigma_2 / sigma_1)^(4k)`` after k steps, so it settles long before
    the vector does when the top two singular values are close; the relative error
    left at the stop is about ``tol / (1 - (sigma_2 / sigma_1)^4)``.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign.duality import spectral_norm
    >>> G = np.array([[3.0, 0.0], [0.0, -4.0], [0.0, 0.0]])
    >>> round(float(spectral_norm(G)), 4)
    4.0
    """
    xp = _xp.namespace(G, xp=xp)
    G = _checks.as_float_matrix(G, "spectral_norm", xp=xp)
    if tol is not None:
        _checks.as_bound(tol, "tol", "spectral_norm", strict=True)
    max_steps = _checks.as_count(max_steps, "max_steps", "spectral_norm")
    work = _xp.decomposition_dtype(G.dtype, xp)
    G = _xp.astype(G, work, xp=xp)
    if _checks.is_empty(G):
        return xp.zeros(G.shape[:-2], dtype=work, device=_xp.device(G))
    if G.shape[-2] < G.shape[-1]:
        G = xp.matrix_transpose(G)

    def estimate(Y):
        scale = _xp.frobenius_norm(Y, xp=xp)
        X = Y / _xp.safe_divisor(scale, xp=xp)  # unit Frobenius norm: no overflow in G^T G
        return scale[..., 0, 0] * _power_iteration(X, tol, max_steps, xp)

    return _checks.nan_where_nonfinite(estimate, G, xp=xp)  # NaN there, no stalled stack


def _power_iteration(X, tol, max_steps, xp):
    """``||X v||`` for the top right singular vector ``v`` of each ``X`` (..., m, n), m >= n."""
    n = X.shape[-1]
    v = xp.cos(xp.arange(n, dtype=X.dtype, device=_xp.device(X)) * 2.3999632 + 0.5)
    v = xp.broadcast_to(v[:, None], (*X.shape[:-2], n, 1))
    estimate = xp.zeros(X.shape[:-2], dtype=X.dtype, device=_xp.device(X))
    settled = xp.asarray(False, device=_xp.device(X))

    def going(carry):
        steps = carry[0] < max_steps
        return steps if tol is None else xp.logical_and(steps, xp.logical_not(carry[3]))

    def step(carry):
        k, v, previous, _ = carry
        Xv = X @ v
        estimate = _column_norm(Xv, xp)
        w = xp.matrix_transpose(X) @ Xv
        v = w / _xp.safe_divisor(_column_norm(w, xp)[..., None, None], xp=xp)
        stop = settled if tol is None else xp.all(xp.abs(estimate - previous) <= tol * estimate)
        return k + 1, v, estimate, stop

    _, _, estimate, settled = _xp.while_loop(going, step, (0, v, estimate, settled))
    if tol is None or _xp.is_traced(settled) or bool(settled):
        return estimate
    msg = f"spectral_norm: {max_steps} power steps did not reach tol={tol}"
    raise ConvergenceError(msg)


def _column_norm(x, xp):
    """Euclidean norm of (..., k, 1) column vectors, shape (...)."""
    return xp.sqrt(xp.sum(x * x, axis=(-2, -1)))
