"""`methyl-distill extract`: the extraction flow from the command line, with the original script's flags."""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)

PROGRESS_FILE_WARNING = (
    "--progress_file is ignored: finished papers are cached by Prefect (METHYL_DISTILL_CACHE_DIR), "
    "so a rerun skips them without a progress file; use --refresh to re-extract"
)


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return number


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    parser.add_argument("--input_directory", required=True, help="Directory of papers, searched recursively.")
    parser.add_argument("--output_directory", required=True, help="Directory for the outputs.")
    parser.add_argument(
        "--progress_file",
        default=None,
        help="Accepted for compatibility and ignored: Prefect caching replaces it.",
    )
    parser.add_argument("--refresh", action="store_true", help="Re-extract every paper, ignoring the cache.")
    parser.add_argument(
        "--question_bank", default=None, help="Question bank TOML file (default: the bundled one)."
    )
    parser.add_argument(
        "--teacher_base_url", default=None, help="OpenAI-compatible endpoint (overrides OPENAI_BASE_URL)."
    )
    parser.add_argument("--teacher_model", default=None, help="Teacher model name (overrides TEACHER_MODEL).")
    parser.add_argument(
        "--max_concurrency",
        type=_positive_int,
        default=None,
        help="Most teacher requests in flight (default 16).",
    )
    parser.add_argument(
        "--max_chunk_tokens",
        type=_positive_int,
        default=None,
        help="Most paper tokens per request (default 12000).",
    )
    parser.add_argument(
        "--chunk_overlap_tokens",
        type=int,
        default=None,
        help="Tokens shared by neighbouring chunks (default 200).",
    )
    parser.add_argument(
        "--cache_dir", default=None, help="Cache folder (overrides METHYL_DISTILL_CACHE_DIR)."
    )
    parser.set_defaults(handler=run_extract)


def run_extract(args: argparse.Namespace) -> int:
    if args.progress_file is not None:
        logger.warning(PROGRESS_FILE_WARNING)
    from methyl_distill.flows.extract import extract_flow

    options = {
        "refresh": args.refresh,
        "question_bank": args.question_bank,
        "teacher_base_url": args.teacher_base_url,
        "teacher_model": args.teacher_model,
        "max_concurrency": args.max_concurrency,
        "max_chunk_tokens": args.max_chunk_tokens,
        "chunk_overlap_tokens": args.chunk_overlap_tokens,
        "cache_dir": args.cache_dir,
    }
    summary = extract_flow(
        input_directory=args.input_directory,
        output_directory=args.output_directory,
        **{key: value for key, value in options.items() if value is not None},
    )
    print(
        f"{summary.extracted} extracted, {summary.cached} cached, {summary.failed} failed, "
        f"{summary.rejected} rejected; records: {summary.records_path}; failures: {summary.failures_path}"
    )
    if summary.failed or summary.rejected:
        print(f"see {summary.failures_path}: failed papers are retried by the next run (they are not cached)")
    return 0
