"""The ``foretell`` command: one subcommand per system plus ``foretell demo``.

Each system owns ``foretell/<system>/cli.py`` with ``register(subparsers)``; that module must be
cheap to import (heavy imports go inside the command functions) so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from foretell import __version__
from foretell.core.errors import ForetellError, debug_enabled, os_error_line

SYSTEMS = ("specdiff", "specprune", "specee", "nifa")


class ForetellArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr and exit status 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> ForetellArgumentParser:
    parser = ForetellArgumentParser(
        prog="foretell",
        description="SpecDiff (diffusion feature caching), SpecPrune-VLA (VLA token pruning), "
                    "SpecEE (LLM speculative early exit) and NIFA (GNN fairness attack).",
    )
    parser.add_argument("--version", action="version", version=f"foretell {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    from foretell import demo

    demo.register(sub)
    for name in SYSTEMS:
        importlib.import_module(f"foretell.{name}.cli").register(sub)
    return parser


OUTPUT_FLAGS = {"json": "--json", "md": "--md", "plot": "--plot", "save_poisoned": "--save-poisoned"}


def _check_outputs(args) -> None:
    """Every output path a command was given is checked before any work (not after a long run)."""
    from foretell.core.report import check_distinct_outputs, check_output_path

    for attr, flag in OUTPUT_FLAGS.items():
        check_output_path(getattr(args, attr, None), flag)
    check_output_path(getattr(args, "out", None), "--out", directory=True)
    check_distinct_outputs({flag: getattr(args, attr, None) for attr, flag in OUTPUT_FLAGS.items()})


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, dispatch, and turn user errors into one-line messages."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        # a system given without its action: show that system's help
        args._parser.print_help() if hasattr(args, "_parser") else parser.print_help()
        return 2
    debug = debug_enabled()
    try:
        _check_outputs(args)
        rc = func(args)
        return int(rc or 0)
    except ForetellError as exc:
        if debug:
            raise
        print(f"foretell: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("foretell: interrupted; no partial report was written", file=sys.stderr)
        return 130
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        if debug:
            raise
        print(f"foretell: error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - last line of defence: never a traceback
        if debug:
            raise
        print(f"foretell: internal error ({type(exc).__name__}): {exc} "
              f"(set FORETELL_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
