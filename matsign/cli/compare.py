"""``python -m matsign compare``: time and accuracy of every msign method in one run.

Each row times one way of computing ``msign(G) = U V^T`` on the same input and reports
the spread of its wall times over interleaved rounds, the achieved fraction of the GEMM
rate (a GEMM is timed just before every run), the orthogonality error it reached beside
the one its schedule's band predicts, and the distance to the float64 SVD factor.

The default input has a controlled spectrum: singular values log-spaced so that
``sigma_min / ||G||_F`` is the ``lower = 1e-3`` the presets are designed for; ``--input``
takes a user's matrix from a ``.npy`` file instead, whose spectrum is what it is.

This module may import torch, cupy and scipy, lazily; ``import matsign`` never loads it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import textwrap
import time
from dataclasses import dataclass, field, replace

import numpy as np

from .. import __version__, _xp, polynomials
from ..polar import msign
from ..testing import matrix_with_singular_values
from . import UsageError
from .timing import (
    cpu_name,
    cpuinfo,
    gemm_fraction,
    gemm_like,
    limit_threads,
    median_ratio,
    newton_schulz_flops,
    time_interleaved,
)

__all__ = ["DESCRIPTION", "add_arguments", "compare", "run"]

BACKENDS = ("numpy", "torch", "cupy")
DTYPES = ("float32", "float64", "bfloat16")
DESIGN_LOWER = 1e-3  # the sigma_min / ||G||_F the presets are designed for
DEFAULT_SHAPE = (1024, 1024)
_HOST = ("numpy ", "scipy ")  # runs_on prefix of the reference rows computed on a NumPy copy

DESCRIPTION = """\
Time every way of computing msign(G) = U V^T on one matrix and report, per method: steps,
median, min and max time over interleaved rounds, the fraction of the GEMM rate it
achieves, the orthogonality error max|sigma_i(Q) - 1| its schedule's band predicts beside
the one measured, and the relative Frobenius distance to the exact factor from a float64
NumPy SVD of the same input.

Input: by default singular values log-spaced so that sigma_min/||G||_F = 1e-3 (--lower),
the range the Newton-Schulz presets are designed for, with Haar-random singular vectors.
A matrix of your own (--input G.npy) is used as it is: its sigma_min/||G||_F comes from a
float64 SVD and the predicted errors are the bands for that value. Below 1e-3 most
presets stop short of 1: the predicted column shows by how much.

Timing: every round runs each row once (after --warmup untimed rounds), so that load
from other processes spreads over all rows instead of distorting a few, and the ratios
matsign svd / reference are taken within a round. A GEMM (m x m) @ (m x n) of the same
backend and dtype is timed just before every run; "of GEMM" is the median over rounds of
the run's flop rate over that GEMM's. Flops count the plain iteration's products: on
m x n (m <= n), 4 m^2 n per step plus 2 m^3 per extra Horner product, so a kernel that
needs fewer (the Gram-space loop msign picks for wide or tall input, NumPy's syrk for
X X^T) shows an effective rate, and may pass 1.0 of GEMM. SVD rows have no flop count.

Progress, with an estimate of the time left, goes to stderr (with --json only when
stderr is a terminal); --quiet turns it off."""

EPILOG = """\
examples:
  python -m matsign compare                              # NumPy float32 1024x1024
  python -m matsign compare --shape 1024x4096 --threads 2
  python -m matsign compare --shape 16x512x512           # a batch of 16 matrices
  python -m matsign compare --lower 1e-5                 # below the presets' range
  python -m matsign compare --input G.npy                # your own matrix
  python -m matsign compare --backend torch --dtype bfloat16
  python -m matsign compare --methods svd,jordan,polar_express --repeats 9
  python -m matsign compare --json > compare.json        # rows, GEMM rate, machine"""


@dataclass(frozen=True)
class Setup:
    """What to compare on: backend, device, dtype and input shape."""

    backend: str
    xp: object
    device: object
    dtype: object
    dtype_name: str
    shape: tuple


@dataclass(frozen=True)
class Source:
    """Where the input comes from: a log-spaced spectrum, or a ``.npy`` file."""

    lower: float | None = DESIGN_LOWER  # sigma_min / ||G||_F of the generated input
    path: str | None = None
    seed: int = 0

    def load(self, shape):
        """The float64 input: the file's matrix, or the generated one of ``shape``."""
        if self.path is not None:
            return load_matrix(self.path)
        return log_spaced_matrix(shape, self.lower, seed=self.seed)


