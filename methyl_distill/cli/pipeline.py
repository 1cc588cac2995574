"""`methyl-distill run`, `watch` and `setup-prefect`: the whole pipeline, new-paper events, Prefect set-up."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

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


# `methyl-distill run` options that are fields of `PipelineParameters` under another name (the CLI's
# names are older than the flow's), and the options that are not fields: files and switches that
# set one (`--dataset_config` -> dataset, `--max_steps` -> finetune, `--no_evaluation` -> evaluate).
RUN_OPTION_FIELDS = {"refresh": "refresh_extraction", "student": "student_preset"}
RUN_OPTIONS_SETTING_A_FIELD = {
    "dataset_config": "dataset",
    "max_steps": "finetune",
    "no_evaluation": "evaluate",
}
# Fields with no option: whole configurations, from the environment (teacher) or the defaults; and
# allowed_input_roots, which bounds deployment runs only (a command's run is the user's own choice).
RUN_FIELDS_WITHOUT_OPTION = (
    "teacher_config",
    "embedded_teacher",
    "dataset",
    "finetune",
    "evaluate",
    "allowed_input_roots",
)


def _register_run(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from methyl_distill.cli.options import add_model_options, field_help
    from methyl_distill.pipeline.parameters import PipelineParameters, short_lora_run

    parser = subparsers.add_parser(
        "run",
        help="Run the whole pipeline: extract, build the dataset, fine-tune, evaluate.",
        description=(
            "Distil the papers under --input_directory into a LoRA adapter for the student model and "
            "evaluate it. Without OPENAI_API_KEY the embedded teacher (SmolLM2 on llama.cpp) answers; with "
            "it, GPT-4o (or OPENAI_BASE_URL / TEACHER_MODEL). Reruns reuse cached extractions and datasets."
        ),
    )
    fields = PipelineParameters.model_fields
    names = add_model_options(
        parser,
        PipelineParameters,
        exclude=(*RUN_OPTION_FIELDS.values(), *RUN_FIELDS_WITHOUT_OPTION, "teacher"),
    )
    parser.add_argument(
        "--teacher",
        choices=("auto", "embedded", "configured"),
        default=None,
        help=field_help(fields["teacher"]),
    )
    parser.add_argument(
        "--refresh", action="store_true", default=None, help=field_help(fields["refresh_extraction"])
    )
    parser.add_argument("--student", default=None, help=field_help(fields["student_preset"]))
    parser.add_argument(
        "--dataset_config",
        default=None,
        help="Dataset stage TOML (a copy of methyl_distill/sft_dataset/dataset.toml); default: the "
        "built-in defaults, with grounding='flag' for the embedded teacher. Unless the file sets "
        "max_length, samples fit the student's training length.",
    )
    parser.add_argument(
        "--max_steps",
        type=_positive_int,
        default=None,
        help=f"LoRA optimizer steps (default {short_lora_run().max_steps}).",
    )
    parser.add_argument("--no_evaluation", action="store_true", help="Skip the evaluation stage.")
    parser.set_defaults(handler=run_pipeline_command, parameter_names=[*names, "teacher"])


def pipeline_parameters_from(args: argparse.Namespace) -> dict[str, Any]:
    """The flow parameters the options of `methyl-distill run` ask for (only those given)."""
    from methyl_distill.cli.options import given_options
    from methyl_distill.pipeline.parameters import short_lora_run
    from methyl_distill.sft_dataset import DatasetConfig

    parameters = given_options(args, args.parameter_names)
    for option, field in RUN_OPTION_FIELDS.items():
        if getattr(args, option) is not None:
            parameters[field] = getattr(args, option)
    if args.dataset_config:
        parameters["dataset"] = DatasetConfig.from_toml(args.dataset_config)
    if args.max_steps is not None:
        parameters["finetune"] = short_lora_run().model_copy(
            update={"max_steps": args.max_steps, "save_steps": args.max_steps}
        )
    if args.no_evaluation:
        parameters["evaluate"] = False
    return parameters


def run_pipeline_command(args: argparse.Namespace) -> int:
    _quiet_http_logs()
    from methyl_distill.pipeline.parameters import PipelineParameters

    # Validated here, before a Prefect run (and its temporary server) starts for a bad option.
    parameters = PipelineParameters.model_validate(pipeline_parameters_from(args))
    from methyl_distill.flows.pipeline import pipeline_flow

    started = time.monotonic()
    summary = pipeline_flow(**{name: getattr(parameters, name) for name in parameters.model_fields_set})
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
    print(f"  markers:     {summary.markers_page_path or '(not built)'}")
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
    parser.add_argument(
        "--repository",
        default=None,
        help="Git URL the deployments clone their code from (variable methyl_distill_repository); default: "
        "this git checkout as a file:// URL, set only where the server has none.",
    )
    parser.add_argument(
        "--branch", default=None, help="Branch they clone (methyl_distill_branch); default: this checkout's."
    )
    parser.add_argument(
        "--image_registry",
        default=None,
        help="Registry of the image names, e.g. ghcr.io/org (variable methyl_distill_image_registry).",
    )
    parser.set_defaults(handler=run_setup_command)


def run_setup_command(args: argparse.Namespace) -> int:
    _quiet_http_logs()
    from methyl_distill.ops.prefect_setup import (
        PrefectSetupConfig,
        checkout_source,
        setup_prefect,
        source_variables,
    )
    from methyl_distill.teacher.config import teacher_config_from_environment

    teacher = teacher_config_from_environment()
    config = PrefectSetupConfig(
        process_pool=args.process_pool,
        docker_gpu_pool=args.docker_gpu_pool or None,
        docker_gpu_template=args.docker_gpu_template,
        kubernetes_gpu_pool=args.kubernetes_gpu_pool or None,
        kubernetes_gpu_template=args.kubernetes_gpu_template,
        gpu_tag_limit=args.gpu_tag_limit,
        teacher_limit_name=teacher.bucket_limit_name,
        teacher_tpm=teacher.tpm,
        teacher_rpm=teacher.rpm,
        variables=source_variables(
            args.repository, args.branch, args.image_registry, checkout_source(Path.cwd())
        ),
    )
    for action in setup_prefect(config):
        print(action)
    return 0
