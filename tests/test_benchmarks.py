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
