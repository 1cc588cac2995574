"""Token bucket arithmetic, with an injected clock: no test sleeps."""

from __future__ import annotations

import threading
import time

import pytest

from methyl_distill.teacher.protocol import RequestTooLargeError
from methyl_distill.teacher.rate_limit_headers import format_reset_duration, parse_reset_duration
from methyl_distill.teacher.token_bucket import (
    LocalTokenBucket,
    RateLimitHeaders,
    RefillingBucket,
)


class FakeClock:
    """Time that moves only when a waiter waits."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wait(self, condition: threading.Condition, timeout: float | None) -> None:
        assert timeout is not None, "a single-threaded test must never wait without a deadline"
        self.waits.append(timeout)
        self.now += timeout


def make_bucket(tpm: int = 60_000, rpm: int | None = None) -> tuple[LocalTokenBucket, FakeClock]:
    clock = FakeClock()
    return LocalTokenBucket(tpm, rpm, clock=clock, wait=clock.wait), clock


def test_refilling_bucket_refills_continuously_up_to_capacity() -> None:
    bucket = RefillingBucket(600, now=0.0)  # 10 tokens per second
    bucket.take(600, now=0.0)
    assert bucket.level(0.0) == 0
    assert bucket.level(3.0) == pytest.approx(30)
    assert bucket.seconds_until(100, now=3.0) == pytest.approx(7.0)
    assert bucket.level(1000.0) == 600  # never above capacity
    assert bucket.seconds_until(601, now=1000.0) == float("inf")
    bucket.give(50, now=1000.0)
    assert bucket.level(1000.0) == 600


def test_reserve_is_immediate_while_the_bucket_holds_enough() -> None:
    bucket, clock = make_bucket(60_000)
    bucket.reserve(40_000)
    bucket.reserve(20_000)
    assert clock.now == 0.0
    assert bucket.available_tokens() == 0


def test_reserve_waits_exactly_for_the_missing_tokens() -> None:
    bucket, clock = make_bucket(60_000)  # refills 1000 tokens per second
    bucket.reserve(50_000)
    bucket.reserve(15_000)  # 5000 missing -> 5 s
    assert clock.now == pytest.approx(5.0)
    assert bucket.available_tokens() == pytest.approx(0.0, abs=1e-6)


def test_reconcile_refunds_the_unused_part_without_exceeding_capacity() -> None:
    bucket, clock = make_bucket(60_000)
    reservation = bucket.reserve(50_000)
    assert bucket.available_tokens() == 10_000
    bucket.reconcile(reservation, 20_000)
    assert bucket.available_tokens() == 40_000
    bucket.reconcile(reservation, 0)  # settling twice changes nothing
    assert bucket.available_tokens() == 40_000
    clock.now = 100.0
    small = bucket.reserve(1_000)
    bucket.reconcile(small, 0)
    assert bucket.available_tokens() == 60_000


def test_reconcile_charges_a_request_that_cost_more_than_reserved() -> None:
    bucket, clock = make_bucket(60_000)
    reservation = bucket.reserve(10_000)
    bucket.reconcile(reservation, 70_000)  # 60_000 more than reserved: the level goes into debt
    assert bucket.available_tokens() == pytest.approx(-10_000)
    bucket.reserve(1_000)
    assert clock.now == pytest.approx(11.0)


def test_a_request_larger_than_the_limit_is_refused_outright() -> None:
    bucket, clock = make_bucket(60_000)
    with pytest.raises(RequestTooLargeError) as caught:
        bucket.reserve(60_001)
    assert caught.value.requested_tokens == 60_001
    assert caught.value.limit_tokens == 60_000
    assert clock.waits == []


def test_requests_per_minute_is_a_second_bucket() -> None:
    bucket, clock = make_bucket(1_000_000, rpm=3)
    for _ in range(3):
        bucket.reserve(10)
    assert clock.now == 0.0
    bucket.reserve(10)  # one request refills every 20 s
    assert clock.now == pytest.approx(20.0)


def test_headers_tighten_limit_and_level() -> None:
    bucket, _ = make_bucket(60_000, rpm=100)
    bucket.observe_headers(
        {
            "x-ratelimit-limit-tokens": "30000",
            "x-ratelimit-remaining-tokens": "1200",
            "x-ratelimit-limit-requests": "50",
            "x-ratelimit-remaining-requests": "7",
        }
    )
    assert bucket.limit_tokens == 30_000
    assert bucket.limit_requests == 50
    assert bucket.available_tokens() == 1_200
    with pytest.raises(RequestTooLargeError):
        bucket.reserve(30_001)
    # A looser server never loosens the configured budget.
    bucket.observe_headers({"x-ratelimit-limit-tokens": "90000", "x-ratelimit-remaining-tokens": "90000"})
    assert bucket.limit_tokens == 30_000
    assert bucket.available_tokens() == 1_200


def test_penalize_holds_every_reservation_until_retry_after() -> None:
    bucket, clock = make_bucket(60_000)
    bucket.penalize(2.5)
    bucket.reserve(1)
    assert clock.now == pytest.approx(2.5)
    bucket.penalize(-3)  # nonsense values hold nothing
    bucket.reserve(1)
    assert clock.now == pytest.approx(2.5)


def test_reserve_times_out_when_asked() -> None:
    bucket, clock = make_bucket(60_000)
    bucket.reserve(60_000)
    with pytest.raises(TimeoutError):
        bucket.reserve(30_000, timeout=10.0)
    assert clock.now == pytest.approx(10.0)
    assert bucket.available_tokens() == pytest.approx(10_000)  # the timed-out waiter took nothing


def test_reset_durations_round_trip() -> None:
    assert parse_reset_duration("6m0s") == 360.0
    assert parse_reset_duration("1.5s") == 1.5
    assert parse_reset_duration("20ms") == pytest.approx(0.02)
    assert parse_reset_duration("1h2m3s") == 3723.0
    assert parse_reset_duration("17") == 17.0
    assert parse_reset_duration("soon") is None
    for seconds in (0.25, 1.5, 59.0, 61.5, 600.0):
        assert parse_reset_duration(format_reset_duration(seconds)) == pytest.approx(seconds, abs=1e-3)
    assert RateLimitHeaders.parse({"X-RateLimit-Reset-Tokens": "2m"}).reset_tokens_s == 120.0


def test_waiters_are_served_in_arrival_order() -> None:
    """A large reservation queued first is not starved by small ones arriving later (real threads)."""
    bucket = LocalTokenBucket(600_000)  # 10_000 tokens per second
    bucket.reserve(600_000)
    order: list[str] = []
    big = threading.Thread(target=lambda: (bucket.reserve(2_000), order.append("big")))
    big.start()
    time.sleep(0.02)  # the big waiter queues first
    smalls = [threading.Thread(target=lambda: (bucket.reserve(100), order.append("small"))) for _ in range(5)]
    for thread in smalls:
        thread.start()
    for thread in [big, *smalls]:
        thread.join(timeout=5)
    assert order[0] == "big"
    assert len(order) == 6


@pytest.mark.flow
def test_prefect_bucket_reserves_and_refunds_global_concurrency_slots(prefect_harness: None) -> None:
    from uuid import uuid4

    from prefect.client.orchestration import get_client

    from methyl_distill.teacher.token_bucket import PrefectTokenBucket, ensure_limit

    name = f"test-teacher-tpm-{uuid4().hex[:8]}"
    bucket = PrefectTokenBucket(name, 600)  # creates the limit: 600 slots, decaying 10 per second

    def read() -> tuple[int, float, float]:
        with get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name(name)
            return limit.limit, limit.slot_decay_per_second, limit.active_slots

    assert read() == (600, 10.0, 0)
    reservation = bucket.reserve(400)
    assert 350 <= read()[2] <= 400  # reads show the slots left after decay (a loaded machine is slow)
    bucket.reconcile(reservation, 100)  # releases the 300 slots the request did not use
    bucket.reconcile(reservation, 100)  # and only once
    assert 50 <= read()[2] <= 100
    with pytest.raises(RequestTooLargeError):
        bucket.reserve(601)
    ensure_limit(name, 600, 10.0)  # idempotent
    assert read()[:2] == (600, 10.0)
    ensure_limit(name, 1_200, 20.0)
    assert read()[:2] == (1_200, 20.0)


def test_processes_share_one_budget_when_a_prefect_server_is_configured(
    prefect_harness: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from uuid import uuid4

    from prefect.settings import PREFECT_API_URL

    from methyl_distill.teacher.config import TeacherConfig
    from methyl_distill.teacher.token_bucket import (
        LocalTokenBucket,
        PrefectTokenBucket,
        build_token_bucket,
    )

    name = f"test-shared-tpm-{uuid4().hex[:8]}"
    config = TeacherConfig(tpm=60_000, bucket_limit_name=name)
    assert config.bucket_backend == "auto"
    # The test harness's server lives in this process's settings only, like a command's temporary
    # server: nothing to share with other processes.
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert isinstance(build_token_bucket(config), LocalTokenBucket)
    # A configured server (the environment, as a worker or a user sets it): the shared bucket.
    monkeypatch.setenv("PREFECT_API_URL", str(PREFECT_API_URL.value()))
    first = build_token_bucket(config)
    assert isinstance(first, PrefectTokenBucket) and first.limit_tokens == 60_000

    # A second process configured differently uses the server's budget, and says so.
    with caplog.at_level("WARNING"):
        second = build_token_bucket(config.model_copy(update={"tpm": 600_000}))
    assert second.limit_tokens == 60_000
    assert "using the server's" in caplog.text

    # A 429's retry-after holds back every process sharing the budget, not only the one that got it.
    other = PrefectTokenBucket(name, 60_000)
    first.penalize(2.0)
    started = time.monotonic()
    other.reserve(10)
    assert time.monotonic() - started >= 1.5
