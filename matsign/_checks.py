"""Input checks shared by the public routines: shapes, dtypes, finiteness, scalars.

Every check takes ``name``, the public function the caller is, so that its error names
both the bad value and where it went in: ``msign expects shape (..., m, n); got (3,)``.
Arrays are checked through their ``xp`` namespace; the dtype policy itself (integers to
the default float, complex refused) is `matsign._xp.result_dtype`.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import warnings
from collections.abc import Callable
from typing import TypeVar

from . import _xp

__all__ = [
    "as_bound", "as_count", "as_float", "as_float_matrix", "as_real", "as_square_stack",
    "check_finite", "float_dtype", "is_empty", "nan_where_nonfinite", "renamed_keywords",
]

F = TypeVar("F", bound=Callable)


def as_float_matrix(G, name, *, xp):
    """``G`` checked to be a stack of matrices (..., m, n), in its floating result dtype."""
    if G.ndim < 2:
        msg = f"{name} expects shape (..., m, n); got {tuple(G.shape)}"
        raise ValueError(msg)
    return as_float(G, name, xp=xp)


def as_square_stack(A, name, *, xp):
    """``A`` checked to be a stack of square matrices (..., n, n), in its floating result dtype."""
    if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
        msg = f"{name} expects square matrices of shape (..., n, n); got {tuple(A.shape)}"
        raise ValueError(msg)
    return as_float(A, name, xp=xp)


def as_float(x, name, *, xp):
    """``x`` cast to its floating result dtype (integers to float, complex refused)."""
    dtype = float_dtype(x, name, xp=xp)
    return _xp.astype(x, dtype, xp=xp)


def float_dtype(x, name, *, xp):
    """`matsign._xp.result_dtype` of ``x``, its TypeError prefixed with ``name``."""
    try:
        return _xp.result_dtype(x, xp)
    except TypeError as exc:
        msg = f"{name}: {exc}"
        raise TypeError(msg) from exc


def check_finite(x, name, *, xp):
    """Raise ValueError naming ``name`` if ``x`` holds inf or NaN (a host synchronisation).

    Skipped while tracing (`matsign._xp.is_traced`): the values then propagate as NaN.
    """
    if _xp.is_traced(x):
        return
    if not bool(xp.all(xp.isfinite(x))):
        msg = f"{name} got non-finite values (inf or NaN) in an array of shape {tuple(x.shape)}"
        raise ValueError(msg)


def nan_where_nonfinite(fn, X, *, xp, fill="zeros"):
    """``fn(X)`` per matrix, with NaN for every matrix of ``X`` that holds inf or NaN.

    The one rule for non-finite input to the decompositions and loops (SVD, eigh, the
    ``tol=`` iteration, inverse roots): such a matrix is replaced by zeros (or the
    identity, ``fill="identity"``, for roots that refuse singular input) before ``fn``
    and its result by NaN, so it neither crashes (torch's ``_LinAlgError``) nor stalls a
    stack nor hides among finite results. No host sync. ``fn`` maps ``(..., m, n)`` to
    ``(..., *rest)``.
    """
    bad = ~xp.all(xp.isfinite(X), axis=(-2, -1))
    stand_in = _xp.eye_like(X, xp=xp) if fill == "identity" else xp.zeros_like(X)
    out = fn(xp.where(bad[..., None, None], stand_in, X))
    flags = xp.reshape(bad, (*bad.shape, *(1,) * (out.ndim - bad.ndim)))
    return xp.where(flags, xp.asarray(float("nan"), dtype=out.dtype, device=_xp.device(out)),
                    out)


def is_empty(x):
    """Whether ``x`` has no elements (an axis of length 0)."""
    return any(int(d) == 0 for d in x.shape)


def as_real(value, what, name):
    """``value`` as a Python float; TypeError for booleans and non-numbers."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        msg = f"{name} needs a real number for {what}; got {type(value).__name__} {value!r}"
        raise TypeError(msg)
    return float(value)


def as_bound(value, what, name, *, low=0.0, strict=False):
    """``value`` as a finite Python float ``>= low`` (``> low`` if ``strict``).

    TypeError for a non-number, ValueError (naming ``what`` and the value) otherwise.
    """
    x = as_real(value, what, name)
    if not (math.isfinite(x) and (x > low if strict else x >= low)):
        msg = f"{name}: {what} must be a finite number {'>' if strict else '>='} {low:g}; " \
              f"got {what}={value!r}"
        raise ValueError(msg)
    return x


def as_rate(value, what, name, *, closed=False):
    """``value`` as a Python float in [0, 1) ([0, 1] if ``closed``): a decay or mixing rate.

    TypeError for a non-number, ValueError (naming ``what`` and the value) otherwise, NaN
    included.
    """
    x = as_real(value, what, name)
    if not (0.0 <= x < 1.0 or (closed and x == 1.0)):
        msg = f"{name}: {what} must lie in [0, 1{']' if closed else ')'}; got {what}={value!r}"
        raise ValueError(msg)
    return x


def as_count(value, what, name, *, minimum=1):
    """``value`` as a Python int ``>= minimum``: TypeError for non-integers (2.5, True)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        msg = f"{name}: {what} must be an integer; got {type(value).__name__} {value!r}"
        raise TypeError(msg)
    if value < minimum:
        msg = f"{name}: {what} must be an integer >= {minimum}; got {what}={value!r}"
        raise ValueError(msg)
    return int(value)


def renamed_keywords(*, since: str, until: str, **renames: str) -> Callable[[F], F]:
    """Decorator: old keyword spellings ``old="new"`` still accepted, with a DeprecationWarning.

    The wrapped function's signature (``inspect.signature``, Sphinx) shows only the new
    names. Giving both spellings is a TypeError naming both; a call without an old
    spelling costs one dictionary lookup per renamed keyword.
    """
    def decorate(function: F) -> F:
        signature = inspect.signature(function)
        where = (function.__name__, since, until)

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            for old, new in renames.items():
                if old in kwargs:
                    _respell(args, kwargs, old, new, signature, where)
            return function(*args, **kwargs)

        return wrapper

    return decorate


def _respell(args, kwargs, old, new, signature, where):
    """Move ``kwargs[old]`` to ``kwargs[new]``, warning; see `renamed_keywords`."""
    name, since, until = where
    value = kwargs.pop(old)
    if new in kwargs or new in signature.bind_partial(*args, **kwargs).arguments:
        msg = f"{name} got both {new}= and its deprecated spelling {old}=; pass {new}= only"
        raise TypeError(msg)
    msg = (f"{name}: {old}= is deprecated since matsign {since} and will be removed in {until}; "
           f"use {new}= (same meaning)")
    warnings.warn(msg, DeprecationWarning, stacklevel=3)  # 1 _respell, 2 the wrapper, 3 the caller
    kwargs[new] = value
