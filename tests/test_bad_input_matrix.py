"""The bad-input matrix of issue 14: every public routine on every backend over every class.

Every public function of `matsign`, `matsign.kron`, `matsign.duality`, the array-taking
parts of `matsign.polynomials`, the functional steppers of `matsign.optim` and the
`matsign.optim.torch` classes, crossed with the bad-input classes of issue 14 (0-d/1-d,
empty and zero-size batches, integer, bool, complex, float16/bfloat16, NaN/Inf in one
entry or all, mixed libraries, non-square, indefinite, bad powers, zero and
rank-deficient, 1e+-300 / 1e+-30 scales, transposed views, read-only inputs, bad keyword
values; for optimizers NaN/Inf/None gradients, 1-/3-/4-D and zero-size parameters, state
dicts with wrong shapes). Each case expects one outcome, from the docstrings:

``error``
    ValueError (numpy.linalg.LinAlgError included), TypeError or ConvergenceError whose
    message names the routine or the bad value.
``nan``
    The documented non-finite result: NaN (or inf) exactly where the input was not
    finite, the finite matrices of the stack as if alone.
``finite``
    A finite answer in the input's namespace, device and (floating result) dtype,
    checked against a float64 NumPy oracle (SVD, eigh, closed forms) or, where none is
    cheap, the documented invariant.
``zeros``
    Zero-size in, zero-size (or zero) out.

A case fails on any other exception (AttributeError, IndexError, ZeroDivisionError,
RuntimeError such as torch's ``_LinAlgError``, ...), a silent wrong answer, a mutated
input (compared with a copy taken before) or a case running past 30 s (60 s on JAX, whose
first eager call of every shape and dtype compiles): a hang, not a slow case.
Known defects are ``xfail(strict=True)`` with the defect and its repro as the reason
(`KNOWN_DEFECTS`; ``pytest -rx`` lists them). float16 does not run on JAX: it takes
bfloat16's half-precision path, and JAX compiles every eager op again per dtype.

Counts per backend (handled / total; xfails count as not handled), with ``-v`` every
failure and the time per routine::

    python tests/test_bad_input_matrix.py [--xp numpy,torch] [-v]
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import array_api_compat
import array_api_compat.numpy
import numpy as np
import pytest

import matsign
from matsign import (
    duality,
    inverse_root,
    kron,
    matrix_root,
    msign,
    newton_schulz,
    optim,
    orthogonality_error,
    polar,
    polynomials,
    psd_power,
)

# Seconds after which a case counts as a hang: a hang detector, not a speed test (cases take
# milliseconds; JAX compiles every new shape and dtype on its first eager call, and a shared
# 2-core CI machine can stall any process for seconds).
SLOW_S = {"jax": 60.0}
SLOW_DEFAULT_S = 30.0
ACCEPTED = (ValueError, TypeError, matsign.ConvergenceError)  # LinAlgError is a ValueError
TOL = {"float64": 1e-9, "float32": 2e-4, "float16": 2e-2, "bfloat16": 1e-1}

# Integer-valued inputs: exact in every dtype, bfloat16 included.
G0 = np.array([[2.0, -1, 0], [1, 3, 1], [0, 1, -2], [1, 0, 1]])  # 4 x 3, cond ~ 2
G1 = np.array([[1.0, 0, 2], [-1, 2, 0], [0, 1, 1], [2, 1, 0]])
G_RANK2 = np.array([[1.0, 2, 3], [2, 4, 6], [1, 0, 1], [0, 0, 0]])  # rank 2
G_BOOL = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1]], dtype=bool)
A0 = np.array([[4.0, 1, 0], [1, 3, 1], [0, 1, 2]])  # symmetric positive definite
A1 = np.array([[5.0, 2, 0], [2, 4, 0], [0, 0, 1]])
A_RANK2 = np.array([[1.0, 1, 0], [1, 1, 0], [0, 0, 2]])  # eigenvalues 2, 2, 0
A_INDEFINITE = np.array([[1.0, 2, 0], [2, 1, 0], [0, 0, 1]])  # eigenvalues 3, 1, -1
K0 = np.arange(24.0).reshape(2, 3, 2, 2) % 5 - 2  # conv kernels (out, in, 2, 2)


# --- backends, arrays and their host copies --------------------------------------------------


def family(backend):
    """numpy, array_api_strict, torch or jax."""
    return backend.name.partition(":")[0]


def supports(backend, dtype):
    """Whether arrays of ``dtype`` (a name) exist on ``backend``'s device."""
    fam = family(backend)
    wide = "float64" in backend.dtypes
    if dtype in ("float64", "complex128"):
        return wide
    if dtype == "bfloat16":
        return fam in ("torch", "jax")
    if dtype == "float16":  # JAX: the half path is bfloat16's; every eager op would compile
        return fam not in ("array_api_strict", "jax")  # again for float16 (~20 s)
    return True


def make(backend, a, dtype):
    """A new array of ``backend`` holding ``a`` in ``dtype``."""
    a = np.asarray(a)
    fam = family(backend)
    staged = a.astype("float32" if dtype == "bfloat16" else dtype)
    if fam == "numpy":
        return staged.copy()
    if fam == "torch":
        import torch

        return torch.as_tensor(staged).to(device=backend.device, dtype=getattr(torch, dtype))
    if fam == "jax":
        import jax.numpy as jnp

        return jnp.asarray(staged).astype(dtype)
    return backend.xp.asarray(staged, device=backend.device)


def dtype_of(backend, name):
    fam = family(backend)
    if fam == "numpy":
        return np.dtype(name)
    if fam == "torch":
        import torch

        return getattr(torch, name)
    if fam == "jax":
        import jax.numpy as jnp

        return jnp.dtype(name)
    return getattr(backend.xp, name)


def default_float(backend):
    """The namespace's default real floating dtype name on the backend's device."""
    info = backend.xp.__array_namespace_info__()
    dt = info.default_dtypes(device=backend.device)["real floating"]
    return "float64" if dt == dtype_of(backend, "float64") and "float64" in backend.dtypes \
        else "float32"


def dtype_name(x):
    return str(x.dtype).rpartition(".")[-1]


def host(x):
    """A NumPy copy of any backend's array (half precisions widened to float32)."""
    if array_api_compat.is_torch_array(x):
        t = x.detach().cpu()
        if dtype_name(t) in ("bfloat16", "float16"):
            t = t.float()
        return t.numpy().copy()
    if array_api_compat.is_jax_array(x):
        if dtype_name(x) in ("bfloat16", "float16"):
            x = x.astype("float32")
        return np.array(x)
    if array_api_compat.is_numpy_array(x):
        return np.array(x, copy=True)
    return np.array(np.from_dlpack(x), copy=True)


def is_array(x):
    return array_api_compat.is_array_api_obj(x) and not isinstance(x, (int, float, bool))


def arrays(result):
    """Every array in a (nested) tuple or NamedTuple result, in order."""
    if is_array(result):
        return [result]
    if isinstance(result, (tuple, list)):
        return [a for part in result for a in arrays(part)]
    if isinstance(result, dict):
        return [a for part in result.values() for a in arrays(part)]
    return []


def library(x):
    for kind in ("numpy", "torch", "jax"):
        if getattr(array_api_compat, f"is_{kind}_array")(x):
            return kind
    return type(x).__module__.partition(".")[0]


def other_namespace(backend):
    """A namespace of another library than the backend's (for mixed-library cases)."""
    if family(backend) == "numpy":
        import array_api_strict

        return array_api_strict
    return array_api_compat.numpy


def other_array(backend, a):
    """``a`` as an array of another library than the backend's."""
    if family(backend) == "numpy":
        import array_api_strict

        return array_api_strict.asarray(np.asarray(a, dtype=np.float64))
    return np.asarray(a, dtype=np.float64)


class Ctx:
    """What one case builds on its backend: the inputs, with host copies for the checks."""

    def __init__(self, backend):
        self.backend = backend
        self.xp = backend.xp
        self.float = "float64" if "float64" in backend.dtypes else "float32"
        self.inputs = []  # (array, host copy before the call)

    def arr(self, a, dtype=None, *, view=None):
        """An input array; ``view`` "T": a transposed (non-contiguous) view, "readonly"."""
        dtype = dtype or self.float
        a = np.asarray(a)
        if view == "T":
            x = self.xp.matrix_transpose(make(self.backend, np.swapaxes(a, -1, -2), dtype))
        else:
            x = make(self.backend, a, dtype)
        if view == "readonly":
            x.flags.writeable = False
        self.inputs.append((x, host(x)))
        return x

    def host64(self, i=0):
        """Input ``i`` as it was before the call, in float64."""
        return self.inputs[i][1].astype(np.float64)

    def mutated(self):
        """Descriptions of the inputs whose values changed during the call."""
        changed = []
        for i, (x, before) in enumerate(self.inputs):
            after = host(x)
            nan = before.dtype.kind in "fc"
            if before.shape != after.shape or not np.array_equal(before, after, equal_nan=nan):
                changed.append(f"input {i} was modified")
        return changed


# --- cases --------------------------------------------------------------------------------------


