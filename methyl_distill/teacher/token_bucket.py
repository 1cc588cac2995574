"""One tokens-per-minute (and requests-per-minute) budget shared by every teacher call of a run.

OpenAI's limits replenish continuously: a limit of L tokens per minute is a bucket of capacity L
that refills at L/60 tokens per second. A request is charged at admission (estimated prompt tokens
+ max_tokens); whether that charge is later settled against the `usage` the server reports depends
on the endpoint (`teacher.rate_limit_accounting`: `admission` keeps it, `settle` settles it).

Reconcile semantics (both backends): `reserve` takes the estimate before the HTTP call;
`reconcile(reservation, actual)` settles it. With `settle` accounting it gives back `estimate -
actual` when the request cost less (the usual case: max_tokens is a ceiling); with `admission`
accounting an admitted request keeps its whole charge, and only a request that was never admitted
(`actual == 0`: a 429, a stop before sending) is given back. Both take the difference when a request
cost more than reserved. A refund never lifts the level above the capacity, so refunds cannot create
a burst the server would refuse. The reply's rate-limit headers are applied in the same step
(`reconcile(..., headers=...)`), so no other thread can take a refund the server did not grant.

Backends:
- `LocalTokenBucket`: in-process and thread-safe; waiters are served first come, first served,
  so a large reservation is never starved by a stream of small ones.
- `PrefectTokenBucket`: a Prefect global concurrency limit with slot decay is the same bucket
  seen from the other side (occupied slots = capacity - level, decaying at L/60 per second), shared
  by every process and worker that uses the same limit name. Reserving is
  `rate_limit(name, occupy=n, strict=True)`; a refund releases slots through the client's
  `release_concurrency_slots` (the server floors active slots at 0, exactly like a capacity cap).

Both adapt when the server says the budget is tighter than configured: `observe_headers` lowers
the limit or level from `x-ratelimit-*` headers, `penalize` holds every new reservation until a
429's retry-after has passed. Once the accounting is decided, the local bucket also catches up when
the server says more is left than it counts (the prompt estimate errs high), less what was reserved
in the last `IN_TRANSIT_S` seconds; the shared Prefect bucket does not (other processes' requests in
transit are unknown to it), so it errs by the estimate's margin on the safe side.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import httpx

from methyl_distill.teacher.protocol import RequestTooLargeError
from methyl_distill.teacher.rate_limit_accounting import RateLimitAccounting
from methyl_distill.teacher.rate_limit_headers import (
    RateLimitHeaders,
    format_reset_duration,
    parse_reset_duration,
)

__all__ = [
    "LocalTokenBucket",
    "PrefectTokenBucket",
    "RateLimitHeaders",
    "RefillingBucket",
    "Reservation",
    "TokenBudget",
    "build_token_bucket",
    "format_reset_duration",
    "parse_reset_duration",
]

if TYPE_CHECKING:
    from methyl_distill.teacher.config import TeacherConfig

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
Waiter = Callable[[threading.Condition, float | None], object]


class RefillingBucket:
    """Continuous-refill bucket arithmetic: no locking, the caller passes the time.

    The level may go below zero (a debt) when a request turns out to cost more than reserved;
    it never exceeds the capacity.
    """

    def __init__(self, capacity: float, per_minute: float | None = None, *, now: float) -> None:
        if capacity <= 0:
            raise ValueError(f"bucket capacity must be positive, got {capacity}")
        self.capacity = float(capacity)
        self.per_second = float(per_minute if per_minute is not None else capacity) / 60.0
        self._level = self.capacity
        self._updated = now

    def level(self, now: float) -> float:
        self._refill(now)
        return self._level

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._level = min(self.capacity, self._level + (now - self._updated) * self.per_second)
            self._updated = now

    def seconds_until(self, amount: float, now: float) -> float:
        """Seconds until `amount` can be taken (0 when it can now; inf when it never can)."""
        if amount > self.capacity:
            return math.inf
        missing = amount - self.level(now)
        return max(0.0, missing / self.per_second)

    def seconds_until_full(self, now: float) -> float:
        return max(0.0, (self.capacity - self.level(now)) / self.per_second)

    def take(self, amount: float, now: float) -> None:
        self._refill(now)
        self._level -= amount

    def give(self, amount: float, now: float) -> None:
        self._refill(now)
        self._level = min(self.capacity, self._level + amount)

    def cap_level(self, value: float, now: float) -> None:
        """Lower the level to `value` if it is higher (the server knows better)."""
        self._refill(now)
        self._level = min(self._level, value)

    def set_capacity(self, capacity: float, now: float) -> None:
        """Change the limit: capacity and refill rate together, as a per-minute limit does."""
        self._refill(now)
        self.capacity = float(capacity)
        self.per_second = self.capacity / 60.0
        self._level = min(self._level, self.capacity)


_reservation_ids = itertools.count(1)
# A request is admitted only while this many seconds of refill stay in hand after it. The server
# admits a request a little after it is reserved here (in transit; seconds on a busy machine), so
# after a full bucket this side's refill starts earlier than the server's, and without a margin the
# first burst of a run overshoots by that much (measured: 2.6% of requests answered 429 at 1M TPM).
# It costs nothing in steady state: admissions still follow the refill, the level floats at the
# margin instead of at zero.
ADMISSION_MARGIN_S = 3.0
# A request reserved this recently may not have reached the server when a reply's remaining count
# was taken: a local bucket catching up with that count leaves these out.
IN_TRANSIT_S = 0.5


@dataclass
class Reservation:
    """Tokens and requests taken from a budget for one HTTP call, until it is reconciled."""

    tokens: int
    requests: int = 1
    id: int = field(default_factory=lambda: next(_reservation_ids))
    reserved_at: float = field(default_factory=time.monotonic)
    settled: bool = False


class TokenBudget(Protocol):
    """What the teacher client needs from a budget."""

    accounting: RateLimitAccounting

    @property
    def limit_tokens(self) -> int: ...

    def reserve(self, tokens: int, *, timeout: float | None = None) -> Reservation:
        """Block until `tokens` and one request are admitted; RequestTooLargeError if they never can be."""
        ...

    def reconcile(
        self, reservation: Reservation, actual_tokens: int, headers: Mapping[str, str] | None = None
    ) -> None:
        """Settle a reservation against what the request really cost (0: it was never admitted), and
        apply the reply's x-ratelimit-* headers in the same step."""
        ...

    def shrink(self, reservation: Reservation, tokens: int) -> None:
        """Give back `tokens` of a reservation whose request has not been sent yet (a smaller max_tokens)."""
        ...

    def observe_headers(self, headers: Mapping[str, str]) -> None:
        """Tighten the budget from a response's x-ratelimit-* headers."""
        ...

    def penalize(self, retry_after_s: float) -> None:
        """Hold every new reservation for `retry_after_s` seconds (after a 429)."""
        ...


