"""inverse_root / matrix_root / psd_power against float64 eigh and scipy, on every backend.

The oracles are independent: NumPy float64 ``eigh`` of the matrix exactly as the backend
holds it, with the documented regularisation written out here, and
``scipy.linalg.fractional_matrix_power``. Tolerances follow from first-order perturbation
theory: a backward error ``||E||_2 <= n eps ||A||_2`` in the working dtype moves
``A^alpha`` (0 < |alpha| <= 1, an operator-monotone power) by at most
``|alpha| kappa ||E||_2 / ||A||_2`` relative to ``||A^alpha||_2``, with ``kappa`` the
condition number of ``A + ridge`` over the kept eigenvalues; recomposing from the
eigenvectors adds ``n eps``, a factor 2 covers the second-order terms, and the final
rounding to the output dtype adds its own epsilon.
"""

from __future__ import annotations

import array_api_compat
import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

from matsign import ConvergenceError, _xp, inverse_root, matrix_root, psd_power
from matsign.roots import _largest_eigenvalue
from matsign.testing import assert_close

N = 16


def haar(n, rng):
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def with_eigenvalues(w, rng):
    """A symmetric float64 matrix ``Q diag(w) Q^T`` with a Haar-random Q."""
    Q = haar(len(w), rng)
    a = (Q * np.asarray(w, dtype=np.float64)) @ Q.T
    return (a + a.T) / 2


def psd_zoo(seed=0):
    """Symmetric PSD test matrices: name -> (..., n, n) float64."""
    rng = np.random.default_rng(seed)
    rank_deficient = np.r_[1.0, 0.5, 0.25, 0.125, np.zeros(N - 4)]
    batch = [with_eigenvalues(np.logspace(0, -k, N), rng) for k in (0, 1, 2, 3, 1, 2)]
    return {
        "well_conditioned": with_eigenvalues(np.logspace(0, -1, N), rng),
        "kappa_1e4": with_eigenvalues(np.logspace(0, -4, N), rng),
        "kappa_1e10": with_eigenvalues(np.logspace(0, -10, N), rng),
        "rank_deficient": with_eigenvalues(rank_deficient, rng),
        "diagonal": np.diag(np.logspace(1, -1, N)),
        "one_by_one": np.array([[2.5]]),
        "batched": np.stack(batch).reshape(2, 3, N, N),
        "zero": np.zeros((N, N)),
    }


ZOO = psd_zoo()
DEFINITE = ["well_conditioned", "kappa_1e4", "kappa_1e10", "diagonal", "one_by_one", "batched"]
RANK_RTOL = 0.05  # between the kept eigenvalues (>= 0.125) and the zeros, in every dtype


def eps_of(dtype, xp):
    return float(xp.finfo(dtype).eps)


def work_eps(backend, dtype):
    """Epsilon of the decomposition dtype: half precisions are raised to float32."""
    return min(eps_of(backend.dtypes[dtype], backend.xp), float(np.finfo(np.float32).eps))


def host(x):
    return _xp.to_numpy(x).astype(np.float64)