@dataclass
class Case:
    """One call and its expected outcome (see the module docstring)."""

    id: str
    run: Callable[[Ctx], Any]
    expect: str  # "error", "nan", "finite", "zeros", or alternatives "finite|error"
    check: Callable[[Ctx, Any], None] | None = None
    names: tuple[str, ...] = ()  # an error message names one of these
    needs: tuple[str, ...] = ()  # dtypes the backend must have
    only: tuple[str, ...] | None = None  # backend families it runs on
    dtype: str | None = "input"  # result dtype: "input" (the main input's float), a name, None
    xfail: dict = field(default_factory=dict)  # family (or "*") -> the defect

    def applies(self, backend):
        return ((self.only is None or family(backend) in self.only)
                and all(supports(backend, d) for d in self.needs))

    def known_defect(self, backend):
        return self.xfail.get(family(backend), self.xfail.get("*"))


def evaluate(case, backend):
    """None if ``case`` is handled on ``backend``, else why not."""
    ctx = Ctx(backend)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = case.run(ctx)
        raised = None
    except ACCEPTED as exc:
        raised = exc
    except Exception as exc:  # noqa: BLE001  (any other kind is the failure being counted)
        return f"{type(exc).__module__}.{type(exc).__name__}: {exc}"[:300]
    took = time.perf_counter() - start
    problems = ctx.mutated()
    if took > SLOW_S.get(family(backend), SLOW_DEFAULT_S):
        problems.append(f"took {took:.2f} s")
    expected = case.expect.split("|")
    if raised is not None:
        if "error" not in expected:
            problems.append(f"raised {type(raised).__name__}: {raised}"[:300])
        elif case.names and not any(n.lower() in str(raised).lower() for n in case.names):
            problems.append(f"message names none of {case.names}: {raised}"[:300])
    elif expected == ["error"]:
        problems.append(f"no error; returned {summary(result)}")
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                check_result(case, ctx, result, expected)
        except AssertionError as exc:
            problems.append(f"wrong answer: {exc}"[:400])
        except Exception as exc:  # noqa: BLE001  (a result the check cannot even read)
            problems.append(f"unreadable result: {type(exc).__name__}: {exc}"[:400])
    return "; ".join(problems) or None


def summary(result):
    found = arrays(result)
    if not found:
        return repr(result)[:80]
    return ", ".join(f"{tuple(a.shape)} {dtype_name(a)}" for a in found[:3])


def check_result(case, ctx, result, expected):
    """The generic part (namespace, device, dtype, finiteness) and the case's own check."""
    outs = arrays(result)
    lib = library(ctx.inputs[0][0]) if ctx.inputs else None
    for out in outs:
        if lib is not None:
            assert library(out) == lib, f"result in {library(out)}, input in {lib}"
        if family(ctx.backend) in ("torch", "array_api_strict") and lib == family(ctx.backend):
            assert array_api_compat.device(out) == ctx.backend.device, "device changed"
    if case.dtype is not None and outs and lib is not None:
        want = result_dtype(case.dtype, ctx)
        assert dtype_name(outs[0]) == want, f"dtype {dtype_name(outs[0])}, expected {want}"
    kind = expected[0]
    if kind == "finite":
        for out in outs:
            assert np.all(np.isfinite(host(out))), "non-finite values for finite input"
    if kind == "zeros":
        for out in outs:
            assert np.all(host(out) == 0), "zero-size or zero input gave a non-zero result"
    if case.check is not None:
        case.check(ctx, result)


def result_dtype(rule, ctx):
    """The dtype name a result should have: "input" is the main input's floating dtype,
    "work" the decomposition dtype of it (float32 for half precisions)."""
    if rule not in ("input", "work"):
        return rule
    name = dtype_name(ctx.inputs[0][0])
    if name.startswith(("int", "uint", "bool")):
        name = default_float(ctx.backend)
    if rule == "work" and name in ("float16", "bfloat16"):
        return "float32"
    return name


def tol_of(out, extra=0.0):
    return max(TOL[dtype_name(out)], extra)


def close(out, expected, tol, what="result"):
    """``out`` equals ``expected`` within ``tol`` relative to its largest entry."""
    got = host(out).astype(np.float64) if is_array(out) else np.float64(out)
    expected = np.asarray(expected, dtype=np.float64)
    assert np.all(np.isfinite(expected)), f"{what}: the oracle is not finite (a test bug)"
    if is_array(out) and dtype_name(out) in ("float32", "float16"):  # the representable answer
        expected = expected.astype(dtype_name(out)).astype(np.float64)
    assert got.shape == expected.shape, f"{what}: shape {got.shape}, expected {expected.shape}"
    if expected.size == 0:
        return
    err = float(np.max(np.abs(got - expected)))
    scale = float(np.max(np.abs(expected)))
    bound = tol * scale if scale > 0 else tol
    assert err <= bound, f"{what}: error {err:.3g} > {bound:.3g}"


def all_nan(x, what="result"):
    assert np.all(np.isnan(host(x))), f"{what}: expected all NaN"


def some_nonfinite(x, what="result"):
    assert not np.all(np.isfinite(host(x))), f"{what}: expected a non-finite value"


# --- float64 oracles --------------------------------------------------------------------------


def svd64(G):
    return np.linalg.svd(G, full_matrices=False)


def o_msign(G):
    U, S, Vh = svd64(G)
    if G.size == 0:
        return np.zeros(G.shape)
    keep = S > 1e-6 * S[..., :1]
    return (U * keep[..., None, :]) @ Vh


def o_polar_right(G):
    _, S, Vh = svd64(G)
    return o_msign(G), (np.swapaxes(Vh, -1, -2) * S[..., None, :]) @ Vh


def o_polar_left(G):
    U, S, _ = svd64(G)
    return o_msign(G), (U * S[..., None, :]) @ np.swapaxes(U, -1, -2)


def o_orthogonality_error(G):
    return np.max(np.abs(np.linalg.svd(G, compute_uv=False) - 1.0), axis=-1)


def _col_norms(G):
    s = np.max(np.abs(G), axis=-2, keepdims=True)
    s = np.where(s > 0, s, 1.0)
    return s[..., 0, :] * np.sqrt(np.sum((G / s) ** 2, axis=-2))


def _frobenius(G):
    s = np.max(np.abs(G), axis=(-2, -1), keepdims=True)
    s = np.where(s > 0, s, 1.0)
    return s[..., 0, 0] * np.sqrt(np.sum((G / s) ** 2, axis=(-2, -1)))


def o_norm(name, G, dual=False):
    m, n = G.shape[-2:]
    s = np.linalg.svd(G, compute_uv=False)
    if name == "spectral":
        return s.sum(-1) if dual else s.max(-1)
    if name == "rms_to_rms":
        return math.sqrt(m / n) * s.sum(-1) if dual else math.sqrt(n / m) * s.max(-1)
    if name == "frobenius":
        return _frobenius(G)
    if name == "linf":
        return np.sum(np.abs(G), axis=(-2, -1)) if dual else np.max(np.abs(G), axis=(-2, -1))
    lengths = _col_norms(G)  # l1_to_rms
    return math.sqrt(m) * lengths.sum(-1) if dual else lengths.max(-1) / math.sqrt(m)


def o_dualize(name, G):
    m, n = G.shape[-2:]
    if name == "spectral":
        return o_msign(G)
    if name == "rms_to_rms":
        return math.sqrt(m / n) * o_msign(G)
    if name == "frobenius":
        f = _frobenius(G)[..., None, None]
        return G / np.where(f > 0, f, 1.0)
    if name == "linf":
        return np.sign(G)
    lengths = _col_norms(G)[..., None, :]
    return math.sqrt(m) * G / np.where(lengths > 0, lengths, 1.0)


def o_power(A, power, *, rank_rtol=None, clip=False):
    w, U = np.linalg.eigh((A + np.swapaxes(A, -1, -2)) / 2)
    w = np.where(w > 0, w, 0.0) if clip or power > 0 or rank_rtol is not None else w
    keep = np.ones_like(w, dtype=bool) if rank_rtol is None else \
        w > rank_rtol * w.max(-1, keepdims=True)
    g = np.where(keep, np.where(keep, w, 1.0) ** power, 0.0)
    return (U * g[..., None, :]) @ np.swapaxes(U, -1, -2)


# --- the matrix routines -----------------------------------------------------------------------


@dataclass
class Routine:
    """A public routine on (..., m, n) or (..., n, n) input and its contract."""

    name: str  # case id prefix
    fname: str  # the public name its errors should carry
    call: Callable[..., Any]  # call(X, **keywords)
    oracle: Callable[[np.ndarray], Any]  # float64 input -> expected result
    out: str = "input"  # result dtype rule ("input" or "work")
    tol: float = 0.0  # the method's own accuracy floor
    nonfinite: str = "matrix"  # "matrix" all NaN, "entries" some non-finite, "error"
    reduces: bool = False  # the result has shape (...) instead of (..., m, n)
    shapes: Callable | None = None  # input shape -> result shapes, if not the input's
    iterative: bool = False  # Newton–Schulz: on rank-deficient input only the range is exact
    rank_deficient: str = "finite"  # the expected outcome there
    keywords: tuple = ()  # (keywords, names) that must raise
    overrides: dict = field(default_factory=dict)  # class -> expected outcome (and names)


def _compare(result, expected, tol):
    outs = result if isinstance(result, tuple) else (result,)
    wants = expected if isinstance(expected, tuple) else (expected,)
    assert len(outs) == len(wants), f"{len(outs)} results, expected {len(wants)}"
    for i, (out, want) in enumerate(zip(outs, wants, strict=True)):
        close(out, want, tol_of(out, tol), what=f"result {i}")


def oracle_check(r, index=0):
    def check(ctx, result):
        _compare(result, r.oracle(ctx.host64(index)), r.tol)
    return check


