"""Kronecker-factored preconditioning: Shampoo factor statistics, inverse roots, SOAP eigenbases.

A gradient ``G`` of order k has one factor per mode, ``F_i = sum G_(i) G_(i)^T`` over
the steps (or an exponential moving average), where ``G_(i)`` is the mode-i unfolding.
Shampoo preconditions with ``G x_1 F_1^(e_1) x_2 ... x_k F_k^(e_k)``, default
``e_i = -1/(2k)``: ``L^(-1/4) G R^(-1/4)`` for a matrix. SOAP instead runs Adam in the
factors' eigenbases, refreshed cheaply by one power iteration and a QR.

Every function works on a *blocked* view of the parameter described by a `KronLayout`:
small neighbouring modes merged, large modes cut into blocks (each block with its own
factors), and modes above ``max_precond_dim`` left unpreconditioned (one-sided).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from . import _checks, _xp
from ._typing import Array, Namespace
from .roots import inverse_root

__all__ = [
    "Eigenbases",
    "KronLayout",
    "KronState",
    "Preconditioners",
    "eigenbases",
    "from_blocks",
    "init_factors",
    "kron_layout",
    "precondition",
    "preconditioners",
    "project",
    "refresh_eigenbases",
    "to_blocks",
    "unproject",
    "update_factors",
]


@_xp.static
class KronLayout(NamedTuple):
    """How a parameter of ``shape`` is cut into modes and blocks (static, hashable).

    Attributes
    ----------
    shape : tuple of int
        The parameter's shape.
    modes : tuple of int
        Mode sizes after merging small neighbouring axes (a 1-D parameter has one mode).
    block : tuple of int
        Block size per mode (the mode's size where it is not blocked).
    grid : tuple of int
        Number of blocks per mode; the last block of a mode is zero-padded.
    preconditioned : tuple of bool
        Whether each mode has a factor (False above ``max_precond_dim``).
    """

    shape: tuple[int, ...]
    modes: tuple[int, ...]
    block: tuple[int, ...]
    grid: tuple[int, ...]
    preconditioned: tuple[bool, ...]


class KronState(NamedTuple):
    """Factor statistics: per mode an array ``(*grid, block, block)``, or None if not kept."""

    factors: tuple[Array | None, ...]
    layout: KronLayout


class Preconditioners(NamedTuple):
    """Per mode ``F_i^(e_i)`` of shape ``(*grid, block, block)``, or None for a skipped mode."""

    matrices: tuple[Array | None, ...]
    layout: KronLayout


class Eigenbases(NamedTuple):
    """Per mode the orthonormal eigenvectors ``(*grid, block, block)`` in columns, or None."""

    bases: tuple[Array | None, ...]
    layout: KronLayout


def kron_layout(
    shape: Sequence[int], /, *, max_dim: int | None = None, max_precond_dim: int | None = None,
    merge_small: bool = True,
) -> KronLayout:
    """The blocked view of a parameter of ``shape`` used by every function here.

    Parameters
    ----------
    shape : tuple of int
        The parameter's shape. A 0-D parameter is treated as shape (1,).
    max_dim : int, optional
        Modes larger than this are cut into blocks of ``max_dim``, each block
        preconditioned on its own. None: no blocking.
    max_precond_dim : int, optional
        Modes larger than this (before blocking) get no factor: one-sided
        preconditioning, as for the vocabulary side of an embedding. None: all modes.
    merge_small : bool, default True
        Merge neighbouring modes while their product stays within ``max_dim`` (or
        ``max_precond_dim`` when ``max_dim`` is None); e.g. a (64, 3, 3) kernel with
        ``max_dim=1024`` becomes one mode of 576.

    Returns
    -------
    KronLayout

    Raises
    ------
    ValueError
        For a size limit below 1 or a negative size.
    TypeError
        For a size or limit that is not an integer, or a shape that is not a sequence.

    Notes
    -----
    **1-D parameters** (biases, norms' scales) are order-1 tensors: one factor
    ``g g^T`` and, by the order-k rule, exponent -1/2 -- full-matrix AdaGrad on the
    vector, blocked above ``max_dim`` and skipped above ``max_precond_dim`` like any mode.

    Examples
    --------
    >>> from matsign.kron import kron_layout
    >>> kron_layout((1000, 4096), max_dim=1024)
    KronLayout(shape=(1000, 4096), modes=(1000, 4096), block=(1000, 1024), grid=(1, 4), preconditioned=(True, True))
    >>> kron_layout((64, 3, 3), max_dim=1024).modes
    (576,)
    """  # noqa: E501
    for name, limit in (("max_dim", max_dim), ("max_precond_dim", max_precond_dim)):
        if limit is not None:
            _checks.as_count(limit, name, "kron_layout")
    if not isinstance(shape, Sequence):
        msg = f"kron_layout needs a shape (a sequence of int); got {type(shape).__name__}"
        raise TypeError(msg)
    shape = tuple(_checks.as_count(d, "each entry of shape", "kron_layout", minimum=0)
                  for d in shape)
    merge_limit = max_dim if max_dim is not None else max_precond_dim
    modes = _merged(shape or (1,), merge_limit if merge_small else None)
    block = tuple(d if max_dim is None else min(d, max_dim) for d in modes)
    grid = tuple(-(-d // b) if b else 0 for d, b in zip(modes, block, strict=True))
    kept = tuple(max_precond_dim is None or d <= max_precond_dim for d in modes)
    return KronLayout(shape, modes, block, grid, kept)


def _merged(shape, limit):
    """Merge neighbouring sizes while the product stays within ``limit``."""
    if limit is None:
        return shape
    merged = [shape[0]]
    for d in shape[1:]:
        if merged[-1] * d <= limit:
            merged[-1] *= d
        else:
            merged.append(d)
    return tuple(merged)


def to_blocks(G: Array, layout: KronLayout, /, *, xp: Namespace | None = None) -> Array:
    """``G`` as a stack of blocks of shape ``(*grid, *block)``, zero-padded at the ends.

    Parameters
    ----------
    G : array of shape ``layout.shape``
        The parameter or its gradient.
    layout : KronLayout
        From `kron_layout`.
    xp : namespace, optional
        Array namespace; inferred from ``G`` when omitted.

    Returns
    -------
    array of shape ``(*layout.grid, *layout.block)``

    Examples
    --------
    >>> import numpy as np
    >>> from matsign.kron import kron_layout, to_blocks
    >>> to_blocks(np.ones((2, 5)), kron_layout((2, 5), max_dim=2)).shape
    (1, 3, 2, 2)
    """
    xp = _xp.namespace(G, xp=xp)
    _check_shape(G, layout, "to_blocks")
    X = xp.reshape(G, layout.modes)
    for axis, (d, b, g) in enumerate(zip(layout.modes, layout.block, layout.grid, strict=True)):
        if g * b > d:
            pad = list(X.shape)
            pad[axis] = g * b - d
            X = xp.concat([X, xp.zeros(tuple(pad), dtype=X.dtype, device=_xp.device(X))], axis=axis)
    k = len(layout.modes)
    X = xp.reshape(X, tuple(n for gb in zip(layout.grid, layout.block, strict=True) for n in gb))
    return xp.permute_dims(X, (*range(0, 2 * k, 2), *range(1, 2 * k, 2)))


def from_blocks(B: Array, layout: KronLayout, /, *, xp: Namespace | None = None) -> Array:
    """Inverse of `to_blocks`: the padding dropped, the parameter's shape restored.

    Parameters
    ----------
    B : array of shape ``(*layout.grid, *layout.block)``
        Blocks, e.g. a preconditioned or unprojected gradient.
    layout : KronLayout
        From `kron_layout`.
    xp : namespace, optional
        Array namespace; inferred from ``B`` when omitted.

    Returns
    -------
    array of shape ``layout.shape``

    Examples
    --------
    >>> import numpy as np
    >>> from matsign.kron import from_blocks, kron_layout, to_blocks
    >>> layout = kron_layout((2, 5), max_dim=2)
    >>> G = np.arange(10.0).reshape(2, 5)
    >>> bool(np.all(from_blocks(to_blocks(G, layout), layout) == G))
    True
    """
    xp = _xp.namespace(B, xp=xp)
    k = len(layout.modes)
    blocked = (*layout.grid, *layout.block)
    if tuple(B.shape) != blocked:
        msg = f"from_blocks: expected blocks of shape {blocked}; got {tuple(B.shape)}"
        raise ValueError(msg)
    X = xp.permute_dims(B, tuple(i for j in range(k) for i in (j, k + j)))
    X = xp.reshape(X, tuple(g * b for g, b in zip(layout.grid, layout.block, strict=True)))
    X = X[tuple(slice(0, d) for d in layout.modes)]
    return xp.reshape(X, layout.shape)


def _mode_last(mode, k):
    """Axis order putting block mode ``mode`` last (the grid stays first), and its inverse."""
    others = [k + j for j in range(k) if j != mode]
    order = (*range(k), *others, k + mode)
    return order, tuple(order.index(i) for i in range(2 * k))


def _unfold(B, mode, k, xp):
    """Mode-``mode`` unfolding of every block, transposed: (*grid, rest, block_mode)."""
    order, _ = _mode_last(mode, k)
    X = xp.permute_dims(B, order)
    rest = math.prod(X.shape[k:-1])  # not -1: ambiguous for zero-size blocks
    return xp.reshape(X, (*X.shape[:k], rest, X.shape[-1]))


def _mode_product(B, M, mode, k, xp):
    """``B x_mode M`` per block: ``M`` (*grid, b, b) acts on the block axis ``k + mode``."""
    order, inverse = _mode_last(mode, k)
    X = _unfold(B, mode, k, xp)
    Y = X @ xp.matrix_transpose(M)
    moved = tuple(B.shape[i] for i in order)
    return xp.permute_dims(xp.reshape(Y, moved), inverse)


def _mode_gram(B, mode, k, xp):
    """``G_(i) G_(i)^T`` of every block: (*grid, b, b)."""
    X = _unfold(B, mode, k, xp)
    return xp.matrix_transpose(X) @ X


def init_factors(
    G: Array, /, *, max_dim: int | None = None, max_precond_dim: int | None = None,
    merge_small: bool = True, xp: Namespace | None = None,
) -> KronState:
    """Zero factor statistics for a parameter shaped like ``G``.

    Parameters
    ----------
    G : array
        The parameter (or a gradient of its shape); any order.
    max_dim, max_precond_dim, merge_small
        The blocked view, see `kron_layout`.
    xp : namespace, optional
        Array namespace; inferred from ``G`` when omitted.

    Returns
    -------
    KronState
        Zero factors of shape ``(*grid, block, block)`` for the preconditioned modes, in
        ``G``'s floating dtype and on its device.

    Raises
    ------
    TypeError
        For complex input.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign.kron import init_factors
    >>> state = init_factors(np.zeros((3, 5)))
    >>> [F.shape for F in state.factors]
    [(1, 1, 3, 3), (1, 1, 5, 5)]
    """
    xp = _xp.namespace(G, xp=xp)
    dtype = _checks.float_dtype(G, "init_factors", xp=xp)
    layout = kron_layout(G.shape, max_dim=max_dim, max_precond_dim=max_precond_dim,
                         merge_small=merge_small)
    factors = tuple(
        xp.zeros((*layout.grid, b, b), dtype=dtype, device=_xp.device(G)) if kept else None
        for b, kept in zip(layout.block, layout.preconditioned, strict=True)
    )
    return KronState(factors, layout)


def update_factors(
    G: Array, state: KronState, /, *, beta: float | None = None, xp: Namespace | None = None,
) -> KronState:
    """Accumulate ``G``'s mode Gram matrices into the factors.

    Parameters
    ----------
    G : array of shape ``state.layout.shape``
        A gradient.
    state : KronState
        From `init_factors` or a previous update.
    beta : float, optional
        None sums (AdaGrad, original Shampoo): ``F <- F + G_(i) G_(i)^T``. A float in
        [0, 1) keeps an exponential moving average ``F <- beta F + (1 - beta) G_(i) G_(i)^T``;
        ``beta=0`` keeps only the latest gradient.
    xp : namespace, optional
        Array namespace; inferred from ``G`` when omitted.

    Returns
    -------
    KronState
        New factors; ``state`` is not modified.

    Raises
    ------
    ValueError
        If ``G``'s shape differs from the layout's or ``beta`` is outside [0, 1).
    TypeError
        If ``G`` is complex.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign.kron import init_factors, update_factors
    >>> G = np.array([[1.0, 2.0], [0.0, 1.0]])
    >>> L, R = update_factors(G, init_factors(G)).factors
    >>> L[0, 0]
    array([[5., 2.],
           [2., 1.]])
    """
    xp = _xp.namespace(G, *_present(state.factors), xp=xp)
    _checks.float_dtype(G, "update_factors", xp=xp)  # complex would lose its imaginary part
    _check_shape(G, state.layout, "update_factors")
    if beta is not None and not 0.0 <= _checks.as_real(beta, "beta", "update_factors") < 1.0:
        msg = f"update_factors: beta must be None or in [0, 1); got {beta}"
        raise ValueError(msg)
    B = to_blocks(_as_factor_dtype(G, state, xp), state.layout, xp=xp)
    k = len(state.layout.modes)
    new = tuple(
        None if F is None else _accumulate(F, _mode_gram(B, i, k, xp), beta)
        for i, F in enumerate(state.factors)
    )
    return KronState(new, state.layout)


def _accumulate(F, gram, beta):
    return F + gram if beta is None else beta * F + (1.0 - beta) * gram


def _as_factor_dtype(G, state, xp):
    dtype = next((F.dtype for F in state.factors if F is not None), None)
    return G if dtype is None or G.dtype == dtype else xp.astype(G, dtype)


def _present(arrays):
    """The arrays of a state's per-mode tuple (None for a mode without a factor)."""
    return [a for a in arrays if a is not None]


def _check_shape(G, layout, name):
    if tuple(G.shape) != layout.shape:
        msg = f"{name}: expected an array of shape {layout.shape}; got {tuple(G.shape)}"
        raise ValueError(msg)


@_checks.renamed_keywords(since="0.2", until="0.3", max_iter="max_steps")
def preconditioners(
    state: KronState, /, *, exponents: Sequence[float] | None = None,
    xp: Namespace | None = None, **root_options,
) -> Preconditioners:
    """The matrices ``F_i^(e_i)`` of Shampoo, one inverse root per factor block.

    Parameters
    ----------
    state : KronState
        Factor statistics from `update_factors`.
    exponents : sequence of float, optional
        One power per mode of ``state.layout.modes`` (the parameter's axes unless
        merged), each negative or 0; 0 skips that mode. Default ``-1/(2k)`` for an
        order-k layout (``-1/4`` for a matrix, ``-1/2`` for a vector).
    xp : namespace, optional
        Array namespace; inferred from the factors when omitted.
    **root_options
        Passed to `matsign.inverse_root`: ``method`` (eigendecomposition or
        coupled Newton), the regularisation ``eps``/``eps_mode``/``rank_rtol``, the
        iteration's ``tol``/``max_steps``/``check_every`` (``max_iter=`` is the
        deprecated 0.1 spelling of ``max_steps=``), ``dtype``.

    Returns
    -------
    Preconditioners
        ``inverse_root(F_i, -1/e_i)`` per mode, None where skipped.

    Raises
    ------
    ValueError
        For a wrong number of exponents or a positive one.

    Notes
    -----
    All blocks of one mode are one batched call. Recompute these every few steps
    and reuse them with `precondition` in between, as Shampoo does. A block whose
    statistics are all zero (no gradient has reached it yet, or only zero ones) gets a
    zero preconditioner, without an error: the gradients it would act on are zero, so
    the direction there is zero whatever the root (selected on the device, no sync).
    """
    layout = state.layout
    exponents = _exponents(exponents, layout)
    matrices = tuple(
        None if F is None or e == 0 else _inverse_root_or_zero(F, -1.0 / e, root_options, xp)
        for F, e in zip(state.factors, exponents, strict=True)
    )
    return Preconditioners(matrices, layout)


def _inverse_root_or_zero(F, p, root_options, xp):
    """``inverse_root(F, p)`` per block, 0 for an all-zero block (which has no scale)."""
    xp = _xp.namespace(F, xp=xp)
    zero = xp.all(F == 0.0, axis=(-2, -1), keepdims=True)
    eye = xp.eye(F.shape[-1], dtype=F.dtype, device=_xp.device(F))
    root = inverse_root(xp.where(zero, eye, F), p, xp=xp, **root_options)
    return xp.where(zero, xp.zeros_like(root), root)


def _exponents(exponents, layout):
    """The per-mode powers: default ``-1/(2k)``; validated length and sign."""
    k = len(layout.modes)
    if exponents is None:
        return (-1.0 / (2 * k),) * k
    exponents = tuple(float(e) for e in exponents)
    if len(exponents) != k or any(e > 0 for e in exponents):
        msg = (f"exponents must be {k} numbers <= 0, one per mode of {layout.modes}; "
               f"got {exponents}")
        raise ValueError(msg)
    return exponents


def precondition(
    G: Array, preconditioners: Preconditioners, /, *, xp: Namespace | None = None,
) -> Array:
    """Shampoo's ``G x_1 P_1 x_2 … x_k P_k`` with ``P_i = F_i^(e_i)``, blockwise.

    Parameters
    ----------
    G : array of shape ``preconditioners.layout.shape``
        A gradient (or its momentum).
    preconditioners : Preconditioners
        From `preconditioners`.
    xp : namespace, optional
        Array namespace; inferred from ``G`` when omitted.

    Returns
    -------
    array
        Same shape, namespace, device and dtype as ``G``.

    Notes
    -----
    For a matrix, ``L^(-1/4) G R^(-1/4)``; in row-major ``vec``,
    ``vec(G x_1 P_1 ... x_k P_k) = (P_1 kron ... kron P_k) vec(G)``. With ``beta = 0``
    the factors are ``G G^T`` and ``G^T G`` and the result is ``msign(G) = U V^T``.

    References
    ----------
    V. Gupta, T. Koren and Y. Singer, "Shampoo: preconditioned stochastic tensor
    optimization", arXiv:1802.09568 (2018).

    Examples
    --------
    >>> import numpy as np
    >>> from matsign.kron import init_factors, update_factors, preconditioners, precondition
    >>> G = np.array([[3.0, 0.0], [0.0, -2.0]])
    >>> state = update_factors(G, init_factors(G), beta=0.0)
    >>> np.round(precondition(G, preconditioners(state)), 6)
    array([[ 1.,  0.],
           [ 0., -1.]])
    """
    xp = _xp.namespace(G, *_present(preconditioners.matrices), xp=xp)
    layout = preconditioners.layout
    _check_shape(G, layout, "precondition")
    G = _checks.as_float(G, "precondition", xp=xp)
    B = _apply_modes(G, preconditioners.matrices, layout, xp, transpose=False)
    return from_blocks(B, layout, xp=xp)


def _apply_modes(G, matrices, layout, xp, *, transpose):
    """``G`` blocked, each mode multiplied by its matrix (or its transpose), unblocked."""
    k = len(layout.modes)
    B = to_blocks(G, layout, xp=xp)
    for i, M in enumerate(matrices):
        if M is not None:
            M = _xp.astype(M, B.dtype, xp=xp)
            B = _mode_product(B, xp.matrix_transpose(M) if transpose else M, i, k, xp)
    return B


def eigenbases(state: KronState, /, *, xp: Namespace | None = None) -> Eigenbases:
    """SOAP's bases: each factor's orthonormal eigenvectors, by descending eigenvalue.

    Parameters
    ----------
    state : KronState
        Factor statistics.
    xp : namespace, optional
        Array namespace; inferred from the factors when omitted.

    Returns
    -------
    Eigenbases
        Per mode ``Q`` with ``F = Q diag(lambda) Q^T``, columns sorted by descending
        ``lambda``; eigh runs in float32 for half-precision factors.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign.kron import init_factors, update_factors, eigenbases
    >>> G = np.array([[1.0, 0.0], [0.0, 3.0]])
    >>> Q, _ = eigenbases(update_factors(G, init_factors(G))).bases
    >>> np.abs(Q[0, 0])
    array([[0., 1.],
           [1., 0.]])
    """
    bases = tuple(None if F is None else _sorted_eigh(F, xp) for F in state.factors)
    return Eigenbases(bases, state.layout)


def _sorted_eigh(F, xp):
    xp = _xp.namespace(F, xp=xp)
    work = _xp.decomposition_dtype(F.dtype, xp)
    X = _xp.astype(F, work, xp=xp)

    def basis(Y):
        return xp.linalg.eigh((Y + xp.matrix_transpose(Y)) / 2)[1]

    Q = xp.flip(_checks.nan_where_nonfinite(basis, X, xp=xp), axis=-1)  # eigh sorts ascending
    return _xp.astype(Q, F.dtype, xp=xp)


def refresh_eigenbases(
    state: KronState, bases: Eigenbases, /, *, xp: Namespace | None = None,
) -> tuple[Eigenbases, tuple[Array | None, ...]]:
    """SOAP's cheap refresh: one power iteration and a QR from the previous bases.

    Parameters
    ----------
    state : KronState
        The current factor statistics.
    bases : Eigenbases
        The previous bases (from `eigenbases` or an earlier refresh).
    xp : namespace, optional
        Array namespace; inferred from the bases when omitted.

    Returns
    -------
    bases : Eigenbases
        ``Q' = qr(F Q[:, order]).Q`` per mode: orthonormal, and on a fixed factor
        converging to its eigenvectors (orthogonal iteration).
    orders : tuple of arrays
        Per mode the column permutation ``order`` ``(*grid, block)``, descending by the
        estimated eigenvalue ``diag(Q^T F Q)``; apply it to per-coordinate state kept in
        the old basis (Adam's second moment), as SOAP does. None for skipped modes.

    References
    ----------
    N. Vyas et al., "SOAP: Improving and stabilizing Shampoo using Adam",
    arXiv:2409.11321 (2024), Algorithm 4.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign.kron import init_factors, update_factors, eigenbases, refresh_eigenbases
    >>> G = np.array([[1.0, 0.0], [0.0, 3.0]])
    >>> state = update_factors(G, init_factors(G))
    >>> new, orders = refresh_eigenbases(state, eigenbases(state))
    >>> orders[0][0, 0]
    array([0, 1])
    """
    pairs = [
        (None, None) if F is None else _refresh(F, Q, xp)
        for F, Q in zip(state.factors, bases.bases, strict=True)
    ]
    return Eigenbases(tuple(Q for Q, _ in pairs), state.layout), tuple(o for _, o in pairs)


def _refresh(F, Q, xp):
    """Sort ``Q``'s columns by ``diag(Q^T F Q)`` (descending), then ``qr(F Q)``."""
    xp = _xp.namespace(F, Q, xp=xp)
    work = _xp.decomposition_dtype(F.dtype, xp)
    F, Q = xp.astype(F, work), xp.astype(Q, work)
    estimate = xp.sum(Q * (F @ Q), axis=-2)
    order = xp.argsort(estimate, axis=-1, descending=True, stable=True)
    Q = xp.take_along_axis(Q, order[..., None, :], axis=-1)
    Q, _ = xp.linalg.qr(F @ Q)
    return Q, order


def project(G: Array, bases: Eigenbases, /, *, xp: Namespace | None = None) -> Array:
    """Rotate ``G`` into the eigenbases: ``G x_1 Q_1^T … x_k Q_k^T``, blockwise.

    Parameters
    ----------
    G : array of shape ``bases.layout.shape``
        A gradient.
    bases : Eigenbases
        From `eigenbases` or `refresh_eigenbases`.
    xp : namespace, optional
        Array namespace; inferred from ``G`` when omitted.

    Returns
    -------
    array of shape ``(*layout.grid, *layout.block)``
        The rotated blocks (padding included: rotation mixes it in). `unproject`
        brings them back.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign.kron import init_factors, update_factors, eigenbases, project, unproject
    >>> G = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> bases = eigenbases(update_factors(G, init_factors(G)))
    >>> bool(np.allclose(unproject(project(G, bases), bases), G))
    True
    """
    xp = _xp.namespace(G, *_present(bases.bases), xp=xp)
    _check_shape(G, bases.layout, "project")
    G = _checks.as_float(G, "project", xp=xp)
    return _apply_modes(G, bases.bases, bases.layout, xp, transpose=True)


def unproject(P: Array, bases: Eigenbases, /, *, xp: Namespace | None = None) -> Array:
    """Rotate blocks back out of the eigenbases: ``P x_1 Q_1 … x_k Q_k``, unblocked.

    Parameters
    ----------
    P : array of shape ``(*layout.grid, *layout.block)``
        Blocks in the eigenbases, e.g. ``project(G, bases)`` after an Adam step.
    bases : Eigenbases
        The bases ``P`` is expressed in.
    xp : namespace, optional
        Array namespace; inferred from ``P`` when omitted.

    Returns
    -------
    array of shape ``bases.layout.shape``

    Raises
    ------
    ValueError
        If ``P`` is not of the blocked shape.
    TypeError
        For complex input or arrays of mixed libraries.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign.kron import init_factors, eigenbases, unproject
    >>> bases = eigenbases(init_factors(np.zeros((2, 3))))
    >>> unproject(np.zeros((1, 1, 2, 3)), bases).shape
    (2, 3)
    """
    xp = _xp.namespace(P, *_present(bases.bases), xp=xp)
    layout = bases.layout
    k = len(layout.modes)
    blocked = (*layout.grid, *layout.block)
    if tuple(P.shape) != blocked:
        msg = f"unproject: expected blocks of shape {blocked}; got {tuple(P.shape)}"
        raise ValueError(msg)
    P = _checks.as_float(P, "unproject", xp=xp)
    for i, Q in enumerate(bases.bases):
        if Q is not None:
            P = _mode_product(P, _xp.astype(Q, P.dtype, xp=xp), i, k, xp)
    return from_blocks(P, layout, xp=xp)
