"""The backend layer: the only module that imports array_api_compat or names a backend.

Algorithm modules call :func:`namespace` once and then write plain ``xp.*``.
Where a backend has a faster native spelling (torch ``addmm``/``baddbmm``, an
in-place NumPy epilogue), it lives here as one small function with its portable
twin beside it.
"""

from __future__ import annotations

import functools
import sys

import array_api_compat

# torch on CPU, 2 threads, AMD EPYC (AVX2), shared cores: in float32 the blocked products
# halve X X^T and A^2 at 1.3-1.8x from m = 1024 when idle, but msign at 1024^2 lost (0.74x)
# under load 3.6 (each block is a thread barrier), so from 1536 (1.1x msign at 2048^2);
# bfloat16 (emulated) gains 2x from 256. See docs/benchmarks.rst.
SYMMETRIC_BLOCKED_FROM = 1536
SYMMETRIC_BLOCKED_FROM_HALF = 256
SYMMETRIC_LEAF = 256  # rows of a diagonal leaf block; 128-256 measured within 5 %
LOOP_FROM = 256  # torch CPU float32: per-matrix products beat batched ones (see each_matrix)

__all__ = [
    "add_constant_then_matmul",
    "add_diagonal",
    "all_finite",
    "as_contiguous",
    "astype",
    "compute_dtype",
    "cond",
    "decomposition_dtype",
    "device",
    "each_matrix",
    "eigh",
    "eye_like",
    "frobenius_norm",
    "gram",
    "is_half",
    "matmul_add",
    "namespace",
    "reads_free",
    "result_dtype",
    "safe_divisor",
    "scaled_by_largest",
    "static",
    "svd",
    "symmetric_matmul",
    "symmetric_product",
    "symmetric_product_add",
    "symmetric_square_add",
    "to_numpy",
    "while_loop",
]


def namespace(*arrays, xp=None):
    """Return the array namespace shared by ``arrays``, or ``xp`` if given.

    Raises
    ------
    TypeError
        If the arrays come from different libraries, or an argument is not an array.
    """
    if xp is not None and not arrays:
        return xp
    try:
        found = (_torch_namespace() if arrays and all(_is_torch(a) for a in arrays)
                 else array_api_compat.array_namespace(*arrays))
    except TypeError as exc:
        kinds = sorted({type(a).__module__ + "." + type(a).__name__ for a in arrays})
        msg = f"matsign needs arrays of a single array library; got {', '.join(kinds)}"
        raise TypeError(msg) from exc
    if xp is not None:
        if _library(xp) != _library(found):
            msg = (f"matsign needs arrays of a single array library; got xp={xp.__name__} "
                   f"for {_library(found)} arrays")
            raise TypeError(msg)
        return xp
    xp = found
    if _UNREGISTERED and (_library(xp) == "jax"):
        _register_static()
    return xp


def _library(xp):
    """The array library a namespace belongs to (its compat wrapper and itself alike).

    Read from the module's name: array-api-compat's ``is_*_namespace`` helpers go
    through ``functools.lru_cache``, which ``torch.compile`` warns about in every graph.
    """
    name = getattr(xp, "__name__", repr(xp)).removeprefix("array_api_compat.")
    return "jax" if name in ("jax.numpy", "jax.experimental.array_api") else name


