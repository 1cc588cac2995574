"""`OpenAITeacher`: the `Teacher` protocol over the official openai SDK, for any compatible endpoint.

One retry layer: the SDK's own retries are off (`max_retries=0`); tenacity retries 429, 5xx,
timeouts, dropped connections and a 200 whose body is no chat completion (a proxy's HTML error
page) with exponential backoff and full jitter, honouring `retry-after` (which also holds the shared
token bucket). Other 4xx are not retried.

Every HTTP attempt reserves estimated prompt tokens + max_tokens on the shared budget first and is
always reconciled afterwards: with `usage` when a completion came back, with 0 after a 429 (the
request was refused, nothing was consumed), with the estimated prompt after any other failure
(failed requests count), with the whole reservation when something unforeseen was raised. Whether a
reconcile gives unused tokens back follows the endpoint's rate-limit accounting, found out from the
reply headers (`teacher.rate_limit_accounting`). Where the admission charge is kept, `max_tokens` is
sized from the replies seen (`teacher.request_pacing.ReplyBudget`; a reply cut off at a sized budget
is asked again at the configured one), and the requests in flight follow budget x latency
(`InFlightGate`).

Structured output, most to least strict: `json_schema` (strict), then `json_object` with the schema
in the prompt (and llama.cpp's `{"type": "json_object", "schema": ...}` extension), then the schema
in the prompt only. The mode is a property of the endpoint, shared by every request of the run
(`teacher.output_mode.EndpointOutputMode`): in `auto` it moves one step down only when the endpoint
answers that it does not support the response_format sent, and the first answered request settles
it. Every reply is validated with pydantic; invalid JSON, schema errors, empty content or a
truncated reply (`finish_reason=length`) are re-asked a bounded number of times, telling the model
what was wrong. When all re-asks fail, the `TeacherReply` keeps the raw text and the error.
Thread-safe: one teacher and one budget serve every extraction task of a run.

Stopping (optional `stop` and `abandon` events, set by the run's stop): once `stop` is set no new
HTTP attempt starts (a retry's back-off ends at once) and the call raises `TeacherStopped`; once
`abandon` is set the client stops waiting for the attempts in flight (each is then sent from a
daemon thread of its own), raising `TeacherStopped` and keeping their whole reservation charged.

Secrets: `redact` hides the key (whatever its source: environment, Secret block, the embedded
teacher's session key) and the credentials of the base URL (`endpoint_secrets`) in every
error text; httpx's request log lines show the URL through `redact_endpoint`. A query in the base
URL (`?api-key=...`) is sent with every request as the SDK's `default_query`.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import openai
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, SecretStr, ValidationError
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from methyl_distill.teacher.config import (
    REDACTED,
    TeacherConfig,
    endpoint_secrets,
    redact_endpoint,
    resolve_api_key,
)
from methyl_distill.teacher.output_mode import EndpointOutputMode, says_output_mode_unsupported
from methyl_distill.teacher.protocol import (
    TRUNCATED_OUTPUT,
    ChatMessage,
    ModelT,
    OutputMode,
    RequestTooLargeError,
    TeacherError,
    TeacherReply,
    TokenUsage,
)
from methyl_distill.teacher.quotes import quote_candidates, symbol_candidates
from methyl_distill.teacher.rate_limit_accounting import RateLimitAccounting
from methyl_distill.teacher.rate_limit_headers import RateLimitHeaders
from methyl_distill.teacher.request_pacing import InFlightGate, ReplyBudget
from methyl_distill.teacher.structured_output import (
    json_text,
    outline_instruction,
    schema_instruction,
    strict_json_schema,
    with_schema_instruction,
)
from methyl_distill.teacher.token_bucket import (
    ADMISSION_MARGIN_S,
    LocalTokenBucket,
    TokenBudget,
    build_token_bucket,
)
from methyl_distill.text.token_count import estimate_chat_tokens

logger = logging.getLogger(__name__)

# Key sent to local servers that need none: the SDK refuses to start without one.
NO_KEY_PLACEHOLDER = "sk-no-key-required"
_MAX_ECHOED_OUTPUT_CHARS = 24_000
_MAX_RETRY_AFTER_S = 600.0
_STATED_LIMIT = re.compile(r"Limit (\d+)")


class TeacherRequestError(TeacherError):
    """No answer after the retries. `usage` counts every HTTP attempt of the call, failed ones included,
    so a failure record can still report what the paper cost."""

    def __init__(self, message: str, usage: TokenUsage) -> None:
        super().__init__(message)
        self.usage = usage


class TeacherStopped(Exception):
    """The run is stopping: the request was not sent, or was abandoned in flight. Not a failure of
    the paper (not a `TeacherError`): the paper is left for the next run."""


class _ModeRejected(Exception):
    """The endpoint does not support the structured-output mode sent: send the request again."""


class NotAChatCompletionError(Exception):
    """A 2xx reply whose body is not a chat completion (a proxy's error page, an error object): a
    transport fault, retried like a 502."""


def _retry_after_s(exc: BaseException) -> float | None:
    """retry-after(-ms) of an error response, in seconds."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return min(_MAX_RETRY_AFTER_S, max(0.0, float(value) * scale))
        except ValueError:
            continue
    return None


def _is_transient(exc: BaseException) -> bool:
    """429 (but not quota or request size), 408, 5xx, timeouts, dropped connections and a reply that
    is no chat completion."""
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 429) or exc.status_code >= 500
    # APITimeoutError is a subclass of APIConnectionError
    return isinstance(exc, (openai.APIConnectionError, NotAChatCompletionError))


