"""The ``rapidws`` command: ``rapidws serve --echo`` and ``rapidws connect URL``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..version import __version__
from .bench import add_bench_command
from .connect import add_connect_command
from .demo import add_demo_command
from .serve import add_serve_command

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``rapidws`` command."""
    parser = argparse.ArgumentParser(
        prog="rapidws", description="WebSocket server and client for the command line."
    )
    parser.add_argument("--version", action="version", version=f"rapidws {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_serve_command(commands)
    add_connect_command(commands)
    add_bench_command(commands)
    add_demo_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``rapidws`` command with ``argv`` (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 1 when the connection failed or closed
        abnormally, 2 for a usage error.
    """
    args = build_parser().parse_args(argv)
    try:
        status: int = args.run(args)
    except KeyboardInterrupt:
        status = 130
    sys.stdout.flush()
    return status
