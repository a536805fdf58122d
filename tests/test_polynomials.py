"""Schedules: the designer against published lists and a high-precision oracle, exact bands
against dense sampling and closed forms, the compatibility check, the preset table.

Everything here is host-side float64 (a schedule is a small table), so no backend fixture.
"""

from __future__ import annotations

import inspect
import itertools
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matsign import _remez, polynomials
from matsign.polynomials import Schedule, band, bands, check, design, scalar_map

ROOT = Path(__file__).resolve().parents[1]

# --- Published lists and the parameters they were generated with ----------------------------

#: Amsel et al., arXiv:2505.16932, Appendix G: ``optimal_composition(1e-3, ...)`` defaults.
PAPER_CUSHION = 0.02407327424182761

#: github.com/NoahAmsel/PolarExpress, figures/my_coeffs.py: "params={'l': 0.0001,
#: 'num_iters': 12, 'degree': 5, 'safety_factor_eps': 0.01, 'cushion': 0.02}", first 8 of 12.
REFERENCE_REPO_L1E4 = (
    (8.26826761617386, -23.244772276425607, 16.74325258084675),
    (4.130435382585462, -2.9053989321917046, 0.5236239165767872),
    (4.1135435806990275, -2.9010240702937273, 0.5241919215767552),
    (4.045591452763696, -2.883735439312804, 0.526662708458103),
    (3.7642732596380593, -2.757104758646495, 0.5233594438866467),
    (2.9163219803112828, -2.139449485049447, 0.454785394201871),
    (2.04450392702086, -1.4053479474983366, 0.376095450439581),
    (1.8586741681821393, -1.2156737051065885, 0.35703851920110663),
)

#: Tuned for AOL preconditioning (github.com/thib-s/flash-newton-schulz, as copied in
#: Emerging-Optimizers' "aol" set): a list meant for another normaliser.
AOL_LIST = (
    (4.0098, -7.0585, 2.4635),
    (3.4585, -5.5479, 2.5959),
    (2.7573, -3.2939, 1.4254),
    (2.7215, -3.0494, 1.3169),
)


def max_abs_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float))))


def assert_paper_list(got, published):
    """All but the 7th polynomial to 1e-12; the 7th carries the paper's own float64 error."""
    errors = [max_abs_diff(g, p) for g, p in zip(got, published, strict=True)]
    assert max(errors[:6] + errors[7:]) < 1e-12, errors
    assert errors[6] < 3e-11, errors  # see test_paper_seventh_polynomial_error_is_the_papers


def test_design_reproduces_paper_list():
    assert_paper_list(design(1e-3, 8, cushion=PAPER_CUSHION).coefficients,
                      polynomials._PE_PAPER_RAW)


def test_paper_seventh_polynomial_error_is_the_papers():
    """The 7th interval is 2.4e-3 wide: a float64 Remez solve loses ~eps / width^2 there."""
    mpmath = pytest.importorskip("mpmath")
    lo = 1e-3
    for c in design(1e-3, 6, cushion=PAPER_CUSHION).coefficients:
        lo = float(scalar_map(c, lo))
    exact = mp_minimax(mpmath, lo, 2 - lo, 5)
    ours = design(1e-3, 7, cushion=PAPER_CUSHION).coefficients[6]
    assert max_abs_diff(ours, exact) < 1e-13
    assert max_abs_diff(polynomials._PE_PAPER_RAW[6], exact) > 1e-11


def test_polar_express_preset_is_paper_list_with_safety():
    raw = design(1e-3, 8, cushion=PAPER_CUSHION).coefficients
    expected = [tuple(c / 1.01 ** (2 * k + 1) for k, c in enumerate(p)) for p in raw[:-1]]
    schedule = polynomials.preset("polar_express")
    assert_paper_list(schedule.coefficients, [*expected, raw[-1]])
    assert schedule.coefficients[-1] == (1.875, -1.25, 0.375) and schedule.normalizer == 1.01


def test_design_reproduces_modded_nanogpt_list():
    """Comment there: 'num_iters=5, safety_factor=2e-2, cushion=2' -- the cushion is 2 %."""
    got = design(1e-3, 5, safety=1.02, cushion=0.02)
    published = polynomials.preset("polar_express_5")
    assert max_abs_diff(got.coefficients, published.coefficients) < 1e-12
    assert got.normalizer == published.normalizer == 1.02


