"""Extraction through OpenAI's Batch API (`--teacher_api batch`): the same records, at half the price.

The idea: `extract_paper` is run unchanged, with a teacher that answers from batch results instead of
HTTP requests (`BatchReplayTeacher`). So chunking, splitting a request that is too large, halving a
chunk whose reply is cut off, merging and checking every quote against the paper are exactly those of
the online path, and so are the records, the failures and the cache entries.

In rounds, for the papers the Prefect cache does not hold:

1. *Collect*: run `extract_paper` with the replay teacher in collecting mode. Every request it would
   send whose answer is not known yet (built by the online client's own `_request_arguments`, so the
   body is the one an online run sends) is noted with a `custom_id`, and a placeholder answer lets
   the paper's other chunks be asked in the same round.
2. *Ask*: the noted requests go to the Batch API (`teacher.batch_api.BatchRunner`: split to fit the
   enqueued-token limit, polled, results downloaded). In a follow-up round with no more than
   `batch_online_max_requests` requests left, they are sent online instead (one attempt each, through
   the online client: retries, budget and all).
3. *Record*: every completion is validated with the online client's `_validate`; the outcome (parsed,
   or the raw text and the error, or a failed line) is kept under a digest of the request body.

Replaying a paper then meets either a valid answer, or an invalid one, whose re-ask (the online
client's `_reask_messages`) is the next round's request, or a failed line, asked again. Re-asks are
bounded by `max_reasks` as online; a failed line is asked again up to `max_reasks` times (a 4xx that
is the request's own fault is not asked again). The rounds end when no paper has a request left.

Then the flow maps its extraction task over every paper as online, with the replay teacher: a cached
paper comes from the cache, every other one is "extracted" from its answers, without a request, and
lands in the Prefect cache under the same key an online run uses. A paper extracted online is
therefore not asked again in batch mode, and the other way round.

The ids of the run's batches are kept in `batch_state.json` in the output folder (written atomically
as each batch is created); a killed run resumes them. A stop (Ctrl-C) cancels the open batches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import openai
from pydantic import BaseModel, ValidationError

from methyl_distill.extraction.extract import ExtractionConfig, extract_paper, extraction_cache_key
from methyl_distill.extraction.outputs import BATCH_STATE_FILE, atomic_write_text
from methyl_distill.extraction.papers import Paper
from methyl_distill.extraction.question_bank import QuestionBank
from methyl_distill.extraction.records import AnswerRecord, TeacherExtraction
from methyl_distill.extraction.stopping import RunStop
from methyl_distill.teacher.batch_api import (
    EXCEEDS_QUEUE,
    BatchProgress,
    BatchRequest,
    BatchResult,
    BatchRunner,
    BatchState,
    flatten_request_arguments,
    request_digest,
)
from methyl_distill.teacher.config import endpoint_without_credentials, resolve_api_key
from methyl_distill.teacher.openai_client import (
    OpenAITeacher,
    TeacherRequestError,
    TeacherStopped,
    failed_reply,
)
from methyl_distill.teacher.output_mode import says_output_mode_unsupported
from methyl_distill.teacher.protocol import (
    ChatMessage,
    ModelT,
    OutputMode,
    RequestTooLargeError,
    TeacherError,
    TeacherReply,
    TokenUsage,
)
from methyl_distill.text.not_reported import NOT_REPORTED
from methyl_distill.text.token_count import estimate_chat_tokens

if TYPE_CHECKING:
    from methyl_distill.extraction.parameters import ExtractParameters

logger = logging.getLogger(__name__)

# More rounds than any paper can need (re-asks x splits x failed lines): a guard against a loop.
MAX_ROUNDS = 64


class BatchAnswerMissing(TeacherStopped):
    """A request of the paper has no batch result (the run stopped before it came): the paper is left
    for the next run, neither cached nor a failure (a `TeacherStopped`)."""


# -- what a request got ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Answered:
    """A completion, validated as the online client validates one."""

    parsed: BaseModel | None
    raw_text: str
    error: str
    finish: str
    mode: OutputMode
    usage: TokenUsage


@dataclass(frozen=True)
class _Failed:
    """No completion: a failed or missing line, or an online request that failed after its retries."""

    error: str
    usage: TokenUsage
    retryable: bool
    too_large: tuple[int, int] | None = None  # (requested, limit): the paper's text must be split


_Outcome = _Answered | _Failed


@dataclass
class AnswerBook:
    """Every outcome of every request body, by digest, in the order they came."""

    outcomes: dict[str, list[_Outcome]] = field(default_factory=dict)

    def add(self, digest: str, outcome: _Outcome) -> None:
        self.outcomes.setdefault(digest, []).append(outcome)

    def __len__(self) -> int:
        return len(self.outcomes)


@dataclass(frozen=True)
class _PendingRequest:
    """A request the replay met without an answer: what a batch line or an online call needs."""

    digest: str
    custom_id: str
    body: dict[str, Any]
    messages: list[ChatMessage]
    response_model: type[BaseModel]
    max_tokens: int
    source_text: str | None

    def batch_request(self) -> BatchRequest:
        return BatchRequest(self.custom_id, self.body, estimate_chat_tokens(self.messages))


# -- the teacher that answers from the book ---------------------------------------------------------------


class BatchReplayTeacher:
    """The `Teacher` of a batch run: answers from the `AnswerBook`, never over HTTP.

    Collecting (`collect_for`): a request without an answer is noted and given a placeholder answer,
    so the paper's remaining chunks are noted in the same round. Otherwise a missing answer raises
    `BatchAnswerMissing`. Attributes the flow reads (`redact`, `has_key`, `settled_output_mode`)
    are the online client's."""

    def __init__(self, online: OpenAITeacher, book: AnswerBook | None = None) -> None:
        self.online = online
        self.model = online.model
        self.config = online.config
        self.book = book if book is not None else AnswerBook()
        self._collecting: dict[str, _PendingRequest] | None = None
        self._paper_id = ""
        self._placeholder: BaseModel | None = None
        self.missed = 0  # requests without an answer met since `collect_for`

    def __repr__(self) -> str:
        return f"BatchReplayTeacher(model={self.model!r}, answers={len(self.book)})"

    def redact(self, text: str) -> str:
        return self.online.redact(text)

    @property
    def has_key(self) -> bool:
        return self.online.has_key

    @property
    def settled_output_mode(self) -> OutputMode | None:
        return self.online.settled_output_mode

    @property
    def budget(self) -> Any:
        """The online client's budget (the follow-ups sent online use it; the console meters it)."""
        return self.online.budget

    @budget.setter
    def budget(self, value: Any) -> None:
        self.online.budget = value

    def describe_pacing(self) -> str:
        return f"Batch API; the follow-ups sent online: {self.online.describe_pacing()}"

    def collect_for(
        self,
        paper_id: str,
        pending: dict[str, _PendingRequest] | None,
        placeholder: BaseModel | None = None,
    ) -> None:
        """Note the missing requests of `paper_id` in `pending` (None: stop collecting), answering
        them with `placeholder` meanwhile (default: every list empty)."""
        self._collecting = pending
        self._paper_id = paper_id
        self._placeholder = placeholder
        self.missed = 0

    def complete_structured(
        self,
        messages: list[ChatMessage],
        response_model: type[ModelT],
        *,
        max_tokens: int,
        source_text: str | None = None,
    ) -> TeacherReply[ModelT]:
        """The online client's re-ask loop (`OpenAITeacher.complete_structured`), answered from the book."""
        prompt_estimate = estimate_chat_tokens(messages)
        if prompt_estimate + max_tokens > self.config.context_tokens:
            raise RequestTooLargeError(
                f"request of ~{prompt_estimate + max_tokens} tokens exceeds the context of "
                f"{self.config.context_tokens} tokens of {self.model}: split the input",
                requested_tokens=prompt_estimate + max_tokens,
                limit_tokens=self.config.context_tokens,
            )
        usage = TokenUsage()
        conversation = list(messages)
        raw_text, error, finish = "", "no attempt made", ""
        mode = self.online.output_mode.current
        attempts = 0
        for attempt in range(self.config.max_reasks + 1):
            attempts = attempt + 1
            mode = self.online.output_mode.current
            arguments = self.online._request_arguments(
                conversation, response_model, max_tokens, mode, source_text
            )
            body = flatten_request_arguments(arguments)
            digest = request_digest(body)
            outcome = self._outcome(digest)
            if outcome is None:
                if self._collecting is None:
                    raise BatchAnswerMissing(f"{self.model}: no batch result for a request (the run stopped)")
                self.missed += 1  # noted once per body, below; each paper that needs it waits for it
                self._collecting.setdefault(
                    digest,
                    _PendingRequest(
                        digest,
                        f"{self._paper_id[:80]}#{digest[:24]}",
                        body,
                        list(conversation),
                        response_model,
                        max_tokens,
                        source_text,
                    ),
                )
                placeholder = self._placeholder
                if not isinstance(placeholder, response_model):
                    placeholder = _placeholder(response_model)
                return TeacherReply(parsed=placeholder, raw_text="", usage=usage, mode=mode)
            usage = usage + _usage_of(digest, self.book)
            if isinstance(outcome, _Failed):
                if outcome.too_large is not None:
                    requested, limit = outcome.too_large
                    raise RequestTooLargeError(outcome.error, requested_tokens=requested, limit_tokens=limit)
                raise TeacherRequestError(self.online.redact(outcome.error), usage)
            raw_text, error, finish, mode = outcome.raw_text, outcome.error, outcome.finish, outcome.mode
            if outcome.parsed is not None:
                parsed = outcome.parsed
                if not isinstance(parsed, response_model):  # stored for another model: validate anew
                    parsed = response_model.model_validate(parsed.model_dump())
                return TeacherReply(
                    parsed=parsed, raw_text=raw_text, usage=usage, mode=mode, attempts=attempts
                )
            if finish == "refusal":
                break
            conversation = [*messages, *self.online._reask_messages(raw_text, error, finish, max_tokens)]
        return failed_reply(raw_text, error, finish, usage, mode, attempts)

    def _outcome(self, digest: str) -> _Outcome | None:
        """The answer to use, a failure to give up on, or None: ask (again)."""
        outcomes = self.book.outcomes.get(digest, [])
        if not outcomes:
            return None
        last = outcomes[-1]
        if isinstance(last, _Answered):
            return last
        if last.too_large is not None or not last.retryable or len(outcomes) > self.config.max_reasks:
            return _Failed(f"{last.error} (asked {len(outcomes)} time(s))", last.usage, False, last.too_large)
        return None


