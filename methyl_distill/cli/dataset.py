"""`methyl-distill build-dataset`: extraction records -> the fine-tuning dataset."""

from __future__ import annotations

import argparse

from methyl_distill.cli.hub_options import add_hub_options, hub_target_from_args
from methyl_distill.cli.options import add_model_options, given_options

# DatasetConfig fields settable from the command line (help, type, choices and default from the model).
DATASET_OPTIONS = (
    "max_length",
    "student_tokenizer",
    "length_policy",
    "grounding",
    "corrupt_lines",
    "seed",
    "val_fraction",
    "test_fraction",
    "near_duplicate_threshold",
    "system_prompt",
    "workers",
    "card_license",
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from methyl_distill.sft_dataset import DatasetConfig

    parser = subparsers.add_parser(
        "build-dataset",
        help="Build the SFT dataset (train/val/test JSON lines, DatasetDict, card) from extraction records.",
        description=(
            "Turn the records.jsonl of one or more extraction runs into chat samples for ms-swift: "
            "closed-book, grounded and structured-extraction samples, checked against the papers, "
            "deduplicated, length-checked and split by paper. Settings come from --config (TOML, see "
            "methyl_distill/sft_dataset/dataset.toml) and the flags below, which override it."
        ),
    )
    parser.add_argument("--records", nargs="+", required=True, metavar="FILE", help="records.jsonl file(s).")
    parser.add_argument("--output_directory", required=True, help="Directory the dataset is written to.")
    parser.add_argument(
        "--papers_directory",
        default=None,
        help="The extraction's input directory: records' source_paths are read relative to it.",
    )
    parser.add_argument("--config", default=None, help="Dataset config TOML (default: built-in defaults).")
    add_model_options(parser, DatasetConfig, only=DATASET_OPTIONS)
    add_hub_options(parser, "the split files (train/val/test.jsonl) and stats.json")
    parser.add_argument("--refresh", action="store_true", help="Rebuild even if a cached build matches.")
    parser.add_argument(
        "--without_prefect",
        action="store_true",
        help="Run the build directly, without a Prefect flow run (no caching, no artifacts).",
    )
    parser.set_defaults(handler=run_build_dataset)


def run_build_dataset(args: argparse.Namespace) -> int:
    from methyl_distill.sft_dataset import DatasetConfig

    base = DatasetConfig.from_toml(args.config) if args.config else DatasetConfig()
    config = DatasetConfig.model_validate({**base.model_dump(), **given_options(args, DATASET_OPTIONS)})
    hub_target = hub_target_from_args(args)
    if args.without_prefect:
        from methyl_distill.sft_dataset import build_sft_dataset

        if hub_target is not None:
            from methyl_distill.ops.hub_publish import check_hub_access

            check_hub_access(hub_target)  # a missing or refused token fails before the build
        summary = build_sft_dataset(args.records, args.output_directory, args.papers_directory, config)
        if hub_target is not None:
            from methyl_distill.sft_dataset.hub_push import push_dataset_to_hub

            print(f"Pushed: {push_dataset_to_hub(summary, hub_target).commit_url}")
    else:
        from methyl_distill.flows.dataset import build_dataset_flow

        summary = build_dataset_flow(
            records=list(args.records),
            output_directory=args.output_directory,
            papers_directory=args.papers_directory,
            config=config,
            refresh=args.refresh,
            push_to_hub=hub_target,
        )
    counts = " / ".join(f"{split} {stats.samples}" for split, stats in summary.splits.items())
    dropped = sum(summary.drops.values())
    print(
        f"{counts} samples; {dropped} left out ({', '.join(summary.drops) or 'none'}); card: {summary.card}"
    )
    return 0