@dataclass(frozen=True)
class Method:
    """One row of the table: a zero-argument callable returning ``Q`` and its cost."""

    name: str
    call: object
    steps: int | None = None
    flops: float | None = None
    runs_on: str = ""
    schedule: polynomials.Schedule | None = None


@dataclass(frozen=True)
class Spectrum:
    """What the rows see of the input's singular values (smallest over a stack)."""

    sigma_min_ratio: float  # sigma_min / ||G||_F
    sigma_max_ratio: float  # sigma_max / ||G||_F
    condition_number: float  # sigma_max / sigma_min (inf when rank-deficient)


@dataclass
class Report:
    """Everything one run measured; `to_dict` is the ``--json`` output."""

    setup: Setup
    source: Source
    spectrum: Spectrum
    repeats: int
    warmup: int
    threads: int | None
    gemm: dict
    machine: dict
    rows: list = field(default_factory=list)
    input_dtype: str = ""  # the file's dtype, for --input

    def svd_time_ratios(self):
        """Median over rounds of matsign ``svd``'s time over each reference SVD row's."""
        times = {row["method"]: row["times"] for row in self.rows}
        references = [name for name, _ in _reference_factories(self.setup.backend)]
        if "svd" not in times:
            return {}
        return {name: median_ratio(times["svd"], times[name]) for name in references
                if name in times}

    def to_dict(self):
        """The report as plain JSON-ready Python objects."""
        return {
            "command": "compare",
            "matsign_version": __version__,
            "input": self._input_dict(),
            "timing": {"repeats": self.repeats, "warmup": self.warmup, "threads": self.threads,
                       "order": "interleaved"},
            "gemm": self.gemm,
            "rows": [_finite_or_none(row) for row in self.rows],
            "svd_time_ratio": self.svd_time_ratios(),
            "machine": self.machine,
        }

    def _input_dict(self):
        s, source = self.setup, self.source
        return {
            "backend": s.backend, "device": str(s.device), "dtype": s.dtype_name,
            "shape": list(s.shape),
            "source": "file" if source.path else "log-spaced",
            "path": source.path, "file_dtype": self.input_dtype or None,
            "seed": None if source.path else source.seed,
            "lower": None if source.path else source.lower,
            **_finite_or_none({
                "sigma_min_over_frobenius": self.spectrum.sigma_min_ratio,
                "sigma_max_over_frobenius": self.spectrum.sigma_max_ratio,
                "condition_number": self.spectrum.condition_number}),
        }


# --- Arguments ------------------------------------------------------------------------------


def add_arguments(parser):
    """Register the ``compare`` options on an `argparse.ArgumentParser`."""
    parser.add_argument("--shape", nargs="+", default=None, metavar="N",
                        help="matrix shape MxN or M N, or B...xMxN for a batch "
                             "(default: 1024x1024)")
    parser.add_argument("--lower", type=float, default=None,
                        help="sigma_min/||G||_F of the generated input (default: 1e-3, the "
                             "presets' design range)")
    parser.add_argument("--input", default=None, metavar="G.npy",
                        help="compare on this matrix (or stack) from numpy.save instead")
    parser.add_argument("--dtype", default="float32",
                        help=f"{', '.join(DTYPES)} (bfloat16: torch only; default: float32)")
    parser.add_argument("--backend", default="numpy",
                        help=f"{', '.join(BACKENDS)} (torch, cupy when installed; default: numpy)")
    parser.add_argument("--device", default=None,
                        help="torch device such as cpu or cuda:0 (default: cuda when available)")
    parser.add_argument("--methods", default=None, metavar="A,B,...",
                        help="comma-separated rows to run (default: all; see the list below)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed rounds; rows report median, min and max (default: 3)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed rounds before them (default: 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="pin BLAS (threadpoolctl) and torch threads to this many "
                             "(on a busy machine, 1 gives steadier times)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the generated input and of the GEMM operands")
    parser.add_argument("--json", action="store_true",
                        help="print machine-readable JSON on stdout instead of the table")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    rows = ", ".join(method_names("numpy")) + " (+ torch.linalg.svd with --backend torch)"
    parser.epilog = EPILOG + "\n\n" + textwrap.fill(f"rows: {rows}", width=88)


def run(args):
    """Run ``compare`` for parsed ``args``; return the exit status.

    Raises
    ------
    UsageError
        For a bad option value (unknown backend or dtype, a backend not installed, ...).
    """
    _check_counts(args)
    source = _source(args)
    shape = parse_shape(args.shape) if args.shape else DEFAULT_SHAPE
    setup = make_setup(args.backend, args.dtype, shape, device=args.device)
    chosen = _chosen_methods(args.methods, setup.backend)
    host = source.load(shape)  # before any progress: a bad file or --lower is a one-line error
    setup = replace(setup, shape=host.shape)
    progress = Progress(enabled=not args.quiet and (not args.json or sys.stderr.isatty()))
    with contextlib.closing(progress):
        report = compare(setup, host, methods=chosen, source=source, repeats=args.repeats,
                         warmup=args.warmup, threads=args.threads, progress=progress)
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return 0


