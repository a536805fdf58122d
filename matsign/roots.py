"""Powers, roots and inverse roots of symmetric positive semi-definite matrices, batched.

Shampoo preconditions a gradient ``G`` with ``L^(-1/4) G R^(-1/4)`` (and ``-1/(2k)`` roots
for order-k tensors), where ``L`` and ``R`` are accumulated gradient statistics: symmetric,
positive semi-definite, often rank-deficient and badly conditioned. This module computes
those roots by eigendecomposition (exact, any real power) or by the coupled Newton
iteration of Guo and Higham (matrix products only, for accelerators and low precision).
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

from . import _checks, _xp
from ._iterations import ConvergenceError, LinAlgError
from ._typing import Array, DType, Namespace

__all__ = ["inverse_root", "matrix_root", "psd_power"]

METHODS = ("auto", "eigh", "newton")
EPS_MODES = ("absolute", "relative")
DEFAULT_MAX_STEPS = 100
DEFAULT_MAX_ITER = DEFAULT_MAX_STEPS  # the 0.1 spelling; deprecated with max_iter=
LANCZOS_STEPS = 48  # Ritz estimate of lambda_max for a relative ridge on the "newton" path
SWITCH_RESIDUAL = 0.5  # ||M - I||_F below which the iteration carries E = M - I instead of M
GROWTH = 1.01  # a residual this much above the last one means divergence (rounding is far below)


class _Regularisation(NamedTuple):
    """Validated ridge, pseudo-inverse and clipping options (see `inverse_root`)."""

    eps: float
    relative: bool
    rank_rtol: float | None
    clip_negative: bool


@_checks.renamed_keywords(since="0.2", until="0.3", max_iter="max_steps")
def inverse_root(
    A: Array, p: float, /, *, method: str = "auto", eps: float = 0.0,
    eps_mode: str = "absolute", rank_rtol: float | None = None, clip_negative: bool = False,
    tol: float | None = None, max_steps: int | None = None, check_every: int = 1,
    dtype: DType | None = None, check_finite: bool = True, xp: Namespace | None = None,
) -> Array:
    """The inverse p-th root ``A^(-1/p)`` of symmetric PSD matrices, batched.

    Parameters
    ----------
    A : array of shape (..., n, n)
        Symmetric positive semi-definite matrices; only the symmetric part
        ``(A + A^T) / 2`` is used. Integer input is promoted to the default float.
    p : float
        Root order, ``p > 0``: any real with ``"eigh"``, an integer with ``"newton"``.
    method : {"auto", "eigh", "newton"}, default "auto"
        ``"eigh"`` eigendecomposes; ``"newton"`` runs the coupled Newton iteration
        (matrix products only). ``"auto"`` picks ``"newton"`` when ``tol`` or
        ``max_steps`` is given or ``dtype`` is a half precision (which only the iteration
        can honour), and ``"eigh"`` otherwise: on CPUs it is several times faster than
        the iteration, exact for any ``p`` and rank-aware. On GPUs, try ``"newton"``.
    eps : float, default 0.0
        Ridge: the root of ``A + eps * I`` (``eps_mode="absolute"``) or of
        ``A + eps * lambda_max(A) * I`` (``eps_mode="relative"``), per matrix.
    eps_mode : {"absolute", "relative"}, default "absolute"
        How ``eps`` scales. ``"newton"`` estimates ``lambda_max`` by a few Lanczos
        steps (typically within 1e-3 relative), ``"eigh"`` uses the exact value.
    rank_rtol : float, optional
        Pseudo-inverse (``"eigh"`` only): eigenvalues at or below
        ``rank_rtol * lambda_max`` map to 0 instead of blowing up, so the result
        is ``U_r (L_r + ridge)^(-1/p) U_r^T`` over the kept eigenpairs. The zero
        matrix maps to zero. Default: no pseudo-inverse.
    clip_negative : bool, default False
        ``"eigh"`` only: treat negative eigenvalues as zero instead of raising.
        Negative eigenvalues within rounding of zero are always clipped.
    tol : float, optional
        ``"newton"`` only: stop when ``||M_k - I||_F <= tol`` for every matrix, where
        ``M_k = X_k^p A -> I``; the relative error of ``X_k`` is then about ``tol / p``
        plus rounding. Default ``sqrt(n) * eps`` of the compute dtype.
    max_steps : int, optional
        ``"newton"`` only: most iterations before raising. Default 100. ``max_iter=``
        is the deprecated 0.1 spelling (a DeprecationWarning; removed in 0.3).
    check_every : int, default 1
        ``"newton"`` only: test the residual every this many iterations. Each test is
        one host synchronisation; raise it on GPUs to keep the device busy.
    dtype : dtype, optional
        Compute dtype. ``"newton"`` iterates in it as given (e.g. ``torch.bfloat16``);
        ``"eigh"`` decomposes in it after half precisions are raised to float32.
        The result has ``A``'s dtype.
    check_finite : bool, default True
        Raise ValueError for inf or NaN in ``A`` (one host read), as in every matsign
        routine; False skips the read and gives NaN for such matrices (as under
        ``jax.jit``). The singular and indefinite checks read eigenvalues on the host
        either way (skipped while tracing).
    xp : namespace, optional
        Array namespace; inferred from ``A`` when omitted.

    Returns
    -------
    array of shape (..., n, n)
        ``A^(-1/p)``, symmetric, with ``A``'s namespace, dtype and device.

    Raises
    ------
    LinAlgError
        If ``A`` is clearly indefinite (an eigenvalue below minus the rounding level,
        unless ``clip_negative``) or singular to working precision with no ``eps`` or
        ``rank_rtol``: a `numpy.linalg.LinAlgError`, so also a ``ValueError``.
    ValueError
        If ``A`` is not a stack of square matrices or holds inf or NaN; if ``p <= 0``,
        or an option is out of range or does not apply to ``method``.
    TypeError
        For complex input, arrays of mixed libraries, or a ``p`` that is not a number.
    ConvergenceError
        If ``"newton"`` does not reach ``tol`` within ``max_steps`` iterations or
        diverges (singular, indefinite or too ill-conditioned ``A``), or if the
        eigendecomposition fails even in float64.

    Notes
    -----
    **eigh.** With ``A = U diag(lambda) U^T`` (symmetrised, half precisions raised to
    float32), the result is ``W W^T`` with ``W = U diag((lambda + ridge)^(-1/(2p)))``,
    symmetric by construction. If the decomposition fails it is retried once in
    float64 (where the device has float64). The rounding level of ``A`` is
    ``(sqrt(n) eps_A + n eps_work) ||A||_2``: eigenvalues down to minus this are
    rounding and clipped to zero; below, ``A`` is indefinite. Without ``eps`` or
    ``rank_rtol``, an eigenvalue at or below the level makes ``A`` singular to working
    precision and raises. These checks cost one host synchronisation.

    **newton.** With ``z = (p + 1) / (2 ||A||_F)``, ``X_0 = I`` and ``M_0 = z A``
    (eigenvalues in ``(0, (p + 1) / 2]``, inside the region where Guo and Higham
    prove convergence),

    ``T_k = ((p + 1) I - M_k) / p``,  ``X_{k+1} = X_k T_k``,  ``M_{k+1} = T_k^p M_k``,

    so ``M_k = X_k^p M_0 -> I`` and ``X_k z^(1/p) -> A^(-1/p)``. After the first step
    every eigenvalue of ``M_k`` lies in ``(0, 1]`` and moves monotonically to 1, so the
    residual ``||M_k - I||_F`` never grows: a growing residual means an indefinite (or
    non-finite) input and raises at once; a singular one stalls until ``max_steps``. Once
    ``||M_k - I||_F <= 1/2`` the iteration carries ``E_k = M_k - I`` instead, which
    keeps the residual exact in low precision. Each iteration costs about
    ``log2(p) + 2`` matrix products. In a compute dtype with epsilon ``u``, ``A + ridge``
    needs a condition number well below ``1 / u``. Non-finite input is detected at the
    first residual test, so the iteration has no host synchronisation between tests.

    References
    ----------
    .. [1] C.-H. Guo and N. J. Higham, "A Schur-Newton method for the matrix p'th root
       and its inverse", SIAM J. Matrix Anal. Appl. 28(3), 788-804, 2006.
    .. [2] V. Gupta, T. Koren and Y. Singer, "Shampoo: Preconditioned stochastic tensor
       optimization", ICML 2018, arXiv:1802.09568.
    .. [3] R. Anil, V. Gupta, T. Koren, K. Regan and Y. Singer, "Scalable second order
       optimization for deep learning", arXiv:2002.09018, 2020.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import inverse_root
    >>> inverse_root(np.diag([16.0, 1.0]), 4)
    array([[0.5, 0. ],
           [0. , 1. ]])
    >>> A = np.array([[4.0, 2.0], [2.0, 1.0]])           # rank one
    >>> X = inverse_root(A, 2, rank_rtol=1e-10)          # pseudo-inverse square root
    >>> bool(np.allclose(X @ X @ A, A @ np.linalg.pinv(A)))
    True
    >>> X = inverse_root(np.diag([16.0, 1.0]), 4, method="newton")
    >>> bool(np.allclose(X, np.diag([0.5, 1.0])))
    True
    """
    return _root(A, p, inverse=True, name="inverse_root", method=method,
                 reg=_regularisation(eps, eps_mode, rank_rtol, clip_negative), tol=tol,
                 max_steps=max_steps, check_every=check_every, dtype=dtype,
                 check_finite=check_finite, xp=xp)


@_checks.renamed_keywords(since="0.2", until="0.3", max_iter="max_steps")
def matrix_root(
    A: Array, p: float, /, *, method: str = "auto", eps: float = 0.0,
    eps_mode: str = "absolute", rank_rtol: float | None = None, clip_negative: bool = False,
    tol: float | None = None, max_steps: int | None = None, check_every: int = 1,
    dtype: DType | None = None, check_finite: bool = True, xp: Namespace | None = None,
) -> Array:
    """The principal p-th root ``A^(1/p)`` of symmetric PSD matrices, batched.

    Parameters
    ----------
    A : array of shape (..., n, n)
        Symmetric positive semi-definite matrices (the symmetric part is used).
    p : float
        Root order, ``p > 0``: any real with ``"eigh"``, an integer with ``"newton"``.
    method : {"auto", "eigh", "newton"}, default "auto"
        As in `inverse_root`. ``"newton"`` computes ``B X^(p-1)`` from the inverse root
        ``X`` of ``B = A + ridge``, so it needs ``B`` positive definite.
    eps, eps_mode, rank_rtol, clip_negative, tol, max_steps, check_every, dtype, xp
        As in `inverse_root` (``max_iter=`` too, deprecated). A singular ``A`` needs no
        regularisation here.

    Returns
    -------
    array of shape (..., n, n)
        ``(A + ridge)^(1/p)``, with ``A``'s namespace, dtype and device.

    Raises
    ------
    ValueError, TypeError, ConvergenceError
        As `inverse_root`.

    Notes
    -----
    See `inverse_root`; with ``rank_rtol`` the eigenvalues at or below
    ``rank_rtol * lambda_max`` map to 0 here too.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import matrix_root
    >>> matrix_root(np.diag([9.0, 4.0, 0.0]), 2)
    array([[3., 0., 0.],
           [0., 2., 0.],
           [0., 0., 0.]])
    """
    return _root(A, p, inverse=False, name="matrix_root", method=method,
                 reg=_regularisation(eps, eps_mode, rank_rtol, clip_negative), tol=tol,
                 max_steps=max_steps, check_every=check_every, dtype=dtype,
                 check_finite=check_finite, xp=xp)


def psd_power(
    A: Array, alpha: float, /, *, eps: float = 0.0, eps_mode: str = "absolute",
    rank_rtol: float | None = None, clip_negative: bool = False, dtype: DType | None = None,
    check_finite: bool = True, xp: Namespace | None = None,
) -> Array:
    """Any real power ``A^alpha`` of symmetric PSD matrices, by eigendecomposition.

    Parameters
    ----------
    A : array of shape (..., n, n)
        Symmetric positive semi-definite matrices (the symmetric part is used).
    alpha : float
        The power; negative powers need ``A + ridge`` non-singular or ``rank_rtol``.
        With ``rank_rtol``, ``alpha=0`` gives the orthogonal projector onto the
        numerical range of ``A``; without it, the identity.
    eps, eps_mode, rank_rtol, clip_negative, dtype, check_finite, xp
        As in `inverse_root` (``"eigh"``).

    Returns
    -------
    array of shape (..., n, n)
        ``(A + ridge)^alpha``, symmetric, with ``A``'s namespace, dtype and device.

    Raises
    ------
    ValueError, TypeError, ConvergenceError
        As `inverse_root`.

    Notes
    -----
    ``inverse_root(A, p, method="eigh")`` is ``psd_power(A, -1/p)``; see its Notes.

    Examples
    --------
    >>> import numpy as np
    >>> from matsign import psd_power
    >>> psd_power(np.diag([4.0, 1.0, 0.0]), -0.5, rank_rtol=1e-12)
    array([[0.5, 0. , 0. ],
           [0. , 1. , 0. ],
           [0. , 0. , 0. ]])
    """
    xp = _xp.namespace(A, xp=xp)
    reg = _regularisation(eps, eps_mode, rank_rtol, clip_negative)
    alpha = _checks.as_real(alpha, "alpha", "psd_power")
    if not math.isfinite(alpha):
        msg = f"psd_power needs a finite exponent; got alpha={alpha!r}"
        raise ValueError(msg)
    A = _checks.as_square_stack(A, "psd_power", xp=xp)
    if _checks.is_empty(A):
        return xp.zeros(A.shape, dtype=A.dtype, device=_xp.device(A))
    return _finite_or_nan(lambda X: _power_eigh(X, alpha, reg, name="psd_power", dtype=dtype,
                                                xp=xp), A, check_finite, "psd_power", xp)


def _finite_or_nan(compute, A, check_finite, name, xp):
    """``compute(A)`` after the finiteness check, or with NaN for non-finite matrices."""
    if check_finite:
        _checks.check_finite(A, name, xp=xp)
        return compute(A)
    return _checks.nan_where_nonfinite(compute, A, xp=xp, fill="identity")


# --- shared driver and validation ------------------------------------------------------------


def _root(A, p, *, inverse, name, method, reg, tol, max_steps, check_every, dtype,
          check_finite, xp):
    """Validate, choose the method and dispatch; see `inverse_root`."""
    xp = _xp.namespace(A, xp=xp)
    p = _checks.as_real(p, "p", name)
    if not (math.isfinite(p) and p > 0):
        msg = f"{name} needs a root order p > 0; got p={p!r}"
        raise ValueError(msg)
    A = _checks.as_square_stack(A, name, xp=xp)
    method = _choose_method(method, tol=tol, max_steps=max_steps, dtype=dtype, xp=xp)
    if method == "newton":
        _xp.raise_if_traced(A, f"{name}(method='newton')")
        p = _newton_options(p, reg, name)
        tol, max_steps, check_every = _iteration_options(tol, max_steps, check_every, A, dtype,
                                                        name, xp=xp)
    else:
        if tol is not None or max_steps is not None:
            msg = f"{name}: tol and max_steps apply to method='newton', not {method!r}"
            raise ValueError(msg)
        _checks.as_count(check_every, "check_every", name)
    if _checks.is_empty(A):
        return xp.zeros(A.shape, dtype=A.dtype, device=_xp.device(A))
    if method == "eigh":
        alpha = -1.0 / p if inverse else 1.0 / p
        return _finite_or_nan(lambda X: _power_eigh(X, alpha, reg, name=name, dtype=dtype,
                                                    xp=xp), A, check_finite, name, xp)
    return _finite_or_nan(
        lambda X: _newton_root(X, p, inverse=inverse, reg=reg, tol=tol, max_steps=max_steps,
                               check_every=check_every, dtype=dtype, name=name, xp=xp),
        A, check_finite, name, xp)


def _choose_method(method, *, tol, max_steps, dtype, xp):
    """The documented ``method="auto"`` rule of `inverse_root`."""
    if method not in METHODS:
        msg = f"method must be 'auto', 'eigh' or 'newton'; got {method!r}"
        raise ValueError(msg)
    if method != "auto":
        return method
    half = dtype is not None and _xp.is_half(dtype, xp)
    return "newton" if (tol is not None or max_steps is not None or half) else "eigh"


def _regularisation(eps, eps_mode, rank_rtol, clip_negative):
    """Check the ridge / pseudo-inverse / clipping options and bundle them."""
    eps = _checks.as_real(eps, "eps", "the ridge")
    if not (math.isfinite(eps) and eps >= 0):
        msg = f"eps must be a finite number >= 0; got eps={eps!r}"
        raise ValueError(msg)
    if eps_mode not in EPS_MODES:
        msg = f"eps_mode must be 'absolute' or 'relative'; got {eps_mode!r}"
        raise ValueError(msg)
    if rank_rtol is not None:
        rank_rtol = _checks.as_real(rank_rtol, "rank_rtol", "the pseudo-inverse")
        if not (math.isfinite(rank_rtol) and rank_rtol >= 0):
            msg = f"rank_rtol must be a finite number >= 0; got rank_rtol={rank_rtol!r}"
            raise ValueError(msg)
    return _Regularisation(eps, eps_mode == "relative", rank_rtol, bool(clip_negative))


def _newton_options(p, reg, name):
    """``p`` as an int; the options that only the eigendecomposition can honour raise."""
    if not float(p).is_integer():
        msg = f"{name}(method='newton') needs an integer root order; got p={p!r}"
        raise ValueError(msg)
    for option, given in (("rank_rtol", reg.rank_rtol is not None),
                          ("clip_negative", reg.clip_negative)):
        if given:
            msg = f"{name}: {option} needs method='eigh'; the Newton iteration cannot apply it"
            raise ValueError(msg)
    return int(p)


def _iteration_options(tol, max_steps, check_every, A, dtype, name, *, xp):
    """Defaults and range checks of ``tol``, ``max_steps`` and ``check_every``."""
    if tol is None:
        work = _xp.compute_dtype(dtype, A.dtype, xp)
        tol = math.sqrt(max(A.shape[-1], 1)) * float(xp.finfo(work).eps)
    max_steps = DEFAULT_MAX_STEPS if max_steps is None else max_steps
    tol = _checks.as_bound(tol, "tol", name, strict=True)
    for option, value in (("max_steps", max_steps), ("check_every", check_every)):
        if isinstance(value, bool) or not (isinstance(value, numbers.Integral) and value >= 1):
            msg = f"{name}: {option} must be an integer >= 1; got {option}={value!r}"
            raise ValueError(msg)
    return tol, int(max_steps), int(check_every)


def _cast(x, dtype, *, xp):
    """``x`` in ``dtype``, without a copy when it already is."""
    return x if x.dtype == dtype else xp.astype(x, dtype)


def _symmetrise(A, *, xp):
    """``(A + A^T) / 2``, a new array."""
    return (A + xp.matrix_transpose(A)) * 0.5


def _has_float64(A, xp):
    """Whether ``A``'s device supports float64 (array API inspection)."""
    info = getattr(xp, "__array_namespace_info__", None)
    if info is None:
        return True
    return "float64" in info().dtypes(device=_xp.device(A), kind="real floating")


