"""asv benchmarks for matsign; configuration in ``benchmarks/asv.conf.json``.

Every benchmark process runs BLAS and torch on ``MATSIGN_BENCH_THREADS`` threads
(default 1, the value ``asv.conf.json`` sets for its own environments): asv ignores
that configuration's environment variables for ``-E existing``, so they are pinned
again here, before NumPy or torch start their thread pools. ``MATSIGN_BENCH_DEVICES``
(default ``cpu,cuda``) chooses the devices whose rows run; ``MATSIGN_BENCH_LARGE_CPU=1``
adds the CPU rows of the GEMM fraction at 2048^2 and 4096^2 (about 2 TFLOP a call at
4096^2: minutes per row, so CI's quick run leaves them out); ``MATSIGN_BENCH_SMOKE=1``
gives every parameter list its smallest sizes (`sizes`), as CI's quick run does to show
that every benchmark runs, in minutes rather than half an hour (nothing is saved). Timing,
flop counts and thread pinning are `matsign.cli.timing`'s, shared with ``python -m matsign
compare``.
"""

import contextlib
import functools
import os
import time

THREADS = int(os.environ.get("MATSIGN_BENCH_THREADS", "1"))
# Rows on devices not listed here are skipped, e.g. MATSIGN_BENCH_DEVICES=cuda on a GPU
# machine to time only the GPU rows.
DEVICES = os.environ.get("MATSIGN_BENCH_DEVICES", "cpu,cuda").split(",")
# CPU rows of TrackGemmFraction at 2048^2 and 4096^2 (minutes each) run only when set to 1.
LARGE_CPU = os.environ.get("MATSIGN_BENCH_LARGE_CPU", "0") == "1"
# Every benchmark on its smallest sizes only, when set to 1 (CI's quick run).
SMOKE = os.environ.get("MATSIGN_BENCH_SMOKE", "0") == "1"

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = str(THREADS)


def sizes(full, smoke):
    """The sizes a benchmark runs: ``full``, or ``smoke`` when ``MATSIGN_BENCH_SMOKE=1``."""
    return list(smoke if SMOKE else full)


def cpu_model():
    """The CPU's model name, as ``python -m matsign compare`` reports it."""
    from matsign.cli.timing import cpu_name

    return cpu_name()


def rotated_rounds(steps, repeat, before=None):
    """Seconds of each ``steps[label]()`` over ``repeat`` rounds, for the scripts' ratios.

    Every round runs each step once, and round ``i`` starts at the ``i``-th label, so
    that no row always runs first (after a pause) or last; a burst of outside load then
    costs every row of its round alike, and ratios are taken per round. ``before(label)``
    runs just before each timed call, untimed (restoring gradients).
    """
    labels = list(steps)
    seconds = {label: [] for label in labels}
    for i in range(repeat):
        for label in labels[i % len(labels):] + labels[:i % len(labels)]:
            if before is not None:
                before(label)
            start = time.perf_counter()
            steps[label]()
            seconds[label].append(time.perf_counter() - start)
    return seconds


def wait(x):
    """Return ``x`` once the device has computed it (CUDA runs asynchronously).

    Timed benchmarks on CUDA tensors or CuPy arrays pass their result through this, so
    that a timer measures the computation and not only its launch. A no-op on the CPU.
    """
    from matsign import _xp

    _xp.synchronize(x)
    return x


def pin_threads():
    """Run BLAS and torch on `THREADS` threads, whatever the environment said.

    The one pinning is `matsign.cli.timing.pin_threads`; torch is imported first (when
    installed) so that it is pinned too.
    """
    from matsign.cli.timing import pin_threads as pin

    with contextlib.suppress(ImportError):
        import torch  # noqa: F401
    pin(THREADS)


@functools.cache
def fast_bfloat16():
    """Whether torch multiplies bfloat16 matrices at least a quarter as fast as float32.

    CPUs without bfloat16 instructions (AMX, AVX512-BF16) fall back to a kernel about a
    hundred times slower than float32: a row there would take minutes and measure that
    fallback, not matsign. Timed bfloat16 rows on the CPU are skipped there. Measured
    once per process, on 256 x 256 products paired as `matsign.cli.timing` pairs them.
    """
    import torch

    from matsign.cli.timing import median_ratio, time_runs

    a = torch.randn(256, 256)
    b = a.to(torch.bfloat16)
    slow, fast, _ = time_runs(lambda: b @ b, repeats=3, paired=lambda: a @ a)
    return median_ratio(slow, fast) < 4


def require_device(device):
    """Skip (`NotImplementedError`) a row on a device ``MATSIGN_BENCH_DEVICES`` leaves out."""
    if device not in DEVICES:
        raise NotImplementedError(f"{device} rows are not selected (MATSIGN_BENCH_DEVICES)")
