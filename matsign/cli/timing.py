"""Timing shared by ``python -m matsign compare`` and the asv benchmarks in ``benchmarks/``.

- `newton_schulz_flops`: the flop model of a Newton–Schulz schedule;
- `gemm_like` and `time_runs`: the reference GEMM of the same shape, backend and dtype,
  timed just before each timed run so that both see the same outside load;
  `gemm_fraction` and `median_ratio` are medians of the per-pair ratios;
- `time_interleaved`: many calls timed in rounds (each round runs every call once), so
  that a change of outside load shifts every call alike instead of a few rows;
- `pin_threads` and `limit_threads`: BLAS (threadpoolctl) and torch thread counts.

Importing this module imports no array framework: torch is pinned only when the caller
has imported it already.
"""

from __future__ import annotations

import contextlib
import math
import platform
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np

from .. import _xp

__all__ = ["Gemm", "cpu_name", "cpuinfo", "gemm_flops", "gemm_fraction", "gemm_like",
           "limit_threads", "median_ratio", "newton_schulz_flops", "pin_threads",
           "time_interleaved", "time_runs"]


# --- Flop model -----------------------------------------------------------------------------


def newton_schulz_flops(schedule, shape, steps=None):
    """Matrix-product flops of a Newton–Schulz schedule on an input of ``shape``.

    Parameters
    ----------
    schedule : Schedule
        The schedule, run for ``steps`` steps (its default when omitted).
    shape : tuple of int
        ``(..., m, n)``; the iteration runs on the smaller Gram side.
    steps : int, optional
        Number of steps.

    Returns
    -------
    float
        Sum over steps of ``4 m^2 n + 2 m^3 (d - 1)`` for a polynomial with ``d + 1``
        coefficients (``m <= n``), times the batch size.

    Notes
    -----
    ``A = X X^T`` and the final ``B X`` cost ``2 m^2 n`` each; Horner's rule for
    ``c0 I + c1 A + ... + cd A^d`` takes ``d - 1`` products ``(.) A`` of ``2 m^3``.

    Examples
    --------
    >>> from matsign import polynomials
    >>> from matsign.cli.timing import newton_schulz_flops
    >>> newton_schulz_flops(polynomials.preset("jordan"), (4, 8), steps=1)
    640.0
    """
    m, n = sorted(int(d) for d in shape[-2:])
    batch = math.prod(int(d) for d in shape[:-2])
    polynomials = schedule.polynomials(steps)
    products = sum(max(0, len(c) - 2) for c in polynomials)
    return float(batch * (len(polynomials) * 4 * m * m * n + products * 2 * m**3))


def gemm_flops(shape):
    """Flops of the GEMM ``(..., m, m) @ (..., m, n)`` for an input of ``shape`` (m <= n).

    Parameters
    ----------
    shape : tuple of int
        ``(..., m, n)`` or ``(..., n, m)``.

    Returns
    -------
    float
        ``2 m^2 n`` times the batch size.

    Examples
    --------
    >>> from matsign.cli.timing import gemm_flops
    >>> gemm_flops((2, 8, 4))
    512.0
    """
    m, n = sorted(int(d) for d in shape[-2:])
    return 2.0 * math.prod(int(d) for d in shape[:-2]) * m * m * n


# --- Paired GEMM timing ---------------------------------------------------------------------


@dataclass(frozen=True)
class Gemm:
    """The reference product ``(..., m, m) @ (..., m, n)`` on distinct operands."""

    call: object
    flops: float
    shape: tuple


def gemm_like(G, *, seed=1):
    """The GEMM of ``G``'s Newton–Schulz shape, in ``G``'s namespace, dtype and device.

    Its operands are distinct Gaussian matrices, not ``X`` and ``X^T``: NumPy would
    run ``X @ X.T`` as a symmetric product at half the flops.

    Parameters
    ----------
    G : array
        The ``(..., m, n)`` input whose Newton–Schulz run the GEMM is paired with.
    seed : int
        Seed of the operands.

    Returns
    -------
    Gemm
    """
    xp = _xp.namespace(G)
    *batch, m, n = (int(d) for d in G.shape)
    m, n = min(m, n), max(m, n)
    rng = np.random.default_rng(seed)

    def operand(*shape):
        host = xp.asarray(rng.standard_normal(shape), device=_xp.device(G))
        return xp.astype(host, G.dtype)

    A, B = operand(*batch, m, m), operand(*batch, m, n)
    return Gemm(lambda: A @ B, gemm_flops(G.shape), (*batch, m, m, n))


