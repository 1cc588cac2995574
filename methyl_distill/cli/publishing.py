"""`methyl-distill export`: a finished fine-tune as a release (adapter or merged model + model card),
written to a folder, pushed to the Hugging Face Hub, or both."""

from __future__ import annotations

import argparse
from pathlib import Path

from methyl_distill.cli.hub_options import (
    add_hub_options,
    add_release_options,
    hub_target_from_args,
    release_options_from_args,
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    export = subparsers.add_parser(
        "export",
        help="A finished fine-tune's adapter (or merged model) with its model card, to a folder or the Hub.",
        description="Reads FINETUNE_DIRECTORY/finetune_summary.json. The release holds the adapter files "
        "(or, with --hub_merged, the merged model), README.md (a model card with the training record and, "
        "with --evaluation_report, the evaluation numbers), loss_curve.png and training_log.jsonl; "
        "--push_to_hub sends them in one commit, --output_directory writes them locally.",
    )
    export.add_argument(
        "--finetune_directory",
        required=True,
        help="Output folder of `methyl-distill finetune` (the run folder holding finetune_summary.json).",
    )
    export.add_argument(
        "--output_directory", default=None, help="Write the release here (a new or empty folder)."
    )
    add_hub_options(export, "the release")
    add_release_options(export, evaluation=True)
    export.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    if not args.push_to_hub and not args.output_directory:
        raise ValueError("export needs --push_to_hub OWNER/NAME, --output_directory FOLDER, or both")
    from methyl_distill.training.model_release import (
        export_release,
        push_model_to_hub,
        read_finetune_summary,
    )

    summary = read_finetune_summary(args.finetune_directory)
    options = release_options_from_args(args)
    target = hub_target_from_args(args)
    if target is not None:
        from methyl_distill.ops.hub_publish import check_hub_access

        check_hub_access(target)  # a missing or refused token fails before a merge
    if args.output_directory:
        repo_id = target.repo_id if target else f"your-name/{Path(args.output_directory).resolve().name}"
        folder = export_release(summary, options, Path(args.output_directory), repo_id=repo_id)
        print(f"Release:  {folder}")
    if target is not None:
        result = push_model_to_hub(summary, target, options)
        print(f"Pushed:   {result.url} ({', '.join(result.files)})")
        print(f"Commit:   {result.commit_url}")
    return 0
