"""msign / polar / newton_schulz against float64 SVD and scipy.linalg.polar, on every backend."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from matsign import (
    ConvergenceError,
    _xp,
    msign,
    newton_schulz,
    orthogonality_error,
    polar,
    polynomials,
)
from matsign.testing import assert_close, zoo

ZOO = zoo()
NONTRIVIAL = ["gaussian", "ill_conditioned", "rank_deficient", "tall", "wide", "batched",
              "one_by_one", "row"]


def eps_of(backend, dtype):
    return float(backend.xp.finfo(backend.dtypes[dtype]).eps)


def truncated_polar(a, rtol):
    """Float64 oracle: U_r V_r^T over singular values above rtol * sigma_max."""
    U, s, Vh = np.linalg.svd(a, full_matrices=False)
    keep = s > rtol * s[..., :1]
    return (U * keep[..., None, :]) @ Vh


def svd_tolerance(s, rtol, eps):
    """Perturbation bound for U_r V_r^T: eps * sigma_max over the smallest kept value or gap."""
    s = np.atleast_2d(s.reshape(-1, s.shape[-1]))
    worst = 0.0
    for row in s:
        if row[0] == 0:
            continue
        kept = row[row > rtol * row[0]]
        dropped = row[row <= rtol * row[0]]
        gap = kept[-1] - (dropped[0] if dropped.size else 0.0)
        worst = max(worst, row[0] / min(kept[-1], gap))
    return 30 * eps * max(worst, 1.0)


@pytest.mark.parametrize("name", [*NONTRIVIAL, "zero"])
def test_msign_svd_matches_truncated_svd_oracle(backend, dtype, name):
    xp = backend.xp
    G = backend.asarray(ZOO[name].matrix, dtype)
    Q = msign(G, method="svd")
    a = _xp.to_numpy(G).astype(np.float64)  # the input as the backend holds it
    eps_in = eps_of(backend, dtype)
    eps_work = max(eps_in if dtype != "bfloat16" else 0.0, float(np.finfo(np.float32).eps))
    rtol = eps_work * max(a.shape[-2:])
    expected = truncated_polar(a, rtol)
    atol = svd_tolerance(np.linalg.svd(a, compute_uv=False), rtol, eps_work) + eps_in
    assert_close(Q, expected, atol=atol, xp=xp, dtype=G.dtype, device=_xp.device(G))


@pytest.mark.parametrize("name", ["gaussian", "tall", "wide", "one_by_one"])
def test_msign_svd_matches_scipy_polar(name):
    a = ZOO[name].matrix
    side = "right" if a.shape[0] <= a.shape[1] else "left"
    expected, _ = scipy.linalg.polar(a, side=side)
    np.testing.assert_allclose(msign(a, method="svd"), expected, atol=1e-12)


BFLOAT16_UNFIT = {"cans"}  # published without a safety factor; see polynomials.check
CONVERGENT = [n for n in polynomials.names() if polynomials.preset(n).converges]
BANDED = [n for n in polynomials.names() if not polynomials.preset(n).converges]


def rounded_band(schedule, lower, upper, delta):
    """The band when each step's input may be off by ``delta * sum|c|`` (rounding), exact."""
    lo, hi = lower, upper
    for c in schedule.polynomials():
        step = polynomials.Schedule("step", (c,), tail="stop", default_steps=1)
        widen = delta * sum(abs(ck) for ck in c)
        lo, hi = polynomials.band(step, max(lo - widen, 1e-300), upper=hi + widen)
    return lo - delta, hi + delta  # the last step's own rounding


@pytest.mark.parametrize("schedule_name", CONVERGENT)
@pytest.mark.parametrize("name", ["gaussian", "tall", "wide", "batched", "one_by_one"])
def test_convergent_schedules_reach_svd_factor(backend, dtype, schedule_name, name):
    entry, xp = ZOO[name], backend.xp
    schedule = polynomials.preset(schedule_name)
    s = entry.singular_values
    lower = float((s[..., -1] / np.sqrt((s**2).sum(-1)) / schedule.normalizer).min())
    lo, hi = polynomials.band(schedule, lower)
    G = backend.asarray(entry.matrix, dtype)
    Q = msign(G, schedule=schedule)
    n = max(entry.matrix.shape[-2:])
    atol = max(1 - lo, hi - 1) + 4 * eps_of(backend, dtype) * np.sqrt(n) * schedule.default_steps
    assert_close(Q, truncated_polar(entry.matrix, 0.0), atol=atol, xp=xp, dtype=G.dtype,
                 device=_xp.device(G))


