"""dualize / norm / dual_norm / spectral_norm against float64 SVD and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from matsign import ConvergenceError, _xp, duality, msign
from matsign.duality import NORMS, dual_norm, dualize, norm, spectral_norm
from matsign.testing import assert_close

MATRIX_NORMS = [name for name in NORMS if name != "conv"]
RNG = np.random.default_rng(7)
SHAPES = {"matrix": (12, 20), "batched": (2, 3, 16, 8)}
CONV_SHAPE = (2, 6, 4, 3, 3)  # a batch of two (fan_out, fan_in, kh, kw) kernels


def eps_of(backend, dtype):
    return float(backend.xp.finfo(backend.dtypes[dtype]).eps)


def _sv(a):
    return np.linalg.svd(a, compute_uv=False)


def oracle_norms(a, name, orientation="out_in"):
    """(primal, dual) norms in float64 from the definitions, per matrix of ``a``."""
    if name == "conv":
        taps = np.moveaxis(a.reshape(*a.shape[:-2], -1), -1, -3)  # (..., T, out, in)
        primal, dual = oracle_norms(taps, "rms_to_rms", orientation)
        T = taps.shape[-3]
        return T * primal.max(-1), dual.sum(-1) / T
    m = a if orientation == "out_in" else np.swapaxes(a, -1, -2)  # (fan_out, fan_in)
    fan_out, fan_in = m.shape[-2:]
    rms = math.sqrt(fan_in / fan_out)
    columns = np.linalg.norm(m, axis=-2)
    table = {
        "spectral": (_sv(m).max(-1), _sv(m).sum(-1)),
        "rms_to_rms": (rms * _sv(m).max(-1), _sv(m).sum(-1) / rms),
        "frobenius": (np.linalg.norm(m, axis=(-2, -1)), np.linalg.norm(m, axis=(-2, -1))),
        "linf": (np.abs(m).max((-2, -1)), np.abs(m).sum((-2, -1))),
        "l1_to_rms": (columns.max(-1) / math.sqrt(fan_out), math.sqrt(fan_out) * columns.sum(-1)),
    }
    return table[name]


def tolerance(backend, dtype, n):
    """Rounding of a length-n reduction of the direction's entries, in the dtype."""
    return 4 * eps_of(backend, dtype) * math.sqrt(n) + 1e-12


def factor_tolerance(backend, dtype, n):
    """Orthogonality of an SVD's factors, O(n eps) (Higham, Accuracy and Stability, 19.3).

    The unit-norm check sees it directly: GPU SVDs (cuSOLVER) reach ~9 eps at n = 20,
    past the sqrt(n) rounding of a reduction.
    """
    return 4 * eps_of(backend, dtype) * n + 1e-12


def check_duality(backend, dtype, shape, name, orientation="out_in"):
    xp = backend.xp
    G = backend.asarray(RNG.standard_normal(shape), dtype)
    D = dualize(G, norm=name, orientation=orientation, method="svd")
    assert_close(D * 0, np.zeros(shape), xp=xp, dtype=G.dtype, device=_xp.device(G))
    a, d = _xp.to_numpy(G).astype(np.float64), _xp.to_numpy(D).astype(np.float64)
    primal_of_G, dual_of_G = oracle_norms(a, name, orientation)
    rtol = tolerance(backend, dtype, max(shape[-2:]))
    unit_rtol = factor_tolerance(backend, dtype, max(shape[-2:]))
    np.testing.assert_allclose(oracle_norms(d, name, orientation)[0], 1.0, rtol=unit_rtol)
    inner = (a * d).reshape(*dual_of_G.shape, -1).sum(-1)
    np.testing.assert_allclose(inner, dual_of_G, rtol=rtol)
    work_rtol = max(rtol, tolerance(backend, "float32", 1) if dtype == "bfloat16" else 0)
    assert_close(dual_norm(G, name, orientation=orientation), dual_of_G, rtol=work_rtol, xp=xp)
    assert_close(norm(G, name, orientation=orientation), primal_of_G, rtol=work_rtol, xp=xp)


@pytest.mark.parametrize("name", MATRIX_NORMS)
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_dualize_attains_dual_norm_at_unit_norm(backend, dtype, name, shape):
    check_duality(backend, dtype, shape, name)


def test_conv_dualize_attains_dual_norm_at_unit_norm(backend, dtype):
    check_duality(backend, dtype, CONV_SHAPE, "conv")


@pytest.mark.parametrize("name", ["rms_to_rms", "l1_to_rms", "conv"])
def test_layout_in_out_is_the_transpose(backend, name):
    xp = backend.xp
    shape = CONV_SHAPE if name == "conv" else (10, 4)
    a = RNG.standard_normal(shape)
    swapped = np.swapaxes(a, -4, -3) if name == "conv" else a.T
    D = dualize(backend.asarray(swapped, "float32"), norm=name, orientation="in_out")
    expected = _xp.to_numpy(dualize(backend.asarray(a, "float32"), norm=name))
    assert_close(D, np.swapaxes(expected, -4, -3) if name == "conv" else expected.T,
                 atol=1e-6, xp=xp)


def test_rms_to_rms_scale_is_sqrt_fan_out_over_fan_in(backend):
    """An orthogonal (fan_out, fan_in) = (8, 2) matrix: every singular value becomes 2."""
    G = backend.asarray(np.eye(8, 2), "float32")
    expected = 2.0 * np.eye(8, 2)
    assert_close(dualize(G, norm="rms_to_rms"), expected, atol=1e-6, xp=backend.xp)


