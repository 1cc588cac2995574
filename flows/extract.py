"""The extraction flow: a directory of papers -> teacher Q&A records, cached per paper.

Every distinct paper is one `extract-paper` task run, mapped in batches over a bounded thread pool,
all of them sharing one teacher client and one token bucket, so the whole run stays inside one
TPM/RPM budget (a Prefect global concurrency limit with `bucket_backend="prefect"`, shared with every
other process using it). Results land in the Prefect cache as each task finishes, and each paper's
readable Q&A file is written then; the aggregate files (records.jsonl, all_results.json,
failures.jsonl) are rewritten atomically as papers finish (`LiveAggregates`) and at the end, so a
run killed half way shows what it finished, loses nothing, and its rerun repeats no finished paper.
A stop (`methyl_distill.extraction.stopping`: the command's SIGINT / SIGTERM) submits no further
paper, lets the teacher send no further request, waits a grace period for those in flight, writes
the aggregate files with what was finished and raises `ExtractionStopped`.

The parameters are `ExtractParameters` (methyl_distill/extraction/parameters.py). The API key is
never a parameter: it is resolved where the client is built (environment, `.env` or a Prefect
Secret block).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

from methyl_distill.tasks.extraction import extract_paper_task, paper_outcome, resolve_cache_storage
from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import unmapped

from methyl_distill.extraction.aggregates import LiveAggregates
from methyl_distill.extraction.batch_extraction import BatchReplayTeacher, answer_uncached_in_batches
from methyl_distill.extraction.live_progress import reporting_extraction
from methyl_distill.extraction.outputs import claim_output_directory, write_processed_files
from methyl_distill.extraction.paper_batches import DEFAULT_BATCH_SIZE, map_in_batches
from methyl_distill.extraction.papers import Paper, discover_papers
from methyl_distill.extraction.parameters import DEFAULT_MAX_CONCURRENCY, ExtractionWorkers, ExtractParameters
from methyl_distill.extraction.progress import ThrottledProgress
from methyl_distill.extraction.question_bank import load_question_bank
from methyl_distill.extraction.records import FailureRecord, PaperRecord
from methyl_distill.extraction.run_tally import ExtractionSummary, RunTally, files_by_format
from methyl_distill.extraction.stopping import PROCESS_STOP, ExtractionStopped
from methyl_distill.readers.formats import DEFAULT_MAX_FILE_MB
from methyl_distill.teacher.config import TeacherApi, TeacherConfig
from methyl_distill.teacher.openai_client import OpenAITeacher, build_teacher

if TYPE_CHECKING:
    from methyl_distill.extraction.extract import ExtractionConfig
    from methyl_distill.extraction.question_bank import QuestionBank

__all__ = ["ExtractionSummary", "extract_flow", "run_extraction"]


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
    teacher_config: TeacherConfig | None = None,
    keep_back_matter: bool = False,
    max_file_mb: float = DEFAULT_MAX_FILE_MB,
    workers: ExtractionWorkers = "local",
    teacher_api: TeacherApi | None = None,
) -> ExtractionSummary:
    """Extract every paper under `input_directory` into `output_directory`; cached papers cost nothing.

    The parameters are the fields of `ExtractParameters`, which describes each one.
    """
    return run_extraction(ExtractParameters.model_validate(locals()))


def run_extraction(parameters: ExtractParameters) -> ExtractionSummary:
    """The stage's outline (call inside a flow run: papers are mapped as task runs)."""
    logger = get_run_logger()
    teacher_config = parameters.resolved_teacher()
    bank = load_question_bank(parameters.question_bank)
    config = parameters.extraction_config(teacher_config)
    claim_output_directory(parameters.output_directory)  # before any work: a foreign folder is refused
    discovery = discover_papers(parameters.input_directory, parameters.reading_options())
    papers = discovery.papers
    stop = PROCESS_STOP  # requested by the command's signal handlers; never in a deployment's run
    local = parameters.workers == "local"  # else task workers build their own teachers
    teacher: OpenAITeacher | BatchReplayTeacher | None = (
        build_teacher(teacher_config, stop=stop.requested, abandon=stop.abandon) if papers and local else None
    )
    logger.info(
        "%d file(s) (%s): %d distinct paper(s), %d not readable, %d hidden skipped; question bank %s; %s",
        discovery.file_count,
        ", ".join(f"{count} {name}" for name, count in files_by_format(discovery).items()) or "none readable",
        len(papers),
        len(discovery.rejected),
        discovery.hidden_skipped,
        bank.version,
        teacher_config.describe(key_set=teacher.has_key if teacher else None),
    )
    tally = RunTally(teacher_config, redact=teacher.redact) if teacher else RunTally(teacher_config)
    aggregates = LiveAggregates(parameters.output_directory, papers)
    for item in discovery.rejected:
        logger.warning("Not read: %s: %s", item.source_path, item.reason)
        tally.reject(item)
    if isinstance(teacher, OpenAITeacher) and teacher_config.api == "batch":
        # The uncached papers' requests through the Batch API; the tasks below then answer from them.
        teacher = answer_uncached_in_batches(papers, teacher, bank, config, parameters, stop)
    if teacher is not None:
        extraction_task = extract_paper_task.with_options(
            result_storage=resolve_cache_storage(parameters.cache_dir), refresh_cache=parameters.refresh
        )
        runner: ThreadPoolTaskRunner[Any]
        with (
            ThrottledProgress(len(papers), _progress_artifact(len(papers))) as progress,
            reporting_extraction(len(papers), tally, teacher),  # the command's console, if any
            ThreadPoolTaskRunner(max_workers=parameters.max_concurrency) as runner,
        ):

            def submit_batch(batch: Sequence[Paper]) -> list[PrefectFuture[PaperRecord]]:
                arguments = {
                    "paper": list(batch),
                    "teacher": unmapped(teacher),
                    "question_bank": unmapped(bank),
                    "config": unmapped(config),
                }
                return list(runner.map(extraction_task, arguments))  # type: ignore[arg-type]

            finished = map_in_batches(
                papers, submit_batch, parameters.batch_size, stop=stop, cancel=_cancel_if_not_started
            )
            # Inside the runner's block: a stop writes the outputs before the runner waits for its
            # threads (a request abandoned in flight may hold one for long).
            _take_outcomes(finished, len(papers), parameters.output_directory, tally, aggregates, progress)
    if papers and not local:
        _extract_on_task_workers(parameters, papers, (bank, config, teacher_config), tally, aggregates)

    paths = aggregates.finish(tally)
    create_table_artifact(
        table=tally.table(), key="extraction-papers", description=f"{tally.counts()}; {tally.spent()}"
    )
    logger.info(
        "Extraction done: %s; %s; outputs in %s", tally.counts(), tally.spent(), paths.output_directory
    )
    pacing = teacher.describe_pacing() if teacher is not None else None
    if pacing:
        logger.info("Teacher pacing: %s", pacing)
    output_mode = teacher.settled_output_mode if teacher else None
    return tally.summary(discovery, paths).model_copy(
        update={"output_mode": output_mode, "teacher_pacing": pacing}
    )


