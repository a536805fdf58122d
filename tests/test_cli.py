"""``python -m matsign compare``, run as a subprocess and checked through its ``--json`` output.

Oracles: the float64 SVD factor (reported distance), the exact band of each schedule
(`matsign.polynomials.band`) for ``sigma_min / ||G||_F`` computed here (1e-3 for the
generated input, a float64 SVD of the saved matrix for ``--input``), the flop model
written out by hand, and a fake clock for the time-left estimate. No timing assertions
beyond the order of min, median and max.
"""

from __future__ import annotations

import importlib.util
import io
import json
import pathlib
import statistics
import subprocess
import sys

import numpy as np
import pytest

from matsign import polynomials
from matsign.__main__ import main
from matsign.cli import UsageError
from matsign.cli.compare import Progress, log_spaced_spectrum, parse_shape
from matsign.cli.timing import newton_schulz_flops, time_interleaved

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMING = ["--repeats", "3", "--warmup", "0", "--threads", "1"]
SMALL = ["--shape", "64", "96", *TIMING]
HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_SCIPY = importlib.util.find_spec("scipy") is not None
EPS = {"float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps),
       "bfloat16": 2.0**-7}


def run_cli(*args):
    """Run ``python -m matsign *args`` in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "matsign", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)


def compare_json(*args, options=SMALL):
    result = run_cli("compare", *options, "--json", *args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # --json: no progress, stdout is only the JSON
    return json.loads(result.stdout)


def factor_tolerance(report, dtype="float32"):
    """A backward-stable computation in ``dtype`` moves ``U V^T`` by ~eps sigma_max / sigma_min."""
    return 4 * EPS[dtype] * report["input"]["condition_number"]


def expected_rows(backend):
    rows = ["svd", *polynomials.names(), "numpy.linalg.svd"]
    rows += ["scipy.linalg.polar"] if HAS_SCIPY else []
    return rows + ([f"{backend}.linalg.svd"] if backend != "numpy" else [])


@pytest.fixture(scope="module")
def report():
    return compare_json()


@pytest.fixture(scope="module")
def batched_tall_report():
    return compare_json("--shape", "2x48x32", "--repeats", "1")


@pytest.fixture(scope="module")
def float64_report():
    return compare_json("--dtype", "float64", "--repeats", "1", "--methods",
                        ",".join(["svd", *polynomials.names()]))


def rows_by_name(report):
    return {row["method"]: row for row in report["rows"]}


def test_every_row_present_in_table_order(report):
    assert [row["method"] for row in report["rows"]] == expected_rows("numpy")
    given = {k: report["input"][k] for k in ("backend", "device", "dtype", "shape", "seed",
                                             "source", "lower", "path")}
    assert given == {"backend": "numpy", "device": "cpu", "dtype": "float32", "shape": [64, 96],
                     "seed": 0, "source": "log-spaced", "lower": 1e-3, "path": None}


def test_default_input_is_inside_the_design_range(report):
    # float32 rounding of the entries moves sigma_min by about eps * condition number
    assert report["input"]["sigma_min_over_frobenius"] == pytest.approx(1e-3, rel=1e-4)


def test_json_rows_carry_the_spread_of_their_times(report):
    for row in report["rows"]:
        assert len(row["times"]) == 3
        assert 0 < row["time_min"] <= row["time_median"] <= row["time_max"], row["method"]
        assert row["time_median"] == statistics.median(row["times"])
        assert (row["time_min"], row["time_max"]) == (min(row["times"]), max(row["times"]))
    gemm = report["gemm"]
    assert gemm["runs"] == 3 * len(report["rows"])  # one before every timed run
    assert 0 < gemm["time_min"] <= gemm["time_median"] <= gemm["time_max"]


def predicted(schedule, sigma_ratio):
    lo, hi = polynomials.band(schedule, sigma_ratio / schedule.normalizer)
    return [lo, hi], max(1.0 - lo, hi - 1.0)


def test_predicted_band_of_the_controlled_spectrum(float64_report):
    rows = rows_by_name(float64_report)
    assert float64_report["input"]["sigma_min_over_frobenius"] == pytest.approx(1e-3, rel=1e-9)
    assert rows["svd"]["predicted_band"] is None and rows["svd"]["predicted_error"] is None
    for name in polynomials.names():
        band, error = predicted(polynomials.preset(name), 1e-3)
        assert rows[name]["predicted_band"] == pytest.approx(band, rel=1e-8, abs=1e-12), name
        assert rows[name]["predicted_error"] == pytest.approx(error, rel=1e-6, abs=1e-12), name
        # the band holds: float64 rounding is far below every preset's error here
        assert rows[name]["orthogonality_error"] <= error + 1e-9, name


@pytest.mark.parametrize("name", ["svd", "numpy.linalg.svd", "scipy.linalg.polar"])
def test_exact_rows_match_the_float64_svd_factor(report, name):
    if name not in rows_by_name(report):
        pytest.skip(f"{name} not available")
    row = rows_by_name(report)[name]
    assert row["distance_to_svd"] < factor_tolerance(report)
    assert row["orthogonality_error"] < 50 * EPS["float32"]  # U, V orthogonal whatever kappa
    assert row["steps"] is None and row["predicted_error"] is None
    assert row["gflops"] is None and row["gemm_fraction"] is None
    assert row["gemm_gflops"] > 0  # every run is paired with a GEMM


def assert_within_band(report, dtype="float32"):
    """Each preset's output singular values lie in its band: ``|p(sigma) - 1| <= deviation``."""
    sigma_ratio = report["input"]["sigma_min_over_frobenius"]
    rows = rows_by_name(report)
    for name in polynomials.names():
        schedule = polynomials.preset(name)
        band, deviation = predicted(schedule, sigma_ratio)
        assert rows[name]["predicted_band"] == band, name
        slack = 100 * EPS[dtype]  # rounding in a dozen-odd matmuls on 64 x 96
        # ||U (p(S) - I) V^T||_F / ||U V^T||_F is an rms of |p(sigma) - 1| <= the max
        assert rows[name]["distance_to_svd"] <= deviation + factor_tolerance(report, dtype), name
        assert rows[name]["orthogonality_error"] <= deviation + slack, name
        assert rows[name]["steps"] == schedule.default_steps


