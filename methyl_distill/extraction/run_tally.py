"""The bookkeeping of one extraction run: records, failures, counts, tokens, cost and a row per paper.

`RunTally` is told what happened to each file (rejected on reading, extracted, served from the
cache, failed) and keeps what the run's outputs and summary are made of: the records and failures
that go to records.jsonl / failures.jsonl, the per-paper table the flow publishes, and the counts
of `ExtractionSummary`. Every failure passes through `redact` (the teacher client's, which replaces
the API key) before it is kept: an error message that quotes the key must not reach a file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from methyl_distill.extraction.outputs import ExtractionOutputPaths
from methyl_distill.extraction.papers import Paper, PaperDiscovery, RejectedFile
from methyl_distill.extraction.records import FailureRecord, PaperRecord
from methyl_distill.teacher.config import TeacherConfig
from methyl_distill.teacher.protocol import OutputMode, TokenUsage


class ExtractionSummary(BaseModel):
    """What an extraction run produced: output paths (strings) and counts."""

    model_config = ConfigDict(extra="forbid")

    output_directory: str
    records_path: str = Field(description="records.jsonl: one PaperRecord per distinct paper.")
    all_results_path: str = Field(description="all_results.json: the original script's layout plus records.")
    failures_path: str = Field(description="failures.jsonl: files that could not be read or extracted.")
    processed_files_dir: str = Field(description="processed_files/: readable Q&A per paper file.")
    files_found: int = Field(description="Files under the input directory (hidden ones not counted).")
    files_by_format: dict[str, int] = Field(
        default_factory=dict, description="Readable files by format: pdf, jats, html, text, markdown."
    )
    hidden_skipped: int = Field(default=0, description="Hidden files and folders skipped by design.")
    papers: int = Field(description="Distinct readable papers (identical files count once).")
    duplicate_files: int = Field(description="Files whose content another file already holds.")
    extracted: int = Field(description="Papers extracted by the teacher in this run.")
    cached: int = Field(description="Papers whose extraction came from the cache (no teacher call).")
    failed: int = Field(description="Papers the teacher could not extract (not cached: retried next run).")
    rejected: int = Field(
        description="Files that could not be read (unsupported, scanned or encrypted PDF, not an article, "
        "undecodable...): each is in failures.jsonl with its reason."
    )
    back_matter_tokens_left_out: int = Field(
        default=0,
        description="Estimated tokens of reference lists and acknowledgements the teacher did not read.",
    )
    usage: TokenUsage = Field(description="Tokens and requests spent in this run (cached papers cost none).")
    estimated_cost_usd: float = Field(description="Estimated cost of this run's teacher calls.")
    output_mode: OutputMode | None = Field(
        default=None,
        description="Structured-output mode of this run's requests: the configured one, or with auto the "
        "one the endpoint answered in (None when it answered none: every paper cached, or no paper).",
    )
    teacher_pacing: str | None = Field(
        default=None,
        description="How the requests were paced: the endpoint's rate-limit accounting (configured or found "
        "from its headers), the max_tokens sent (sized or configured) and the requests in flight.",
    )


def record_for_files_of(record: PaperRecord, paper: Paper) -> PaperRecord:
    """A (possibly cached) record with the file names of this run: renamed or duplicated files."""
    return record.model_copy(
        update={
            "file_id": paper.file_id,
            "file_ids": list(paper.file_ids),
            "source_paths": list(paper.source_paths),
            "source": paper.source,
        }
    )


def files_by_format(discovery: PaperDiscovery) -> dict[str, int]:
    """How many readable files each format had (duplicates count: they are files)."""
    counts: dict[str, int] = {}
    for paper in discovery.papers:
        counts[paper.source.format] = counts.get(paper.source.format, 0) + len(paper.file_ids)
    return dict(sorted(counts.items()))


def _no_redaction(text: str) -> str:
    return text


@dataclass
class RunTally:
    """Records, failures and the per-paper table of one run."""

    teacher: TeacherConfig
    redact: Callable[[str], str] = _no_redaction
    records: list[PaperRecord] = field(default_factory=list)
    failures: list[FailureRecord] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    usage: TokenUsage = field(default_factory=TokenUsage)
    cached: int = 0
    rejected: int = 0
    failed_papers: int = 0

    def reject(self, item: RejectedFile) -> None:
        self.rejected += 1
        self.failures.append(
            FailureRecord(
                file_id=item.file_id, source_path=item.source_path, stage="read", reason=item.reason
            )
        )
        self._row(item.file_id, 1, "rejected", TokenUsage(), 0.0, item.reason, None)

    def fail(self, paper: Paper, failure: FailureRecord) -> None:
        """Count a paper's failure: one line in failures.jsonl for each file that holds the paper (the
        first carries the tokens spent, the others say whose content they share)."""
        failure = self._redacted(
            failure.model_copy(update={"file_id": paper.file_id, "source_path": paper.source_path})
        )
        self.failed_papers += 1
        self.failures.append(failure)
        for file_id, source_path in zip(paper.file_ids[1:], paper.source_paths[1:], strict=True):
            self.failures.append(
                failure.model_copy(
                    update={
                        "file_id": file_id,
                        "source_path": source_path,
                        "reason": f"{failure.reason} (same content as {paper.source_path})",
                        "usage": TokenUsage(),
                    }
                )
            )
        self.usage = self.usage + failure.usage
        cost = self.teacher.estimate_cost_usd(failure.usage)
        status = f"failed ({failure.stage})"
        self._row(
            paper.file_id, len(paper.file_ids), status, failure.usage, cost, failure.reason[:300], paper
        )

    def finish(self, paper: Paper, record: PaperRecord, *, from_cache: bool) -> PaperRecord:
        """Count a paper's record (renamed to this run's files, which it returns)."""
        record = record_for_files_of(record, paper)
        self.records.append(record)
        note = f"{record.chunks} chunk(s), {len(record.markers)} marker(s)"
        if from_cache:
            self.cached += 1
            self._row(paper.file_id, len(paper.file_ids), "cached", TokenUsage(), 0.0, note, paper)
        else:
            self.usage = self.usage + record.usage
            cost = self.teacher.estimate_cost_usd(record.usage)
            self._row(paper.file_id, len(paper.file_ids), "extracted", record.usage, cost, note, paper)
        return record

    def _redacted(self, failure: FailureRecord) -> FailureRecord:
        reason = self.redact(failure.reason)
        raw_output = self.redact(failure.raw_output) if failure.raw_output else failure.raw_output
        if reason == failure.reason and raw_output == failure.raw_output:
            return failure
        return failure.model_copy(update={"reason": reason, "raw_output": raw_output})

    def _row(
        self,
        file_id: str,
        files: int,
        status: str,
        usage: TokenUsage,
        cost: float,
        note: str,
        paper: Paper | None,
    ) -> None:
        self.rows.append(
            {
                "file_id": file_id,
                "files": files,
                "format": paper.source.format if paper else "",
                "status": status,
                "tokens_left_out": paper.source.omitted_tokens if paper else 0,
                "requests": usage.requests,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "estimated_cost_usd": round(cost, 4),
                "note": note,
            }
        )

    @property
    def extracted(self) -> int:
        return len(self.records) - self.cached

    @property
    def failed(self) -> int:
        return self.failed_papers

    @property
    def cost_usd(self) -> float:
        return self.teacher.estimate_cost_usd(self.usage)

    def counts(self) -> str:
        return (
            f"{self.extracted} extracted, {self.cached} cached, {self.failed} failed, "
            f"{self.rejected} rejected"
        )

    def spent(self) -> str:
        return f"{self.usage.total_tokens} tokens in {self.usage.requests} requests, ~${self.cost_usd:.2f}"

    def table(self) -> list[dict[str, Any]]:
        """The per-paper rows, ordered by file id."""
        return sorted(self.rows, key=lambda row: str(row["file_id"]))

    def summary(self, discovery: PaperDiscovery, paths: ExtractionOutputPaths) -> ExtractionSummary:
        papers = discovery.papers
        return ExtractionSummary(
            output_directory=paths.output_directory,
            records_path=paths.records,
            all_results_path=paths.all_results,
            failures_path=paths.failures,
            processed_files_dir=paths.processed_files,
            files_found=discovery.file_count,
            files_by_format=files_by_format(discovery),
            hidden_skipped=discovery.hidden_skipped,
            papers=len(papers),
            duplicate_files=sum(len(paper.file_ids) - 1 for paper in papers),
            extracted=self.extracted,
            cached=self.cached,
            failed=self.failed,
            rejected=self.rejected,
            back_matter_tokens_left_out=sum(paper.source.omitted_tokens for paper in papers),
            usage=self.usage,
            estimated_cost_usd=self.cost_usd,
        )
