"""Bad input on every backend: a clear error (ValueError, TypeError or LinAlgError naming
the value) or the documented answer, never a crash of another kind or a silent wrong one.

Each test is one defect class of issue 14 with its minimal repros; the oracle is the
documented contract (the error type and what its message names, the all-NaN result of a
non-finite input, zeros for zero-size input).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import matsign
from matsign import duality, inverse_root, kron, msign, optim, polar, psd_power
from matsign._xp import to_numpy
from matsign.polynomials import Schedule

RNG = np.random.default_rng(0)


def _as(backend, a):
    return backend.asarray(a, "float64" if "float64" in backend.dtypes else "float32")


# --- 3: tol= on a non-finite input ---------------------------------------------------------


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_msign_with_tol_maps_non_finite_input_to_nan(backend, bad):
    G = RNG.standard_normal((2, 5, 4))
    G[1, 2, 3] = bad
    Q = to_numpy(msign(_as(backend, G), tol=1e-3))
    assert np.all(np.isnan(Q[1]))
    assert np.all(np.isfinite(Q[0]))  # the finite matrix of the stack converges alone
    s = np.linalg.svd(Q[0].astype(np.float64), compute_uv=False)
    assert np.max(np.abs(s - 1.0)) <= 1e-3 + 1e-5


# --- 9 and 10: exponents and keywords ------------------------------------------------------


@pytest.mark.parametrize("alpha", [math.nan, math.inf, -math.inf])
def test_psd_power_rejects_a_non_finite_exponent(alpha):
    with pytest.raises(ValueError, match="alpha"):
        psd_power(np.eye(2), alpha)


@pytest.mark.parametrize(("options", "error", "match"), [
    ({"method": "svd", "rank_rtol": math.nan}, ValueError, "rank_rtol"),
    ({"method": "svd", "rank_rtol": -1.0}, ValueError, "rank_rtol"),
    ({"method": "svd", "dtype": np.complex64}, TypeError, "real floating"),
    ({"method": "newton_schulz", "dtype": np.complex64}, TypeError, "real floating"),
    ({"steps": 2.5}, TypeError, "steps"),
    ({"steps": 0}, ValueError, "steps"),
    ({"steps": True}, TypeError, "steps"),
    ({"tol": -1.0}, ValueError, "tol"),
    ({"tol": math.nan}, ValueError, "tol"),
    ({"tol": 1e-3, "max_steps": 0}, ValueError, "max_steps"),
    ({"tol": 1e-3, "max_steps": 2.5}, TypeError, "max_steps"),
])
def test_msign_keywords_are_validated(options, error, match):
    with pytest.raises(error, match=match):
        msign(np.eye(3), **options)


def test_torch_integer_compute_dtype_is_a_type_error():
    torch = pytest.importorskip("torch")
    for method in ("svd", "newton_schulz"):
        with pytest.raises(TypeError, match="real floating"):
            msign(torch.eye(3), method=method, dtype=torch.int32)


# --- 11 and 12: arguments of another kind --------------------------------------------------


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="every"):
        optim.shampoo(every=0)
    with pytest.raises(TypeError, match="Stepper"):
        optim.chain(1, 2)
    with pytest.raises(ValueError, match="tol"):
        duality.spectral_norm(np.eye(3), tol=-1.0)
    with pytest.raises(ValueError, match="max_steps"):
        duality.spectral_norm(np.eye(3), max_steps=0)
    with pytest.raises(ValueError, match="check_every"):
        inverse_root(np.eye(2), 2, method="eigh", check_every=0)
    with pytest.raises(TypeError, match="max_dim"):
        kron.kron_layout((4, 6), max_dim=2.5)
    with pytest.raises(ValueError, match="max_dim"):
        kron.kron_layout((4, 6), max_dim=0)
    with pytest.raises(ValueError, match="shape"):
        kron.kron_layout((4, -6))
    layout = kron.kron_layout((4, 6), max_dim=4)
    with pytest.raises(ValueError, match="shape"):
        kron.to_blocks(np.ones((4, 5)), layout)
    with pytest.raises(ValueError, match="shape"):
        kron.from_blocks(np.ones((1, 2, 4, 3)), layout)
    for normalizer in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="normalizer"):
            Schedule("bad", ((1.5, -0.5),), normalizer=normalizer)


def test_mixed_libraries_and_a_foreign_xp_are_type_errors():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="single array library"):
        msign(np.eye(3), xp=torch)  # xp= of another library than the array's
    state = kron.init_factors(np.ones((4, 3)))
    with pytest.raises(TypeError, match="single array library"):
        kron.update_factors(torch.ones(4, 3), state)
    jnp = pytest.importorskip("jax.numpy")
    with pytest.raises(TypeError, match="single array library"):
        kron.update_factors(jnp.ones((4, 3)), state)  # JAX and NumPy state arrays


def test_torch_optimizers_check_their_hyperparameters_and_inputs():
    torch = pytest.importorskip("torch")
    from matsign.optim.torch import Lion, Muon

    w = torch.nn.Parameter(torch.zeros(3, 3))
    for betas in ((1.5, 0.9), (0.9, -0.1), (math.nan, 0.9)):
        with pytest.raises(ValueError, match="beta"):
            Lion([w], betas=betas)
    step = optim.muon(0.1)
    with pytest.raises(TypeError, match="integer"):
        step.init(torch.zeros(3, 3, dtype=torch.int64))
    state = step.init(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="shape"):
        step.update(torch.ones(3, 4), state, torch.zeros(3, 3))
    Muon([w])  # a good one still builds


# --- 2: Kronecker preconditioning keeps float, refuses complex -----------------------------


def test_kron_integer_gradients_are_preconditioned_in_float(backend):
    G = RNG.integers(-3, 4, size=(4, 3))
    F = _as(backend, G)
    state = kron.update_factors(F, kron.init_factors(F))
    pre = kron.preconditioners(state, eps=1e-6, eps_mode="relative")
    as_int = backend.xp.astype(backend.xp.asarray(G, device=backend.device), backend.xp.int32)
    out = kron.precondition(as_int, pre)
    assert backend.xp.isdtype(out.dtype, "real floating")
    np.testing.assert_allclose(to_numpy(out), to_numpy(kron.precondition(F, pre)), rtol=1e-5)
    bases = kron.eigenbases(state)
    assert backend.xp.isdtype(kron.project(as_int, bases).dtype, "real floating")


def test_kron_complex_gradients_are_refused():
    state = kron.init_factors(np.ones((4, 3)))
    pre = kron.preconditioners(kron.update_factors(np.eye(4, 3), state), eps=1e-3)
    with pytest.raises(TypeError, match="complex"):
        kron.precondition(np.ones((4, 3), dtype=np.complex128), pre)


# --- 5: zero-size input --------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (2, 0, 3)])
def test_zero_size_inputs_give_zeros(backend, shape):
    G = _as(backend, np.zeros(shape))
    for norm in duality.NORMS:
        if norm == "conv":
            continue
        out = to_numpy(duality.norm(G, norm))
        assert out.shape == shape[:-2] and np.all(out == 0), norm
        assert np.all(to_numpy(duality.dual_norm(G, norm)) == 0), norm
    assert np.all(to_numpy(duality.spectral_norm(G)) == 0)
    conv = _as(backend, np.zeros((0, 3, 3, 3)))
    assert float(duality.norm(conv, "conv")) == 0.0


def test_zero_size_parameters_step_to_zero_updates(backend):
    for shape in [(0, 3), (4, 0)]:
        P = _as(backend, np.zeros(shape))
        for name, stepper in [("shampoo", optim.shampoo(0.1)), ("soap", optim.soap(0.1)),
                              ("muon", optim.muon(0.1))]:
            state = stepper.init(P)
            for _ in range(2):
                u, state = stepper.update(P, state, P)
            assert tuple(u.shape) == shape, name
    layout = kron.kron_layout((0, 3))
    assert layout.shape == (0, 3)


# --- 6: non-finite input to the decompositions on torch ------------------------------------


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_non_finite_input_to_decompositions_gives_nan_not_a_crash(backend):
    G = RNG.standard_normal((2, 4, 3))
    G[0, 1, 1] = np.nan
    X = _as(backend, G)
    err = to_numpy(matsign.orthogonality_error(X))
    assert np.isnan(err[0]) and np.isfinite(err[1])
    for norm in ("spectral", "rms_to_rms"):
        out = to_numpy(duality.norm(X, norm))
        assert np.isnan(out[0]) and np.isfinite(out[1]), norm
        out = to_numpy(duality.dual_norm(X, norm))
        assert np.isnan(out[0]) and np.isfinite(out[1]), norm


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_eigenbases_of_non_finite_factors_are_nan_not_a_crash(backend):
    """The rule of the decompositions: a non-finite block gives NaN (so a skipped SOAP
    step selects it away on a device), the finite blocks their bases."""
    G = np.array([[1.0, np.nan, 0.0, 0.0], [0.0, 1.0, 2.0, 1.0]])
    X = _as(backend, G)
    state = kron.update_factors(X, kron.init_factors(X, max_dim=2))
    bases = kron.eigenbases(state)
    Q = to_numpy(bases.bases[1])  # the column mode: blocks (0:2) with NaN, (2:4) finite
    assert np.all(np.isnan(Q[0, 0])) and np.all(np.isfinite(Q[0, 1]))
    np.testing.assert_allclose(Q[0, 1].T @ Q[0, 1], np.eye(2), atol=1e-5)


# --- the ecosystem's conventions -----------------------------------------------------------


def test_linear_algebra_failures_are_numpy_linalg_errors():
    with pytest.raises(np.linalg.LinAlgError, match="singular"):
        inverse_root(np.zeros((2, 2)) + np.diag([1.0, 0.0]), 2)
    with pytest.raises(np.linalg.LinAlgError, match="indefinite"):
        inverse_root(np.diag([1.0, -1.0]), 2)
    with pytest.raises(np.linalg.LinAlgError):
        msign(RNG.standard_normal((8, 8)), tol=1e-12, max_steps=2)
    assert issubclass(matsign.ConvergenceError, ArithmeticError)  # as before, too
    assert issubclass(matsign.LinAlgError, ValueError)


def test_left_polar_decomposition():
    """scipy.linalg.polar(side='left'): G = H Q with H = (G G^T)^(1/2), symmetric PSD."""
    scipy_linalg = pytest.importorskip("scipy.linalg")
    G = RNG.standard_normal((3, 5))
    Q, H = polar(G, side="left")
    Qs, Hs = scipy_linalg.polar(G, side="left")
    np.testing.assert_allclose(Q, Qs, atol=1e-10)
    np.testing.assert_allclose(H, Hs, atol=1e-10)
    np.testing.assert_allclose(H @ Q, G, atol=1e-10)
    with pytest.raises(ValueError, match="side"):
        polar(G, side="top")


# --- 8: overflow and underflow edges -------------------------------------------------------


@pytest.mark.parametrize("scale", [1.7e308, 4e-323, 1e-310])
def test_extreme_scales_keep_the_polar_factor(scale):
    """Entries near the float64 maximum (||G||_F overflows) or subnormal: the same U V^T
    as at scale 1 (the factor does not depend on the scale), H = scale * H(G / scale)."""
    G = np.array([[3.0, 1.0], [0.5, 2.0]]) / 3.0
    U, _, Vh = np.linalg.svd(G)
    rtol = 1e-12 if scale > 1e-300 else 1e-1  # subnormal inputs keep few digits
    for options in ({"method": "svd"}, {"schedule": "quintic", "steps": 25}):
        Q = msign(G * scale, **options)
        np.testing.assert_allclose(Q, U @ Vh, rtol=rtol, atol=rtol)
    if scale > 1:
        Q, H = polar(G * scale, method="svd")
        assert np.all(np.isfinite(H))
        np.testing.assert_allclose(H / scale, Q.T @ G, rtol=1e-12)


def test_float32_extremes_keep_the_polar_factor():
    G = (np.array([[3.0, 1.0], [0.5, 2.0]]) * 1e38).astype(np.float32)
    U, _, Vh = np.linalg.svd(G.astype(np.float64) / 1e38)
    for options in ({"method": "svd"}, {"schedule": "quintic", "steps": 25}):
        np.testing.assert_allclose(msign(G, **options), U @ Vh, atol=1e-5)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_a_power_that_overflows_the_dtype_raises():
    with pytest.raises(np.linalg.LinAlgError, match="overflows float32"):
        inverse_root(np.diag([1.0, 1e-4]).astype(np.float32), 1 / 20)
    out = inverse_root(np.diag([1.0, 1e-4]), 1 / 20)  # float64 holds 1e80
    np.testing.assert_allclose(np.diag(out), [1.0, 1e80], rtol=1e-12)


# --- 7: state dicts of another model -------------------------------------------------------


def test_a_state_dict_with_wrong_shapes_is_refused_before_anything_changes():
    torch = pytest.importorskip("torch")
    from matsign.optim.torch import AdamW, Muon, Shampoo

    for cls, kwargs in ((Muon, {"ns_dtype": None}), (AdamW, {}), (Shampoo, {})):
        small = torch.nn.Parameter(torch.randn(4, 3))
        other = cls([small], **kwargs)
        small.grad = torch.randn(4, 3)
        other.step()
        w = torch.nn.Parameter(torch.randn(5, 3))
        opt = cls([w], **kwargs)
        w.grad = torch.randn(5, 3)
        opt.step()
        before = copy_state(opt)
        with pytest.raises(ValueError, match="another model"):
            opt.load_state_dict(other.state_dict())
        after = copy_state(opt)
        assert before.keys() == after.keys()
        for key in before:
            assert torch.equal(before[key], after[key]), (cls.__name__, key)


def copy_state(opt):
    return {(i, k): v.clone() for i, s in enumerate(opt.state.values()) for k, v in s.items()
            if hasattr(v, "clone")}


# --- check_finite: one meaning everywhere ---------------------------------------------------


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("routine", ["inverse_root", "matrix_root", "psd_power", "msign"])
def test_check_finite_means_the_same_in_every_routine(backend, routine):
    """True: ValueError naming the routine; False: NaN for the bad matrix, the finite
    ones exact (float64 eigh / SVD oracles)."""
    A = np.stack([np.diag([4.0, 1.0]), np.diag([np.nan, 1.0])])
    call = {"inverse_root": lambda a, **k: inverse_root(a, 2, **k),
            "matrix_root": lambda a, **k: matsign.matrix_root(a, 2, **k),
            "psd_power": lambda a, **k: psd_power(a, -0.5, **k),
            "msign": lambda a, **k: msign(a, method="svd", **k)}[routine]
    with pytest.raises(ValueError, match=routine):
        call(_as(backend, A), check_finite=True)
    out = to_numpy(call(_as(backend, A), check_finite=False))
    assert np.all(np.isnan(out[1]))
    expected = {"inverse_root": np.diag([0.5, 1.0]), "matrix_root": np.diag([2.0, 1.0]),
                "psd_power": np.diag([0.5, 1.0]), "msign": np.eye(2)}[routine]
    np.testing.assert_allclose(out[0], expected, atol=1e-6)


# --- 4: the default rank cut of the SVD path --------------------------------------------------


def _rank_cases(n, rng):
    g = rng.standard_normal((n, n))
    g[: n // 2] = 0
    return {"outer": (rng.standard_normal((n, 1)) @ rng.standard_normal((1, n)), 1),
            "zero rows": (g, n - n // 2),
            "rank n/4": (rng.standard_normal((n, n // 4)) @ rng.standard_normal((n // 4, n)),
                         n // 4)}


@pytest.mark.parametrize("n", [64, 192])
def test_exactly_rank_r_float32_inputs_keep_rank_r(backend, n):
    """The SVD's rounding noise on exactly rank-deficient inputs stays below the cut:
    U_r V_r^T has exactly r unit singular values (float64 SVD of the result)."""
    rng = np.random.default_rng(n)
    for name, (A, r) in _rank_cases(n, rng).items():
        X = backend.asarray(A.astype(np.float32), "float32")
        Q = to_numpy(msign(X, method="svd")).astype(np.float64)
        s = np.linalg.svd(Q, compute_uv=False)
        assert np.sum(s > 0.5) == r, name
        np.testing.assert_allclose(s[:r], 1.0, atol=1e-4, err_msg=name)


def test_full_rank_float32_gaussians_keep_every_direction(backend):
    """Directions well above the rounding level are kept: for these draws sigma_min /
    sigma_max (float64 SVD) is well above the cut eps * sqrt(n)."""
    eps = float(np.finfo(np.float32).eps)
    for seed in range(2):
        A = np.random.default_rng(100 + seed).standard_normal((256, 256)).astype(np.float32)
        s64 = np.linalg.svd(A.astype(np.float64), compute_uv=False)
        assert s64[-1] / s64[0] > 10 * eps * np.sqrt(256)  # the draw is clearly full rank
        Q = to_numpy(msign(backend.asarray(A, "float32"), method="svd")).astype(np.float64)
        s = np.linalg.svd(Q, compute_uv=False)
        np.testing.assert_allclose(s, 1.0, atol=1e-3)