# --- method "eigh" -----------------------------------------------------------------------------


def _power_eigh(A, alpha, reg, *, name, dtype, xp):
    """``(A + ridge)^alpha`` as ``W W^T`` with ``W = U diag((lambda + ridge)^(alpha/2))``."""
    work = _xp.decomposition_dtype(_xp.compute_dtype(dtype, A.dtype, xp), xp)
    w, U = _eigh(_symmetrise(_cast(A, work, xp=xp), xp=xp), name, xp=xp)
    level = _rounding_level(A.shape[-1], A.dtype, work, xp)
    g = _spectral_power(w, alpha / 2, reg, level, name=name, xp=xp)
    _raise_if_overflows(g, alpha, name, work, xp=xp)
    W = U * g[..., None, :]
    return _cast(W @ xp.matrix_transpose(W), A.dtype, xp=xp)


def _raise_if_overflows(g, alpha, name, work, *, xp):
    """LinAlgError if ``lambda^alpha`` overflows ``work`` (a host synchronisation).

    Its products with the eigenvectors would spread inf and NaN over every entry.
    Skipped while tracing: the result then holds inf or NaN."""
    if _xp.is_traced(g):
        return
    if not bool(xp.all(xp.isfinite(g * g))):
        msg = (f"{name}: A^{alpha:g} overflows {work} (an eigenvalue's power exceeds the "
               f"largest representable number); add a ridge (eps) or compute in a wider "
               f"dtype (dtype=)")
        raise LinAlgError(msg)


