"""What the OpenAI test server counts: requests, statuses, 429s, faults and the token ledger.

The ledger records every change to the TPM bucket's consumption as (seconds since start, tokens):
the admission charge (+estimate) and the settlement (actual - estimate). Summing it over a window
gives the tokens charged per minute as the limiter saw them, which is what a client's sustained
share of the limit means.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

from pydantic import BaseModel, Field


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
    prompt_tokens: int
    completion_tokens: int
    max_in_flight: int
    ledger: list[tuple[float, int]] = Field(description="(seconds since start, token charge delta).")

    @property
    def responses_429(self) -> int:
        return self.responses_by_status.get("429", 0)

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
                prompt_tokens=self._prompt_tokens,
                completion_tokens=self._completion_tokens,
                max_in_flight=self._max_in_flight,
                ledger=list(self._ledger),
            )