def test_presets_land_in_their_band(report):
    assert_within_band(report)


def test_convergent_presets_reach_the_svd_factor(report):
    rows = rows_by_name(report)
    convergent = [name for name in polynomials.names() if polynomials.preset(name).converges]
    assert convergent
    for name in convergent:
        assert rows[name]["distance_to_svd"] < factor_tolerance(report), name


def test_gemm_rate_and_fractions(report, batched_tall_report):
    gemm = report["gemm"]
    assert gemm["shape"] == [64, 64, 96]
    assert gemm["gflops"] == pytest.approx(2 * 64 * 64 * 96 / gemm["time_median"] / 1e9)
    for name in polynomials.names():
        row = rows_by_name(report)[name]
        assert row["gflops"] > 0 and row["gemm_gflops"] > 0 and row["gemm_fraction"] > 0
        # one repeat: the median of the paired ratios is the ratio of the rates
        row = rows_by_name(batched_tall_report)[name]
        assert row["gemm_fraction"] == pytest.approx(row["gflops"] / row["gemm_gflops"])


def test_json_reports_svd_time_ratios_and_machine(report):
    times = {row["method"]: row["times"] for row in report["rows"]}
    ratios = report["svd_time_ratio"]
    assert set(ratios) == set(expected_rows("numpy")[1 + len(polynomials.names()):])
    for name, ratio in ratios.items():  # the median of same-round ratios
        same_round = [a / b for a, b in zip(times["svd"], times[name], strict=True)]
        assert ratio == pytest.approx(statistics.median(same_round))
    assert report["timing"] == {"repeats": 3, "warmup": 0, "threads": 1, "order": "interleaved"}
    assert report["machine"]["numpy"] == np.__version__
    assert {pool["num_threads"] for pool in report["machine"].get("blas", [])} <= {1}  # pinned