def oracle(a, alpha, *, eps=0.0, relative=False, rank_rtol=None):
    """Float64 ``(A + ridge)^alpha`` with the documented semantics, and its conditioning.

    Negative eigenvalues clip to zero; the ridge is ``eps`` or ``eps * lambda_max``; with
    ``rank_rtol`` the eigenvalues at or below ``rank_rtol * lambda_max`` map to zero.
    Returns the result, the condition number over the kept eigenvalues and the largest
    spectral norm of the result over the stack.
    """
    w, U = np.linalg.eigh((a + np.swapaxes(a, -1, -2)) / 2)
    w = np.maximum(w, 0.0)
    top = w[..., -1:]
    ridge = eps * top if relative else np.full_like(top, eps)
    keep = w > rank_rtol * top if rank_rtol is not None else np.ones(w.shape, dtype=bool)
    base = np.where(keep, w + ridge, 1.0)
    f = np.where(keep, base**alpha, 0.0)
    x = (U * f[..., None, :]) @ np.swapaxes(U, -1, -2)
    kept_min = np.where(keep, w + ridge, np.inf).min(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = np.where(keep.any(axis=-1), (top[..., 0] + ridge[..., 0]) / kept_min, 1.0)
    return x, float(kappa.max()), float(np.abs(f).max())


def bound(alpha, kappa, n, eps_work):
    """Relative error bound of ``A^alpha``: a backward error ``n eps ||A||`` moves it by
    ``|alpha| kappa n eps`` (first order), recomposing ``U f(L) U^T`` adds ``n eps``."""
    return 2 * (abs(alpha) * kappa + 1) * n * eps_work


def rounding_level(n, eps_in, eps_work):
    """The documented rounding level of a stored matrix, relative to ``||A||_2``."""
    return np.sqrt(n) * eps_in + n * eps_work


def numerically_singular(a, eps_in, eps_work):
    w = np.linalg.eigvalsh(a)
    scale = np.abs(w).max(axis=-1)
    return bool(np.any(w[..., 0] <= rounding_level(a.shape[-1], eps_in, eps_work) * scale))


def check(X, expected, tol, backend, A):
    """``X`` matches, and stayed in ``A``'s namespace, dtype and device."""
    assert_close(X, expected, atol=tol, xp=backend.xp, dtype=A.dtype, device=_xp.device(A))


# --- method "eigh" ---------------------------------------------------------------------------


@pytest.mark.parametrize("p", [1, 2, 4, 2.5])
@pytest.mark.parametrize("name", DEFINITE)
def test_eigh_inverse_root_matches_float64_oracle(backend, dtype, name, p):
    A = backend.asarray(ZOO[name], dtype)
    a = host(A)
    eps_in, eps_w = eps_of(A.dtype, backend.xp), work_eps(backend, dtype)
    if numerically_singular(a, eps_in, eps_w):  # kappa beyond this dtype: no silent garbage
        with pytest.raises(ValueError, match="singular to working precision"):
            inverse_root(A, p, method="eigh")
        return
    X = inverse_root(A, p, method="eigh")
    expected, kappa, top = oracle(a, -1 / p)
    tol = (bound(1 / p, kappa, a.shape[-1], eps_w) + eps_in) * top
    check(X, expected, tol, backend, A)


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("name", [*DEFINITE, "rank_deficient", "zero"])
def test_eigh_matrix_root_matches_float64_oracle(backend, dtype, name, p):
    """Positive roots need no regularisation, even for singular matrices."""
    A = backend.asarray(ZOO[name], dtype)
    a = host(A)
    X = matrix_root(A, p)
    expected, _, top = oracle(a, 1 / p)
    eps_in, eps_w = eps_of(A.dtype, backend.xp), work_eps(backend, dtype)
    # ||E|| <= level ||A|| moves eigenvalues by that much; x^(1/p) is 1/p-Hoelder continuous.
    level = rounding_level(a.shape[-1], 0.0, eps_w)
    tol = 2 * level ** (1 / p) * top + eps_in * top
    check(X, expected, tol, backend, A)


@pytest.mark.parametrize(("name", "options"), [
    ("kappa_1e10", {"eps": 1e-3, "eps_mode": "relative"}),
    ("kappa_1e4", {"eps": 1e-2}),
    ("batched", {"eps": 1e-3, "eps_mode": "relative"}),
    ("rank_deficient", {"rank_rtol": RANK_RTOL}),
    ("rank_deficient", {"rank_rtol": RANK_RTOL, "eps": 1e-3}),
    ("rank_deficient", {"eps": 1e-2, "eps_mode": "relative"}),
    ("zero", {"rank_rtol": RANK_RTOL}),
    ("zero", {"eps": 0.5}),
], ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={o}" for k, o in v.items()))
@pytest.mark.parametrize("p", [2, 4])
def test_eigh_regularisation_matches_float64_oracle(backend, dtype, name, options, p):
    A = backend.asarray(ZOO[name], dtype)
    a = host(A)
    X = inverse_root(A, p, method="eigh", **options)
    expected, kappa, top = oracle(a, -1 / p, eps=options.get("eps", 0.0),
                                  relative=options.get("eps_mode") == "relative",
                                  rank_rtol=options.get("rank_rtol"))
    eps_in, eps_w = eps_of(A.dtype, backend.xp), work_eps(backend, dtype)
    tol = (bound(1 / p, kappa, a.shape[-1], eps_w) + eps_in) * top
    check(X, expected, tol, backend, A)


def test_zero_matrix_with_pseudo_inverse_is_zero_even_inside_a_batch(backend, dtype):
    a = ZOO["batched"].copy()
    a[1, 2] = 0.0
    X = host(inverse_root(backend.asarray(a, dtype), 4, rank_rtol=RANK_RTOL))
    assert np.all(X[1, 2] == 0.0)
    assert np.all(np.isfinite(X))
    assert np.abs(X[0, 0]).max() > 0.5


def test_relative_ridge_scales_with_each_matrix_of_a_batch(backend):
    """Matrices 1e-3, 1 and 1e3 times one another: each gets its own lambda_max ridge."""
    base = ZOO["kappa_1e4"]
    a = np.stack([s * base for s in (1e-3, 1.0, 1e3)])
    A = backend.asarray(a, "float32")
    X = host(inverse_root(A, 2, eps=1e-2, eps_mode="relative"))
    expected, kappa, _ = oracle(host(A), -0.5, eps=1e-2, relative=True)
    for got, want in zip(X, expected, strict=True):
        err = np.abs(got - want).max() / np.abs(want).max()
        assert err < bound(0.5, kappa, N, work_eps(backend, "float32")) + 1e-7


@pytest.mark.parametrize("p", [1, 2, 4])
@pytest.mark.parametrize(("name", "options"), [
    ("well_conditioned", {}),
    ("kappa_1e4", {}),
    ("batched", {}),
    ("rank_deficient", {"rank_rtol": RANK_RTOL}),
])
def test_inverse_root_to_the_p_times_a_is_identity_on_the_range(backend, dtype, name,
                                                                 options, p):
    """``X^p A = P``, the projector onto the kept eigenvectors (``I`` when definite).

    Backward stability: X is the root of some ``A + E``, so ``X^p A - P = -X^p E`` is at
    most ``kappa ||E|| / ||A||``; rounding X to the output dtype adds ``p kappa eps_out``.
    """
    A = backend.asarray(ZOO[name], dtype)
    a = host(A)
    eps_in, eps_w = eps_of(A.dtype, backend.xp), work_eps(backend, dtype)
    if not options and numerically_singular(a, eps_in, eps_w):
        return  # covered by test_eigh_inverse_root_matches_float64_oracle
    x = host(inverse_root(A, p, **options))
    w, U = np.linalg.eigh(a)
    kept = w > options.get("rank_rtol", -np.inf) * w[..., -1:]
    projector = (U * kept[..., None, :]) @ np.swapaxes(U, -1, -2)
    _, kappa, _ = oracle(a, -1 / p, rank_rtol=options.get("rank_rtol"))
    n = a.shape[-1]
    tol = 2 * kappa * (n * eps_w + p * np.sqrt(n) * eps_in)
    np.testing.assert_allclose(np.linalg.matrix_power(x, p) @ a, projector, atol=tol)


@pytest.mark.parametrize("p", [1, 2, 3, 4, 2.5])
@pytest.mark.parametrize("name", ["well_conditioned", "kappa_1e4", "kappa_1e10", "diagonal",
                                  "one_by_one"])
def test_eigh_matches_scipy_fractional_matrix_power(name, p):
    """Independent oracle (Schur-Pade); both sides are within the float64 bound."""
    a = ZOO[name]
    expected = np.real(scipy.linalg.fractional_matrix_power(a, -1 / p))
    X = inverse_root(a, p, method="eigh")
    _, kappa, top = oracle(a, -1 / p)
    eps = float(np.finfo(np.float64).eps)
    np.testing.assert_allclose(X, expected, atol=2 * bound(1 / p, kappa, a.shape[-1], eps) * top)
    R = matrix_root(a, p, method="eigh")
    expected = np.real(scipy.linalg.fractional_matrix_power(a, 1 / p))
    np.testing.assert_allclose(R, expected, atol=2 * bound(1 / p, kappa, a.shape[-1], eps)
                               * np.linalg.norm(expected, 2))


@pytest.mark.parametrize("alpha", [-1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
def test_psd_power_matches_float64_oracle(backend, dtype, alpha):
    A = backend.asarray(ZOO["well_conditioned"], dtype)
    a = host(A)
    X = psd_power(A, alpha)
    expected, kappa, top = oracle(a, alpha)
    eps_in, eps_w = eps_of(A.dtype, backend.xp), work_eps(backend, dtype)
    # alpha = 2 is outside the operator-monotone range: |alpha| kappa^|alpha| bounds it.
    tol = (bound(abs(alpha), kappa ** max(1.0, abs(alpha)), N, eps_w) + eps_in) * top
    check(X, expected, tol, backend, A)


def test_psd_power_zero_with_pseudo_inverse_is_the_range_projector():
    a = ZOO["rank_deficient"]
    U = np.linalg.eigh(a)[1]
    projector = U[:, -4:] @ U[:, -4:].T
    np.testing.assert_allclose(psd_power(a, 0.0, rank_rtol=RANK_RTOL), projector, atol=1e-14)
    np.testing.assert_allclose(psd_power(a, 0.0, clip_negative=True), np.eye(N), atol=1e-14)


def test_clip_negative_treats_negative_eigenvalues_as_zero(backend):
    rng = np.random.default_rng(3)
    a = with_eigenvalues(np.r_[1.0, 0.5, -0.3, 0.2], rng)
    A = backend.asarray(a, "float32")
    with pytest.raises(ValueError, match=r"positive semi-definite.*-0\.3 \* \|\|A\|\|_2"):
        inverse_root(A, 2)
    X = inverse_root(A, 2, clip_negative=True, rank_rtol=RANK_RTOL)
    expected, kappa, top = oracle(host(A), -0.5, rank_rtol=RANK_RTOL)
    check(X, expected, bound(0.5, kappa, 4, work_eps(backend, "float32")) * top, backend, A)


def test_eigh_of_large_float32_numpy_stacks(backend):
    """n >= 128: NumPy float32 goes through SciPy's float32 LAPACK, one matrix at a time."""
    rng = np.random.default_rng(7)
    a = np.stack([with_eigenvalues(np.logspace(0, -k, 128), rng) for k in (1, 2)])
    A = backend.asarray(a, "float32")
    X = inverse_root(A, 4, method="eigh")
    expected, kappa, top = oracle(host(A), -0.25)
    eps_w = work_eps(backend, "float32")
    check(X, expected, (bound(0.25, kappa, 128, eps_w) + eps_w) * top, backend, A)


def test_eigh_retries_in_float64_when_the_decomposition_fails(monkeypatch):
    """A failing float32 decomposition is retried once in float64, then reported."""
    real_eigh = _xp.eigh
    calls = []

    def flaky_eigh(S, *, xp):
        calls.append(S.dtype)
        if S.dtype != np.float64:
            raise np.linalg.LinAlgError("Eigenvalues did not converge")
        return real_eigh(S, xp=xp)

    monkeypatch.setattr(_xp, "eigh", flaky_eigh)
    a = ZOO["kappa_1e4"].astype(np.float32)
    X = inverse_root(a, 4)
    assert X.dtype == np.float32
    assert calls == [np.float32, np.float64]
    expected, kappa, top = oracle(a.astype(np.float64), -0.25)
    np.testing.assert_allclose(X, expected, atol=bound(0.25, kappa, N, 1.2e-7) * top)
    monkeypatch.setattr(_xp, "eigh", lambda S, *, xp: real_eigh(S * np.nan, xp=xp))
    with pytest.raises(ConvergenceError, match="eigendecomposition failed in float64"):
        inverse_root(a, 4)


def test_eigh_failure_without_float64_is_reported(monkeypatch):
    import array_api_strict as xps

    def failing_eigh(S):
        raise np.linalg.LinAlgError("Eigenvalues did not converge")

    monkeypatch.setattr(xps.linalg, "eigh", failing_eigh)
    A = xps.asarray(ZOO["well_conditioned"], dtype=xps.float32, device=xps.Device("no_float64"))
    with pytest.raises(ConvergenceError, match=r"failed in \S*float32"):
        inverse_root(A, 2)


# --- method "newton" -------------------------------------------------------------------------


def newton_case(backend, dtype, name):
    """Options that make ``name`` well-posed for the iteration in ``dtype``.

    The iteration needs ``kappa(A + ridge) eps_work`` well below one; where the matrix's
    own kappa is too large for the dtype, a relative ridge of ``100 eps_work`` brings it
    down to about ``1 / (100 eps_work)``.
    """
    a = ZOO[name]
    w = np.linalg.eigvalsh(a)
    eps_w = eps_of(backend.dtypes[dtype], backend.xp)
    if w[..., -1].max() / w[..., 0].min() * eps_w < 0.01:
        return {}
    return {"eps": 100 * eps_w, "eps_mode": "relative"}


@pytest.mark.parametrize("p", [1, 2, 4])
@pytest.mark.parametrize("name", DEFINITE)
def test_newton_matches_float64_oracle(backend, dtype, name, p):
    """Every backend and dtype, bfloat16 included (the iteration runs in it)."""
    A = backend.asarray(ZOO[name], dtype)
    a = host(A)
    options = newton_case(backend, dtype, name)
    X = inverse_root(A, p, method="newton", **options)
    expected, kappa, top = oracle(a, -1 / p, eps=options.get("eps", 0.0), relative=bool(options))
    eps = eps_of(A.dtype, backend.xp)
    tol = (bound(1 / p, kappa, a.shape[-1], eps) + eps) * top
    check(X, expected, tol, backend, A)


@pytest.mark.parametrize("p", [2, 3])
def test_newton_matrix_root_matches_float64_oracle(backend, dtype, p):
    A = backend.asarray(ZOO["well_conditioned"], dtype)
    a = host(A)
    R = matrix_root(A, p, method="newton")
    expected, kappa, _ = oracle(a, 1 / p)
    eps = eps_of(A.dtype, backend.xp)
    tol = (bound(1 / p, kappa, N, eps) + eps) * np.abs(expected).max()
    check(R, expected, tol, backend, A)


def test_newton_runs_in_the_requested_dtype():
    torch = pytest.importorskip("torch")
    a = ZOO["well_conditioned"]
    A = torch.as_tensor(a, dtype=torch.float32)
    X16 = inverse_root(A, 4, dtype=torch.bfloat16)  # "auto": only the iteration runs in bf16
    X32 = inverse_root(A, 4, method="newton")
    assert X16.dtype == torch.float32
    diff = float((X16 - X32).abs().max() / X32.abs().max())
    eps16 = float(torch.finfo(torch.bfloat16).eps)
    assert 0 < diff < bound(0.25, 10.0, N, eps16)  # bf16 rounding: visible but bounded


def test_newton_relative_ridge_uses_lambda_max():
    """The figure in the issue: float32, kappa 1e4, ridge 1e-6 lambda_max, within 1e-4."""
    rng = np.random.default_rng(5)
    a = with_eigenvalues(np.logspace(0, -4, 64), rng).astype(np.float32)
    for p in (2, 4):
        X = inverse_root(a, p, method="newton", eps=1e-6, eps_mode="relative")
        expected, kappa, _ = oracle(a.astype(np.float64), -1 / p, eps=1e-6, relative=True)
        err = np.linalg.norm(X - expected) / np.linalg.norm(expected)
        assert err < min(1e-4, bound(1 / p, kappa, 64, float(np.finfo(np.float32).eps)))


@pytest.mark.parametrize("n", [1, 5, 48, 200])
def test_lanczos_estimate_of_lambda_max(n):
    """Exact for n <= 48 (a full Krylov space); within 1e-3 on a dense spectrum beyond."""
    rng = np.random.default_rng(n)
    w = np.sort(rng.uniform(0.5, 1.0, n))
    xp = array_api_compat.numpy
    a = np.stack([with_eigenvalues(w, rng), with_eigenvalues(3 * w, rng)])
    got = _largest_eigenvalue(a, xp=xp)[..., 0, 0]
    rtol = 1e-12 if n <= 48 else 1e-3
    np.testing.assert_allclose(got, [w[-1], 3 * w[-1]], rtol=rtol)
    assert np.all(got <= np.array([w[-1], 3 * w[-1]]) * (1 + 1e-12))


@pytest.mark.filterwarnings("ignore:overflow encountered", "ignore:invalid value encountered")
def test_newton_raises_when_it_cannot_converge(backend):
    """Zero eigenvalues stall (or, rounded below zero, diverge); negative ones diverge."""
    singular = backend.asarray(ZOO["rank_deficient"], "float32")
    with pytest.raises(ConvergenceError, match=r"diverged|did not reach tol"):
        inverse_root(singular, 2, method="newton")
    indefinite = backend.asarray(with_eigenvalues([1.0, 0.5, -0.5], np.random.default_rng(1)),
                                 "float32")
    with pytest.raises(ConvergenceError, match=r"diverged|did not reach"):
        inverse_root(indefinite, 2, method="newton")
    with pytest.raises(ConvergenceError, match="max_steps=2"):
        inverse_root(backend.asarray(ZOO["kappa_1e4"], "float32"), 2, max_steps=2)


@pytest.mark.parametrize("function", [inverse_root, matrix_root])
def test_deprecated_max_iter_warns_and_means_max_steps(backend, function):
    """The 0.1 spelling ``max_iter=`` still works for one release: same limit, same result."""
    A = backend.asarray(ZOO["well_conditioned"], "float32")
    alpha = -0.5 if function is inverse_root else 0.5
    expected, kappa, top = oracle(ZOO["well_conditioned"], alpha)
    with pytest.warns(DeprecationWarning, match=r"max_iter= is deprecated.*use max_steps="):
        X = function(A, 2, max_iter=40)
    check(X, expected, bound(alpha, kappa, N, work_eps(backend, "float32")) * top, backend, A)
    assert_close(X, _xp.to_numpy(function(A, 2, max_steps=40)), xp=backend.xp)  # same iteration
    with pytest.warns(DeprecationWarning), pytest.raises(ConvergenceError, match="max_steps=1"):
        function(A, 2, max_iter=1)  # the old keyword sets the same limit
    with pytest.raises(TypeError, match="both max_steps= and its deprecated spelling max_iter="):
        function(A, 2, max_steps=40, max_iter=40)


@pytest.mark.parametrize("check_every", [1, 3, 100])
def test_newton_check_every_reaches_the_same_answer(check_every):
    a = ZOO["kappa_1e4"]
    X = inverse_root(a, 4, method="newton", check_every=check_every)
    expected, kappa, top = oracle(a, -0.25)
    np.testing.assert_allclose(X, expected, atol=bound(0.25, kappa, N, 2.2e-16) * top)


@pytest.mark.filterwarnings("ignore:invalid value encountered")
@pytest.mark.parametrize("method", ["eigh", "newton"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_raises(backend, method, bad):
    a = ZOO["batched"].copy()
    a[1, 0, 2, 3] = bad
    with pytest.raises(ValueError, match="non-finite"):
        inverse_root(backend.asarray(a, "float32"), 2, method=method)


# --- the contract: shapes, dtypes, options ------------------------------------------------------


@pytest.mark.parametrize("shape", [(3,), (), (3, 4), (2, 3, 4)])
def test_non_square_or_fewer_than_two_axes_raise_naming_the_shape(backend, shape):
    A = backend.asarray(np.ones(shape), "float32")
    for func in (inverse_root, matrix_root):
        with pytest.raises(ValueError, match=r"\(\.\.\., n, n\); got \("):
            func(A, 2)
    with pytest.raises(ValueError, match=r"\(\.\.\., n, n\)"):
        psd_power(A, 0.5)


@pytest.mark.parametrize("p", [0, -2, float("nan"), float("inf")])
def test_bad_root_orders_raise(p):
    with pytest.raises(ValueError, match="p > 0"):
        inverse_root(np.eye(2), p)


def test_options_are_checked():
    A = np.eye(3)
    cases = [
        (TypeError, "real number for p", {"p": "2"}),
        (TypeError, "real number for p", {"p": True}),
        (ValueError, "method must be", {"method": "svd"}),
        (ValueError, "eps_mode must be", {"eps_mode": "ridge"}),
        (ValueError, "eps must be a finite number >= 0", {"eps": -1.0}),
        (ValueError, "rank_rtol must be", {"rank_rtol": float("nan")}),
        (ValueError, "integer root order", {"p": 2.5, "method": "newton"}),
        (ValueError, "integer root order", {"p": 2.5, "tol": 1e-6}),  # auto -> newton
        (ValueError, "rank_rtol needs method='eigh'", {"method": "newton", "rank_rtol": 0.1}),
        (ValueError, "clip_negative needs method='eigh'",
         {"method": "newton", "clip_negative": True}),
        (ValueError, "tol must be", {"method": "newton", "tol": 0.0}),
        (ValueError, "max_steps must be", {"method": "newton", "max_steps": 0}),
        (ValueError, "check_every must be", {"method": "newton", "check_every": 1.5}),
        (ValueError, "apply to method='newton', not 'eigh'", {"method": "eigh", "tol": 1e-6}),
        (TypeError, "real floating dtype", {"method": "eigh", "dtype": np.int32}),
    ]
    for error, message, options in cases:
        p = options.pop("p", 2)
        with pytest.raises(error, match=message):
            inverse_root(A, p, **options)


def test_singular_input_without_regularisation_raises_suggesting_both_fixes():
    with pytest.raises(ValueError, match=r"eps > 0 \(a ridge\) or rank_rtol \(a pseudo-inverse\)"):
        inverse_root(ZOO["rank_deficient"], 4)
    with pytest.raises(ValueError, match="singular"):
        inverse_root(ZOO["zero"], 2, eps=1e-3, eps_mode="relative")  # zero times lambda_max


@pytest.mark.parametrize("shape", [(0, 0), (2, 0, 0), (0, 3, 3)])
@pytest.mark.parametrize("method", ["eigh", "newton"])
def test_empty_shapes_return_empty(backend, shape, method):
    A = backend.asarray(np.zeros(shape), "float32")
    X = inverse_root(A, 2, method=method)
    assert tuple(X.shape) == shape and X.dtype == A.dtype


def test_integer_input_is_promoted_and_complex_rejected():
    X = inverse_root(np.array([[4, 0], [0, 1]]), 2)
    assert X.dtype == np.float64
    np.testing.assert_allclose(X, [[0.5, 0.0], [0.0, 1.0]], atol=1e-15)
    with pytest.raises(TypeError, match="complex"):
        inverse_root(np.eye(2, dtype=np.complex128), 2)


def test_only_the_symmetric_part_is_used():
    a = ZOO["well_conditioned"]
    skew = np.triu(np.ones((N, N)), 1) - np.tril(np.ones((N, N)), -1)
    for method in ("eigh", "newton"):
        np.testing.assert_allclose(inverse_root(a + 0.1 * skew, 2, method=method),
                                   oracle(a, -0.5)[0], atol=1e-12)


def test_input_is_not_mutated(backend):
    A = backend.asarray(ZOO["batched"], "float32")
    before = host(A).copy()
    inverse_root(A, 4, method="eigh", eps=1e-3)
    inverse_root(A, 4, method="newton", eps=1e-3, eps_mode="relative")
    matrix_root(A, 2, method="newton")
    psd_power(A, 0.5)
    np.testing.assert_array_equal(host(A), before)


# --- properties --------------------------------------------------------------------------------


@st.composite
def spd(draw):
    """Random SPD stacks with condition number at most 100."""
    n = draw(st.integers(1, 8))
    batch = draw(st.sampled_from([(), (3,)]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rows = [with_eigenvalues(np.exp(rng.uniform(np.log(1e-2), 0, n)), rng)
            for _ in range(int(np.prod(batch, dtype=int)))]
    return np.stack(rows).reshape(*batch, n, n)


ROOT = st.sampled_from([1, 2, 3, 4])
PROPERTY_TOL = 1e-10  # kappa <= 100 in float64: the bound above is below 1e-11


@settings(deadline=None)
@given(A=spd(), p=ROOT, scale=st.floats(1e-6, 1e6), method=st.sampled_from(["eigh", "newton"]))
def test_homogeneity(A, p, scale, method):
    """``(c A)^(-1/p) = c^(-1/p) A^(-1/p)``."""
    X = inverse_root(A, p, method=method)
    Y = inverse_root(scale * A, p, method=method)
    np.testing.assert_allclose(Y * scale ** (1 / p), X, atol=PROPERTY_TOL * np.abs(X).max())


@settings(deadline=None)
@given(A=spd(), p=ROOT, method=st.sampled_from(["eigh", "newton"]))
def test_root_times_inverse_root_is_identity(A, p, method):
    R = matrix_root(A, p, method=method)
    X = inverse_root(A, p, method=method)
    np.testing.assert_allclose(R @ X, np.broadcast_to(np.eye(A.shape[-1]), A.shape),
                               atol=PROPERTY_TOL)


@settings(deadline=None)
@given(A=spd(), a=st.floats(-1, 1), b=st.floats(-1, 1))
def test_powers_add(A, a, b):
    expected = psd_power(A, a + b)
    np.testing.assert_allclose(psd_power(A, a) @ psd_power(A, b), expected,
                               atol=PROPERTY_TOL * np.abs(expected).max())


@settings(deadline=None)
@given(A=spd(), p=ROOT, seed=st.integers(0, 2**32 - 1))
def test_orthogonal_similarity(A, p, seed):
    Q = haar(A.shape[-1], np.random.default_rng(seed))
    np.testing.assert_allclose(inverse_root(Q @ A @ Q.T, p), Q @ inverse_root(A, p) @ Q.T,
                               atol=PROPERTY_TOL * 10)


def test_newton_converges_where_the_products_are_blocked(monkeypatch):
    """The coupled iteration's powers are symmetric only up to rounding: they must not take
    the blocked symmetric product (which forms ``F F^T``), or it stalls above ``tol``
    (seen at n = 2048 on torch; here the blocking starts at 64 rows)."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(_xp, "SYMMETRIC_BLOCKED_FROM", 64)
    monkeypatch.setattr(_xp, "SYMMETRIC_LEAF", 32)
    rng = np.random.default_rng(5)
    Q, _ = np.linalg.qr(rng.standard_normal((128, 128)))
    d = np.logspace(-4.0, 0.0, 128)  # condition 1e4, as the benchmark's
    A = torch.as_tensor((Q * d) @ Q.T, dtype=torch.float32)
    X = inverse_root(A, 4, method="newton", eps=1e-6, eps_mode="relative")
    expected = (Q * (d + 1e-6) ** -0.25) @ Q.T  # closed form, float64
    error = np.linalg.norm(_xp.to_numpy(X) - expected) / np.linalg.norm(expected)
    assert error <= 1e4 * 128 * float(torch.finfo(torch.float32).eps)  # kappa n eps
