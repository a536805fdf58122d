"""The command line: ``python -m matsign <command> [options]``.

Each subcommand is a module of `matsign.cli` with ``DESCRIPTION``,
``add_arguments(parser)`` and ``run(args)`` (returning the exit status), listed in
`_subcommands`; adding a subcommand means writing such a module and adding one line there. A
subcommand raises ``UsageError`` for a bad option value: `main` prints it on one
line and exits with status 2, as argparse does for its own errors.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import __version__
from .cli import UsageError, compare, design, plan

__all__ = ["build_parser", "main"]


def _subcommands():
    """``(name, module, help)`` per subcommand.

    Each module has ``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args)``.
    """
    from .cli import demo  # imports torch and scikit-learn only when run

    return (
        ("compare", compare,
         "time and check every msign method (SVD, each Newton-Schulz preset, references)"),
        ("design", design,
         "design a Newton-Schulz schedule or show a preset: coefficients, bands, plot"),
        ("train-demo", demo,
         "train an MLP on scikit-learn's digits or a small GPT (--task gpt) with each optimizer"),
        ("plan", plan, "model a distributed Muon step per scheme: flops, bytes, memory per rank"),
    )


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
    for name, module, summary in _subcommands():
        sub = subparsers.add_parser(name, help=summary, description=module.DESCRIPTION,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
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
        0 on success, 2 for a usage error (printed as one line on stderr), 141 when the
        reader of the output went away (``... | head``), as a shell reports SIGPIPE.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UsageError as exc:
        print(f"{parser.prog} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the rest of the output has no reader: send it nowhere, so that Python's flush
        # at exit does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
