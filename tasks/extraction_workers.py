"""Extraction on Prefect task workers: one run's papers spread over many processes or machines.

Why task workers (`prefect.task_worker`), not sub-deployments per shard: a task worker is a plain
long-lived process (`methyl-distill extract-worker`) that serves the extraction task; the flow
submits one background task run per paper (`Task.apply_async`) and Prefect's server hands each to
whichever worker is free, so the load balances itself paper by paper, a worker added half way takes
work at once, and the flow keeps what it has in the local path: one outline, one progress artifact,
one set of output files written as papers finish. Shards would fix the split in advance and need a
second flow to merge their outputs.

What is shared, and how:
- the budget: every worker's teacher reserves on the Prefect global concurrency limit
  (`PrefectTokenBucket`); the flow refuses `bucket_backend=local` and turns `auto` into `prefect`;
- the cache: the workers cache where the flow caches (the same `METHYL_DISTILL_CACHE_DIR` on a
  shared or identical path, or one `METHYL_DISTILL_CACHE_STORAGE_BLOCK`), keyed exactly as in the
  local path (`extraction_cache_key`), so a paper extracted by any worker, or locally, is never
  requested again. Prefect also keeps each run's parameters there (`parameters/<id>`, deleted by the
  flow once the run is over), so a worker with another storage cannot read them: Prefect then deletes
  the run and the flow reports the paper as failed with that reason;
- the key: never. The flow sends the `TeacherConfig` (which holds no key; credentials in the base URL
  are redacted when it is serialised, and a worker puts back its own `OPENAI_BASE_URL` when it
  matches); each worker builds one teacher per configuration with the key from its own environment,
  `.env` or Secret block.

Outcomes travel as in the local path: a record (cached or not), a paper's failure (raised as
`PaperFailedOnWorker`, whose message is the `FailureRecord` as JSON, because Prefect's JSON serializer
keeps only an exception's type and message), or a stop (`TeacherStopped`). Stops:
- the flow stops (Ctrl-C): it labels its flow run `methyl-distill.stopping`, cancels the runs no
  worker has started, and waits the grace period for those in flight; a worker refuses any run of a
  flow run that is stopping or over, before any request;
- a worker stops (Ctrl-C, SIGTERM from a pod's end): it takes no further run, its teacher sends no
  new request, and the papers it had not finished end as `TeacherStopped`; the flow submits those
  again (at most `MAX_RESUBMITS` times), for another worker to take.

The flow learns the runs' ends by reading their states from the API in bulk (`POLL_S`), not from
Prefect's event stream, so no event dropped by a busy server leaves it waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from methyl_distill.tasks.extraction import (
    INFRASTRUCTURE_RETRIES,
    PaperExtractionFailed,
    _retry_unless_paper_failed,
    resolve_cache_storage,
)
from prefect import Task, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterId
from prefect.context import FlowRunContext, TaskRunContext
from prefect.states import Cancelled, State

from methyl_distill.extraction.extract import ExtractionConfig, extract_paper, extraction_cache_key
from methyl_distill.extraction.papers import Paper
from methyl_distill.extraction.question_bank import QuestionBank
from methyl_distill.extraction.records import FailureRecord, PaperRecord
from methyl_distill.extraction.stopping import PROCESS_STOP, RunStop
from methyl_distill.teacher.config import TeacherConfig, redact_endpoint, teacher_config_from_environment
from methyl_distill.teacher.openai_client import OpenAITeacher, TeacherStopped, build_teacher

logger = logging.getLogger(__name__)

# The label a stopping flow run carries: its workers start none of its papers any more.
STOP_LABEL = "methyl-distill.stopping"
# How often the flow reads the states of the runs it waits for.
POLL_S = 0.5
# How often it also looks for runs that vanished (deleted by a worker that could not read them).
VANISHED_CHECK_S = 10.0
# How long without any paper ending before the flow says it may be waiting for absent workers.
QUIET_WARNING_S = 120.0
# How many times a paper left unfinished by a stopping worker is submitted again.
MAX_RESUBMITS = 3
# The most task runs read per API call (the server's page size).
READ_PAGE = 200
# How long a worker trusts what it read about a flow run's stop.
STOP_CHECK_TTL_S = 1.0


class PaperFailedOnWorker(PaperExtractionFailed):
    """`PaperExtractionFailed` that survives Prefect's JSON serializer, which stores an exception
    as its type and `str()`: the message is the failure record as JSON, and the constructor takes
    either the record or that JSON."""

    def __init__(self, failure: FailureRecord | str) -> None:
        record = FailureRecord.model_validate_json(failure) if isinstance(failure, str) else failure
        super().__init__(record)

    def __str__(self) -> str:
        return self.failure.model_dump_json()

    def __reduce__(self) -> tuple[Any, ...]:
        return (PaperFailedOnWorker, (self.failure,))


# -- the worker's side ----------------------------------------------------------------------------

_teachers: dict[str, OpenAITeacher] = {}
_teachers_lock = threading.Lock()
_stop_checks: dict[UUID, tuple[float, bool]] = {}


def teacher_with_own_endpoint(config: TeacherConfig) -> TeacherConfig:
    """`config` as a worker uses it: a base URL whose credentials were redacted in transit is
    replaced by this worker's own `OPENAI_BASE_URL` when that is the same endpoint."""
    if config.base_url is None or "***" not in config.base_url:
        return config
    own = teacher_config_from_environment().base_url
    if own is not None and redact_endpoint(own) == config.base_url:
        return config.model_copy(update={"base_url": own})
    raise ValueError(
        f"the run's teacher endpoint {config.base_url} carries credentials, which are never sent to "
        "workers: set OPENAI_BASE_URL (with them) in this worker's environment"
    )


