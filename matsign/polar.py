"""The matrix sign (orthogonal polar factor) by SVD and by Newton–Schulz iterations."""

from __future__ import annotations

import functools
import itertools
import math

from . import _checks, _iterations, _xp
from ._typing import Array, DType, Namespace
from .polynomials import Schedule, preset

__all__ = ["msign", "newton_schulz", "orthogonality_error", "polar"]

DEFAULT_SCHEDULE = "polar_express"
GRAM_ASPECT = 3  # Gram-space iteration from n >= GRAM_ASPECT * m on (see newton_schulz)
GRAM_FROM_HALF = 192  # and in half precision from m = 192 (closer to U V^T from there)
CLASSICAL_QUINTIC = (15 / 8, -10 / 8, 3 / 8)
MATCHES = (None, "torch.optim.Muon")  # the rounding newton_schulz(match=...) reproduces
TORCH_EPS = 1e-7  # torch.optim.Muon's default clamp of the norm


def msign(
    G: Array, /, *, method: str = "auto", schedule: str | Schedule | None = None,
    steps: int | None = None, tol: float | None = None, max_steps: int = 60,
    gram: bool | None = None, rank_rtol: float | None = None, dtype: DType | None = None,
    check_finite: bool = False, xp: Namespace | None = None,
) -> Array:
    """The matrix sign ``U V^T`` of ``G = U S V^T``, batched over leading axes.

    Parameters
    ----------
    G : array of shape (..., m, n)
        Real input; integer input is promoted to the namespace's default float.
    method : {"auto", "svd", "newton_schulz"}, default "auto"
        ``"svd"`` is exact; ``"newton_schulz"`` applies an odd-polynomial schedule.
        ``"auto"`` picks ``"newton_schulz"`` when a ``schedule``, ``steps`` or
        ``tol`` is given or the input (or ``dtype``) is a half precision such as
        bfloat16, and ``"svd"`` otherwise, so that a plain ``msign(G)`` is exact.
    schedule : str or Schedule, optional
        Newton–Schulz schedule, a preset name (see `matsign.polynomials.names`) or a
        `matsign.polynomials.Schedule`. Default ``"polar_express"``.
    steps : int, optional
        Newton–Schulz steps; the schedule's default when omitted.
    tol : float, optional
        Newton–Schulz until the orthogonality error is at most ``tol``: see
        `newton_schulz`. Raises `ConvergenceError` if ``max_steps`` do not suffice.
    max_steps : int, default 60
        Step limit with ``tol``.
    gram : bool, optional
        Iterate in Gram space (see `newton_schulz`); chosen by aspect ratio when None.
    rank_rtol : float, optional
        SVD only: singular values at or below ``rank_rtol * sigma_max`` are treated
        as zero and their directions map to 0. Default ``eps * sqrt(max(m, n))`` of
        the dtype the SVD runs in (float32 for half-precision input): the rounding
        noise an SVD leaves on an exactly rank-deficient matrix grows like
        ``sqrt(n) eps`` (a quarter of it, measured for torch's float32 SVD from 256 to
        2048; LAPACK's through NumPy leaves less), so the cut sits about 4x above it,
        while full-rank Gaussian matrices keep every direction with probability 99 %
        at n = 1024 and 94 % at 4096 (``eps * max(m, n)`` kept 75 % and almost none).
        See the guide page "Accuracy".
    dtype : dtype, optional
        Compute dtype. Newton–Schulz runs in it as given (e.g. ``torch.bfloat16``);
        the SVD runs in it after half precisions are raised to float32.
        The result is cast back to the input's dtype.
    check_finite : bool, default False
        Raise ValueError if ``G`` holds inf or NaN (a host sync). Without it, a
        matrix with a non-finite entry comes back as all NaN.
    xp : namespace, optional
        Array namespace; inferred from ``G`` when omitted.

    Returns
    -------
    array of shape (..., m, n)
        Same namespace, dtype and device as ``G`` (float for integer ``G``).

    Raises
    ------
    ValueError
        If ``G`` has fewer than two axes, ``method`` or ``schedule`` is unknown (with
        either method), or ``check_finite`` finds a non-finite value.
    TypeError
        For complex input or arrays of mixed libraries.
    ConvergenceError
        With ``tol``, if ``max_steps`` steps do not reach it.

    Notes
    -----
    With ``r`` the numerical rank, ``msign(G) = U_r V_r^T``; the zero matrix maps
    to zero. Newton–Schulz divides each matrix by ``normalizer * ||G||_F`` and runs
    on the smaller Gram side: ``X <- p(X X^T) X`` for ``m <= n``, on ``G^T`` otherwise.
    The singular values of its output lie in `matsign.polynomials.band` of the
    schedule; convergent schedules (``schedule.converges``) reach 1 with enough steps.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import msign
    >>> G = np.array([[3.0, 0.0], [0.0, -2.0]])
    >>> msign(G)
    array([[ 1.,  0.],
           [ 0., -1.]])
    >>> Q = msign(G.astype(np.float32), schedule="polar_express", steps=10)
    >>> bool(np.allclose(Q, [[1, 0], [0, -1]], atol=1e-5))
    True
    """
    xp = _xp.namespace(G, xp=xp)
    G = _checks.as_float_matrix(G, "msign", xp=xp)
    check_options(steps=steps, tol=tol, max_steps=max_steps, name="msign")
    if schedule is not None:
        _as_schedule(schedule)  # an unknown name is an error whatever the method
    if rank_rtol is not None:
        _checks.as_bound(rank_rtol, "rank_rtol", "msign")
    if check_finite:
        _checks.check_finite(G, "msign", xp=xp)
    method = _choose_method(method, G, (schedule, steps, tol), dtype, xp)
    if _checks.is_empty(G):
        return xp.zeros(G.shape, dtype=G.dtype, device=_xp.device(G))
    if method == "svd":
        return _msign_svd(G, rank_rtol=rank_rtol, dtype=dtype, xp=xp)
    schedule = DEFAULT_SCHEDULE if schedule is None else schedule
    return newton_schulz(G, schedule, steps=steps, tol=tol, max_steps=max_steps, gram=gram,
                         dtype=dtype, xp=xp)


