"""Entry point of the ``spool`` command: one sub-command module per area."""

from __future__ import annotations

import argparse
import importlib
import sys

from engine.exceptions import SpoolError

#: Modules that each define ``register(subparsers)``; a sub-command sets ``func``.
COMMAND_MODULES = ("cli.engine_cmds", "cli.model_cmds", "cli.service_cmds", "cli.book_cmds")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(prog="spool", description="Spool: long-form text to speech.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a module not written yet must not break the others
            if exc.name != name:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``spool`` command and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SpoolError as exc:
        print(f"spool: error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
