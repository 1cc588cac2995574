"""OpenAI's Batch API, as plain code: requests in, one result per request out.

The model. A *request* is one chat-completion body (exactly what the online client would send) with
a `custom_id`; a *job* is one batch: its requests written as JSONL, uploaded with the files API
(`purpose="batch"`), submitted to `/v1/chat/completions` with the 24 h window, polled, and its
output and error files downloaded when it ends. `BatchRunner.run(requests)` returns one
`BatchResult` per request: the completion, or why there is none (a failed line, a line missing from
both files, an expired or cancelled job). It never validates or re-asks: that is the caller's
(`methyl_distill.extraction.batch_extraction`), which validates every completion with the online
client's own code and sends the re-asks as the next call's requests.

The enqueued-token limit (`TeacherConfig.batch_queue_tokens`): OpenAI counts the prompt tokens of
every request of a model's batches that are not finished yet, and fails a batch that would go over
with `token_limit_exceeded`. The runner packs requests into jobs that fit the room its own open jobs
leave, submits the next as earlier ones end, and takes a `token_limit_exceeded` job (other work on the
same organisation fills the queue too) as a sign to wait: its requests are submitted again once one of
ours has ended, or, with nothing of ours open, after `batch_poll_max_s` in a job half as large. A
request that alone exceeds the queue (or is refused alone) can never be batched: it comes back as
`EXCEEDS_QUEUE` for the caller to send online.

Resuming (`BatchStateStore`): every job is written to the state (ids, custom ids, tokens) as soon as
it is created, and again when it ends. A runner started over the same state polls the jobs that are
still open instead of submitting their requests again, and downloads the results of the ended ones
again, handing them out in the order they came (a line that failed in one job and succeeded in the
next replays as exactly that), so a killed run pays for nothing twice.

Stopping: when `stop` is set, the runner cancels its open jobs (saying so in the log first), marks
them cancelled in the state (their finished lines are downloaded by the next run) and returns what it
has.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import openai
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from methyl_distill.teacher.config import TeacherConfig

logger = logging.getLogger(__name__)

BATCH_ENDPOINT: Literal["/v1/chat/completions"] = "/v1/chat/completions"
COMPLETION_WINDOW: Literal["24h"] = "24h"
# OpenAI's limits of one input file: 50,000 requests and 200 MB; a margin on the bytes.
MAX_REQUESTS_PER_JOB = 50_000
MAX_JOB_BYTES = 190 * 1024 * 1024

# Why a request has no completion (`BatchResult.error_code`) beyond the codes OpenAI gives.
EXCEEDS_QUEUE = "exceeds_queue_limit"  # alone larger than the enqueued-token limit: never batched
NO_RESULT = "no_result"  # in neither the output nor the error file of its ended job
TOKEN_LIMIT_EXCEEDED = "token_limit_exceeded"

OPEN_STATUSES = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
JobStatus = Literal[
    "validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"
]


@dataclass(frozen=True)
class BatchRequest:
    """One line of a batch input file: the online request body, its custom id and its prompt tokens
    (estimated; what the enqueued-token limit counts)."""

    custom_id: str
    body: dict[str, Any]
    prompt_tokens: int

    def line(self) -> str:
        return json.dumps(
            {"custom_id": self.custom_id, "method": "POST", "url": BATCH_ENDPOINT, "body": self.body},
            ensure_ascii=False,
        )


@dataclass(frozen=True)
class BatchResult:
    """What came back for one request: a completion, or an error (`error_code`, `status_code`)."""

    custom_id: str
    completion: ChatCompletion | None = None
    error: str | None = None
    error_code: str | None = None
    status_code: int | None = None

    @property
    def retryable(self) -> bool:
        """Whether asking again may help: server errors, 408/429, lost or expired lines; not a 4xx
        that says what is wrong with the request itself."""
        if self.completion is not None:
            return False
        if self.status_code is None:
            return True
        return self.status_code in (408, 429) or self.status_code >= 500


def request_digest(body: dict[str, Any]) -> str:
    """A digest of a request body: identical requests share it (and their answer)."""
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def flatten_request_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """The JSON body of the online client's request arguments: the SDK's `extra_body` (a llama.cpp
    grammar) merged into the top level, as the SDK merges it when it sends the request."""
    body = {name: value for name, value in arguments.items() if name != "extra_body"}
    body.update(arguments.get("extra_body") or {})
    return body


# -- the state of a run's jobs ------------------------------------------------------------------------


class BatchJob(BaseModel):
    """One submitted batch, as the state file keeps it."""

    model_config = ConfigDict(extra="forbid")

    id: str
    input_file_id: str
    custom_ids: list[str]
    prompt_tokens: int = Field(description="Estimated prompt tokens: its share of the enqueued-token limit.")
    status: JobStatus = "validating"
    created_at: float = Field(default_factory=time.time)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


class BatchState(BaseModel):
    """The jobs of one extraction's batch run, in the order they were created."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str = Field(description="The endpoint (no credentials) the jobs were submitted to.")
    model: str
    jobs: list[BatchJob] = Field(default_factory=list)
    answered: bool = Field(
        default=False, description="Every request of the run had its result: nothing left to resume."
    )