def range_check(r):
    """Newton–Schulz on a rank-deficient G: ``Q V_r = U_r`` on the range of G; sigma <= 1."""
    def check(ctx, result):
        G = ctx.host64()
        U, S, Vh = svd64(G)
        r_ = int(np.sum(S > 1e-6 * S[0]))
        Q = host(result).astype(np.float64)
        close(Q @ Vh[:r_].T, U[:, :r_], tol_of(result, r.tol), what="range")
        assert np.linalg.svd(Q, compute_uv=False).max() <= 1 + tol_of(result, r.tol) + 0.1
    return check


def stack_check(r, bad):
    """The stack (G0 | G1 with one bad entry): row 1 per the rule, row 0 as if alone."""
    def check(ctx, result):
        outs = result if isinstance(result, tuple) else (result,)
        wants = r.oracle(ctx.host64()[:1])
        wants = wants if isinstance(wants, tuple) else (wants,)
        for i, (out, want) in enumerate(zip(outs, wants, strict=True)):
            got = host(out)
            close(got[:1], want, tol_of(out, r.tol), what=f"finite matrix of result {i}")
            if r.nonfinite == "matrix":
                assert np.all(np.isnan(got[1])), f"result {i}: the bad matrix is not all NaN"
            elif r.nonfinite == "entries" and not (bad == "inf" and r.name == "dualize[linf]"):
                assert not np.all(np.isfinite(got[1])), f"result {i}: bad matrix looks finite"
    return check


def nan_all_check(r):
    def check(ctx, result):
        for out in (result if isinstance(result, tuple) else (result,)):
            (all_nan if r.nonfinite == "matrix" else some_nonfinite)(out)
    return check


def shape_check(*shapes):
    def check(ctx, result):
        outs = result if isinstance(result, tuple) else (result,)
        for out, shape in zip(outs, shapes * len(outs), strict=False):
            assert tuple(out.shape) == shape, f"shape {tuple(out.shape)}, expected {shape}"
    return check


def matrix_cases(r, *, square=False):
    """The bad-input classes for one routine (rectangular or square input)."""
    base, other, rank2 = (A0, A1, A_RANK2) if square else (G0, G1, G_RANK2)
    n = base.shape[-1]
    f = r.fname
    call = r.call
    cases = []

    def add(cls, run, expect, **kw):
        if cls in r.overrides:
            expect, kw["names"] = r.overrides[cls]
        cases.append(Case(f"{r.name}/{cls}", run, expect, **kw))

    add("0-d", lambda c: call(c.arr(np.array(2.0))), "error", names=(f, "shape"))
    add("1-d", lambda c: call(c.arr(np.ones(n))), "error", names=(f, "shape"))
    if square:
        add("non-square", lambda c: call(c.arr(G0)), "error", names=(f, "square"))
    empties = [(0, 0), (2, 0, 0)] if square else [(0, 3), (3, 0), (0, 4, 3)]
    for shape in empties:
        want = r.shapes(shape) if r.shapes else (shape[:-2] if r.reduces else shape,)
        add(f"zero-size{shape}", lambda c, s=shape: call(c.arr(np.zeros(s))), "zeros",
            check=shape_check(*want), dtype=r.out)
    add("int", lambda c: call(c.arr(base, "int64")), "finite", check=oracle_check(r), dtype=r.out)
    add("int32", lambda c: call(c.arr(base, "int32")), "finite", check=oracle_check(r),
        dtype=r.out)
    bools = np.eye(3, dtype=bool) if square else G_BOOL
    add("bool", lambda c: call(c.arr(bools, "bool")), "finite", check=oracle_check(r),
        dtype=r.out)
    add("complex", lambda c: call(c.arr(base, "complex64")), "error", names=("complex",))
    for half in ("float16", "bfloat16"):
        add(half, lambda c, h=half: call(c.arr(base, h)), "finite", check=oracle_check(r),
            needs=(half,), dtype=r.out)
    for bad in ("nan", "inf"):
        S = np.stack([base, other])
        S[1, 0, 1] = S[1, 1, 0] = np.nan if bad == "nan" else np.inf
        if r.nonfinite == "error":
            add(f"{bad}-one", lambda c, S=S: call(c.arr(S)), "error", names=(f, "non-finite"))
            add(f"{bad}-one,check_finite=False",
                lambda c, S=S: call(c.arr(S), check_finite=False), "nan",
                check=stack_check(Routine(**{**r.__dict__, "nonfinite": "matrix"}), bad),
                dtype=r.out)
        else:
            add(f"{bad}-one", lambda c, S=S: call(c.arr(S)), "nan", check=stack_check(r, bad),
                dtype=r.out)
    full_nan = np.full(base.shape, np.nan)
    if r.nonfinite == "error":
        add("nan-all", lambda c: call(c.arr(full_nan)), "error", names=(f, "non-finite"))
    else:
        add("nan-all", lambda c: call(c.arr(full_nan)), "nan", check=nan_all_check(r),
            dtype=r.out)
    add("mixed-xp", lambda c: call(c.arr(base), xp=other_namespace(c.backend)), "error",
        names=("single array library",))
    add("zero", lambda c: call(c.arr(np.zeros(base.shape))), "finite", check=oracle_check(r),
        dtype=r.out)
    check = range_check(r) if r.iterative else oracle_check(r)
    add("rank-deficient", lambda c: call(c.arr(rank2)), r.rank_deficient, check=check,
        dtype=r.out, names=(f, "max_steps"))
    for scale, dt in ((1e300, "float64"), (1e-300, "float64"), (1e30, "float32"),
                      (1e-30, "float32")):
        add(f"scale{scale:.0e}-{dt}", lambda c, s=scale, d=dt: call(c.arr(base * s, d)),
            "finite", check=oracle_check(r), needs=(dt,), dtype=r.out)
    add("transposed", lambda c: call(c.arr(base, view="T")), "finite", check=oracle_check(r),
        dtype=r.out)
    add("readonly", lambda c: call(c.arr(base, view="readonly")), "finite",
        check=oracle_check(r), only=("numpy",), dtype=r.out)
    for keywords, names in r.keywords:
        label = ",".join(f"{k}={v!r}" for k, v in keywords.items())
        add(f"keyword:{label}",
            lambda c, kw=keywords: call(c.arr(base), **resolve(kw, c)), "error",
            names=(f, *names))
    return cases


@dataclass(frozen=True)
class BackendDtype:
    """A keyword value naming a dtype, given as the backend's own dtype object."""

    name: str

    def __repr__(self):
        return self.name


def resolve(keywords, ctx):
    return {k: dtype_of(ctx.backend, v.name) if isinstance(v, BackendDtype) else v
            for k, v in keywords.items()}


BAD_COUNT = lambda what: [({what: 2.5}, (what,)), ({what: 0}, (what,)),  # noqa: E731
                          ({what: True}, (what,))]
BAD_BOUND = lambda what: [({what: math.nan}, (what,)), ({what: -1.0}, (what,)),  # noqa: E731
                          ({what: "x"}, (what,))]
BAD_DTYPE = [({"dtype": BackendDtype("int32")}, ("dtype", "floating")),
             ({"dtype": BackendDtype("complex64")}, ("dtype", "floating"))]

MSIGN_KEYWORDS = (
    [({"method": "qr"}, ("method",)), ({"schedule": "bogus"}, ("schedule", "bogus")),
     ({"schedule": 3}, ("schedule",)), ({"tol": 1e-3, "max_steps": 0}, ("max_steps",)),
     ({"tol": 1e-3, "steps": 3}, ("steps", "tol"))]
    + BAD_COUNT("steps") + BAD_BOUND("tol") + BAD_DTYPE
    + [({"method": "svd", "rank_rtol": v}, ("rank_rtol",)) for v in (math.nan, -1.0, "x")]
)
NS_KEYWORDS = [({"match": "bogus"}, ("match",)),
               ({"tol": 1e-3, "match": "torch.optim.Muon"}, ("match", "tol")),
               *BAD_BOUND("eps"), *BAD_DTYPE]
NORMS5 = ("spectral", "rms_to_rms", "frobenius", "linf", "l1_to_rms")
NORM_KEYWORDS = [({"norm": "nuclear"}, ("norm",)), ({"orientation": "in"}, ("orientation",))]
ROOT_KEYWORDS = (
    BAD_BOUND("eps") + [({"eps_mode": "log"}, ("eps_mode",)), ({"method": "qr"}, ("method",)),
                        ({"rank_rtol": math.nan}, ("rank_rtol",)),
                        ({"rank_rtol": -1.0}, ("rank_rtol",)),
                        ({"method": "eigh", "tol": 1e-6}, ("tol",)),
                        ({"method": "newton", "rank_rtol": 1e-6}, ("rank_rtol",)),
                        ({"method": "newton", "clip_negative": True}, ("clip_negative",))]
    + [({"method": "newton", **kw}, names) for kw, names in
       BAD_BOUND("tol") + BAD_COUNT("max_steps") + BAD_COUNT("check_every")]
    + [({"check_every": 0}, ("check_every",))] + BAD_DTYPE
)

