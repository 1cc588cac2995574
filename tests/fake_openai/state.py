"""State of the OpenAI test server: configuration, fault rules, rate limits and counters.

Kept apart from the HTTP layer (`tests.fake_openai.server`) so the limit arithmetic and
fault selection are plain, thread-safe objects. The stats ledger records every change to the TPM
bucket's consumption as (seconds since start, tokens): the admission charge (+estimate) and the
settlement (actual - estimate). Summing it over a window gives the tokens charged per minute as
the limiter saw them, which is what a client's sustained share of the limit means.
"""

from __future__ import annotations

import math
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Set as AbstractSet
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from methyl_distill.teacher.rate_limit_headers import format_reset_duration
from methyl_distill.teacher.token_bucket import RefillingBucket

# html_200: a proxy's HTML error page with status 200 (a body that is no chat completion);
# content_rejected: a 400 for this request's content (OpenAI's invalid_prompt), whatever its format.
FaultKind = Literal[
    "rate_limit",
    "server_error",
    "service_unavailable",
    "drop_connection",
    "slow",
    "invalid_json",
    "truncated",
    "empty_content",
    "html_200",
    "content_rejected",
]
SchemaSupport = Literal["supported", "rejected_400", "rejected_500"]
# settle: the admission charge is settled to the usage reported when the reply is sent (unused
# max_tokens given back); admission: what OpenAI's rate-limit guide describes, the charge made at
# admission (estimated prompt + max_tokens) stays in the window, nothing is given back or added.
RateLimitAccounting = Literal["settle", "admission"]

# What the server says answered, whatever alias the request named: a test server's replies must
# never pass for a real model's.
TEST_SERVER_MODEL = "methyl-distill-test-server"


_PIECE = re.compile(r"\w+|[^\w\s]+")