def worker_teacher(config: TeacherConfig) -> OpenAITeacher:
    """This process's teacher for `config`: built once, with the key from this worker's own
    environment, `.env` or Secret block, and stopped by this process's stop."""
    config = teacher_with_own_endpoint(config)
    identity = config.model_dump_json()
    with _teachers_lock:
        teacher = _teachers.get(identity)
        if teacher is None:
            teacher = build_teacher(config, stop=PROCESS_STOP.requested, abandon=PROCESS_STOP.abandon)
            _teachers[identity] = teacher
        return teacher


def flow_run_is_stopping(flow_run_id: UUID | None) -> bool:
    """Whether the flow run that submitted a paper is stopping (labelled `STOP_LABEL`) or over;
    read at most once a second per flow run."""
    if flow_run_id is None:
        return False
    now = time.monotonic()
    known = _stop_checks.get(flow_run_id)
    if known is not None and now - known[0] < STOP_CHECK_TTL_S:
        return known[1]
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
    stopping = STOP_LABEL in (flow_run.labels or {}) or bool(flow_run.state and flow_run.state.is_final())
    _stop_checks[flow_run_id] = (now, stopping)
    return stopping


def _extract_on_worker(
    paper: Paper, question_bank: QuestionBank, config: ExtractionConfig, teacher_config: TeacherConfig
) -> PaperRecord:
    context = TaskRunContext.get()
    if PROCESS_STOP.is_requested or (
        context is not None and flow_run_is_stopping(context.task_run.flow_run_id)
    ):
        raise TeacherStopped("the run or this worker is stopping: the paper was not started")
    teacher = worker_teacher(teacher_config)
    outcome = extract_paper(paper, teacher, question_bank, config)
    if isinstance(outcome, FailureRecord):
        redacted = outcome.model_copy(
            update={
                "reason": teacher.redact(outcome.reason),
                "raw_output": teacher.redact(outcome.raw_output) if outcome.raw_output else None,
            }
        )
        raise PaperFailedOnWorker(redacted)
    return outcome


def worker_task_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """The local path's key (`extraction_cache_key`): a paper cached by either path is cached for both."""
    return extraction_cache_key(
        parameters["paper"], parameters["question_bank"], parameters["teacher_config"], parameters["config"]
    )


_WORKER_TASK_OPTIONS: dict[str, Any] = {
    "task_run_name": "extract-{paper.file_id}",
    "cache_key_fn": worker_task_cache_key,
    "persist_result": True,
    "result_serializer": "json",
    "retries": INFRASTRUCTURE_RETRIES,
    "retry_delay_seconds": [2, 10],
    "retry_condition_fn": _retry_unless_paper_failed,
}


