"""`methyl-distill run`, `watch` and `setup-prefect`: the whole pipeline, new-paper events, Prefect set-up."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import threading
import time
from pathlib import Path

logger = logging.getLogger(__name__)


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return number


def _quiet_http_logs() -> None:
    """One line per HTTP request to the Prefect API is noise on a terminal (kept with --verbose)."""
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _register_run(subparsers)
    _register_watch(subparsers)
    _register_setup(subparsers)


def _register_run(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="Run the whole pipeline: extract, build the dataset, fine-tune, evaluate.",
        description=(
            "Distil the papers under --input_directory into a LoRA adapter for the student model and "
            "evaluate "
            "it. Without OPENAI_API_KEY the embedded teacher (SmolLM2 on llama.cpp) answers; with it, GPT-4o "
            "(or OPENAI_BASE_URL / TEACHER_MODEL). Reruns reuse cached extractions and datasets."
        ),
    )
    parser.add_argument("--input_directory", required=True, help="Directory of papers (.txt, .md).")
    parser.add_argument("--output_directory", required=True, help="Directory for every stage's outputs.")
    parser.add_argument(
        "--teacher",
        choices=("auto", "embedded", "configured"),
        default="auto",
        help="auto (default): the configured endpoint when OPENAI_API_KEY or OPENAI_BASE_URL is set, "
        "else embedded.",
    )
    parser.add_argument(
        "--teacher_base_url", default=None, help="OpenAI-compatible endpoint (overrides OPENAI_BASE_URL)."
    )
    parser.add_argument("--teacher_model", default=None, help="Teacher model name (overrides TEACHER_MODEL).")
    parser.add_argument(
        "--question_bank", default=None, help="Question bank TOML (default: the bundled one)."
    )
    parser.add_argument("--refresh", action="store_true", help="Re-extract every paper, ignoring the cache.")
    parser.add_argument(
        "--max_chunk_tokens", type=_positive_int, default=None, help="Paper tokens per request."
    )
    parser.add_argument("--dataset_config", default=None, help="Dataset stage TOML (e.g. data/dataset.toml).")
    parser.add_argument("--student", default="smollm2-135m", help="Student preset (default smollm2-135m).")
    parser.add_argument(
        "--max_steps", type=_positive_int, default=None, help="LoRA optimizer steps (default 30)."
    )
    parser.add_argument(
        "--finetune_deployment",
        default=None,
        help="Run the fine-tune as this deployment (e.g. finetune/finetune-cuda) and wait for it.",
    )
    parser.add_argument("--no_evaluation", action="store_true", help="Skip the evaluation stage.")
    parser.add_argument(
        "--evaluation_limit", type=_positive_int, default=8, help="Test examples to evaluate (default 8)."
    )
    parser.set_defaults(handler=run_pipeline_command)


def run_pipeline_command(args: argparse.Namespace) -> int:
    _quiet_http_logs()
    from methyl_distill.flows.pipeline import pipeline_flow, short_lora_run
    from methyl_distill.sft_dataset import DatasetConfig

    finetune = short_lora_run()
    if args.max_steps is not None:
        finetune = finetune.model_copy(update={"max_steps": args.max_steps, "save_steps": args.max_steps})
    started = time.monotonic()
    summary = pipeline_flow(
        input_directory=args.input_directory,
        output_directory=args.output_directory,
        teacher=args.teacher,
        teacher_base_url=args.teacher_base_url,
        teacher_model=args.teacher_model,
        question_bank=args.question_bank,
        refresh_extraction=args.refresh,
        max_chunk_tokens=args.max_chunk_tokens,
        dataset=DatasetConfig.from_toml(args.dataset_config) if args.dataset_config else None,
        student_preset=args.student,
        finetune=finetune,
        finetune_deployment=args.finetune_deployment,
        evaluate=not args.no_evaluation,
        evaluation_limit=args.evaluation_limit,
    )
    extraction = summary.stages["extraction"]
    print()
    print(f"Pipeline finished in {time.monotonic() - started:.0f} s with teacher {summary.teacher}.")
    print(
        f"  papers:      {extraction['papers']} ({extraction['extracted']} extracted, "
        f"{extraction['cached']} cached, "
        f"{extraction['failed']} failed)"
    )
    print(f"  outputs:     {summary.output_directory}")
    print(f"  records:     {summary.records_path}")
    print(f"  dataset:     {summary.dataset_directory}")
    print(f"  adapter:     {summary.adapter_path}")
    print(f"  evaluation:  {summary.evaluation_report_path or '(skipped)'}")
    return 0


def _register_watch(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "watch",
        help="Announce new papers in a folder as Prefect 'paper.added' events.",
        description=(
            "Scan --input_directory for paper contents not announced before and emit one 'paper.added' event "
            "each; a deployment trigger on that event reruns the pipeline. Seen contents are kept in a state "
            "file. Needs a Prefect API (PREFECT_API_URL) for the events to reach automations."
        ),
    )
    parser.add_argument("--input_directory", required=True, help="Folder to watch.")
    parser.add_argument(
        "--state_file", default=None, help="State file (default: under ~/.cache/methyl-distill)."
    )
    parser.add_argument("--once", action="store_true", help="Scan once and exit (for cron or CI).")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="Record the papers there now as seen without announcing them, then exit (start watching a "
        "folder that was already processed).",
    )
    parser.add_argument(
        "--interval", type=_positive_float, default=30.0, help="Seconds between scans (default 30)."
    )
    parser.set_defaults(handler=run_watch_command)


def run_watch_command(args: argparse.Namespace) -> int:
    _quiet_http_logs()
    from methyl_distill.ops.paper_watch import WatchReport, watch_forever, watch_once

    def report(result: WatchReport) -> None:
        for paper in result.announced:
            print(f"paper.added {paper.relative_path} ({paper.sha256[:12]})", flush=True)
        for path in result.unreadable:
            logger.debug("unreadable: %s", path)

    if args.baseline:
        result = watch_once(args.input_directory, args.state_file, baseline=True)
        print(f"baseline recorded: {result.known} known paper(s); new ones will be announced from now on")
        return 0
    if args.once:
        result = watch_once(args.input_directory, args.state_file)
        report(result)
        print(
            f"{len(result.announced)} new paper(s) announced; {result.known} known; "
            f"{len(result.unreadable)} unreadable"
        )
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(
        f"watching {Path(args.input_directory).resolve()} every {args.interval:g} s (Ctrl-C stops)",
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        watch_forever(
            args.input_directory, args.state_file, interval_s=args.interval, stop=stop, on_report=report
        )
    return 0


def _register_setup(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "setup-prefect",
        help="Create the work pools and concurrency limits the deployments use (idempotent).",
        description=(
            "Create or update, on the Prefect API in PREFECT_API_URL: the process work pool, the GPU work "
            "pools (Docker with GPU device requests; Kubernetes requesting nvidia.com/gpu), the global "
            "concurrency limit used as the teacher's TPM bucket (TEACHER_TPM, TEACHER_RPM) and the 'gpu' "
            "tag limit."
        ),
    )
    parser.add_argument("--process_pool", default="methyl-distill-process", help="Process work pool name.")
    parser.add_argument(
        "--docker_gpu_pool", default="methyl-distill-cuda", help="Docker GPU work pool name ('' for none)."
    )
    parser.add_argument("--docker_gpu_template", default=None, help="Its base job template (JSON).")
    parser.add_argument(
        "--kubernetes_gpu_pool",
        default="methyl-distill-cuda-k8s",
        help="Kubernetes GPU work pool name ('' for none).",
    )
    parser.add_argument("--kubernetes_gpu_template", default=None, help="Its base job template (JSON).")
    parser.add_argument(
        "--gpu_tag_limit", type=_positive_int, default=1, help="Fine-tunes at once (default 1)."
    )
    parser.set_defaults(handler=run_setup_command)


def run_setup_command(args: argparse.Namespace) -> int:
    _quiet_http_logs()
    from methyl_distill.ops.prefect_setup import PrefectSetupConfig, setup_prefect
    from methyl_distill.teacher.config import TeacherSettings

    settings = TeacherSettings()
    config = PrefectSetupConfig(
        process_pool=args.process_pool,
        docker_gpu_pool=args.docker_gpu_pool or None,
        docker_gpu_template=args.docker_gpu_template,
        kubernetes_gpu_pool=args.kubernetes_gpu_pool or None,
        kubernetes_gpu_template=args.kubernetes_gpu_template,
        gpu_tag_limit=args.gpu_tag_limit,
        teacher_limit_name=settings.teacher_bucket_limit_name,
        teacher_tpm=settings.teacher_tpm,
        teacher_rpm=settings.teacher_rpm,
    )
    for action in setup_prefect(config):
        print(action)
    return 0
