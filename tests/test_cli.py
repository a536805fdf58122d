"""``python -m matsign compare``, run as a subprocess and checked through its ``--json`` output.

Oracles: the float64 SVD factor (reported distance), the exact band of each schedule
(`matsign.polynomials.band`) for the reported ``sigma_min / ||G||_F``, and the flop
model written out by hand. No timing assertions.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from matsign import polynomials
from matsign.__main__ import main
from matsign.cli.timing import newton_schulz_flops

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMALL = ["--shape", "64", "96", "--repeats", "1", "--warmup", "0", "--threads", "1"]
HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_SCIPY = importlib.util.find_spec("scipy") is not None
EPS = {"float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps),
       "bfloat16": 2.0**-7}


def run_cli(*args):
    """Run ``python -m matsign *args`` in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "matsign", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)


def compare_json(*args):
    result = run_cli("compare", *SMALL, "--json", *args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # --json: no progress, stdout is only the JSON
    return json.loads(result.stdout)


def expected_rows(backend):
    rows = ["svd", *polynomials.names(), "numpy.linalg.svd"]
    rows += ["scipy.linalg.polar"] if HAS_SCIPY else []
    return rows + ([f"{backend}.linalg.svd"] if backend != "numpy" else [])


@pytest.fixture(scope="module")
def report():
    return compare_json()


@pytest.fixture(scope="module")
def batched_tall_report():
    return compare_json("--shape", "2", "48", "32")


def rows_by_name(report):
    return {row["method"]: row for row in report["rows"]}


def test_every_row_present_in_table_order(report):
    assert [row["method"] for row in report["rows"]] == expected_rows("numpy")
    given = {k: v for k, v in report["input"].items() if k != "sigma_min_over_frobenius"}
    assert given == {"backend": "numpy", "device": "cpu", "dtype": "float32", "shape": [64, 96],
                     "seed": 0}
    assert 0 < report["input"]["sigma_min_over_frobenius"] < 1


@pytest.mark.parametrize("name", ["svd", "numpy.linalg.svd", "scipy.linalg.polar"])
def test_exact_rows_match_the_float64_svd_factor(report, name):
    if name not in rows_by_name(report):
        pytest.skip(f"{name} not available")
    row = rows_by_name(report)[name]
    assert row["distance_to_svd"] < 50 * EPS["float32"]
    assert row["orthogonality_error"] < 50 * EPS["float32"]
    assert row["steps"] is None
    assert row["gflops"] is None and row["gemm_gflops"] is None and row["gemm_fraction"] is None


def assert_within_band(report, dtype="float32"):
    """Each preset's output singular values lie in its band: ``|p(sigma) - 1| <= deviation``."""
    sigma_ratio = report["input"]["sigma_min_over_frobenius"]
    rows = rows_by_name(report)
    for name in polynomials.names():
        schedule = polynomials.preset(name)
        lo, hi = polynomials.band(schedule, sigma_ratio / schedule.normalizer)
        deviation = max(1.0 - lo, hi - 1.0)
        slack = 100 * EPS[dtype]  # rounding in a dozen-odd matmuls on 64 x 96
        # ||U (p(S) - I) V^T||_F / ||U V^T||_F is an rms of |p(sigma) - 1| <= the max
        assert rows[name]["distance_to_svd"] <= deviation + slack, name
        assert rows[name]["orthogonality_error"] <= deviation + slack, name
        assert rows[name]["steps"] == schedule.default_steps


def test_presets_land_in_their_band(report):
    assert_within_band(report)


def test_convergent_presets_reach_the_svd_factor(report):
    rows = rows_by_name(report)
    convergent = [name for name in polynomials.names() if polynomials.preset(name).converges]
    assert convergent
    for name in convergent:
        assert rows[name]["distance_to_svd"] < 100 * EPS["float32"], name


def test_gemm_rate_and_fractions(report):
    gemm = report["gemm"]
    assert gemm["shape"] == [64, 64, 96]
    assert gemm["gflops"] > 0 and gemm["median_ms"] > 0
    for name in polynomials.names():
        row = rows_by_name(report)[name]
        assert row["gflops"] > 0 and row["gemm_gflops"] > 0
        # one repeat: the median of the paired ratios is the ratio of the rates
        assert row["gemm_fraction"] == pytest.approx(row["gflops"] / row["gemm_gflops"])


def test_json_reports_svd_time_ratios_and_machine(report):
    times = {row["method"]: row["median_ms"] for row in report["rows"]}
    ratios = report["svd_time_ratio"]
    assert set(ratios) == set(expected_rows("numpy")[1 + len(polynomials.names()):])
    for name, ratio in ratios.items():
        assert ratio == pytest.approx(times["svd"] / times[name])
    assert report["timing"] == {"repeats": 1, "warmup": 0, "threads": 1}
    assert report["machine"]["numpy"] == np.__version__
    assert {pool["num_threads"] for pool in report["machine"].get("blas", [])} <= {1}  # pinned


def test_batched_tall_input(batched_tall_report):
    assert [row["method"] for row in batched_tall_report["rows"]] == expected_rows("numpy")
    assert batched_tall_report["gemm"]["shape"] == [2, 32, 32, 48]
    assert rows_by_name(batched_tall_report)["svd"]["distance_to_svd"] < 50 * EPS["float32"]
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
                                                50 * EPS[dtype]), name
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
    assert lines[3].split()[:3] == ["method", "steps", "time"]
    assert [line.split()[0] for line in lines[4:6]] == ["svd", "jordan"]  # table order
    assert lines[4].split()[1:2] == ["-"] and lines[5].split()[1] == "5"
    assert "timing svd (1/2)..." in err and "timing jordan (2/2)..." in err


def test_cli_imports_no_array_framework():
    frameworks = "{'torch', 'cupy', 'jax'}"
    code = f"import sys, matsign.__main__; print(sorted({frameworks} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "[]"
