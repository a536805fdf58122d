"""Hypothesis properties of msign and polar: invariances any polar factor must have."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from matsign import msign, polar
from matsign.testing import matrix_with_singular_values

METHODS = st.sampled_from([
    {"method": "svd"},
    {"schedule": "polar_express", "steps": 14},
])


@st.composite
def matrices(draw):
    """Random well-separated-spectrum matrices (condition number at most 100)."""
    m = draw(st.integers(1, 12))
    n = draw(st.integers(1, 12))
    batch = draw(st.sampled_from([(), (2,), (2, 3)]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    k = min(m, n)
    s = np.sort(np.exp(rng.uniform(np.log(1e-2), 0, size=(*batch, k))))[..., ::-1]
    flat = [matrix_with_singular_values(row, m, n, rng=rng) for row in s.reshape(-1, k)]
    return np.stack(flat).reshape(*batch, m, n) if batch else flat[0]


def haar(n, rng):
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


ATOL = 1e-9


@settings(deadline=None)
@given(G=matrices(), scale=st.floats(1e-30, 1e30), options=METHODS)
def test_scale_invariance(G, scale, options):
    np.testing.assert_allclose(msign(scale * G, **options), msign(G, **options), atol=ATOL)


@settings(deadline=None)
@given(G=matrices(), options=METHODS)
def test_sign_symmetry(G, options):
    np.testing.assert_allclose(msign(-G, **options), -msign(G, **options), atol=ATOL)


@settings(deadline=None)
@given(G=matrices(), options=METHODS)
def test_transpose_symmetry(G, options):
    Gt = np.swapaxes(G, -1, -2)
    np.testing.assert_allclose(msign(Gt, **options), np.swapaxes(msign(G, **options), -1, -2),
                               atol=ATOL)


@settings(deadline=None)
@given(G=matrices(), seed=st.integers(0, 2**32 - 1), options=METHODS)
def test_orthogonal_equivariance(G, seed, options):
    rng = np.random.default_rng(seed)
    U, V = haar(G.shape[-2], rng), haar(G.shape[-1], rng)
    np.testing.assert_allclose(msign(U @ G @ V.T, **options), U @ msign(G, **options) @ V.T,
                               atol=ATOL)


@settings(deadline=None)
@given(G=matrices(), options=METHODS)
def test_polar_reconstructs(G, options):
    Q, H = polar(G, **options)
    np.testing.assert_allclose(Q @ H, G, atol=ATOL * np.abs(G).max())
    np.testing.assert_array_equal(H, np.swapaxes(H, -1, -2))
    assert np.linalg.eigvalsh(H).min() >= -ATOL * np.abs(G).max()


def test_import_pulls_in_no_backend():
    code = (
        "import sys, matsign; "
        "bad = [m for m in ('torch', 'cupy', 'jax') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
