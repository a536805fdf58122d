"""``python -m matsign design``: design a schedule (or show a preset), its bands, a plot.

The ``run`` here is registered by `matsign.__main__`; the figure code is shared with
``docs/make_schedule_plots.py``. matplotlib is imported only for ``--plot``.
"""

from __future__ import annotations

import json
import pathlib
import re
import sys
import textwrap

from .. import __version__, polynomials
from . import UsageError

__all__ = ["DESCRIPTION", "add_arguments", "draw", "draw_error", "run"]

DESCRIPTION = """\
Design a Newton-Schulz schedule by the greedy minimax construction of Polar Express
(arXiv:2505.16932): at each step the odd polynomial of the given degree closest to 1 on
the current interval [l, u], then [l, u] <- its image. Or show a preset (--preset).

Prints each step's coefficients (p(x) = c0 x + c1 x^3 + ...), the exact interval that
singular values of the normalised input in [lower, 1] occupy after the step, and its
distance max |sigma - 1| from 1 (the orthogonality error), then notes in plain words:
whether the schedule is sound in exact arithmetic and whether it tolerates bfloat16
rounding. --plot FILE.png saves a figure (needs matplotlib): what each step makes of a
singular value sigma, and the error |p(sigma) - 1| on a log scale, where a band that
has converged to rounding level stays visible."""

EPILOG = """\
examples:
  python -m matsign design --lower 1e-3 --steps 5
  python -m matsign design --lower 1e-3 --steps 8 --safety 1.01 --cushion 0.02407327424182761
  python -m matsign design --lower 1e-3 --steps 6 --degree 7 --plot schedule.png
  python -m matsign design --preset polar_express_5 --lower 1e-2
  python -m matsign design --lower 1e-3 --steps 5 --json"""


def add_arguments(parser):
    """Register the ``design`` options on an `argparse.ArgumentParser`."""
    parser.add_argument("--lower", type=float, default=1e-3,
                        help="smallest singular value after normalisation (default: 1e-3)")
    parser.add_argument("--steps", type=int, default=None,
                        help="number of polynomials (default: 5; a preset's own count)")
    parser.add_argument("--degree", type=int, default=5, help="odd degree (default: 5)")
    parser.add_argument("--safety", type=float, default=1.0,
                        help="use p(x / safety) for all but the last step (default: 1)")
    parser.add_argument("--cushion", type=float, default=0.0,
                        help="fit on [max(l, cushion u), u], then recentre (default: 0)")
    parser.add_argument("--preset", default=None,
                        help=f"show a preset instead: {', '.join(polynomials.names())}")
    parser.add_argument("--plot", default=None, metavar="FILE.png",
                        help="save a figure of every step's map and error (needs matplotlib)")
    parser.add_argument("--json", action="store_true",
                        help="print machine-readable JSON on stdout instead of the table")
    parser.epilog = EPILOG


def run(args):
    """Run ``design`` for parsed ``args``; return the exit status.

    Raises
    ------
    UsageError
        For a bad parameter, an unknown preset, or ``--plot`` without matplotlib.
    """
    schedule = _schedule(args)
    try:
        steps = polynomials.bands(schedule, args.lower, steps=args.steps)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    report = _report(schedule, args.lower, steps)
    path = _save_plot(schedule, args.lower, args.steps, args.plot) if args.plot else None
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    if path is not None:
        print(f"plot saved to {path}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _schedule(args):
    """The preset named by ``--preset``, or the designed schedule."""
    try:
        if args.preset is not None:
            return polynomials.preset(args.preset)
        steps = 5 if args.steps is None else args.steps
        return polynomials.design(args.lower, steps, args.degree, safety=args.safety,
                                  cushion=args.cushion)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _report(schedule, lower, steps):
    """The ``--json`` output: the schedule, every step's interval, the check."""
    polys = schedule.polynomials(len(steps))
    return {
        "command": "design",
        "matsign_version": __version__,
        "schedule": schedule.name,
        "source": schedule.source,
        "normalizer": schedule.normalizer,
        "lower": lower,
        "steps": [{"coefficients": list(c), "band": list(b), "deviation": _deviation(b)}
                  for c, b in zip(polys, steps, strict=True)],
        "band": list(steps[-1]) if steps else [lower, 1.0],
        "problems": polynomials.check(schedule, lower, steps=len(steps)),
        "bfloat16_problems": polynomials.check(schedule, lower, steps=len(steps),
                                               rtol=polynomials.BFLOAT16_EPS),
    }


def _deviation(interval):
    return max(1.0 - interval[0], interval[1] - 1.0)


def format_report(report):
    """The human-readable table of a `_report`, and notes in plain words."""
    width = max([len(s["coefficients"]) for s in report["steps"]] or [1])
    header = ["step", *(f"c{k} x^{2 * k + 1}" if k else "c0 x" for k in range(width)),
              "band after step",
              "max |s - 1|"]
    rows = [[str(i), *(f"{c:.16g}" for c in s["coefficients"]),
             *([""] * (width - len(s["coefficients"]))),
             "[{:.6f}, {:.6f}]".format(*s["band"]), f"{s['deviation']:.2e}"]
            for i, s in enumerate(report["steps"], start=1)]
    sizes = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]
    normalizer = report["normalizer"]
    scale = "||G||_F" if normalizer == 1 else f"({normalizer:g} ||G||_F)"
    lines = [report["schedule"], f"input scaled by 1 / {scale}", ""]
    lines += ["  ".join(cell.ljust(size) for cell, size in zip(row, sizes, strict=True)).rstrip()
              for row in [header, *rows]]
    lo, hi = report["band"]
    lines += ["", f"band at lower = {report['lower']:g}: [{lo:.6f}, {hi:.6f}]", ""]
    return "\n".join(lines + _notes(report))