def _usage_of(digest: str, book: AnswerBook) -> TokenUsage:
    total = TokenUsage()
    for outcome in book.outcomes.get(digest, []):
        total = total + outcome.usage
    return total


def _placeholder(response_model: type[ModelT]) -> ModelT:
    """An empty answer (every list empty), so that a collecting pass goes on to the next chunk."""
    return response_model.model_validate({name: [] for name in response_model.model_fields})


# -- the state file -----------------------------------------------------------------------------------------


class BatchStateFile:
    """`batch_state.json` in the output folder, written atomically (a `BatchStateStore`)."""

    def __init__(self, output_directory: str | Path) -> None:
        self.path = Path(output_directory).expanduser().resolve() / BATCH_STATE_FILE

    def load(self) -> BatchState | None:
        if not self.path.is_file():
            return None
        try:
            return BatchState.model_validate_json(self.path.read_text(encoding="utf-8"))
        except (ValidationError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"{self.path} is not a batch state file of methyl-distill ({exc}); remove it to start "
                "afresh (the batches it names are then not resumed: their answers are paid again)"
            ) from None

    def save(self, state: BatchState) -> None:
        atomic_write_text(self.path, state.model_dump_json(indent=1) + "\n")

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


# -- the rounds -------------------------------------------------------------------------------------------