def test_design_reproduces_reference_repo_list_where_its_float64_is_accurate():
    """Safety inside the loop and the ``l <= u`` cap: the reference implementation's output.

    Its last four polynomials sit on intervals 4e-4 to 5e-6 wide, where its float64
    solve (and its ``15/8 / u`` shortcut) is off by up to 1e-4; ours agree with mpmath.
    """
    got = design(1e-4, 12, safety=1.01, cushion=0.02).coefficients
    assert max_abs_diff(got[:8], REFERENCE_REPO_L1E4) < 1e-12


def test_cans_list_is_the_greedy_design_rounded_to_four_decimals():
    got = np.round(np.array(design(1e-3, 5).coefficients), 4)
    np.testing.assert_array_equal(got, np.array(polynomials.preset("cans").coefficients))


# --- The minimax polynomial --------------------------------------------------------------------


def mp_minimax(mpmath, lower, upper, degree, dps=60):
    """Independent oracle: Remez in mpmath at ``dps`` digits, extrema by ``polyroots``."""
    with mpmath.workdps(dps):
        return _mp_remez(mpmath, lower, upper, degree, dps)


def _polyroots(mpmath, ascending):
    """Roots of the polynomial with ``ascending`` coefficients (mpmath 1.4 wants ``asc``)."""
    if "asc" in inspect.signature(mpmath.polyroots).parameters:
        return mpmath.polyroots(ascending, maxsteps=500, extraprec=500, asc=True)
    return mpmath.polyroots(ascending[::-1], maxsteps=500, extraprec=500)