ROUTINES = [
    Routine("msign[svd]", "msign", lambda X, **k: msign(X, method="svd", **k), o_msign,
            keywords=MSIGN_KEYWORDS),
    Routine("msign[newton_schulz]", "msign",
            lambda X, **k: msign(X, schedule="quintic", steps=12, **k), o_msign, iterative=True),
    Routine("msign[tol]", "msign", lambda X, **k: msign(X, tol=0.07, **k), o_msign, tol=0.15,
            iterative=True, rank_deficient="finite|error"),  # documented ConvergenceError
    Routine("polar[right]", "polar", lambda X, **k: polar(X, method="svd", **k), o_polar_right,
            shapes=lambda s: (s, (*s[:-2], s[-1], s[-1])),
            keywords=[({"side": "top"}, ("side",)), ({"method": "qr"}, ("method",))]),
    Routine("polar[left]", "polar", lambda X, **k: polar(X, side="left", **k), o_polar_left,
            shapes=lambda s: (s, (*s[:-2], s[-2], s[-2]))),
    Routine("newton_schulz", "newton_schulz",
            lambda X, **k: newton_schulz(X, "quintic", steps=12, **k), o_msign, iterative=True,
            keywords=NS_KEYWORDS),
    Routine("orthogonality_error", "orthogonality_error", orthogonality_error,
            o_orthogonality_error, out="work", reduces=True),
    *[Routine(f"norm[{name}]", "norm", lambda X, name=name, **k: duality.norm(X, name, **k),
              lambda G, name=name: o_norm(name, G), out="work", reduces=True,
              nonfinite="matrix" if name in ("spectral", "rms_to_rms") else "entries",
              keywords=NORM_KEYWORDS if name == "spectral" else ())
      for name in NORMS5],
    *[Routine(f"dual_norm[{name}]", "dual_norm",
              lambda X, name=name, **k: duality.dual_norm(X, name, **k),
              lambda G, name=name: o_norm(name, G, dual=True), out="work", reduces=True,
              nonfinite="matrix" if name in ("spectral", "rms_to_rms") else "entries",
              keywords=NORM_KEYWORDS if name == "spectral" else ())
      for name in NORMS5],
    *[Routine(f"dualize[{name}]", "dualize",
              lambda X, name=name, **k: duality.dualize(X, norm=name, **k),
              lambda G, name=name: o_dualize(name, G),
              nonfinite="matrix" if name in ("spectral", "rms_to_rms") else "entries",
              keywords=([*NORM_KEYWORDS, ({"steps": 2.5}, ("steps",))]
                        if name == "spectral" else ()))
      for name in NORMS5],
    Routine("spectral_norm", "spectral_norm", duality.spectral_norm,
            lambda G: np.linalg.svd(G, compute_uv=False).max(-1), out="work", reduces=True,
            tol=1e-5, keywords=BAD_BOUND("tol") + BAD_COUNT("max_steps")),
]

SQUARE_ROUTINES = [
    Routine("inverse_root[eigh]", "inverse_root", lambda A, **k: inverse_root(A, 2, **k),
            lambda A: o_power(A, -0.5), nonfinite="error", keywords=ROOT_KEYWORDS),
    Routine("inverse_root[newton]", "inverse_root",
            lambda A, **k: inverse_root(A, 2, method="newton", **k),
            lambda A: o_power(A, -0.5), nonfinite="error", tol=1e-6),
    Routine("matrix_root[eigh]", "matrix_root", lambda A, **k: matrix_root(A, 2, **k),
            lambda A: o_power(A, 0.5), nonfinite="error"),
    Routine("matrix_root[newton]", "matrix_root",
            lambda A, **k: matrix_root(A, 2, method="newton", **k), lambda A: o_power(A, 0.5),
            nonfinite="error", tol=1e-6),
    Routine("psd_power[-0.5]", "psd_power", lambda A, **k: psd_power(A, -0.5, **k),
            lambda A: o_power(A, -0.5), nonfinite="error"),
    Routine("psd_power[2]", "psd_power", lambda A, **k: psd_power(A, 2.0, **k),
            lambda A: o_power(A, 2.0), nonfinite="error",
            overrides={f"scale{s:.0e}-{d}": ("error", ("psd_power", "overflows"))  # A^2 is not
                       for s, d in ((1e300, "float64"), (1e30, "float32"))}),  # representable
]


def square_extra_cases():
    """Roots only: singular, indefinite, regularised, bad powers."""
    cases = []
    for name, fn, power, newton in [
            ("inverse_root", inverse_root, -0.5, True), ("matrix_root", matrix_root, 0.5, True),
            ("psd_power", lambda A, a, **k: psd_power(A, a, **k), None, False)]:
        bads = [0, -2, math.nan, math.inf] if power is not None else [math.nan, math.inf,
                                                                     -math.inf]
        what = "p" if power is not None else "alpha"
        for p in bads:
            cases.append(Case(f"{name}/power={p}", lambda c, fn=fn, p=p: fn(c.arr(A0), p),
                              "error", names=(name, what)))
        for p in ("2", True, None):
            cases.append(Case(f"{name}/power={p!r}", lambda c, fn=fn, p=p: fn(c.arr(A0), p),
                              "error", names=(name, what)))
        if newton:
            cases.append(Case(f"{name}[newton]/power=2.5",
                              lambda c, fn=fn: fn(c.arr(A0), 2.5, method="newton"), "error",
                              names=(name, "integer")))
        alpha = power if power is not None else -0.5
        call = (lambda c, A, fn=fn, **k: fn(c.arr(A), 2, **k)) if power is not None else \
            (lambda c, A, fn=fn, **k: fn(c.arr(A), -0.5, **k))
        cases.append(Case(f"{name}/indefinite", lambda c, call=call: call(c, A_INDEFINITE),
                          "error", names=(name, "indefinite")))
        cases.append(Case(f"{name}/indefinite,clip_negative",
                          lambda c, call=call: call(c, A_INDEFINITE, clip_negative=True),
                          "error" if alpha < 0 else "finite", names=(name, "singular"),
                          check=lambda c, r, a=alpha: close(
                              r, o_power(c.host64(), a, clip=True), tol_of(r))))
        if alpha < 0:  # the clipped spectrum is singular: pseudo-invert it
            cases.append(Case(f"{name}/indefinite,clip_negative,rank_rtol",
                              lambda c, call=call: call(c, A_INDEFINITE, clip_negative=True,
                                                        rank_rtol=1e-6), "finite",
                              check=lambda c, r, a=alpha: close(
                                  r, o_power(c.host64(), a, clip=True, rank_rtol=1e-6),
                                  tol_of(r))))
        if alpha < 0:
            for A, label in ((A_RANK2, "rank-deficient"), (np.zeros((3, 3)), "zero")):
                cases.append(Case(f"{name}/{label},rank_rtol",
                                  lambda c, A=A, call=call: call(c, A, rank_rtol=1e-6), "finite",
                                  check=lambda c, r, a=alpha: close(
                                      r, o_power(c.host64(), a, rank_rtol=1e-6), tol_of(r))))
                cases.append(Case(f"{name}/{label},eps",
                                  lambda c, A=A, call=call: call(c, A, eps=0.5), "finite",
                                  check=lambda c, r, a=alpha: close(
                                      r, o_power(c.host64() + 0.5 * np.eye(3), a), tol_of(r))))
        if newton:
            cases.append(Case(f"{name}[newton]/indefinite",
                              lambda c, fn=fn: fn(c.arr(A_INDEFINITE), 2, method="newton"),
                              "error", names=(name,)))
    return cases


def square_routine_cases(r):
    cases = matrix_cases(r, square=True)
    power = {"inverse_root": -0.5, "matrix_root": 0.5}.get(r.fname)
    negative = (power or (-0.5 if "-0.5" in r.name else 2.0)) < 0
    for case in cases:  # the documented answers to singular input
        cls = case.id.partition("/")[2]
        if cls in ("zero", "rank-deficient") and (negative or "newton" in r.name):
            case.expect = "error" if negative else "finite|error"
            case.names = (r.fname, "singular", "max_steps", "diverged")
    return cases


# --- duality: conv and the shape helper ----------------------------------------------------------


def conv_cases():
    cases = []

    def o_conv(G, dual):
        taps = np.moveaxis(G.reshape(*G.shape[:2], -1), -1, 0)  # (T, out, in)
        T, m, n = taps.shape
        s = np.linalg.svd(taps, compute_uv=False)
        per = (math.sqrt(m / n) * s.sum(-1)) if dual else (math.sqrt(n / m) * s.max(-1))
        return per.sum() / T if dual else T * per.max()

    def o_dualize_conv(G):
        taps = np.moveaxis(G.reshape(*G.shape[:2], -1), -1, 0)
        T, m, n = taps.shape
        Q = math.sqrt(m / n) * o_msign(taps) / T
        return np.moveaxis(Q, 0, -1).reshape(G.shape)

    for fname, fn, oracle in [
            ("norm", lambda X, **k: duality.norm(X, "conv", **k), lambda G: o_conv(G, False)),
            ("dual_norm", lambda X, **k: duality.dual_norm(X, "conv", **k),
             lambda G: o_conv(G, True)),
            ("dualize", lambda X, **k: duality.dualize(X, norm="conv", **k), o_dualize_conv)]:
        out = "input" if fname == "dualize" else "work"
        cid = f"{fname}[conv]"
        cases += [
            Case(f"{cid}/2-d", lambda c, fn=fn: fn(c.arr(G0)), "error", names=(fname, "axes")),
            Case(f"{cid}/finite", lambda c, fn=fn: fn(c.arr(K0)), "finite", dtype=out,
                 check=lambda c, r, o=oracle: close(r, o(c.host64()), tol_of(r))),
            Case(f"{cid}/int", lambda c, fn=fn: fn(c.arr(K0, "int64")), "finite", dtype=out,
                 check=lambda c, r, o=oracle: close(r, o(c.host64()), tol_of(r))),
            Case(f"{cid}/zero-size", lambda c, fn=fn: fn(c.arr(np.zeros((2, 0, 2, 2)))),
                 "zeros", dtype=out),
            Case(f"{cid}/zero-size-kernel", lambda c, fn=fn: fn(c.arr(np.zeros((2, 3, 0, 2)))),
                 "zeros", dtype=out),
            Case(f"{cid}/nan", lambda c, fn=fn: fn(c.arr(np.where(K0 == 1, np.nan, K0))),
                 "nan", check=lambda c, r: some_nonfinite(r), dtype=out),
            Case(f"{cid}/complex", lambda c, fn=fn: fn(c.arr(K0, "complex64")), "error",
                 names=("complex",)),
        ]
        for k in (-1, 2.5, "x", None):
            cases.append(Case(f"{cid}/kernel_ndim={k!r}",
                              lambda c, fn=fn, k=k: fn(c.arr(K0), kernel_ndim=k), "error",
                              names=(fname, "kernel_ndim")))
    return cases