def time_runs(call, *, repeats, warmup=1, paired=None):
    """Wall times of ``repeats`` runs of ``call()`` after ``warmup``, and its last result.

    Each result is waited for (`matsign._xp.synchronize`), so that device work counts.

    Parameters
    ----------
    call : callable
        Run with no arguments.
    repeats, warmup : int
        Timed and untimed runs.
    paired : callable, optional
        Also timed, just before each timed ``call()``, so that the two see the same
        outside load (and run before each untimed one).

    Returns
    -------
    times : list of float
        Seconds per run of ``call``.
    paired_times : list of float
        Seconds per run of ``paired`` (empty without it).
    result : object
        What the last run of ``call`` returned.
    """
    result = None
    for _ in range(warmup):
        if paired is not None:
            _timed(paired)
        result = _timed(call)[1]
    times, paired_times = [], []
    for _ in range(repeats):
        if paired is not None:
            paired_times.append(_timed(paired)[0])
        seconds, result = _timed(call)
        times.append(seconds)
    return times, paired_times, result


def time_interleaved(calls, *, repeats, warmup=1, paired=None, on_first=None, before=None):
    """Wall times of ``calls`` run in rounds: each round runs every call once, in order.

    Rows timed one after another see different outside load; in rounds, a burst of
    load costs every call a little instead of one call a lot, and the calls of one
    round can be compared pair by pair (`median_ratio` over rounds).

    Parameters
    ----------
    calls : list of callable
        Run with no arguments; each result is waited for (`matsign._xp.synchronize`).
    repeats, warmup : int
        Timed and untimed rounds (the untimed ones first).
    paired : list of callable or None, optional
        ``paired[i]`` (or None) is also timed, just before every run of ``calls[i]``.
    on_first : callable, optional
        ``on_first(i, result)`` receives the first result of ``calls[i]``, outside the
        timing; results are then dropped, so that one is alive at a time.
    before : callable, optional
        ``before(round, i)`` is called before each run (progress reports).

    Returns
    -------
    times : list of list of float
        ``times[i][r]``: seconds of ``calls[i]`` in timed round ``r``.
    paired_times : list of list of float
        The same for ``paired[i]`` (empty lists where there is none).
    """
    paired = [None] * len(calls) if paired is None else paired
    times, paired_times = [[] for _ in calls], [[] for _ in calls]
    for r in range(warmup + repeats):
        for i, (call, pair) in enumerate(zip(calls, paired, strict=True)):
            if before is not None:
                before(r, i)
            pair_seconds = None if pair is None else _timed(pair)[0]
            seconds, result = _timed(call)
            if r == 0 and on_first is not None:
                on_first(i, result)
            del result
            if r >= warmup:
                times[i].append(seconds)
                if pair_seconds is not None:
                    paired_times[i].append(pair_seconds)
    return times, paired_times


def _timed(call):
    start = time.perf_counter()
    result = call()
    _xp.synchronize(result)
    return time.perf_counter() - start, result


def median_ratio(numerators, denominators):
    """Median over pairs of ``numerator / denominator``: a ratio that load shifts spare.

    Parameters
    ----------
    numerators, denominators : list of float
        Paired measurements, such as the two lists `time_runs` returns.

    Returns
    -------
    float

    Examples
    --------
    >>> from matsign.cli.timing import median_ratio
    >>> median_ratio([2.0, 9.0, 3.0], [1.0, 3.0, 1.0])
    3.0
    """
    return statistics.median(a / b for a, b in zip(numerators, denominators, strict=True))


def gemm_fraction(flops, gemm, times, gemm_times):
    """Median over pairs of the achieved rate ``flops / time`` over the paired GEMM's rate.

    Parameters
    ----------
    flops : float
        Flops of one timed run (`newton_schulz_flops`).
    gemm : Gemm
        The paired GEMM.
    times, gemm_times : list of float
        From `time_runs` with ``paired=gemm.call``.

    Returns
    -------
    float
    """
    return median_ratio([flops * g for g in gemm_times], [gemm.flops * t for t in times])


# --- Threads --------------------------------------------------------------------------------


def pin_threads(threads):
    """Run BLAS and torch's intra-op pool on ``threads`` threads until the restore is called.

    BLAS is pinned through threadpoolctl when it is installed (without it, only the
    ``OPENBLAS_NUM_THREADS``-style variables read at start-up apply); torch only when it
    has been imported already, so that pinning never imports it.

    Parameters
    ----------
    threads : int
        Thread count.

    Returns
    -------
    callable
        Restores the previous counts.
    """
    restores = []
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_limits

        restores.append(threadpool_limits(limits=threads).restore_original_limits)
    torch = sys.modules.get("torch")
    if torch is not None:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        restores.append(lambda: torch.set_num_threads(previous))

    def restore():
        for undo in reversed(restores):
            undo()

    return restore


@contextlib.contextmanager
def limit_threads(threads):
    """`pin_threads` while inside; nothing when ``threads`` is None."""
    if threads is None:
        yield
        return
    restore = pin_threads(threads)
    try:
        yield
    finally:
        restore()


def cpu_name():
    """The CPU's model name (/proc/cpuinfo, else what `platform` knows)."""
    return cpuinfo("model name") or platform.processor() or platform.machine()


def cpuinfo(key):
    """The first ``key : value`` of /proc/cpuinfo, or "" where there is none."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.split(":", 1)[0].strip() == key:
                return line.split(":", 1)[1].strip()
    return ""