class BatchStateStore(Protocol):
    """Where a runner keeps its `BatchState` (a file written atomically; memory in tests)."""

    def load(self) -> BatchState | None: ...

    def save(self, state: BatchState) -> None: ...


class MemoryStateStore:
    """A state store that lives as long as the object (no resume across processes)."""

    def __init__(self, state: BatchState | None = None) -> None:
        self.state = state

    def load(self) -> BatchState | None:
        return self.state.model_copy(deep=True) if self.state is not None else None

    def save(self, state: BatchState) -> None:
        self.state = state.model_copy(deep=True)


# -- reading result files -----------------------------------------------------------------------------


def parse_result_lines(text: str, source: str) -> list[BatchResult]:
    """The results in an output or error file. A line that is no JSON object or has no custom id is
    logged and skipped: its request then counts as missing (`NO_RESULT`) and is asked again."""
    results = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            custom_id = item["custom_id"]
            if not isinstance(custom_id, str):
                raise TypeError("custom_id is not a string")
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("%s line %d is not a batch result (%s): skipped", source, number, exc)
            continue
        results.append(_result_of(custom_id, item))
    return results


def _result_of(custom_id: str, item: dict[str, Any]) -> BatchResult:
    error = item.get("error")
    response = item.get("response")
    if isinstance(response, dict):
        status = response.get("status_code")
        body = response.get("body")
        if status == 200 and isinstance(body, dict):
            try:
                return BatchResult(custom_id, completion=ChatCompletion.model_validate(body))
            except ValidationError as exc:
                return BatchResult(
                    custom_id,
                    error=f"the body is not a chat completion: {exc.errors()[0]['msg']}",
                    status_code=502,
                )
        detail = body.get("error") if isinstance(body, dict) else None
        message = detail.get("message") if isinstance(detail, dict) else None
        code = detail.get("code") if isinstance(detail, dict) else None
        return BatchResult(
            custom_id,
            error=f"HTTP {status}: {message or body}",
            error_code=code if isinstance(code, str) else None,
            status_code=status if isinstance(status, int) else None,
        )
    if isinstance(error, dict):
        code = error.get("code")
        return BatchResult(
            custom_id,
            error=str(error.get("message") or code or "failed"),
            error_code=code if isinstance(code, str) else None,
        )
    return BatchResult(custom_id, error="a result line with neither response nor error")


# -- progress -----------------------------------------------------------------------------------------


@dataclass
class BatchProgress:
    """What the runner has done so far, for the log and the UI."""

    submitted: int = 0  # jobs created (resumed ones included)
    open: int = 0
    ended: int = 0
    requests: int = 0  # requests asked of this runner
    results: int = 0  # of them, with a result
    token_limit_failures: int = 0
    status_by_job: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        return (
            f"batches: {self.submitted} submitted, {self.open} in progress, {self.ended} done; "
            f"requests: {self.results}/{self.requests} answered"
        )