def shape_helper_cases():
    f = duality.rms_to_rms_scale
    cases = [Case(f"rms_to_rms_scale/{shape}", lambda c, s=shape: f(s), "error",
                  names=("rms_to_rms_scale", "shape"), only=("numpy",))
             for shape in [(3,), (), (3, 0), (3, -1), (2.5, 3)]]
    cases.append(Case("rms_to_rms_scale/(0, 3)", lambda c: f((0, 3)), "finite", dtype=None,
                      only=("numpy",), check=lambda c, r: close(r, 0.0, 0.0)))
    cases.append(Case("rms_to_rms_scale/orientation", lambda c: f((3, 2), orientation="x"),
                      "error", names=("orientation",), only=("numpy",)))
    return cases


# --- polynomials --------------------------------------------------------------------------------


def polynomial_cases():
    only = ("numpy",)
    P = polynomials
    cases = [
        Case("scalar_map/0-d", lambda c: P.scalar_map((1.5, -0.5), c.arr(np.array(0.5))),
             "finite", check=lambda c, r: close(r, 0.6875, 1e-15), only=only),
        Case("scalar_map/empty", lambda c: P.scalar_map((1.5, -0.5), c.arr(np.zeros(0))),
             "zeros", check=shape_check((0,)), only=only),
        Case("scalar_map/int", lambda c: P.scalar_map((1.5, -0.5), c.arr([1, 2], "int64")),
             "finite", dtype="float64", check=lambda c, r: close(r, [1.0, -1.0], 1e-15),
             only=only),
        Case("scalar_map/nan", lambda c: P.scalar_map((1.5, -0.5), c.arr([np.nan, 1.0])),
             "nan", dtype="float64", only=only,
             check=lambda c, r: (all_nan(r[:1]), close(r[1:], [1.0], 1e-15))),
        Case("scalar_map/complex", lambda c: P.scalar_map((1.5, -0.5), c.arr([1j], "complex128")),
             "error", names=("scalar_map", "complex"), only=only),
        Case("scalar_map/readonly", lambda c: P.scalar_map((1.5, -0.5),
                                                           c.arr([0.5], view="readonly")),
             "finite", check=lambda c, r: close(r, [0.6875], 1e-15), only=only),
        Case("scalar_map/nan-coefficient", lambda c: P.scalar_map((math.nan,), c.arr([0.5])),
             "nan", check=lambda c, r: all_nan(r), only=only),
    ]
    for label, call, names in [
            ("band/lower=nan", lambda: P.band("quintic", math.nan), ("lower",)),
            ("band/lower=0", lambda: P.band("quintic", 0.0), ("lower",)),
            ("band/lower=-1", lambda: P.band("quintic", -1.0), ("lower",)),
            ("band/upper=inf", lambda: P.band("quintic", 0.5, upper=math.inf), ("upper",)),
            ("band/steps=2.5", lambda: P.band("quintic", 0.5, steps=2.5), ("steps",)),
            ("band/steps=-1", lambda: P.band("quintic", 0.5, steps=-1), ("steps",)),
            ("band/steps=True", lambda: P.band("quintic", 0.5, steps=True), ("steps",)),
            ("band/schedule=bogus", lambda: P.band("bogus", 0.5), ("bogus",)),
            ("bands/lower='x'", lambda: P.bands("quintic", "x"), ("lower",)),
            ("check/rtol=nan", lambda: P.check("quintic", 0.5, rtol=math.nan), ("rtol",)),
            ("check/rtol=-1", lambda: P.check("quintic", 0.5, rtol=-1.0), ("rtol",)),
            ("design/lower=nan", lambda: P.design(math.nan, 3), ("lower",)),
            ("design/steps=2.5", lambda: P.design(0.1, 2.5), ("steps",)),
            ("design/steps=0", lambda: P.design(0.1, 0), ("steps",)),
            ("design/steps='x'", lambda: P.design(0.1, "x"), ("steps",)),
            ("design/degree=4", lambda: P.design(0.1, 2, degree=4), ("degree",)),
            ("design/safety=nan", lambda: P.design(0.1, 2, safety=math.nan), ("safety",)),
            ("design/cushion=nan", lambda: P.design(0.1, 2, cushion=math.nan), ("cushion",)),
            ("design/normalizer=nan", lambda: P.design(0.1, 2, normalizer=math.nan),
             ("normalizer",)),
            ("preset/bogus", lambda: P.preset("bogus"), ("bogus",)),
            ("preset/None", lambda: P.preset(None), ("None", "name")),
            ("Schedule/nan-coefficient", lambda: P.Schedule("s", ((math.nan, 1.0),)),
             ("coefficient",)),
            ("Schedule/inf-coefficient", lambda: P.Schedule("s", ((1.5, math.inf),)),
             ("coefficient",)),
            ("Schedule/str-coefficient", lambda: P.Schedule("s", (("a", 1.0),)),
             ("coefficient",)),
            ("Schedule/default_steps=-1", lambda: P.Schedule("s", ((1.5, -0.5),),
                                                             default_steps=-1),
             ("default_steps",)),
            ("Schedule/default_steps=2.5", lambda: P.Schedule("s", ((1.5, -0.5),),
                                                              default_steps=2.5),
             ("default_steps",)),
            ("Schedule/tail=loop", lambda: P.Schedule("s", ((1.5, -0.5),), tail="loop"),
             ("tail",)),
            ("Schedule/normalizer=0", lambda: P.Schedule("s", ((1.5, -0.5),), normalizer=0.0),
             ("normalizer",)),
            ("Schedule/polynomials(2.5)", lambda: P.preset("quintic").polynomials(2.5),
             ("steps",))]:
        cases.append(Case(label, lambda c, call=call: call(), "error", names=names, only=only))
    return cases


# --- kron ---------------------------------------------------------------------------------------

G3 = np.array([[2.0, -1, 0], [1, 3, 1], [0, 1, -2]])  # square, full rank: precondition = U V^T


def _state(c, G, **kw):
    X = c.arr(G)
    return kron.update_factors(X, kron.init_factors(X, **kw), beta=0.0)


def _pre(c, G=G3):
    return kron.preconditioners(_state(c, G))


def factors_check():
    """Factors ``G G^T`` and ``G^T G`` (``g g^T`` for a vector, ``g^2`` for a scalar)."""
    def check(c, state):
        G = c.host64()
        F = [host(f).astype(np.float64) for f in state.factors]
        tol = tol_of(state.factors[0])
        if G.ndim == 2:
            close(F[0][0, 0], G @ G.T, tol, "L")
            close(F[1][0, 0], G.T @ G, tol, "R")
        else:
            v = G.reshape(-1)
            close(F[0][0], np.outer(v, v), tol, "g g^T")
    return check


def msign_check(index=0, scale=1.0):
    def check(c, out):
        close(out, scale * o_msign(c.host64(index)), tol_of(out, 1e-6))
    return check


def bases_check(c, bases):
    for Q in bases.bases:
        q = host(Q).astype(np.float64)[0, 0]
        close(q.T @ q, np.eye(q.shape[0]), tol_of(Q, 1e-5), "Q^T Q")


