"""Benchmarks for `matsign.msign`: time, accuracy and the achieved fraction of the GEMM rate.

Parameters are strings so that asv's tables read well: shapes such as ``"1024x4096"``
or ``"16x512x512"`` (a batch), backends ``"numpy"`` (float32), ``"torch-float32"`` and
``"torch-bfloat16"`` on the CPU, ``"torch-cuda-float32"``, ``"torch-cuda-bfloat16"`` and
``"cupy-float32"`` on a GPU. The GPU rows add the shapes a GPU needs to fill
(``GPU_SHAPES``), which CPU rows skip, and wait for the device inside each timing.
``TrackGemmFraction`` also has 2048^2, and runs 2048^2 and 4096^2 on the CPU when
``MATSIGN_BENCH_LARGE_CPU=1``. A
combination that cannot run here (torch, CuPy, CUDA or scipy missing, or a CPU without
native bfloat16 matrix products) or that would only repeat another row raises
`NotImplementedError` in ``setup``, which asv reports as skipped.
"""

import numpy as np

import matsign
from matsign import polynomials
from matsign.cli import timing  # the module: asv would take time_runs for a benchmark
from matsign.testing import matrix_with_singular_values

from . import LARGE_CPU, fast_bfloat16, pin_threads, require_device, sizes, wait

try:  # imported once here: asv's forkserver then shares it with every benchmark process
    import torch
except ImportError:
    torch = None

SHAPES = sizes(["256x256", "1024x1024", "1024x4096", "16x512x512", "4096x4096", "2048x8192"],
               ["128x128", "128x512", "4x128x128"])
GPU_SHAPES = {"4096x4096", "2048x8192"}  # minutes per row on a CPU; what fills a GPU
# TrackGemmFraction adds 2048^2; it and 4096^2 run on a CPU with MATSIGN_BENCH_LARGE_CPU=1
GEMM_SHAPES = sizes(["256x256", "1024x1024", "2048x2048", "1024x4096", "16x512x512",
                     "4096x4096", "2048x8192"], ["128x128"])
LARGE_CPU_SHAPES = {"2048x2048", "4096x4096"}
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
    if backend == "torch-bfloat16" and torch is not None and not fast_bfloat16():
        raise NotImplementedError("this CPU has no native bfloat16 matrix product")


def _msign_options(method):
    """Keyword arguments of `matsign.msign` for a method row: SVD or a preset's schedule."""
    if method == "svd":
        return {"method": "svd"}
    return {"method": "newton_schulz", "schedule": method}


def _warm_up():
    """Run each code path once, so that lazy imports are not timed in a first sample."""
    eyes = [np.eye(2, dtype=np.float32)] + ([] if torch is None else [torch.eye(2)])
    for eye in eyes:
        matsign.msign(eye, method="svd")
        matsign.msign(eye, method="newton_schulz", steps=1)


pin_threads()
_warm_up()
if torch is not None:
    fast_bfloat16()  # measured once here, in the process that asv forks the benchmarks from


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

    The GEMM ``(..., m, m) @ (..., m, n)``, the product that dominates a Newton–Schulz
    step, runs in the same backend, dtype and threads, timed just before each timed
    Newton–Schulz run; the figure is the median of those paired ratios
    (`matsign.cli.timing`, as in ``python -m matsign compare``). Flops follow
    `matsign.cli.timing.newton_schulz_flops` for the preset's default steps (Jordan's:
    5). The standard loop runs (``gram=False``): the Gram-space iteration that
    `matsign.msign` picks for wide matrices does fewer flops than the model counts.
    Values a little above 1 are real: NumPy forms ``X X^T`` by a symmetric product at
    half the flops of the GEMM the model charges for it. CPU rows at 2048^2 and 4096^2
    run only with ``MATSIGN_BENCH_LARGE_CPU=1`` (4096^2 is about 2 TFLOP a call).
    """

    params = (["jordan", "polar_express"], GEMM_SHAPES, BACKENDS)
    param_names = ("preset", "shape", "backend")
    timeout = 900
    repeats = 3
    unit = "fraction of GEMM rate"

    def setup(self, preset, shape, backend):
        _require_fast(backend)
        _check_gemm_shape(shape, backend)
        self.G = _on_backend(_gaussian(_shape(shape)), backend)
        self.gemm = timing.gemm_like(self.G)
        self.schedule = polynomials.preset(preset)

    def track_gemm_fraction(self, preset, shape, backend):
        def newton_schulz():
            return matsign.msign(self.G, method="newton_schulz", schedule=self.schedule,
                                 gram=False)

        times, gemm_times, _ = timing.time_runs(newton_schulz, repeats=self.repeats,
                                         paired=self.gemm.call)
        flops = timing.newton_schulz_flops(self.schedule, tuple(self.G.shape))
        return timing.gemm_fraction(flops, self.gemm, times, gemm_times)


def _check_gemm_shape(shape, backend):
    """Skip the large CPU rows unless asked for, and the GPU-only shapes on a CPU."""
    on_gpu = "cuda" in backend or backend.startswith("cupy")
    if shape in LARGE_CPU_SHAPES and not on_gpu:
        if not LARGE_CPU:
            raise NotImplementedError(f"{shape} on a CPU runs with MATSIGN_BENCH_LARGE_CPU=1")
        return
    _check_shape(shape, backend)
