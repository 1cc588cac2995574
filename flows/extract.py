"""The extraction flow: a directory of papers -> teacher Q&A records, cached per paper.

Every distinct paper is one `extract-paper` task run, mapped in batches over a bounded thread pool
(thousands of task runs created in one burst overflow the Prefect server's event queue), all of
them sharing one teacher client and one token bucket, so the whole run stays inside one TPM/RPM
budget (a Prefect global concurrency limit when TEACHER_BUCKET_BACKEND=prefect, shared with every
other process using it). Results land in the Prefect cache as each task finishes; the output
files are (re)written atomically at the end from the cache and the fresh results, so a run killed
half way loses nothing and its rerun repeats no finished paper.

The API key never is a parameter: it comes from the teacher settings (environment, `.env` or a
Prefect Secret block).
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import unmapped
from pydantic import BaseModel, ConfigDict, Field

from methyl_distill.chunking import ChunkingConfig
from methyl_distill.extraction import ExtractionConfig
from methyl_distill.extraction_outputs import write_extraction_outputs, write_processed_files
from methyl_distill.papers import Paper, discover_papers
from methyl_distill.question_bank import QuestionBank, load_question_bank
from methyl_distill.records import FailureRecord, PaperRecord, TokenUsage
from methyl_distill.teacher import Teacher
from methyl_distill.teacher_settings import TeacherSettings
from tasks.extraction import PaperExtractionFailed, extract_paper_task, resolve_cache_storage

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
    from methyl_distill.openai_teacher import build_teacher as build_openai_teacher

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
    """A Prefect progress artifact, updated at most every couple of seconds."""

    def __init__(self, total: int) -> None:
        self.total = max(total, 1)
        self.done = 0
        self._last = 0.0
        self._artifact_id = create_progress_artifact(
            progress=0.0, key="extraction-progress", description=f"Papers extracted or failed, of {total}"
        )

    def advance(self, force: bool = False) -> None:
        self.done += 1
        now = time.monotonic()
        if force or self.done == self.total or now - self._last >= _PROGRESS_INTERVAL_S:
            self._last = now
            update_progress_artifact(self._artifact_id, progress=round(100.0 * self.done / self.total, 1))


def _map_papers(
    papers: Sequence[Paper],
    submit_batch: Callable[[Sequence[Paper]], list[PrefectFuture[PaperRecord]]],
    batch_size: int,
) -> Iterator[tuple[Paper, PrefectFuture[PaperRecord]]]:
    """Map batches, keeping at most two batches of task runs in flight; yield futures as they finish."""
    finished: queue.Queue[tuple[Paper, PrefectFuture[PaperRecord]]] = queue.Queue()
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
                future.add_done_callback(lambda done, paper=paper: finished.put((paper, done)))
                in_flight += 1
        if in_flight == 0:
            return
        yield finished.get()
        in_flight -= 1


def _table_row(paper: Paper, status: str, usage: TokenUsage, cost: float | None, note: str) -> dict[str, Any]:
    return {
        "file_id": paper.file_id,
        "files": len(paper.file_ids),
        "status": status,
        "requests": usage.requests,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "estimated_cost_usd": round(cost, 4) if cost is not None else None,
        "note": note,
    }


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
    overrides = {"openai_base_url": teacher_base_url, "teacher_model": teacher_model}
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

    failures = [
        FailureRecord(file_id=item.file_id, source_path=item.source_path, stage="read", reason=item.reason)
        for item in discovery.rejected
    ]
    records: list[PaperRecord] = []
    rows = [_table_row_rejected(item.file_id, item.reason) for item in discovery.rejected]
    run_usage = TokenUsage()
    cached = 0
    if papers:
        teacher = build_teacher(settings)
        extraction_task = extract_paper_task.with_options(
            result_storage=resolve_cache_storage(cache_dir), refresh_cache=refresh
        )
        progress = _Progress(len(papers))
        with ThreadPoolTaskRunner(max_workers=max_concurrency) as runner:

            def submit_batch(batch: Sequence[Paper]) -> list[PrefectFuture[PaperRecord]]:
                parameters = {
                    "paper": list(batch),
                    "teacher": unmapped(teacher),
                    "question_bank": unmapped(bank),
                    "config": unmapped(config),
                }
                return list(runner.map(extraction_task, parameters))  # type: ignore[arg-type]

            for paper, future in _map_papers(papers, submit_batch, batch_size):
                future.wait()  # takes the final state from the finished future, not from the API
                if future.state.is_completed():
                    record = _for_paper(future.result(), paper)
                    from_cache = future.state.name == "Cached"
                    cached += from_cache
                    if not from_cache:
                        run_usage = run_usage + record.usage
                    records.append(record)
                    write_processed_files(output_directory, record)
                    rows.append(
                        _table_row(
                            paper,
                            "cached" if from_cache else "extracted",
                            TokenUsage() if from_cache else record.usage,
                            0.0 if from_cache else record.estimated_cost_usd,
                            f"{record.chunks} chunk(s), {len(record.markers)} marker(s)",
                        )
                    )
                else:
                    failure = _failure_from(future, paper)
                    failures.append(failure)
                    run_usage = run_usage + failure.usage
                    rows.append(
                        _table_row(
                            paper,
                            f"failed ({failure.stage})",
                            failure.usage,
                            settings.estimate_cost_usd(failure.usage),
                            failure.reason[:300],
                        )
                    )
                progress.advance()

    paths = write_extraction_outputs(output_directory, records, failures)
    extracted = len(records) - cached
    failed = len(failures) - len(discovery.rejected)
    cost = settings.estimate_cost_usd(run_usage)
    create_table_artifact(
        table=sorted(rows, key=lambda row: str(row["file_id"])),
        key="extraction-papers",
        description=(
            f"{extracted} extracted, {cached} cached, {failed} failed, {len(discovery.rejected)} rejected; "
            f"{run_usage.total_tokens} tokens in {run_usage.requests} requests, ~${cost:.2f}"
        ),
    )
    logger.info(
        "Extraction done: %d extracted, %d cached, %d failed, %d rejected; %d tokens, ~$%.2f; outputs in %s",
        extracted,
        cached,
        failed,
        len(discovery.rejected),
        run_usage.total_tokens,
        cost,
        paths.output_directory,
    )
    return ExtractionSummary(
        output_directory=paths.output_directory,
        records_path=paths.records,
        all_results_path=paths.all_results,
        failures_path=paths.failures,
        processed_files_dir=paths.processed_files,
        files_found=discovery.file_count,
        papers=len(papers),
        duplicate_files=sum(len(paper.file_ids) - 1 for paper in papers),
        extracted=extracted,
        cached=cached,
        failed=failed,
        rejected=len(discovery.rejected),
        usage=run_usage,
        estimated_cost_usd=cost,
    )


def _table_row_rejected(file_id: str, reason: str) -> dict[str, Any]:
    return {
        "file_id": file_id,
        "files": 1,
        "status": "rejected",
        "requests": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "estimated_cost_usd": 0.0,
        "note": reason,
    }