def kron_cases():
    K = kron
    cases = []
    add = cases.append
    # init_factors / update_factors
    for label, G, expect in [("0-d", np.array(2.0), "finite"), ("1-d", np.arange(1.0, 4), "finite"),
                             ("2-d", G0, "finite")]:
        add(Case(f"init_factors/{label}", lambda c, G=G: K.init_factors(c.arr(G)), "zeros"))
        add(Case(f"update_factors/{label}", lambda c, G=G: K.update_factors(
            c.arr(G), K.init_factors(c.arr(G))), expect, check=factors_check()))
    for shape in [(0, 3), (3, 0), (0,)]:
        add(Case(f"update_factors/zero-size{shape}", lambda c, s=shape: K.update_factors(
            c.arr(np.zeros(s)), K.init_factors(c.arr(np.zeros(s)))), "zeros"))
        add(Case(f"precondition/zero-size{shape}",
                 lambda c, s=shape: K.precondition(c.arr(np.zeros(s)), K.preconditioners(
                     _state(c, np.zeros(s)))), "zeros", check=shape_check(shape)))
    add(Case("update_factors/int", lambda c: K.update_factors(
        c.arr(G0, "int64"), K.init_factors(c.arr(G0, "int64"))), "finite",
        check=factors_check()))
    add(Case("update_factors/int-into-float", lambda c: K.update_factors(
        c.arr(G0, "int64"), K.init_factors(c.arr(G0))), "finite", check=factors_check(),
        dtype=None))
    add(Case("init_factors/complex", lambda c: K.init_factors(c.arr(G0, "complex64")), "error",
             names=("complex",)))
    add(Case("update_factors/complex", lambda c: K.update_factors(
        c.arr(G0, "complex64"), K.init_factors(c.arr(G0))), "error", names=("complex",)))
    for half in ("float16", "bfloat16"):
        add(Case(f"update_factors/{half}", lambda c, h=half: K.update_factors(
            c.arr(G0, h), K.init_factors(c.arr(G0, h))), "finite", needs=(half,),
            check=factors_check()))
        add(Case(f"precondition/{half}", lambda c, h=half: K.precondition(
            c.arr(G3, h), K.preconditioners(_state(c, G3))),
            "finite", needs=(half,), check=msign_check()))
        add(Case(f"eigenbases/{half}", lambda c, h=half: K.eigenbases(K.update_factors(
            c.arr(G3, h), K.init_factors(c.arr(G3, h)))), "finite", needs=(half,),
            check=bases_check))
    for bad in ("nan", "inf"):
        B = G0.copy()
        B[1, 1] = np.nan if bad == "nan" else np.inf
        add(Case(f"update_factors/{bad}", lambda c, B=B: K.update_factors(
            c.arr(B), K.init_factors(c.arr(G0))), "nan",
            check=lambda c, s: some_nonfinite(s.factors[0])))
        add(Case(f"preconditioners/{bad}-factor", lambda c, B=B: K.preconditioners(
            K.update_factors(c.arr(B), K.init_factors(c.arr(G0)))), "error",
            names=("non-finite",)))
        add(Case(f"precondition/{bad}", lambda c, B=B: K.precondition(c.arr(B[:3]), _pre(c)),
                 "nan", check=lambda c, r: some_nonfinite(r)))
        add(Case(f"eigenbases/{bad}-factor", lambda c, B=B: K.eigenbases(K.update_factors(
            c.arr(B), K.init_factors(c.arr(G0)))), "nan",
            check=lambda c, b: all_nan(b.bases[0])))
        add(Case(f"refresh_eigenbases/{bad}-factor", lambda c, B=B: K.refresh_eigenbases(
            K.update_factors(c.arr(B), K.init_factors(c.arr(G0))),
            K.eigenbases(_state(c, G0)))[0], "nan", dtype=None,
            check=lambda c, b: some_nonfinite(b.bases[0])))
    # mixed libraries and shapes
    add(Case("update_factors/mixed", lambda c: K.update_factors(
        c.arr(G0), K.init_factors(other_array(c.backend, G0))), "error",
        names=("single array library",)))
    add(Case("update_factors/mixed-xp", lambda c: K.update_factors(
        c.arr(G0), K.init_factors(c.arr(G0)), xp=other_namespace(c.backend)), "error",
        names=("single array library",)))
    add(Case("precondition/mixed", lambda c: K.precondition(
        other_array(c.backend, G3), _pre(c)), "error", names=("single array library",)))
    add(Case("project/mixed", lambda c: K.project(
        other_array(c.backend, G3), K.eigenbases(_state(c, G3))), "error",
        names=("single array library",)))
    add(Case("unproject/mixed", lambda c: K.unproject(
        other_array(c.backend, G3[None, None]), K.eigenbases(_state(c, G3))), "error",
        names=("single array library",)))
    add(Case("refresh_eigenbases/mixed", lambda c: K.refresh_eigenbases(
        K.update_factors(c.arr(G3), K.init_factors(c.arr(G3))),
        K.eigenbases(K.update_factors(*(lambda X: (X, K.init_factors(X)))(
            other_array(c.backend, G3))))), "error", names=("single array library",)))
    add(Case("update_factors/wrong-shape", lambda c: K.update_factors(
        c.arr(G0.T), K.init_factors(c.arr(G0))), "error", names=("update_factors", "shape")))
    add(Case("precondition/wrong-shape", lambda c: K.precondition(c.arr(G0), _pre(c)), "error",
             names=("precondition", "shape")))
    add(Case("project/wrong-shape", lambda c: K.project(
        c.arr(G0), K.eigenbases(_state(c, G3))), "error", names=("project", "shape")))
    add(Case("unproject/wrong-shape", lambda c: K.unproject(
        c.arr(np.ones((1, 1, 3, 4))), K.eigenbases(_state(c, G3))), "error",
        names=("unproject", "shape")))
    add(Case("to_blocks/wrong-shape", lambda c: K.to_blocks(
        c.arr(G0), K.kron_layout((3, 4))), "error", names=("to_blocks", "shape")))
    add(Case("from_blocks/wrong-shape", lambda c: K.from_blocks(
        c.arr(np.ones((1, 1, 4, 4))), K.kron_layout((3, 4))), "error",
        names=("from_blocks", "shape")))
    for beta in (math.nan, -0.1, 1.0, "x"):
        add(Case(f"update_factors/beta={beta!r}", lambda c, b=beta: K.update_factors(
            c.arr(G0), K.init_factors(c.arr(G0)), beta=b), "error",
            names=("update_factors", "beta")))
    # preconditioners: zero, singular, exponents, options
    add(Case("preconditioners/zero-factors", lambda c: K.preconditioners(
        K.init_factors(c.arr(G3))), "zeros"))
    add(Case("precondition/zero-gradient", lambda c: K.precondition(
        c.arr(np.zeros((3, 3))), K.preconditioners(_state(c, np.zeros((3, 3))))), "zeros"))
    add(Case("preconditioners/rank-deficient", lambda c: K.preconditioners(
        _state(c, G_RANK2)), "error", names=("singular",)))
    add(Case("preconditioners/rank-deficient,eps", lambda c: K.preconditioners(
        _state(c, G_RANK2), eps=1e-3, eps_mode="relative"), "finite"))
    for exponents, names in [((0.25, -0.25), ("exponents",)), ((-0.25,), ("exponents",)),
                             ((math.nan, -0.25), ("exponents", "p=nan")),
                             (("x", -0.25), ("exponents", "'x'"))]:
        add(Case(f"preconditioners/exponents={exponents}",
                 lambda c, e=exponents: K.preconditioners(_state(c, G3), exponents=e), "error",
                 names=names))
    for options, names in [({"method": "qr"}, ("method",)), ({"eps": -1.0}, ("eps",)),
                           ({"eps_mode": "log"}, ("eps_mode",)), ({"bogus": 1}, ("bogus",))]:
        add(Case(f"preconditioners/{options}", lambda c, o=options: K.preconditioners(
            _state(c, G3), **o), "error", names=names))
    # precondition / project / unproject: dtypes, views, scales
    add(Case("precondition/finite", lambda c: K.precondition(c.arr(G3), _pre(c)), "finite",
             check=msign_check()))
    add(Case("precondition/int", lambda c: K.precondition(c.arr(G3, "int64"), _pre(c)),
             "finite", check=msign_check()))
    add(Case("precondition/complex", lambda c: K.precondition(c.arr(G3, "complex64"), _pre(c)),
             "error", names=("complex",)))
    add(Case("precondition/transposed", lambda c: K.precondition(
        c.arr(G3, view="T"), K.preconditioners(_state(c, G3))), "finite", check=msign_check()))
    add(Case("precondition/readonly", lambda c: K.precondition(
        c.arr(G3, view="readonly"), K.preconditioners(_state(c, G3))), "finite",
        check=msign_check(), only=("numpy",)))
    for scale, dt in ((1e300, "float64"), (1e-300, "float64"), (1e30, "float32"),
                      (1e-30, "float32")):
        add(Case(f"precondition/scale{scale:.0e}-{dt}", lambda c, s=scale, d=dt: K.precondition(
            c.arr(G3 * s, d), K.preconditioners(_state(c, G3))), "finite",
            check=msign_check(scale=scale), needs=(dt,)))
    for scale, dt in ((1e150, "float64"), (1e-150, "float64"), (1e15, "float32"),
                      (1e-15, "float32")):
        add(Case(f"update_factors/scale{scale:.0e}-{dt}",
                 lambda c, s=scale, d=dt: K.update_factors(c.arr(G0 * s, d), K.init_factors(
                     c.arr(G0, d))), "finite", check=factors_check(), needs=(dt,)))
        add(Case(f"shampoo-direction/scale{scale:.0e}-{dt}",
                 lambda c, s=scale, d=dt: K.precondition(c.arr(G3 * s, d), K.preconditioners(
                     K.update_factors(c.arr(G3 * s, d), K.init_factors(c.arr(G3, d)),
                                      beta=0.0))), "finite", check=msign_check(), needs=(dt,)))
    add(Case("project/int", lambda c: K.project(c.arr(G3, "int64"), K.eigenbases(
        _state(c, G3))), "finite", dtype=None,
        check=lambda c, P: close(K.unproject(P, K.eigenbases(_state(c, G3))), c.host64(),
                                 tol_of(P))))
    add(Case("project/complex", lambda c: K.project(c.arr(G3, "complex64"), K.eigenbases(
        _state(c, G3))), "error", names=("complex",)))
    add(Case("unproject/int", lambda c: K.unproject(c.arr(G3[None, None], "int64"),
                                                     K.eigenbases(_state(c, G3))), "finite",
             dtype=None))
    add(Case("unproject/complex", lambda c: K.unproject(c.arr(G3[None, None], "complex64"),
                                                         K.eigenbases(_state(c, G3))), "error",
             names=("complex",)))
    add(Case("project/transposed", lambda c: K.project(c.arr(G3, view="T"), K.eigenbases(
        _state(c, G3))), "finite", check=lambda c, P: close(
            K.unproject(P, K.eigenbases(_state(c, G3))), c.host64(), tol_of(P))))
    add(Case("refresh_eigenbases/finite", lambda c: K.refresh_eigenbases(
        _state(c, G3), K.eigenbases(_state(c, G3)))[0], "finite", dtype=None,
        check=bases_check))
    add(Case("eigenbases/zero-factors", lambda c: K.eigenbases(K.init_factors(c.arr(G3))),
             "finite", check=bases_check))
    add(Case("to_blocks/0-d", lambda c: K.to_blocks(c.arr(np.array(2.0)), K.kron_layout(())),
             "finite", check=lambda c, b: close(b, [[2.0]], 0.0)))
    add(Case("to_blocks/int", lambda c: K.to_blocks(c.arr(G0, "int64"), K.kron_layout((4, 3))),
             "finite", dtype="int64", check=lambda c, b: close(b, G0[None, None], 0.0)))
    add(Case("to_blocks/transposed", lambda c: K.to_blocks(
        c.arr(G0, view="T"), K.kron_layout((4, 3), max_dim=2)), "finite",
        check=lambda c, b: close(K.from_blocks(b, K.kron_layout((4, 3), max_dim=2)), G0, 0.0)))
    # kron_layout: pure Python
    for label, call, names in [
            ("max_dim=0", lambda: K.kron_layout((4, 6), max_dim=0), ("max_dim",)),
            ("max_dim=2.5", lambda: K.kron_layout((4, 6), max_dim=2.5), ("max_dim",)),
            ("max_dim=nan", lambda: K.kron_layout((4, 6), max_dim=math.nan), ("max_dim",)),
            ("max_dim='x'", lambda: K.kron_layout((4, 6), max_dim="x"), ("max_dim",)),
            ("max_precond_dim=-1", lambda: K.kron_layout((4, 6), max_precond_dim=-1),
             ("max_precond_dim",)),
            ("shape=(4,-6)", lambda: K.kron_layout((4, -6)), ("shape",)),
            ("shape=(2.5,3)", lambda: K.kron_layout((2.5, 3)), ("shape",)),
            ("shape=None", lambda: K.kron_layout(None), ("shape",))]:
        add(Case(f"kron_layout/{label}", lambda c, call=call: call(), "error", names=names,
                 only=("numpy",)))
    return cases


