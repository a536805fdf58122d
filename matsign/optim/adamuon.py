"""AdaMuon and NorMuon: Muon with a second moment of the orthogonalised update.

Both keep Muon's momentum and orthogonalisation and then divide the orthogonalised
matrix ``O`` by the root of a running second moment of ``O`` itself: AdaMuon per entry
(after orthogonalising the *sign* of the momentum), NorMuon per row (per output neuron).
A final rescale fixes the size of each matrix's update: to Adam's RMS of 0.2 (AdaMuon),
or back to the Frobenius norm ``O`` had (NorMuon's code; its paper also uses 0.2).

The second moment is statistics of whole matrices, so the blocks here do their matrix
work, orthogonalisation *and* normalisation, in one ``work(fn, stack)`` call (the
distribution seam of `matsign.optim.orthogonalize`) with the second moment packed beside
the momentum: a distributed adapter brings whole matrices to the rank that computes
them, and the statistics and the rescale are those of the whole matrix on every
transport. The docs page "AdaMuon and NorMuon" maps each option to the papers and to the
reference code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from .. import _xp
from .._checks import as_bound, as_rate
from .._typing import Array, DType
from ..polynomials import Schedule
from ._base import Stepper, chain, every_matrix
from .transforms import (
    add_decayed_weights,
    eps_safe,
    lerp,
    orthogonalize,
    scale_by_learning_rate,
    scale_by_shape,
    trace,
    zeros_count,
)

__all__ = [
    "NEURONS",
    "AdaMuonCountedState",
    "AdaMuonState",
    "NorMuonState",
    "adamuon",
    "normuon",
    "normuon_axis",
    "packed_shape",
    "scale_by_adamuon",
    "scale_by_normuon",
]

NEURONS = ("rows", "columns", "longer")
"""What ``neurons=`` chooses from: where NorMuon keeps its statistics (`normuon_axis`)."""


class AdaMuonState(NamedTuple):
    """State of `scale_by_adamuon`: the per-entry second moment (the reference's name)."""

    v_buffer: Any


class AdaMuonCountedState(NamedTuple):
    """State of `scale_by_adamuon` with ``bias_correction=True``: also the step count."""

    step: Any
    v_buffer: Any


class NorMuonState(NamedTuple):
    """State of `scale_by_normuon`: one second moment per neuron (the reference's name).

    Shape ``(..., m, 1)`` for row statistics, ``(..., 1, n)`` for column statistics.
    """

    second_momentum_buffer: Any


def normuon_axis(shape: tuple[int, ...], neurons: str) -> int:
    """The axis `~matsign.optim.scale_by_normuon` averages ``O^2`` over: -1 (row statistics) or -2.

    Parameters
    ----------
    shape : tuple of int
        ``(..., m, n)``, the matrix the stepper sees (fan-out first).
    neurons : {"rows", "columns", "longer"}
        One statistic per row, per column, or along the longer side (per row when
        ``m >= n``, else per column: modded-nanogpt).

    Returns
    -------
    int

    Raises
    ------
    ValueError
        For an unknown ``neurons``.

    Examples
    --------
    >>> from matsign.optim.adamuon import normuon_axis
    >>> normuon_axis((8, 4), "rows"), normuon_axis((4, 8), "longer")
    (-1, -2)
    """
    if neurons not in NEURONS:
        msg = f"neurons must be one of {NEURONS}; got {neurons!r}"
        raise ValueError(msg)
    if neurons == "rows" or (neurons == "longer" and shape[-2] >= shape[-1]):
        return -1
    return -2


def packed_shape(shape: tuple[int, ...], kind: str, neurons: str = "rows") -> tuple[int, ...]:
    """The shape one matrix travels as through ``work``: momentum and moment side by side.

    Parameters
    ----------
    shape : tuple of int
        ``(..., m, n)``.
    kind : {"adamuon", "normuon"}
        AdaMuon packs its ``(m, n)`` moment beside the matrix, ``(m, 2n)``; NorMuon a
        column ``(m, n + 1)`` (row statistics) or a row ``(m + 1, n)``.
    neurons : {"rows", "columns", "longer"}, default "rows"
        NorMuon's statistics (see `normuon_axis`).

    Returns
    -------
    tuple of int

    Examples
    --------
    >>> from matsign.optim.adamuon import packed_shape
    >>> packed_shape((8, 4), "adamuon"), packed_shape((8, 4), "normuon")
    ((8, 8), (8, 5))
    """
    *lead, m, n = shape
    if kind == "adamuon":
        return (*lead, m, 2 * n)
    axis = normuon_axis(shape, neurons)
    return (*lead, m, n + 1) if axis == -1 else (*lead, m + 1, n)


def _packed(work, fn, X, V, axis):
    """``fn(X, V) -> (D, V')`` on whole matrices, through ``work`` with ``V`` packed on ``axis``.

    ``V`` broadcasts against ``X`` except along ``axis``; ``D`` has ``X``'s shape.
    """
    if work is every_matrix:  # every matrix here: nothing travels, no copies
        return fn(X, V)
    xp = _xp.namespace(X)
    size = X.shape[axis]

    def unpack(P):
        return (P[..., :size], P[..., size:]) if axis == -1 else (P[..., :size, :],
                                                                P[..., size:, :])

    def whole(P):
        return xp.concat(fn(*unpack(P)), axis=axis)

    return unpack(work(whole, xp.concat((X, V), axis=axis)))


def _frobenius(X, xp):
    """Each matrix's Frobenius norm, kept as ``(..., 1, 1)`` (one pass)."""
    return xp.linalg.vector_norm(X, axis=(-2, -1), keepdims=True)


def _orthogonalizer(schedule, steps, eps, dtype, method, gram, match):
    """The matrix sign of `orthogonalize` with these options, as ``O = f(N)`` (checked now)."""
    ortho = orthogonalize(schedule=schedule, steps=steps, eps=eps, dtype=dtype, method=method,
                          gram=gram, match=match)
    return lambda N: ortho.update(N, (), None)[0]


def scale_by_adamuon(
    b2: float = 0.95, eps: float = 1e-8, *, sign: bool = True, rms: float = 0.2,
    bias_correction: bool = False, schedule: str | Schedule = "jordan",
    steps: int | None = None, ns_eps: float = 1e-7, dtype: DType | None = None,
    method: str = "newton_schulz", gram: bool | None = None, match: str | None = None,
    work: Callable[[Callable[[Array], Array], Array], Array] | None = None,
) -> Stepper:
    """AdaMuon's direction: the orthogonalised sign over the root of its second moment.

    Parameters
    ----------
    b2 : float, default 0.95
        Decay of the second moment ``V``; the reference code uses Muon's momentum.
    eps : float, default 1e-8
        Added to ``sqrt(V)`` and to the Frobenius norm of the rescale.
    sign : bool, default True
        Orthogonalise ``sign(N)`` (the sign-stabilised update of the paper's v2 and the
        reference code); False orthogonalises ``N`` (the paper's v1).
    rms : float, default 0.2
        The RMS of each matrix's direction: ``rms sqrt(m n) / (||O_hat||_F + eps)``
        multiplies ``O_hat`` (Adam's typical update RMS, so Adam's learning rate carries
        over).
    bias_correction : bool, default False
        Divide ``V`` by ``1 - b2^t`` (the v1 code, pytorch-optimizer); the rescale
        cancels it up to ``eps``.
    schedule, steps, ns_eps, dtype, method, gram, match
        The orthogonalisation (see `orthogonalize`, whose ``eps`` is ``ns_eps``):
        Jordan's quintic for 5 steps by default, as the reference code (which computes
        it in bfloat16: ``dtype=torch.bfloat16``).
    work : callable, optional
        ``work(fn, stack)``: who computes which matrices (see `orthogonalize`). The
        moment travels with the matrix (`~matsign.optim.adamuon.packed_shape`), so
        orthogonalisation, moment and rescale are computed on whole matrices by their
        owner.

    Returns
    -------
    Stepper
        State `AdaMuonState` (`AdaMuonCountedState` with ``bias_correction``); works on
        ``(..., m, n)``, a stack of matrices being normalised each on its own.

    Raises
    ------
    ValueError
        For ``b2`` outside [0, 1), ``eps < 0``, ``rms <= 0`` or a bad orthogonalisation
        option.

    Notes
    -----
    With ``N`` the (Nesterov) momentum that `trace` hands on, per matrix:
    ``O = NS(sign(N))``; ``V <- b2 V + (1 - b2) O * O``; ``O_hat = O / (sqrt(V) + eps)``;
    direction ``rms sqrt(m n) O_hat / (||O_hat||_F + eps)``.

    References
    ----------
    Si, Zhang and Shen, AdaMuon: Adaptive Muon Optimizer (arXiv:2507.11005), and their
    code, github.com/Chongjie-Si/AdaMuon (``gpt2/models/optimizers/adamuon.py``).

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import optim
    >>> a = optim.scale_by_adamuon(method="svd")
    >>> G = np.array([[3.0, -1.0], [0.5, 2.0], [1.0, 1.0]])
    >>> u, state = a.update(G, a.init(G), None)
    >>> round(float(np.sqrt(np.mean(u ** 2))), 6)     # the RMS of Adam's update
    0.2
    >>> state.v_buffer.shape
    (3, 2)
    """
    b2 = as_rate(b2, "b2", "scale_by_adamuon")
    eps = as_bound(eps, "eps", "scale_by_adamuon")
    rms = as_bound(rms, "rms", "scale_by_adamuon", strict=True)
    orth = _orthogonalizer(schedule, steps, ns_eps, dtype, method, gram, match)
    work = every_matrix if work is None else work

    def init(param):
        xp = _xp.namespace(param)
        if bias_correction:
            return AdaMuonCountedState(zeros_count(param), xp.zeros_like(param))
        return AdaMuonState(xp.zeros_like(param))

    def update(grad, state, param):
        xp = _xp.namespace(grad)
        step = state.step + 1.0 if bias_correction else None

        def normalised(N, V):
            O = orth(_xp.sign(N, xp=xp) if sign else N)
            V = lerp(V, O * O, 1.0 - b2)  # b2 V + (1 - b2) O^2, one fused pass on torch
            Vhat = V
            if bias_correction:  # a torch stack holds one count per member: (k,) -> (k, 1, 1)
                count = xp.reshape(step, tuple(step.shape) + (1,) * (V.ndim - step.ndim))
                Vhat = V / xp.astype(1.0 - xp.pow(xp.full_like(count, b2), count), V.dtype)
            size = math.sqrt(O.shape[-2] * O.shape[-1])

            def scaled(O, V):
                O_hat = O / (xp.sqrt(V) + eps)
                return O_hat * (rms * size / (_frobenius(O_hat, xp) + eps))

            return eps_safe(scaled, eps, O, Vhat, xp=xp), V

        direction, V = _packed(work, normalised, grad, state.v_buffer, -1)
        new = AdaMuonCountedState(step, V) if bias_correction else AdaMuonState(V)
        return direction, new

    return Stepper(init, update)


def adamuon(
    learning_rate: float | Callable[[Array], Array | float] = 6e-4, *, momentum: float = 0.95,
    nesterov: bool = True, b2: float | None = None, eps: float = 1e-8, sign: bool = True,
    rms: float = 0.2, bias_correction: bool = False, weight_decay: float = 0.0,
    cautious_weight_decay: bool = False, schedule: str | Schedule = "jordan",
    steps: int | None = None, ns_eps: float = 1e-7, dtype: DType | None = None,
    method: str = "newton_schulz",
) -> Stepper:
    """AdaMuon: Muon with an element-wise second moment of the orthogonalised sign.

    Parameters
    ----------
    learning_rate : float or callable, default 6e-4
        A constant or a schedule of the step count. The direction has Adam's RMS
        (``rms``), so Adam's learning rate and weight decay carry over: the reference
        GPT-2 runs use 6e-4 (the reference class's default of 0.02 is Muon's).
    momentum : float, default 0.95
        EMA momentum ``buf <- lerp(buf, g, 1 - momentum)``.
    nesterov : bool, default True
        Use the look-ahead ``lerp(g, buf, momentum)``.
    b2 : float, optional
        Decay of the second moment; None: ``momentum``, as the reference code.
    eps, sign, rms, bias_correction
        See `scale_by_adamuon`.
    weight_decay : float, default 0.0
        Decoupled: the step subtracts ``learning_rate * weight_decay * param``.
    cautious_weight_decay : bool, default False
        Decay only entries where the update and the parameter share a sign.
    schedule, steps, ns_eps, dtype, method
        The orthogonalisation (see `scale_by_adamuon`).

    Returns
    -------
    Stepper
        For matrices (``(..., m, n)``; `multi` flattens conv kernels); route the rest
        to AdamW as for Muon.

    Notes
    -----
    The chain is `trace` (EMA, Nesterov), `scale_by_adamuon`, `add_decayed_weights`
    and `scale_by_learning_rate`: ``W <- W - lr (D + wd W)``. Under the sign, an EMA and
    a sum of gradients (the Megatron code's momentum) give the same direction.

    References
    ----------
    Si, Zhang and Shen, AdaMuon: Adaptive Muon Optimizer (arXiv:2507.11005).

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import optim
    >>> opt = optim.adamuon(1e-3, method="svd")
    >>> W = np.zeros((4, 3))
    >>> u, state = opt.update(np.arange(12.0).reshape(4, 3) - 5.0, opt.init(W), W)
    >>> round(float(np.sqrt(np.mean(u ** 2))), 8)     # lr times RMS 0.2
    0.0002
    """
    momentum = as_rate(momentum, "momentum", "adamuon")
    return chain(
        trace(momentum, nesterov=nesterov, ema=True),
        scale_by_adamuon(momentum if b2 is None else b2, eps, sign=sign, rms=rms,
                         bias_correction=bias_correction, schedule=schedule, steps=steps,
                         ns_eps=ns_eps, dtype=dtype, method=method),
        add_decayed_weights(weight_decay, cautious=cautious_weight_decay),
        scale_by_learning_rate(learning_rate),
    )


def scale_by_normuon(
    b2: float = 0.95, eps: float = 1e-10, *, neurons: str = "rows", rms: float | None = None,
    schedule: str | Schedule = "jordan", steps: int | None = None, ns_eps: float = 1e-7,
    dtype: DType | None = None, method: str = "newton_schulz", gram: bool | None = None,
    match: str | None = None,
    work: Callable[[Callable[[Array], Array], Array], Array] | None = None,
) -> Stepper:
    """NorMuon's direction: each row of the orthogonalised momentum over its running RMS.

    Parameters
    ----------
    b2 : float, default 0.95
        Decay of the per-neuron second moment ``v``.
    eps : float, default 1e-10
        Added to ``sqrt(v)`` and to the norm of the rescale (the reference's constant).
    neurons : {"rows", "columns", "longer"}, default "rows"
        Where the statistics live (see `~matsign.optim.adamuon.normuon_axis`): per row
        of the ``(fan_out, fan_in)`` matrix, i.e. per output neuron (the paper and the
        reference code), per column, or along the longer side (modded-nanogpt).
    rms : float, optional
        None: rescale to the Frobenius norm ``O`` had (the reference code, so Muon's
        learning rates and update scale carry over); a number: to that RMS,
        ``rms sqrt(m n) / ||O_hat||_F`` (the paper's Algorithm 1 with 0.2).
    schedule, steps, ns_eps, dtype, method, gram, match
        The orthogonalisation (see `orthogonalize`, whose ``eps`` is ``ns_eps``).
    work : callable, optional
        ``work(fn, stack)`` (see `scale_by_adamuon`): the statistics travel with the
        matrix, so the rescale is that of the whole matrix on every transport.

    Returns
    -------
    Stepper
        State `NorMuonState`, ``(..., m, 1)`` or ``(..., 1, n)``.

    Raises
    ------
    ValueError
        For ``b2`` outside [0, 1), ``eps < 0``, ``rms <= 0``, an unknown ``neurons`` or
        a bad orthogonalisation option.

    Notes
    -----
    Per matrix, with ``N`` from `trace`: ``O = NS(N)``;
    ``v <- lerp(v, mean_j O_ij^2, 1 - b2)`` (one entry per row ``i``);
    ``O_hat = O / (sqrt(v) + eps)``; direction ``O_hat ||O||_F / (||O_hat||_F + eps)``.

    References
    ----------
    Li, Liu, Liang, Chen and Zhao, NorMuon: Making Muon more efficient and scalable
    (arXiv:2510.05491), and their code, github.com/zichongli5/NorMuon (``normuon.py``).

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import optim
    >>> s = optim.scale_by_normuon(method="svd")
    >>> G = np.array([[4.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    >>> u, state = s.update(G, s.init(G), None)
    >>> state.second_momentum_buffer.shape
    (2, 1)
    >>> np.round(np.sum(u ** 2, axis=1), 6)     # rows balanced, the norm of U V^T kept
    array([1., 1.])
    """
    b2 = as_rate(b2, "b2", "scale_by_normuon")
    normuon_axis((1, 1), neurons)
    eps = as_bound(eps, "eps", "scale_by_normuon")
    if rms is not None:
        rms = as_bound(rms, "rms", "scale_by_normuon", strict=True)
    orth = _orthogonalizer(schedule, steps, ns_eps, dtype, method, gram, match)
    work = every_matrix if work is None else work

    def init(param):
        xp = _xp.namespace(param)
        shape = tuple(param.shape)
        if len(shape) < 2:
            msg = f"scale_by_normuon expects matrices of shape (..., m, n); got {shape}"
            raise ValueError(msg)
        stat = list(shape)
        stat[normuon_axis(shape, neurons)] = 1  # one statistic per row (or column)
        dtype = _xp.result_dtype(param, xp)
        return NorMuonState(xp.zeros(tuple(stat), dtype=dtype, device=_xp.device(param)))

    def update(grad, state, param):
        xp = _xp.namespace(grad)
        axis = normuon_axis(tuple(grad.shape), neurons)  # v sits beside O along it

        def normalised(N, v):
            O = orth(N)
            v = lerp(v, xp.mean(O * O, axis=axis, keepdims=True), 1.0 - b2)

            def scaled(O, v):
                O_hat = O * (1.0 / (xp.sqrt(v) + eps))
                target = (_frobenius(O, xp) if rms is None
                          else rms * math.sqrt(O.shape[-2] * O.shape[-1]))
                return O_hat * (target / (_frobenius(O_hat, xp) + eps))

            return eps_safe(scaled, eps, O, v, xp=xp), v

        direction, v = _packed(work, normalised, grad, state.second_momentum_buffer, axis)
        return direction, NorMuonState(v)

    return Stepper(init, update)


def normuon(
    learning_rate: float | Callable[[Array], Array | float] = 0.02, *, momentum: float = 0.95,
    nesterov: bool = True, b2: float = 0.95, eps: float = 1e-10, neurons: str = "rows",
    rms: float | None = None, update_scale: str | float | None = None,
    weight_decay: float = 0.0, cautious_weight_decay: bool = False,
    schedule: str | Schedule = "jordan", steps: int | None = None, ns_eps: float = 1e-7,
    dtype: DType | None = None, method: str = "newton_schulz",
) -> Stepper:
    """NorMuon: Muon with neuron-wise normalisation of the orthogonalised update.

    Parameters
    ----------
    learning_rate : float or callable, default 0.02
        A constant or a schedule of the step count (the reference's default; Muon's
        learning rates carry over with ``rms=None``).
    momentum : float, default 0.95
        EMA momentum ``buf <- lerp(buf, g, 1 - momentum)``.
    nesterov : bool, default True
        Use the look-ahead ``lerp(g, buf, momentum)`` (the reference code; the paper's
        Algorithm 1 orthogonalises the buffer: ``nesterov=False``).
    b2, eps, neurons, rms
        See `scale_by_normuon`.
    update_scale : {"jordan", "moonlight", "spectral", "none"}, float or None
        Muon's update scale after the normalisation (see `scale_by_shape`); None:
        ``"jordan"``, ``sqrt(max(1, m/n))`` (the reference code) when ``rms`` is None,
        else ``"none"`` (the paper: the RMS is ``rms`` already).
    weight_decay : float, default 0.0
        Decoupled: the step subtracts ``learning_rate * weight_decay * param``.
    cautious_weight_decay : bool, default False
        Decay only entries where the update and the parameter share a sign
        (modded-nanogpt's NorMuon decays cautiously).
    schedule, steps, ns_eps, dtype, method
        The orthogonalisation (see `scale_by_normuon`).

    Returns
    -------
    Stepper
        For matrices (``(..., m, n)``; `multi` flattens conv kernels).

    Notes
    -----
    The chain is `trace`, `scale_by_normuon`, `scale_by_shape`, `add_decayed_weights`
    and `scale_by_learning_rate`: ``W <- W - lr (s D + wd W)``.

    References
    ----------
    Li et al., NorMuon: Making Muon more efficient and scalable (arXiv:2510.05491).

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import optim
    >>> opt = optim.normuon(0.02, method="svd")
    >>> W = np.zeros((2, 3))
    >>> u, state = opt.update(np.array([[4.0, 0.0, 0.0], [0.0, 1.0, 1.0]]), opt.init(W), W)
    >>> np.round(np.sum(u ** 2, axis=1) / 0.02 ** 2, 6)
    array([1., 1.])
    """
    momentum = as_rate(momentum, "momentum", "normuon")
    if update_scale is None:
        update_scale = "jordan" if rms is None else "none"
    return chain(
        trace(momentum, nesterov=nesterov, ema=True),
        scale_by_normuon(b2, eps, neurons=neurons, rms=rms, schedule=schedule, steps=steps,
                         ns_eps=ns_eps, dtype=dtype, method=method),
        scale_by_shape(update_scale),
        add_decayed_weights(weight_decay, cautious=cautious_weight_decay),
        scale_by_learning_rate(learning_rate),
    )