def _notes(report):
    """What the table means for a newcomer: the error to expect, soundness, bfloat16."""
    lo, hi = report["band"]
    deviation = max(1 - lo, hi - 1)
    notes = [f"After {len(report['steps'])} step(s), singular values of the scaled input in "
             f"[{report['lower']:g}, 1] lie within {deviation:.2g} of 1: that is the "
             "orthogonality error max |s - 1| to expect"
             + (", plus rounding in the working precision." if deviation < 1e-6 else ".")]
    if report["problems"]:
        notes.append("Warning: even in exact arithmetic this schedule does not fit that range. "
                     + _problem_sentence(report["problems"]))
    notes += [f"  {problem}" for problem in report["problems"]]
    notes.append(_bfloat16_sentence(report["bfloat16_problems"], len(report["steps"])))
    return [line for note in notes for line in _wrap(note)]


def _problem_sentence(problems):
    text = " ".join(problems)
    parts = []
    if "0 or below" in text:
        parts.append("a step that maps singular values to 0 or below flips or removes those "
                     "directions of the update")
    if "2 or above" in text:
        parts.append("a step that maps them to 2 or above sends them where the next steps "
                     "cannot bring them back to 1")
    text = "; ".join(parts)
    return text[:1].upper() + text[1:] + ":"


def _bfloat16_sentence(problems, steps):
    """Whether rounding to bfloat16 is amplified, in words (`polynomials.check`, rtol=2**-8)."""
    rounding = ("If the matrix products are rounded to bfloat16 (8 significant bits, a relative "
                "error of up to 2**-8)")
    if not problems:
        return f"bfloat16: safe. {rounding}, no step amplifies that rounding."
    flagged = [int(m) for m in re.findall(r"step (\d+) maps", " ".join(problems))]
    which = ("step " if len(flagged) == 1 else "steps ") + ", ".join(map(str, flagged))
    return (f"bfloat16: not safe. {rounding}, a singular value that rounding pushes just past "
            "the interval a step was designed for can be blown up or flipped by that step; "
            f"this can happen at {len(flagged)} of the {steps} steps ({which}). Designing "
            "with a safety factor (--safety 1.01, as Polar Express does) guards against this.")


def _wrap(text):
    return textwrap.wrap(text, width=88, subsequent_indent="  ") or [""]