def _check_counts(args):
    if args.repeats < 1 or args.warmup < 0 or (args.threads is not None and args.threads < 1):
        msg = "--repeats and --threads must be at least 1 and --warmup at least 0"
        raise UsageError(msg)
    if args.threads is not None and importlib.util.find_spec("threadpoolctl") is None:
        raise UsageError("--threads needs threadpoolctl (pip install threadpoolctl)")


def _source(args):
    """The `Source` the options name; ``--input`` excludes ``--shape`` and ``--lower``."""
    if args.input is not None:
        given = [name for name, value in (("--shape", args.shape), ("--lower", args.lower))
                 if value is not None]
        if given:
            msg = f"--input takes its shape and spectrum from the file; drop {' and '.join(given)}"
            raise UsageError(msg)
        return Source(lower=None, path=args.input, seed=args.seed)
    lower = DESIGN_LOWER if args.lower is None else args.lower
    return Source(lower=lower, seed=args.seed)


def parse_shape(tokens):
    """``["1024x4096"]``, ``["1024", "4096"]`` or ``["16", "512x512"]`` as a tuple of ints.

    Raises
    ------
    UsageError
        Unless the sizes are at least two positive integers.
    """
    text = "x".join(tokens).lower().replace("×", "x")
    try:
        shape = tuple(int(size) for size in text.split("x"))
    except ValueError:
        shape = ()
    if len(shape) < 2 or min(shape) < 1:
        msg = ("--shape needs at least two positive sizes, as MxN, M N or B...xMxN; "
               f"got {' '.join(tokens)!r}")
        raise UsageError(msg)
    return shape


def make_setup(backend, dtype_name, shape, *, device=None):
    """Resolve the backend namespace, device and dtype.

    Raises
    ------
    UsageError
        For an unknown or uninstalled backend, or a dtype the backend lacks.
    """
    if backend not in BACKENDS:
        msg = f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}"
        raise UsageError(msg)
    if importlib.util.find_spec(backend) is None:
        msg = f"backend {backend!r} is not installed (pip install {backend})"
        raise UsageError(msg)
    try:
        xp = _xp.backend_namespace(backend)
    except ImportError as exc:
        msg = f"backend {backend!r} cannot start: {exc}"
        raise UsageError(msg) from None
    dtype = getattr(xp, dtype_name, None) if dtype_name in DTYPES else None
    if dtype is None:
        msg = f"dtype {dtype_name!r} is not available on {backend}; choose one of " + ", ".join(
            d for d in DTYPES if hasattr(xp, d))
        raise UsageError(msg)
    return Setup(backend, xp, _device(backend, device), dtype, dtype_name, tuple(shape))


def _device(backend, requested):
    """The device to run on: ``requested`` (torch only), else the backend's default."""
    if requested is not None and backend != "torch":
        raise UsageError(f"--device is for --backend torch; got --backend {backend}")
    if backend == "numpy":
        return "cpu"
    if backend == "cupy":
        import cupy

        return cupy.cuda.Device()
    import torch

    try:
        return torch.device(requested or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as exc:
        raise UsageError(f"bad --device {requested!r}: {exc}") from None


# --- Methods --------------------------------------------------------------------------------


def method_names(backend):
    """Row names available for ``backend`` here, in table order."""
    return [name for name, _ in _method_factories(backend)]


def _chosen_methods(spec, backend):
    known = method_names(backend)
    if spec is None:
        return known
    chosen = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in known]
    if unknown or not chosen:
        msg = f"unknown method(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(known)}"
        raise UsageError(msg)
    return [name for name in known if name in chosen]


def _method_factories(backend):
    """``(name, factory)`` pairs in table order; ``factory(setup, G, host)`` builds the `Method`."""
    factories = [("svd", _matsign_svd)]
    factories += [(name, _newton_schulz_factory(name)) for name in polynomials.names()]
    return factories + _reference_factories(backend)


def _reference_factories(backend):
    """The exact ``U V^T`` of other libraries that matsign's ``svd`` is timed against."""
    references = [("numpy.linalg.svd", _numpy_svd)]
    if importlib.util.find_spec("scipy") is not None:
        references.append(("scipy.linalg.polar", _scipy_polar))
    if backend != "numpy":
        references.append((f"{backend}.linalg.svd", _backend_svd))
    return references


