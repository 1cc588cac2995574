"""The dataset stage's core: extraction records -> chat samples -> quality rules -> splits -> files.

`build_sft_dataset` needs no Prefect; the task and flow in tasks/ and flows/ wrap it.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from itertools import chain
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from methyl_distill.ops.run_progress import tracked
from methyl_distill.sft_dataset.config import DatasetConfig
from methyl_distill.sft_dataset.dataset_card import render_card
from methyl_distill.sft_dataset.dataset_writer import (
    CARD_FILE,
    DATASET_DICT_DIR,
    SPLIT_FILES,
    STATS_FILE,
    check_output_directory,
    make_staging_directory,
    publish,
    write_dataset_dict,
    write_jsonl,
)
from methyl_distill.sft_dataset.deduplication import DuplicateFinder
from methyl_distill.sft_dataset.marker_coverage import CoverageTally, MarkerCoverage
from methyl_distill.sft_dataset.paper_text import PaperLibrary
from methyl_distill.sft_dataset.record_reader import scan_records
from methyl_distill.sft_dataset.sample_store import SampleStore
from methyl_distill.sft_dataset.shard_worker import build_shards, token_counter
from methyl_distill.sft_dataset.splitting import SPLITS, split_by_paper
from methyl_distill.text.hashing import sha256_of_file

logger = logging.getLogger(__name__)

# Papers per unit of work; a build with fewer papers runs in this process.
_SHARD_PAPERS = 1000
_MAX_AUTO_WORKERS = 8


class EmptyDatasetError(ValueError):
    """No usable sample survived the rules: nothing is written."""


class SplitStats(BaseModel):
    papers: int = 0
    samples: int = 0
    tokens: int = 0
    max_tokens: int = 0
    styles: dict[str, int] = Field(default_factory=dict)


class DatasetSummary(BaseModel):
    """What the dataset stage wrote, with string paths: the hand-over to training and the pipeline."""

    output_directory: str
    train_jsonl: str
    val_jsonl: str
    test_jsonl: str
    dataset_dict: str
    card: str
    stats_json: str
    splits: dict[str, SplitStats] = Field(
        description="Per split (train, validation, test): counts and tokens."
    )
    records_files: dict[str, str] = Field(description="Each records file read and its sha256.")
    split_sha256: dict[str, str] = Field(
        default_factory=dict, description="sha256 of train.jsonl, val.jsonl and test.jsonl as written."
    )
    records_read: int
    corrupt_lines: list[str]
    superseded_records: int
    papers: int = Field(description="Papers (distinct contents) with a usable record.")
    paper_status: dict[str, int] = Field(description="How papers were found: ok, changed, missing, ...")
    missing_papers: list[str] = Field(
        description="file_ids whose paper file could not be used, with the reason."
    )
    drops: dict[str, int] = Field(description="Samples (or markers) left out, by reason.")
    flags: dict[str, int] = Field(description="Samples kept with a flag, by flag.")
    markers_covered: dict[str, int] = Field(description="Samples per marker in the written dataset.")
    marker_coverage: MarkerCoverage = Field(
        default_factory=MarkerCoverage,
        description="Grounded markers of the records and how many are in a written sample, overall and "
        "per paper (methyl_distill/sft_dataset/marker_coverage.py).",
    )
    token_counting: str
    config: DatasetConfig
    build_seconds: float
    phase_seconds: dict[str, float] = Field(
        default_factory=dict, description="Wall time of the build's phases: samples, dedup, split files, ..."
    )

    @property
    def total_samples(self) -> int:
        return sum(stats.samples for stats in self.splits.values())

    def files_exist(self) -> bool:
        """Every file is there and the split files are the ones this build wrote (another build into
        the same folder, or an edit, changes their sha256: a cached summary of them is stale)."""
        paths = (
            self.train_jsonl,
            self.val_jsonl,
            self.test_jsonl,
            self.dataset_dict,
            self.card,
            self.stats_json,
        )
        if not all(Path(path).exists() for path in paths):
            return False
        return all(sha256_of_file(path) == sha for path, sha in self.split_sha256.items())


def _cap_not_reported(
    store: SampleStore, keep: np.ndarray, config: DatasetConfig, drops: Counter[str]
) -> None:
    """Keep 'not reported' samples up to `not_reported_share` of the grounded samples (seeded choice)."""
    candidates = [index for index in store.not_reported_draws if keep[index]]
    share = config.not_reported_share
    answered = sum(
        1
        for index, style in enumerate(store.styles)
        if style == "grounded" and keep[index] and index not in store.not_reported_draws
    )
    allowed = int(share / (1 - share) * answered) if share > 0 else 0
    candidates.sort(key=lambda index: store.not_reported_draws[index])
    for index in candidates[allowed:]:
        keep[index] = False
    if len(candidates) > allowed:
        drops["not_reported"] += len(candidates) - allowed


def build_sft_dataset(
    records: Sequence[str | Path],
    output_directory: str | Path,
    papers_directory: str | Path | None = None,
    config: DatasetConfig | None = None,
) -> DatasetSummary:
    """Build the fine-tuning dataset from extraction records; see docs/dataset.md."""
    started = time.monotonic()
    config = config or DatasetConfig()
    output = Path(output_directory).absolute()
    check_output_directory(output)
    token_counting = token_counter(config).description  # a bad tokenizer folder fails here, before any work
    PaperLibrary(papers_directory)  # likewise a missing papers directory
    records_paths = [Path(path) for path in records]
    scan = scan_records(records_paths, config.corrupt_lines)
    logger.info(
        "Read %d record lines from %d file(s): %d papers, %d superseded",
        scan.lines_read,
        len(records_paths),
        scan.paper_count,
        scan.superseded,
    )

    finder = DuplicateFinder(config.near_duplicate_threshold, config.minhash_permutations, config.seed)
    drops: Counter[str] = Counter()
    paper_status: Counter[str] = Counter()
    missing: list[str] = []
    coverage_tally = CoverageTally()
    shards = scan.shards(_SHARD_PAPERS)
    workers = min(config.workers or min(os.cpu_count() or 1, _MAX_AUTO_WORKERS), len(shards))
    staging = make_staging_directory(output)
    store = SampleStore(staging / ".samples.jsonl")
    try:
        papers_used = 0
        # Reported to the command's console, if one watches: papers read, shard by shard.
        built = build_shards(shards, papers_directory, config, workers)
        papers_per_shard = [len(shard.groups) for shard in shards]
        for shard_output in tracked(built, "dataset", "papers", papers_per_shard, _samples_so_far(store)):
            coverage_tally.add(shard_output.coverage, first_sample=len(store))
            store.add_shard(shard_output)
            if shard_output.signatures is not None:
                finder.add_signed(shard_output.signatures)
            drops.update(shard_output.drops)
            paper_status.update(shard_output.paper_status)
            missing.extend(shard_output.missing)
            scan.corrupt.extend(shard_output.corrupt)
            papers_used += shard_output.papers_used
        store.finish_writing()
        if missing:
            logger.warning(
                "%d paper(s) could not be read for grounding (first: %s)",
                len(missing),
                "; ".join(missing[:3]),
            )

        phases = {"samples": time.monotonic() - started}
        verdict = finder.verdict()
        keep = verdict.keep
        drops.update(exact_duplicate=int(verdict.exact.sum()), near_duplicate=int(verdict.near.sum()))
        _cap_not_reported(store, keep, config, drops)
        drops = +drops  # only reasons that happened
        if not keep.any():
            reasons = (
                ", ".join(f"{reason}: {count}" for reason, count in drops.most_common())
                or "no Q&A in records"
            )
            hint = ""
            if papers_directory is None and config.grounding == "drop":
                hint = " (no papers directory was given, so nothing could be grounded: pass papers_directory)"
            raise EmptyDatasetError(
                f"no usable samples from {papers_used} paper(s) in {len(records_paths)} records file(s); "
                f"left out: {reasons}{hint}. Nothing was written."
            )

        phases["deduplication"] = time.monotonic() - started - sum(phases.values())
        coverage = coverage_tally.measure(keep)
        kept = np.flatnonzero(keep).tolist()
        assignment = split_by_paper(
            (store.papers[index] for index in kept), config.val_fraction, config.test_fraction, config.seed
        )
        by_split: dict[str, list[int]] = {split: [] for split in SPLITS}
        for index in kept:
            by_split[assignment[store.papers[index]]].append(index)
        split_stats: dict[str, SplitStats] = {}
        flags: Counter[str] = Counter()
        markers: Counter[str] = Counter()
        for split, indices in by_split.items():
            random.Random(f"{config.seed}:{split}").shuffle(indices)
            # Counted with C-level Counter updates and plain sums (not attribute updates per sample).
            tokens = [store.tokens[index] for index in indices]
            stats = SplitStats(
                papers=len({store.papers[index] for index in indices}),
                tokens=sum(tokens),
                max_tokens=max(tokens, default=0),
                styles=dict(sorted(Counter(store.styles[index] for index in indices).items())),
            )
            flags.update(chain.from_iterable(store.flags[index] for index in indices))
            markers.update(chain.from_iterable(store.markers[index] for index in indices))
            stats.samples = write_jsonl(staging / SPLIT_FILES[split], store.lines(indices))
            split_stats[split] = stats
        store.remove()
        phases["split_files"] = time.monotonic() - started - sum(phases.values())
        write_dataset_dict(staging, config.include_meta)
        phases["dataset_dict"] = time.monotonic() - started - sum(phases.values())
        summary = DatasetSummary(
            output_directory=str(output),
            train_jsonl=str(output / SPLIT_FILES["train"]),
            val_jsonl=str(output / SPLIT_FILES["validation"]),
            test_jsonl=str(output / SPLIT_FILES["test"]),
            dataset_dict=str(output / DATASET_DICT_DIR),
            card=str(output / CARD_FILE),
            stats_json=str(output / STATS_FILE),
            splits=split_stats,
            records_files={str(path): sha256_of_file(path) for path in records_paths},
            split_sha256={
                str(output / SPLIT_FILES[split]): sha256_of_file(staging / SPLIT_FILES[split])
                for split in SPLITS
            },
            records_read=scan.lines_read,
            corrupt_lines=scan.corrupt,
            superseded_records=scan.superseded,
            papers=papers_used,
            paper_status=dict(sorted(paper_status.items())),
            missing_papers=missing,
            drops=dict(sorted(((k, v) for k, v in drops.items() if v), key=lambda kv: (-kv[1], kv[0]))),
            flags=dict(sorted(flags.items(), key=lambda kv: (-kv[1], kv[0]))),
            markers_covered=dict(sorted(markers.items(), key=lambda kv: (-kv[1], kv[0]))),
            marker_coverage=coverage,
            token_counting=token_counting,
            config=config,
            build_seconds=round(time.monotonic() - started, 3),
            phase_seconds={name: round(seconds, 2) for name, seconds in phases.items()},
        )
        (staging / STATS_FILE).write_text(summary.model_dump_json(indent=2), encoding="utf-8")
        (staging / CARD_FILE).write_text(render_card(summary), encoding="utf-8")
        publish(staging, output)
    except BaseException:
        store.remove()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info(
        "Dataset: %s samples (train/val/test), %d dropped, %d of %d grounded markers covered, in %.1f s",
        "/".join(str(split_stats[s].samples) for s in SPLITS),
        sum(drops.values()),
        coverage.covered,
        coverage.grounded,
        summary.build_seconds,
    )
    if (warning := coverage.warning()) is not None:
        logger.warning("%s", warning)
    return summary


def _samples_so_far(store: SampleStore) -> Callable[[object], dict[str, str]]:
    """The console's detail of the dataset stage: samples made so far."""
    return lambda _shard_output: {"samples": f"{len(store):,}"}
