"""Benchmarks for `matsign.msign`: time, accuracy and the achieved fraction of the GEMM rate.

Parameters are strings so that asv's tables read well: shapes such as ``"1024x4096"``
or ``"16x512x512"`` (a batch), backends ``"numpy"`` (float32), ``"torch-float32"`` and
``"torch-bfloat16"`` on the CPU, ``"torch-cuda-float32"``, ``"torch-cuda-bfloat16"`` and
``"cupy-float32"`` on a GPU. The GPU rows add the shapes a GPU needs to fill
(``GPU_SHAPES``), which CPU rows skip, and wait for the device inside each timing. A
combination that cannot run here (torch, CuPy, CUDA or scipy missing, or a CPU without
native bfloat16 matrix products) or that would only repeat another row raises
`NotImplementedError` in ``setup``, which asv reports as skipped.
"""

import statistics
import time

import numpy as np

import matsign
from matsign import polynomials
from matsign.testing import matrix_with_singular_values

from . import pin_threads, require_device, wait

try:  # imported once here: asv's forkserver then shares it with every benchmark process
    import torch
except ImportError:
    torch = None

SHAPES = ["256x256", "1024x1024", "1024x4096", "16x512x512", "4096x4096", "2048x8192"]
GPU_SHAPES = {"4096x4096", "2048x8192"}  # minutes per row on a CPU; what fills a GPU
BACKENDS = ["numpy", "torch-float32", "torch-bfloat16",
            "torch-cuda-float32", "torch-cuda-bfloat16", "cupy-float32"]
METHODS = ["svd", "jordan", "polar_express", "you5", "quintic"]
REFERENCES = ["matsign.msign", "numpy.linalg.svd", "scipy.linalg.polar"]


def _shape(text):
    return tuple(int(d) for d in text.split("x"))


def _on_backend(a, backend):
    """Move the NumPy array ``a`` to ``backend`` ("numpy" keeps float32 or float64).

    Raises `NotImplementedError`, which asv reports as a skip, when the backend's library
    or device is missing.
    """
    require_device("cuda" if "cuda" in backend or backend.startswith("cupy") else "cpu")
    if backend == "numpy":
        return a
    lib, *device, dtype = backend.split("-")
    if lib == "cupy":
        return _cupy().asarray(a, dtype=dtype)
    if torch is None:
        raise NotImplementedError("torch is not installed")
    device = device[0] if device else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise NotImplementedError("no CUDA device")
    host = torch.from_numpy(np.ascontiguousarray(a))
    return host.to(device=device, dtype=getattr(torch, dtype))


def _cupy():
    """The cupy module when a GPU is there to run it; else `NotImplementedError`."""
    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
    except Exception:  # noqa: BLE001  (not installed, or no driver/GPU)
        raise NotImplementedError("CuPy cannot run here") from None
    return cupy


def _check_shape(shape, backend):
    """Skip the shapes meant for a GPU on CPU backends."""
    on_gpu = "cuda" in backend or backend.startswith("cupy")
    if shape in GPU_SHAPES and not on_gpu:
        raise NotImplementedError(f"{shape} is a GPU-only row")


def _gaussian(shape, dtype=np.float32, seed=0):
    """A standard normal NumPy array of ``shape`` (a tuple) made directly in ``dtype``."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=dtype)


def _require_fast(backend):
    """Skip timed bfloat16 rows on a CPU without native bfloat16 products."""
    if backend == "torch-bfloat16" and torch is not None and not FAST_BFLOAT16:
        raise NotImplementedError("this CPU has no native bfloat16 matrix product")


def _msign_options(method):
    """Keyword arguments of `matsign.msign` for a method row: SVD or a preset's schedule."""
    if method == "svd":
        return {"method": "svd"}
    return {"method": "newton_schulz", "schedule": method}


