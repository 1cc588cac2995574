"""`methyl-distill` command line: one subcommand per stage.

Each module in `SUBCOMMAND_MODULES` defines `register(subparsers)`, which adds its subcommands
and sets `handler` on them. Modules import heavy dependencies (torch, ms-swift, Prefect flows)
inside their handlers, so `methyl-distill --help` stays fast and a CPU extraction worker never
imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext

from methyl_distill import __version__
from methyl_distill.ops.prefect_logging import route_project_logs_to_prefect

SUBCOMMAND_MODULES = (
    "methyl_distill.cli.extract",
    "methyl_distill.cli.extract_worker",
    "methyl_distill.cli.dataset",
    "methyl_distill.cli.markers",
    "methyl_distill.cli.training",
    "methyl_distill.cli.publishing",
    "methyl_distill.cli.pipeline",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="methyl-distill",
        description="Turn DNA-methylation marker papers into a domain-expert language model.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="Log debug messages.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Without a configured Prefect API each command starts a temporary local server; its default
    # 30 s start-up timeout is too tight on a small, busy machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    # The project's log records in the Prefect UI's run logs: read by Prefect when it is imported (by
    # the handlers, after this), see methyl_distill/ops/prefect_logging.py.
    route_project_logs_to_prefect()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # one line per HTTP request (Prefect's API, the teacher) buries the progress
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)
    if args.verbose:  # over the level the package takes when Prefect's setting names it
        logging.getLogger("methyl_distill").setLevel(logging.DEBUG)
    try:
        with _console_progress(args.command):
            return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a clean message for users; --verbose shows the traceback
        if args.verbose:
            raise
        print(f"methyl-distill {args.command}: error: {exc}", file=sys.stderr)
        return 1


# Commands whose stages show their progress on the console (ops/console_progress.py). `extract` opens
# it itself, inside its signal handling, so that a stopped run leaves the terminal as it found it.
CONSOLE_PROGRESS_COMMANDS = ("build-dataset", "finetune", "run")


def _console_progress(command: str) -> AbstractContextManager[object]:
    if command not in CONSOLE_PROGRESS_COMMANDS:
        return nullcontext()
    from methyl_distill.ops.console_progress import console_progress

    return console_progress()


if __name__ == "__main__":
    sys.exit(main())