def normalised_range(entry, schedule):
    """Smallest and largest singular value after Frobenius normalisation (over a batch)."""
    s = entry.singular_values.reshape(-1, entry.singular_values.shape[-1])
    norms = np.linalg.norm(s, axis=-1) * schedule.normalizer
    return float((s[:, -1] / norms).min()), float((s[:, 0] / norms).max())


@pytest.mark.dtypes("float32", "float64")  # bfloat16: the worst-case model is vacuous
@pytest.mark.parametrize("schedule_name", polynomials.names())
@pytest.mark.parametrize("name", ["gaussian", "ill_conditioned", "wide"])
def test_every_preset_lands_in_its_band(backend, dtype, schedule_name, name):
    """Worst-case rounding model: each step's input is off by eps sqrt(n) sum|c|."""
    entry, schedule = ZOO[name], polynomials.preset(schedule_name)
    X = newton_schulz(backend.asarray(entry.matrix, dtype), schedule, gram=False)
    got = np.linalg.svd(_xp.to_numpy(X).astype(np.float64), compute_uv=False)
    delta = 2 * eps_of(backend, dtype) * np.sqrt(max(entry.matrix.shape))
    lo, hi = rounded_band(schedule, *normalised_range(entry, schedule), delta)
    assert hi < 1.5  # the rounded band still says something
    assert lo <= got.min() and got.max() <= hi, (got.min(), got.max(), lo, hi)


@pytest.mark.parametrize("schedule_name", polynomials.names())
@pytest.mark.parametrize("name", ["gaussian", "ill_conditioned", "wide"])
def test_every_preset_lands_in_its_band_in_bfloat16(schedule_name, name):
    """Random-walk rounding model: the exact band, widened by eps * sqrt(n).

    Schedules that `polynomials.check` flags as unfit for bfloat16 rounding (steep just
    outside their intervals, no safety factor) must show it: they are held to the check.
    """
    torch = pytest.importorskip("torch")
    entry, schedule = ZOO[name], polynomials.preset(schedule_name)
    lower, upper = normalised_range(entry, schedule)
    if polynomials.check(schedule, lower, upper=upper, rtol=polynomials.BFLOAT16_EPS):
        assert schedule_name in BFLOAT16_UNFIT
        return
    X = newton_schulz(torch.as_tensor(entry.matrix, dtype=torch.bfloat16), schedule, gram=False)
    got = np.linalg.svd(X.double().numpy(), compute_uv=False)
    lo, hi = polynomials.band(schedule, *normalised_range(entry, schedule)[:1],
                              upper=normalised_range(entry, schedule)[1])
    slack = float(torch.finfo(torch.bfloat16).eps) * np.sqrt(max(entry.matrix.shape))
    assert lo - slack <= got.min() and got.max() <= hi + slack, (got.min(), got.max(), lo, hi)


def test_msign_half_precision_uses_newton_schulz():
    torch = pytest.importorskip("torch")
    a = ZOO["gaussian"].matrix
    G = torch.as_tensor(a, dtype=torch.bfloat16)
    Q = msign(G)
    assert Q.dtype == torch.bfloat16
    err = np.abs(Q.float().numpy() - truncated_polar(a, 0.0)).max()
    assert err < 16 * float(torch.finfo(torch.bfloat16).eps)


def test_newton_schulz_runs_in_requested_dtype():
    torch = pytest.importorskip("torch")
    a = ZOO["wide"].matrix
    G = torch.as_tensor(a, dtype=torch.float32)
    Q16 = msign(G, schedule="polar_express", dtype=torch.bfloat16)
    Q32 = msign(G, schedule="polar_express")
    assert Q16.dtype == torch.float32
    diff = float((Q16 - Q32).abs().max())
    # bfloat16 rounding is visible (it really ran in bf16) but bounded by its eps.
    assert 0 < diff < 16 * float(torch.finfo(torch.bfloat16).eps)


@pytest.mark.parametrize("method", ["svd", "newton_schulz"])
def test_zero_matrices_map_to_zero_even_inside_a_batch(backend, dtype, method):
    a = ZOO["batched"].matrix.copy()
    a[1, 2] = 0.0
    G = backend.asarray(a, dtype)
    Q = _xp.to_numpy(msign(G, method=method)).astype(np.float64)
    assert np.all(Q[1, 2] == 0.0)
    assert np.all(np.isfinite(Q))
    assert np.abs(Q[0, 0]).max() > 0.1


@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (0, 0), (2, 0, 4), (0, 3, 3)])
@pytest.mark.parametrize("method", ["svd", "newton_schulz"])
def test_empty_shapes_return_empty(backend, shape, method):
    G = backend.asarray(np.zeros(shape), "float32")
    Q = msign(G, method=method)
    assert tuple(Q.shape) == shape and Q.dtype == G.dtype