# --- optim: the functional steppers --------------------------------------------------------------

STEPPERS = {
    "muon": lambda **k: optim.muon(0.1, **k), "adamw": lambda **k: optim.adamw(0.1, **k),
    "lion": lambda **k: optim.lion(0.1, **k), "shampoo": lambda **k: optim.shampoo(0.1, **k),
    "soap": lambda **k: optim.soap(0.1, **k), "adafactor": lambda **k: optim.adafactor(0.1, **k),
    "tiger": lambda **k: optim.tiger(0.1, **k), "adamuon": lambda **k: optim.adamuon(0.1, **k),
    "normuon": lambda **k: optim.normuon(0.1, **k),
}
MATRIX_ONLY = ("muon", "adamuon", "normuon")
W0, GRAD0 = np.ones((4, 3)), G0 / 4  # a parameter and a gradient for the steppers
STEPPER_HYPER = {  # one bad value per hyperparameter kind, and the name the error should carry
    "muon": [("momentum", 1.5), ("momentum", math.nan), ("weight_decay", -1.0)],
    "adamw": [("b1", 1.5), ("b2", math.nan), ("eps", -1.0), ("weight_decay", math.nan)],
    "lion": [("b1", 1.5), ("b2", -0.1)],
    "shampoo": [("b2", 1.5), ("beta", math.nan), ("every", 0)],
    "soap": [("b1", 1.5), ("b2", math.nan)],
    "adafactor": [("decay_rate", math.nan)],
    "tiger": [("beta", 1.5)],
    "adamuon": [("momentum", 1.5)],
    "normuon": [("b2", 1.5), ("momentum", math.nan)],
}


def two_steps(stepper, c, P, G):
    """Two updates of ``stepper`` from ``init(P)``; the last update and state."""
    state = stepper.init(P)
    update = None
    for _ in range(2):
        update, state = stepper.update(G, state, P)
    return update, state


def update_check(shape):
    def check(c, result):
        u = result[0]
        assert tuple(u.shape) == shape, f"update shape {tuple(u.shape)}, expected {shape}"
    return check


def skipped_step(stepper, c, W, B):
    """One good step of ``multi(stepper)``, then one with the bad gradient ``B``."""
    step = optim.multi(stepper)
    params = {"w": c.arr(W)}
    _, state = step.update({"w": c.arr(G0 / 4)}, step.init(params), params)
    updates, new = step.update({"w": c.arr(B)}, state, params)
    return updates, (new, state)


def unchanged_state_check(c, result):
    """multi's "skip": zero updates, the old state."""
    updates, (state, old) = result
    for u in arrays(updates):
        assert np.all(host(u) == 0), "skipped step gave a non-zero update"
    for new, before in zip(arrays(state), arrays(old), strict=True):
        assert np.array_equal(host(new), host(before), equal_nan=True), "state changed"


def stepper_cases():
    cases = []
    add = cases.append
    for name, factory in STEPPERS.items():
        matrix_only = name in MATRIX_ONLY
        for shape in [(4, 3), (3,), (), (2, 4, 3), (2, 2, 4, 3)]:
            bad = matrix_only and len(shape) < 2
            add(Case(f"optim.{name}/param{shape}",
                     lambda c, f=factory, s=shape: two_steps(
                         f(), c, c.arr(np.ones(s)), c.arr(np.full(s, 0.5) + np.arange(
                             math.prod(s)).reshape(s) % 3)),
                     "error" if bad else "finite", names=("shape",),
                     check=None if bad else update_check(shape)))
        for shape in [(0, 3), (3, 0), (0,), (2, 0, 3)]:
            bad = matrix_only and len(shape) < 2
            add(Case(f"optim.{name}/zero-size{shape}",
                     lambda c, f=factory, s=shape: two_steps(f(), c, c.arr(np.zeros(s)),
                                                             c.arr(np.zeros(s)))[:1],
                     "error" if bad else "zeros", names=("shape",),
                     check=None if bad else update_check(shape)))
        for bad in ("nan", "inf"):
            B = GRAD0.copy()
            B[1, 2] = np.nan if bad == "nan" else np.inf
            add(Case(f"optim.{name}/{bad}-gradient", lambda c, f=factory, B=B: two_steps(
                f(), c, c.arr(W0), c.arr(B)), "nan|error", names=("non-finite",),
                check=lambda c, r: some_nonfinite(r[0])))
            add(Case(f"optim.multi({name})/{bad}-gradient", lambda c, f=factory, B=B:
                     skipped_step(f(), c, W0, B), "finite", dtype=None,
                     check=unchanged_state_check))
        add(Case(f"optim.{name}/None-gradient", lambda c, f=factory: (
            lambda s, p: s.update(None, s.init(p), p))(f(), c.arr(W0)), "error",
            names=("grad", "None")))
        add(Case(f"optim.multi({name})/None-gradient", lambda c, f=factory: (
            lambda s, p: s.update({"w": None, "v": c.arr(GRAD0)}, s.init(p), p))(
                optim.multi(f()), {"w": c.arr(W0), "v": c.arr(W0)}), "finite|error",
            names=("grad", "None", "'w'"), dtype=None))
        for dt in ("int64", "complex64"):
            add(Case(f"optim.{name}/{dt}-param", lambda c, f=factory, d=dt: f().init(
                c.arr(W0, d)), "error", names=("dtype", "floating")))
        for half in ("float16", "bfloat16"):
            add(Case(f"optim.{name}/{half}", lambda c, f=factory, h=half: two_steps(
                f(), c, c.arr(W0, h), c.arr(GRAD0, h)), "finite", needs=(half,),
                check=update_check((4, 3))))
        add(Case(f"optim.{name}/wrong-gradient-shape", lambda c, f=factory: two_steps(
            f(), c, c.arr(W0), c.arr(GRAD0.T)), "error", names=("shape",)))
        add(Case(f"optim.{name}/mixed", lambda c, f=factory: (
            lambda s, p: s.update(other_array(c.backend, GRAD0), s.init(p), p))(f(), c.arr(W0)),
            "error", names=("single array library",)))
        add(Case(f"optim.{name}/readonly", lambda c, f=factory: two_steps(
            f(), c, c.arr(W0, view="readonly"), c.arr(GRAD0, view="readonly")), "finite",
            only=("numpy",), check=update_check((4, 3))))
        add(Case(f"optim.{name}/transposed", lambda c, f=factory: two_steps(
            f(), c, c.arr(W0), c.arr(GRAD0, view="T")), "finite", check=update_check((4, 3))))
        for lr in (math.nan, math.inf, "x"):  # a negative rate ascends (optax; the adapters)
            add(Case(f"optim.{name}/learning_rate={lr!r}", lambda c, n=name, lr=lr: getattr(
                optim, n)(lr), "error", names=("learning_rate", "learning rate", "'x'"),
                only=("numpy",)))
        for key, value in STEPPER_HYPER[name]:
            add(Case(f"optim.{name}/{key}={value!r}", lambda c, f=factory, k=key, v=value: f(
                **{k: v}), "error", names=(key,), only=("numpy",)))
    return cases


