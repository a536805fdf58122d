"""asv benchmarks for matsign; configuration in ``benchmarks/asv.conf.json``.

Every benchmark process runs BLAS and torch on ``MATSIGN_BENCH_THREADS`` threads
(default 1, the value ``asv.conf.json`` sets for its own environments): asv ignores
that configuration's environment variables for ``-E existing``, so they are pinned
again here, before NumPy or torch start their thread pools.
"""

import os

THREADS = int(os.environ.get("MATSIGN_BENCH_THREADS", "1"))

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = str(THREADS)
