"""How big each request's reply budget is, and how many requests are in flight.

`ReplyBudget` sizes `max_tokens`. Where the endpoint keeps each request's admission charge
(estimated prompt + max_tokens) for the minute, as OpenAI's rate-limit guide describes, every token
of `max_tokens` a reply does not use is budget lost for that minute; the guide's advice is to set
`max_tokens` close to the expected reply. So once the accounting is known to be `admission` and
enough replies have been seen, the request asks for the longest recent reply times a headroom (plus
a margin), never more than the configured `max_output_tokens`. A reply cut off at that sized budget
is asked again at `max_output_tokens` (the caller does it; that is not one of the bounded re-asks,
which are for the model's mistakes), and its length joins the replies seen. While `auto` accounting is
still being found out from the headers, requests ask for the full budget, so that an endpoint
that gives unused tokens back shows it clearly. The extraction cache key names the configured
`max_output_tokens`, never the sized value: sizing changes what a request costs, not its answer.

`InFlightGate` bounds the requests in flight by what the budget can carry: about the budget's
requests per second (tokens per minute / 60 / tokens charged per request, and the RPM limit) times
the latency observed, with headroom, within bounds, adapting as the charge and latency change. The
token bucket still paces admissions; the gate keeps the number of requests waiting on it (each a
running task and a thread) near what the budget can serve, whatever the tier. The thread pool's
size (`--max_concurrency`) stays the upper bound.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from methyl_distill.teacher.rate_limit_accounting import RateLimitAccounting

# Replies seen before max_tokens is sized; the window they are taken from.
SIZING_MIN_REPLIES = 8
SIZING_WINDOW = 64
SIZING_HEADROOM = 1.25
SIZING_MARGIN_TOKENS = 64
SIZING_FLOOR_TOKENS = 256


class ReplyBudget:
    """The max_tokens of the next request; thread-safe."""

    def __init__(
        self,
        enabled: bool = True,
        *,
        min_replies: int = SIZING_MIN_REPLIES,
        window: int = SIZING_WINDOW,
        headroom: float = SIZING_HEADROOM,
        margin_tokens: int = SIZING_MARGIN_TOKENS,
        floor_tokens: int = SIZING_FLOOR_TOKENS,
    ) -> None:
        self.enabled = enabled
        self._min_replies = min_replies
        self._replies: deque[int] = deque(maxlen=window)
        self._headroom = headroom
        self._margin = margin_tokens
        self._floor = floor_tokens
        self._lock = threading.Lock()
        self.sized_requests = 0
        self.cut_off_at_sized = 0

    def max_tokens(self, ceiling: int, accounting: RateLimitAccounting) -> int:
        """The budget to ask for: `ceiling` (the configured max_output_tokens) unless sizing applies."""
        if not self.enabled or not accounting.keeps_admission_charge:
            return ceiling
        if accounting.headers_seen and not accounting.decided:
            return ceiling  # still finding out: full-size requests make a give-back visible
        with self._lock:
            if len(self._replies) < self._min_replies:
                return ceiling
            sized = math.ceil(max(self._replies) * self._headroom) + self._margin
            return min(ceiling, max(self._floor, sized))

    def asked(self, budget: int, ceiling: int) -> None:
        """A request went out with `budget` (counted when it is below the ceiling)."""
        if budget < ceiling:
            with self._lock:
                self.sized_requests += 1

    def replied(self, completion_tokens: int) -> None:
        """A complete reply (not cut off) of this many tokens."""
        with self._lock:
            self._replies.append(max(0, completion_tokens))

    def cut_off(self) -> None:
        """A reply was cut off at a sized budget (and is asked again at the full one)."""
        with self._lock:
            self.cut_off_at_sized += 1


# Bounds of the requests in flight, and the headroom over budget x latency.
IN_FLIGHT_LOWEST = 4
IN_FLIGHT_HIGHEST = 1024
IN_FLIGHT_HEADROOM = 1.5
_SMOOTHING = 0.2  # weight of the newest observation in the moving averages


class InFlightGate:
    """At most `limit` requests at once; `limit` follows budget x latency. Thread-safe."""

    def __init__(
        self,
        tokens_per_minute: Callable[[], int],
        requests_per_minute: int | None = None,
        *,
        lowest: int = IN_FLIGHT_LOWEST,
        highest: int = IN_FLIGHT_HIGHEST,
        headroom: float = IN_FLIGHT_HEADROOM,
    ) -> None:
        if not 1 <= lowest <= highest:
            raise ValueError(f"in-flight bounds must satisfy 1 <= lowest <= highest, got {lowest}, {highest}")
        self._tokens_per_minute = tokens_per_minute
        self._requests_per_minute = requests_per_minute
        self._lowest, self._highest, self._headroom = lowest, highest, headroom
        self._condition = threading.Condition()
        self._in_flight = 0
        self._limit = highest  # until a reply says what a request costs and how long it takes
        self._charge: float | None = None
        self._latency: float | None = None
        self.peak_in_flight = 0

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def describe(self) -> str:
        if self._charge is None or self._latency is None:
            return f"up to {self._limit} requests in flight (no reply yet)"
        return (
            f"{self._limit} requests in flight (about {self._charge:,.0f} tokens charged per request, "
            f"{self._latency:.1f} s per reply; peak {self.peak_in_flight})"
        )

    @contextmanager
    def slot(self, stop: threading.Event | None = None, poll_s: float = 0.2) -> Iterator[None]:
        """Hold one of the in-flight places for the `with` block (waits for one; a stop ends the wait
        with `InterruptedError`)."""
        with self._condition:
            while self._in_flight >= self._limit:
                if stop is not None and stop.is_set():
                    raise InterruptedError("stopping while waiting for a place in flight")
                self._condition.wait(poll_s if stop is not None else None)
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
        try:
            yield
        finally:
            with self._condition:
                self._in_flight -= 1
                self._condition.notify()

    def observed(self, charged_tokens: int, latency_s: float) -> None:
        """A request charged the budget `charged_tokens` and took `latency_s` to answer."""
        if charged_tokens <= 0 or latency_s < 0:
            return
        with self._condition:
            self._charge = _moving_average(self._charge, float(charged_tokens))
            self._latency = _moving_average(self._latency, latency_s)
            per_second = self._tokens_per_minute() / 60.0 / self._charge
            if self._requests_per_minute is not None:
                per_second = min(per_second, self._requests_per_minute / 60.0)
            wanted = math.ceil(self._headroom * per_second * max(self._latency, 0.05))
            self._limit = min(self._highest, max(self._lowest, wanted))
            self._condition.notify_all()


def _moving_average(previous: float | None, value: float) -> float:
    return value if previous is None else (1 - _SMOOTHING) * previous + _SMOOTHING * value