def _mp_remez(mpmath, lower, upper, degree, dps):
    l, u, q = mpmath.mpf(lower), mpmath.mpf(upper), (degree - 1) // 2
    points = [l + (u - l) * (1 - mpmath.cos(mpmath.pi * i / (q + 1))) / 2 for i in range(q + 2)]
    for _ in range(100):
        rows = [[*(x ** (2 * k + 1) for k in range(q + 1)), (-1) ** i]
                for i, x in enumerate(points)]
        solution = mpmath.lu_solve(mpmath.matrix(rows), mpmath.matrix([1] * (q + 2)))
        c = [solution[k] for k in range(q + 1)]
        derivative = [(2 * k + 1) * c[k] for k in range(q + 1)]  # in y = x^2, ascending
        roots = _polyroots(mpmath, derivative)
        inside = sorted(mpmath.sqrt(mpmath.re(y)) for y in roots
                        if abs(mpmath.im(y)) < mpmath.mpf(10) ** (-dps // 2)
                        and l * l < mpmath.re(y) < u * u)
        new = [l, *inside, u]
        moved = max(abs(a - b) for a, b in zip(new, points, strict=True))
        points = new
        if moved < mpmath.mpf(10) ** (-dps + 10):
            break
    return [float(ck) for ck in c]


@pytest.mark.parametrize("degree", [5, 7, 9])
@pytest.mark.parametrize("interval", [(1e-3, 1.0), (0.02407, 1.0), (0.3, 1.0), (0.5, 1.7),
                                      (0.9988, 1.0012), (1 - 1e-6, 1 + 1e-6), (1e-6, 1.0)])
def test_minimax_matches_high_precision_oracle(degree, interval):
    mpmath = pytest.importorskip("mpmath")
    got = _remez.minimax_odd(*interval, degree)
    expected = mp_minimax(mpmath, *interval, degree)
    assert max_abs_diff(got, expected) <= 1e-14 * max(1.0, max(abs(c) for c in expected))


@pytest.mark.parametrize("interval", [(1e-3, 1.0), (0.1, 1.0), (0.5, 2.0), (0.99, 1.01)])
def test_cubic_closed_form_matches_remez(interval):
    closed = _remez.minimax_odd(*interval, 3)
    exchanged, _ = _remez.remez(*interval, 3)
    assert max_abs_diff(closed, exchanged) < 1e-12


@settings(deadline=None)
@given(lower=st.floats(1e-6, 0.95), width=st.floats(1e-3, 2.0), degree=st.sampled_from([3, 5, 7]))
def test_minimax_equioscillates(lower, width, degree):
    """Chebyshev's alternation: |1 - p| <= E everywhere, = E at q + 2 alternating points."""
    upper = lower + width
    c = _remez.minimax_odd(lower, upper, degree)
    x = np.concatenate([np.linspace(lower, upper, 20001), np.geomspace(lower, upper, 20001)])
    error = 1 - scalar_map(c, np.sort(x))
    level = abs(1 - float(scalar_map(c, lower)))  # the left endpoint is on the reference
    scale = sum(abs(ck) * upper ** (2 * k + 1) for k, ck in enumerate(c))
    noise = 100 * np.finfo(float).eps * scale  # float64 evaluation of 1 - p(x)
    assert np.abs(error).max() <= level * (1 + 1e-9) + noise
    assert alternations(error, level - max(1e-5 * level, noise)) >= (degree - 1) // 2 + 2


def alternations(error, threshold):
    """Sign changes + 1 among the errors of magnitude at least ``threshold``."""
    signs = np.sign(error[np.abs(error) >= threshold])
    return 1 + int(np.count_nonzero(np.diff(signs))) if signs.size else 0


def test_narrow_interval_gives_the_pade_limit():
    assert _remez.minimax_odd(1 - 1e-11, 1 + 1e-11, 5) == (1.875, -1.25, 0.375)
    assert _remez.minimax_odd(2 - 1e-12, 2 + 1e-12, 3) == pytest.approx((0.75, -0.0625), rel=1e-15)


@pytest.mark.parametrize("degree", [1, 3, 5, 7, 9])
def test_pade_fixes_one_to_order_q(degree):
    """p(1) = 1 and p^(j)(1) = 0 for j = 1..q: the Newton–Schulz polynomial of that degree."""
    monomials = np.zeros(degree + 1)
    monomials[1::2] = [float(c) for c in _remez.pade(degree)]
    poly = np.polynomial.Polynomial(monomials)
    assert poly(1.0) == pytest.approx(1.0, abs=1e-15)
    for j in range(1, (degree - 1) // 2 + 1):
        assert poly.deriv(j)(1.0) == pytest.approx(0.0, abs=1e-12)


def test_presets_use_the_pade_polynomials():
    for name, degree in (("cubic", 3), ("quintic", 5), ("septic", 7)):
        expected = tuple(float(c) for c in _remez.pade(degree))
        assert polynomials.preset(name).coefficients == (expected,)


def test_remez_reports_failure_clearly():
    with pytest.raises(RuntimeError, match=r"did not converge for degree 7 on \[0.001, 1.0\]"):
        _remez.remez(1e-3, 1.0, 7, max_steps=1)


@pytest.mark.parametrize(("args", "match"), [
    ((0.0, 1.0, 5), "0 < lower <= upper"),
    ((0.5, 0.4, 5), "0 < lower <= upper"),
    ((0.1, 1.0, 4), "positive odd integer"),
    ((0.1, 1.0, 0), "positive odd integer"),
])
def test_minimax_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        _remez.minimax_odd(*args)


# --- design ------------------------------------------------------------------------------------


@settings(deadline=None)
@given(lower=st.floats(1e-6, 0.9), steps=st.integers(1, 6), degree=st.sampled_from([3, 5, 7]))
def test_design_band_is_the_greedy_interval(lower, steps, degree):
    """Amsel et al., Thm 4.1: each image is [p_t(l_t), 2 - p_t(l_t)], hence so is the band."""
    schedule = design(lower, steps, degree)
    lo = lower
    for c in schedule.coefficients:
        lo = float(scalar_map(c, lo))
    got = band(schedule, lower)
    # Rounded coefficients level the interior extrema only to ~eps sum|c| per step, Remez
    # stops once they are level to its rtol (1e-13) of the error (at most 1), and each
    # later step's slope (at most c0 near the lower end) amplifies both. (The slow
    # hypothesis profile found lower=5.9e-5, 5 steps, degree 5 off by 4e-11 before the
    # Remez term was counted.)
    tol, eps = 0.0, float(np.finfo(np.float64).eps)
    for c in schedule.coefficients:
        tol = tol * abs(c[0]) + 8 * eps * sum(abs(ck) for ck in c) + 1e-13
    assert abs(got[0] - lo) <= tol and abs(got[1] - (2 - lo)) <= tol
    assert schedule.degree == degree and schedule.default_steps == steps


def test_design_degree_seven_converges_faster_than_five():
    seven, five = band(design(1e-3, 4, 7), 1e-3), band(design(1e-3, 4, 5), 1e-3)
    assert 1 - seven[0] < (1 - five[0]) / 3


def test_design_safety_keeps_values_above_the_interval_in_range():
    """The point of the safety factor: inputs 1 % above u stay below 2 (check with rtol)."""
    assert check(design(1e-3, 8, safety=1.01, cushion=PAPER_CUSHION), 1e-3, rtol=0.005) == []
    assert check(design(1e-3, 8), 1e-3, rtol=0.005) != []


def test_design_cushion_bounds_the_slope_at_zero():
    plain, cushioned = design(1e-3, 1), design(1e-3, 1, cushion=0.1)
    assert cushioned.coefficients[0][0] < plain.coefficients[0][0]
    lo, hi = band(cushioned, 1e-3)
    assert lo + hi == pytest.approx(2.0)  # recentred on [l, u]


def test_design_names_its_parameters():
    s = design(0.01, 3, safety=1.01, cushion=0.02)
    assert s.name == "design(lower=0.01, steps=3, degree=5, safety=1.01, cushion=0.02)"
    assert s.tail == "stop" and s.normalizer == 1.01
    assert design(0.01, 3, normalizer=1.0, name="mine").normalizer == 1.0


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"lower": 0.0, "steps": 3}, "0 < lower <= 1"),
    ({"lower": 1.5, "steps": 3}, "0 < lower <= 1"),
    ({"lower": 0.1, "steps": 0}, "steps >= 1"),
    ({"lower": 0.1, "steps": 2.5}, "steps >= 1"),
    ({"lower": 0.1, "steps": 3, "degree": 6}, "positive odd integer"),
    ({"lower": 0.1, "steps": 3, "safety": 0.99}, "safety must be >= 1"),
    ({"lower": 0.1, "steps": 3, "cushion": 1.0}, r"cushion must be in \[0, 1\)"),
])
def test_design_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        design(**kwargs)


