"""``python -m matsign design``: the printed schedule is `polynomials.design`'s, the bands
are `polynomials.bands`, bad options exit with status 2, ``--plot`` writes a PNG."""

from __future__ import annotations

import importlib.util
import json

import pytest

from matsign import polynomials
from matsign.__main__ import main

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def design_json(capsys, *args):
    assert main(["design", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_is_the_designed_schedule_and_its_bands(capsys):
    report = design_json(capsys, "--lower", "1e-3", "--steps", "5", "--safety", "1.02",
                         "--cushion", "0.02")
    schedule = polynomials.design(1e-3, 5, safety=1.02, cushion=0.02)
    assert [tuple(s["coefficients"]) for s in report["steps"]] == list(schedule.coefficients)
    assert [tuple(s["band"]) for s in report["steps"]] == polynomials.bands(schedule, 1e-3)
    assert tuple(report["band"]) == polynomials.band(schedule, 1e-3)
    assert report["normalizer"] == 1.02 and report["problems"] == []
    assert report["bfloat16_problems"] == []


def test_preset_and_its_default_steps(capsys):
    report = design_json(capsys, "--preset", "jordan", "--lower", "0.01")
    assert report["schedule"] == "jordan" and len(report["steps"]) == 5
    assert tuple(report["band"]) == polynomials.band("jordan", 0.01)
    assert "KellerJordan" in report["source"]


def test_table_lists_every_step_and_the_band(capsys):
    assert main(["design", "--lower", "0.01", "--steps", "3", "--degree", "3"]) == 0
    out = capsys.readouterr().out
    schedule = polynomials.design(0.01, 3, 3)
    lo, hi = polynomials.band(schedule, 0.01)
    assert out.splitlines()[0] == schedule.name
    assert f"band at lower = 0.01: [{lo:.6f}, {hi:.6f}]" in out
    assert f"{schedule.coefficients[2][1]:.16g}" in out
    assert "bfloat16" not in out  # the cubic's maximum is interior: no blow-up above u


def test_greedy_quintic_without_safety_is_flagged_for_bfloat16(capsys):
    report = design_json(capsys, "--lower", "1e-3", "--steps", "5")
    assert report["problems"] == [] and len(report["bfloat16_problems"]) == 5


@pytest.mark.parametrize(("args", "message"), [
    (["--lower", "0"], "0 < lower <= 1"),
    (["--steps", "0"], "steps >= 1"),
    (["--degree", "4"], "positive odd integer"),
    (["--preset", "nope"], "unknown schedule 'nope'"),
    (["--preset", "you5", "--steps", "9"], "takes 0 to 5 steps"),
])
def test_bad_options_exit_2_with_one_line(capsys, args, message):
    assert main(["design", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m matsign design: error: ") and message in err
    assert err.count("\n") == 1


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib not installed")
def test_plot_writes_a_png(capsys, tmp_path):
    path = tmp_path / "schedule.png"
    assert main(["design", "--lower", "1e-3", "--steps", "4", "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "band at lower" in capsys.readouterr().out