def _eigh(S, name, *, xp):
    """``eigh(S)``, retried once in float64 if it fails in a narrower dtype."""
    try:
        w, U = _xp.eigh(S, xp=xp)
        finite = _xp.is_traced(w) or bool(xp.all(xp.isfinite(w)))  # traced: no retry
        failure = None if finite else "non-finite eigenvalues"
    except (ValueError, RuntimeError) as exc:  # numpy's LinAlgError, torch's _LinAlgError
        failure = exc
    if failure is None:
        return w, U
    if S.dtype == xp.float64 or not _has_float64(S, xp):
        msg = f"{name}: the eigendecomposition failed in {S.dtype} ({failure})"
        raise ConvergenceError(msg) from (failure if isinstance(failure, Exception) else None)
    return _eigh(xp.astype(S, xp.float64), name, xp=xp)


def _rounding_level(n, input_dtype, work, xp):
    """Eigenvalues within this multiple of ``||A||_2`` of zero are rounding noise.

    ``sqrt(n) eps`` bounds the storage rounding of ``A`` (``||E||_2 <= ||E||_F``), and
    ``n eps`` the backward error of the eigendecomposition in ``work``.
    """
    return math.sqrt(n) * float(xp.finfo(input_dtype).eps) + n * float(xp.finfo(work).eps)