def test_batched_tall_input(batched_tall_report):
    assert [row["method"] for row in batched_tall_report["rows"]] == expected_rows("numpy")
    assert batched_tall_report["gemm"]["shape"] == [2, 32, 32, 48]
    assert rows_by_name(batched_tall_report)["svd"]["distance_to_svd"] < factor_tolerance(
        batched_tall_report)
    assert_within_band(batched_tall_report)


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_torch_backend(dtype):
    report = compare_json("--backend", "torch", "--dtype", dtype)
    assert [row["method"] for row in report["rows"]] == expected_rows("torch")
    assert report["input"]["backend"] == "torch" and report["input"]["dtype"] == dtype
    rows = rows_by_name(report)
    # float32 SVD, then the factor rounded to the input's dtype: half an ulp per entry
    for name in ("svd", "torch.linalg.svd"):
        assert rows[name]["distance_to_svd"] < (0.5 * EPS[dtype] if dtype == "bfloat16" else
                                                factor_tolerance(report)), name
    if dtype == "float32":
        assert_within_band(report)
    assert report["gemm"]["gflops"] > 0


def test_flop_model_written_out():
    m, n = 64, 96
    quintic, cubic = polynomials.preset("quintic"), polynomials.preset("cubic")
    assert newton_schulz_flops(quintic, (m, n), steps=3) == 3 * (4 * m * m * n + 2 * m**3)
    assert newton_schulz_flops(quintic, (n, m), steps=3) == 3 * (4 * m * m * n + 2 * m**3)
    assert newton_schulz_flops(cubic, (5, m, n), steps=2) == 5 * 2 * 4 * m * m * n
    assert newton_schulz_flops(quintic, (m, n)) == 16 * (4 * m * m * n + 2 * m**3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend", "nope"], "unknown backend 'nope'"),
        (["--dtype", "bfloat16"], "dtype 'bfloat16' is not available on numpy"),
        (["--dtype", "float8"], "dtype 'float8' is not available on numpy"),
        (["--methods", "svd,nope"], "unknown method(s) nope"),
        (["--shape", "7"], "--shape needs at least two positive sizes"),
        (["--shape", "8x8", "--lower", "0.5"], "--lower must be in (0, 1/sqrt(min(m, n))]"),
        (["--repeats", "0"], "--repeats"),
        (["--device", "cuda"], "--device is for --backend torch"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args, message):
    result = run_cli("compare", *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("python -m matsign compare: error: ")
    assert message in result.stderr


def test_backend_not_installed_exits_2():
    missing = next((b for b in ("cupy", "torch") if importlib.util.find_spec(b) is None), None)
    if missing is None:
        pytest.skip("every backend is installed")
    result = run_cli("compare", "--backend", missing)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"python -m matsign compare: error: backend {missing!r} is not installed "
        f"(pip install {missing})"
    )


@pytest.mark.parametrize("args", [["--help"], ["compare", "--help"]])
def test_help_exits_0(args):
    result = run_cli(*args)
    assert result.returncode == 0
    assert "compare" in result.stdout
    if args[0] == "compare":
        assert "examples:" in result.stdout and "--backend" in result.stdout


def test_table_and_progress(capsys):
    assert main(["compare", *SMALL, "--methods", "jordan,svd"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    top = next(i for i, line in enumerate(lines) if line.startswith("method"))
    assert lines[top].split() == ["method", "steps", "median", "min", "max", "GEMM", "predicted",
                                  "measured", "to", "SVD"]
    assert lines[top - 1].split() == ["time", "(ms)", "of", "orthogonality", "error", "distance"]
    assert [line.split()[0] for line in lines[top + 1:top + 3]] == ["svd", "jordan"]  # table order
    svd, jordan = lines[top + 1].split(), lines[top + 2].split()
    assert svd[1] == "-" and svd[6] == "-" and jordan[1] == "5"
    _, error = predicted(polynomials.preset("jordan"), 1e-3)
    assert jordan[6] == f"{error:.1e}"  # the predicted column
    assert "sigma_min/||G||_F = 1.00e-03" in out and "inside the range" in out
    # not a terminal: a line per row of the first round, one per later round, then the total
    assert "round 1/3: svd (1/2), " in err and "round 1/3: jordan (2/2), " in err
    assert "round 2/3: svd (1/2), " in err and "round 2/3: jordan" not in err
    assert "compare: 6 runs (2 rows x 3 rounds) in " in err


@pytest.mark.parametrize(("tokens", "shape"), [
    (["64x32"], (64, 32)), (["64", "32"], (64, 32)), (["2x48x32"], (2, 48, 32)),
    (["2", "48x32"], (2, 48, 32)), (["1024X4096"], (1024, 4096)),
])
def test_shape_spellings(tokens, shape):
    assert parse_shape(tokens) == shape


def test_shape_64x32_on_the_command_line():
    report = compare_json("--shape", "64x32", "--repeats", "1", "--methods", "svd,jordan")
    assert report["input"]["shape"] == [64, 32]
    assert report["gemm"]["shape"] == [32, 32, 64]


@pytest.mark.parametrize("tokens", [["64x"], ["64"], ["64xabc"], ["0x5"], ["4", "-2"]])
def test_bad_shapes(tokens):
    with pytest.raises(UsageError, match="--shape needs at least two positive sizes"):
        parse_shape(tokens)


@pytest.mark.parametrize(("k", "lower"), [(1024, 1e-3), (64, 1e-3), (32, 1e-6), (4, 0.5)])
def test_log_spaced_spectrum_has_the_asked_ratio(k, lower):
    s = log_spaced_spectrum(k, lower)
    assert s.shape == (k,) and s[0] == 1.0
    assert s[-1] / np.linalg.norm(s) == pytest.approx(lower, rel=1e-12)
    ratios = s[1:] / s[:-1]
    assert np.allclose(ratios, ratios[0])  # log-spaced


def test_lower_above_equal_singular_values_is_refused():
    with pytest.raises(UsageError, match=r"--lower must be in \(0, 1/sqrt\(min\(m, n\)\)\]"):
        log_spaced_spectrum(16, 0.3)  # 16 equal values give 0.25


def test_input_npy_reports_its_own_spectrum(tmp_path):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((40, 24))
    a[:, 0] *= 1e-4  # one short direction: sigma_min / ||G||_F about 2e-5, below 1e-3
    path = tmp_path / "G.npy"
    np.save(path, a)
    report = compare_json("--input", str(path), "--repeats", "1", "--methods",
                          "svd,jordan,polar_express,numpy.linalg.svd", options=TIMING)
    s = np.linalg.svd(a.astype(np.float32).astype(np.float64), compute_uv=False)
    ratio = s[-1] / np.linalg.norm(s)
    given = report["input"]
    assert given["source"] == "file" and given["path"] == str(path)
    assert given["shape"] == [40, 24] and given["file_dtype"] == "float64"
    assert given["seed"] is None and given["lower"] is None
    assert given["sigma_min_over_frobenius"] == pytest.approx(ratio, rel=1e-9)
    assert ratio < 1e-4
    rows = rows_by_name(report)
    for name in ("jordan", "polar_express"):
        band, error = predicted(polynomials.preset(name), ratio)
        assert rows[name]["predicted_band"] == pytest.approx(band, rel=1e-9), name
        assert rows[name]["orthogonality_error"] <= error + 100 * EPS["float32"], name
    assert rows["jordan"]["predicted_error"] > 0.9  # far below the design range: far from 1
    assert rows["svd"]["distance_to_svd"] < factor_tolerance(report)


def test_input_table_says_where_the_spectrum_sits(tmp_path, capsys):
    path = tmp_path / "G.npy"
    np.save(path, np.diag([1.0, 1.0, 1e-6]).astype(np.float32))
    assert main(["compare", "--input", str(path), "--repeats", "1", "--quiet", "--methods",
                 "jordan"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # undo the wrapping
    assert f"input: {path} (3x3 float32, as float32): sigma_min/||G||_F = 7.07e-07" in out
    assert "below the 1e-3 the presets are designed for" in out


@pytest.mark.parametrize(("content", "extra", "message"), [
    (np.ones(5), [], "must hold one non-empty array (..., m, n); it has shape (5,)"),
    (np.array([[1.0, np.nan]]), [], "holds inf or NaN"),
    (np.ones((2, 2), dtype=complex), [], "must be real"),
    (np.ones((3, 3)), ["--shape", "3x3"], "--input takes its shape and spectrum from the file"),
    (None, [], "cannot read --input"),
])
def test_bad_input_files_exit_2(tmp_path, capsys, content, extra, message):
    path = tmp_path / "G.npy"
    if content is not None:
        np.save(path, content)
    assert main(["compare", "--input", str(path), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m matsign compare: error: ") and message in err
    assert err.count("\n") == 1


def test_time_interleaved_runs_rounds_in_order():
    log, firsts = [], []

    def call(name):
        return lambda: log.append(name) or name

    times, paired = time_interleaved(
        [call("a"), call("b")], repeats=2, warmup=1, paired=[call("g"), None],
        on_first=lambda i, result: firsts.append((i, result)),
        before=lambda r, i: log.append(f"{r}{i}"))
    assert log == ["00", "g", "a", "01", "b", "10", "g", "a", "11", "b", "20", "g", "a", "21", "b"]
    assert firsts == [(0, "a"), (1, "b")]  # the warm-up's results, each once
    assert [len(t) for t in times] == [2, 2] and [len(t) for t in paired] == [2, 0]


class Clock:
    def __init__(self, *ticks):
        self.ticks = iter(ticks)

    def __call__(self):
        return next(self.ticks)


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_estimates_the_time_left_from_timed_runs_only():
    # Warm-up runs (first calls, accuracy checks) take 10 s each, timed runs 1 s (a), 2 s (b).
    stream = Terminal()
    progress = Progress(stream=stream, clock=Clock(0.0, 0.0, 10.0, 20.0, 21.0, 23.0, 24.0, 26.0))
    progress.start(["a", "b"], rounds=3, warmup=1)
    progress.step(0, 0)  # t = 0
    progress.step(0, 1)  # t = 10: a's warm-up (not counted)
    progress.step(1, 0)  # t = 20: b's warm-up (not counted): nothing timed yet
    progress.step(1, 1)  # t = 21: a took 1 s, b guessed alike: 1 + one more round of 2
    progress.step(2, 0)  # t = 23: b took 2 s: this round's 1 + 2
    progress.step(2, 1)  # t = 24: b's 2 s
    progress.close()     # t = 26
    shown = [part.strip() for part in stream.getvalue().split("\r") if part.strip()]
    assert shown == [
        "warm-up 1/1: a (1/2), 0.0 s so far, the time left is estimated after the warm-up",
        "warm-up 1/1: b (2/2), 10 s so far, the time left is estimated after the warm-up",
        "round 1/2: a (1/2), 20 s so far, estimating the time left",
        "round 1/2: b (2/2), 21 s so far, about 3.0 s left",
        "round 2/2: a (1/2), 23 s so far, about 3.0 s left",
        "round 2/2: b (2/2), 24 s so far, about 2.0 s left",
        "compare: 6 runs (2 rows x 3 rounds) in 26 s",
    ]


def test_cli_imports_no_array_framework():
    frameworks = "{'torch', 'cupy', 'jax'}"
    code = f"import sys, matsign.__main__; print(sorted({frameworks} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "[]"
