"""A static, offline report of asv's saved results: tables and matplotlib figures in one page.

asv 0.6's own HTML (``asv publish``) loads its scripts from CDNs and is an error page
offline. This page has no scripts, styles or fonts from elsewhere: the figures are PNGs
inlined as data URIs. ``benchmarks/run`` writes it; by hand::

    python benchmarks/report.py [RESULTS_DIR [OUT_DIR]]   # default .asv/results, .asv/report

The three figures (GEMM fraction by size, Muon step time, Gram-space speed-up) are also
drawn for the docs from recorded results by ``docs/make_benchmark_plots.py``.
"""

import base64
import html
import io
import itertools
import json
import math
import sys
from pathlib import Path


def load(results_dir):
    """``(benchmarks, runs)``: asv's benchmark metadata and, per machine, its newest result.

    Each run is a dict with the machine's ``machine.json`` (``"machine"``), the result
    file's fields, and ``"values"``: benchmark name to ``{params tuple: value}``, where a
    value is a float, NaN for a skipped combination, or None for a failed one.
    """
    results_dir = Path(results_dir)
    benchmarks = json.loads((results_dir / "benchmarks.json").read_text())
    benchmarks.pop("version", None)
    runs = []
    for machine_file in sorted(results_dir.glob("*/machine.json")):
        files = [f for f in machine_file.parent.glob("*.json") if f.name != "machine.json"]
        if not files:
            continue
        data = [json.loads(f.read_text()) for f in files]
        run = max(data, key=lambda d: d.get("date") or 0)
        run["machine"] = json.loads(machine_file.read_text())
        run["values"] = _values(run, benchmarks)
        runs.append(run)
    return benchmarks, runs


def _values(run, benchmarks):
    """Benchmark name to ``{params tuple: value}`` from a version-2 asv result file."""
    columns = run["result_columns"]
    values = {}
    for name, row in run["results"].items():
        row = dict(zip(columns, row, strict=False))
        params = row.get("params") or benchmarks.get(name, {}).get("params") or []
        results = row["result"]
        results = results if isinstance(results, list) else [results]
        combos = list(itertools.product(*params)) if params else [()]
        values[name] = {tuple(_unquote(p) for p in combo): value
                        for combo, value in zip(combos, results, strict=False)}
    return values


def _unquote(param):
    """asv stores parameters as their repr: ``"'numpy'"`` -> ``numpy``."""
    return param[1:-1] if len(param) > 1 and param[0] == param[-1] == "'" else param


def format_value(value, unit):
    """A value for a table: seconds with a prefix, other units to 3 significant digits."""
    if value is None:
        return "failed"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if unit == "seconds":
        for scale, prefix in ((1, "s"), (1e-3, "ms"), (1e-6, "µs")):
            if abs(value) >= scale:
                return f"{value / scale:.3g} {prefix}"
        return f"{value * 1e9:.3g} ns"
    return f"{value:.3g}"


def table_html(name, meta, values):
    """An HTML table: rows are all but the last parameter, columns the last one."""
    names = meta.get("param_names") or []
    params = [[_unquote(p) for p in ps] for ps in meta.get("params") or []]
    unit = meta.get("unit", "")
    if not params:
        cell = format_value(values.get(()), unit)
        return f"<table><tr><th>{html.escape(name)}</th><td>{cell}</td></tr></table>"
    *row_params, all_columns = params
    rows = [combo for combo in itertools.product(*row_params)
            if any(_finite(values.get((*combo, c))) for c in all_columns)]
    if not rows:
        return "<p class='note'>every combination skipped or failed here</p>"
    columns = [c for c in all_columns if any(_finite(values.get((*combo, c))) for combo in rows)]
    empty = [c for c in all_columns if c not in columns]
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names[:-1])
    head += "".join(f"<th>{html.escape(names[-1])}={html.escape(c)}</th>" for c in columns)
    body = ""
    for combo in rows:
        cells = "".join(f"<td>{html.escape(p)}</td>" for p in combo)
        cells += "".join(f"<td class='num'>{format_value(values.get((*combo, c)), unit)}</td>"
                         for c in columns)
        body += f"<tr>{cells}</tr>"
    skipped = sum(1 for v in values.values() if not _finite(v))
    left_out = "" if not empty else (f"; left out, with no result here: {html.escape(names[-1])}="
                                     + ", ".join(html.escape(c) for c in empty))
    note = f"<p class='note'>unit: {html.escape(unit)}; {skipped} of {len(values)} " \
           f"combinations skipped (n/a) or failed{left_out}</p>"
    return f"<table><tr>{head}</tr>{body}</table>{note}"


