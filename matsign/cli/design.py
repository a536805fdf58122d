"""``python -m matsign design``: design a schedule (or show a preset), its bands, a plot.

The ``run`` here is registered by `matsign.__main__`; the figure code is shared with
``docs/make_schedule_plots.py``. matplotlib is imported only for ``--plot``.
"""

from __future__ import annotations

import json

from .. import __version__, polynomials
from . import UsageError

__all__ = ["DESCRIPTION", "add_arguments", "draw", "run"]

DESCRIPTION = """\
Design a Newton-Schulz schedule by the greedy minimax construction of Polar Express
(arXiv:2505.16932): at each step the odd polynomial of the given degree closest to 1 on
the current interval [l, u], then [l, u] <- its image. Or show a preset (--preset).

Prints each step's coefficients (p(x) = c0 x + c1 x^3 + ...), the exact interval that
singular values of the normalised input in [lower, 1] occupy after the step, and its
distance max |sigma - 1| from 1; --plot draws the composed scalar map of every step on a
log sigma axis (needs matplotlib)."""

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
                        help="draw the scalar map of every step (needs matplotlib)")
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
    if args.plot:
        _save_plot(schedule, args.lower, args.steps, args.plot)
    report = _report(schedule, args.lower, steps)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
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
    """The human-readable table of a `_report`."""
    width = max([len(s["coefficients"]) for s in report["steps"]] or [1])
    header = ["step", *(f"c{k} x^{2 * k + 1}" if k else "c0 x" for k in range(width)),
              "band after step",
              "max |s - 1|"]
    rows = [[str(i), *(f"{c:.16g}" for c in s["coefficients"]),
             *([""] * (width - len(s["coefficients"]))),
             "[{:.6f}, {:.6f}]".format(*s["band"]), f"{s['deviation']:.2e}"]
            for i, s in enumerate(report["steps"], start=1)]
    sizes = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]
    lines = [report["schedule"], f"input scaled by 1 / ({report['normalizer']:g} ||G||_F)", ""]
    lines += ["  ".join(cell.ljust(size) for cell, size in zip(row, sizes, strict=True)).rstrip()
              for row in [header, *rows]]
    lo, hi = report["band"]
    lines += ["", f"band at lower = {report['lower']:g}: [{lo:.6f}, {hi:.6f}]"]
    lines += [f"check: {p}" for p in report["problems"]]
    if report["bfloat16_problems"]:
        lines.append("bfloat16: amplifies round-off (check with rtol = 2**-8 flags "
                     f"{len(report['bfloat16_problems'])} step(s))")
    return "\n".join(lines)


def _save_plot(schedule, lower, steps, path):
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        msg = "--plot needs matplotlib (pip install 'matsign[plot]')"
        raise UsageError(msg) from None
    plt.switch_backend("Agg")
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    draw(ax, schedule, lower, schedule.name, steps=steps)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