def _extract_on_task_workers(
    parameters: ExtractParameters,
    papers: Sequence[Paper],
    request: tuple[QuestionBank, ExtractionConfig, TeacherConfig],
    tally: RunTally,
    aggregates: LiveAggregates,
) -> None:
    """The papers as background task runs for `methyl-distill extract-worker` processes
    (`tasks/extraction_workers.py`), their outcomes taken as in the local path."""
    from methyl_distill.tasks.extraction_workers import TaskWorkerRuns, teacher_for_workers

    bank, config, teacher_config = request
    stop = PROCESS_STOP
    runs = TaskWorkerRuns(
        bank,
        config,
        teacher_for_workers(teacher_config),
        resolve_cache_storage(parameters.cache_dir),
        refresh=parameters.refresh,
        stop=stop,
    )
    with ThrottledProgress(len(papers), _progress_artifact(len(papers))) as progress, runs:
        finished = map_in_batches(
            papers, runs.submit_batch, parameters.batch_size, stop=stop, cancel=runs.cancel_if_not_started
        )
        runs_as_futures = ((paper, cast(PrefectFuture[PaperRecord], run)) for paper, run in finished)
        _take_outcomes(runs_as_futures, len(papers), parameters.output_directory, tally, aggregates, progress)


def _take_outcomes(
    finished: Iterable[tuple[Paper, PrefectFuture[PaperRecord]]],
    total: int,
    output_directory: str,
    tally: RunTally,
    aggregates: LiveAggregates,
    progress: ThrottledProgress,
) -> None:
    """Count each paper as its run finishes (a record, from the cache or not, or a failure), write its
    processed file at once and the aggregates when due; after a stop, write what was finished and
    raise `ExtractionStopped`."""
    stop = PROCESS_STOP
    done = 0
    for paper, future in finished:
        outcome = paper_outcome(future)
        if outcome is None:
            continue  # stopped before it was done: neither cached nor a failure
        done += 1
        if isinstance(outcome, FailureRecord):
            tally.fail(paper, outcome)
        else:
            record, from_cache = outcome
            # Visible at once (written atomically), and in the aggregates.
            write_processed_files(output_directory, tally.finish(paper, record, from_cache=from_cache))
        aggregates.paper_done(paper, tally)
        progress.advance()
    if stop.is_requested and done < total:
        aggregates.finish(tally, stopped=True)
        get_run_logger().warning("Stopped by %s: %s; %s", stop.reason, tally.counts(), tally.spent())
        raise ExtractionStopped(stop.reason, done, total - done)


def _cancel_if_not_started(future: PrefectFuture[PaperRecord]) -> bool:
    wrapped = getattr(future, "wrapped_future", None)  # the thread pool's concurrent future
    return bool(wrapped is not None and wrapped.cancel())


def _progress_artifact(total: int) -> Any:
    """A Prefect progress artifact and the function that updates it."""
    artifact_id = create_progress_artifact(
        progress=0.0, key="extraction-progress", description=f"Papers extracted or failed, of {total}"
    )
    return lambda percent: update_progress_artifact(artifact_id, progress=percent)  # type: ignore[arg-type]