@dataclass
class BatchRunReport:
    """What the batch phase did, for the log."""

    papers: int = 0
    rounds: int = 0
    batch_requests: int = 0
    online_requests: int = 0
    failed_lines: int = 0
    invalid_replies: int = 0


class BatchExtraction:
    """The rounds of one run (see the module docstring)."""

    def __init__(
        self,
        online: OpenAITeacher,
        bank: QuestionBank,
        config: ExtractionConfig,
        runner: BatchRunner,
        *,
        stop: RunStop,
        online_single: OpenAITeacher | None = None,
    ) -> None:
        self.online = online
        self.bank = bank
        self.config = config
        self.runner = runner
        self.stop = stop
        self.teacher = BatchReplayTeacher(online)
        self.online_single = online_single or _single_attempt_teacher(online, stop)
        self.report = BatchRunReport()

    def answer(self, papers: Sequence[Paper]) -> BatchReplayTeacher:
        """Ask until every request of `papers` has its outcome (or the run stops)."""
        self.report.papers = len(papers)
        remaining = list(papers)
        for round_number in range(MAX_ROUNDS):
            pending, remaining = self._collect(remaining)
            if not pending:
                if not self.stop.is_requested:
                    self.runner.mark_answered()
                return self.teacher
            if self.stop.is_requested:
                return self.teacher
            self.report.rounds += 1
            requests = list(pending.values())
            few = 0 < len(requests) <= self.online.config.batch_online_max_requests
            logger.info(
                "batch round %d: %d request(s) of %d paper(s)%s",
                round_number + 1,
                len(requests),
                len(remaining),
                " sent online (few left)" if round_number > 0 and few else "",
            )
            if round_number > 0 and few:
                self._ask_online(requests)
            else:
                self._ask_in_batches(requests)
        raise RuntimeError(f"batch extraction did not settle in {MAX_ROUNDS} rounds")  # a bug, not a paper

    def _collect(self, papers: Sequence[Paper]) -> tuple[dict[str, _PendingRequest], list[Paper]]:
        """The requests the papers still need, and the papers that need them."""
        pending: dict[str, _PendingRequest] = {}
        waiting = []
        # "Not reported" to every question: the placeholder makes no warning about missing answers.
        placeholder = TeacherExtraction(
            answers=[
                AnswerRecord(question_id=qid, answer=NOT_REPORTED, evidence=[]) for qid in self.bank.ids
            ],
            markers=[],
            additional_qa=[],
        )
        for paper in papers:
            if self.stop.is_requested:
                break
            self.teacher.collect_for(paper.file_id, pending, placeholder)
            try:
                extract_paper(paper, self.teacher, self.bank, self.config)
                if self.teacher.missed:
                    waiting.append(paper)
            finally:
                self.teacher.collect_for("", None)
        return pending, waiting

    def _ask_in_batches(self, requests: Sequence[_PendingRequest]) -> None:
        by_id = {request.custom_id: request for request in requests}
        results = self.runner.run([request.batch_request() for request in requests])
        self.report.batch_requests += len(results)
        online = []
        for custom_id, result in results.items():
            request = by_id[custom_id]
            if result.error_code == EXCEEDS_QUEUE:
                online.append(request)
            else:
                self._record_batch_result(request, result)
        if online and not self.stop.is_requested:
            logger.info("%d request(s) too large for the batch queue: sent online", len(online))
            self._ask_online(online)

    def _record_batch_result(self, request: _PendingRequest, result: BatchResult) -> None:
        mode = _mode_of(request.body)
        if result.completion is None:
            self.report.failed_lines += 1
            error = result.error or "failed"
            status = result.status_code or 0
            if says_output_mode_unsupported(status, error, mode) and self.online.output_mode.refused(
                mode, error
            ):
                return  # the next round asks in the weaker mode (another body)
            too_large = None
            if result.error_code == "context_length_exceeded":
                too_large = (
                    request.batch_request().prompt_tokens + request.max_tokens,
                    self.online.config.context_tokens,
                )
            logger.warning("batch line %s failed: %s", request.custom_id, self.online.redact(error))
            outcome: _Outcome = _Failed(
                f"batch line failed: {error}", TokenUsage(requests=1), result.retryable, too_large
            )
        else:
            completion = result.completion
            parsed, raw_text, error, finish = self.online._validate(
                completion, request.response_model, request.max_tokens
            )
            self.online.output_mode.answered(mode)
            if parsed is None:
                self.report.invalid_replies += 1
                logger.warning("batch reply %s invalid (mode %s): %s", request.custom_id, mode, error)
            usage = getattr(completion, "usage", None)
            outcome = _Answered(
                parsed,
                raw_text,
                error,
                finish,
                mode,
                TokenUsage(
                    prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                    completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
                    requests=1,
                ),
            )
        self.teacher.book.add(request.digest, outcome)

    def _ask_online(self, requests: Sequence[_PendingRequest]) -> None:
        """One attempt each through the online client (its retries, budget and output mode)."""
        for request in requests:
            if self.stop.is_requested:
                return
            self.report.online_requests += 1
            try:
                reply = self.online_single.complete_structured(
                    request.messages,
                    request.response_model,
                    max_tokens=request.max_tokens,
                    source_text=request.source_text,
                )
            except TeacherStopped:
                return
            except RequestTooLargeError as exc:
                outcome: _Outcome = _Failed(
                    str(exc), TokenUsage(requests=1), False, (exc.requested_tokens, exc.limit_tokens)
                )
            except TeacherRequestError as exc:
                outcome = _Failed(str(exc), exc.usage, False)
            except TeacherError as exc:
                outcome = _Failed(str(exc), TokenUsage(requests=1), False)
            else:
                outcome = _Answered(
                    reply.parsed,
                    reply.raw_text,
                    reply.error or "",
                    _finish_of(reply),
                    reply.mode,
                    reply.usage,
                )
            self.teacher.book.add(request.digest, outcome)


