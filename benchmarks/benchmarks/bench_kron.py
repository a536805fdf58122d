"""Benchmarks for `matsign.kron`: one Shampoo preconditioning step, SOAP refresh vs eigh.

Backends ``"numpy"`` and ``"torch-float32"``; a backend that cannot run here raises
`NotImplementedError` in ``setup``, which asv reports as skipped. BLAS threads are pinned
by ``asv.conf.json`` and ``benchmarks/__init__.py``.
"""

import numpy as np

from matsign import kron

from . import pin_threads, sizes
from .bench_msign import _gaussian, _on_backend

BACKENDS = ["numpy", "torch-float32"]
ROOT_OPTIONS = {"eps": 1e-6, "eps_mode": "relative"}  # Newton needs a conditioned factor


def shampoo_state(G, *, max_dim, steps=4):
    """Factor statistics of ``steps`` Gaussian gradients shaped like ``G`` (EMA 0.9)."""
    state = kron.init_factors(G, max_dim=max_dim)
    for seed in range(steps):
        grad = G if seed == 0 else _like(G, seed)
        state = kron.update_factors(grad, state, beta=0.9)
    return state


def _like(G, seed):
    a = _gaussian(tuple(G.shape), seed=seed)
    return a if isinstance(G, np.ndarray) else _on_backend(a, "torch-float32")


def shampoo_step(G, state, method):
    """One step: update the factors, their inverse fourth roots, the preconditioned G."""
    state = kron.update_factors(G, state, beta=0.9)
    roots = kron.preconditioners(state, method=method, **ROOT_OPTIONS)
    return kron.precondition(G, roots)


class TimeShampooStep:
    """One Shampoo step on m x n in square blocks of min(m, n) (1024x4096: eight 1024^2 roots)."""

    params = (["eigh", "newton"], sizes(["1024x4096"], ["256x1024"]), BACKENDS)
    param_names = ("method", "shape", "backend")
    timeout = 300

    def setup(self, method, shape, backend):
        pin_threads()
        m, n = (int(d) for d in shape.split("x"))
        self.G = _on_backend(_gaussian((m, n)), backend)
        self.state = shampoo_state(self.G, max_dim=min(m, n))

    def time_shampoo_step(self, method, shape, backend):
        shampoo_step(self.G, self.state, method)


class TimeSoapBasis:
    """SOAP basis update for both n x n factors of an n x n gradient: refresh vs full eigh."""

    params = (["refresh", "eigh"], sizes([1024, 2048], [128]), BACKENDS)
    param_names = ("update", "n", "backend")
    timeout = 300

    def setup(self, update, n, backend):
        pin_threads()
        G = _on_backend(_gaussian((n, n)), backend)
        self.state = shampoo_state(G, max_dim=None)
        self.bases = kron.eigenbases(self.state)

    def time_basis_update(self, update, n, backend):
        if update == "eigh":
            kron.eigenbases(self.state)
        else:
            kron.refresh_eigenbases(self.state, self.bases)