def _newton_schulz_flops(shape, schedule):
    """Flops of ``schedule``'s default steps on ``shape`` (..., m, n), m <= n after transposing.

    A step with coefficients ``(c0, ..., ck)`` costs ``2 m^2 n`` for the Gram matrix,
    ``2 m^3`` for each Horner product beyond the first and ``2 m^2 n`` to apply it:
    ``4 m^2 n + 2 m^3`` for a quintic step.
    """
    *batch, m, n = shape
    m, n = min(m, n), max(m, n)
    per_step = [4 * m * m * n + 2 * m**3 * max(0, len(c) - 2) for c in schedule.polynomials()]
    return int(np.prod(batch, dtype=np.int64)) * sum(per_step)


def _median_seconds(func, repeats):
    """Median wall time of ``func()`` over ``repeats`` calls, after one warm-up call."""
    return _interleaved_medians([func], repeats)[0]


def _interleaved_medians(funcs, repeats):
    """Median wall time of each of ``funcs`` over ``repeats`` calls, after a warm-up call.

    The calls alternate between the functions, so that a change in outside load while
    they run affects each about equally and their ratio stays fair.
    """
    times = [[] for _ in funcs]
    for _ in range(repeats + 1):
        for func, samples in zip(funcs, times, strict=True):
            start = time.perf_counter()
            func()
            samples.append(time.perf_counter() - start)
    return [statistics.median(samples[1:]) for samples in times]



def _warm_up():
    """Run each code path once, so that lazy imports are not timed in a first sample."""
    eyes = [np.eye(2, dtype=np.float32)] + ([] if torch is None else [torch.eye(2)])
    for eye in eyes:
        matsign.msign(eye, method="svd")
        matsign.msign(eye, method="newton_schulz", steps=1)


def _has_fast_bfloat16():
    """Whether torch multiplies bfloat16 matrices at least a quarter as fast as float32.

    CPUs without bfloat16 instructions (AMX, AVX512-BF16) fall back to a kernel about a
    hundred times slower than float32: a 1024x4096 row would take minutes and measure
    that fallback, not matsign. Timed rows in bfloat16 are skipped there.
    """
    if torch is None:
        return False
    a = torch.randn(256, 256)
    b = a.to(torch.bfloat16)
    slow, fast = _interleaved_medians([lambda: b @ b, lambda: a @ a], 3)
    return slow < 4 * fast


pin_threads()
_warm_up()
FAST_BFLOAT16 = _has_fast_bfloat16()


class TimeMsign:
    """Wall time of `matsign.msign` by method (SVD or preset) x shape x backend."""

    params = (METHODS, SHAPES, BACKENDS)
    param_names = ("method", "shape", "backend")
    timeout = 180

    def setup(self, method, shape, backend):
        if method == "svd" and backend.endswith("bfloat16"):
            raise NotImplementedError("the SVD of bfloat16 input runs in float32: see float32")
        _require_fast(backend)
        _check_shape(shape, backend)
        self.G = _on_backend(_gaussian(_shape(shape)), backend)
        self.options = _msign_options(method)

    def time_msign(self, method, shape, backend):
        wait(matsign.msign(self.G, **self.options))


class TimeExactPolar:
    """Exact ``U V^T``: `matsign.msign` by SVD next to NumPy's SVD and SciPy's polar."""

    params = (REFERENCES, SHAPES, ["float32", "float64"])
    param_names = ("implementation", "shape", "dtype")
    timeout = 180

    def setup(self, implementation, shape, dtype):
        require_device("cpu")
        _check_shape(shape, "numpy")
        self.G = _gaussian(_shape(shape), dtype=np.dtype(dtype))
        if implementation == "scipy.linalg.polar":
            try:
                import scipy.linalg
            except ImportError:
                raise NotImplementedError("scipy is not installed") from None
            self.polar = scipy.linalg.polar

    def time_polar_factor(self, implementation, shape, dtype):
        if implementation == "matsign.msign":
            matsign.msign(self.G, method="svd")
        elif implementation == "numpy.linalg.svd":
            U, _, Vh = np.linalg.svd(self.G, full_matrices=False)
            U @ Vh
        else:
            for G in self.G.reshape(-1, *self.G.shape[-2:]):  # scipy's polar is not batched
                self.polar(G, side="right")


