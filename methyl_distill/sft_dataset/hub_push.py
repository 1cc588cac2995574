"""Pushing a built dataset to the Hub: the card and the split files it names, in one commit.

What goes up is the output folder's own `README.md` (the card, `dataset_card.render_card`), the
JSON lines files of the splits that hold samples, and `stats.json`; the `DatasetDict` stays local
(the JSON lines are the data, and `load_dataset(repo)` reads them through the card's `configs`).
Before anything is sent, the card's configs are read back and held to the files of the commit, and
the split files to the sha256 the build recorded: a folder rebuilt or edited since its summary was
made is refused rather than published with a card that describes other data.

The push is separate from the build (and from its Prefect cache): a cached build is pushed as it
is, and choosing a repository does not rebuild the dataset.
"""

from __future__ import annotations

import logging
from pathlib import Path

from huggingface_hub import DatasetCard

from methyl_distill.ops.hub_publish import HubTarget, PushResult, push_files
from methyl_distill.sft_dataset.build import DatasetSummary
from methyl_distill.sft_dataset.dataset_card import hub_split_files
from methyl_distill.sft_dataset.dataset_writer import CARD_FILE, STATS_FILE
from methyl_distill.text.hashing import sha256_of_file

logger = logging.getLogger(__name__)


class DatasetPushError(ValueError):
    """The dataset folder does not match its summary or its card: nothing was pushed."""


def card_data_files(card_path: Path) -> set[str]:
    """Every path the card's `configs` metadata names."""
    card = DatasetCard.load(card_path)
    paths: set[str] = set()
    for config in card.data.to_dict().get("configs") or []:
        files = config.get("data_files") or []
        for entry in files if isinstance(files, list) else [files]:
            value = entry.get("path") if isinstance(entry, dict) else entry
            paths.update([value] if isinstance(value, str) else list(value or []))
    return paths


def dataset_hub_files(summary: DatasetSummary) -> dict[str, Path]:
    """Path in the repository -> local file, checked against the summary and the card."""
    folder = Path(summary.output_directory)
    files = {CARD_FILE: folder / CARD_FILE, STATS_FILE: folder / STATS_FILE}
    for name in hub_split_files(summary).values():
        path = folder / name
        expected = summary.split_sha256.get(str(path))
        if not path.is_file() or (expected is not None and sha256_of_file(path) != expected):
            raise DatasetPushError(
                f"{path}: missing or changed since the build that wrote {folder / STATS_FILE}; rebuild the "
                "dataset before pushing it"
            )
        files[name] = path
    for path in files.values():
        if not path.is_file():
            raise DatasetPushError(f"{path}: missing; rebuild the dataset before pushing it")
    named = card_data_files(files[CARD_FILE])
    if not named:
        raise DatasetPushError(f"{files[CARD_FILE]}: the card names no data files (no `configs`)")
    if named - set(files):
        raise DatasetPushError(
            f"{files[CARD_FILE]}: the card names {', '.join(sorted(named - set(files)))}, which this push "
            "would not upload; rebuild the dataset"
        )
    return files


def push_dataset_to_hub(summary: DatasetSummary, target: HubTarget) -> PushResult:
    """Push the card, the split files and stats.json in one commit to the dataset repository."""
    files = dataset_hub_files(summary)
    counts = ", ".join(f"{split} {stats.samples}" for split, stats in summary.splits.items())
    result = push_files(
        target,
        "dataset",
        files,
        default_message=f"methyl-distill dataset: {counts} samples from {summary.papers} papers",
    )
    logger.info("Dataset pushed to %s (%s)", result.url, result.commit_url)
    return result
