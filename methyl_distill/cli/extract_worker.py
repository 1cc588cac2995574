"""`methyl-distill extract-worker`: a Prefect task worker for `extract --workers task_workers`.

Start as many as the budget and the machines allow, on the machines that hold the teacher's key: each
serves the extraction task (`methyl_distill.tasks.extraction_workers`) to every run submitted to the
same Prefect server (`PREFECT_API_URL`), extracting up to `--limit` papers at a time. They share the
run's token budget (the Prefect global concurrency limit) and must cache where the flow does (the
same `METHYL_DISTILL_CACHE_DIR` or `--cache_dir` on a shared path, or
`METHYL_DISTILL_CACHE_STORAGE_BLOCK`). The key is read here, from this worker's environment, `.env`
or Secret block; the flow never sends one.

Ctrl-C (SIGINT) or SIGTERM stops the worker as `extract` stops: it takes no further paper, its teacher
sends no new request, requests in flight get a grace period, and the papers it had not finished are
submitted again by the flow for another worker. The command then exits with 130 / 143.
"""

from __future__ import annotations

import argparse
import os
import sys

DEFAULT_WORKER_LIMIT = 16


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "extract-worker",
        help="Serve paper extraction to `extract --workers task_workers` runs (a Prefect task worker).",
        description=(
            "Extract the papers that `methyl-distill extract --workers task_workers` submits to the "
            "Prefect server at PREFECT_API_URL, sharing its token budget and cache. The teacher's key comes "
            "from this worker's environment or .env (OPENAI_API_KEY, TEACHER_API_KEY_SECRET_BLOCK); the "
            "endpoint, model and budget come with each paper from the run."
        ),
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_WORKER_LIMIT,
        help=f"Papers this worker extracts at once (default {DEFAULT_WORKER_LIMIT}).",
    )
    parser.add_argument(
        "--cache_dir",
        default=None,
        help="Folder of the extraction cache, the flow's (default: METHYL_DISTILL_CACHE_DIR, else "
        "~/.cache/methyl-distill; METHYL_DISTILL_CACHE_STORAGE_BLOCK takes precedence).",
    )
    parser.set_defaults(handler=run_extract_worker)


def run_extract_worker(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    import logging

    from methyl_distill.extraction.stopping import RunAbandoned, run_stoppable, stop_on_signals

    for chatty in ("httpx", "httpcore"):  # one line per API call otherwise
        logging.getLogger(chatty).setLevel(logging.WARNING)
    from methyl_distill.tasks.extraction_workers import serve_extraction

    with stop_on_signals() as stop:
        try:
            run_stoppable(lambda: serve_extraction(args.limit, args.cache_dir, stop), stop)
        except RunAbandoned as gone:
            print(f"methyl-distill extract-worker: stopped by {stop.reason}: {gone}", file=sys.stderr)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(stop.exit_code)  # threads stuck beyond the grace period would hold the exit
        if stop.is_requested:
            print(f"methyl-distill extract-worker: stopped by {stop.reason}", file=sys.stderr)
            return stop.exit_code
    return 0