def _is_torch(x):
    """Whether ``x`` is a torch tensor, without importing torch (traceable by Dynamo)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _is_jax(x):
    """Whether ``x`` is a JAX array or tracer, without importing JAX (traceable by Dynamo:
    array-api-compat's ``is_jax_array`` goes through ``functools.lru_cache``)."""
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(x, (jax.Array, jax.core.Tracer))


def _torch_namespace():
    """array-api-compat's torch namespace (an import, not a cache: Dynamo traces it)."""
    import array_api_compat.torch as compat_torch

    return compat_torch


_UNREGISTERED: list[type] = []


def static(cls: type) -> type:
    """Mark ``cls`` as static metadata of a state: a pytree node without children.

    A class decorator for hashable values that describe a state rather than hold its
    numbers (a Kronecker layout, the stacking of `matsign.optim.multi`). JAX then keeps
    them out of the leaves, so states pass through ``jax.jit`` and ``lax.scan`` as
    arguments and results, and a change of layout recompiles. Registration happens
    when JAX is imported and matsign first sees a JAX array (or at once, if JAX is
    loaded); other libraries need none.
    """
    _UNREGISTERED.append(cls)
    if sys.modules.get("jax") is not None:  # None: an import blocked
        _register_static()
    return cls


def _register_static():
    import jax

    while _UNREGISTERED:
        jax.tree_util.register_static(_UNREGISTERED.pop())


def device(x):
    """The device ``x`` lives on, in its own library's terms, for arrays made beside it.

    A JAX array sharded over several devices gives None: its sharding fits its own
    shape only (a 0-d counter cannot be sharded like a matrix), and an array made
    without a device follows the computation it enters (uncommitted), on its devices.
    So does an uncommitted JAX array (made without a device): what is made beside it
    stays uncommitted too, as ``jit``'s outputs and inputs then agree in placement and
    a jitted step is not compiled again for its own state.
    """
    if _is_jax(x) and not is_traced(x) and not x.committed:
        return None
    where = x.device if _is_torch(x) else array_api_compat.device(x)
    if len(getattr(where, "device_set", ())) > 1:  # a jax.sharding.Sharding
        return None
    return where


def to_numpy(x):
    """Copy ``x`` to a NumPy array on the host (tests and the command line only)."""
    import numpy as np

    if _is_torch(x):
        return x.detach().cpu().float().numpy() if _is_torch_half(x) else x.detach().cpu().numpy()
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if array_api_compat.is_numpy_array(x):
        return x
    return np.from_dlpack(x)  # array-api-strict (any of its devices), JAX on the host


def _is_torch_half(x):
    return str(x.dtype) in ("torch.bfloat16", "torch.float16")


def is_half(dtype, xp):
    """Whether ``dtype`` is a floating dtype narrower than float32."""
    return xp.isdtype(dtype, "real floating") and xp.finfo(dtype).bits < 32


def result_dtype(x, xp):
    """The floating dtype of a result for input ``x``.

    Real floating input keeps its dtype; integer and boolean input is promoted to
    the namespace's default real floating dtype on ``x``'s device.

    Raises
    ------
    TypeError
        For complex input (not supported) and dtypes that are not numeric.
    """
    if xp.isdtype(x.dtype, "real floating"):
        return x.dtype
    if xp.isdtype(x.dtype, "complex floating"):
        msg = f"matsign supports real input only; got complex dtype {x.dtype}"
        raise TypeError(msg)
    if xp.isdtype(x.dtype, ("integral", "bool")):
        return xp.__array_namespace_info__().default_dtypes(device=device(x))["real floating"]
    msg = f"matsign needs numeric input; got dtype {x.dtype}"
    raise TypeError(msg)


def decomposition_dtype(dtype, xp):
    """Dtype a decomposition (SVD, eigh) runs in: half precisions go up to float32."""
    return xp.float32 if is_half(dtype, xp) else dtype


def compute_dtype(requested, dtype, xp):
    """Dtype a matmul-only iteration runs in: ``requested`` if given, else ``dtype``."""
    if requested is None:
        return dtype
    if not xp.isdtype(requested, "real floating"):
        msg = f"compute dtype must be a real floating dtype; got {requested}"
        raise TypeError(msg)
    return requested


def astype(x, dtype, *, xp):
    """``x`` in ``dtype``: ``x`` itself when it already has it (no copy), else a cast."""
    return x if x.dtype == dtype else xp.astype(x, dtype)


def safe_divisor(x, *, xp):
    """``x`` with its zeros replaced by one, so that dividing by it keeps a zero a zero."""
    return xp.where(x > 0, x, xp.ones_like(x))


def eye_like(x, n=None, *, xp):
    """Identity of size ``n`` (default: ``x.shape[-1]``) with ``x``'s dtype and device."""
    n = x.shape[-1] if n is None else n
    return xp.eye(n, dtype=x.dtype, device=device(x))


def frobenius_norm(x, *, xp):
    """Frobenius norm over the last two axes, kept as size-1 axes for broadcasting.

    Computed as ``amax * ||x / amax||`` so that entries near the dtype's limits
    neither overflow nor underflow; an all-zero matrix has norm 0. torch takes
    ``amax`` from ``amax``/``amin`` reductions (no ``abs`` temporary).
    """
    if (_library(xp) == "torch") and x.dtype.is_floating_point:
        import torch

        scale = torch.maximum(torch.amax(x, dim=(-2, -1), keepdim=True),
                              -torch.amin(x, dim=(-2, -1), keepdim=True)).abs()  # not -0.0
        y = x / safe_divisor(scale, xp=xp)
        return scale * torch.linalg.vector_norm(y, dim=(-2, -1), keepdim=True)
    scale = xp.max(xp.abs(x), axis=(-2, -1), keepdims=True)
    y = x / safe_divisor(scale, xp=xp)
    return scale * xp.sqrt(xp.sum(y * y, axis=(-2, -1), keepdims=True))


def sign(x, *, xp):
    """The sign of each entry (-1, 0 or 1), NaN where ``x`` is NaN, as the array API says.

    torch's own ``sign`` maps NaN to 0 and array-api-compat mends that with a masked
    assignment, about 7x the cost of ``torch.sign`` on a CPU. For torch floating tensors
    the sign is formed as ``copysign(ceil(min(|x|, 1)), x)`` instead: three in-place
    passes over one temporary, NaN kept (``-0.0`` gives ``-0.0``, which is 0).
    """
    if (_library(xp) == "torch") and x.dtype.is_floating_point:
        return x.abs().clamp_(max=1).ceil_().copysign_(x)
    return xp.sign(x)


def scaled_by_largest(x, *, xp):
    """``(x / s, s)`` with ``s`` the largest absolute entry of each matrix (..., 1, 1).

    Entries of ``x / s`` lie in [-1, 1], so norms and products of it neither overflow
    nor lose subnormal inputs; a zero matrix keeps ``s = 0`` and ``x / s = 0``.
    """
    s = xp.max(xp.abs(x), axis=(-2, -1), keepdims=True)
    return x / safe_divisor(s, xp=xp), s


def is_traced(x) -> bool:
    """Whether ``x`` is being traced (``jax.jit``, ``torch.compile``): no value on the host.

    The one place matsign asks. Checks that read values on the host (finiteness,
    definiteness, singularity) are skipped while tracing, so the default paths trace;
    non-finite input then propagates to the output as NaN, as in `matsign.msign`.
    Loops that stop on a host-read residual (``msign(tol=...)``, ``inverse_root(method=
    "newton")``) raise one clear error instead (`raise_if_traced`).
    """
    if _is_torch(x):
        import torch

        return bool(torch.compiler.is_compiling())
    if _is_jax(x):
        import jax

        return isinstance(x, jax.core.Tracer)
    return False


def raise_if_traced(x, what: str) -> None:
    """ValueError naming ``what`` if ``x`` is being traced (see `is_traced`)."""
    if is_traced(x):
        msg = (f"{what} reads a residual on the host to decide when to stop, which cannot "
               f"happen while tracing (jax.jit, torch.compile); call it outside the traced "
               f"function or use the default method")
        raise ValueError(msg)


def reads_free(x):
    """Whether reading a value of ``x`` on the host stalls no device (NumPy, torch CPU,
    array-api-strict): there a decision may be taken on the host at no cost."""
    if _is_torch(x):
        return x.device.type == "cpu"
    xp = array_api_compat.array_namespace(x)
    return ((_library(xp) == "numpy")
            or (_library(xp) == "array_api_strict"))


def cond(pred, true_fn, false_fn, *operands):
    """``true_fn(*operands)`` if the 0-d boolean ``pred`` holds, else ``false_fn(*operands)``.

    Both branches must return the same structure, shapes and dtypes. For a JAX
    ``pred``, traced or not, this is ``jax.lax.cond``: the decision stays on the device
    (no host sync) and only the branch taken runs; called outside ``jax.jit`` it traces
    both branches at every call (tens of milliseconds for new closures), so jit the
    step. Any other ``pred`` is read on the host, ``bool(pred)``: free for NumPy, torch
    on the CPU and array-api-strict (`reads_free`); one host read, a device sync, per
    call for CUDA tensors and CuPy arrays; a graph break under ``torch.compile``.
    """
    if _is_jax(pred):
        import jax

        return jax.lax.cond(pred, true_fn, false_fn, *operands)
    return true_fn(*operands) if bool(pred) else false_fn(*operands)


def while_loop(cond_fn, body_fn, init):
    """``carry = body_fn(carry)`` while ``cond_fn(carry)``, from ``init``; returns the carry.

    For a carry holding JAX arrays this is ``jax.lax.while_loop``: the loop runs on the
    device, under ``jax.jit`` too (the carry keeps its structure, shapes and dtypes;
    Python numbers in ``init`` become arrays). Otherwise a Python loop that reads
    ``cond_fn`` on the host each time: free when it is a Python bool or a host array,
    one sync per step on CUDA and CuPy.
    """
    if any(_is_jax(leaf) for leaf in _leaves(init)):
        import jax

        return jax.lax.while_loop(cond_fn, body_fn, init)
    carry = init
    while bool(cond_fn(carry)):
        carry = body_fn(carry)
    return carry


def _leaves(carry):
    return [x for part in carry for x in _leaves(part)] if isinstance(carry, tuple) else [carry]


def all_finite(x, *, xp):
    """A 0-d boolean array: whether every entry of ``x`` is finite (no host sync).

    torch reads floating arrays once by ``aminmax`` (NaN and inf propagate to the
    extremes; 20x faster than ``isfinite(x).all()`` at 28 M float32 entries, which
    writes a boolean temporary); elsewhere ``all(isfinite(x))``.
    """
    if (_library(xp) == "torch") and x.dtype.is_floating_point and x.numel():
        import torch

        low, high = torch.aminmax(x)
        return torch.isfinite(low) & torch.isfinite(high)
    return xp.all(xp.isfinite(x))


def as_contiguous(x, *, xp):
    """``x`` in row-major memory order when the backend has a notion of it.

    A transposed view kept through a matmul loop costs about 30 % on CPU BLAS.
    """
    if (_library(xp) == "torch"):
        return x.contiguous()
    if (_library(xp) == "numpy") or (_library(xp) == "cupy"):
        import numpy as np  # noqa: F401  (cupy arrays implement the same method)

        return x.copy(order="C") if not x.flags.c_contiguous else x
    return x


def matmul_add(a, b, c, *, alpha, beta, xp):
    """``beta * c + alpha * (a @ b)`` with one fused call where the backend has one.

    ``c`` is not modified. The result may be a new array that the caller owns.
    """
    if (_library(xp) == "torch"):
        fused = xp.addmm if a.ndim == 2 else _torch_baddbmm
        return fused(c, a, b, beta=beta, alpha=alpha)
    if (_library(xp) == "numpy") or (_library(xp) == "cupy"):
        out = a @ b
        out *= alpha  # in place: no second m x m temporary on the hot path
        out += beta * c
        return out
    return alpha * (a @ b) + beta * c


def symmetric_square_add(a, *, alpha, beta, xp, symmetric=True):
    """``beta * a + alpha * (a @ a)`` for symmetric ``a``; ``a`` is not modified.

    NumPy computes ``a @ a.T`` with a symmetric rank-k update (syrk) when both operands
    share a buffer, faster than GEMM from about 512 on; below that GEMM wins. torch on
    the CPU computes the upper block triangle only (see `symmetric_product_add`) unless
    ``symmetric=False``, which keeps one ``addmm`` (torch.optim.Muon's operations).
    """
    if symmetric and _blocked(a, xp):
        return _torch_symmetric_product(a, a, a, alpha=alpha, beta=beta)
    if (_library(xp) == "numpy") and a.ndim == 2 and a.shape[-1] >= 512:
        return matmul_add(a, a.T, a, alpha=alpha, beta=beta, xp=xp)
    return matmul_add(a, a, a, alpha=alpha, beta=beta, xp=xp)


def symmetric_product_add(p, q, c, *, alpha, beta, xp, symmetric=True):
    """``beta * c + alpha * (p @ q)`` for symmetric ``p``, ``q``, ``c`` whose product is too.

    ``p @ q`` is symmetric when the two commute, e.g. polynomials of the same matrix
    (Horner's rule on a Gram matrix). None of the inputs is modified.

    Notes
    -----
    With ``q`` symmetric, block ``(i, j)`` of ``p @ q`` is ``p[i rows] @ q[j rows]^T``.
    From `SYMMETRIC_BLOCKED_FROM` rows on (torch on the CPU) only the upper block
    triangle is computed, by halving the rows recursively down to `SYMMETRIC_LEAF`,
    and mirrored: about half the flops, and the result is exactly symmetric. Elsewhere,
    or with ``symmetric=False``, one fused product (`matmul_add`).
    """
    if symmetric and _blocked(p, xp):
        return _torch_symmetric_product(p, q, c, alpha=alpha, beta=beta)
    return matmul_add(p, q, c, alpha=alpha, beta=beta, xp=xp)


def symmetric_product(p, q, *, xp, symmetric=True):
    """``p @ q`` for symmetric ``q`` when the product is known to be symmetric.

    As `symmetric_product_add` without the added term (e.g. ``(B R) B`` for commuting
    symmetric ``B``, ``R``): the upper block triangle only, where that wins.
    """
    if symmetric and _blocked(p, xp):
        return _torch_symmetric_product(p, q, None, alpha=1.0, beta=0.0)
    return p @ q


def gram(x, *, xp, symmetric=True):
    """``x @ x^T`` over the last two axes: (..., m, n) -> (..., m, m).

    NumPy forms it by syrk (both operands share a buffer). torch on the CPU computes
    the upper block triangle only from `SYMMETRIC_BLOCKED_FROM` rows on (exactly
    symmetric, see `symmetric_product_add`); ``symmetric=False`` keeps the plain product.
    """
    if symmetric and _blocked(x, xp):
        return _torch_symmetric_product(x, x, None, alpha=1.0, beta=0.0)
    return x @ xp.matrix_transpose(x)


def _blocked(x, xp):
    """Whether the blocked symmetric products win for ``x`` (measured, see the constants)."""
    if not (_library(xp) == "torch") or x.device.type != "cpu":
        return False  # NumPy has syrk; GPUs and the portable path are not measured
    start = SYMMETRIC_BLOCKED_FROM_HALF if _is_torch_half(x) else SYMMETRIC_BLOCKED_FROM
    return x.shape[-2] >= start


def _torch_symmetric_product(p, q, c, *, alpha, beta):
    """``beta * c + alpha * (p @ q^T)`` (symmetric) from its upper block triangle."""
    import torch

    m = p.shape[-2]
    out = p.new_empty((*p.shape[:-2], m, m))
    _fill_upper_blocks(out, p, q, c, alpha=alpha, beta=beta)
    # one elementwise pass: each op is a thread barrier, costly on shared cores
    return torch.where(_upper_mask(m, p.device), out, out.mT)


@functools.lru_cache(maxsize=8)
def _upper_mask(m, device):
    import torch

    return torch.ones((m, m), dtype=torch.bool, device=device).triu_()


def _fill_upper_blocks(out, p, q, c, *, alpha, beta):
    """Write the upper block triangle of ``beta * c + alpha * (p @ q^T)`` into ``out``."""
    m = p.shape[-2]
    if m <= SYMMETRIC_LEAF:
        _torch_product_add(p, q, c, alpha=alpha, beta=beta, out=out)
        return
    h = -(-m // 32) * 16  # half the rows, rounded up to a multiple of 16 (SIMD-aligned)
    top, bottom = slice(0, h), slice(h, m)
    for rows in (top, bottom):
        _fill_upper_blocks(out[..., rows, rows], p[..., rows, :], q[..., rows, :],
                           _block(c, rows, rows), alpha=alpha, beta=beta)
    _torch_product_add(p[..., top, :], q[..., bottom, :], _block(c, top, bottom),
                       alpha=alpha, beta=beta, out=out[..., top, bottom])


def _block(c, rows, cols):
    return None if c is None else c[..., rows, cols]


def _torch_product_add(p, q, c, *, alpha, beta, out):
    """``beta * c + alpha * (p @ q^T)`` into ``out`` (a view); plain ``p @ q^T`` without ``c``."""
    import torch

    if c is None:
        torch.matmul(p, q.mT, out=out)
    elif p.ndim <= 3:
        fused = torch.addmm if p.ndim == 2 else torch.baddbmm
        fused(c, p, q.mT, beta=beta, alpha=alpha, out=out)
    else:
        out.copy_(_torch_baddbmm(c, p, q.mT, beta=beta, alpha=alpha))


def _torch_baddbmm(c, a, b, *, beta, alpha):
    import torch

    batch = a.shape[:-2]
    if len(batch) == 1:
        return torch.baddbmm(c, a, b, beta=beta, alpha=alpha)
    a3, b3, c3 = (t.reshape(-1, *t.shape[-2:]) for t in (a, b, c))
    out = torch.baddbmm(c3, a3, b3, beta=beta, alpha=alpha)
    return out.reshape((*batch, a.shape[-2], b.shape[-1]))


def each_matrix(fn, x, *, xp):
    """``fn(x)`` for a batched matrix function ``fn``, one call per matrix where that wins.

    torch on the CPU multiplies stacks of float32/float64 matrices from `LOOP_FROM` rows
    on faster one matrix at a time than by its batched kernels (MKL, 2 threads, AVX2
    EPYC: Newton–Schulz on 48 x 512^2 0.77x, 24 x 1024^2 0.74x the stacked time; at
    128^2 the loop costs 1.4x, and bfloat16 stacks are as fast as loops). Elsewhere,
    and for single matrices, one batched call.
    """
    if not _loops_pay(x, xp):
        return fn(x)
    flat = x.reshape((-1, *x.shape[-2:]))
    parts = [fn(flat[i, ...]) for i in range(flat.shape[0])]
    return xp.reshape(xp.stack(parts), (*x.shape[:-2], *parts[0].shape[-2:]))


def _loops_pay(x, xp):
    """Whether `each_matrix` should loop (torch, CPU, float32/64, a stack of large matrices)."""
    return ((_library(xp) == "torch") and x.device.type == "cpu" and x.ndim > 2
            and not _is_torch_half(x) and x.shape[-2] >= LOOP_FROM)


def add_constant_then_matmul(b, x, value, *, xp, symmetric=False):
    """``(b + value * I) @ x``; ``b`` must be a temporary the caller owns.

    torch fuses it as ``addmm(x, b, x, beta=value)`` (the association torch.optim.Muon
    uses); elsewhere the diagonal of the small ``b`` is updated, no m x n temporary.
    ``symmetric=True`` says ``b`` is symmetric (see `symmetric_matmul`).
    """
    if (_library(xp) == "torch"):
        b = b.mT if symmetric and _transpose_pays(b, xp) else b
        return matmul_add(b, x, x, alpha=1.0, beta=value, xp=xp)
    return add_diagonal(b, value, xp=xp) @ x


def symmetric_matmul(s, x, *, xp, symmetric=True):
    """``s @ x`` for symmetric ``s``.

    torch's CPU kernels in half precision are 12-15x faster with a transposed left
    operand than with a row-major one (bfloat16, AVX2 EPYC, measured at 256 and 768),
    so there ``s^T @ x`` is formed; ``symmetric=False`` keeps ``s @ x``.
    """
    if symmetric and _transpose_pays(s, xp):
        return s.mT @ x
    return s @ x


def _transpose_pays(s, xp):
    """Whether ``s^T @ x`` beats ``s @ x`` (torch, CPU, half precision: measured)."""
    return ((_library(xp) == "torch") and s.device.type == "cpu"
            and _is_torch_half(s))


def add_diagonal(a, value, *, xp):
    """``a + value * I`` over the last two axes; ``a`` must be a temporary the caller owns.

    On NumPy, CuPy and torch the diagonal is updated in place (no m x m identity).
    """
    if (_library(xp) == "torch"):
        a.diagonal(dim1=-2, dim2=-1).add_(value)
        return a
    if (_library(xp) == "numpy") or (_library(xp) == "cupy"):
        if a.flags.c_contiguous:
            n = a.shape[-1]
            a.reshape((*a.shape[:-2], n * n))[..., :: n + 1] += value
            return a
    return a + value * eye_like(a, xp=xp)


def synchronize(x):
    """Block until the computation producing ``x`` has finished (a host sync; timing only).

    CUDA tensors and CuPy arrays are computed asynchronously, so a timer must wait
    for them; on the CPU backends this is a no-op.
    """
    if _is_torch(x) and x.device.type == "cuda":
        import torch

        torch.cuda.synchronize(x.device)
    elif array_api_compat.is_cupy_array(x):
        import cupy

        cupy.cuda.get_current_stream().synchronize()
    elif array_api_compat.is_jax_array(x):
        x.block_until_ready()


def backend_namespace(name):
    """The array-api-compat namespace of the library called ``name`` (imports it).

    Raises
    ------
    ValueError
        If ``name`` is not one of 'numpy', 'torch', 'cupy'.
    ImportError
        If that library is not installed or cannot start.
    """
    if name not in ("numpy", "torch", "cupy"):
        msg = f"unknown backend {name!r}; known: numpy, torch, cupy"
        raise ValueError(msg)
    import importlib

    return importlib.import_module(f"array_api_compat.{name}")


def svd(a, *, xp):
    """Reduced SVD ``U, S, Vh`` of the matrices ``a``, batched; S descending.

    As in `eigh`, NumPy float32 input goes through SciPy's true float32 LAPACK path
    (``gesdd``) when SciPy is installed: NumPy's own computes it in float64.
    """
    if (_library(xp) == "numpy") and a.dtype == xp.float32:
        try:
            import scipy.linalg
        except ImportError:
            return xp.linalg.svd(a, full_matrices=False)
        flat = a.reshape((-1, *a.shape[-2:]))
        triples = [scipy.linalg.svd(m, full_matrices=False, check_finite=False) for m in flat]
        k = min(a.shape[-2:])
        U = xp.stack([t[0] for t in triples]).reshape((*a.shape[:-1], k))
        S = xp.stack([t[1] for t in triples]).reshape((*a.shape[:-2], k))
        Vh = xp.stack([t[2] for t in triples]).reshape((*a.shape[:-2], k, a.shape[-1]))
        return U, S, Vh
    return xp.linalg.svd(a, full_matrices=False)


def eigh(a, *, xp):
    """Eigenvalues (ascending) and eigenvectors of the symmetric matrices ``a``, batched.

    NumPy computes float32 input in float64, as slowly as float64; SciPy, when it is
    installed, has a true float32 LAPACK path (``syevd``), about twice as fast from
    n = 128 on (below, looping over a batch in Python costs more than it saves). Failures
    raise the backend's error (NumPy's ``LinAlgError``, torch's ``_LinAlgError``).
    """
    if (_library(xp) == "numpy") and a.dtype == xp.float32 and a.shape[-1] >= 128:
        try:
            import scipy.linalg
        except ImportError:
            return xp.linalg.eigh(a)
        flat = a.reshape((-1, *a.shape[-2:]))  # one matrix at a time: any SciPy version
        pairs = [scipy.linalg.eigh(m, driver="evd", check_finite=False) for m in flat]
        w = xp.stack([w for w, _ in pairs]).reshape(a.shape[:-1])
        return w, xp.stack([v for _, v in pairs]).reshape(a.shape)
    return xp.linalg.eigh(a)