def _condition_wait(condition: threading.Condition, timeout: float | None) -> object:
    return condition.wait(timeout)


class LocalTokenBucket:
    """Thread-safe TPM + RPM bucket for the threads of one process.

    `clock` and `wait` are injectable so tests can drive time without sleeping: `wait(condition,
    seconds)` is called with the condition held and must return after (at most) `seconds`.
    """

    def __init__(
        self,
        tokens_per_minute: int,
        requests_per_minute: int | None = None,
        *,
        clock: Clock = time.monotonic,
        wait: Waiter = _condition_wait,
        accounting: RateLimitAccounting | None = None,
        margin_s: float = 0.0,
    ) -> None:
        self.accounting = accounting or RateLimitAccounting("settle")
        self._margin_s = max(0.0, margin_s)  # seconds of refill kept in hand (ADMISSION_MARGIN_S)
        self._clock = clock
        self._wait = wait
        self._condition = threading.Condition()
        now = clock()
        self._tokens = RefillingBucket(tokens_per_minute, now=now)
        self._requests = (
            RefillingBucket(requests_per_minute, now=now) if requests_per_minute is not None else None
        )
        self._blocked_until = 0.0
        self._queue: deque[object] = deque()
        self._recent: deque[tuple[float, int]] = deque()  # (when, tokens) of recent reservations

    def __repr__(self) -> str:
        rpm = int(self._requests.capacity) if self._requests else None
        return f"LocalTokenBucket(tokens_per_minute={self.limit_tokens}, requests_per_minute={rpm})"

    @property
    def limit_tokens(self) -> int:
        return int(self._tokens.capacity)

    @property
    def limit_requests(self) -> int | None:
        return int(self._requests.capacity) if self._requests else None

    def available_tokens(self) -> float:
        with self._condition:
            return self._tokens.level(self._clock())

    def _check_size(self, tokens: int) -> None:
        if tokens > self._tokens.capacity:
            raise RequestTooLargeError(
                f"request of {tokens} tokens exceeds the budget of {self.limit_tokens} tokens per minute: "
                "split the input",
                requested_tokens=tokens,
                limit_tokens=self.limit_tokens,
            )

    def _delay(self, tokens: int, now: float) -> float:
        in_hand = min(self._tokens.capacity, tokens + self._tokens.per_second * self._margin_s)
        delay = max(self._blocked_until - now, self._tokens.seconds_until(in_hand, now))
        if self._requests is not None:
            delay = max(delay, self._requests.seconds_until(1, now))
        return delay

    def reserve(self, tokens: int, *, timeout: float | None = None) -> Reservation:
        if tokens < 0:
            raise ValueError(f"cannot reserve a negative number of tokens ({tokens})")
        self._check_size(tokens)
        me = object()
        with self._condition:
            start = self._clock()
            self._queue.append(me)
            try:
                while True:
                    self._check_size(tokens)  # the limit may have been lowered while waiting
                    now = self._clock()
                    delay: float | None = None
                    if self._queue[0] is me:
                        delay = self._delay(tokens, now)
                        if delay <= 0:
                            self._tokens.take(tokens, now)
                            self._recent.append((now, tokens))
                            if self._requests is not None:
                                self._requests.take(1, now)
                            return Reservation(tokens=tokens)
                    if timeout is not None:
                        left = start + timeout - now
                        if left <= 0:
                            raise TimeoutError(f"no budget for {tokens} tokens within {timeout} s")
                        delay = left if delay is None else min(delay, left)
                    self._wait(self._condition, delay)
            finally:
                self._queue.remove(me)
                self._condition.notify_all()

    def reconcile(
        self, reservation: Reservation, actual_tokens: int, headers: Mapping[str, str] | None = None
    ) -> None:
        with self._condition:
            if not reservation.settled:
                reservation.settled = True
                now = self._clock()
                difference = settlement(reservation.tokens, actual_tokens, self.accounting)
                if difference > 0:
                    self._tokens.give(difference, now)
                elif difference < 0:
                    self._tokens.take(-difference, now)
            if headers is not None:
                self._observe(RateLimitHeaders.parse(headers))
            self._condition.notify_all()

    def shrink(self, reservation: Reservation, tokens: int) -> None:
        tokens = min(max(0, tokens), reservation.tokens)
        with self._condition:
            if reservation.settled or not tokens:
                return
            reservation.tokens -= tokens
            self._tokens.give(tokens, self._clock())
            self._condition.notify_all()

    def observe_headers(self, headers: Mapping[str, str]) -> None:
        with self._condition:
            self._observe(RateLimitHeaders.parse(headers))

    def _observe(self, parsed: RateLimitHeaders) -> None:
        """Tighten the budget to what the server says (the condition held)."""
        now = self._clock()
        if parsed.limit_tokens is not None and 0 < parsed.limit_tokens < self._tokens.capacity:
            logger.warning(
                "server limit is %d tokens/min, below the configured %d: adopting it",
                parsed.limit_tokens,
                self.limit_tokens,
            )
            self._tokens.set_capacity(parsed.limit_tokens, now)
        if parsed.remaining_tokens is not None:
            self._tokens.cap_level(parsed.remaining_tokens, now)
            same_limit = parsed.limit_tokens is not None and parsed.limit_tokens <= self._tokens.capacity
            if self.accounting.decided and same_limit:
                # The server has more left than we count (our prompt estimate errs high): catch up,
                # less what was reserved here too recently for the server to have admitted it yet.
                # Never towards a larger limit than configured: that budget is not all ours.
                while self._recent and self._recent[0][0] < now - IN_TRANSIT_S:
                    self._recent.popleft()
                target = parsed.remaining_tokens - sum(tokens for _, tokens in self._recent)
                level = self._tokens.level(now)
                if target > level:
                    self._tokens.give(target - level, now)
        if self._requests is not None:
            if parsed.limit_requests is not None and 0 < parsed.limit_requests < self._requests.capacity:
                self._requests.set_capacity(parsed.limit_requests, now)
            if parsed.remaining_requests is not None:
                self._requests.cap_level(parsed.remaining_requests, now)

    def penalize(self, retry_after_s: float) -> None:
        with self._condition:
            self._blocked_until = max(self._blocked_until, self._clock() + max(0.0, retry_after_s))
            self._condition.notify_all()