def polar(G: Array, /, *, side: str = "right", **options) -> tuple[Array, Array]:
    """Polar decomposition ``G = Q H`` with ``Q = msign(G)`` and ``H`` symmetric PSD.

    Parameters
    ----------
    G : array of shape (..., m, n)
        Real input.
    side : {"right", "left"}, default "right"
        ``G = Q H`` with ``H`` n x n (``"right"``), or ``G = H Q`` with ``H = (G
        G^T)^(1/2)`` m x m (``"left"``), as ``scipy.linalg.polar``. ``Q`` is the same.
    **options
        Passed to `msign` (``method``, ``schedule``, ``steps``, ``rank_rtol``,
        ``dtype``, ``check_finite``, ``xp``).

    Returns
    -------
    Q : array of shape (..., m, n)
        The orthogonal polar factor ``msign(G)``.
    H : array of shape (..., n, n), or (..., m, m) for ``side="left"``
        ``(Q^T G + G^T Q) / 2`` (``(G Q^T + Q G^T) / 2`` on the left): symmetric, and
        positive semi-definite when ``Q`` is exact (``method="svd"``). Same namespace,
        dtype and device as ``Q``.

    Raises
    ------
    ValueError, TypeError
        As `msign`.

    Notes
    -----
    For ``m < n`` this is scipy's ``side="right"`` convention: ``H`` is n x n and
    ``Q`` has orthonormal rows. ``Q H = G`` holds up to rounding for every rank,
    since ``H = V_r S_r V_r^T``.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import polar
    >>> G = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> Q, H = polar(G)
    >>> bool(np.allclose(Q @ H, G)), bool(np.allclose(H, H.T))
    (True, True)
    """
    if side not in ("right", "left"):
        msg = f"polar: side must be 'right' or 'left'; got {side!r}"
        raise ValueError(msg)
    xp = _xp.namespace(G, xp=options.pop("xp", None))
    G = _checks.as_float_matrix(G, "polar", xp=xp)
    Q = msign(G, xp=xp, **options)  # in G's dtype
    product = G @ xp.matrix_transpose(Q) if side == "left" else xp.matrix_transpose(Q) @ G
    half = product / 2  # halves first: no overflow where H is representable
    return Q, half + xp.matrix_transpose(half)