def _matsign_svd(setup, G, host):
    return Method("svd", lambda: msign(G, method="svd"), runs_on=_label(setup))


def _newton_schulz_factory(name):
    def factory(setup, G, host):
        schedule = polynomials.preset(name)
        flops = newton_schulz_flops(schedule, G.shape)

        def call():
            return msign(G, method="newton_schulz", schedule=name)

        return Method(name, call, schedule.default_steps, flops, _label(setup), schedule)

    return factory


def _numpy_svd(setup, G, host):
    def call():
        U, _, Vh = np.linalg.svd(host, full_matrices=False)
        return U @ Vh

    return Method("numpy.linalg.svd", call, runs_on=f"numpy {host.dtype}")


def _scipy_polar(setup, G, host):
    import scipy.linalg

    def call():
        flat = host.reshape((-1, *host.shape[-2:]))
        return np.stack([scipy.linalg.polar(a)[0] for a in flat]).reshape(host.shape)

    return Method("scipy.linalg.polar", call, runs_on=f"scipy {host.dtype}")


def _backend_svd(setup, G, host):
    xp = setup.xp
    work = _xp.decomposition_dtype(G.dtype, xp)  # half precisions have no SVD

    def call():
        U, _, Vh = xp.linalg.svd(xp.astype(G, work), full_matrices=False)
        return xp.astype(U @ Vh, G.dtype)

    return Method(f"{setup.backend}.linalg.svd", call, runs_on=_label(setup))


def _label(setup):
    return f"{setup.backend} {setup.dtype_name} on {setup.device}"


# --- Input ----------------------------------------------------------------------------------


def log_spaced_spectrum(k, lower):
    """``k`` singular values log-spaced down from 1, the smallest ``lower`` times their 2-norm.

    That ratio is ``sigma_min / ||G||_F`` of a matrix with these singular values: the
    ``lower`` a Newton–Schulz schedule sees after Frobenius normalisation. Equal values
    give the largest possible ratio, ``1 / sqrt(k)``.

    Raises
    ------
    UsageError
        Unless ``0 < lower <= 1 / sqrt(k)``.
    """
    if not 0 < lower <= 1 / math.sqrt(k):
        msg = (f"--lower must be in (0, 1/sqrt(min(m, n))] = (0, {1 / math.sqrt(k):.3g}] for "
               f"{k} singular values; got {lower}")
        raise UsageError(msg)

    def ratio(log_condition):
        s = np.geomspace(1.0, math.exp(-log_condition), k)
        return s[-1] / np.linalg.norm(s)

    lo, hi = 0.0, math.log(1 / lower)  # ratio(hi) <= lower since ||s|| >= 1
    for _ in range(100):  # ratio decreases with the condition number: bisect its log
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ratio(mid) > lower else (lo, mid)
    return np.geomspace(1.0, math.exp(-hi), k)


def log_spaced_matrix(shape, lower, *, seed):
    """A float64 stack of ``shape`` with singular values `log_spaced_spectrum` each.

    The singular vectors are Haar-random (`matsign.testing.matrix_with_singular_values`),
    drawn per matrix from ``numpy.random.default_rng(seed)``.
    """
    *batch, m, n = shape
    s = log_spaced_spectrum(min(m, n), lower)
    rng = np.random.default_rng(seed)
    flat = [matrix_with_singular_values(s, m, n, rng=rng) for _ in range(math.prod(batch))]
    return np.stack(flat).reshape(shape)


def load_matrix(path):
    """The real, finite matrix (or stack) that ``numpy.save`` wrote to ``path``, as float64.

    Raises
    ------
    UsageError
        If the file cannot be read or does not hold a real finite array of 2+ dimensions.
    """
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read --input {path}: {exc}") from None
    if not isinstance(a, np.ndarray) or a.ndim < 2 or 0 in a.shape:
        what = "several arrays (.npz)" if not isinstance(a, np.ndarray) else f"shape {a.shape}"
        msg = f"--input {path} must hold one non-empty array (..., m, n); it has {what}"
        raise UsageError(msg)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise UsageError(f"--input {path} must be real (float or integer); it is {a.dtype}")
    if not np.isfinite(a).all():
        raise UsageError(f"--input {path} holds inf or NaN: there is no U V^T to compare with")
    return a


def to_backend(setup, a):
    """``a`` on the backend in ``setup``'s dtype, and a NumPy copy of what the backend holds.

    The copy has the backend's dtype, or float32 for half precisions NumPy lacks.
    """
    G = setup.xp.asarray(np.asarray(a, dtype=np.float64), device=setup.device)
    G = setup.xp.astype(G, setup.dtype)
    return G, _xp.to_numpy(G)