# -- the runner ---------------------------------------------------------------------------------------


class BatchRunner:
    """Submits, polls and collects batch jobs for one run; see the module docstring."""

    def __init__(
        self,
        client: openai.OpenAI,
        config: TeacherConfig,
        store: BatchStateStore,
        *,
        endpoint: str,
        stop: threading.Event | None = None,
        redact: Callable[[str], str] = lambda text: text,
        on_progress: Callable[[BatchProgress], None] | None = None,
    ) -> None:
        self.client = client
        self.config = config
        self.store = store
        self.stop = stop or threading.Event()
        self.redact = redact
        self.on_progress = on_progress
        self.progress = BatchProgress()
        self.job_token_cap = config.batch_queue_tokens
        # Results downloaded but not handed out yet, per custom id, oldest first (see "Resuming").
        self._unclaimed: dict[str, deque[BatchResult]] = defaultdict(deque)
        self._state = self._load_state(endpoint)

    # -- state ----------------------------------------------------------------------------------
    def _load_state(self, endpoint: str) -> BatchState:
        fresh = BatchState(endpoint=endpoint, model=self.config.model)
        state = self.store.load()
        if state is None:
            return fresh
        if state.endpoint != endpoint or state.model != self.config.model:
            logger.warning(
                "batch state of %s at %s does not match this run (%s at %s): not resumed",
                state.model,
                state.endpoint,
                self.config.model,
                endpoint,
            )
            return fresh
        if state.answered:
            logger.info("the previous batch run had every answer: starting afresh")
            return fresh
        open_jobs = [job.id for job in state.jobs if job.is_open]
        logger.info(
            "resuming %d batch job(s) of an earlier run (%d still open: %s)",
            len(state.jobs),
            len(open_jobs),
            ", ".join(open_jobs) or "none",
        )
        self.progress.submitted = len(state.jobs)
        for job in list(state.jobs):
            try:
                batch = self._retrieve(job.id)
            except openai.NotFoundError:
                logger.warning("batch %s of the earlier run is gone from the endpoint: not resumed", job.id)
                state.jobs.remove(job)
                continue
            if not job.is_open:
                self._collect(job, batch)
        return state

    def _save(self) -> None:
        self.store.save(self._state)

    def mark_answered(self) -> None:
        """Every request of the run has its result: a later run has nothing to resume."""
        self._state.answered = True
        self._save()

    @property
    def jobs(self) -> list[BatchJob]:
        return list(self._state.jobs)

    # -- the loop -------------------------------------------------------------------------------
    def run(self, requests: Sequence[BatchRequest]) -> dict[str, BatchResult]:
        """One result per request (by custom id), or fewer when stopped."""
        wanted = {request.custom_id: request for request in requests}
        self.progress.requests += len(wanted)
        results: dict[str, BatchResult] = {}
        self._claim(wanted, results)
        waiting: list[BatchRequest] = []
        for custom_id, request in wanted.items():
            if custom_id in results or self._in_open_job(custom_id):
                continue
            if request.prompt_tokens > self.config.batch_queue_tokens:
                results[custom_id] = BatchResult(
                    custom_id,
                    error=f"~{request.prompt_tokens} prompt tokens exceed the enqueued-token limit of "
                    f"{self.config.batch_queue_tokens} (TEACHER_BATCH_QUEUE_TOKENS)",
                    error_code=EXCEEDS_QUEUE,
                )
            else:
                waiting.append(request)
        delay = self.config.batch_poll_min_s
        wait_for_an_end = False  # a job was refused for the queue while others of ours hold it
        submit_after = 0.0  # a job was refused for the queue while none of ours held it: back off
        self._report()
        while True:
            if self.stop.is_set():
                self.cancel_open()
                return results
            if not wait_for_an_end and time.monotonic() >= submit_after:
                waiting = self._submit_what_fits(waiting)
            open_jobs = [job for job in self._state.jobs if job.is_open]
            if not open_jobs and not waiting:
                break
            if not open_jobs:  # backing off after a refusal: nothing to poll meanwhile
                self._sleep(max(submit_after - time.monotonic(), 0.0) or delay)
                continue
            self._sleep(delay)
            if self.stop.is_set():
                continue
            changed = False
            for job in open_jobs:
                batch = self._retrieve(job.id)
                if batch.status == job.status:
                    continue
                changed = True
                job.status = batch.status
                if job.is_open:
                    self._save()
                    continue
                if self._failed_for_queue(batch):
                    self.progress.token_limit_failures += 1
                    requeued = [wanted[cid] for cid in job.custom_ids if cid in wanted]
                    logger.warning(
                        "batch %s failed: %s; its %d request(s) wait for room in the queue",
                        job.id,
                        TOKEN_LIMIT_EXCEEDED,
                        len(requeued),
                    )
                    self._state.jobs.remove(job)
                    self._save()
                    if any(other.is_open for other in self._state.jobs):
                        wait_for_an_end = True
                    else:  # others' batches fill the queue: later, and smaller
                        submit_after = time.monotonic() + self.config.batch_poll_max_s
                        self.job_token_cap = max(1, job.prompt_tokens // 2)
                        if len(requeued) == 1:  # not even one request fits: it goes online
                            request = requeued[0]
                            results[request.custom_id] = BatchResult(
                                request.custom_id,
                                error="the enqueued-token limit left no room for it",
                                error_code=EXCEEDS_QUEUE,
                            )
                            requeued = []
                    waiting = requeued + waiting
                    continue
                self._save()
                self._collect(job, batch)
                wait_for_an_end = False
            self._claim(wanted, results)
            if changed:
                delay = self.config.batch_poll_min_s
                self._report()
            else:
                delay = min(self.config.batch_poll_max_s, delay * 1.5)
        self._claim(wanted, results)
        self._report()
        return results

    def _claim(self, wanted: dict[str, BatchRequest], results: dict[str, BatchResult]) -> None:
        for custom_id in wanted:
            if custom_id not in results and self._unclaimed.get(custom_id):
                results[custom_id] = self._unclaimed[custom_id].popleft()
                self.progress.results += 1

    def _in_open_job(self, custom_id: str) -> bool:
        return any(job.is_open and custom_id in job.custom_ids for job in self._state.jobs)

    def _sleep(self, seconds: float) -> None:
        self.stop.wait(seconds)

    # -- submitting -----------------------------------------------------------------------------
    def _room(self) -> int:
        held = sum(job.prompt_tokens for job in self._state.jobs if job.is_open)
        return min(self.config.batch_queue_tokens - held, self.job_token_cap)

    def _submit_what_fits(self, waiting: list[BatchRequest]) -> list[BatchRequest]:
        """Create jobs from the front of `waiting` while the queue has room; returns the rest."""
        while waiting and not self.stop.is_set():
            room = self._room()
            chosen: list[BatchRequest] = []
            tokens = size = 0
            for request in waiting:
                line_size = len(request.line().encode("utf-8")) + 1
                if (
                    tokens + request.prompt_tokens > room
                    or len(chosen) >= MAX_REQUESTS_PER_JOB
                    or size + line_size > MAX_JOB_BYTES
                ):
                    break
                chosen.append(request)
                tokens += request.prompt_tokens
                size += line_size
            if not chosen:
                if any(job.is_open for job in self._state.jobs):
                    return waiting  # the next one fits once one of ours has ended
                # Nothing of ours holds the queue (the cap was halved after a refusal): one alone.
                chosen, tokens = [waiting[0]], waiting[0].prompt_tokens
            self._create_job(chosen, tokens)
            waiting = waiting[len(chosen) :]
        return waiting

    def _create_job(self, requests: Sequence[BatchRequest], tokens: int) -> None:
        data = "".join(request.line() + "\n" for request in requests).encode("utf-8")
        number = len(self._state.jobs) + 1
        uploaded = self.client.files.create(
            file=(f"methyl-distill-batch-{number}.jsonl", data, "application/jsonl"), purpose="batch"
        )
        batch = self.client.batches.create(
            input_file_id=uploaded.id,
            endpoint=BATCH_ENDPOINT,
            completion_window=COMPLETION_WINDOW,
            metadata={"source": "methyl-distill extract", "requests": str(len(requests))},
        )
        self._state.jobs.append(
            BatchJob(
                id=batch.id,
                input_file_id=uploaded.id,
                custom_ids=[request.custom_id for request in requests],
                prompt_tokens=tokens,
                status=batch.status,
            )
        )
        self._save()  # at once: a run killed from here on polls this job instead of paying again
        self.progress.submitted += 1
        logger.info("submitted batch %s: %d request(s), ~%d prompt tokens", batch.id, len(requests), tokens)

    # -- polling and collecting -----------------------------------------------------------------
    def _retrieve(self, batch_id: str) -> Any:
        return self.client.batches.retrieve(batch_id)

    @staticmethod
    def _failed_for_queue(batch: Any) -> bool:
        if batch.status != "failed":
            return False
        errors = getattr(getattr(batch, "errors", None), "data", None) or []
        return any(getattr(error, "code", None) == TOKEN_LIMIT_EXCEEDED for error in errors)

    def _collect(self, job: BatchJob, batch: Any) -> None:
        """Download an ended job's output and error files; every request of it gets one result."""
        found: dict[str, BatchResult] = {}
        for file_id, kind in ((batch.output_file_id, "output"), (batch.error_file_id, "error")):
            if not file_id:
                continue
            text = self.client.files.content(file_id).text
            for result in parse_result_lines(text, f"batch {job.id} {kind} file {file_id}"):
                if result.custom_id in job.custom_ids and result.custom_id not in found:
                    found[result.custom_id] = result
        reason = self._why_missing(batch)
        for custom_id in job.custom_ids:
            line = found.get(custom_id)
            if line is None:
                if batch.status == "cancelled":
                    continue  # never run (we cancelled it): no failure, asked again as if never sent
                line = BatchResult(custom_id, error=reason, error_code=NO_RESULT)
            self._unclaimed[custom_id].append(line)
        failed = sum(1 for result in found.values() if result.completion is None)
        logger.info(
            "batch %s %s: %d answered, %d failed, %d without a result",
            job.id,
            batch.status,
            len(found) - failed,
            failed,
            len(job.custom_ids) - len(found),
        )

    def _why_missing(self, batch: Any) -> str:
        errors = getattr(getattr(batch, "errors", None), "data", None) or []
        detail = "; ".join(
            self.redact(f"{error.code}: {error.message}") for error in errors[:3] if error is not None
        )
        return f"no result in batch {batch.id} ({batch.status}{': ' + detail if detail else ''})"

    # -- stopping -------------------------------------------------------------------------------
    def cancel_open(self) -> list[str]:
        """Cancel every open job of this run (logged first); returns their ids."""
        open_jobs = [job for job in self._state.jobs if job.is_open and job.status != "cancelling"]
        if not open_jobs:
            return []
        ids = [job.id for job in open_jobs]
        logger.warning(
            "stopping: cancelling %d submitted batch(es) (%s); lines already done are kept and used by the "
            "next run",
            len(ids),
            ", ".join(ids),
        )
        for job in open_jobs:
            try:
                batch = self.client.batches.cancel(job.id)
                job.status = batch.status
            except openai.OpenAIError as exc:
                logger.warning("could not cancel batch %s: %s", job.id, self.redact(str(exc)))
        self._save()
        return ids

    def _report(self) -> None:
        jobs = self._state.jobs
        self.progress.open = sum(1 for job in jobs if job.is_open)
        self.progress.ended = sum(1 for job in jobs if not job.is_open)
        self.progress.status_by_job = {job.id: job.status for job in jobs}
        if self.on_progress is not None:
            try:
                self.on_progress(self.progress)
            except Exception as exc:  # a progress display is not worth failing a run for
                logger.warning("could not report batch progress: %s", exc)
