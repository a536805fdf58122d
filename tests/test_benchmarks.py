"""The asv suite imports where only NumPy and SciPy are installed (``pip install ".[bench]"``).

asv discovers benchmarks by importing every module of ``benchmarks/benchmarks``; one import
error fails the whole discovery, so ``asv check`` and ``asv run`` break for everyone without
torch. Each module is imported in a fresh interpreter with the optional frameworks hidden
(``sys.modules[name] = None`` makes their import raise ImportError, as if not installed).
"""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
MODULES = sorted(p.stem for p in (BENCHMARKS / "benchmarks").glob("*.py") if p.stem != "__init__")
HIDDEN = ("torch", "jax", "optax", "cupy", "heavyball", "pytorch_optimizer", "flax")


@pytest.mark.parametrize("module", MODULES)
def test_a_benchmark_module_imports_without_the_optional_frameworks(module):
    code = (f"import sys\nfor name in {HIDDEN!r}:\n    sys.modules[name] = None\n"
            f"import benchmarks.{module}\n"
            f"print(sorted(set({HIDDEN!r}) & {{k for k, v in sys.modules.items() if v}}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=BENCHMARKS, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def _report_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("report", BENCHMARKS / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_offline_report_leaves_out_rows_and_columns_without_a_result():
    report = _report_module()
    nan = float("nan")
    meta = {"param_names": ["method", "backend"], "params": [["'svd'", "'jordan'"],
            ["'numpy'", "'torch'", "'cupy'"]], "unit": "seconds"}
    values = {("svd", "numpy"): 0.0148, ("svd", "torch"): nan, ("svd", "cupy"): nan,
              ("jordan", "numpy"): 1.5, ("jordan", "torch"): 2.5e-4, ("jordan", "cupy"): nan}
    page = report.table_html("bench.Time", meta, values)
    assert "<th>backend=numpy</th>" in page and "<th>backend=torch</th>" in page
    assert "<th>backend=cupy</th>" not in page
    assert "left out, with no result here: backend=cupy" in page
    assert "14.8 ms" in page and "1.5 s" in page and "250 µs" in page
    assert "3 of 6 combinations skipped" in page
