"""Draw the schedule figures of docs/guide/schedules.rst from the code.

The docs build runs `main` (docs/conf.py runs the ``main()`` of every ``docs/make_*.py``
at build start); to draw them by hand, from the repository root (needs matplotlib, the
``plot`` extra)::

    python docs/make_schedule_plots.py

It writes into ``docs/_static/generated/`` (not committed):

- ``schedules.png``: one panel per preset of `matsign.polynomials.names`, on a log axis
  of the normalised input singular value ``sigma``, what the first ``t`` polynomials make
  of it, for every step ``t`` (light to dark), and the exact band at ``lower = 1e-3``
  (grey);
- ``schedule_errors.png``: the same panels as predicted errors ``|p(sigma) - 1|`` on
  log-log axes, where a band that has converged to rounding level stays visible, with
  the float32 and bfloat16 unit roundoff (red) and the error at ``lower`` (dashed);
- ``schedule_design.png``: a designed schedule, degrees 3, 5 and 7.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib as mpl
import numpy as np
from PIL import Image  # a matplotlib dependency

from matsign import polynomials
from matsign.cli.design import draw, draw_error  # ``python -m matsign design --plot``'s

OUT = Path(__file__).resolve().parent / "_static" / "generated"
LOWER = 1e-3


def grid(plt, count, columns, *, ylabel="output σ", width=2.9):
    rows = math.ceil(count / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, 2.5 * rows),
                             sharex=True, sharey=True, squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    for index, ax in enumerate(axes.flat[:count]):
        if index >= count - columns:  # the lowest visible panel of each column
            ax.set_xlabel("input σ (normalised)", fontsize=8)
            ax.tick_params(labelbottom=True)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel, fontsize=8)
    return fig, list(axes.flat)


def save(plt, fig, path):
    """Write ``fig`` as a 64-colour palette PNG: a quarter of the size, same look."""
    fig.tight_layout()
    fig.canvas.draw()
    image = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())).convert("RGB")
    image.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    plt.close(fig)


def presets_figure(plt, path):
    names = polynomials.names()
    fig, axes = grid(plt, len(names), 4)
    for ax, name in zip(axes, names, strict=False):
        schedule = polynomials.preset(name)
        draw(ax, schedule, LOWER, f"{name} ({schedule.default_steps} × deg {schedule.degree})")
    save(plt, fig, path)


def errors_figure(plt, path):
    """Every preset's ``|p_t(sigma) - 1|`` after each step, log-log, one panel each."""
    names = polynomials.names()
    fig, axes = grid(plt, len(names), 4, ylabel="|p(σ) − 1| after step t", width=3.6)
    for ax, name in zip(axes, names, strict=False):
        schedule = polynomials.preset(name)
        title = f"{name} ({schedule.default_steps} × deg {schedule.degree})"
        draw_error(ax, schedule, LOWER, title)
    for ax in axes:
        if ax.get_visible() and not ax.get_subplotspec().is_first_col():
            ax.set_ylabel("")
    save(plt, fig, path)


def design_figure(plt, path):
    fig, axes = grid(plt, 3, 3)
    for ax, degree in zip(axes, (3, 5, 7), strict=False):
        schedule = polynomials.design(LOWER, 6, degree, safety=1.01, cushion=0.02)
        draw(ax, schedule, LOWER, f"design(1e-3, 6, degree={degree})")
    save(plt, fig, path)


def main():
    """Write the three figures into ``docs/_static/generated/``; return their paths."""
    mpl.use("Agg", force=True)  # files only, no display
    import matplotlib.pyplot as plt

    OUT.mkdir(parents=True, exist_ok=True)
    paths = [OUT / "schedules.png", OUT / "schedule_errors.png", OUT / "schedule_design.png"]
    with mpl.rc_context({"figure.dpi": 80}):
        presets_figure(plt, paths[0])
        errors_figure(plt, paths[1])
        design_figure(plt, paths[2])
    return paths


if __name__ == "__main__":
    for written in main():
        print(f"wrote {written}")