def _spectral_power(w, power, reg, level, *, name, xp):
    """``(w + ridge)^power`` over the eigenvalues ``w`` (..., n), 0 where pseudo-inverted."""
    scale = xp.max(xp.abs(w), axis=-1, keepdims=True)  # ||A||_2
    if not reg.clip_negative:
        _raise_if_indefinite(w, scale, level, name, xp=xp)
    w = xp.where(w > 0, w, 0.0)
    largest = xp.max(w, axis=-1, keepdims=True)
    ridge = reg.eps * largest if reg.relative else reg.eps
    if reg.rank_rtol is not None:
        keep = w > reg.rank_rtol * largest
    else:
        keep = xp.ones(w.shape, dtype=xp.bool, device=_xp.device(w))
        if power < 0:
            smallest = level * scale if reg.eps == 0 else 0.0
            _raise_if_singular(w + ridge, smallest, scale, level, name, xp=xp)
    base = xp.where(keep, w + ridge, 1.0)
    return xp.where(keep, base**power, 0.0)


def _raise_if_indefinite(w, scale, level, name, *, xp):
    """ValueError if an eigenvalue lies below ``-level * ||A||_2`` (a host synchronisation).

    Skipped while tracing: indefinite input then follows the clipped spectrum."""
    if _xp.is_traced(w):
        return
    ratio = xp.min(w / xp.where(scale > 0, scale, 1.0))
    if float(ratio) < -level:
        msg = (f"{name} needs positive semi-definite matrices; A is indefinite, with an "
               f"eigenvalue of {float(ratio):.3g} * ||A||_2, below the rounding level "
               f"-{level:.2g} * ||A||_2. Pass clip_negative=True to treat negative "
               "eigenvalues as zero")
        raise LinAlgError(msg)


