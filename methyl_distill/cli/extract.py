"""`methyl-distill extract`: the extraction flow from the command line, with the original script's flags.

The options are made from `ExtractParameters` (one per scalar field: `--input_directory`,
`--output_directory`, `--refresh`, `--max_concurrency`, ...), so the command, the flow and the
deployments share one list of parameters and defaults. The teacher's configuration comes from the
environment or `.env` (OPENAI_API_KEY, OPENAI_BASE_URL, TEACHER_*), resolved by the flow.

Ctrl-C (SIGINT) or SIGTERM stops the run (`methyl_distill.extraction.stopping`): no new teacher
request, those in flight get a grace period, the finished papers and the aggregate files are kept,
and the command exits with 130 / 143. The flow runs in a thread of its own so that the main thread
handles the signals whatever the flow is doing; the temporary Prefect server (when
`PREFECT_API_URL` is unset) runs in its own process group, so the terminal's Ctrl-C does not kill
it before the run has reported its end (`ops/temporary_prefect_server.py`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from methyl_distill.cli.options import add_model_options, given_options

logger = logging.getLogger(__name__)

PROGRESS_FILE_WARNING = (
    "--progress_file is ignored: finished papers are cached by Prefect (METHYL_DISTILL_CACHE_DIR), "
    "so a rerun skips them without a progress file; use --refresh to re-extract"
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from methyl_distill.extraction.parameters import ExtractParameters

    parser = subparsers.add_parser(
        "extract",
        help="Extract teacher Q&A records from a directory of papers (.txt, .md).",
        description=(
            "Ask the teacher model the question bank about every paper under --input_directory and write "
            "processed_files/, all_results.json, records.jsonl and failures.jsonl to --output_directory. "
            "Teacher settings come from the environment or .env: OPENAI_API_KEY, OPENAI_BASE_URL, "
            "TEACHER_MODEL, TEACHER_TPM, TEACHER_RPM, ..."
        ),
    )
    names = add_model_options(parser, ExtractParameters)
    parser.add_argument(
        "--progress_file",
        default=None,
        help="Accepted for compatibility and ignored: Prefect caching replaces it.",
    )
    parser.set_defaults(handler=run_extract, parameter_names=names)


def run_extract(args: argparse.Namespace) -> int:
    from methyl_distill.extraction.parameters import ExtractParameters

    if args.progress_file is not None:
        logger.warning(PROGRESS_FILE_WARNING)
    # Validated here, before a Prefect run (and its temporary server) starts for a bad flag.
    parameters = ExtractParameters(**given_options(args, args.parameter_names))
    from methyl_distill.extraction.outputs import claim_output_directory

    claim_output_directory(parameters.output_directory)  # a foreign folder is refused before Prefect starts
    if parameters.workers == "task_workers":
        from methyl_distill.teacher.token_bucket import prefect_server_configured

        if not prefect_server_configured():
            raise ValueError(
                "--workers task_workers needs the Prefect server the workers use: set PREFECT_API_URL "
                "(and start `methyl-distill extract-worker` processes against it)"
            )
    from methyl_distill.extraction.stopping import (
        ExtractionStopped,
        RunAbandoned,
        run_stoppable,
        stop_on_signals,
    )
    from methyl_distill.flows.extract import extract_flow
    from methyl_distill.ops.console_progress import console_progress
    from methyl_distill.ops.temporary_prefect_server import prefect_api

    given = {name: getattr(parameters, name) for name in parameters.model_fields_set}
    abandoned = False
    with stop_on_signals() as stop:
        try:
            with prefect_api(cancelled=lambda: stop.is_requested), console_progress():
                summary = run_stoppable(lambda: extract_flow(**given), stop)
        except ExtractionStopped as stopped:
            print(f"methyl-distill extract: {stopped}", file=sys.stderr)
            return stop.exit_code
        except RunAbandoned as gone:
            print(f"methyl-distill extract: stopped by {stop.reason}: {gone}", file=sys.stderr)
            abandoned = True
        except KeyboardInterrupt:
            if not stop.is_requested:
                raise
            print(f"methyl-distill extract: stopped by {stop.reason} before any paper", file=sys.stderr)
            return stop.exit_code
        exit_code = stop.exit_code
    if abandoned:
        # Threads stuck beyond the grace period (a wait for the token budget, an unanswered API
        # call) would hold the interpreter's exit: the outputs are written, the server is stopped.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code)
    formats = ", ".join(f"{count} {name}" for name, count in summary.files_by_format.items())
    print(
        f"{summary.files_found} file(s) ({formats or 'none readable'}; {summary.hidden_skipped} hidden "
        f"skipped); ~{summary.back_matter_tokens_left_out} tokens of reference lists and acknowledgements "
        "left out"
    )
    print(
        f"{summary.extracted} extracted, {summary.cached} cached, {summary.failed} failed, "
        f"{summary.rejected} not readable; records: {summary.records_path}; failures: {summary.failures_path}"
    )
    if summary.rejected:
        print(f"see {summary.failures_path} (stage 'read') for why each unreadable file was not used")
    if summary.failed:
        print(f"see {summary.failures_path}: failed papers are retried by the next run (they are not cached)")
    return 0