class TrackPresetAccuracy:
    """Singular values of each preset's output on an ill-conditioned 256x256 matrix.

    The input has singular values log-spaced over 1e-6..1 (condition number 1e6); each
    preset runs its default number of steps. All figures come from float64 singular
    values of the output, computed once in ``setup_cache``.
    """

    params = (polynomials.names(), ["numpy-float64", "numpy-float32", "torch-bfloat16"])
    param_names = ("preset", "backend")
    timeout = 300

    def setup_cache(self):
        rng = np.random.default_rng(1234)
        G = matrix_with_singular_values(np.logspace(0, -6, 256), 256, 256, rng=rng)
        results = {}
        for backend in self.params[1]:
            for name in self.params[0]:
                results[name, backend] = _preset_singular_values(G, name, backend)
        return results

    def setup(self, results, preset, backend):
        if results[preset, backend] is None:
            raise NotImplementedError(f"{backend} is not available")

    def track_orthogonality_error(self, results, preset, backend):
        return float(np.max(np.abs(results[preset, backend] - 1.0)))

    def track_smallest_singular_value(self, results, preset, backend):
        return float(np.min(results[preset, backend]))

    def track_largest_singular_value(self, results, preset, backend):
        return float(np.max(results[preset, backend]))

    track_orthogonality_error.unit = "max |sigma - 1|"
    track_smallest_singular_value.unit = "sigma"
    track_largest_singular_value.unit = "sigma"


def _preset_singular_values(G, name, backend):
    """float64 singular values of ``msign(G)`` under preset ``name``; None without torch."""
    lib, _, dtype = backend.partition("-")
    host = G.astype(dtype if lib == "numpy" else np.float32)
    try:
        X = _on_backend(host, "numpy" if lib == "numpy" else backend)
    except NotImplementedError:
        return None
    Q = matsign.msign(X, method="newton_schulz", schedule=name)
    Q = Q.float().numpy() if lib == "torch" else Q
    return np.linalg.svd(np.asarray(Q, dtype=np.float64), compute_uv=False)


class TrackGemmFraction:
    """Achieved fraction of the GEMM rate: Newton–Schulz flops per second over GEMM's.

    Both rates are measured in the same call, same backend, dtype and threads, as the
    median of a few alternating repeats. The GEMM is ``(..., m, m) @ (..., m, n)``, the product that
    dominates a Newton–Schulz step; the Newton–Schulz flops follow
    ``_newton_schulz_flops``. The standard loop runs (``gram=False``): the Gram-space
    iteration that `matsign.msign` picks for wide matrices does fewer flops than the
    model counts. Values a little above 1 are real: NumPy forms ``X X^T`` by a symmetric
    product at half the flops of the GEMM the model charges for it.
    """

    params = (["jordan", "polar_express"], SHAPES, BACKENDS)
    param_names = ("preset", "shape", "backend")
    timeout = 300
    repeats = 3
    unit = "fraction of GEMM rate"

    def setup(self, preset, shape, backend):
        _require_fast(backend)
        _check_shape(shape, backend)
        *batch, m, n = _shape(shape)
        self.G = _on_backend(_gaussian((*batch, m, n)), backend)
        self.A = _on_backend(_gaussian((*batch, m, m), seed=1), backend)
        self.schedule = polynomials.preset(preset)

    def track_gemm_fraction(self, preset, shape, backend):
        *batch, m, n = self.G.shape
        gemm_flops = 2 * m * m * n * int(np.prod(batch, dtype=np.int64))
        ns_flops = _newton_schulz_flops(tuple(self.G.shape), self.schedule)
        gemm, ns = _interleaved_medians(
            [
                lambda: wait(self.A @ self.G),
                lambda: wait(matsign.msign(
                    self.G, method="newton_schulz", schedule=self.schedule, gram=False
                )),
            ],
            self.repeats,
        )
        return (ns_flops / ns) / (gemm_flops / gemm)
