"""``python -m matsign design``: the printed schedule is `polynomials.design`'s, the bands
are `polynomials.bands`, the notes say in words what `polynomials.check` found, bad options
exit with status 2, ``--plot`` writes a PNG and says where."""

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
    words = " ".join(out.split())  # undo the wrapping of the notes
    assert (f"After 3 step(s), singular values of the scaled input in [0.01, 1] lie within "
            f"{max(1 - lo, hi - 1):.2g} of 1") in words
    assert "bfloat16: safe." in words  # the cubic's maximum is interior: no blow-up above u
    assert "rtol" not in words and "Warning" not in words


def test_greedy_quintic_without_safety_is_flagged_for_bfloat16(capsys):
    report = design_json(capsys, "--lower", "1e-3", "--steps", "5")
    assert report["problems"] == [] and len(report["bfloat16_problems"]) == 5
    assert main(["design", "--lower", "1e-3", "--steps", "5"]) == 0
    words = " ".join(capsys.readouterr().out.split())
    flagged = polynomials.check(polynomials.design(1e-3, 5), 1e-3, rtol=2**-8)
    assert len(flagged) == 5
    assert ("bfloat16: not safe. If the matrix products are rounded to bfloat16 (8 significant "
            "bits, a relative error of up to 2**-8)") in words
    assert "this can happen at 5 of the 5 steps (steps 1, 2, 3, 4, 5)" in words
    assert "--safety 1.01" in words


def test_a_schedule_unfit_in_exact_arithmetic_is_explained():
    from matsign.cli.design import _report, format_report

    # quintics tuned for AOL preconditioning flip large singular values after ||G||_F scaling
    aol = polynomials.Schedule("aol", ((4.0098, -7.0585, 2.4635), (3.4585, -5.5479, 2.5959)),
                               default_steps=2)
    problems = polynomials.check(aol, 1e-3)
    assert problems
    words = " ".join(format_report(_report(aol, 1e-3, polynomials.bands(aol, 1e-3))).split())
    assert "Warning: even in exact arithmetic this schedule does not fit that range." in words
    assert "flips or removes those directions of the update" in words
    assert all(problem in words for problem in problems)


@pytest.mark.parametrize(("args", "message"), [
    (["--lower", "0"], "0 < lower <= 1"),
    (["--steps", "0"], ">= 1; got steps=0"),
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
def test_plot_writes_a_png_and_says_where(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["design", "--lower", "1e-3", "--steps", "4", "--plot", "schedule.png"]) == 0
    path = tmp_path / "schedule.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "band at lower" in out
    assert out.splitlines()[-1] == f"plot saved to {path.resolve()}"


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib not installed")
def test_plot_with_json_keeps_stdout_json(capsys, tmp_path):
    path = tmp_path / "schedule.png"
    assert main(["design", "--json", "--preset", "polar_express", "--plot", str(path)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["schedule"] == "polar_express"
    assert err == f"plot saved to {path.resolve()}\n" and path.exists()


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib not installed")
def test_plot_axes_are_labelled_and_the_error_is_on_a_log_scale():
    import matplotlib.pyplot as plt

    from matsign.cli.design import draw, draw_error

    plt.switch_backend("Agg")
    fig, (left, right) = plt.subplots(1, 2)
    schedule = polynomials.preset("polar_express")
    draw(left, schedule, 1e-3, "map")
    draw_error(right, schedule, 1e-3, "error")
    assert right.get_yscale() == "log" and right.get_xscale() == "log"
    assert "|p(sigma) - 1|" in right.get_ylabel()
    last = right.get_lines()[schedule.default_steps - 1].get_ydata()  # the 8th step's curve
    sigma = right.get_lines()[0].get_xdata()
    assert max(last[sigma >= 1e-3]) < 1e-14  # converged: visible only on the log axis
    lo, hi = polynomials.band(schedule, 1e-3)
    assert f"max |p - 1| = {max(1 - lo, hi - 1, 1e-17):.2g}" in right.get_title()
    plt.close(fig)


def test_unwritable_plot_path_exits_2(capsys, tmp_path):
    if not HAS_MATPLOTLIB:
        pytest.skip("matplotlib not installed")
    assert main(["design", "--plot", str(tmp_path / "missing" / "x.png")]) == 2
    assert "cannot save --plot" in capsys.readouterr().err


def test_design_piped_into_head_exits_quietly():
    """``python -m matsign design ... | head -1``: no BrokenPipeError traceback when the
    reader is gone; the exit status a shell gives a process whose reader went away (141).
    The read end is closed before the command writes, so every write meets a closed pipe."""
    import subprocess
    import sys

    with subprocess.Popen([sys.executable, "-m", "matsign", "design", "--lower", "1e-4",
                           "--steps", "12", "--degree", "7"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as process:
        process.stdout.close()
        err = process.stderr.read()
        code = process.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert code == 141