@task(name="extract-paper-on-worker", **_WORKER_TASK_OPTIONS)
def extract_paper_on_worker(
    paper: Paper, question_bank: QuestionBank, config: ExtractionConfig, teacher_config: TeacherConfig
) -> PaperRecord:
    """Extract one paper on a task worker; raises `PaperFailedOnWorker` (not cached) when it cannot be."""
    return _extract_on_worker(paper, question_bank, config, teacher_config)


# A task of its own for `refresh` runs: a task run carries its parameters to the worker, not its
# task options, and the worker's task object decides whether the cache is read.
@task(name="re-extract-paper-on-worker", refresh_cache=True, **_WORKER_TASK_OPTIONS)
def re_extract_paper_on_worker(
    paper: Paper, question_bank: QuestionBank, config: ExtractionConfig, teacher_config: TeacherConfig
) -> PaperRecord:
    """`extract_paper_on_worker` that ignores the cache (and refreshes it)."""
    return _extract_on_worker(paper, question_bank, config, teacher_config)


def served_tasks(cache_dir: str | None = None) -> list[Task[..., PaperRecord]]:
    """The tasks a worker serves, caching where `cache_dir` (else the environment) says."""
    storage = resolve_cache_storage(cache_dir)
    return [
        extract_paper_on_worker.with_options(result_storage=storage),
        re_extract_paper_on_worker.with_options(result_storage=storage),
    ]


def serve_extraction(limit: int, cache_dir: str | None = None, stop: RunStop = PROCESS_STOP) -> None:
    """Serve the extraction tasks until `stop` is requested: at most `limit` papers at a time. On a
    stop no further run is taken, and this returns once the runs started have ended (their teacher
    sends no new request; requests in flight get the stop's grace period)."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise ValueError(
            "a task worker needs the Prefect server the flow uses: set PREFECT_API_URL (a temporary "
            "server of one command cannot hand it work)"
        )
    tasks = served_tasks(cache_dir)
    logger.info(
        "serving %s: up to %d paper(s) at a time; cache %s",
        ", ".join(served.name for served in tasks),
        limit,
        resolve_cache_storage(cache_dir),
    )
    asyncio.run(_serve_until_stopped(tasks, limit, stop))


async def _serve_until_stopped(tasks: Sequence[Task[..., Any]], limit: int, stop: RunStop) -> None:
    """Prefect's `TaskWorker` until `stop`, then an end that loses no paper.

    The worker acknowledges a run to the server as it receives it, then waits for a free slot of its
    `limit`: a run received while every slot is taken is held, and ending the subscription then
    would lose it (the server never hands it out again). So on a stop the subscription is ended only
    once a slot is free; until then the held run gets the slot, refuses at once (`TeacherStopped`:
    this process is stopping) and the flow submits it again for another worker. Ending the
    subscription cancels the waits for the runs in flight (Prefect logs each), not the runs: the
    task worker's thread pool waits for them on the way out."""
    from prefect.task_worker import TaskWorker

    worker = TaskWorker(*tasks, limit=limit)
    serving = asyncio.create_task(worker.astart())
    while not serving.done() and not stop.is_requested:
        await asyncio.sleep(0.2)
    if not serving.done():
        logger.warning("stopping: no further paper is taken; waiting for the papers started")
        while not serving.done() and worker.available_tasks == 0:
            await asyncio.sleep(0.05)
        serving.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await serving


# -- the flow's side ------------------------------------------------------------------------------


class WorkerPaperRun:
    """The future of one paper extracted on a task worker: what `map_in_batches` and `paper_outcome`
    need (`add_done_callback`, `wait`, `state`, `result`). Resubmissions after a worker's stop keep
    the same future."""

    def __init__(self, paper: Paper, task_run_id: UUID, parameters_id: UUID | None) -> None:
        self.paper = paper
        self.task_run_id = task_run_id
        self.parameters_id = parameters_id
        self.submissions = 1
        self._state: State[Any] | None = None
        self._done = threading.Event()
        self._callbacks: list[Callable[[WorkerPaperRun], None]] = []
        self._lock = threading.Lock()

    @property
    def state(self) -> State[Any]:
        if self._state is None:
            raise RuntimeError(f"task run {self.task_run_id} has not ended")
        return self._state

    def result(self, raise_on_failure: bool = True) -> Any:
        return self.state.result(raise_on_failure=raise_on_failure, _sync=True)  # type: ignore[call-overload]

    def wait(self, timeout: float | None = None) -> None:
        self._done.wait(timeout)

    def add_done_callback(self, fn: Callable[[WorkerPaperRun], None]) -> None:
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(fn)
                return
        fn(self)

    def finish(self, state: State[Any]) -> None:
        with self._lock:
            self._state = state
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self)


