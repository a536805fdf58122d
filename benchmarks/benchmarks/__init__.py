"""asv benchmarks for matsign; configuration in ``benchmarks/asv.conf.json``.

Every benchmark process runs BLAS and torch on ``MATSIGN_BENCH_THREADS`` threads
(default 1, the value ``asv.conf.json`` sets for its own environments): asv ignores
that configuration's environment variables for ``-E existing``, so they are pinned
again here, before NumPy or torch start their thread pools. ``MATSIGN_BENCH_DEVICES``
(default ``cpu,cuda``) chooses the devices whose rows run.
"""

import os

THREADS = int(os.environ.get("MATSIGN_BENCH_THREADS", "1"))
# Rows on devices not listed here are skipped, e.g. MATSIGN_BENCH_DEVICES=cuda on a GPU
# machine to time only the GPU rows.
DEVICES = os.environ.get("MATSIGN_BENCH_DEVICES", "cpu,cuda").split(",")

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = str(THREADS)


def wait(x):
    """Return ``x`` once the device has computed it (CUDA runs asynchronously).

    Timed benchmarks on CUDA tensors or CuPy arrays pass their result through this, so
    that a timer measures the computation and not only its launch. A no-op on the CPU.
    """
    from matsign import _xp

    _xp.synchronize(x)
    return x


def pin_threads():
    """Run BLAS and torch on `THREADS` threads, whatever the environment said."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # the environment variables set above still apply
        pass
    else:
        threadpool_limits(limits=THREADS)
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(THREADS)


def require_device(device):
    """Skip (`NotImplementedError`) a row on a device ``MATSIGN_BENCH_DEVICES`` leaves out."""
    if device not in DEVICES:
        raise NotImplementedError(f"{device} rows are not selected (MATSIGN_BENCH_DEVICES)")
