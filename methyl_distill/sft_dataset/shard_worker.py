"""Building the samples of one shard of papers: the unit of work that runs in parallel processes.

A shard is a few hundred papers' record locations. The worker validates their records, reads their
papers, builds the samples, applies the length rule and returns them as finished JSON lines with the
small metadata the rest of the build needs (paper, style, tokens, flags, markers, the markers each
covers, dedup text), and each paper's grounded markers.
Results come back in shard order, so the dataset does not depend on the number of workers.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from multiprocessing import get_context
from pathlib import Path

from methyl_distill.extraction.records import PaperRecord
from methyl_distill.sft_dataset.config import DatasetConfig
from methyl_distill.sft_dataset.dataset_writer import sample_line
from methyl_distill.sft_dataset.deduplication import Signatures, sign_texts
from methyl_distill.sft_dataset.marker_coverage import ShardCoverage
from methyl_distill.sft_dataset.paper_text import LoadedPaper, PaperLibrary, PaperText
from methyl_distill.sft_dataset.record_reader import RecordShard
from methyl_distill.sft_dataset.sample_builder import Sample, SampleBuilder, sample_messages, unit_draw
from methyl_distill.sft_dataset.sample_length import TokenCounter, enforce_max_length, make_token_counter

logger = logging.getLogger(__name__)

_LENGTH_BATCH_PAPERS = 256
_LOAD_BATCH_PAPERS = 64


@dataclass
class ShardOutput:
    """A shard's samples as JSON lines plus metadata, and what happened on the way."""

    lines: list[bytes] = field(default_factory=list)
    papers: list[str] = field(default_factory=list)
    styles: list[str] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    flags: list[tuple[str, ...]] = field(default_factory=list)
    markers: list[tuple[str, ...]] = field(default_factory=list)
    coverage: ShardCoverage = field(default_factory=ShardCoverage)
    dedup_texts: list[str] = field(default_factory=list)  # signed, then emptied, before leaving the worker
    signatures: Signatures | None = None
    not_reported_draws: dict[int, float] = field(default_factory=dict)  # local index -> seeded draw
    drops: Counter[str] = field(default_factory=Counter)
    paper_status: Counter[str] = field(default_factory=Counter)
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    papers_used: int = 0

    def add(
        self, samples: Iterable[Sample], config: DatasetConfig, markers: Mapping[str, Mapping[int, int]]
    ) -> None:
        """Add finished samples; `markers` numbers the grounded markers of their papers (paper ->
        position in the record -> number in `coverage`)."""
        for sample in samples:
            messages = sample_messages(sample, config.system_prompt)
            meta = None
            if config.include_meta:
                meta = {
                    "file_id": sample.file_id,
                    "style": sample.style,
                    "flags": list(sample.flags),
                    "markers": list(sample.markers),
                    "tokens": sample.tokens,
                }
            if sample.not_reported:
                self.not_reported_draws[len(self.lines)] = unit_draw(
                    config.seed, sample.paper, "not_reported", sample.question
                )
            if sample.covers and sample.paper in markers:
                self.coverage.add_sample(len(self.lines), sample.covers, markers[sample.paper])
            self.lines.append(sample_line(messages, meta))
            self.papers.append(sample.paper)
            self.styles.append(sample.style)
            self.tokens.append(sample.tokens)
            self.flags.append(sample.flags)
            self.markers.append(sample.markers)
            self.dedup_texts.append(sample.dedup_text)


# One per process: the tokenizer is loaded once, not once per shard.
_COUNTERS: dict[str, TokenCounter] = {}


def token_counter(config: DatasetConfig) -> TokenCounter:
    """The token counter of `config`, made once per process."""
    key = config.fingerprint()
    if key not in _COUNTERS:
        _COUNTERS[key] = make_token_counter(config)
    return _COUNTERS[key]


def _with_papers(
    records: Iterator[PaperRecord], library: PaperLibrary
) -> Iterator[tuple[PaperRecord, LoadedPaper]]:
    """Each record with its paper; papers are loaded a batch at a time (indexed together)."""
    while batch := list(islice(records, _LOAD_BATCH_PAPERS)):
        papers = library.load_many([(record.source_paths, record.content_sha256) for record in batch])
        yield from zip(batch, papers, strict=True)


def build_shard(
    shard: RecordShard, papers_directory: str | Path | None, config: DatasetConfig
) -> ShardOutput:
    """Validate, read, build and length-check the samples of one shard of papers."""
    out = ShardOutput()
    builder = SampleBuilder(config)
    library = PaperLibrary(papers_directory)
    counter = token_counter(config)
    batch: list[Sample] = []
    batch_papers: dict[str, PaperText] = {}
    batch_markers: dict[str, dict[int, int]] = {}
    for record, paper in _with_papers(shard.iter_records(), library):
        out.papers_used += 1
        out.paper_status[paper.status] += 1
        if paper.status not in ("ok", "changed"):
            out.missing.append(f"{record.file_id}: {paper.status} ({paper.detail})")
        elif paper.status == "changed":
            logger.warning("%s: %s; grounding checks the current text", record.file_id, paper.detail)
        built = builder.build(record, paper)
        out.drops.update(built.drops)
        if built.grounded:
            batch_markers[record.content_sha256] = out.coverage.add_paper(
                record.file_id, ((marker.position, marker.name) for marker in built.grounded)
            )
        batch.extend(built.samples)
        if paper.text is not None:
            batch_papers[record.content_sha256] = paper.text
        if len(batch_papers) >= _LENGTH_BATCH_PAPERS:
            out.add(
                enforce_max_length(batch, batch_papers, counter, config, out.drops), config, batch_markers
            )
            batch, batch_papers, batch_markers = [], {}, {}
    out.add(enforce_max_length(batch, batch_papers, counter, config, out.drops), config, batch_markers)
    out.corrupt = shard.corrupt
    # Deduplication's per-text work happens here, in parallel; the main process only decides.
    out.signatures = sign_texts(out.dedup_texts, config.minhash_permutations, config.seed)
    out.dedup_texts = []
    return out


def build_shards(
    shards: list[RecordShard], papers_directory: str | Path | None, config: DatasetConfig, workers: int
) -> Iterator[ShardOutput]:
    """The shards' outputs in shard order: in this process, or in `workers` spawned processes with at
    most two shards per worker in flight (bounded memory)."""
    if workers <= 1 or len(shards) <= 1:
        for shard in shards:
            yield build_shard(shard, papers_directory, config)
        return
    # 'spawn': safe beside the threads of a Prefect run (fork would copy their locks).
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        pending: list[Future[ShardOutput]] = []
        queue = iter(shards)
        for shard in queue:
            pending.append(pool.submit(build_shard, shard, papers_directory, config))
            if len(pending) >= 2 * workers:
                break
        try:
            while pending:
                result = pending.pop(0).result()
                next_shard = next(queue, None)
                if next_shard is not None:
                    pending.append(pool.submit(build_shard, next_shard, papers_directory, config))
                yield result
        finally:  # a failure (or a consumer that stops early) leaves no queued shard to wait for
            for future in pending:
                future.cancel()
