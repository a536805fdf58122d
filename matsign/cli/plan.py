"""``python -m matsign plan``: what a distributed Muon step costs each rank, per scheme.

The ``run`` here is registered by `matsign.__main__`; every figure is
`matsign.optim.plan.cost`'s. Pure Python: no array library is imported.
"""

from __future__ import annotations

import json

from .. import __version__
from ..optim import plan
from . import UsageError

__all__ = ["DESCRIPTION", "add_arguments", "format_report", "run"]

DESCRIPTION = """\
Model one Muon step on several ranks for each distribution scheme: the Newton-Schulz
flops of the busiest rank over the ideal share (1.0 is perfect), the bytes the busiest
rank sends and receives, and the peak buffer of whole matrices per rank. Schemes:
matsign (flops-balanced sub-stacks), round_robin (KellerJordan/Muon), gather (Moonlight's
Distributed Muon, arXiv:2502.16982), dion (microsoft/dion's Muon). Layouts: replicated
(DDP; ZeRO-1 for gather) or sharded (FSDP2 Shard(0)). No timing: figures follow from
the shapes alone. MB = 1e6 bytes, GFLOP = 1e9 flops."""

EPILOG = """\
examples:
  python -m matsign plan --model llama-3-8b --ranks 8 64 1024 --layout sharded
  python -m matsign plan --shapes 768x768:48,768x3072:12,3072x768:12 --ranks 2 4 8
  python -m matsign plan --model gpt2-small --scheme matsign dion --bytes 4 --json"""


def add_arguments(parser):
    """Register the ``plan`` options on an `argparse.ArgumentParser`."""
    parser.add_argument("--model", default=None,
                        help=f"a known model: {', '.join(plan.MODELS)} (default: gpt2-small)")
    parser.add_argument("--shapes", default=None, metavar="MxN:COUNT,...",
                        help="a custom set instead of --model, e.g. 768x768:48,768x3072:12")
    parser.add_argument("--ranks", type=int, nargs="+", default=[8, 64, 1024],
                        help="rank counts (default: 8 64 1024)")
    parser.add_argument("--layout", default="both",
                        help="replicated, sharded or both (default: both)")
    parser.add_argument("--scheme", nargs="+", default=list(plan.SCHEMES),
                        help=f"schemes to show (default: {' '.join(plan.SCHEMES)})")
    parser.add_argument("--steps", type=int, default=5, help="Newton-Schulz steps (default: 5)")
    parser.add_argument("--bytes", type=int, default=None, dest="bytes_per_element",
                        help="communication bytes per element (default: 2; round_robin 4)")
    parser.add_argument("--json", action="store_true",
                        help="print machine-readable JSON on stdout instead of the table")
    parser.epilog = EPILOG


def run(args):
    """Run ``plan`` for parsed ``args``; return the exit status.

    Raises
    ------
    UsageError
        For an unknown model, scheme or layout, a malformed ``--shapes``, fewer than one
        rank or step, or a non-positive ``--bytes``.
    """
    name, shapes = _shapes(args)
    layouts = _layouts(args.layout)
    _check(args)
    report = _report(name, shapes, layouts, args)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _shapes(args):
    """``(label, ((m, n), count) ...)`` from ``--shapes`` or ``--model``."""
    if args.shapes is not None and args.model is not None:
        raise UsageError("give --model or --shapes, not both")
    if args.shapes is None:
        name = args.model or "gpt2-small"
        try:
            return name, plan.model_shapes(name)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    return "custom", tuple(_parse_entry(e) for e in args.shapes.split(","))


def _parse_entry(text):
    try:
        shape, count = text.split(":")
        m, n = (int(d) for d in shape.lower().split("x"))
        entry = ((m, n), int(count))
    except ValueError:
        msg = f"--shapes expects MxN:COUNT entries separated by commas; got {text!r}"
        raise UsageError(msg) from None
    if m < 1 or n < 1 or entry[1] < 0:
        msg = f"--shapes expects positive sides and a count >= 0; got {text!r}"
        raise UsageError(msg)
    return entry


def _layouts(layout):
    if layout == "both":
        return plan.LAYOUTS
    if layout not in plan.LAYOUTS:
        msg = f"unknown layout {layout!r}; known: {', '.join(plan.LAYOUTS)}, both"
        raise UsageError(msg)
    return (layout,)


def _check(args):
    unknown = [s for s in args.scheme if s not in plan.SCHEMES]
    if unknown:
        msg = f"unknown scheme {unknown[0]!r}; known: {', '.join(plan.SCHEMES)}"
        raise UsageError(msg)
    for option, value in (("--ranks", min(args.ranks)), ("--steps", args.steps),
                          ("--bytes", 1 if args.bytes_per_element is None
                           else args.bytes_per_element)):
        if value < 1:
            msg = f"{option} must be at least 1; got {value}"
            raise UsageError(msg)


def _report(name, shapes, layouts, args):
    """The ``--json`` output: one row per layout, rank count and scheme."""
    rows = [_row(shapes, layout, ranks, scheme, args)
            for layout in layouts for ranks in args.ranks for scheme in args.scheme]
    return {"command": "plan", "matsign_version": __version__, "model": name,
            "shapes": [[list(shape), k] for shape, k in shapes], "steps": args.steps,
            "bytes_per_element": args.bytes_per_element, "rows": rows}


def _row(shapes, layout, ranks, scheme, args):
    row = {"layout": layout, "ranks": ranks, "scheme": scheme}
    try:
        c = plan.cost(shapes, ranks, scheme=scheme, layout=layout, steps=args.steps,
                      bytes_per_element=args.bytes_per_element)
    except ValueError as exc:
        return {**row, "unsupported": str(exc)}
    return {**row, "imbalance": c.imbalance, "gflop_busiest": max(c.flops) / 1e9,
            "mb_sent": c.sent / 1e6, "mb_received": c.received / 1e6,
            "gb_network": c.network / 1e9, "mb_peak": c.memory / 1e6}


HEADER = ("layout", "scheme", "ranks", "busiest/ideal", "GFLOP/rank", "MB sent/rank",
          "MB recv/rank", "GB network", "peak MB")


def format_report(report):
    """The human-readable table of a `_report`."""
    matrices = sum(k for _, k in report["shapes"])
    lines = [f"{report['model']}: {matrices} matrices in {len(report['shapes'])} shapes, "
             f"{report['steps']} Newton-Schulz steps, busiest rank per step", ""]
    table = [HEADER, *(_cells(row) for row in report["rows"])]
    sizes = [max(len(r[j]) for r in table if len(r) == len(HEADER)) for j in range(len(HEADER))]
    for cells in table:
        padded = [c.rjust(s) if j > 1 else c.ljust(s)
                  for j, (c, s) in enumerate(zip(cells, sizes, strict=False))]
        lines.append("  ".join(padded if len(cells) == len(HEADER) else [*padded[:3], cells[3]]))
    return "\n".join(line.rstrip() for line in lines)


def _cells(row):
    head = [row["layout"], row["scheme"], str(row["ranks"])]
    if "unsupported" in row:
        return [*head, f"n/a: {row['unsupported']}"]
    return [*head, f"{row['imbalance']:.3f}", f"{row['gflop_busiest']:.1f}",
            f"{row['mb_sent']:.1f}", f"{row['mb_received']:.1f}", f"{row['gb_network']:.2f}",
            f"{row['mb_peak']:.1f}"]