def exact_factor(host):
    """Float64 ``U V^T`` of ``host`` and its `Spectrum` (the worst matrix of a stack)."""
    U, s, Vh = np.linalg.svd(host.astype(np.float64), full_matrices=False)
    frobenius = np.sqrt(np.sum(s * s, axis=-1))
    with np.errstate(divide="ignore", invalid="ignore"):  # the zero matrix gives NaN
        ratios = (s[..., -1] / frobenius, s[..., 0] / frobenius, s[..., 0] / s[..., -1])
    smallest, largest, condition = (float(f(r)) for f, r in zip((np.min, np.max, np.max), ratios,
                                                                 strict=True))
    return U @ Vh, Spectrum(smallest, largest, condition)


# --- Measuring ------------------------------------------------------------------------------


def compare(setup, host, *, methods, source=None, repeats=3, warmup=1, threads=None,
            progress=None):
    """Time and check each of ``methods`` on ``host`` in interleaved rounds; return a `Report`.

    Parameters
    ----------
    setup : Setup
        Backend, device, dtype and shape (see `make_setup`).
    host : numpy.ndarray
        The input (`log_spaced_matrix` or `load_matrix`), moved to the backend here.
    methods : list of str
        Row names, from `method_names`.
    source : Source, optional
        Where ``host`` came from, for the report (default: the log-spaced input).
    repeats, warmup : int
        Timed and untimed rounds; every round runs each row once.
    threads : int, optional
        Pin BLAS and torch to this many threads (`matsign.cli.timing.limit_threads`) once
        every library the rows call is loaded (a BLAS loaded later would not be pinned).
    progress : Progress, optional
        Told before each run, so that it can show the row and the time left.

    Returns
    -------
    Report
    """
    source = Source() if source is None else source
    progress = Progress(enabled=False) if progress is None else progress
    progress.note(f"float64 SVD of the {'x'.join(map(str, host.shape))} input, for U V^T")
    file_dtype = str(host.dtype) if source.path else ""
    G, host = to_backend(setup, host)
    exact, spectrum = exact_factor(host)
    gemm = gemm_like(G, seed=source.seed + 1)
    factories = dict(_method_factories(setup.backend))
    rows = [factories[name](setup, G, host) for name in _run_order(methods)]
    if importlib.util.find_spec("scipy") is not None:
        import scipy.linalg  # noqa: F401  (matsign's svd calls it on NumPy float32: load, then pin)
    with limit_threads(threads):
        times, gemm_times, checks = _time_rows(rows, gemm, exact, repeats, warmup, progress)
        machine = machine_info(setup)  # inside the limits, so that they show
    report = Report(setup, source, spectrum, repeats, warmup, threads,
                    _gemm_entry(gemm, [t for ts in gemm_times for t in ts]), machine,
                    input_dtype=file_dtype)
    by_name = {row.name: i for i, row in enumerate(rows)}
    for name in methods:
        i = by_name[name]
        report.rows.append(_row(rows[i], times[i], gemm_times[i], gemm, checks[i], spectrum))
    return report


def _time_rows(rows, gemm, exact, repeats, warmup, progress):
    """Times and paired GEMM times per row in interleaved rounds; accuracy of first results."""
    checks = {}
    progress.start([row.name for row in rows], rounds=warmup + repeats, warmup=warmup)
    times, gemm_times = time_interleaved(
        [row.call for row in rows], repeats=repeats, warmup=warmup, paired=[gemm.call] * len(rows),
        on_first=lambda i, Q: checks.setdefault(i, _accuracy(Q, exact)), before=progress.step)
    return times, gemm_times, checks


def _run_order(methods):
    """The SVD rows first, one after another, so that their same-round ratios are close."""
    presets = set(polynomials.names())
    return [name for name in methods if name not in presets] + [
        name for name in methods if name in presets]


def _accuracy(Q, exact):
    """Orthogonality error and distance to ``exact`` of one result, in float64 on the host."""
    Q = _xp.to_numpy(Q).astype(np.float64)
    return {"orthogonality_error": orthogonality_error64(Q),
            "distance_to_svd": relative_distance(Q, exact)}


