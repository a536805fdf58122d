"""Benchmarks for the Newton–Schulz variants: Gram-space vs standard, and ``tol`` vs SVD.

Gram-space rows compare the two loops on wide matrices at equal final accuracy (both
end with a step computed from a fresh Gram matrix; ``track_`` rows record the error).
``tol`` rows time `matsign.msign` run to a requested orthogonality error next to the
exact SVD at the same size, and track the steps it took. The Gram-space rows also run
on a GPU (``torch-cuda-float32``, ``torch-cuda-bfloat16``), skipped where there is none.
"""

import numpy as np

import matsign
from matsign.cli import timing  # the module: asv would take time_runs for a benchmark

from . import sizes, wait
from .bench_msign import _gaussian, _on_backend, _shape

WIDE = sizes(["512x2048", "768x3072", "1024x8192"], ["128x512"])
GRAM_BACKENDS = ["numpy", "torch-float32", "torch-cuda-float32", "torch-cuda-bfloat16"]


class TimeGramSpace:
    """Polar Express (8 steps) on wide float32 matrices, standard loop vs Gram space."""

    params = (WIDE, GRAM_BACKENDS, ["standard", "gram"])
    param_names = ("shape", "backend", "loop")
    timeout = 300

    def setup(self, shape, backend, loop):
        self.G = _on_backend(_gaussian(_shape(shape)), backend)
        self.gram = loop == "gram"

    def time_newton_schulz(self, shape, backend, loop):
        wait(matsign.newton_schulz(self.G, "polar_express", gram=self.gram))

    def track_orthogonality_error(self, shape, backend, loop):
        X = matsign.newton_schulz(self.G, "polar_express", gram=self.gram)
        return float(matsign.orthogonality_error(X))

    track_orthogonality_error.unit = "max |sigma - 1|"


class TrackGramSpeedup:
    """Time of the standard loop over the Gram-space loop: the median of paired ratios."""

    params = (WIDE, GRAM_BACKENDS)
    param_names = ("shape", "backend")
    timeout = 600
    unit = "speed-up"

    def setup(self, shape, backend):
        self.G = _on_backend(_gaussian(_shape(shape)), backend)

    def track_speedup(self, shape, backend):
        def run(gram):
            return lambda: matsign.newton_schulz(self.G, "polar_express", gram=gram)

        gram, standard, _ = timing.time_runs(run(True), repeats=3, paired=run(False))
        return timing.median_ratio(standard, gram)


TOLERANCES = {"float32": 1e-6, "float64": 1e-12}


class TimeToleranceVsSvd:
    """`msign` to a requested orthogonality error, next to the exact SVD, at 1024x1024."""

    params = (["float32", "float64"], ["tol", "svd"])
    param_names = ("dtype", "method")
    timeout = 300

    def setup(self, dtype, method):
        self.G = _gaussian((1024, 1024), dtype=np.dtype(dtype))
        self.options = {"tol": TOLERANCES[dtype]} if method == "tol" else {"method": "svd"}

    def time_msign(self, dtype, method):
        matsign.msign(self.G, **self.options)

    def track_orthogonality_error(self, dtype, method):
        return float(matsign.orthogonality_error(matsign.msign(self.G, **self.options)))

    track_orthogonality_error.unit = "max |sigma - 1|"
