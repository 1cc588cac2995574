"""The Hub options that `build-dataset`, `finetune` and `export` share, and the target they make.

The token is no option (a flag shows in the process list and the shell history): it comes from
HF_TOKEN, the Prefect Secret block named in HF_TOKEN_SECRET_BLOCK, or the huggingface_hub login
(methyl_distill.ops.hub_publish).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from methyl_distill.cli.options import parse_bool

if TYPE_CHECKING:
    from methyl_distill.ops.hub_publish import HubTarget
    from methyl_distill.training.model_release import ModelReleaseOptions


def add_hub_options(parser: argparse.ArgumentParser, what: str) -> None:
    group = parser.add_argument_group(
        "publishing to the Hugging Face Hub",
        "The token comes from HF_TOKEN, the Prefect Secret block named in HF_TOKEN_SECRET_BLOCK, or the "
        "huggingface_hub login (`hf auth login`), in that order; HF_ENDPOINT names another Hub.",
    )
    group.add_argument(
        "--push_to_hub",
        default=None,
        metavar="OWNER/NAME",
        help=f"Push {what} with its card to this Hub repository (created when missing) in one commit.",
    )
    group.add_argument(
        "--hub_private",
        type=parse_bool,
        default=True,
        metavar="{true,false}",
        help="Create the repository private (default true; an existing one keeps its visibility).",
    )
    group.add_argument(
        "--hub_revision",
        default=None,
        metavar="BRANCH",
        help="Commit to this branch (created from main when missing); default main.",
    )
    group.add_argument("--hub_commit_message", default=None, metavar="TEXT", help="Commit title.")


def hub_target_from_args(args: argparse.Namespace) -> HubTarget | None:
    """The target the flags name (with HF_TOKEN_SECRET_BLOCK and HF_ENDPOINT from the environment),
    or None without --push_to_hub."""
    if not args.push_to_hub:
        return None
    from methyl_distill.ops.hub_publish import hub_target_from_environment

    return hub_target_from_environment(
        args.push_to_hub,
        private=args.hub_private,
        revision=args.hub_revision,
        commit_message=args.hub_commit_message,
    )


def add_release_options(parser: argparse.ArgumentParser, *, evaluation: bool = False) -> None:
    """What a model release holds and what its card names (methyl_distill.training.model_release)."""
    group = parser.add_argument_group("the model release and its card")
    group.add_argument(
        "--hub_merged",
        action="store_true",
        help="Release the base model with the adapter merged in (merged with ms-swift's export when the "
        "fine-tune did not merge) instead of the adapter.",
    )
    group.add_argument(
        "--hub_dataset", default=None, metavar="OWNER/NAME", help="The Hub dataset it was trained on."
    )
    group.add_argument(
        "--hub_base_model",
        default=None,
        metavar="OWNER/NAME",
        help="Hub id of the base model, when the fine-tune loaded a local folder (the preset's otherwise).",
    )
    group.add_argument(
        "--hub_license", default=None, help="License id on the card (default: the base model's, apache-2.0)."
    )
    if evaluation:
        group.add_argument(
            "--evaluation_report",
            default=None,
            metavar="FILE",
            help="evaluation.json of `methyl-distill evaluate` for this adapter: its numbers go on the card.",
        )


def release_options_from_args(args: argparse.Namespace) -> ModelReleaseOptions:
    from methyl_distill.training.model_release import ModelReleaseOptions

    return ModelReleaseOptions(
        merged=args.hub_merged,
        evaluation_report=getattr(args, "evaluation_report", None),
        dataset_repo_id=args.hub_dataset,
        base_model=args.hub_base_model,
        license=args.hub_license,
    )