def orthogonality_error64(Q):
    """``max |sigma_i(Q) - 1|`` over a NumPy stack, from float64 eigenvalues of ``Q Q^T``.

    An oracle independent of the library, and 3 to 10x cheaper than the SVD: the
    eigenvalues ``sigma_i^2`` of the small Gram matrix are exact to ``m eps_64``, far
    below any float32 or bfloat16 error. NaN when ``Q`` is not finite.
    """
    if not np.isfinite(Q).all():
        return math.nan
    if Q.shape[-2] > Q.shape[-1]:
        Q = np.swapaxes(Q, -1, -2)
    sigma = np.sqrt(np.clip(np.linalg.eigvalsh(Q @ np.swapaxes(Q, -1, -2)), 0.0, None))
    return float(np.max(np.abs(sigma - 1.0)))


def relative_distance(Q, exact):
    """Largest ``||Q - exact||_F / ||exact||_F`` over the stack, in float64."""
    diff = np.linalg.norm(Q.astype(np.float64) - exact, axis=(-2, -1))
    return float(np.max(diff / np.linalg.norm(exact, axis=(-2, -1))))


def _row(method, times, gemm_times, gemm, accuracy, spectrum):
    """One row of the table and of the ``--json`` output."""
    band = predicted_band(method.schedule, spectrum.sigma_min_ratio)
    return {
        "method": method.name,
        "steps": method.steps,
        **_spread(times),
        "times": times,
        **_rates(method.flops, gemm, times, gemm_times),
        "predicted_band": None if band is None else list(band),
        "predicted_error": None if band is None else max(1.0 - band[0], band[1] - 1.0),
        **accuracy,
        "runs_on": method.runs_on,
    }


def predicted_band(schedule, sigma_min_ratio):
    """`matsign.polynomials.band` of ``schedule`` for the input, or None.

    None for rows without a schedule and for inputs with no positive ``sigma_min``. The
    schedule divides by ``normalizer * ||G||_F``, so it sees ``lower = ratio / normalizer``.
    """
    if schedule is None or not sigma_min_ratio > 0:
        return None
    return polynomials.band(schedule, sigma_min_ratio / schedule.normalizer)


def _spread(times):
    """``time_min``, ``time_median``, ``time_max`` in seconds."""
    return {"time_min": min(times), "time_median": statistics.median(times),
            "time_max": max(times)}


def _gemm_entry(gemm, times):
    """The JSON ``gemm`` entry: every paired GEMM run of the whole table."""
    return {"shape": list(gemm.shape), "runs": len(times), **_spread(times),
            "gflops": gemm.flops / statistics.median(times) / 1e9}


def _rates(flops, gemm, times, gemm_times):
    """GFLOP/s, the paired GEMM's GFLOP/s, and the median over rounds of their ratio."""
    gemm_gflops = gemm.flops / statistics.median(gemm_times) / 1e9
    if flops is None:
        return {"gflops": None, "gemm_gflops": gemm_gflops, "gemm_fraction": None}
    return {"gflops": flops / statistics.median(times) / 1e9, "gemm_gflops": gemm_gflops,
            "gemm_fraction": gemm_fraction(flops, gemm, times, gemm_times)}