class PrefectTokenBucket:
    """The same budget over Prefect global concurrency limits, shared across processes and workers.

    Slots of the limit `name` are tokens (capacity TPM, decay TPM/60 per second); with an RPM, a
    second limit `name + "-requests"` counts requests. A limit that exists with other values is used
    as it is (a process does not overwrite a budget others share). `penalize` holds every process: the
    429's retry-after goes into the Prefect variable `name + "-hold-until"`, which each process reads
    before it reserves (at most once a second). The shared level is tightened from response headers
    by occupying the surplus slots.
    """

    def __init__(
        self,
        name: str,
        tokens_per_minute: int,
        requests_per_minute: int | None = None,
        *,
        ensure: bool = True,
        clock: Clock = time.monotonic,
        accounting: RateLimitAccounting | None = None,
    ) -> None:
        self.accounting = accounting or RateLimitAccounting("settle")
        self.name = name
        self.requests_name = f"{name}-requests"
        self._limit_tokens = tokens_per_minute
        self._limit_requests = requests_per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._blocked_until = 0.0
        self._last_header_sync = -math.inf
        self.hold_variable = f"{name}-hold-until"
        self._hold_checked_at = -math.inf
        if ensure:
            self._limit_tokens = ensure_limit(
                name, tokens_per_minute, tokens_per_minute / 60.0, adopt_existing=True
            )
            if requests_per_minute is not None:
                self._limit_requests = ensure_limit(
                    self.requests_name, requests_per_minute, requests_per_minute / 60.0, adopt_existing=True
                )

    def __repr__(self) -> str:
        return (
            f"PrefectTokenBucket(name={self.name!r}, tokens_per_minute={self._limit_tokens}, "
            f"requests_per_minute={self._limit_requests})"
        )

    @property
    def limit_tokens(self) -> int:
        return self._limit_tokens

    def reserve(self, tokens: int, *, timeout: float | None = None) -> Reservation:
        from prefect.concurrency.sync import rate_limit

        if tokens > self._limit_tokens:
            raise RequestTooLargeError(
                f"request of {tokens} tokens exceeds the budget of {self._limit_tokens} tokens per minute "
                f"(Prefect limit {self.name!r}): split the input",
                requested_tokens=tokens,
                limit_tokens=self._limit_tokens,
            )
        self._read_shared_hold()
        with self._lock:
            hold = self._blocked_until - self._clock()
        if hold > 0:
            time.sleep(hold)
        if tokens > 0:
            rate_limit(self.name, occupy=tokens, timeout_seconds=timeout, strict=True)
        if self._limit_requests is not None:
            rate_limit(self.requests_name, occupy=1, timeout_seconds=timeout, strict=True)
        return Reservation(tokens=tokens)

    def reconcile(
        self, reservation: Reservation, actual_tokens: int, headers: Mapping[str, str] | None = None
    ) -> None:
        with self._lock:
            first = not reservation.settled
            reservation.settled = True
        if first:
            self._settle(reservation, actual_tokens)
        if headers is not None:
            self.observe_headers(headers)

    def shrink(self, reservation: Reservation, tokens: int) -> None:
        tokens = min(max(0, tokens), reservation.tokens)
        with self._lock:
            if reservation.settled or not tokens:
                return
            reservation.tokens -= tokens
        self._release(tokens, held_s=time.monotonic() - reservation.reserved_at)

    def _settle(self, reservation: Reservation, actual_tokens: int) -> None:
        difference = settlement(reservation.tokens, actual_tokens, self.accounting)
        if difference > 0:
            self._release(difference, held_s=time.monotonic() - reservation.reserved_at)
        elif difference < 0:
            from prefect.concurrency.sync import rate_limit

            rate_limit(self.name, occupy=min(-difference, self._limit_tokens), strict=True)

    def _release(self, slots: int, held_s: float) -> None:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            # The server floors active slots at 0 after decay: the same cap as a local refund.
            # occupancy_seconds (> 0) feeds its average-occupancy estimate for waiting clients.
            client.release_concurrency_slots(
                names=[self.name], slots=slots, occupancy_seconds=max(0.001, held_s)
            )

    def observe_headers(self, headers: Mapping[str, str]) -> None:
        parsed = RateLimitHeaders.parse(headers)
        if parsed.remaining_tokens is None:
            return
        now = self._clock()
        with self._lock:  # one read of the shared limit per second is plenty
            if now - self._last_header_sync < 1.0:
                return
            self._last_header_sync = now
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name(self.name)
            free = limit.limit - limit.active_slots
            surplus = free - parsed.remaining_tokens
            # Only a clear disagreement is worth a write (in-flight requests make small ones normal).
            if surplus > 0.05 * limit.limit:
                try:
                    client.increment_concurrency_slots(names=[self.name], slots=surplus, mode="rate_limit")
                except httpx.HTTPStatusError as exc:  # 423: others took the slots meanwhile; fine
                    logger.debug("could not occupy %d surplus slots of %r: %s", surplus, self.name, exc)

    def penalize(self, retry_after_s: float) -> None:
        """Hold this process and, through a Prefect variable, every process sharing the budget."""
        wait = max(0.0, retry_after_s)
        with self._lock:
            self._blocked_until = max(self._blocked_until, self._clock() + wait)
        from prefect.variables import Variable

        until = time.time() + wait
        try:
            current = Variable.get(self.hold_variable, default=None)
            if not isinstance(current, int | float) or current < until:
                Variable.set(self.hold_variable, until, overwrite=True)
        except Exception as exc:  # the local hold still applies
            logger.debug("could not share the hold of %r: %s", self.name, exc)

    def _read_shared_hold(self) -> None:
        """Adopt a hold another process set after a 429 (read at most once a second)."""
        now = self._clock()
        with self._lock:
            if now - self._hold_checked_at < 1.0:
                return
            self._hold_checked_at = now
        from prefect.variables import Variable

        try:
            until = Variable.get(self.hold_variable, default=None)
        except Exception as exc:
            logger.debug("could not read the shared hold of %r: %s", self.name, exc)
            return
        if isinstance(until, int | float) and until > time.time():
            with self._lock:
                self._blocked_until = max(self._blocked_until, now + (until - time.time()))