def _raise_if_singular(shifted, smallest, scale, level, name, *, xp):
    """ValueError if a shifted eigenvalue is at or below ``smallest`` (a host synchronisation).

    Skipped while tracing: a singular input then gives inf or NaN, not an error."""
    if _xp.is_traced(shifted):
        return
    if bool(xp.any(shifted <= smallest)):
        ratio = float(xp.min(shifted / xp.where(scale > 0, scale, 1.0)))
        msg = (f"{name}: A is singular to working precision (smallest eigenvalue {ratio:.2g} "
               f"* ||A||_2, at or below the rounding level {level:.2g} * ||A||_2); regularise "
               "with eps > 0 (a ridge) or rank_rtol (a pseudo-inverse)")
        raise LinAlgError(msg)


# --- method "newton" ---------------------------------------------------------------------------


def _newton_root(A, p, *, inverse, reg, tol, max_steps, check_every, dtype, name, xp):
    """``(A + ridge)^(-1/p)`` or ``^(1/p)`` by the coupled Newton iteration (integer ``p``)."""
    work = _xp.compute_dtype(dtype, A.dtype, xp)
    wide = _xp.decomposition_dtype(xp.result_type(A.dtype, work), xp)  # norms, scales, ridge
    B = _ridged(A, reg, wide, xp=xp)
    if not inverse and p == 1:
        _checks.check_finite(B, name, xp=xp)
        return _cast(B, A.dtype, xp=xp)
    norm = _xp.frobenius_norm(B, xp=xp)
    z = xp.astype((p + 1.0) / (2.0 * xp.where(norm > 0, norm, 1.0)), work)
    M = xp.astype(B, work) * z  # eigenvalues in (0, (p + 1) / 2]
    Y = _inverse_root_newton(M, p, tol=tol, max_steps=max_steps, check_every=check_every,
                             name=name, xp=xp)
    if inverse:  # B^(-1/p) = z^(1/p) M^(-1/p)
        X, scale = Y, xp.astype(z, wide) ** (1.0 / p)
    else:  # B^(1/p) = z^(-1/p) M M^(-(p-1)/p)
        X, scale = M @ _matrix_power(Y, p - 1), xp.astype(z, wide) ** (-1.0 / p)
    X = _symmetrise(_cast(X, wide, xp=xp), xp=xp)  # drops the antisymmetric part of the error
    return _cast(X * scale, A.dtype, xp=xp)