def _finite_or_none(row):
    """JSON has no NaN or inf: non-finite numbers become null."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def machine_info(setup):
    """Host, library versions and thread pools, for the ``--json`` output."""
    info = {
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_flags": _cpu_flags(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        setup.backend: _version(setup.backend),
        "scipy": _version("scipy"),
    }
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_info

        info["blas"] = [{k: p.get(k) for k in ("internal_api", "version", "num_threads")}
                        for p in threadpool_info()]
    if setup.backend == "torch":
        info["torch_threads"] = sys.modules["torch"].get_num_threads()
    return info


def _version(module):
    if importlib.util.find_spec(module) is None:
        return None
    return getattr(__import__(module), "__version__", None)


def _cpu_flags():
    """The instruction sets that decide GEMM speed (bfloat16 needs AMX or AVX-512 BF16)."""
    flags = set(cpuinfo("flags").split())
    return sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma"})


# --- Output ---------------------------------------------------------------------------------


class Progress:
    """Progress on stderr with the time left.

    `note` shows a message; `start` announces the rows and rounds; `step` (the ``before``
    hook of `matsign.cli.timing.time_interleaved`) is called before each run, and
    estimates the time left from each row's last timed run (the mean of those seen, for
    rows not run yet). Warm-up runs do not count: they hold each row's first call and
    its accuracy check (a float64 SVD), often many times a timed run. On a terminal one
    line is rewritten before every run; elsewhere (a log file, a pipe) a line is written
    as each row of the first round starts, and once per later round.
    """

    def __init__(self, *, enabled=True, stream=None, clock=time.perf_counter):
        self.stream = sys.stderr if stream is None else stream
        self.enabled, self.clock = enabled, clock
        self.tty = enabled and self.stream.isatty()
        self.width = 0
        self.names, self.rounds, self.warmup = [], 0, 0
        self.seconds, self.current, self.started, self.since = {}, None, None, None

    def note(self, message):
        """Show ``message``."""
        self._show(message + "...")

    def start(self, names, *, rounds, warmup):
        """Timing begins: ``rounds`` rounds (``warmup`` untimed) over the rows ``names``."""
        self.names, self.rounds, self.warmup = list(names), rounds, warmup
        self.started = self.clock()

    def step(self, round_, i):
        """Row ``i`` of round ``round_`` (from 0) is about to run."""
        now = self.clock()
        if (round_, i) > (self.warmup, 0):  # the run that just ended was a timed one
            self.seconds[self.current] = now - self.since
        self.current, self.since = i, now
        if self.tty or round_ == 0 or i == 0:
            self._show(self._line(round_, i, now))

    def close(self):
        """Say how long timing took (clearing the line on a terminal)."""
        if self.started is not None and self.enabled:
            runs = _count(len(self.names) * self.rounds, "run")
            shape = f"{_count(len(self.names), 'row')} x {_count(self.rounds, 'round')}"
            self._show(f"compare: {runs} ({shape}) in {_duration(self.clock() - self.started)}")
            if self.tty:
                self.stream.write("\n")

    def _line(self, round_, i, now):
        if round_ < self.warmup:
            kind = f"warm-up {round_ + 1}/{self.warmup}"
        else:
            kind = f"round {round_ - self.warmup + 1}/{self.rounds - self.warmup}"
        left = self._left(round_, i)
        if round_ < self.warmup:
            eta = "the time left is estimated after the warm-up"
        elif left is None:
            eta = "estimating the time left"
        else:
            eta = f"about {_duration(left)} left"
        return (f"{kind}: {self.names[i]} ({i + 1}/{len(self.names)}), "
                f"{_duration(now - self.started)} so far, {eta}")

    def _left(self, round_, i):
        """Seconds left from the start of run ``i`` of ``round_``; None before any estimate."""
        if not self.seconds:
            return None
        guess = statistics.mean(self.seconds.values())
        cost = [self.seconds.get(j, guess) for j in range(len(self.names))]
        return sum(cost[i:]) + (self.rounds - round_ - 1) * sum(cost)

    def _show(self, message):
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r" + message.ljust(self.width))
            self.width = len(message)
        else:
            self.stream.write(message + "\n")
        self.stream.flush()


def _duration(seconds):
    """``"0.4 s"``, ``"12 s"`` or ``"2 min 05 s"``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


COLUMNS = (  # header, row key, width, number format ("ms": seconds shown in ms; None: text)
    ("method", "method", 6, None),
    ("steps", "steps", 5, "d"),
    ("median", "time_median", 8, "ms"),
    ("min", "time_min", 7, "ms"),
    ("max", "time_max", 7, "ms"),
    ("GEMM", "gemm_fraction", 7, ".2f"),
    ("predicted", "predicted_error", 9, ".1e"),
    ("measured", "orthogonality_error", 9, ".1e"),
    ("to SVD", "distance_to_svd", 9, ".1e"),
)
GROUPS = (  # a title over the column titles: text, first and last column spanned
    ("time (ms)", "time_median", "time_max"),
    ("of", "gemm_fraction", "gemm_fraction"),
    ("orthogonality error", "predicted_error", "orthogonality_error"),
    ("distance", "distance_to_svd", "distance_to_svd"),
)
WIDTH = 96  # of the header and footer text


def format_report(report):
    """The human-readable table, with header lines and the footer's ratios and legend."""
    columns = [(title, key, _width(report, key, w, spec), spec) for title, key, w, spec in COLUMNS]
    titles = [f"{title:<{w}}" if spec is None else f"{title:>{w}}" for title, _, w, spec in columns]
    lines = [*_header(report), "", _group_line(columns), "  ".join(titles)]
    for row in report.rows:
        lines.append("  ".join(_cell(row[key], width, spec) for _, key, width, spec in columns))
    return "\n".join(line.rstrip() for line in lines + _footer(report))


def _width(report, key, width, spec):
    """A text column widens to its longest entry; number columns keep ``width``."""
    return max([width] + [len(str(row[key])) for row in report.rows]) if spec is None else width


def _group_line(columns):
    """`GROUPS` titles: centred over the columns they span, right-aligned over one."""
    spans, x = {}, 0
    for _, key, width, _ in columns:
        spans[key] = (x, x + width)
        x += width + 2
    line = [" "] * x
    for text, first, last in GROUPS:
        start, end = spans[first][0], spans[last][1]
        at = end - len(text) if first == last else start + (end - start - len(text)) // 2
        line[at:at + len(text)] = text
    return "".join(line)


