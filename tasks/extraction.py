"""The extraction task: `extract_paper` with Prefect caching and retries around it.

Caching replaces the original script's progress file. The cache key is made of what shapes the
paper's answer, by content: the paper's text and reader, the questions, the prompt's wording and the
output schema as sent, the teacher's model, endpoint, configured output mode and grammar, max_tokens
and whatever of the chunking shapes the paper's requests
(`methyl_distill.extraction.extract.extraction_cache_key`). Results are persisted as JSON to a local
folder (METHYL_DISTILL_CACHE_DIR, default ~/.cache/methyl-distill) or to a Prefect storage block
(METHYL_DISTILL_CACHE_STORAGE_BLOCK), one file per paper, as soon as the task finishes.

A paper that fails is NOT cached: the task raises `PaperExtractionFailed` carrying the
`FailureRecord`, so Prefect records a Failed state (never cached) and the flow reads the record
from the exception. Those failures are the paper's (bad output, too large), so they are not
retried; other exceptions (infrastructure) are retried by Prefect. A paper whose teacher request
was refused or abandoned because the run is stopping (`TeacherStopped`) is neither cached nor
retried, and is no failure of the paper: `paper_outcome` gives None for it.

Prefect persists every final failure's exception to the result storage too (under a random key,
never the cache key; no task option turns that off). Nobody reads those files: the flow takes the
failure from the exception in memory, then `paper_outcome` deletes the file from a local cache
folder, so error texts (raw model output among them) do not pile up there. A storage block has no
generic delete: its failure files stay.

Only the paper record is persisted: the teacher object (which holds the API key) is a task
parameter that the cache key function ignores and Prefect never serialises.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import Task, task
from prefect.client.schemas.objects import TaskRun
from prefect.context import TaskRunContext
from prefect.futures import PrefectFuture
from prefect.states import State
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from methyl_distill.extraction.extract import ExtractionConfig, extract_paper, extraction_cache_key
from methyl_distill.extraction.papers import Paper
from methyl_distill.extraction.question_bank import QuestionBank
from methyl_distill.extraction.records import FailureRecord, PaperRecord
from methyl_distill.teacher.openai_client import TeacherStopped
from methyl_distill.teacher.protocol import Teacher

INFRASTRUCTURE_RETRIES = 2


class ExtractionCacheSettings(BaseSettings):
    """Where extraction results are cached (environment or `.env`)."""

    model_config = SettingsConfigDict(
        env_prefix="METHYL_DISTILL_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    cache_dir: Path = Field(
        default=Path("~/.cache/methyl-distill"),
        description="Local folder of the extraction cache (METHYL_DISTILL_CACHE_DIR).",
    )
    cache_storage_block: str | None = Field(
        default=None,
        description="Slug of a Prefect storage block to cache in instead, e.g. 's3-bucket/extractions' "
        "(METHYL_DISTILL_CACHE_STORAGE_BLOCK).",
    )


def resolve_cache_storage(
    cache_dir: str | Path | None = None, storage_block: str | None = None
) -> Path | str:
    """The result storage of the extraction cache: a block slug if configured, else a local folder."""
    settings = ExtractionCacheSettings()
    block = storage_block or settings.cache_storage_block
    if block:
        return block  # Prefect resolves a block slug itself
    folder = Path(cache_dir if cache_dir is not None else settings.cache_dir).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class PaperExtractionFailed(Exception):
    """The paper could not be extracted; carries the failure record. Not cached, not retried."""

    def __init__(self, failure: FailureRecord) -> None:
        super().__init__(f"{failure.file_id}: {failure.stage}: {failure.reason}")
        self.failure = failure

    def __reduce__(self) -> tuple[Any, ...]:  # picklable with its record
        return (PaperExtractionFailed, (self.failure,))


def extraction_task_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Cache key from the paper and the settings that shape its answer: the teacher's configuration
    (which holds no key), never the teacher object."""
    teacher: Teacher = parameters["teacher"]
    return extraction_cache_key(
        parameters["paper"], parameters["question_bank"], teacher.config, parameters["config"]
    )


def paper_outcome(future: PrefectFuture[PaperRecord]) -> tuple[PaperRecord, bool] | FailureRecord | None:
    """What a finished extraction task run gave: (record, whether it came from the cache), the
    paper's failure record (for a failure that is not the paper's, one of stage `request`), or None
    when the run stopped before the paper was done."""
    if future.state.is_completed():
        return future.result(), future.state.name == "Cached"
    error = future.result(raise_on_failure=False)
    discard_persisted_failure(future.state)
    if isinstance(error, PaperExtractionFailed):
        return error.failure
    if isinstance(error, TeacherStopped):
        return None
    reason = (
        f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(future.state.message)
    )
    return FailureRecord(file_id="", source_path="", stage="request", reason=reason)


def discard_persisted_failure(state: State[Any]) -> None:
    """Delete the file Prefect wrote a failed state's exception to, when it is a local file (see the
    module docstring); anything else is left alone."""
    data = state.data
    metadata = getattr(data, "metadata", data)
    storage_key = getattr(metadata, "storage_key", None)
    if getattr(metadata, "storage_block_id", None) is not None or not isinstance(storage_key, str):
        return
    path = Path(storage_key)
    if path.is_absolute():
        path.unlink(missing_ok=True)


def _retry_unless_paper_failed(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    try:
        state.result(raise_on_failure=True)
    except (PaperExtractionFailed, TeacherStopped):
        return False
    except Exception:
        return True
    return False


@task(
    name="extract-paper",
    task_run_name="extract-{paper.file_id}",
    cache_key_fn=extraction_task_cache_key,
    persist_result=True,
    result_serializer="json",
    retries=INFRASTRUCTURE_RETRIES,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=_retry_unless_paper_failed,
    # No tags: Prefect acquires (and releases) a tag-concurrency lease from the API for every task run
    # that has one, cached or not: two round trips and a lease per paper, most of an all-cached
    # rerun's time. Teacher requests are paced by the shared token bucket instead.
)
def extract_paper_task(
    paper: Paper, teacher: Teacher, question_bank: QuestionBank, config: ExtractionConfig
) -> PaperRecord:
    """Extract one paper; raises `PaperExtractionFailed` (not cached) when it cannot be."""
    outcome = extract_paper(paper, teacher, question_bank, config)
    if isinstance(outcome, FailureRecord):
        raise PaperExtractionFailed(outcome)
    return outcome