def _ridged(A, reg, wide, *, xp):
    """The symmetric part of ``A`` plus the ridge, in ``wide``."""
    B = _symmetrise(_cast(A, wide, xp=xp), xp=xp)
    if reg.eps == 0:
        return B
    ridge = reg.eps * _largest_eigenvalue(B, xp=xp) if reg.relative else reg.eps
    return B + ridge * _xp.eye_like(B, xp=xp)


def _inverse_root_newton(M, p, *, tol, max_steps, check_every, name, xp):
    """``M^(-1/p)`` for eigenvalues of ``M`` in (0, (p + 1) / 2]; see `inverse_root`."""
    M0, X, E, previous = M, None, None, math.inf
    for step in range(1, max_steps + 1):
        if E is None:
            T = _xp.add_diagonal(M * (-1.0 / p), (p + 1.0) / p, xp=xp)  # ((p + 1) I - M) / p
            X = T if X is None else X @ T
            M = _matrix_power(T, p) @ M
        else:  # the same step on E = M - I: T = I - E / p
            X = _xp.matmul_add(X, E, X, alpha=-1.0 / p, beta=1.0, xp=xp)
            D = _shifted_power(E * (-1.0 / p), p, xp=xp)  # T^p - I, with T - I = -E / p
            E = _shifted_product(D, E, xp=xp)  # T^p (I + E) - I
        if step % check_every and step < max_steps:
            continue
        residual = _residual(M, xp=xp) if E is None else _residual(E, shift=0.0, xp=xp)
        if residual <= tol:
            return X
        if not residual <= GROWTH * previous:  # also NaN; never happens for SPD input
            _raise_diverged(M0, name, step, xp=xp)
        if E is None and residual <= SWITCH_RESIDUAL:
            E = _xp.add_diagonal(M, -1.0, xp=xp)  # M is a fresh product: updated in place
        previous = residual
    msg = (f"{name}(method='newton') did not reach tol={tol:.3g} in max_steps={max_steps} "
           f"iterations (residual ||M - I||_F = {residual:.3g}). A + ridge may be singular, "
           "indefinite or too ill-conditioned for the compute dtype: add a ridge (eps), "
           "compute in a wider dtype, or use method='eigh'")
    raise ConvergenceError(msg)


