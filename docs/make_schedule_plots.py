"""Draw the scalar map of every preset schedule for docs/guide/schedules.rst.

Run from the repository root (needs matplotlib, the ``plot`` extra)::

    python docs/make_schedule_plots.py

It writes ``docs/_static/schedules.png`` (one panel per preset, side by side) and
``docs/_static/schedule_design.png`` (a designed schedule, degrees 3, 5 and 7). Each panel
shows, on a log axis of the normalised input singular value ``sigma``, what the first
``t`` polynomials make of it, for every step ``t`` (light to dark), and the exact band
at ``lower = 1e-3`` (grey). The images are committed; rerun after changing a preset.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image  # a matplotlib dependency

from matsign import polynomials
from matsign.cli.design import draw  # the figure of ``python -m matsign design --plot``

STATIC = Path(__file__).resolve().parent / "_static"
LOWER = 1e-3


def grid(count, columns):
    rows = math.ceil(count / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.9 * columns, 2.5 * rows),
                             sharex=True, sharey=True, squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("σ (normalised input)", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("output σ", fontsize=8)
    return fig, axes.flat


def save(fig, path):
    """Write ``fig`` as a 64-colour palette PNG: a quarter of the size, same look."""
    fig.tight_layout()
    fig.canvas.draw()
    image = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())).convert("RGB")
    image.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    plt.close(fig)


def presets_figure(path):
    names = polynomials.names()
    fig, axes = grid(len(names), 4)
    for ax, name in zip(axes, names, strict=False):
        schedule = polynomials.preset(name)
        draw(ax, schedule, LOWER, f"{name} ({schedule.default_steps} × deg {schedule.degree})")
    save(fig, path)


def design_figure(path):
    fig, axes = grid(3, 3)
    for ax, degree in zip(axes, (3, 5, 7), strict=False):
        schedule = polynomials.design(LOWER, 6, degree, safety=1.01, cushion=0.02)
        draw(ax, schedule, LOWER, f"design(1e-3, 6, degree={degree})")
    save(fig, path)


def main():
    plt.switch_backend("Agg")  # files only, no display
    plt.rcParams["figure.dpi"] = 80
    STATIC.mkdir(exist_ok=True)
    presets_figure(STATIC / "schedules.png")
    design_figure(STATIC / "schedule_design.png")
    print(f"wrote {STATIC / 'schedules.png'} and {STATIC / 'schedule_design.png'}")


if __name__ == "__main__":
    main()