def _save_plot(schedule, lower, steps, path):
    """Save the map and error panels of ``schedule`` to ``path``; return its absolute path."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        msg = "--plot needs matplotlib (pip install 'matsign[plot]')"
        raise UsageError(msg) from None
    plt.switch_backend("Agg")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.0, 4.0))
    draw(left, schedule, lower, "what each step makes of sigma", steps=steps)
    left.set_ylabel("singular value after step t", fontsize=8)
    draw_error(right, schedule, lower, "distance from 1 (orthogonality error)", steps=steps)
    for ax in (left, right):
        ax.set_xlabel("sigma: singular value of the scaled input G / (c ||G||_F)", fontsize=8)
    scale = "||G||_F" if schedule.normalizer == 1 else f"({schedule.normalizer:g} ||G||_F)"
    fig.suptitle(f"{schedule.name}: {len(schedule.polynomials(steps))} step(s), "
                 f"input scaled by 1 / {scale}", fontsize=9)
    fig.tight_layout()
    path = pathlib.Path(path).resolve()
    try:
        fig.savefig(path, dpi=100)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot save --plot {path}: {exc}") from None
    finally:
        plt.close(fig)
    return path


def draw(ax, schedule, lower, title, *, steps=None, sigma=None):
    """Draw the composed scalar map after each step on a log sigma axis, and the band.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Where to draw.
    schedule : Schedule
        The schedule.
    lower : float
        Where the band is computed (a dotted vertical line, the band in grey).
    title : str
        First line of the axes title; the second gives the band.
    steps : int, optional
        Steps to draw (the schedule's default when omitted).
    sigma : array, optional
        Input singular values (default: 1500 points log-spaced over [min(1e-4, lower), 1]).
    """
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.geomspace(min(1e-4, lower), 1.0, 1500) if sigma is None else sigma
    polys = schedule.polynomials(steps)
    colours = plt.cm.viridis(np.linspace(0.85, 0.05, len(polys)))
    y = x
    for t, (coefficients, colour) in enumerate(zip(polys, colours, strict=True), start=1):
        y = polynomials.scalar_map(coefficients, y)
        ax.plot(x, y, color=colour, lw=1.1, label=f"{t}" if t in (1, len(polys)) else None)
    lo, hi = polynomials.band(schedule, lower, steps=steps)
    ax.axhspan(lo, hi, color="0.85", zorder=0)
    ax.axvline(lower, color="0.6", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_ylim(-0.05, 2.05)
    ax.set_title(f"{title}\nband at {lower:g}: [{lo:.3f}, {hi:.3f}]", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.legend(title="step", fontsize=6, title_fontsize=6, loc="upper left", frameon=False)


def draw_error(ax, schedule, lower, title, *, steps=None, sigma=None):
    """Draw ``|p_t(sigma) - 1|`` after each step on log-log axes, and the band's error.

    On a log axis a band that has converged to rounding level stays visible, where the
    map of `draw` would be a flat line at 1. Horizontal lines mark bfloat16's and
    float32's unit roundoff, the errors rounding alone leaves in those precisions.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Where to draw.
    schedule : Schedule
        The schedule.
    lower : float
        Where the band is computed (a dotted vertical line; its error dashed).
    title : str
        First line of the axes title; the second gives the band's error.
    steps : int, optional
        Steps to draw (the schedule's default when omitted).
    sigma : array, optional
        Input singular values (default: 1500 points log-spaced over [min(1e-4, lower), 1]).
    """
    import matplotlib.pyplot as plt
    import numpy as np

    floor = 1e-17  # |p - 1| is exactly 0 at a few points: keep them on the log axis
    x = np.geomspace(min(1e-4, lower), 1.0, 1500) if sigma is None else sigma
    polys = schedule.polynomials(steps)
    colours = plt.cm.viridis(np.linspace(0.85, 0.05, len(polys)))
    y = x
    for t, (coefficients, colour) in enumerate(zip(polys, colours, strict=True), start=1):
        y = polynomials.scalar_map(coefficients, y)
        ax.plot(x, np.maximum(np.abs(y - 1.0), floor), color=colour, lw=1.1,
                label=f"{t}" if t in (1, len(polys)) else None)
    lo, hi = polynomials.band(schedule, lower, steps=steps)
    error = max(1.0 - lo, hi - 1.0, floor)
    ax.axhline(error, color="0.3", lw=0.8, ls="--")
    for eps, name in ((2.0**-8, "bfloat16"), (2.0**-24, "float32")):
        ax.axhline(eps, color="tab:red", lw=0.6, ls=":", alpha=0.7)
        ax.text(x[0], eps, f" {name} roundoff", fontsize=6, color="tab:red", va="bottom")
    ax.axvline(lower, color="0.6", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(floor / 2, 10.0)
    ax.set_ylabel("|p(sigma) - 1| after step t", fontsize=8)
    ax.set_title(f"{title}\nat lower = {lower:g}: max |p - 1| = {error:.2g} (dashed)", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.legend(title="step", fontsize=6, title_fontsize=6, loc="center right", frameon=False)
