"""The ``backend`` fixture: every test that takes it runs on every installed backend.

Choose backends with ``--xp numpy,torch`` or the ``MATSIGN_XP`` environment variable
(comma-separated; default: all installed). Names: ``numpy``, ``array_api_strict``,
``array_api_strict:device1``, ``array_api_strict:no_float64``, ``torch``,
``torch:cuda``, ``cupy``, ``jax``.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import settings

# The profile sets how many examples every property draws (no test pins it):
# "default" explores 40 per property locally; CI runs a fixed set of 40
# (HYPOTHESIS_PROFILE=ci in .ci/run), so a landing never depends on which examples were
# drawn; "slow" draws 10,000 per property (HYPOTHESIS_PROFILE=slow python -m pytest
# tests/test_properties.py tests/test_roots.py tests/test_polynomials.py).
settings.register_profile("default", max_examples=40)
settings.register_profile("ci", max_examples=40, derandomize=True, print_blob=True)
settings.register_profile("slow", max_examples=10_000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

ALL_BACKENDS = (
    "numpy",
    "array_api_strict",
    "array_api_strict:device1",
    "array_api_strict:no_float64",
    "torch",
    "torch:cuda",
    "cupy",
    "jax",
)


@dataclass
class Backend:
    """A namespace, a device on it, and the floating dtypes it supports."""

    name: str
    xp: object
    device: object
    dtypes: dict = field(default_factory=dict)

    def asarray(self, a, dtype="float64"):
        """Move a NumPy array to this backend with the named dtype."""
        dt = self.dtypes[dtype]
        host = np.asarray(a, dtype=np.float64 if "float64" in self.dtypes else np.float32)
        if self.name.startswith("torch"):
            import torch

            return torch.as_tensor(host).to(self.device, dt)
        if self.name == "cupy":
            return self.xp.asarray(host).astype(dt)
        return self.xp.astype(self.xp.asarray(host, device=self.device), dt)


def _installed(module):
    return importlib.util.find_spec(module) is not None


def _make(name):
    """The Backend for ``name``, or None when it cannot run here."""
    lib, _, dev = name.partition(":")
    if not _installed(lib):
        return None
    if lib == "numpy":
        from array_api_compat import numpy as xp

        return Backend(name, xp, "cpu", {"float32": xp.float32, "float64": xp.float64})
    if lib == "array_api_strict":
        import array_api_strict as xp

        device = xp.Device(dev) if dev else xp.Device("CPU_DEVICE")
        dtypes = {"float32": xp.float32}
        if dev != "no_float64":
            dtypes["float64"] = xp.float64
        return Backend(name, xp, device, dtypes)
    if lib == "torch":
        import torch
        from array_api_compat import torch as xp

        if dev == "cuda" and not torch.cuda.is_available():
            return None
        dtypes = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}
        return Backend(name, xp, torch.device(dev or "cpu"), dtypes)
    if lib == "cupy":
        try:
            import cupy
            from array_api_compat import cupy as xp

            device = cupy.cuda.Device()
        except Exception:  # noqa: BLE001  (no GPU: cupy imports but cannot run)
            return None
        return Backend(name, xp, device, {"float32": xp.float32, "float64": xp.float64})
    if lib == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
        import jax.numpy as xp

        return Backend(name, xp, jax.devices()[0], {"float32": xp.float32, "float64": xp.float64})
    return None


def pytest_addoption(parser):
    parser.addoption("--xp", default=None, help="comma-separated backends (see conftest.py)")


def _selected(config):
    chosen = config.getoption("--xp") or os.environ.get("MATSIGN_XP") or ",".join(ALL_BACKENDS)
    names = [n.strip() for n in chosen.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL_BACKENDS]
    if unknown:
        raise pytest.UsageError(f"unknown backend(s) {unknown}; known: {ALL_BACKENDS}")
    explicit = bool(config.getoption("--xp") or os.environ.get("MATSIGN_XP"))
    backends = []
    for name in names:
        backend = _make(name)
        if backend is None and explicit:
            raise pytest.UsageError(f"backend {name!r} was asked for but cannot run here")
        if backend is not None:
            backends.append(backend)
    return backends


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "dtypes(*names): run a backend/dtype test only for these dtype names"
    )
    config._matsign_backends = _selected(config)


def pytest_generate_tests(metafunc):
    backends = metafunc.config._matsign_backends
    if "backend" in metafunc.fixturenames and "dtype" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("dtypes")
        wanted = set(marker.args) if marker else None
        pairs = [(b, d) for b in backends for d in b.dtypes if wanted is None or d in wanted]
        ids = [f"{b.name}-{d}" for b, d in pairs]
        metafunc.parametrize(("backend", "dtype"), pairs, ids=ids)
    elif "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", backends, ids=[b.name for b in backends])


@pytest.fixture
def xp(backend):
    """The namespace of the backend under test."""
    return backend.xp