def _mode_of(body: dict[str, Any]) -> OutputMode:
    response_format = body.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_schema":
        return "json_schema"
    if kind == "json_object":
        return "json_object"
    return "prompt"


def _finish_of(reply: TeacherReply[Any]) -> str:
    """The finish reason the online client's re-ask wording needs, from a reply it validated."""
    if reply.parsed is not None:
        return "stop"
    if reply.truncated:
        return "length"
    if (reply.error or "").startswith("the model refused"):
        return "refusal"
    if not reply.raw_text.strip():
        return "empty"
    return "invalid"


def _single_attempt_teacher(online: OpenAITeacher, stop: RunStop) -> OpenAITeacher:
    """The online client for one attempt per request (the re-asks are the rounds'): same key, same
    budget, same output mode."""
    config = online.config.model_copy(update={"max_reasks": 0})
    single = OpenAITeacher(
        config,
        api_key=resolve_api_key(config),
        budget=online.budget,
        stop=stop.requested,
        abandon=stop.abandon,
    )
    single.output_mode = online.output_mode
    return single


# -- the flow's entry point --------------------------------------------------------------------------------


def answer_in_batches(
    papers: Sequence[Paper],
    online: OpenAITeacher,
    bank: QuestionBank,
    config: ExtractionConfig,
    *,
    output_directory: str | Path,
    is_cached: Callable[[Paper], bool],
    stop: RunStop,
    on_progress: Callable[[BatchProgress], None] | None = None,
) -> BatchReplayTeacher:
    """Get the answers of every paper `is_cached` says is not cached through the Batch API; returns
    the teacher the flow's extraction tasks then use (see the module docstring)."""
    state_file = BatchStateFile(output_directory)
    uncached = [paper for paper in papers if not is_cached(paper)]
    teacher_config = online.config
    logger.info(
        "batch mode: %d of %d paper(s) not cached; enqueued-token limit %d; prices $%.2f / $%.2f per 1M "
        "input / output tokens",
        len(uncached),
        len(papers),
        teacher_config.batch_queue_tokens,
        teacher_config.input_price_per_mtok,
        teacher_config.output_price_per_mtok,
    )
    if not uncached:
        state_file.remove()
        return BatchReplayTeacher(online)
    runner = BatchRunner(
        online.client.with_options(max_retries=teacher_config.max_retries),
        teacher_config,
        state_file,
        endpoint=teacher_config.cache_endpoint or endpoint_without_credentials(teacher_config.endpoint),
        stop=stop.requested,
        redact=online.redact,
        on_progress=on_progress,
    )
    extraction = BatchExtraction(online, bank, config, runner, stop=stop)
    try:
        teacher = extraction.answer(uncached)
    except openai.OpenAIError as exc:
        raise TeacherError(online.redact(f"the Batch API failed: {exc}")) from None
    report = extraction.report
    logger.info(
        "batch phase done: %d paper(s), %d round(s), %d batch request(s), %d online, %d failed line(s), "
        "%d invalid repl(y/ies)",
        report.papers,
        report.rounds,
        report.batch_requests,
        report.online_requests,
        report.failed_lines,
        report.invalid_replies,
    )
    return teacher