class TaskWorkerRuns:
    """Submits papers as background task runs and follows them to their ends (a context manager:
    the following thread runs inside). See the module docstring."""

    def __init__(
        self,
        question_bank: QuestionBank,
        config: ExtractionConfig,
        teacher_config: TeacherConfig,
        cache_storage: Path | str,
        *,
        refresh: bool = False,
        stop: RunStop = PROCESS_STOP,
    ) -> None:
        self._arguments = {"question_bank": question_bank, "config": config, "teacher_config": teacher_config}
        # Prefect stores a run's parameters where the submitting task object keeps results, with its
        # serializer, and with them the flow run's context, which JSON cannot hold: pickle here (the
        # worker reads with the serializer stored alongside; its results stay JSON).
        self._task = (re_extract_paper_on_worker if refresh else extract_paper_on_worker).with_options(
            result_storage=cache_storage, result_serializer="pickle"
        )
        self._parameters_folder = cache_storage / "parameters" if isinstance(cache_storage, Path) else None
        self._stop = stop
        self._pending: dict[UUID, WorkerPaperRun] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="task-worker-runs", daemon=True)
        self._stop_announced = False
        self.resubmitted = 0

    def __enter__(self) -> TaskWorkerRuns:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._closed.set()
        self._thread.join(timeout=10)

    def submit_batch(self, papers: Sequence[Paper]) -> list[WorkerPaperRun]:
        runs = [WorkerPaperRun(paper, *self._create_run(paper)) for paper in papers]
        with self._lock:
            self._pending.update((run.task_run_id, run) for run in runs)
        return runs

    def cancel_if_not_started(self, run: WorkerPaperRun) -> bool:
        """After a stop: mark the flow run as stopping (once) and cancel `run` unless a worker has
        taken it; True when cancelled (the paper is then neither done nor failed)."""
        self._announce_stop()
        with get_client(sync_client=True) as client:
            task_run = client.read_task_run(run.task_run_id)
            if task_run.state is None or not task_run.state.is_scheduled():
                return False
            client.set_task_run_state(run.task_run_id, Cancelled(message="the run is stopping"), force=True)
        with self._lock:
            self._pending.pop(run.task_run_id, None)
        return True

    def _announce_stop(self) -> None:
        if self._stop_announced:
            return
        self._stop_announced = True
        context = FlowRunContext.get()
        if context is None or context.flow_run is None:
            return
        with get_client(sync_client=True) as client:
            client.update_flow_run_labels(context.flow_run.id, {STOP_LABEL: self._stop.reason})

    def _create_run(self, paper: Paper) -> tuple[UUID, UUID | None]:
        """A background task run for `paper`: `Task.apply_async`, keeping what it drops, the id of the
        run's parameters file (Prefect never deletes those; `_discard_parameters` does), and without
        its log line per paper."""
        from prefect.utilities.asyncutils import run_coro_as_sync
        from prefect.utilities.engine import emit_task_run_state_change_event

        task_run = run_coro_as_sync(
            self._task.create_run(parameters={"paper": paper, **self._arguments}, deferred=True)
        )
        assert task_run is not None and task_run.state is not None
        emit_task_run_state_change_event(
            task_run=task_run, initial_state=None, validated_state=task_run.state
        )
        return task_run.id, task_run.state.state_details.task_parameters_id

    def _follow(self) -> None:
        last_vanished_check = last_change = time.monotonic()
        last_waiting = 0
        while not self._closed.wait(POLL_S):
            with self._lock:
                waiting = list(self._pending)
            if len(waiting) != last_waiting:
                last_waiting, last_change = len(waiting), time.monotonic()
            elif waiting and time.monotonic() - last_change > QUIET_WARNING_S:
                last_change = time.monotonic()
                logger.warning(
                    "no paper ended for %.0f s, %d waiting: are `methyl-distill extract-worker` processes "
                    "running against this Prefect server?",
                    QUIET_WARNING_S,
                    len(waiting),
                )
            if not waiting:
                continue
            check_vanished = time.monotonic() - last_vanished_check > VANISHED_CHECK_S
            if check_vanished:
                last_vanished_check = time.monotonic()
            try:
                self._read_states(waiting, check_vanished)
            except Exception as exc:  # a passing API error: read again at the next poll
                logger.warning("could not read the states of the workers' task runs: %s", exc)

    def _read_states(self, waiting: list[UUID], check_vanished: bool) -> None:
        found: set[UUID] = set()
        with get_client(sync_client=True) as client:
            for start in range(0, len(waiting), READ_PAGE):
                page = waiting[start : start + READ_PAGE]
                for task_run in client.read_task_runs(
                    task_run_filter=TaskRunFilter(id=TaskRunFilterId(any_=page)), limit=len(page)
                ):
                    found.add(task_run.id)
                    if task_run.state is not None and task_run.state.is_final():
                        self._ended(task_run.id, task_run.state)
        if check_vanished:
            for task_run_id in set(waiting) - found:
                self._vanished(task_run_id)

    def _ended(self, task_run_id: UUID, state: State[Any]) -> None:
        with self._lock:
            run = self._pending.pop(task_run_id, None)
        if run is None:
            return
        self._discard_parameters(run)
        if state.is_failed() and not self._stop.is_requested:
            error = state.result(raise_on_failure=False, _sync=True)  # type: ignore[call-overload]
            if isinstance(error, TeacherStopped) and run.submissions <= MAX_RESUBMITS:
                # Its worker stopped: another one takes it.
                logger.warning(
                    "%s: its worker stopped before it was done; submitted again", run.paper.file_id
                )
                run.task_run_id, run.parameters_id = self._create_run(run.paper)
                run.submissions += 1
                self.resubmitted += 1
                with self._lock:
                    self._pending[run.task_run_id] = run
                return
            if isinstance(error, TeacherStopped):  # not a stop of this run: the paper is not done
                state = self._failed(run, f"its workers stopped {run.submissions} times before it was done")
        run.finish(state)

    def _failed(self, run: WorkerPaperRun, reason: str) -> State[Any]:
        from prefect.states import Failed

        failure = FailureRecord(
            file_id=run.paper.file_id, source_path=run.paper.source_path, stage="request", reason=reason
        )
        return Failed(data=PaperFailedOnWorker(failure))

    def _discard_parameters(self, run: WorkerPaperRun) -> None:
        """Delete an ended run's parameters file (the paper's text, the bank) from a local cache
        folder. A storage block has no generic delete: there they stay."""
        if self._parameters_folder is not None and run.parameters_id is not None:
            (self._parameters_folder / str(run.parameters_id)).unlink(missing_ok=True)

    def _vanished(self, task_run_id: UUID) -> None:
        with self._lock:
            run = self._pending.pop(task_run_id, None)
        if run is None:
            return
        reason = (
            f"task run {task_run_id} was deleted: a worker could not read its parameters; the workers "
            "must cache where the flow does (the same METHYL_DISTILL_CACHE_DIR on a shared path, or "
            "METHYL_DISTILL_CACHE_STORAGE_BLOCK)"
        )
        run.finish(self._failed(run, reason))


def teacher_for_workers(config: TeacherConfig) -> TeacherConfig:
    """`config` as the workers get it: with the budget they all share (the Prefect global concurrency
    limit), and as JSON would carry it, even though Prefect pickles a run's parameters: credentials
    in the base URL redacted (a worker puts back its own), nothing excluded from dumps."""
    if config.bucket_backend == "local":
        raise ValueError(
            "bucket_backend=local gives every task worker a whole budget of its own: use prefect (or "
            "auto) with workers, so that they share the Prefect global concurrency limit"
        )
    if config.api == "batch":
        raise ValueError(
            "the Batch API run submits its batches from the flow itself: use it without task workers"
        )
    if config.api_key_source == "session":
        raise ValueError(
            "the embedded teacher's per-run key stays in this process: it cannot be used by task workers"
        )
    shared = config.model_copy(update={"bucket_backend": "prefect"})
    return TeacherConfig.model_validate_json(shared.model_dump_json())
