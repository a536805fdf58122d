"""``python -m matsign compare``: time and accuracy of every msign method in one run.

Each row times one way of computing ``msign(G) = U V^T`` on the same Gaussian input
(NumPy float64 with a fixed seed, moved to the chosen backend and dtype) and reports
the median wall time, the achieved GFLOP/s against the GEMM rate measured in the same
run, the orthogonality error and the distance to the float64 SVD factor.

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
from dataclasses import dataclass, field

import numpy as np

from .. import __version__, _xp, polynomials
from ..polar import msign, orthogonality_error
from . import UsageError
from .timing import gemm_fraction, gemm_like, limit_threads, newton_schulz_flops, time_runs

__all__ = ["DESCRIPTION", "add_arguments", "compare", "run"]

BACKENDS = ("numpy", "torch", "cupy")
DTYPES = ("float32", "float64", "bfloat16")
_HOST = ("numpy ", "scipy ")  # runs_on prefix of the reference rows computed on a NumPy copy

DESCRIPTION = """\
Time every way of computing msign(G) = U V^T on one Gaussian matrix and report, per
method: steps, median time, achieved GFLOP/s and its fraction of the GEMM rate measured
in the same run, orthogonality error max|sigma_i(Q) - 1|, and the relative Frobenius
distance to the exact factor from a float64 NumPy SVD of the same input.

The GEMM is (m x m) @ (m x n) in the same backend and dtype. It is timed once at the
start (the header) and again just before each timed Newton-Schulz run; "of GEMM" is
the median of those paired ratios, so load from other processes affects both alike.

