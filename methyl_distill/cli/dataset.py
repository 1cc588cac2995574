"""`methyl-distill build-dataset`: extraction records -> the fine-tuning dataset."""

from __future__ import annotations

import argparse
from typing import Any

# Command-line flags that override a field of DatasetConfig: flag -> (type, help, choices).
_OVERRIDES: dict[str, tuple[Any, str, tuple[str, ...] | None]] = {
    "max_length": (int, "The student's max length in tokens.", None),
    "student_tokenizer": (str, "Local folder of the student's tokenizer (exact token counts).", None),
    "length_policy": (str, "Over-long samples.", ("drop", "truncate")),
    "grounding": (str, "Samples with evidence not found in the paper.", ("drop", "flag")),
    "corrupt_lines": (str, "Corrupt records lines.", ("skip", "fail")),
    "seed": (int, "Seed of the style draw and of the split.", None),
    "val_fraction": (float, "Share of papers in the validation split.", None),
    "test_fraction": (float, "Share of papers in the test split.", None),
    "near_duplicate_threshold": (
        float,
        "Near-duplicate Jaccard threshold (1.0: exact duplicates only).",
        None,
    ),
    "system_prompt": (str, "System message of every sample ('' for none).", None),
    "workers": (int, "Processes building samples (0: one per core, at most 8).", None),
    "hub_repo_id": (str, "Hub dataset id for --push_to_hub.", None),
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "build-dataset",
        help="Build the SFT dataset (train/val/test JSON lines, DatasetDict, card) from extraction records.",
        description=(
            "Turn the records.jsonl of one or more extraction runs into chat samples for ms-swift: "
            "closed-book, grounded and structured-extraction samples, checked against the papers, "
            "deduplicated, length-checked and split by paper. Settings come from --config (TOML, see "
            "data/dataset.toml) and the flags below, which override it."
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
    for name, (kind, text, choices) in _OVERRIDES.items():
        parser.add_argument(f"--{name}", type=kind, default=None, choices=choices, help=text)
    parser.add_argument(
        "--push_to_hub", action="store_true", default=None, help="Push to the Hugging Face Hub."
    )
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
    overrides = {name: getattr(args, name) for name in (*_OVERRIDES, "push_to_hub")}
    config = DatasetConfig.model_validate(
        {**base.model_dump(), **{key: value for key, value in overrides.items() if value is not None}}
    )
    if args.without_prefect:
        from methyl_distill.sft_dataset import build_sft_dataset

        summary = build_sft_dataset(args.records, args.output_directory, args.papers_directory, config)
    else:
        from methyl_distill.flows.dataset import build_dataset_flow

        summary = build_dataset_flow(
            records=list(args.records),
            output_directory=args.output_directory,
            papers_directory=args.papers_directory,
            config=config,
            refresh=args.refresh,
        )
    counts = " / ".join(f"{split} {stats.samples}" for split, stats in summary.splits.items())
    dropped = sum(summary.drops.values())
    print(
        f"{counts} samples; {dropped} left out ({', '.join(summary.drops) or 'none'}); card: {summary.card}"
    )
    return 0
