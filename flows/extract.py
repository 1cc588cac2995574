"""The extraction flow: a directory of papers -> teacher Q&A records, cached per paper.

Every distinct paper is one `extract-paper` task run, mapped in batches over a bounded thread pool
(thousands of task runs created in one burst overflow the Prefect server's event queue), all of
them sharing one teacher client and one token bucket, so the whole run stays inside one TPM/RPM
budget (a Prefect global concurrency limit when TEACHER_BUCKET_BACKEND=prefect, shared with every
other process using it). Results land in the Prefect cache as each task finishes, and each
paper's readable Q&A file is written then; the aggregate files (records.jsonl, all_results.json,
failures.jsonl) are rewritten atomically at the end from the cached and fresh results, so a run
killed half way loses nothing and its rerun repeats no finished paper.

The API key never is a parameter: it comes from the teacher settings (environment, `.env` or a
Prefect Secret block).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import unmapped
from pydantic import BaseModel, ConfigDict, Field

from methyl_distill.extraction.chunking import ChunkingConfig
from methyl_distill.extraction.extract import ExtractionConfig
from methyl_distill.extraction.outputs import write_extraction_outputs, write_processed_files
from methyl_distill.extraction.papers import Paper, RejectedFile, discover_papers
from methyl_distill.extraction.question_bank import QuestionBank, load_question_bank
from methyl_distill.extraction.records import FailureRecord, PaperRecord, TokenUsage
from methyl_distill.teacher.protocol import Teacher
from methyl_distill.teacher.config import TeacherSettings
from methyl_distill.tasks.extraction import PaperExtractionFailed, extract_paper_task, resolve_cache_storage

DEFAULT_MAX_CONCURRENCY = 16
# Task runs created per burst: well below the ~5000 at which the server's event queue overflowed.
DEFAULT_BATCH_SIZE = 250
_PROGRESS_INTERVAL_S = 2.0


class ExtractionSummary(BaseModel):
    """What an extraction run produced: output paths (strings) and counts."""

    model_config = ConfigDict(extra="forbid")

    output_directory: str
    records_path: str = Field(description="records.jsonl: one PaperRecord per distinct paper.")
    all_results_path: str = Field(description="all_results.json: the original script's layout plus records.")
    failures_path: str = Field(description="failures.jsonl: files that could not be read or extracted.")
    processed_files_dir: str = Field(description="processed_files/: readable Q&A per paper file.")
    files_found: int = Field(description="Paper files (.txt, .md) under the input directory.")
    papers: int = Field(description="Distinct readable papers (identical files count once).")
    duplicate_files: int = Field(description="Files whose content another file already holds.")
    extracted: int = Field(description="Papers extracted by the teacher in this run.")
    cached: int = Field(description="Papers whose extraction came from the cache (no teacher call).")
    failed: int = Field(description="Papers the teacher could not extract (not cached: retried next run).")
    rejected: int = Field(description="Files rejected before extraction (empty, binary, undecodable).")
    usage: TokenUsage = Field(description="Tokens and requests spent in this run (cached papers cost none).")
    estimated_cost_usd: float = Field(description="Estimated cost of this run's teacher calls.")


def build_teacher(settings: TeacherSettings) -> Teacher:
    """The run's one teacher client with its one token bucket (a Prefect GCL when configured)."""
    from methyl_distill.teacher.openai_client import build_teacher as build_openai_teacher

    return build_openai_teacher(settings)