def prefect_cache_lookup(
    storage: Path | str, bank: QuestionBank, config: ExtractionConfig, teacher: OpenAITeacher, refresh: bool
) -> Callable[[Paper], bool]:
    """Whether the extraction task's cache (the Prefect result storage `storage`) holds a paper's
    result under its cache key (`extraction_cache_key`); always False with `refresh`."""
    from prefect.filesystems import WritableFileSystem
    from prefect.results import ResultStore, resolve_result_storage
    from prefect.serializers import JSONSerializer

    block = cast(WritableFileSystem, resolve_result_storage(storage))  # sync here: no event loop
    store = ResultStore(result_storage=block, serializer=JSONSerializer())

    def is_cached(paper: Paper) -> bool:
        if refresh:
            return False
        return bool(store.exists(extraction_cache_key(paper, bank, teacher.config, config)))

    return is_cached


def batch_progress_reporter() -> Callable[[BatchProgress], None]:
    """Progress of the batches in the Prefect UI (a progress artifact: requests answered; a markdown
    artifact: each batch and its status) and in the run's log. Call inside a flow run."""
    from prefect import get_run_logger
    from prefect.artifacts import (
        create_markdown_artifact,
        create_progress_artifact,
        update_progress_artifact,
    )

    run_logger = get_run_logger()
    artifact_id = create_progress_artifact(
        progress=0.0, key="extraction-batch-progress", description="Batch requests answered"
    )
    last: list[str] = [""]

    def report(progress: BatchProgress) -> None:
        line = progress.line()
        if line == last[0]:
            return
        last[0] = line
        run_logger.info("Batch API: %s", line)
        share = 100.0 * progress.results / progress.requests if progress.requests else 0.0
        update_progress_artifact(artifact_id, progress=round(share, 1))  # type: ignore[arg-type]
        rows = "\n".join(f"| `{job}` | {status} |" for job, status in progress.status_by_job.items())
        create_markdown_artifact(
            key="extraction-batches",
            markdown=f"## Batch API\n\n{line}\n\n| batch | status |\n|---|---|\n{rows}\n",
            description=line,
        )

    return report


def answer_uncached_in_batches(
    papers: Sequence[Paper],
    online: OpenAITeacher,
    bank: QuestionBank,
    config: ExtractionConfig,
    parameters: ExtractParameters,
    stop: RunStop,
) -> BatchReplayTeacher:
    """The extraction flow's batch branch: `answer_in_batches` over the papers the extraction task's
    cache does not hold, with the progress in the Prefect UI; returns the teacher to map with."""
    from methyl_distill.tasks.extraction import resolve_cache_storage  # the task's own storage

    storage = resolve_cache_storage(parameters.cache_dir)
    return answer_in_batches(
        papers,
        online,
        bank,
        config,
        output_directory=parameters.output_directory,
        is_cached=prefect_cache_lookup(storage, bank, config, online, parameters.refresh),
        stop=stop,
        on_progress=batch_progress_reporter(),
    )