def _chat_completion(raw: Any) -> ChatCompletion:
    """The completion of a raw 2xx response, or NotAChatCompletionError saying what came instead.

    The SDK hands back the text of a non-JSON body as it is, and builds a JSON body that is no
    completion into a ChatCompletion without its fields (it does not validate responses)."""
    content_type = raw.headers.get("content-type", "unknown content type")
    try:
        parsed = raw.parse()
    except Exception as exc:  # a body the SDK cannot even read (e.g. JSON that does not parse)
        raise NotAChatCompletionError(
            f"HTTP {raw.status_code} with a body that is not a chat completion ({content_type}): "
            f"{type(exc).__name__}: {exc}"
        ) from None
    choices = getattr(parsed, "choices", None) if isinstance(parsed, ChatCompletion) else None
    if isinstance(choices, list) and all(getattr(choice, "message", None) for choice in choices):
        return parsed
    body = parsed if isinstance(parsed, str) else str(getattr(raw, "text", "") or parsed)
    excerpt = " ".join(body.split())[:200]
    raise NotAChatCompletionError(
        f"HTTP {raw.status_code} with a body that is not a chat completion ({content_type}): {excerpt!r}"
    )


def _reported_tokens(completion: ChatCompletion) -> tuple[int, int] | None:
    """(prompt, completion) tokens of the reply's `usage`, or None when it reports none."""
    usage = getattr(completion, "usage", None)
    prompt = getattr(usage, "prompt_tokens", None)
    output = getattr(usage, "completion_tokens", None)
    if isinstance(prompt, int) and isinstance(output, int):
        return prompt, output
    return None