def _extraction_config(
    settings: TeacherSettings, max_chunk_tokens: int | None, chunk_overlap_tokens: int | None
) -> ExtractionConfig:
    chunking: dict[str, int] = {}
    if max_chunk_tokens is not None:
        chunking["max_chunk_tokens"] = max_chunk_tokens
        # Small chunks get a proportionate default overlap rather than a validation error.
        default_overlap = ChunkingConfig.model_fields["overlap_tokens"].default
        chunking["overlap_tokens"] = min(default_overlap, max_chunk_tokens // 4)
    if chunk_overlap_tokens is not None:
        chunking["overlap_tokens"] = chunk_overlap_tokens
    return ExtractionConfig(
        max_output_tokens=settings.teacher_max_output_tokens,
        context_tokens=settings.teacher_context_tokens,
        request_token_limit=settings.teacher_tpm,
        chunking=ChunkingConfig(**chunking),
        input_price_per_million=settings.teacher_price_input_per_mtok,
        output_price_per_million=settings.teacher_price_output_per_mtok,
    )


def _batches(items: Sequence[Paper], size: int) -> Iterator[Sequence[Paper]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _for_paper(record: PaperRecord, paper: Paper) -> PaperRecord:
    """A (possibly cached) record with the file names of this run: renamed or duplicated files."""
    return record.model_copy(
        update={
            "file_id": paper.file_id,
            "file_ids": list(paper.file_ids),
            "source_paths": list(paper.source_paths),
        }
    )


def _failure_from(future: PrefectFuture[PaperRecord], paper: Paper) -> FailureRecord:
    error = future.result(raise_on_failure=False)
    if isinstance(error, PaperExtractionFailed):
        return error.failure.model_copy(update={"file_id": paper.file_id, "source_path": paper.source_path})
    reason = (
        f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(future.state.message)
    )
    return FailureRecord(file_id=paper.file_id, source_path=paper.source_path, stage="request", reason=reason)


class _Progress:
    """A Prefect progress artifact, updated from a background thread at most every couple of seconds.

    Each update is an API call; made inline, it held up the collection of finished papers for as long
    as a busy server took to answer (about a second each in an all-cached rerun). `close()` sends the
    final value and waits for it.
    """

    def __init__(self, total: int, logger: Any) -> None:
        self.total = max(total, 1)
        self.done = 0
        self._logger = logger
        artifact_id = create_progress_artifact(
            progress=0.0, key="extraction-progress", description=f"Papers extracted or failed, of {total}"
        )
        assert isinstance(artifact_id, UUID)  # the sync API inside a sync flow
        self._artifact_id = artifact_id
        self._changed = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._report, name="extraction-progress", daemon=True)
        self._thread.start()

    def advance(self) -> None:
        self.done += 1
        self._changed.set()

    def close(self) -> None:
        self._closing.set()
        self._changed.set()
        self._thread.join()

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _report(self) -> None:
        sent = 0
        while True:
            self._changed.wait()
            closing = self._closing.is_set()
            self._changed.clear()
            done = self.done
            if done != sent:
                try:
                    update_progress_artifact(self._artifact_id, progress=round(100.0 * done / self.total, 1))
                    sent = done
                except Exception as exc:  # the progress bar is not worth failing the run for
                    self._logger.warning("Could not update the progress artifact: %s", exc)
            if closing:
                return
            self._closing.wait(_PROGRESS_INTERVAL_S)


def _map_papers(
    papers: Sequence[Paper],
    submit_batch: Callable[[Sequence[Paper]], list[PrefectFuture[PaperRecord]]],
    batch_size: int,
) -> Iterator[tuple[Paper, PrefectFuture[PaperRecord]]]:
    """Map batch after batch, with at most about two batches of task runs in flight; yield each
    (paper, future) as soon as its task run has finished."""
    finished: queue.Queue[tuple[Paper, PrefectFuture[PaperRecord]]] = queue.Queue()

    def on_done(paper: Paper) -> Callable[[PrefectFuture[PaperRecord]], None]:
        return lambda future: finished.put((paper, future))

    in_flight = 0
    pending = _batches(papers, batch_size)
    exhausted = False
    while True:
        while not exhausted and in_flight <= batch_size:
            batch = next(pending, None)
            if batch is None:
                exhausted = True
                break
            for paper, future in zip(batch, submit_batch(batch), strict=True):
                future.add_done_callback(on_done(paper))
                in_flight += 1
        if in_flight == 0:
            return
        paper, future = finished.get()
        in_flight -= 1
        future.wait()  # takes the final state from the finished future, not from the API
        yield paper, future


@dataclass
class _Tally:
    """Records, failures and the per-paper table of one run."""

    settings: TeacherSettings
    output_directory: str
    records: list[PaperRecord] = field(default_factory=list)
    failures: list[FailureRecord] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    usage: TokenUsage = field(default_factory=TokenUsage)
    cached: int = 0
    rejected: int = 0

    def reject(self, item: RejectedFile) -> None:
        self.rejected += 1
        self.failures.append(
            FailureRecord(
                file_id=item.file_id, source_path=item.source_path, stage="read", reason=item.reason
            )
        )
        self._row(item.file_id, 1, "rejected", TokenUsage(), 0.0, item.reason)

    def finish(self, paper: Paper, future: PrefectFuture[PaperRecord]) -> None:
        if not future.state.is_completed():
            failure = self._redacted(_failure_from(future, paper))
            self.failures.append(failure)
            self.usage = self.usage + failure.usage
            cost = self.settings.estimate_cost_usd(failure.usage)
            status = f"failed ({failure.stage})"
            self._row(paper.file_id, len(paper.file_ids), status, failure.usage, cost, failure.reason[:300])
            return
        record = _for_paper(future.result(), paper)
        from_cache = future.state.name == "Cached"
        self.records.append(record)
        write_processed_files(self.output_directory, record)  # visible at once, written atomically
        note = f"{record.chunks} chunk(s), {len(record.markers)} marker(s)"
        if from_cache:
            self.cached += 1
            self._row(paper.file_id, len(paper.file_ids), "cached", TokenUsage(), 0.0, note)
        else:
            self.usage = self.usage + record.usage
            cost = self.settings.estimate_cost_usd(record.usage)
            self._row(paper.file_id, len(paper.file_ids), "extracted", record.usage, cost, note)

    def _redacted(self, failure: FailureRecord) -> FailureRecord:
        """Defence in depth: an error message that quotes the API key must not reach failures.jsonl."""
        key = self.settings.openai_api_key.get_secret_value() if self.settings.openai_api_key else ""
        if not key or (key not in failure.reason and key not in (failure.raw_output or "")):
            return failure
        return failure.model_copy(
            update={
                "reason": failure.reason.replace(key, "***"),
                "raw_output": failure.raw_output.replace(key, "***") if failure.raw_output else None,
            }
        )

    def _row(self, file_id: str, files: int, status: str, usage: TokenUsage, cost: float, note: str) -> None:
        self.rows.append(
            {
                "file_id": file_id,
                "files": files,
                "status": status,
                "requests": usage.requests,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "estimated_cost_usd": round(cost, 4),
                "note": note,
            }
        )

    def counts(self) -> str:
        extracted, cached, failed, rejected = self.extracted, self.cached, self.failed, self.rejected
        return f"{extracted} extracted, {cached} cached, {failed} failed, {rejected} rejected"

    @property
    def extracted(self) -> int:
        return len(self.records) - self.cached

    @property
    def failed(self) -> int:
        return len(self.failures) - self.rejected


@flow(name="extract", log_prints=False)
def extract_flow(
    input_directory: str,
    output_directory: str,
    refresh: bool = False,
    question_bank: str | None = None,
    teacher_base_url: str | None = None,
    teacher_model: str | None = None,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_chunk_tokens: int | None = None,
    chunk_overlap_tokens: int | None = None,
    cache_dir: str | None = None,
) -> ExtractionSummary:
    """Extract every paper under `input_directory` into `output_directory`; cached papers cost nothing.

    `refresh` re-extracts every paper (and refreshes the cache). `question_bank` is a TOML bank
    file (default: the bundled one). `teacher_base_url` / `teacher_model` override OPENAI_BASE_URL
    / TEACHER_MODEL. `max_concurrency` bounds the requests in flight; `batch_size` the task runs
    created at once. `cache_dir` overrides METHYL_DISTILL_CACHE_DIR.
    """
    logger = get_run_logger()
    if max_concurrency < 1 or batch_size < 1:
        raise ValueError("max_concurrency and batch_size must be at least 1")
    overrides: dict[str, Any] = {"openai_base_url": teacher_base_url, "teacher_model": teacher_model}
    settings = TeacherSettings(**{key: value for key, value in overrides.items() if value is not None})
    bank: QuestionBank = load_question_bank(question_bank)
    config = _extraction_config(settings, max_chunk_tokens, chunk_overlap_tokens)
    discovery = discover_papers(input_directory)
    papers = discovery.papers
    logger.info(
        "%d paper file(s): %d distinct paper(s), %d rejected; question bank %s; %s",
        discovery.file_count,
        len(papers),
        len(discovery.rejected),
        bank.version,
        settings.describe(),
    )

    tally = _Tally(settings, output_directory)
    for item in discovery.rejected:
        tally.reject(item)
    if papers:
        teacher = build_teacher(settings)
        extraction_task = extract_paper_task.with_options(
            result_storage=resolve_cache_storage(cache_dir), refresh_cache=refresh
        )
        runner: ThreadPoolTaskRunner[Any]
        with (
            _Progress(len(papers), logger) as progress,
            ThreadPoolTaskRunner(max_workers=max_concurrency) as runner,
        ):

            def submit_batch(batch: Sequence[Paper]) -> list[PrefectFuture[PaperRecord]]:
                parameters = {
                    "paper": list(batch),
                    "teacher": unmapped(teacher),
                    "question_bank": unmapped(bank),
                    "config": unmapped(config),
                }
                return list(runner.map(extraction_task, parameters))  # type: ignore[arg-type]

            for paper, future in _map_papers(papers, submit_batch, batch_size):
                tally.finish(paper, future)
                progress.advance()

    paths = write_extraction_outputs(output_directory, tally.records, tally.failures, processed_files=False)
    cost = settings.estimate_cost_usd(tally.usage)
    counts = tally.counts()
    spent = f"{tally.usage.total_tokens} tokens in {tally.usage.requests} requests, ~${cost:.2f}"
    create_table_artifact(
        table=sorted(tally.rows, key=lambda row: str(row["file_id"])),
        key="extraction-papers",
        description=f"{counts}; {spent}",
    )
    logger.info("Extraction done: %s; %s; outputs in %s", counts, spent, paths.output_directory)
    return ExtractionSummary(
        output_directory=paths.output_directory,
        records_path=paths.records,
        all_results_path=paths.all_results,
        failures_path=paths.failures,
        processed_files_dir=paths.processed_files,
        files_found=discovery.file_count,
        papers=len(papers),
        duplicate_files=sum(len(paper.file_ids) - 1 for paper in papers),
        extracted=tally.extracted,
        cached=tally.cached,
        failed=tally.failed,
        rejected=tally.rejected,
        usage=tally.usage,
        estimated_cost_usd=cost,
    )