def newton_schulz(
    G: Array, /, schedule: str | Schedule = DEFAULT_SCHEDULE, *, steps: int | None = None,
    tol: float | None = None, max_steps: int = 60, normalize: bool = True,
    eps: float | None = None, gram: bool | None = None, dtype: DType | None = None,
    match: str | None = None, xp: Namespace | None = None,
) -> Array:
    """Apply a Newton–Schulz odd-polynomial schedule to ``G`` (batched).

    Parameters
    ----------
    G : array of shape (..., m, n)
        Real input.
    schedule : str or Schedule, default "polar_express"
        A preset name or a `matsign.polynomials.Schedule`.
    steps : int, optional
        Number of steps; the schedule's default when omitted. Not with ``tol``.
    tol : float, optional
        Iterate until the orthogonality error ``max |sigma_i - 1|`` is at most
        ``tol`` (up to the last step's round-off): the schedule's polynomials, then
        its tail if it converges, else the classical quintic ``(15/8, -10/8, 3/8)``
        repeated. The bound comes from ``||X X^T - I||_F`` and the step's exact
        scalar map; reading it is one host sync per step. Needs ``tol >= 8 eps``
        of the compute dtype. An all-zero matrix maps to zero. In a rank-deficient
        matrix, round-off in the null directions is amplified to unit singular
        values (an orthonormal completion); on the range of ``G`` the result is
        still ``U_r V_r^T``. For the rank-aware factor use ``method="svd"``.
    max_steps : int, default 60
        Step limit with ``tol``.
    normalize : bool, default True
        Divide each matrix by ``schedule.normalizer * ||G||_F`` first. With False
        the caller guarantees a spectral norm of at most one.
    eps : float, optional
        Clamp the divisor below at ``eps`` (Muon's ``max(||G||_F, eps)``), so tiny
        matrices are not blown up; a finite number >= 0. None (or 0): only an all-zero
        matrix is left as it is.
    gram : bool, optional
        Iterate on the m x m Gram matrix ``R = X X^T`` (``R <- q(R) R q(R)``) and
        apply the accumulated polynomial to ``X`` at the end, restarting from ``X``
        halfway and before the last step so that round-off in ``R`` does not reach
        the output.
        None picks it for ``n >= 3 m`` (or ``m >= 3 n``) without ``tol``; in half
        precision from ``m >= 192`` (below, its bfloat16 rounding lands 2-5 % further
        from ``U V^T`` than the standard loop's; from there 2-4 % closer).
    dtype : dtype, optional
        Compute dtype (e.g. ``torch.bfloat16``); the result has ``G``'s dtype.
    match : {None, "torch.optim.Muon"}, optional
        ``"torch.optim.Muon"`` rounds exactly as torch.optim.Muon: the plain norm
        ``||X||_F`` in the compute dtype clamped at ``eps`` (default 1e-7), then the
        standard loop with its association (``A = X X^T``, ``B = b A + c A A``,
        ``X = a X + B X`` by ``addmm`` on torch), on the input's memory layout; no
        Gram space and no symmetric (half-flop) products. With torch and the same
        coefficients, steps and ``dtype=torch.bfloat16``, the result is bit for bit
        torch's. Not with ``tol``.
    xp : namespace, optional
        Array namespace; inferred from ``G`` when omitted.

    Returns
    -------
    array of shape (..., m, n)
        ``p_k(... p_1(X))`` applied to the singular values of the normalised ``G``.

    Raises
    ------
    ValueError
        For fewer than two axes, an unknown schedule or ``match``, too many steps
        for a schedule that stops, both ``steps`` and ``tol`` (or ``match``), or an
        ``eps`` that is negative or not finite.
    ConvergenceError
        With ``tol``, if ``max_steps`` steps do not reach it.

    Notes
    -----
    Each step is ``X <- (c0 I + c1 A + c2 A^2 + ...) X`` with ``A = X X^T`` on the
    smaller side, so a quintic step on m x n (m <= n) costs ``4 m^2 n + 2 m^3`` flops.
    In Gram space a quintic step costs up to ``8 m^3`` and the run ``12 m^2 n`` in all
    (the first Gram, two restarts, the final product): for k = 8 steps about
    ``(12 a + 46) m^3`` against ``(32 a + 16) m^3`` at aspect ``a = n / m``.

    References
    ----------
    Gram-space iteration: Dao-AILab, gram-newton-schulz (2025), github.com/Dao-AILab.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import newton_schulz
    >>> X = newton_schulz(np.diag([1.0, 0.5]), "quintic", steps=12)
    >>> bool(np.allclose(X, np.eye(2)))
    True
    """
    xp = _xp.namespace(G, xp=xp)
    G = _checks.as_float_matrix(G, "newton_schulz", xp=xp)
    schedule = _as_schedule(schedule)
    check_options(steps=steps, tol=tol, match=match, max_steps=max_steps)
    if eps is not None:  # 0 clamps nothing, as None (eps / 0 would give NaN for a zero matrix)
        eps = _checks.as_bound(eps, "eps", "newton_schulz") or None
    polynomials = schedule.polynomials(steps) if tol is None else _with_convergent_tail(schedule)
    if _checks.is_empty(G):
        return xp.zeros(G.shape, dtype=G.dtype, device=_xp.device(G))
    wide = G.shape[-2] <= G.shape[-1]
    X = _xp.astype(G, _xp.compute_dtype(dtype, G.dtype, xp), xp=xp)
    X = X if wide else xp.matrix_transpose(X)
    if match is not None:
        X = _iterations.standard(_torch_normalized(X, schedule, eps, xp), polynomials,
                                 symmetric=False, xp=xp)
    else:
        prepare = functools.partial(_normalized, schedule=schedule, normalize=normalize,
                                    eps=eps, xp=xp)
        X = _iterations_auto(X, prepare, polynomials, tol=tol, max_steps=max_steps, gram=gram,
                             xp=xp)
    X = X if wide else xp.matrix_transpose(X)
    return _xp.astype(X, G.dtype, xp=xp)