# --- optim.torch: the torch.optim classes --------------------------------------------------------


def torch_classes():
    from matsign.optim import torch as ot

    return {"Muon": (ot.Muon, {"ns_dtype": None}), "AdamW": (ot.AdamW, {}),
            "Lion": (ot.Lion, {}), "Shampoo": (ot.Shampoo, {}), "SOAP": (ot.SOAP, {}),
            "Adafactor": (ot.Adafactor, {}), "Tiger": (ot.Tiger, {}),
            "AdaMuon": (ot.AdaMuon, {"ns_dtype": None}),
            "NorMuon": (ot.NorMuon, {"ns_dtype": None})}


TORCH_MATRIX_ONLY = ("Muon", "AdaMuon", "NorMuon")


def _torch_step(name, shape, grad=None, *, dtype="float32", steps=1, **options):
    """A parameter of ``shape`` stepped ``steps`` times with ``grad`` (default: 0.5 + i % 3)."""
    import torch

    cls, defaults = torch_classes()[name]
    dt = getattr(torch, dtype)
    w = torch.nn.Parameter(torch.ones(shape, dtype=dt))
    opt = cls([w], **{**defaults, **options})
    g = torch.arange(math.prod(shape), dtype=torch.float64).reshape(shape) % 3 + 0.5
    for _ in range(steps):
        w.grad = g.to(dt) if grad is None else (None if grad == "none" else grad.to(dt))
        opt.step()
    return w, opt


def torch_unchanged(name, bad):
    import torch

    def run(c):
        w, opt = _torch_step(name, (4, 3))
        before = w.detach().clone()
        state = {k: v.clone() for k, v in opt.state[w].items() if isinstance(v, torch.Tensor)}
        g = torch.full((4, 3), 0.5)
        if bad == "none":
            w.grad = None
        else:
            g[1, 2] = math.nan if bad == "nan" else math.inf
            w.grad = g
        opt.step()
        assert torch.equal(w.detach(), before), "the parameter moved"
        for k, v in state.items():
            assert torch.equal(opt.state[w][k], v), f"state {k!r} changed"
        return w.detach()
    return run


def torch_state_dict_refused(name):
    import torch

    def run(c):
        small_opt = _torch_step(name, (4, 3))[1]
        w, opt = _torch_step(name, (5, 3))
        before = {k: v.clone() for k, v in opt.state[w].items() if isinstance(v, torch.Tensor)}
        try:
            opt.load_state_dict(small_opt.state_dict())
        finally:
            for k, v in before.items():
                assert torch.equal(opt.state[w][k], v), f"state {k!r} changed"
        return w.detach()
    return run


def torch_resume(name):
    """A state dict round trip: the next step equals the uninterrupted run's."""
    import torch

    def run(c):
        a, _ = _torch_step(name, (4, 3), steps=3)
        b, opt_b = _torch_step(name, (4, 3), steps=2)
        cls, defaults = torch_classes()[name]
        c_param = torch.nn.Parameter(b.detach().clone())
        opt_c = cls([c_param], **defaults)
        opt_c.load_state_dict(opt_b.state_dict())
        c_param.grad = torch.arange(12, dtype=torch.float32).reshape(4, 3) % 3 + 0.5
        opt_c.step()
        assert torch.allclose(c_param.detach(), a.detach(), rtol=1e-6, atol=1e-7), \
            "resumed step differs from the uninterrupted one"
        return c_param.detach()
    return run


def torch_class_cases():
    cases = []
    add = cases.append
    only = ("torch",)
    for name in ("Muon", "AdamW", "Lion", "Shampoo", "SOAP", "Adafactor", "Tiger", "AdaMuon",
                 "NorMuon"):
        matrix_only = name in TORCH_MATRIX_ONLY
        for shape in [(4, 3), (3,), (2, 4, 3), (2, 2, 2, 3)]:
            bad = matrix_only and len(shape) < 2
            add(Case(f"torch.{name}/param{shape}", lambda c, n=name, s=shape: _torch_step(
                n, s, steps=2)[0].detach(), "error" if bad else "finite", only=only,
                names=(name, "size", "shape"), dtype=None))
        for shape in [(0, 3), (3, 0), (0,)]:
            bad = matrix_only and len(shape) < 2
            add(Case(f"torch.{name}/zero-size{shape}", lambda c, n=name, s=shape: _torch_step(
                n, s, steps=2)[0].detach(), "error" if bad else "zeros", only=only,
                names=(name, "size", "shape"), dtype=None))
        for bad in ("nan", "inf", "none"):
            add(Case(f"torch.{name}/{bad}-gradient", torch_unchanged(name, bad), "finite",
                     only=only, dtype=None))
        add(Case(f"torch.{name}/state_dict-wrong-shapes", torch_state_dict_refused(name),
                 "error", only=only, names=("another model",)))
        add(Case(f"torch.{name}/state_dict-resume", torch_resume(name), "finite", only=only,
                 dtype=None))
        add(Case(f"torch.{name}/bfloat16", lambda c, n=name: _torch_step(
            n, (4, 3), dtype="bfloat16", steps=2)[0].detach(), "finite", only=only,
            dtype="bfloat16"))
        add(Case(f"torch.{name}/empty-params", lambda c, n=name: torch_classes()[n][0]([]),
                 "error", only=only, names=("empty",)))
        for key, value in [("lr", math.nan), ("lr", -1.0), ("weight_decay", math.nan)]:
            add(Case(f"torch.{name}/{key}={value!r}", lambda c, n=name, k=key, v=value:
                     _torch_step(n, (4, 3), **{k: v}), "error", only=only,
                     names=(key, "learning rate", "weight decay")))
    return cases


# --- the known defects (issue 14): strict xfails, each with its minimal repro ---------------------

KNOWN_DEFECTS: dict = {}  # case id -> {backend family or "*": the defect and its repro}


# --- the matrix ---------------------------------------------------------------------------------


def all_cases():
    cases = [c for r in ROUTINES for c in matrix_cases(r)]
    cases += [c for r in SQUARE_ROUTINES for c in square_routine_cases(r)]
    cases += square_extra_cases() + conv_cases() + shape_helper_cases() + polynomial_cases()
    cases += kron_cases() + stepper_cases()
    try:
        import torch._dynamo  # noqa: F401  (torch.optim imports it at its first optimizer)
    except ImportError:
        pass
    else:
        torch_classes()  # imports matsign.optim.torch: not inside the first case's time
        cases += torch_class_cases()
    ids = [c.id for c in cases]
    duplicates = {i for i in ids if ids.count(i) > 1}
    assert not duplicates, f"duplicate case ids: {sorted(duplicates)}"
    unknown = set(KNOWN_DEFECTS) - set(ids)
    assert not unknown, f"known defects of no case: {sorted(unknown)}"
    for case in cases:
        case.xfail.update(KNOWN_DEFECTS.get(case.id, {}))
    return cases


CASES = all_cases()


def pytest_generate_tests(metafunc):
    if "bad_case" not in metafunc.fixturenames:
        return
    params = []
    for backend in metafunc.config._matsign_backends:
        for case in CASES:
            if not case.applies(backend):
                continue
            defect = case.known_defect(backend)
            marks = [pytest.mark.xfail(strict=True, reason=defect)] if defect else []
            params.append(pytest.param(backend, case, marks=marks,
                                       id=f"{backend.name}-{case.id}"))
    metafunc.parametrize(("target", "bad_case"), params)


def test_bad_input(target, bad_case):
    problem = evaluate(bad_case, target)
    assert problem is None, problem


# --- counts -------------------------------------------------------------------------------------


def counts(backends, *, verbose=False):
    """Per backend: handled / total, and the failures (xfails included)."""
    rows = []
    for backend in backends:
        applicable = [c for c in CASES if c.applies(backend)]
        failures = []
        spent = {}
        for case in applicable:
            start = time.perf_counter()
            problem = evaluate(case, backend)
            group = case.id.partition("/")[0]
            spent[group] = spent.get(group, 0.0) + time.perf_counter() - start
            if problem is not None:
                failures.append((case.id, problem, case.known_defect(backend)))
        rows.append((backend.name, len(applicable) - len(failures), len(applicable)))
        if verbose:
            slowest = sorted(spent.items(), key=lambda kv: -kv[1])[:12]
            print(f"  {backend.name}: {sum(spent.values()):.1f} s; slowest groups: "
                  + ", ".join(f"{g} {t:.1f} s" for g, t in slowest))
            for cid, problem, defect in failures:
                tag = "xfail" if defect else "FAIL"
                print(f"  {backend.name:28s} {tag:5s} {cid}: {problem}")
    print(f"{'backend':30s} handled / total")
    for name, ok, total in rows:
        print(f"{name:30s} {ok:5d} / {total:<5d} ({100 * ok / max(total, 1):.1f} %)")
    return rows


if __name__ == "__main__":
    import argparse
    import os

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from conftest import ALL_BACKENDS, _make

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--xp", default=None, help="comma-separated backends (default: all)")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every failure")
    args = parser.parse_args()
    names = args.xp.split(",") if args.xp else ALL_BACKENDS
    chosen = [b for b in (_make(n) for n in names) if b is not None]
    counts(chosen, verbose=args.verbose)