def _matrix_power(T, p):
    """``T^p`` for an integer ``p >= 1`` by repeated squaring."""
    result, base = None, T
    while p:
        if p & 1:
            result = base if result is None else result @ base
        p >>= 1
        if p:
            base = base @ base
    return result


def _shifted_power(F, p, *, xp):
    """``(I + F)^p - I`` for an integer ``p >= 1`` by repeated squaring, never forming ``I + F``.

    Small ``F`` keeps its relative precision: ``(I + F)^2 - I = 2 F + F^2`` and
    ``(I + F)(I + G) - I = F + G + F G``.
    """
    result, base = None, F
    while p:
        if p & 1:
            result = base if result is None else _shifted_product(result, base, xp=xp)
        p >>= 1
        if p:
            # base is symmetric only up to rounding: the blocked product (base base^T from
            # its upper triangle) stalled the coupled iteration at n = 2048 (residual 2e-5)
            base = _xp.symmetric_square_add(base, alpha=1.0, beta=2.0, xp=xp, symmetric=False)
    return result


def _shifted_product(F, G, *, xp):
    """``(I + F)(I + G) - I = F + G + F G``."""
    return _xp.matmul_add(F, G, F + G, alpha=1.0, beta=1.0, xp=xp)


def _residual(R, *, shift=1.0, xp):
    """``max ||R - shift I||_F`` over the stack, as a Python float (a host synchronisation)."""
    R = xp.astype(R, _xp.decomposition_dtype(R.dtype, xp), copy=True)
    if shift:
        R = _xp.add_diagonal(R, -shift, xp=xp)
    return float(xp.max(_xp.frobenius_norm(R, xp=xp)))