def _as_schedule(schedule):
    """A Schedule from a preset name or a Schedule."""
    schedule = preset(schedule) if isinstance(schedule, str) else schedule
    if not isinstance(schedule, Schedule):
        msg = f"schedule must be a preset name or a Schedule; got {type(schedule).__name__}"
        raise TypeError(msg)
    return schedule


def check_options(
    *, steps: int | None = None, tol: float | None = None, match: str | None = None,
    max_steps: int = 60, name: str = "newton_schulz",
) -> None:
    """`newton_schulz`'s own checks of ``steps``, ``tol``, ``max_steps`` and ``match``, for
    callers that take them at construction (`matsign.optim.orthogonalize`): ``steps`` and
    ``max_steps`` are integers >= 1, ``tol`` a finite number > 0; ``tol`` excludes
    ``steps`` and ``match``; ``match`` names a known reference.

    Raises
    ------
    ValueError, TypeError
        As `newton_schulz`.
    """
    if steps is not None:
        _checks.as_count(steps, "steps", name)
    if tol is not None:
        _checks.as_bound(tol, "tol", name, strict=True)
    _checks.as_count(max_steps, "max_steps", name)
    if tol is not None and steps is not None:
        msg = f"give steps or tol, not both; got steps={steps}, tol={tol}"
        raise ValueError(msg)
    if match not in MATCHES:
        msg = f"match must be one of {MATCHES}; got {match!r}"
        raise ValueError(msg)
    if match is not None and tol is not None:
        msg = f"match={match!r} runs a fixed number of steps; it does not take tol={tol}"
        raise ValueError(msg)


def _normalized(X, *, schedule, normalize, eps, xp):
    """``X / max(normalizer ||X||_F, eps)``, row-major for the loop.

    Computed as ``Y / max(normalizer ||Y||_F, eps / s)`` with ``Y = X / s`` and ``s``
    the largest entry of each matrix: no overflow where ``||X||_F`` itself overflows
    (entries near the dtype's maximum) and no underflow to NaN for subnormal matrices.
    """
    if normalize:
        Y, s = _xp.scaled_by_largest(X, xp=xp)
        norm = _xp.frobenius_norm(Y, xp=xp) * schedule.normalizer
        if eps is None:
            X = Y / _xp.safe_divisor(norm, xp=xp)
        else:
            X = Y / xp.maximum(norm, eps / _xp.safe_divisor(s, xp=xp))  # a zero matrix: Y = 0
    return _xp.as_contiguous(X, xp=xp)  # a transposed view costs ~30 % in the loop


def _torch_normalized(X, schedule, eps, xp):
    """torch.optim.Muon's normalisation, operation for operation (see ``match``)."""
    norm = xp.linalg.vector_norm(X, axis=(-2, -1), keepdims=True)
    norm = norm if schedule.normalizer == 1.0 else norm * schedule.normalizer
    return X / xp.clip(norm, min=TORCH_EPS if eps is None else eps)