def _cell(value, width, spec):
    """``value`` formatted by ``spec`` and right-aligned; None is "-"; text without spec left."""
    if spec is None:
        return f"{value:<{width}}"
    if value is None:
        text = "-"
    elif spec == "ms":
        text = _milliseconds(value)
    else:
        text = format(value, spec)
    return f"{text:>{width}}"


def _milliseconds(seconds):
    """Seconds as milliseconds with three or more significant digits."""
    ms = 1e3 * seconds
    return f"{ms:.{0 if ms >= 100 else 1 if ms >= 10 else 2 if ms >= 1 else 3}f}"


def _header(report):
    s, g = report.setup, report.gemm
    threads = "threads not pinned" if report.threads is None else f"threads: {report.threads}"
    *batch, m, _, n = g["shape"]
    gemm = "x".join(str(d) for d in batch) + ("x" if batch else "") + f"({m}x{m})@({m}x{n})"
    return [
        f"matsign {__version__} compare: {s.backend} {s.dtype_name} "
        f"{'x'.join(str(d) for d in s.shape)} on {s.device}, {threads}",
        *_input_lines(report),
        *_wrap(f"timing: {_count(report.repeats, 'round')} after "
               f"{_count(report.warmup, 'round')} of warm-up; a round runs every row once, each "
               f"run just after a GEMM {gemm} (median "
               f"{_milliseconds(g['time_median'])} ms, {g['gflops']:.1f} GFLOP/s)"),
    ]


def _count(count, noun):
    """``"1 round"``, ``"3 rounds"``."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _input_lines(report):
    """What the input is and where its sigma_min / ||G||_F sits against the presets' range."""
    spectrum, source = report.spectrum, report.source
    ratio = spectrum.sigma_min_ratio
    if source.path is None:
        text = (f"input: singular values log-spaced from sigma_max down to sigma_max / "
                f"{spectrum.condition_number:.3g}, Haar-random singular vectors (seed "
                f"{source.seed}): sigma_min/||G||_F = {ratio:.2e}")
    else:
        shape = "x".join(str(d) for d in report.setup.shape)
        text = (f"input: {source.path} ({shape} {report.input_dtype}, as "
                f"{report.setup.dtype_name}): sigma_min/||G||_F = {ratio:.2e} by a float64 SVD, "
                f"condition number {spectrum.condition_number:.3g}")
    if not ratio > 0:
        text += ("; rank-deficient (sigma_min = 0), so no band is predicted: Newton-Schulz "
                 "keeps the null directions at 0, an orthogonality error of 1")
    elif ratio < DESIGN_LOWER * (1 - 1e-6):
        text += (", below the 1e-3 the presets are designed for: the schedules that stop at "
                 "a fixed step count leave larger errors, as predicted")
    else:
        text += ", inside the range the presets are designed for"
    return _wrap(text)


def _footer(report):
    lines = [""]
    ratios = report.svd_time_ratios()
    if ratios:
        parts = ", ".join(f"{ratio:.3g}x {name}" for name, ratio in ratios.items())
        lines += _wrap(f"matsign svd takes {parts} (median over rounds of same-round ratios)")
    if any(row["predicted_error"] is not None for row in report.rows):
        lines += _wrap("predicted: the error the schedule's band guarantees for this "
                       "sigma_min/||G||_F in exact arithmetic (matsign.polynomials.band); "
                       f"measured: max|sigma_i(Q) - 1| of the {report.setup.dtype_name} result, "
                       "which adds rounding")
    pools = report.machine.get("blas", [])
    threads = sum(pool.get("num_threads") or 0 for pool in pools)
    if report.threads is None and len(pools) > 1 and threads > (report.machine["cpu_count"] or 1):
        apis = ", ".join(str(pool.get("internal_api")) for pool in pools)
        lines += _wrap(f"{len(pools)} thread pools are loaded ({apis}), {threads} threads in all "
                       f"on {report.machine['cpu_count']} cores: while other work shares the "
                       "cores, --threads 1 (or 2, ...) gives steadier times")
    if report.setup.backend != "numpy":
        hosts = {row["runs_on"] for row in report.rows if row["runs_on"].startswith(_HOST)}
        if hosts:
            lines.append(f"numpy/scipy rows run on a host copy ({', '.join(sorted(hosts))})")
    return lines if len(lines) > 1 else []


def _wrap(text):
    return textwrap.wrap(text, width=WIDTH, subsequent_indent="  ")
