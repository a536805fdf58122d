"""The command line: ``python -m matsign <command> [options]``.

Each subcommand is one function in `SUBCOMMANDS` that adds its parser and sets
``run`` (a callable taking the parsed arguments and returning the exit status);
adding a subcommand means writing one such function and listing it there. A
subcommand raises ``UsageError`` for a bad option value: `main` prints it on one
line and exits with status 2, as argparse does for its own errors.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__, _compare, _design

__all__ = ["build_parser", "main"]


def _add_compare(subparsers):
    """``compare``: time and accuracy of every msign method on one matrix."""
    parser = subparsers.add_parser(
        "compare",
        help="time and check every msign method (SVD, each Newton-Schulz preset, references)",
        description=_compare.DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _compare.add_arguments(parser)
    parser.set_defaults(run=_compare.run)


def _add_design(subparsers):
    """``design``: a Polar Express-style schedule (or a preset), its bands, a plot."""
    parser = subparsers.add_parser(
        "design",
        help="design a Newton-Schulz schedule or show a preset: coefficients, bands, plot",
        description=_design.DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _design.add_arguments(parser)
    parser.set_defaults(run=_design.run)


def _add_train_demo(subparsers):
    """``train-demo``: an MLP on scikit-learn's digits with AdamW, Muon, Shampoo and SOAP."""
    from .optim import _demo  # imports torch and scikit-learn only when run

    parser = subparsers.add_parser(
        "train-demo",
        help="train a small MLP on scikit-learn's digits with AdamW, Muon, Shampoo, SOAP",
        description=_demo.DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _demo.add_arguments(parser)
    parser.set_defaults(run=_demo.run)


SUBCOMMANDS = (_add_compare, _add_design, _add_train_demo)


def build_parser():
    """The ``python -m matsign`` argument parser with every subcommand.

    Returns
    -------
    argparse.ArgumentParser
    """
    parser = argparse.ArgumentParser(
        prog="python -m matsign",
        description="matsign's command line: matrix sign / polar factors for optimizers.",
        epilog="Run 'python -m matsign <command> --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"matsign {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv=None):
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the subcommand, return its exit status.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments without the program name.

    Returns
    -------
    int
        0 on success, 2 for a usage error (printed as one line on stderr).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except _compare.UsageError as exc:
        print(f"{parser.prog} {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