@pytest.mark.parametrize("shape", [(), (3,)])
def test_fewer_than_two_axes_raise_naming_the_shape(backend, shape):
    G = backend.asarray(np.ones(shape), "float32")
    with pytest.raises(ValueError, match=r"\(\.\.\., m, n\); got \(" + ("3," if shape else "")):
        msign(G)


def test_integer_input_is_promoted_to_default_float():
    Q = msign(np.array([[2, 0], [0, -3]]))
    assert Q.dtype == np.float64
    np.testing.assert_array_equal(Q, [[1.0, 0.0], [0.0, -1.0]])


def test_complex_input_raises_type_error():
    with pytest.raises(TypeError, match="complex"):
        msign(np.eye(2, dtype=np.complex128))


def test_mixed_namespaces_raise_type_error():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="single array library"):
        _xp.namespace(np.eye(2), torch.eye(2))


@pytest.mark.filterwarnings("ignore:invalid value encountered")
@pytest.mark.parametrize("method", ["svd", "newton_schulz"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_propagates_nan_or_raises(backend, method, bad):
    a = ZOO["batched"].matrix.copy()
    a[0, 1, 2, 3] = bad
    G = backend.asarray(a, "float32")
    Q = _xp.to_numpy(msign(G, method=method))
    assert np.all(np.isnan(Q[0, 1]))
    assert np.all(np.isfinite(Q[1]))
    with pytest.raises(ValueError, match="non-finite"):
        msign(G, method=method, check_finite=True)


def test_input_is_not_mutated(backend):
    a = ZOO["tall"].matrix
    G = backend.asarray(a, "float32")
    before = _xp.to_numpy(G).copy()
    for method in ("svd", "newton_schulz"):
        msign(G, method=method)
        polar(G, method=method)
    np.testing.assert_array_equal(_xp.to_numpy(G), before)


def test_bad_options_raise():
    G = ZOO["gaussian"].matrix
    with pytest.raises(ValueError, match="method must be"):
        msign(G, method="qr")
    with pytest.raises(ValueError, match="unknown schedule 'nope'; known: cubic"):
        msign(G, schedule="nope")
    with pytest.raises(ValueError, match="takes 0 to 5 steps; got steps=6"):
        msign(G, schedule="you5", steps=6)
    with pytest.raises(TypeError, match="preset name or a Schedule"):
        newton_schulz(G, [(1.5, -0.5)])


@pytest.mark.parametrize("name", ["gaussian", "tall", "wide", "rank_deficient", "batched"])
def test_polar_reconstructs_and_h_is_symmetric_psd(backend, dtype, name):
    G = backend.asarray(ZOO[name].matrix, dtype)
    a = _xp.to_numpy(G).astype(np.float64)
    Q, H = polar(G, method="svd")
    eps = eps_of(backend, dtype)
    scale = float(np.abs(a).max()) * max(a.shape[-2:])
    assert_close(Q @ H, a, atol=20 * eps * scale, xp=backend.xp, dtype=G.dtype)
    h = _xp.to_numpy(H).astype(np.float64)
    np.testing.assert_allclose(h, np.swapaxes(h, -1, -2), atol=0)
    assert np.linalg.eigvalsh(h).min() >= -20 * eps * scale


@pytest.mark.parametrize("name", ["tall", "wide"])
def test_polar_matches_scipy_h(name):
    a = ZOO[name].matrix
    side = "right" if a.shape[0] <= a.shape[1] else "left"
    q, h = scipy.linalg.polar(a, side="right")
    Q, H = polar(a, method="svd")
    np.testing.assert_allclose(Q, q, atol=1e-12)
    np.testing.assert_allclose(H, h, atol=1e-12)
    assert side in ("left", "right")


def test_orthogonality_error_matches_singular_values(backend):
    a = np.diag([1.0, 0.25, 1.5])
    err = orthogonality_error(backend.asarray(a, "float32"))
    assert_close(err, 0.75, atol=1e-6, xp=backend.xp)
    batch = orthogonality_error(backend.asarray(ZOO["batched"].matrix, "float32"))
    s = ZOO["batched"].singular_values
    assert_close(batch, np.abs(s - 1).max(-1), rtol=1e-5, xp=backend.xp)


def test_result_keeps_device(backend, dtype):
    G = backend.asarray(ZOO["wide"].matrix, dtype)
    for method in ("svd", "newton_schulz"):
        Q = msign(G, method=method)
        assert _xp.device(Q) == _xp.device(G) and Q.dtype == G.dtype


@pytest.mark.parametrize("schedule_name", ["polar_express", "jordan", "you5"])
@pytest.mark.parametrize("name", ["wide", "tall", "batched"])
def test_gram_space_agrees_with_standard_iteration(backend, dtype, schedule_name, name):
    """Same polynomials, different association: equal up to round-off over the steps."""
    entry, schedule = ZOO[name], polynomials.preset(schedule_name)
    G = backend.asarray(entry.matrix, dtype)
    standard = _xp.to_numpy(newton_schulz(G, schedule, gram=False)).astype(np.float64)
    gram = newton_schulz(G, schedule, gram=True)
    eps = eps_of(backend, dtype)
    steps = len(schedule.polynomials())
    if dtype == "bfloat16":  # random-walk model: the exact band, widened per step
        lo, hi = polynomials.band(schedule, *normalised_range(entry, schedule)[:1],
                                  upper=normalised_range(entry, schedule)[1])
        got = np.linalg.svd(_xp.to_numpy(gram).astype(np.float64), compute_uv=False)
        slack = eps * np.sqrt(max(entry.matrix.shape[-2:])) * steps
        assert lo - slack <= got.min() and got.max() <= hi + slack, (got.min(), got.max())
        return
    slope = lipschitz(schedule, *normalised_range(entry, schedule))
    atol = 2 * eps * np.sqrt(max(entry.matrix.shape[-2:])) * steps * slope
    assert np.isfinite(atol) and atol < 0.1
    assert_close(gram, standard, atol=atol, xp=backend.xp, dtype=G.dtype, device=_xp.device(G))


def lipschitz(schedule, lower, upper):
    """Largest slope of the composed scalar map on the input's range: round-off amplification."""
    xs = np.linspace(float(np.min(lower)), float(np.max(upper)), 2001)
    slope = np.ones_like(xs)
    for c in schedule.polynomials():
        slope *= np.abs(sum((2 * k + 1) * ck * xs ** (2 * k) for k, ck in enumerate(c)))
        xs = polynomials.scalar_map(c, xs)
    return max(1.0, float(slope.max()))


@pytest.mark.dtypes("float32", "float64")  # tol needs 8 eps: nothing to ask of bfloat16
@pytest.mark.parametrize("name", ["gaussian", "ill_conditioned", "tall", "wide", "batched"])
@pytest.mark.parametrize("schedule_name", ["polar_express", "jordan", "you5", "cubic"])
def test_tol_reaches_svd_factor(backend, dtype, name, schedule_name):
    """Orthogonality error at most tol (plus a final rounding); distance as conditioning allows."""
    eps = eps_of(backend, dtype)
    tol = 1e-12 if dtype == "float64" else 1e-6
    G = backend.asarray(ZOO[name].matrix, dtype)
    Q = msign(G, tol=tol, schedule=schedule_name)
    q = _xp.to_numpy(Q).astype(np.float64)
    s = np.linalg.svd(q, compute_uv=False)
    n = max(q.shape[-2:])
    assert np.abs(s - 1).max() <= tol + 4 * eps * np.sqrt(n)
    a = _xp.to_numpy(G).astype(np.float64)
    sa = np.linalg.svd(a, compute_uv=False)
    kappa = (sa[..., 0] / sa[..., -1]).max()
    np.testing.assert_allclose(q, truncated_polar(a, 0.0), atol=tol + 8 * eps * n * kappa)


def test_tol_exempts_zero_matrices_and_completes_rank_deficient_ones():
    a = ZOO["batched"].matrix.copy()
    a[0, 1] = 0.0
    Q = msign(a, tol=1e-12)
    assert np.all(Q[0, 1] == 0.0)
    np.testing.assert_allclose(Q[1, 2], truncated_polar(a[1, 2], 0.0), atol=1e-10)
    # Rank-deficient: orthogonal to tol, and U_r V_r^T on the row space of G.
    g = ZOO["rank_deficient"].matrix
    Q = msign(g, tol=1e-10)
    assert np.abs(np.linalg.svd(Q, compute_uv=False) - 1).max() <= 1e-10 + 1e-13
    _, s, Vh = np.linalg.svd(g, full_matrices=False)
    Vr = Vh[s > 1e-10 * s[0]]
    expected = truncated_polar(g, 1e-10)
    np.testing.assert_allclose(Q @ Vr.T @ Vr, expected, atol=1e-9)


def test_tol_raises_when_out_of_reach():
    a = ZOO["ill_conditioned"].matrix
    with pytest.raises(ConvergenceError, match=r"did not reach orthogonality error 1e-12 in 3"):
        msign(a, tol=1e-12, max_steps=3)
    with pytest.raises(ValueError, match="steps or tol, not both"):
        msign(a, tol=1e-6, steps=3)
    with pytest.raises(ValueError, match="tol=1e-08 is below what float32 can reach"):
        msign(a.astype(np.float32), tol=1e-8)
