"""Hypothesis properties of msign and polar: invariances any polar factor must have."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from hypothesis import assume, given, settings
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
@given(G=matrices(), scale=st.floats(1e-300, 1e300), options=METHODS)
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


@st.composite
def ill_conditioned(draw):
    """Matrices with condition numbers from 1 to 1e8 (log-uniform), any aspect, batched."""
    m = draw(st.integers(1, 10))
    n = draw(st.integers(1, 10))
    batch = draw(st.sampled_from([(), (2,)]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    k = min(m, n)
    log_kappa = draw(st.floats(0.0, 8.0))
    s = np.sort(10.0 ** -rng.uniform(0.0, log_kappa, size=(*batch, k)))[..., ::-1]
    s[..., 0] = 1.0
    if k > 1:
        s[..., -1] = 10.0 ** -log_kappa
    flat = [matrix_with_singular_values(row, m, n, rng=rng) for row in s.reshape(-1, k)]
    return np.stack(flat).reshape(*batch, m, n) if batch else flat[0]


def _polar_factor(G):
    U, _, Vh = np.linalg.svd(G, full_matrices=False)
    return U @ Vh


@settings(deadline=None)
@given(G=ill_conditioned(), scale=st.floats(1e-300, 1e300))
def test_svd_polar_factor_to_condition_1e8_and_scales_1e300(G, scale):
    """The float64 polar factor of kappa <= 1e8 at any representable scale: NumPy's SVD
    of the unscaled G (the factor's sensitivity to rounding is about kappa * eps)."""
    Q = msign(scale * G, method="svd")
    np.testing.assert_allclose(Q, _polar_factor(G), atol=1e-6)
    k = min(G.shape[-2:])
    gram = Q @ np.swapaxes(Q, -1, -2) if G.shape[-2] == k else np.swapaxes(Q, -1, -2) @ Q
    np.testing.assert_allclose(gram, np.broadcast_to(np.eye(k), gram.shape), atol=1e-10)


@settings(deadline=None)
@given(G=matrices(), scale=st.floats(1e-30, 1e30), options=METHODS)
def test_float32_scale_invariance_to_1e30(G, scale, options):
    G32 = (scale * G).astype(np.float32)
    assume(np.all(np.isfinite(G32)) and np.abs(G32).max() >= 1e-37)  # representable
    np.testing.assert_allclose(msign(G32, **options), msign(G, **options), atol=2e-4)


@settings(deadline=None)
@given(shape=st.sampled_from([(0, 3), (3, 0), (0, 0), (0, 2, 2), (2, 0, 4), (2, 4, 0)]),
       options=METHODS)
def test_zero_size_shapes(shape, options):
    G = np.zeros(shape)
    *batch, _, n = shape
    Q, H = polar(G, **options)
    assert Q.shape == G.shape and H.shape == (*batch, n, n) and not np.any(H)


def test_import_pulls_in_no_backend():
    code = (
        "import sys, matsign; "
        "bad = [m for m in ('torch', 'cupy', 'jax') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