Rows: matsign's exact "svd", one Newton-Schulz row per preset schedule (its default
steps), and references: numpy.linalg.svd and scipy.linalg.polar (on a NumPy copy),
plus the backend's own SVD (torch.linalg.svd, cupy.linalg.svd). GFLOP/s counts the
plain iteration's products: on m x n (m <= n), 4 m^2 n per step plus 2 m^3 per extra
Horner product (4 m^2 n + 2 m^3 for a quintic), so a kernel that needs fewer flops
(the Gram-space loop msign picks for wide or tall input, NumPy's syrk for X X^T) shows
an effective rate, and may pass 1.0 of GEMM. SVD rows have no flop count."""

EPILOG = """\
examples:
  python -m matsign compare                                 # NumPy float32 1024x1024
  python -m matsign compare --shape 1024 4096 --threads 2
  python -m matsign compare --shape 16 512 512              # a batch of 16 matrices
  python -m matsign compare --backend torch --dtype bfloat16
  python -m matsign compare --methods svd,jordan,polar_express --repeats 9
  python -m matsign compare --json > compare.json           # rows, GEMM rate, machine"""


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
class Method:
    """One row of the table: a zero-argument callable returning ``Q`` and its cost."""

    name: str
    call: object
    steps: int | None = None
    flops: float | None = None
    runs_on: str = ""


@dataclass
class Report:
    """Everything one run measured; `to_dict` is the ``--json`` output."""

    setup: Setup
    seed: int
    repeats: int
    warmup: int
    threads: int | None
    sigma_min_ratio: float
    gemm: dict
    machine: dict
    rows: list = field(default_factory=list)

    def svd_time_ratios(self):
        """Median time of matsign's ``svd`` row over each reference SVD row's."""
        times = {row["method"]: row["median_ms"] for row in self.rows}
        references = [name for name, _ in _reference_factories(self.setup.backend)]
        if "svd" not in times:
            return {}
        return {name: times["svd"] / times[name] for name in references if name in times}

    def to_dict(self):
        """The report as plain JSON-ready Python objects."""
        return {
            "command": "compare",
            "matsign_version": __version__,
            "input": {
                "backend": self.setup.backend,
                "device": str(self.setup.device),
                "dtype": self.setup.dtype_name,
                "shape": list(self.setup.shape),
                "seed": self.seed,
                "sigma_min_over_frobenius": self.sigma_min_ratio,
            },
            "timing": {"repeats": self.repeats, "warmup": self.warmup, "threads": self.threads},
            "gemm": self.gemm,
            "rows": [_finite_or_none(row) for row in self.rows],
            "svd_time_ratio": self.svd_time_ratios(),
            "machine": self.machine,
        }


# --- Arguments ------------------------------------------------------------------------------


def add_arguments(parser):
    """Register the ``compare`` options on an `argparse.ArgumentParser`."""
    parser.add_argument("--shape", type=int, nargs="+", default=[1024, 1024], metavar="N",
                        help="matrix shape M N, or B... M N for a batch (default: 1024 1024)")
    parser.add_argument("--dtype", default="float32",
                        help=f"{', '.join(DTYPES)} (bfloat16: torch only; default: float32)")
    parser.add_argument("--backend", default="numpy",
                        help=f"{', '.join(BACKENDS)} (torch, cupy when installed; default: numpy)")
    parser.add_argument("--device", default=None,
                        help="torch device such as cpu or cuda:0 (default: cuda when available)")
    parser.add_argument("--methods", default=None, metavar="A,B,...",
                        help="comma-separated rows to run (default: all; see the list below)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed runs per row; the median is reported (default: 5)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed runs before timing each row (default: 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="pin BLAS (threadpoolctl) and torch threads to this many")
    parser.add_argument("--seed", type=int, default=0, help="seed of the Gaussian input")
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
    setup = make_setup(args.backend, args.dtype, args.shape, device=args.device)
    chosen = _chosen_methods(args.methods, setup.backend)
    progress = Progress(enabled=not (args.quiet or args.json))
    with limit_threads(args.threads), contextlib.closing(progress):
        report = compare(setup, methods=chosen, repeats=args.repeats, warmup=args.warmup,
                         seed=args.seed, threads=args.threads, progress=progress)
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return 0


def _check_counts(args):
    if len(args.shape) < 2 or min(args.shape) < 1:
        msg = f"--shape needs at least two positive sizes (M N or B... M N); got {args.shape}"
        raise UsageError(msg)
    if args.repeats < 1 or args.warmup < 0 or (args.threads is not None and args.threads < 1):
        msg = "--repeats and --threads must be at least 1 and --warmup at least 0"
        raise UsageError(msg)
    if args.threads is not None and importlib.util.find_spec("threadpoolctl") is None:
        raise UsageError("--threads needs threadpoolctl (pip install threadpoolctl)")


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
    """``(name, factory)`` pairs; ``factory(setup, G, host)`` builds the `Method`."""
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

        return Method(name, call, schedule.default_steps, flops, _label(setup))

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


# --- Measuring ------------------------------------------------------------------------------


def compare(setup, *, methods, repeats=5, warmup=1, seed=0, threads=None, progress=None):
    """Time and check each of ``methods`` on a Gaussian input; return a `Report`.

    Parameters
    ----------
    setup : Setup
        Backend, device, dtype and shape (see `make_setup`).
    methods : list of str
        Row names, from `method_names`.
    repeats, warmup : int
        Timed and untimed runs per row; rows report the median.
    seed : int
        Seed of the input.
    threads : int, optional
        Thread count to record (pinning is `matsign.cli.timing.limit_threads`'s job).
    progress : callable, optional
        Called with a short message before each measurement.

    Returns
    -------
    Report
    """
    progress = progress or (lambda message: None)
    G, host = make_input(setup, seed)
    exact, sigma_min_ratio = exact_factor(host)
    factories = dict(_method_factories(setup.backend))
    progress(f"timing GEMM (0/{len(methods)})...")
    gemm = gemm_like(G, seed=seed + 1)
    gemm_rate = measure_gemm(gemm, repeats=repeats, warmup=warmup)
    machine = machine_info(setup)  # inside the caller's thread limits, so they show
    report = Report(setup, seed, repeats, warmup, threads, sigma_min_ratio, gemm_rate, machine)
    for i, name in enumerate(methods, start=1):
        progress(f"timing {name} ({i}/{len(methods)})...")
        method = factories[name](setup, G, host)
        report.rows.append(measure(method, exact, gemm, repeats, warmup))
    return report


def make_input(setup, seed):
    """The Gaussian input on the backend, and a NumPy copy of what the backend holds.

    The copy has the backend's dtype, or float32 for half precisions NumPy lacks.
    """
    a = np.random.default_rng(seed).standard_normal(setup.shape)
    G = setup.xp.astype(setup.xp.asarray(a, device=setup.device), setup.dtype)
    return G, _xp.to_numpy(G)


def exact_factor(host):
    """Float64 ``U V^T`` of ``host`` and the smallest ``sigma_min / ||G||_F`` of the stack."""
    a = host.astype(np.float64)
    U, s, Vh = np.linalg.svd(a, full_matrices=False)
    frobenius = np.sqrt(np.sum(s * s, axis=-1))
    return U @ Vh, float(np.min(s[..., -1] / frobenius))


def measure_gemm(gemm, *, repeats, warmup):
    """Median time and GFLOP/s of ``gemm``, as the JSON ``gemm`` entry."""
    times, _, _ = time_runs(gemm.call, repeats=repeats, warmup=warmup)
    seconds = statistics.median(times)
    return {"shape": list(gemm.shape), "median_ms": 1e3 * seconds,
            "gflops": gemm.flops / seconds / 1e9}


def measure(method, exact, gemm, repeats, warmup):
    """One row: time ``method`` and compare its result with the exact factor."""
    paired = None if method.flops is None else gemm.call
    times, gemm_times, Q = time_runs(method.call, repeats=repeats, warmup=warmup, paired=paired)
    return {
        "method": method.name,
        "steps": method.steps,
        "median_ms": 1e3 * statistics.median(times),
        **_rates(method.flops, gemm, times, gemm_times),
        "orthogonality_error": float(np.max(_xp.to_numpy(orthogonality_error(Q)))),
        "distance_to_svd": relative_distance(_xp.to_numpy(Q), exact),
        "runs_on": method.runs_on,
    }


def _rates(flops, gemm, times, gemm_times):
    """GFLOP/s, the paired GEMM's GFLOP/s, and the median over repeats of their ratio."""
    if flops is None:
        return {"gflops": None, "gemm_gflops": None, "gemm_fraction": None}
    return {
        "gflops": flops / statistics.median(times) / 1e9,
        "gemm_gflops": gemm.flops / statistics.median(gemm_times) / 1e9,
        "gemm_fraction": gemm_fraction(flops, gemm, times, gemm_times),
    }


def relative_distance(Q, exact):
    """Largest ``||Q - exact||_F / ||exact||_F`` over the stack, in float64."""
    diff = np.linalg.norm(Q.astype(np.float64) - exact, axis=(-2, -1))
    return float(np.max(diff / np.linalg.norm(exact, axis=(-2, -1))))


def _finite_or_none(row):
    """JSON has no NaN or inf: non-finite numbers become null."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def machine_info(setup):
    """Host, library versions and thread pools, for the ``--json`` output."""
    info = {
        "platform": platform.platform(),
        "cpu": _cpu_name(),
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


def _cpu_name():
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def _cpu_flags():
    """The instruction sets that decide GEMM speed (bfloat16 needs AMX or AVX-512 BF16)."""
    flags = set(_cpuinfo("flags").split())
    return sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma"})


def _cpuinfo(key):
    """The first ``key : value`` of /proc/cpuinfo, or "" where there is none."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.split(":", 1)[0].strip() == key:
                return line.split(":", 1)[1].strip()
    return ""


# --- Output ---------------------------------------------------------------------------------


class Progress:
    """One-line progress on stderr: rewritten in place on a terminal, a line each otherwise."""

    def __init__(self, *, enabled=True, stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self.width = 0

    def __call__(self, message):
        """Show ``message``."""
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r" + message.ljust(self.width))
            self.width = len(message)
        else:
            self.stream.write(message + "\n")
        self.stream.flush()

    def close(self):
        """Clear the line on a terminal."""
        if self.enabled and self.tty:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()


COLUMNS = (  # header, row key, width, number format (None: left-aligned text)
    ("method", "method", 20, None),
    ("steps", "steps", 5, "d"),
    ("time (ms)", "median_ms", 10, ".1f"),
    ("GFLOP/s", "gflops", 8, ".1f"),
    ("of GEMM", "gemm_fraction", 8, ".2f"),
    ("orth. error", "orthogonality_error", 12, ".1e"),
    ("dist. to SVD", "distance_to_svd", 12, ".1e"),
)


def format_report(report):
    """The human-readable table, with a header line and the SVD time ratios."""
    columns = [(title, key, _width(report, key, w, spec), spec) for title, key, w, spec in COLUMNS]
    titles = [f"{title:<{w}}" if spec is None else f"{title:>{w}}" for title, _, w, spec in columns]
    lines = [*_header(report), "", "  ".join(titles)]
    for row in report.rows:
        lines.append("  ".join(_cell(row[key], width, spec) for _, key, width, spec in columns))
    return "\n".join(line.rstrip() for line in lines + _footer(report))


def _width(report, key, width, spec):
    """A text column widens to its longest entry; number columns keep ``width``."""
    return max([width] + [len(str(row[key])) for row in report.rows]) if spec is None else width


def _cell(value, width, spec):
    """``value`` formatted by ``spec`` and right-aligned; None is "-"; text without spec left."""
    if spec is None:
        return f"{value:<{width}}"
    text = "-" if value is None else format(value, spec)
    return f"{text:>{width}}"


def _header(report):
    s, g = report.setup, report.gemm
    threads = "threads not pinned" if report.threads is None else f"threads: {report.threads}"
    *batch, m, _, n = g["shape"]
    gemm = "x".join(str(d) for d in batch) + ("x" if batch else "") + f"({m}x{m})@({m}x{n})"
    return [
        f"matsign {__version__} compare: {s.backend} {s.dtype_name} "
        f"{'x'.join(str(d) for d in s.shape)} on {s.device}, seed {report.seed}, "
        f"median of {report.repeats}, {threads}",
        f"GEMM {gemm}: {g['median_ms']:.2f} ms, {g['gflops']:.1f} GFLOP/s; "
        f"sigma_min/||G||_F = {report.sigma_min_ratio:.3g}",
    ]


def _footer(report):
    lines = [""]
    for name, ratio in report.svd_time_ratios().items():
        lines.append(f"matsign svd takes {ratio:.3g}x the time of {name}")
    if report.setup.backend != "numpy":
        hosts = {row["runs_on"] for row in report.rows if row["runs_on"].startswith(_HOST)}
        if hosts:
            lines.append(f"numpy/scipy rows run on a host copy ({', '.join(sorted(hosts))})")
    return lines if len(lines) > 1 else []
