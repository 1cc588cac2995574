"""`methyl-distill model-spec | finetune | infer | serve | evaluate`: the training stage on the command line.

torch, ms-swift and Prefect are imported inside the handlers, so `methyl-distill --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from methyl_distill.cli.hub_options import (
    add_hub_options,
    add_release_options,
    hub_target_from_args,
    release_options_from_args,
)
from methyl_distill.cli.options import add_model_options, field_help, given_options
from methyl_distill.training.presets import PRESET_NAMES

# FinetuneConfig fields settable from the command line (help, type, choices and default from the model).
FINETUNE_OPTIONS = (
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "save_steps",
    "seed",
    "system",
    "attn_impl",
    "packing",
    "gradient_checkpointing",
    "merge_lora",
    "device",
    "num_gpus",
    "deepspeed",
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from methyl_distill.training.finetune import FinetuneConfig

    spec = subparsers.add_parser(
        "model-spec",
        help="Architecture, parameter count, LoRA size and GPU memory plan of a student preset.",
    )
    spec.add_argument("preset", choices=PRESET_NAMES)
    spec.add_argument("--rank", type=int, default=8, help="LoRA rank (default 8).")
    spec.add_argument("--targets", nargs="+", default=["all-linear"], help="LoRA target modules.")
    spec.add_argument("--max_length", type=int, default=4096, help="Tokens per sequence (default 4096).")
    spec.add_argument("--batch", type=int, default=1, help="Sequences per micro-batch (default 1).")
    spec.add_argument("--json", action="store_true", help="Print the spec as JSON.")
    spec.set_defaults(handler=run_model_spec)

    tune = subparsers.add_parser(
        "finetune",
        help="LoRA fine-tune a student preset on a dataset folder with ms-swift (Prefect flow).",
        description="Trains on DATASET/train.jsonl (validates on val.jsonl when present). Rerunning with the "
        "same arguments returns a finished run or resumes an interrupted one from its last checkpoint.",
    )
    tune.add_argument("--dataset_directory", required=True, help="Folder with train.jsonl (and val.jsonl).")
    tune.add_argument("--output_directory", required=True, help="Folder for checkpoints, adapter and logs.")
    tune.add_argument("--preset", default="smollm2-135m", choices=PRESET_NAMES, help="Student model preset.")
    tune.add_argument("--config", default=None, help="FinetuneConfig as a JSON file; flags override it.")
    tune.add_argument("--model_source", default=None, help="mistral-7b weights: a Hub id or a local folder.")
    tune.add_argument("--cache_dir", default=None, help="Where generated/converted models are kept.")
    add_model_options(tune, FinetuneConfig, only=FINETUNE_OPTIONS, bool_values=True)
    tune.add_argument(
        "--target_modules",
        nargs="+",
        default=None,
        help=field_help(FinetuneConfig.model_fields["target_modules"], " (default all-linear)"),
    )
    add_hub_options(tune, "the adapter (with --hub_merged, the merged model) after training")
    add_release_options(tune)
    tune.set_defaults(handler=run_finetune)

    infer = subparsers.add_parser(
        "infer",
        help="Chat with the tuned model (streaming), or answer a JSONL of questions.",
        description="Greedy decoding (temperature 0), as `swift infer --adapters A --temperature 0 --stream "
        "true`. Without --questions: an interactive chat (/reset clears the history, /exit leaves).",
    )
    source = infer.add_mutually_exclusive_group(required=True)
    source.add_argument("--adapter", help="Adapter folder of a fine-tune (its base model comes along).")
    source.add_argument("--preset", choices=PRESET_NAMES, help="Chat with a preset's base model instead.")
    infer.add_argument("--questions", default=None, help="JSONL of questions ({'messages'} or {'question'}).")
    infer.add_argument("--output", default=None, help="Where batch answers go (JSONL); needs --questions.")
    infer.add_argument("--max_new_tokens", type=int, default=2048, help="Longest answer (default 2048).")
    infer.add_argument("--system", default=None, help="System prompt (default: the one used in training).")
    infer.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    infer.add_argument("--max_batch_size", type=int, default=8, help="Questions generated together.")
    infer.set_defaults(handler=run_infer)

    serve = subparsers.add_parser(
        "serve",
        help="Serve the tuned model as an OpenAI-compatible API (ms-swift deploy) until Ctrl-C.",
    )
    serve.add_argument("--adapter", required=True, help="Adapter folder of a fine-tune.")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="Bind address (default loopback only); any other needs an API key.",
    )
    serve.add_argument(
        "--api_key",
        default=None,
        help="Key clients must send as 'Authorization: Bearer <key>'; default: METHYL_DISTILL_SERVE_API_KEY "
        "(prefer the variable: a flag shows in the process list and shell history). Required with a "
        "non-loopback --host.",
    )
    serve.add_argument("--port", type=int, default=8000, help="Port (default 8000; 0 picks a free one).")
    serve.add_argument("--model_name", default="methyl-distill-student", help="Model name clients use.")
    serve.add_argument("--max_new_tokens", type=int, default=2048, help="Default longest answer.")
    serve.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    serve.set_defaults(handler=run_serve)

    evaluate = subparsers.add_parser(
        "evaluate",
        help="Base vs tuned on the test split: marker recall, ROUGE-L, direction agreement (Prefect flow).",
    )
    evaluate.add_argument("--test_path", required=True, help="test.jsonl of the dataset stage.")
    evaluate.add_argument("--adapter", required=True, help="Adapter folder of a fine-tune.")
    evaluate.add_argument("--output_directory", required=True, help="Folder for evaluation.json / .md.")
    evaluate.add_argument("--max_new_tokens", type=int, default=512, help="Longest answer (default 512).")
    evaluate.add_argument("--limit", type=int, default=None, help="Evaluate only the first N examples.")
    evaluate.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    evaluate.set_defaults(handler=run_evaluate)


def run_model_spec(args: argparse.Namespace) -> int:
    from methyl_distill.training.model_spec import ArchitectureShape, build_model_spec, format_model_spec
    from methyl_distill.training.presets import preset_config

    shape = ArchitectureShape.from_config(preset_config(args.preset))
    spec = build_model_spec(
        args.preset,
        shape,
        lora_rank=args.rank,
        targets=args.targets,
        max_length=args.max_length,
        batch_size=args.batch,
    )
    print(spec.model_dump_json(indent=2) if args.json else format_model_spec(spec))
    return 0


def finetune_config_from_args(args: argparse.Namespace) -> Any:
    from methyl_distill.training.finetune import FinetuneConfig

    values: dict[str, Any] = {}
    if args.config:
        path = Path(args.config)
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read a FinetuneConfig JSON ({exc})") from exc
    overrides = given_options(args, (*FINETUNE_OPTIONS, "target_modules"))
    return FinetuneConfig.model_validate({**values, **overrides})


def run_finetune(args: argparse.Namespace) -> int:
    config = finetune_config_from_args(args)
    hub_target = hub_target_from_args(args)
    from methyl_distill.flows.finetune import finetune_flow

    summary = finetune_flow(
        dataset_directory=str(Path(args.dataset_directory).resolve()),
        output_directory=str(Path(args.output_directory).resolve()),
        preset=args.preset,
        config=config,
        cache_dir=args.cache_dir,
        model_source=args.model_source,
        push_to_hub=hub_target,
        release=release_options_from_args(args) if hub_target else None,
    )
    print(f"Adapter:     {summary.adapter_path}")
    print(f"Loss curve:  {summary.loss_curve_path}")
    print(f"Loss:        {summary.first_train_loss} -> {summary.final_train_loss}")
    print(f"Steps:       {summary.global_step}")
    if summary.merged_model_path:
        print(f"Merged:      {summary.merged_model_path}")
    return 0


def run_infer(args: argparse.Namespace) -> int:
    if args.output and not args.questions:
        raise ValueError("--output needs --questions")
    from methyl_distill.training.inference import answer_questions_file, interactive_chat, load_chat_model

    model = load_chat_model(
        adapter_path=Path(args.adapter) if args.adapter else None,
        preset=args.preset,
        device=args.device,
        system=args.system,
        max_new_tokens=args.max_new_tokens,
        max_batch_size=args.max_batch_size,
    )
    if args.questions:
        output = Path(args.output) if args.output else Path(args.questions).with_suffix(".answers.jsonl")
        count = answer_questions_file(model, Path(args.questions), output)
        print(f"Answered {count} questions: {output}")
        return 0
    interactive_chat(model)
    return 0


def run_serve(args: argparse.Namespace) -> int:
    import os
    import signal

    from pydantic import SecretStr

    from methyl_distill.training.serving import SERVE_API_KEY_VARIABLE, check_host_needs_key, start_server

    key = args.api_key or os.environ.get(SERVE_API_KEY_VARIABLE) or None
    api_key = SecretStr(key) if key else None
    check_host_needs_key(args.host, api_key)  # before anything loads

    def stop_on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_sigterm)  # a service manager's stop ends the server cleanly too
    server = start_server(
        Path(args.adapter),
        host=args.host,
        port=args.port or None,
        model_name=args.model_name,
        max_new_tokens=args.max_new_tokens,
        device=args.device,
        api_key=api_key,
    )
    auth = "; requests need the API key" if api_key else ""
    print(f"Serving {server.model_name} at {server.base_url} (OpenAI-compatible{auth}). Ctrl-C stops it.")
    sys.stdout.flush()
    try:
        server.process.wait()
        print(
            f"the server exited with code {server.process.returncode}; log {server.log_path}", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


def run_evaluate(args: argparse.Namespace) -> int:
    from methyl_distill.flows.evaluate import evaluate_flow

    summary = evaluate_flow(
        test_path=str(Path(args.test_path).resolve()),
        adapter_path=str(Path(args.adapter).resolve()),
        output_directory=str(Path(args.output_directory).resolve()),
        max_new_tokens=args.max_new_tokens,
        limit=args.limit,
        device=args.device,
    )
    for name, scores in summary.metrics.items():
        print(
            f"{name:>6}: ROUGE-L {scores.rouge_l_f1:.3f}, marker recall {scores.marker_recall}, "
            f"direction agreement {scores.direction_agreement} ({scores.examples} examples)"
        )
    print(f"Report: {summary.report_markdown_path}")
    return 0