def _finite(value):
    return isinstance(value, (int, float)) and not math.isnan(value)


# The figures: each takes one run's values and a matplotlib Axes-maker, returns a Figure or
# None when the run has none of its benchmark.

GEMM = "bench_msign.TrackGemmFraction.track_gemm_fraction"
MUON = "bench_optim.TimeMuonStep.time_step"
GRAM = "bench_iterations.TrackGramSpeedup.track_speedup"


def _shape_size(shape):
    return math.prod(int(d) for d in shape.split("x"))


def _grouped_bars(ax, groups, series, values, *, label):
    """Bars of ``values[(group, name)]`` by group on x, one colour per series name."""
    width = 0.8 / max(1, len(series))
    for i, name in enumerate(series):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ys = [values.get((group, name), math.nan) for group in groups]
        bars = ax.bar(xs, ys, width, label=label(name))
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
    ax.set_xticks(range(len(groups)), groups)


def gemm_fraction_figure(values, caption):
    """Newton–Schulz flop rate over the GEMM rate, by shape, per preset and backend."""
    import matplotlib.pyplot as plt

    found = {k: v for k, v in values.get(GEMM, {}).items() if _finite(v)}
    if not found:
        return None
    shapes = sorted({shape for _, shape, _ in found}, key=_shape_size)
    series = sorted({(preset, backend) for preset, _, backend in found})
    by_shape = {(shape, (preset, backend)): v for (preset, shape, backend), v in found.items()}
    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    _grouped_bars(ax, shapes, series, by_shape, label=lambda s: f"{s[0]}, {s[1]}")
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xlabel("matrix shape (m × n, or batch × m × n)")
    ax.set_ylabel("fraction of the GEMM rate (flops/s ÷ GEMM flops/s)")
    ax.set_title("Newton–Schulz msign (standard loop) against a plain GEMM", fontsize=11)
    ax.set_ylim(0, 1.75)
    ax.legend(title="preset, backend", fontsize=8, ncol=4, loc="upper center")
    fig.text(0.01, -0.02, caption, fontsize=7, ha="left", va="top", wrap=True)
    return fig


def muon_step_figure(values, caption):
    """Seconds per optimizer step, per implementation, one panel per width (log scale)."""
    import matplotlib.pyplot as plt

    found = {k: v for k, v in values.get(MUON, {}).items() if _finite(v)}
    if not found:
        return None
    widths = sorted({width for _, width, _ in found}, key=int)
    fig, axes = plt.subplots(1, len(widths), figsize=(4.5 * len(widths), 3.8),
                             layout="constrained", squeeze=False)
    for ax, width in zip(axes[0], widths, strict=True):
        rows = [(row, device, v) for (row, w, device), v in found.items() if w == width]
        rows.sort(key=lambda r: r[2])
        labels = [row if len({d for _, d, _ in rows}) == 1 else f"{row} ({device})"
                  for row, device, _ in rows]
        colours = ["tab:orange" if row.startswith("torch") else "tab:blue" for row, _, _ in rows]
        bars = ax.barh(labels, [v for *_, v in rows], color=colours)
        ax.bar_label(bars, labels=[format_value(v, "seconds") for *_, v in rows], fontsize=7,
                     padding=2)
        spread = max(v for *_, v in rows) / min(v for *_, v in rows)
        ax.set_xscale("log" if spread > 10 else "linear")
        ax.set_xlabel("seconds per step (Muon + AdamW)" + (", log scale" if spread > 10 else ""))
        ax.set_title(f"width {width}" + (" (GPT-2 small)" if width == "768" else ""),
                     fontsize=10)
        ax.margins(x=0.3)
    axes[0][0].set_ylabel("implementation (blue: matsign, orange: torch)")
    fig.suptitle("Muon step time over a GPT-2-like parameter set, median", fontsize=11)
    fig.text(0.01, -0.02, caption, fontsize=7, ha="left", va="top", wrap=True)
    return fig