def test_conv_scale_is_one_over_taps(backend):
    """A 1 x 1 identity at every tap of a 3 x 3 kernel: each tap maps to I / 9."""
    G = backend.asarray(np.tile(np.eye(4)[:, :, None, None], (1, 1, 3, 3)), "float32")
    expected = np.broadcast_to(np.eye(4)[:, :, None, None] / 9, (4, 4, 3, 3))
    assert_close(dualize(G, norm="conv"), expected, atol=1e-7, xp=backend.xp)


@pytest.mark.parametrize("name", NORMS)
def test_zero_gradient_gives_zero_direction(backend, dtype, name):
    shape = CONV_SHAPE if name == "conv" else (3, 5, 4)
    G = backend.asarray(np.zeros(shape), dtype)
    D = dualize(G, norm=name)
    assert_close(D, np.zeros(shape), xp=backend.xp, dtype=G.dtype, device=_xp.device(G))
    assert_close(dual_norm(G, name), np.zeros(shape[:-4] if name == "conv" else shape[:-2]),
                 xp=backend.xp)


def test_l1_to_rms_zero_column_stays_zero(backend):
    a = RNG.standard_normal((6, 3))
    a[:, 1] = 0.0
    D = _xp.to_numpy(dualize(backend.asarray(a, "float32"), norm="l1_to_rms"))
    assert np.all(D[:, 1] == 0)
    np.testing.assert_allclose(np.sqrt((D[:, [0, 2]] ** 2).mean(0)), 1.0, rtol=1e-5)


def test_dualize_passes_msign_options(backend):
    G = backend.asarray(RNG.standard_normal((8, 16)), "float32")
    options = {"method": "newton_schulz", "schedule": "jordan", "steps": 3}
    expected = _xp.to_numpy(msign(G, **options)) * math.sqrt(8 / 16)
    assert_close(dualize(G, norm="rms_to_rms", **options), expected, atol=1e-6, xp=backend.xp)


@pytest.mark.parametrize("shape", [(20, 12), (12, 20), (3, 2, 9, 7)])
def test_spectral_norm_matches_svd(backend, dtype, shape):
    G = backend.asarray(RNG.standard_normal(shape), dtype)
    a = _xp.to_numpy(G).astype(np.float64)
    got = spectral_norm(G, tol=1e-7, max_steps=500)
    s = _sv(a)
    gap = 1 - (s[..., 1] / s[..., 0]) ** 4
    eps = max(eps_of(backend, dtype), float(np.finfo(np.float32).eps))
    rtol = 2e-7 / gap.min() + 8 * eps * math.sqrt(max(shape[-2:]))
    assert_close(got, s[..., 0], rtol=rtol, xp=backend.xp)


def test_spectral_norm_fixed_steps_and_limits(backend):
    xp = backend.xp
    G = backend.asarray(np.diag([1.0, 2.0, 3.0]) * 1e-30, "float32")
    assert_close(spectral_norm(G, tol=None, max_steps=200), 3e-30, rtol=1e-5, xp=xp)
    assert_close(spectral_norm(G * 0), 0.0, xp=xp)
    with pytest.raises(ConvergenceError, match="did not reach"):
        G = backend.asarray(RNG.standard_normal((30, 30)), "float32")
        spectral_norm(G, tol=1e-12, max_steps=2)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda G: dualize(G, norm="nuclear"), "norm must be one of"),
        (lambda G: norm(G, "rms_to_rms", orientation="io"), "orientation must be 'out_in'"),
        (lambda G: dualize(G, norm="conv"), "needs at least 4 axes"),
        (lambda G: spectral_norm(G[0]), "expects shape"),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call(np.ones((3, 3)))


def test_deprecated_spellings_warn_and_mean_the_new_ones(backend):
    """The 0.1 spellings kind= (now norm=) and layout= (now orientation=), until 0.3."""
    xp = backend.xp
    a = RNG.standard_normal((10, 4))
    G = backend.asarray(a, "float32")
    a = _xp.to_numpy(G).astype(np.float64)
    primal, dual = oracle_norms(a, "rms_to_rms", "in_out")  # fan_out 4, fan_in 10
    U, _, Vh = np.linalg.svd(a, full_matrices=False)
    rtol = tolerance(backend, "float32", 10)
    with pytest.warns(DeprecationWarning, match=r"norm: kind= is deprecated.*use norm="):
        assert_close(norm(G, kind="rms_to_rms", orientation="in_out"), primal, rtol=rtol, xp=xp)
    with pytest.warns(DeprecationWarning, match=r"layout= is deprecated.*use orientation="):
        assert_close(dual_norm(G, "rms_to_rms", layout="in_out"), dual, rtol=rtol, xp=xp)
    with pytest.warns(DeprecationWarning, match=r"dualize: layout= is deprecated"):
        D = dualize(G, norm="rms_to_rms", layout="in_out", method="svd")
    assert_close(D, math.sqrt(4 / 10) * (U @ Vh), atol=factor_tolerance(backend, "float32", 10),
                 xp=xp)
    with pytest.raises(TypeError, match="both norm= and its deprecated spelling kind="):
        norm(G, "linf", kind="linf")
    with pytest.raises(TypeError, match="both orientation= and its deprecated spelling layout="):
        dualize(G, orientation="in_out", layout="in_out")
    with pytest.warns(DeprecationWarning, match="KINDS is deprecated"):
        assert duality.KINDS == ("spectral", "rms_to_rms", "frobenius", "linf", "l1_to_rms",
                                 "conv")