def _iterations_auto(X, prepare, polynomials, *, tol, max_steps, gram, xp):
    """``prepare`` (the normalisation), then the accuracy-controlled loop with ``tol``, else
    Gram space or the standard loop, a matrix at a time where that wins (`_xp.each_matrix`:
    its element-wise passes then stay in cache too)."""
    if tol is not None:
        _xp.raise_if_traced(X, "Newton–Schulz with tol=")
        _check_tol(tol, X.dtype, xp)
        return _checks.nan_where_nonfinite(
            lambda Y: _iterations.until_orthogonal(prepare(Y), polynomials, tol=tol,
                                                   max_steps=max_steps, xp=xp), X, xp=xp)
    use_gram = gram or (gram is None and _gram_pays(X, xp))
    loop = _iterations.gram_space if use_gram else _iterations.standard
    return _xp.each_matrix(lambda Y: loop(prepare(Y), polynomials, xp=xp), X, xp=xp)


def _gram_pays(X, xp):
    """The automatic Gram-space rule: aspect from `GRAM_ASPECT`, in half precision from
    `GRAM_FROM_HALF` rows (below, its bfloat16 rounding lands 2-5 % further from U V^T)."""
    wide = X.shape[-1] >= GRAM_ASPECT * X.shape[-2]
    return wide and (X.shape[-2] >= GRAM_FROM_HALF or not _xp.is_half(X.dtype, xp))


def _check_tol(tol, dtype, xp):
    """Refuse a ``tol`` the compute dtype's round-off cannot honour."""
    floor = 8 * float(xp.finfo(dtype).eps)
    if not tol >= floor:
        msg = f"tol={tol:g} is below what {dtype} can reach; use tol >= {floor:.2g}"
        raise ValueError(msg)


def _with_convergent_tail(schedule):
    """The schedule's polynomials, then forever its tail or the classical quintic."""
    tail = schedule.coefficients[-1] if schedule.converges else CLASSICAL_QUINTIC
    return itertools.chain(schedule.coefficients, itertools.repeat(tail))


def _msign_svd(G, *, rank_rtol, dtype, xp):
    """Exact ``U_r V_r^T``; a matrix holding inf or NaN maps to all NaN."""
    work = _xp.decomposition_dtype(_xp.compute_dtype(dtype, G.dtype, xp), xp)
    if rank_rtol is None:
        rank_rtol = float(xp.finfo(work).eps) * math.sqrt(max(G.shape[-2:]))

    def factor(X):
        U, S, Vh = _xp.svd(_xp.scaled_by_largest(X, xp=xp)[0], xp=xp)  # U V^T of X / s
        keep = S > rank_rtol * S[..., :1]
        return (U * xp.astype(keep, work)[..., None, :]) @ Vh

    Q = _checks.nan_where_nonfinite(factor, _xp.astype(G, work, xp=xp), xp=xp)
    return _xp.astype(Q, G.dtype, xp=xp)


def orthogonality_error(Q: Array, /, *, xp: Namespace | None = None) -> Array:
    """``max_i |sigma_i(Q) - 1|`` for each matrix of a stack.

    Parameters
    ----------
    Q : array of shape (..., m, n)
        Real input.
    xp : namespace, optional
        Array namespace; inferred from ``Q`` when omitted.

    Returns
    -------
    array of shape (...)
        The error, in ``Q``'s floating dtype (float32 for half precisions).

    Notes
    -----
    Computed from the singular values in the decomposition dtype: exact up to
    rounding, and 1 for a matrix of lower rank than ``min(m, n)``.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import orthogonality_error
    >>> float(orthogonality_error(np.diag([1.0, 0.5])))
    0.5
    """
    xp = _xp.namespace(Q, xp=xp)
    Q = _checks.as_float_matrix(Q, "orthogonality_error", xp=xp)
    work = _xp.decomposition_dtype(Q.dtype, xp)
    if _checks.is_empty(Q):
        return xp.zeros(Q.shape[:-2], dtype=work, device=_xp.device(Q))
    def error(X):
        return xp.max(xp.abs(xp.linalg.svdvals(X) - 1.0), axis=-1)

    return _checks.nan_where_nonfinite(error, xp.astype(Q, work), xp=xp)


def _choose_method(method, G, iteration_options, dtype, xp):
    """The documented ``method="auto"`` rule of `msign`."""
    if method not in ("auto", "svd", "newton_schulz"):
        msg = f"method must be 'auto', 'svd' or 'newton_schulz'; got {method!r}"
        raise ValueError(msg)
    if method != "auto":
        return method
    half = _xp.is_half(G.dtype if dtype is None else dtype, xp)
    asked = any(option is not None for option in iteration_options)
    return "newton_schulz" if (asked or half) else "svd"