# --- band --------------------------------------------------------------------------------------


def sampled_band(schedule, lower, upper=1.0, steps=None):
    """Independent oracle: compose the maps on 400k points (log and linear grids)."""
    x = np.concatenate([np.geomspace(lower, upper, 200_001), np.linspace(lower, upper, 200_001)])
    for c in schedule.polynomials(steps):
        x = scalar_map(c, x)
    return float(x.min()), float(x.max())


@pytest.mark.parametrize("name", polynomials.names())
@pytest.mark.parametrize("lower", [1e-3, 1e-2, 0.3])
def test_band_matches_dense_sampling(name, lower):
    schedule = polynomials.preset(name)
    lo, hi = band(schedule, lower)
    s_lo, s_hi = sampled_band(schedule, lower)
    assert lo <= s_lo + 1e-12 and s_hi <= hi + 1e-12  # the band contains every sample
    assert s_lo - lo < 1e-6 and hi - s_hi < 1e-6  # and the samples reach its ends


@pytest.mark.parametrize("lower", [1e-3, 0.1, 0.5, 0.9])
def test_cubic_band_closed_form(lower):
    """p(x) = 1.5x - 0.5x^3 increases on [0, 1] with fixed point 1: band = [p^k(l), 1]."""
    expected = lower
    for k in range(1, 6):
        expected = 1.5 * expected - 0.5 * expected**3
        assert band("cubic", lower, steps=k) == pytest.approx((expected, 1.0), abs=1e-15)


def test_band_at_the_fixed_point_and_step_zero():
    for name in ("cubic", "quintic", "septic"):
        assert band(name, 1.0, steps=7) == pytest.approx((1.0, 1.0), abs=1e-15)
    assert band("jordan", 0.2, steps=0) == (0.2, 1.0)


def test_band_finds_interior_extrema():
    """Jordan's quintic on [0.3, 1.2]: extrema at the roots of p'(x) = a + 3b x^2 + 5c x^4."""
    coefficients = a, b, c = polynomials.preset("jordan").coefficients[0]
    root = np.sqrt(9 * b * b - 20 * a * c)
    critical = np.sqrt([(-3 * b - root) / (10 * c), (-3 * b + root) / (10 * c)])
    assert 0.3 < critical[0] < critical[1] < 1.2
    values = scalar_map(coefficients, np.array([0.3, *critical, 1.2]))
    got = band("jordan", 0.3, steps=1, upper=1.2)
    assert got == pytest.approx((values.min(), values.max()), abs=1e-15)
    assert values.max() == values[1] and values.min() == values[2]  # both inside