def gram_speedup_figure(values, caption):
    """Standard loop time over Gram-space time, by wide shape, per backend."""
    import matplotlib.pyplot as plt

    found = {k: v for k, v in values.get(GRAM, {}).items() if _finite(v)}
    if not found:
        return None
    shapes = sorted({shape for shape, _ in found}, key=_shape_size)
    backends = sorted({backend for _, backend in found})
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    _grouped_bars(ax, shapes, backends, found, label=str)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xlabel("matrix shape m × n (aspect n/m = 4, 4, 8)")
    ax.set_ylabel("speed-up (standard time ÷ Gram-space time)")
    ax.set_title("Gram-space Newton–Schulz over the standard loop, Polar Express, float32",
                 fontsize=11)
    ax.set_ylim(0, 1.3 * max(found.values()))
    ax.legend(title="backend", fontsize=8, loc="upper left")
    fig.text(0.01, -0.02, caption, fontsize=7, ha="left", va="top", wrap=True)
    return fig


FIGURES = {"gemm_fraction": gemm_fraction_figure, "muon_step": muon_step_figure,
           "gram_speedup": gram_speedup_figure}


def machine_caption(run, threads=None):
    """One line naming the machine, the threads and the libraries of a run."""
    machine = run["machine"]
    requirements = ", ".join(f"{k} {v}" for k, v in sorted(run.get("requirements", {}).items()))
    text = f"asv on {machine.get('machine', '?')}: {machine.get('cpu', '?')}, " \
           f"{machine.get('num_cpu', '?')} CPUs"
    if threads is not None:
        text += f", {threads} BLAS/torch thread(s)"
    return text + (f"; {requirements}" if requirements else "") + \
        f"; commit {run.get('commit_hash', '?')[:8]}"


def png_bytes(fig):
    """The figure as PNG bytes (and closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1300px}
table{border-collapse:collapse;margin:.5em 0;font-size:13px}
th,td{border:1px solid #bbb;padding:2px 6px}th{background:#eee}
td.num{text-align:right;font-family:monospace}.note{color:#555;font-size:12px}
img{max-width:100%;border:1px solid #ddd}"""


def write_report(results_dir, out_dir):
    """Write ``out_dir/index.html`` from the results in ``results_dir``; return its path."""
    import matplotlib

    matplotlib.use("Agg")
    benchmarks, runs = load(results_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>matsign benchmarks"
             f"</title><style>{STYLE}</style></head><body><h1>matsign benchmarks</h1>"]
    if not runs:
        parts.append("<p>No saved results: run <code>benchmarks/run</code>.</p>")
    for run in runs:
        caption = machine_caption(run)
        parts.append(f"<h2>{html.escape(caption)}</h2>")
        parts.append(f"<p class='note'>environment {html.escape(run.get('env_name', ''))}, "
                     f"{len(run['values'])} benchmarks</p>")
        for fig in (make(run["values"], caption) for make in FIGURES.values()):
            if fig is not None:
                data = base64.b64encode(png_bytes(fig)).decode()
                parts.append(f"<p><img alt='figure' src='data:image/png;base64,{data}'></p>")
        for name in sorted(run["values"]):
            parts.append(f"<h3>{html.escape(name)}</h3>")
            parts.append(table_html(name, benchmarks.get(name, {}), run["values"][name]))
    parts.append("</body></html>")
    path = out / "index.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    results = Path(sys.argv[1]) if len(sys.argv) > 1 else here / ".asv" / "results"
    target = Path(sys.argv[2]) if len(sys.argv) > 2 else here / ".asv" / "report"
    print(write_report(results, target))
