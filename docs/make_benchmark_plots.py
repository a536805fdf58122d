"""Draw the benchmarks page's figures from the asv results recorded under ``docs/_data/asv``.

    python docs/make_benchmark_plots.py     # writes docs/_static/generated/bench_*.png

The figures are `benchmarks/report.py`'s (the offline report draws the same ones); the
caption under each names the machine from the recorded ``machine.json`` and the thread
count from ``docs/_data/asv/run.json``, which also says how the results were taken.
"""

import json
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
DATA = DOCS / "_data" / "asv"
OUT = DOCS / "_static" / "generated"


def main(outdir=OUT):
    """Write ``bench_gemm_fraction.png``, ``bench_muon_step.png``, ``bench_gram_speedup.png``."""
    import matplotlib

    matplotlib.use("Agg")
    sys.path.insert(0, str(DOCS.parent / "benchmarks"))
    import report

    _, runs = report.load(DATA)
    run = runs[0]
    about = json.loads((DATA / "run.json").read_text())
    caption = f"{about['cpu']}; " + report.machine_caption(run, threads=about["threads"]) + \
        f"; {about['date']}"
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    for name, make in report.FIGURES.items():
        fig = make(run["values"], caption)
        if fig is None:
            raise ValueError(f"{DATA} has no results for the {name} figure")
        (outdir / f"bench_{name}.png").write_bytes(report.png_bytes(fig))
    return outdir


if __name__ == "__main__":
    print(main())