def test_band_through_a_double_critical_point():
    """(15x - 10x^3 + 3x^5)/8 has p'(x) = 15/8 (1 - x^2)^2: monotone through x = 1."""
    lo, hi = band("quintic", 0.5, steps=1, upper=1.5)
    assert (lo, hi) == pytest.approx((float(scalar_map((15 / 8, -10 / 8, 3 / 8), 0.5)),
                                      float(scalar_map((15 / 8, -10 / 8, 3 / 8), 1.5))), abs=1e-15)


def test_bands_lists_every_step():
    steps = bands("polar_express", 1e-3)
    assert len(steps) == 8 and steps[-1] == band("polar_express", 1e-3)
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(steps))  # the lower bound grows


@pytest.mark.parametrize(("lower", "upper"), [(0.0, 1.0), (-1.0, 1.0), (0.5, 0.4)])
def test_band_rejects_bad_range(lower, upper):
    with pytest.raises(ValueError, match="0 < lower <= upper"):
        band("jordan", lower, upper=upper)


# --- check -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", polynomials.names())
def test_every_preset_is_fit_on_the_normalised_range(name):
    assert check(name, 1e-6) == []


def test_check_flags_a_list_meant_for_another_normaliser():
    """AOL-tuned coefficients flip singular values above 0.89 after Frobenius scaling."""
    aol = Schedule("aol", AOL_LIST, default_steps=4)
    problems = check(aol, 1e-3)
    assert len(problems) == 4
    assert problems[0].startswith("step 1 maps [0.001, 1] onto [-0.585, 1.21]: reaches 0 or below")


def test_check_flags_a_range_beyond_the_schedule():
    assert check("cubic", 0.1, steps=1, upper=2.0) == [
        "step 1 maps [0.1, 2] onto [-1, 1]: reaches 0 or below"]
    problems = check("polar_express", 1e-3, upper=1.2)
    assert problems[0].endswith("reaches 2 or above") and len(problems) == 8


def test_check_with_rtol_finds_lists_without_safety_margin():
    bf16 = polynomials.BFLOAT16_EPS
    assert check("polar_express", 1e-3, rtol=bf16) == []
    assert check("polar_express_5", 1e-3, rtol=bf16) == []
    greedy = design(1e-3, 5)  # the CANS construction: no cushion, no safety
    assert check(greedy, 1e-3) == [] and check(greedy, 1e-3, rtol=bf16) != []


def test_check_rejects_bad_arguments():
    with pytest.raises(ValueError, match="rtol"):
        check("jordan", 0.1, rtol=1.0)
    with pytest.raises(ValueError, match="0 < lower <= upper"):
        check("jordan", 0.0)


# --- presets and their documentation -------------------------------------------------------------


def test_every_preset_states_a_source():
    for name in polynomials.names():
        schedule = polynomials.preset(name)
        assert schedule.name == name
        assert re.search(r"arXiv:\d{4}\.\d{4,5}|github\.com|x\.com|Higham", schedule.source), name


def test_convergent_presets():
    convergent = {n for n in polynomials.names() if polynomials.preset(n).converges}
    assert convergent == {"cubic", "quintic", "septic", "polar_express"}


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown schedule 'nope'; known: cubic, quintic"):
        polynomials.preset("nope")


def table_in(text):
    start = text.index(".. BEGIN PRESET TABLE")
    start = text.index("\n", start) + 1
    return text[start:text.index(".. END PRESET TABLE")].strip()


def test_module_docstring_table_is_current():
    """Regenerate: python -c 'from matsign import polynomials as p; print(p._preset_table())'."""
    assert table_in(polynomials.__doc__) == polynomials._preset_table()


def test_docs_page_table_is_current():
    page = ROOT / "docs" / "guide" / "schedules.rst"
    if not page.exists():
        pytest.skip("no docs checkout")
    assert table_in(page.read_text(encoding="utf-8")) == polynomials._preset_table()
