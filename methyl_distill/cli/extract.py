"""`methyl-distill extract`: the extraction flow from the command line, with the original script's flags.

The options are made from `ExtractParameters` (one per scalar field: `--input_directory`,
`--output_directory`, `--refresh`, `--max_concurrency`, ...), so the command, the flow and the
deployments share one list of parameters and defaults. The teacher's configuration comes from the
environment or `.env` (OPENAI_API_KEY, OPENAI_BASE_URL, TEACHER_*), resolved by the flow.
"""

from __future__ import annotations

import argparse
import logging

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
    from methyl_distill.flows.extract import extract_flow

    summary = extract_flow(**{name: getattr(parameters, name) for name in parameters.model_fields_set})
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