def _raise_diverged(M0, name, step, *, xp):
    """A growing or non-finite residual: non-finite input, or an indefinite one."""
    if not bool(xp.all(xp.isfinite(M0))):
        msg = f"{name} got non-finite values (inf or NaN), or a norm that overflows"
        raise ValueError(msg)
    msg = (f"{name}(method='newton') diverged after {step} iteration(s): A + ridge must "
           "be symmetric positive definite, with a condition number the compute dtype "
           "can represent; add a ridge (eps) or use method='eigh'")
    raise ConvergenceError(msg)


def _largest_eigenvalue(S, *, steps=LANCZOS_STEPS, xp):
    """Lanczos estimate of ``lambda_max`` of each symmetric matrix in S, shape (..., 1, 1).

    The largest Ritz value after ``min(steps, n)`` steps, from a fixed start vector (a
    low-discrepancy sequence, so results are reproducible). It never exceeds the true
    value by more than rounding, and typically matches it to 1e-3 relative or better.
    """
    n = S.shape[-1]
    j = xp.arange(n, dtype=S.dtype, device=_xp.device(S))
    v = xp.remainder(j * 0.7548776662466927 + 0.5698402909980532, 1.0) - 0.5
    v = xp.broadcast_to(xp.reshape(v / xp.linalg.vector_norm(v), (n, 1)), (*S.shape[:-1], 1))
    v_prev, beta = xp.zeros_like(v), 0.0
    alphas, betas = [], []
    for _ in range(min(steps, n)):
        w = S @ v
        alpha = xp.sum(v * w, axis=-2, keepdims=True)
        w = w - alpha * v - beta * v_prev
        beta = xp.sqrt(xp.sum(w * w, axis=-2, keepdims=True))
        v_prev, v = v, w / xp.where(beta > 0, beta, 1.0)  # breakdown: v = 0 from here on
        alphas.append(alpha[..., 0])
        betas.append(beta[..., 0])
    ritz = xp.linalg.eigvalsh(_tridiagonal(alphas, betas[:-1], xp=xp))
    return xp.max(ritz, axis=-1)[..., None, None]


def _tridiagonal(diagonal, off_diagonal, *, xp):
    """The symmetric tridiagonal (..., k, k) matrix from lists of (..., 1) arrays."""
    a = xp.concat(diagonal, axis=-1)
    b = xp.concat([*off_diagonal, xp.zeros_like(diagonal[0])], axis=-1)  # b[i] couples i, i+1
    k, dev = a.shape[-1], _xp.device(a)
    upper = xp.eye(k, k=1, dtype=a.dtype, device=dev) * b[..., :, None]
    middle = xp.eye(k, dtype=a.dtype, device=dev) * a[..., None, :]
    return middle + upper + xp.matrix_transpose(upper)