def _error_code(exc: openai.APIStatusError) -> str:
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) else ""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {exc.message}"
    if isinstance(exc, openai.APITimeoutError):
        return "request timed out"
    if isinstance(exc, openai.APIConnectionError):
        return f"connection failed: {exc.__cause__ or exc}"
    if isinstance(exc, NotAChatCompletionError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class _RedactedURLs(logging.Filter):
    """httpx (and httpx2) log every request's URL ("HTTP Request: POST <url> ..."): show it redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any("://" in str(arg) for arg in record.args):
            record.args = tuple(
                redact_endpoint(str(arg)) if "://" in str(arg) else arg for arg in record.args
            )
        return True


_URL_FILTER = _RedactedURLs()
_HTTP_LOGGERS = ("httpx", "httpx2")  # the openai SDK's HTTP client logs under one of these names


def _split_query(base_url: str | None) -> tuple[str | None, dict[str, str] | None]:
    """(base URL without its query, the query as default_query): the SDK appends the request path
    to the base URL's text, which would land after a query."""
    if not base_url:
        return base_url, None
    parts = urlsplit(base_url)
    if not parts.query:
        return base_url, None
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", parts.fragment)), query


class _CallLog:
    """Usage of every HTTP attempt of one `complete_structured` call, failed ones included."""

    def __init__(self) -> None:
        self.usage = TokenUsage()

    def add(self, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        self.usage = self.usage + TokenUsage(
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, requests=1
        )


class OpenAITeacher:
    """The teacher over the openai SDK; see the module docstring."""

    def __init__(
        self,
        config: TeacherConfig,
        *,
        api_key: SecretStr | None = None,
        budget: TokenBudget | None = None,
        client: openai.OpenAI | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        stop: threading.Event | None = None,
        abandon: threading.Event | None = None,
    ) -> None:
        self.config = config
        self.model = config.model
        self.budget: TokenBudget = budget or LocalTokenBucket(
            config.tpm,
            config.rpm,
            accounting=RateLimitAccounting(config.rate_limit_accounting),
            margin_s=ADMISSION_MARGIN_S,
        )
        self.accounting: RateLimitAccounting = getattr(
            self.budget, "accounting", None
        ) or RateLimitAccounting(config.rate_limit_accounting)
        self.reply_budget = ReplyBudget(config.size_max_tokens)
        self.in_flight = InFlightGate(lambda: self.budget.limit_tokens, config.rpm)
        if api_key is None and config.is_openai_public_endpoint:
            raise TeacherError(
                "no API key for api.openai.com: set OPENAI_API_KEY (or TEACHER_API_KEY_SECRET_BLOCK), "
                "or point OPENAI_BASE_URL at a local OpenAI-compatible server"
            )
        self._secret = api_key.get_secret_value() if api_key is not None else None
        self._secrets = [*([self._secret] if self._secret else []), *endpoint_secrets(config.base_url)]
        for name in _HTTP_LOGGERS:  # idempotent: a logger keeps one of each filter
            logging.getLogger(name).addFilter(_URL_FILTER)
        base_url, default_query = _split_query(config.base_url)
        self.client = client or openai.OpenAI(
            api_key=self._secret or NO_KEY_PLACEHOLDER,
            base_url=base_url,
            default_query=default_query,
            timeout=config.timeout_s,
            max_retries=0,  # one retry layer: ours
        )
        self._sleep = sleep
        self._stop = stop
        self._abandon = abandon
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        # One per endpoint: this client is the run's only client of it.
        self.output_mode = EndpointOutputMode(config.output_mode)
        self._grammars: dict[type[BaseModel], str] = {}

    def __repr__(self) -> str:
        return (
            f"OpenAITeacher(model={self.model!r}, base_url={self.config.shown_endpoint!r}, "
            f"mode={self.output_mode.current!r}, budget={self.budget!r})"
        )

    @property
    def mode(self) -> OutputMode:
        """The structured-output mode the next request will use."""
        return self.output_mode.current

    @property
    def settled_output_mode(self) -> OutputMode | None:
        """The mode of this run's requests: the configured one, or in `auto` the one the endpoint
        answered in (None while it has answered none). What a run's summary reports."""
        return self.output_mode.settled

    def describe_pacing(self) -> str:
        """The run's rate-limit accounting, reply budget and requests in flight, for its log."""
        ceiling = self.config.max_output_tokens
        sized = self.reply_budget.max_tokens(ceiling, self.accounting)
        budget = f"max_tokens {sized}" + (f" (sized; configured {ceiling})" if sized < ceiling else "")
        cut = self.reply_budget.cut_off_at_sized
        return (
            f"accounting {self.accounting.describe()}; {budget}, {self.reply_budget.sized_requests} "
            f"sized request(s), {cut} cut off and asked again; {self.in_flight.describe()}"
        )

    @property
    def has_key(self) -> bool:
        """Whether a key is sent (never the key itself)."""
        return self._secret is not None

    def redact(self, text: str) -> str:
        """`text` with the API key and the base URL's credentials, where they occur, replaced by ***."""
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    # -- public -------------------------------------------------------------------------------
    def complete_structured(
        self,
        messages: list[ChatMessage],
        response_model: type[ModelT],
        *,
        max_tokens: int,
        source_text: str | None = None,
    ) -> TeacherReply[ModelT]:
        log = _CallLog()
        conversation = list(messages)
        raw_text, error, mode = "", "no attempt made", self.mode
        attempts = 0
        finish = ""
        for attempt in range(self.config.max_reasks + 1):
            attempts = attempt + 1
            sized = True
            while True:
                completion, mode, sent = self._complete_in_some_mode(
                    conversation, response_model, max_tokens, source_text, log, sized=sized
                )
                parsed, raw_text, error, finish = self._validate(completion, response_model, sent)
                if finish == "length" and sent < max_tokens:
                    # Our sizing's miss, not the model's: the same request at the configured budget.
                    self.reply_budget.cut_off()
                    logger.info(
                        "%s reply cut off at the sized max_tokens=%d: asking again at %d",
                        self.model,
                        sent,
                        max_tokens,
                    )
                    sized = False
                    continue
                break
            if finish != "length" and (reported := _reported_tokens(completion)) is not None:
                self.reply_budget.replied(reported[1])
            if parsed is not None:
                return TeacherReply(
                    parsed=parsed, raw_text=raw_text, usage=log.usage, mode=mode, attempts=attempts
                )
            logger.warning("%s reply invalid (attempt %d, mode %s): %s", self.model, attempts, mode, error)
            if finish == "refusal":
                break  # asking again will not change a refusal
            conversation = [*messages, *self._reask_messages(raw_text, error, finish, max_tokens)]
        return failed_reply(raw_text, error, finish, log.usage, mode, attempts)

    # -- modes --------------------------------------------------------------------------------
    def _complete_in_some_mode(
        self,
        messages: list[ChatMessage],
        response_model: type[BaseModel],
        max_tokens: int,
        source_text: str | None,
        log: _CallLog,
        *,
        sized: bool = False,
    ) -> tuple[Any, OutputMode, int]:
        """(completion, its mode, the max_tokens it was sent with: `max_tokens` or, with `sized`, the
        reply budget's size at the moment the request was admitted)."""
        while True:  # ends: every refusal moves the mode down, and the prompt mode is never refused
            mode = self.output_mode.current
            arguments = self._request_arguments(messages, response_model, max_tokens, mode, source_text)
            try:
                completion, sent = self._complete(arguments, max_tokens, mode, log, sized=sized)
            except _ModeRejected:
                continue
            self.output_mode.answered(mode)
            return completion, mode, sent

    def _request_arguments(
        self,
        messages: list[ChatMessage],
        response_model: type[BaseModel],
        max_tokens: int,
        mode: OutputMode,
        source_text: str | None,
    ) -> dict[str, Any]:
        schema = strict_json_schema(response_model)
        arguments: dict[str, Any] = {"model": self.model, "max_tokens": max_tokens}
        extra_body: dict[str, Any] = {}
        if mode == "json_schema":
            arguments["messages"] = messages
            arguments["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": response_model.__name__, "strict": True, "schema": schema},
            }
        else:
            if mode == "json_object":
                instruction = schema_instruction(schema)
            else:
                grammar = self.config.grammar
                instruction = outline_instruction(schema, grammar.last_properties if grammar else ())
            arguments["messages"] = with_schema_instruction(messages, instruction)
            if mode == "json_object":
                # `schema` is llama.cpp's extension of json_object; OpenAI never sees this mode
                # unless it rejected json_schema.
                arguments["response_format"] = {"type": "json_object", "schema": schema}
            if self.config.grammar is not None:
                extra_body["grammar"] = self._grammar(response_model, schema, source_text)
        if extra_body:
            arguments["extra_body"] = extra_body
        return arguments

    def _grammar(
        self, response_model: type[BaseModel], schema: dict[str, Any], source_text: str | None
    ) -> str:
        """The GBNF grammar of `response_model`: one per model, or, when the grammar bounds name
        verbatim or symbol properties and the request has a source text, one per request whose quotes
        (symbols) must come from that text."""
        from methyl_distill.teacher.grammar import schema_to_gbnf  # only when a grammar is sent

        limits = self.config.grammar
        assert limits is not None
        if source_text is not None and (limits.verbatim_properties or limits.symbol_properties):
            return schema_to_gbnf(
                schema, limits, quote_candidates(source_text), symbol_candidates(source_text)
            )
        with self._lock:
            grammar = self._grammars.get(response_model)
        if grammar is None:
            grammar = schema_to_gbnf(schema, limits)
            with self._lock:
                self._grammars[response_model] = grammar
        return grammar

    # -- one request, with retries ------------------------------------------------------------
    def _complete(
        self,
        arguments: dict[str, Any],
        max_tokens: int,
        mode: OutputMode,
        log: _CallLog,
        *,
        sized: bool = False,
    ) -> tuple[ChatCompletion, int]:
        prompt_estimate = estimate_chat_tokens(arguments["messages"])
        requested = prompt_estimate + max_tokens
        if requested > self.config.context_tokens:
            raise RequestTooLargeError(
                f"request of ~{requested} tokens ({prompt_estimate} prompt + {max_tokens} max_tokens) "
                f"exceeds the context of {self.config.context_tokens} tokens of {self.model}: "
                "split the input",
                requested_tokens=requested,
                limit_tokens=self.config.context_tokens,
            )

        def attempt() -> tuple[ChatCompletion, int]:
            self._refuse_if_stopped()
            try:
                with self.in_flight.slot(self._stop):
                    return send_once()
            except InterruptedError:  # stopped while waiting for a place in flight
                self._refuse_if_stopped()
                raise

        def send_once() -> tuple[ChatCompletion, int]:
            # The reply budget is chosen when the request reaches the budget and again once admitted
            # (replies seen meanwhile may have shrunk it): a request that waited long for its turn
            # is not sent with a size decided before the first replies came back.
            reply_tokens = self.reply_budget.max_tokens(max_tokens, self.accounting) if sized else max_tokens
            reservation = self.budget.reserve(prompt_estimate + reply_tokens)
            if self._stop is not None and self._stop.is_set():  # stopped while waiting for budget
                self.budget.reconcile(reservation, 0)
                self._refuse_if_stopped()
            if (
                sized
                and (smaller := self.reply_budget.max_tokens(max_tokens, self.accounting)) < reply_tokens
            ):
                self.budget.shrink(reservation, reply_tokens - smaller)
                reply_tokens = smaller
            self.reply_budget.asked(reply_tokens, max_tokens)
            requested = prompt_estimate + reply_tokens
            self.accounting.reserved(requested)
            sent_at = time.monotonic()
            try:
                raw = self._send({**arguments, "max_tokens": reply_tokens})
                completion = _chat_completion(raw)
                reported = _reported_tokens(completion)
            except openai.APIStatusError as exc:
                log.add()
                refused = exc.status_code == 429
                if refused:
                    self.accounting.refused(requested)
                self.budget.reconcile(
                    reservation, 0 if refused else prompt_estimate, headers=exc.response.headers
                )
                if refused and (retry_after := _retry_after_s(exc)) is not None:
                    self.budget.penalize(retry_after)
                self._raise_for_status(exc, mode, requested)
                raise
            except (openai.APIConnectionError, NotAChatCompletionError):
                log.add()
                self.budget.reconcile(reservation, prompt_estimate)
                raise
            except BaseException:  # unforeseen or abandoned: settle on the safe side, never leak it
                log.add()
                self.budget.reconcile(reservation, requested)
                raise
            answered_at = time.monotonic()
            used = sum(reported) if reported is not None else requested
            if reported is not None:
                log.add(*reported)
            else:  # no usage reported: keep the whole reservation, the safe side
                log.add()
            # With the refund, in one step: the server's remaining count already includes its own
            # settlement, and no other request may take a refund the server did not grant.
            self.budget.reconcile(reservation, used, headers=raw.headers)
            self.accounting.answered(answered_at, requested, used, RateLimitHeaders.parse(raw.headers))
            charged = requested if self.accounting.keeps_admission_charge else used
            self.in_flight.observed(charged, answered_at - sent_at)
            return completion, reply_tokens

        retrying = Retrying(
            stop=stop_after_attempt(self.config.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception(_is_transient),
            sleep=self._pause,
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except (RequestTooLargeError, _ModeRejected):
            raise
        except (openai.APIStatusError, openai.APIConnectionError, NotAChatCompletionError) as exc:
            attempts = retrying.statistics.get("attempt_number", 1)
            raise TeacherRequestError(
                self.redact(f"{self.model} request failed after {attempts} attempt(s): {_describe(exc)}"),
                log.usage,
            ) from None

    def _refuse_if_stopped(self) -> None:
        if self._stop is not None and self._stop.is_set():
            raise TeacherStopped(f"{self.model}: the run is stopping, no new request is sent")

    def _pause(self, seconds: float) -> None:
        """A retry's back-off; cut short by a stop when sleeping for real."""
        if self._stop is not None and self._sleep is time.sleep:
            self._stop.wait(seconds)
        else:
            self._sleep(seconds)

    def _send(self, arguments: dict[str, Any]) -> Any:
        """One HTTP attempt (the raw response). With `abandon`, sent from a daemon thread so that the
        caller can stop waiting: an HTTP read in progress cannot be interrupted from outside."""
        create = self.client.chat.completions.with_raw_response.create
        if self._abandon is None:
            return create(**arguments)
        done = threading.Event()
        outcome: list[tuple[bool, Any]] = []

        def send() -> None:
            try:
                outcome.append((True, create(**arguments)))
            except BaseException as exc:  # handed over to the waiting thread
                outcome.append((False, exc))
            finally:
                done.set()

        threading.Thread(target=send, name="teacher-request", daemon=True).start()
        while not done.wait(0.1):
            if self._abandon.is_set():
                raise TeacherStopped(f"{self.model}: the run is stopping, a request in flight was abandoned")
        succeeded, value = outcome[0]
        if succeeded:
            return value
        raise value

    def _raise_for_status(self, exc: openai.APIStatusError, mode: OutputMode, requested: int) -> None:
        """Turn the errors no retry can fix into their own exceptions."""
        message = self.redact(exc.message)
        if exc.status_code == 429 and "request too large" in message.lower():
            stated = _STATED_LIMIT.search(message)
            raise RequestTooLargeError(
                f"{self.model} refused a request of ~{requested} tokens as too large: {message}",
                requested_tokens=requested,
                limit_tokens=int(stated.group(1)) if stated else self.budget.limit_tokens,
            ) from None
        if exc.status_code == 429 and _error_code(exc) == "insufficient_quota":
            raise TeacherError(f"{self.model}: quota exhausted (no retry): {message}") from None
        if _error_code(exc) == "context_length_exceeded":
            raise RequestTooLargeError(
                f"{self.model} context exceeded: {message}",
                requested_tokens=requested,
                limit_tokens=self.config.context_tokens,
            ) from None
        param = getattr(exc, "param", None)
        answer = f"{message} (param: {param})" if isinstance(param, str) else message
        if says_output_mode_unsupported(exc.status_code, answer, mode) and self.output_mode.refused(
            mode, f"HTTP {exc.status_code}: {message}"
        ):
            raise _ModeRejected() from None

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = _retry_after_s(exc) if exc is not None else None
        if retry_after is not None:
            return retry_after + self._rng.uniform(0, 0.1 * retry_after + 0.05)
        ceiling = min(self.config.retry_max_wait_s, 0.5 * 2 ** (state.attempt_number - 1))
        return self._rng.uniform(0, ceiling)  # full jitter

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        logger.warning(
            "%s attempt %d failed (%s); retrying in %.2f s",
            self.model,
            state.attempt_number,
            self.redact(_describe(exc)) if exc else "?",
            wait,
        )

    # -- validation ---------------------------------------------------------------------------
    def _validate(
        self, completion: Any, response_model: type[ModelT], max_tokens: int
    ) -> tuple[ModelT | None, str, str, str]:
        """(parsed or None, raw text, error, finish reason)."""
        if not completion.choices:
            return None, "", "the reply has no choices", "empty"
        choice = completion.choices[0]
        content = choice.message.content or ""
        finish = choice.finish_reason or "stop"
        refusal = getattr(choice.message, "refusal", None)
        if refusal:
            return None, content, f"the model refused: {refusal}", "refusal"
        if finish == "length":
            return (
                None,
                content,
                f"{TRUNCATED_OUTPUT} at max_tokens={max_tokens} (finish_reason=length)",
                finish,
            )
        if not content.strip():
            return None, content, "empty content", "empty"
        try:
            return response_model.model_validate_json(json_text(content)), content, "", finish
        except ValidationError as exc:
            return None, content, _summarise(exc), "invalid"

    def _reask_messages(self, raw_text: str, error: str, finish: str, max_tokens: int) -> list[ChatMessage]:
        if finish == "length":
            return [
                {
                    "role": "user",
                    "content": (
                        f"Your previous reply was cut off at the output limit of {max_tokens} tokens. "
                        "Reply again with a complete but shorter JSON object: brief answers, the shortest "
                        "verbatim quotes, fewer additional question-answer pairs."
                    ),
                }
            ]
        if finish == "empty" or not raw_text.strip():
            return [{"role": "user", "content": "Your previous reply was empty. Reply with the JSON object."}]
        echoed: list[ChatMessage] = []
        if len(raw_text) <= _MAX_ECHOED_OUTPUT_CHARS:
            echoed.append({"role": "assistant", "content": raw_text})
        echoed.append(
            {
                "role": "user",
                "content": (
                    f"Your previous reply was not valid: {error}\nReply again with only the corrected JSON "
                    "object, following the schema exactly."
                ),
            }
        )
        return echoed


def failed_reply(
    raw_text: str, error: str, finish: str, usage: TokenUsage, mode: OutputMode, attempts: int
) -> TeacherReply[Any]:
    """The reply of a call whose every attempt failed: the last raw text and error, and for a reply cut
    off every time, the advice to split the input. Shared with the Batch API's replay."""
    truncated = finish == "length"
    if truncated:
        error += (
            f" on every one of {attempts} attempt(s): the input likely needs splitting into smaller "
            "chunks (or raise TEACHER_MAX_OUTPUT_TOKENS)"
        )
    return TeacherReply(
        parsed=None,
        raw_text=raw_text,
        usage=usage,
        error=error,
        mode=mode,
        attempts=attempts,
        truncated=truncated,
    )


def _summarise(exc: ValidationError, limit: int = 8) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    if errors and errors[0]["type"] == "json_invalid":
        return f"invalid JSON: {errors[0]['msg']}"
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in errors[:limit]]
    more = f" (+{len(errors) - limit} more)" if len(errors) > limit else ""
    return "schema errors: " + "; ".join(parts) + more


def build_teacher(
    config: TeacherConfig, *, stop: threading.Event | None = None, abandon: threading.Event | None = None
) -> OpenAITeacher:
    """The client for `config`, with its key (resolved here, never passed around) and the budget the
    configuration asks for (an in-process bucket or a Prefect global concurrency limit); `stop` and
    `abandon` as in the module docstring."""
    return OpenAITeacher(
        config, api_key=resolve_api_key(config), budget=build_token_bucket(config), stop=stop, abandon=abandon
    )