def settlement(reserved: int, actual_tokens: int, accounting: RateLimitAccounting) -> int:
    """Tokens to give back (positive) or take (negative) when a request of `reserved` tokens settles."""
    actual = max(0, actual_tokens)
    difference = reserved - actual
    if difference > 0 and actual > 0 and accounting.keeps_admission_charge:
        return 0  # admitted: the server keeps the whole admission charge for the window
    return difference


def ensure_limit(name: str, limit: int, slot_decay_per_second: float, *, adopt_existing: bool = False) -> int:
    """Create the Prefect global concurrency limit `name`, or bring it to these values (idempotent);
    returns the limit in force. With `adopt_existing`, a limit that exists with other values is left
    as it is and its value returned, with a warning: a process must not overwrite a budget others share
    (`methyl-distill setup-prefect` is where it is set on purpose)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            existing = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(
                        name=name, limit=limit, slot_decay_per_second=slot_decay_per_second, active=True
                    )
                )
                logger.info(
                    "created global concurrency limit %r: %d, decay %.3f/s",
                    name,
                    limit,
                    slot_decay_per_second,
                )
                return limit
            except ObjectAlreadyExists:  # another process created it first
                existing = client.read_global_concurrency_limit_by_name(name)
        differs = existing.limit != limit or not math.isclose(
            existing.slot_decay_per_second or 0.0, slot_decay_per_second
        )
        if differs and adopt_existing:
            logger.warning(
                "the shared budget %r on the Prefect server is %d per minute, this process is configured for "
                "%d: using the server's (change it with `methyl-distill setup-prefect`)",
                name,
                existing.limit,
                limit,
            )
            if not existing.active:
                client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active=True))
            return existing.limit
        if differs or not existing.active:
            client.update_global_concurrency_limit(
                name,
                GlobalConcurrencyLimitUpdate(
                    limit=limit, slot_decay_per_second=slot_decay_per_second, active=True
                ),
            )
            logger.info(
                "updated global concurrency limit %r to %d, decay %.3f/s", name, limit, slot_decay_per_second
            )
        return limit


def prefect_server_configured() -> bool:
    """Whether this process talks to a Prefect server of the user's configuration (PREFECT_API_URL in
    the environment or the active Prefect profile), not a temporary one started for a single command
    or test: only then can other processes share a budget kept there."""
    import os

    from prefect.settings import PREFECT_API_URL
    from prefect.settings.profiles import load_current_profile

    from methyl_distill.ops.temporary_prefect_server import is_temporary_api

    url = os.environ.get("PREFECT_API_URL") or load_current_profile().settings.get(PREFECT_API_URL)
    return bool(url) and not is_temporary_api(str(url))


def build_token_bucket(config: TeacherConfig) -> TokenBudget:
    """The budget the teacher configuration asks for (`auto`: shared when a Prefect server is configured)."""
    backend = config.bucket_backend
    accounting = RateLimitAccounting(config.rate_limit_accounting)
    if backend == "auto":
        backend = "prefect" if prefect_server_configured() else "local"
    if backend == "prefect":
        logger.info(
            "teacher budget: the Prefect global concurrency limit %r, shared", config.bucket_limit_name
        )
        return PrefectTokenBucket(config.bucket_limit_name, config.tpm, config.rpm, accounting=accounting)
    return LocalTokenBucket(config.tpm, config.rpm, accounting=accounting, margin_s=ADMISSION_MARGIN_S)
