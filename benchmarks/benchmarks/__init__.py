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
    device = getattr(x, "device", None)
    if getattr(device, "type", None) == "cuda":
        import torch

        torch.cuda.synchronize(device)
    elif type(x).__module__.startswith("cupy"):
        import cupy

        cupy.cuda.get_current_stream().synchronize()
    return x


def require_device(device):
    """Skip (`NotImplementedError`) a row on a device ``MATSIGN_BENCH_DEVICES`` leaves out."""
    if device not in DEVICES:
        raise NotImplementedError(f"{device} rows are not selected (MATSIGN_BENCH_DEVICES)")