def server_count_tokens(text: str) -> int:
    """The server's own tokenizer stand-in: words and punctuation runs, long words split every 8 characters.

    Deliberately not `methyl_distill.text.token_count.estimate_tokens` (which errs high), so the client's
    reservations are always reconciled against a different, smaller actual count.
    """
    return sum(1 + (len(piece) - 1) // 8 for piece in _PIECE.findall(text))


class FaultRule(BaseModel):
    """One kind of fault and when it fires: the next `count` requests, with `probability` (seeded),
    for every request whose text contains `marker` (a paper that always fails), or, with none of
    these set, for every request."""

    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    count: int | None = Field(default=None, ge=1, description="Fire for this many requests, then stop.")
    probability: float | None = Field(default=None, ge=0, le=1, description="Fire with this probability.")
    marker: str | None = Field(default=None, min_length=1, description="Fire when a message contains this.")


class OpenAITestServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokens_per_minute: int = Field(default=200_000, gt=0, description="TPM limit enforced.")
    requests_per_minute: int | None = Field(default=None, gt=0, description="RPM limit; None: unlimited.")
    latency_s: tuple[float, float] = Field(default=(0.0, 0.0), description="Uniform response latency range.")
    context_tokens: int = Field(default=128_000, gt=0, description="Context window of the served models.")
    default_max_tokens: int = Field(
        default=4096, gt=0, description="Charged when a request sets no max_tokens."
    )
    accounting: RateLimitAccounting = Field(
        default="settle",
        description="settle: a request's admission charge is settled to its usage when answered; "
        "admission: the charge (estimated prompt + max_tokens) is kept for the whole window.",
    )
    retry_after_s: float = Field(default=1.0, ge=0, description="retry-after of injected 429s.")
    slow_s: float = Field(default=30.0, ge=0, description="Delay of the `slow` fault.")
    seed: int = Field(default=0, description="Seed of latencies and probabilistic faults.")
    models: list[str] = Field(
        default_factory=lambda: ["gpt-4o"], description="Model ids a request may name (aliases)."
    )
    reported_model: str = Field(
        default=TEST_SERVER_MODEL,
        description="The model every completion says answered: the server's own name, never a real model's.",
    )
    json_schema: SchemaSupport = Field(
        default="supported",
        description="How response_format json_schema is met: rejected_400 as OpenAI answers a model "
        "without structured outputs, rejected_500 as llama-cpp-python's server answers it.",
    )
    prompt_mode_fences: bool = Field(
        default=True, description="Wrap JSON in ```json fences when no response_format is given."
    )
    faults: list[FaultRule] = Field(default_factory=list)
    api_key: str | None = Field(
        default=None,
        description="Key /v1 requests must send as a bearer token; others get a 401 that quotes the key "
        "they sent, as OpenAI's error once did (a redaction test's worst case). None: no check.",
    )


class StatsSnapshot(BaseModel):
    """A consistent copy of the counters, JSON-serialisable (GET /control/stats)."""

    tokens_per_minute_limit: int
    uptime_s: float
    requests: int = Field(description="Chat completion requests received.")
    responses_by_status: dict[str, int]
    rate_limited: int = Field(description="429s from the limiter (budget exhausted), not injected ones.")
    too_large: int = Field(description="Requests refused because they alone exceed the TPM limit.")
    faults: dict[str, int] = Field(description="Injected faults by kind.")
    grammar_requests: int
    completed: int = Field(description="Requests answered with a completion.")
    response_formats: list[str] = Field(
        default_factory=list,
        description="response_format type of every well-formed chat request, in arrival order (text: none).",
    )
    requests_before_first_completion: int | None = Field(
        default=None,
        description="How many of `response_formats` had arrived when the first completion was answered.",
    )
    prompt_tokens: int
    completion_tokens: int
    max_in_flight: int
    ledger: list[tuple[float, int]] = Field(description="(seconds since start, token charge delta).")
    completed_at: list[float] = Field(
        default_factory=list, description="Seconds since start at which each completion was answered."
    )

    @property
    def responses_429(self) -> int:
        return self.responses_by_status.get("429", 0)

    def formats_after_first_completion(self) -> list[str]:
        """response_format types of the requests that arrived after the first success was answered."""
        if self.requests_before_first_completion is None:
            return []
        return self.response_formats[self.requests_before_first_completion :]

    def tokens_charged(self, start_s: float, end_s: float) -> int:
        """Net tokens charged to the bucket between two times (seconds since the server started)."""
        return sum(delta for at, delta in self.ledger if start_s <= at < end_s)

    def tokens_charged_per_minute(self, start_s: float, end_s: float) -> float:
        if end_s <= start_s:
            raise ValueError(f"empty window [{start_s}, {end_s})")
        return self.tokens_charged(start_s, end_s) * 60.0 / (end_s - start_s)

    def peak_tokens_in_any_minute(self, step_s: float = 1.0) -> int:
        """The most tokens charged in any sliding 60 s window (the initial full bucket included)."""
        if not self.ledger:
            return 0
        end = self.ledger[-1][0]
        best, start = 0, 0.0
        while start <= max(0.0, end - 60.0) + step_s:
            best = max(best, self.tokens_charged(start, start + 60.0))
            start += step_s
        return best


class ServerStats:
    """Thread-safe counters of one server."""

    def __init__(self, tokens_per_minute_limit: int) -> None:
        self._lock = threading.Lock()
        self._limit = tokens_per_minute_limit
        self._started = time.monotonic()
        self._requests = 0
        self._statuses: Counter[str] = Counter()
        self._rate_limited = 0
        self._too_large = 0
        self._faults: Counter[str] = Counter()
        self._grammar = 0
        self._completed = 0
        self._prompt_tokens = 0
        self._completion_tokens = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._ledger: list[tuple[float, int]] = []
        self._completed_at: list[float] = []
        self._formats: list[str] = []
        self._before_first_completion: int | None = None

    def request_format(self, format_type: str) -> None:
        with self._lock:
            self._formats.append(format_type)

    def request(self) -> None:
        with self._lock:
            self._requests += 1

    def response(self, status: int) -> None:
        with self._lock:
            self._statuses[str(status)] += 1

    def rate_limited(self) -> None:
        with self._lock:
            self._rate_limited += 1

    def too_large(self) -> None:
        with self._lock:
            self._too_large += 1

    def fault(self, kind: str) -> None:
        with self._lock:
            self._faults[kind] += 1

    def grammar_request(self) -> None:
        with self._lock:
            self._grammar += 1

    def charge(self, now: float, delta: int) -> None:
        with self._lock:
            self._ledger.append((now - self._started, delta))

    def enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def completed(self, prompt_tokens: int, completion_tokens: int) -> None:
        with self._lock:
            self._completed += 1
            self._completed_at.append(time.monotonic() - self._started)
            if self._before_first_completion is None:
                self._before_first_completion = len(self._formats)
            self._prompt_tokens += prompt_tokens
            self._completion_tokens += completion_tokens

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            return StatsSnapshot(
                tokens_per_minute_limit=self._limit,
                uptime_s=time.monotonic() - self._started,
                requests=self._requests,
                responses_by_status=dict(self._statuses),
                rate_limited=self._rate_limited,
                too_large=self._too_large,
                faults=dict(self._faults),
                grammar_requests=self._grammar,
                completed=self._completed,
                response_formats=list(self._formats),
                requests_before_first_completion=self._before_first_completion,
                prompt_tokens=self._prompt_tokens,
                completion_tokens=self._completion_tokens,
                max_in_flight=self._max_in_flight,
                ledger=list(self._ledger),
                completed_at=list(self._completed_at),
            )


class TestServerState:
    """Limits, faults and stats of one server; safe to call from any thread."""

    __test__ = False  # not a pytest test class

    def __init__(self, config: OpenAITestServerConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        now = time.monotonic()
        self._tokens = RefillingBucket(config.tokens_per_minute, now=now)
        self._requests = (
            RefillingBucket(config.requests_per_minute, now=now) if config.requests_per_minute else None
        )
        self._faults = [rule.model_copy() for rule in config.faults]
        self._random = random.Random(config.seed)
        self.stats = ServerStats(config.tokens_per_minute)

    # -- faults ---------------------------------------------------------------------------------
    def add_fault(self, rule: FaultRule) -> None:
        with self._lock:
            self._faults.append(rule.model_copy())

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def pick_fault(self, text: str, kinds: AbstractSet[str]) -> FaultKind | None:
        """The first rule among `kinds` that fires for a request with this text (consuming a count)."""
        with self._lock:
            for rule in list(self._faults):
                if rule.kind not in kinds:
                    continue
                if rule.marker is not None:
                    if rule.marker in text:
                        return rule.kind
                elif rule.probability is not None:
                    if self._random.random() < rule.probability:
                        return rule.kind
                elif rule.count is not None:
                    rule.count -= 1
                    if rule.count <= 0:
                        self._faults.remove(rule)
                    return rule.kind
                else:
                    return rule.kind
        return None

    def latency(self) -> float:
        low, high = self.config.latency_s
        with self._lock:
            return self._random.uniform(low, high) if high > low else low

    # -- limits ---------------------------------------------------------------------------------
    def admit(self, charge: int) -> float:
        """Charge a request; 0.0 when admitted, else the seconds to wait before it could be."""
        with self._lock:
            now = time.monotonic()
            wait = self._tokens.seconds_until(charge, now)
            if self._requests is not None:
                wait = max(wait, self._requests.seconds_until(1, now))
            if wait > 0:
                return wait
            self._tokens.take(charge, now)
            if self._requests is not None:
                self._requests.take(1, now)
            self.stats.charge(now, charge)
            return 0.0

    def settle(self, charge: int, actual: int) -> None:
        """Settle an admitted request against what it cost (nothing changes in `admission` accounting)."""
        if self.config.accounting == "admission":
            return
        with self._lock:
            now = time.monotonic()
            if charge >= actual:
                self._tokens.give(charge - actual, now)
            else:
                self._tokens.take(actual - charge, now)
            self.stats.charge(now, actual - charge)

    def rate_limit_headers(self) -> dict[str, str]:
        with self._lock:
            now = time.monotonic()
            headers = {
                "x-ratelimit-limit-tokens": str(int(self._tokens.capacity)),
                "x-ratelimit-remaining-tokens": str(max(0, math.floor(self._tokens.level(now)))),
                "x-ratelimit-reset-tokens": format_reset_duration(self._tokens.seconds_until_full(now)),
            }
            if self._requests is not None:
                headers["x-ratelimit-limit-requests"] = str(int(self._requests.capacity))
                headers["x-ratelimit-remaining-requests"] = str(max(0, math.floor(self._requests.level(now))))
                headers["x-ratelimit-reset-requests"] = format_reset_duration(
                    self._requests.seconds_until_full(now)
                )
            return headers

    def used_tokens(self) -> int:
        with self._lock:
            return int(self._tokens.capacity - self._tokens.level(time.monotonic()))


def cut_to_tokens(text: str, tokens: int) -> str:
    """The longest prefix of `text` that the server counts as at most `tokens` tokens."""
    count = 0
    for match in _PIECE.finditer(text):
        count += 1 + (len(match.group(0)) - 1) // 8
        if count > tokens:
            return text[: match.start()]
    return text
