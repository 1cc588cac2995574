"""Rate-limit accounting, sized max_tokens and the requests in flight: the plain rules, then the teacher
against the project's test server in both accountings (real HTTP, the real openai SDK)."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from methyl_distill.extraction.prompts import build_messages
from methyl_distill.extraction.question_bank import load_question_bank
from methyl_distill.extraction.records import TeacherExtraction
from methyl_distill.teacher.config import TeacherConfig
from methyl_distill.teacher.openai_client import OpenAITeacher
from methyl_distill.teacher.rate_limit_accounting import RateLimitAccounting
from methyl_distill.teacher.rate_limit_headers import RateLimitHeaders
from methyl_distill.teacher.request_pacing import InFlightGate, ReplyBudget
from methyl_distill.teacher.token_bucket import LocalTokenBucket, RefillingBucket, settlement
from tests.fake_openai.server import OpenAITestServerConfig, running_test_server

# -- settling a reservation ------------------------------------------------------------------------


def test_admission_accounting_keeps_the_charge_of_an_admitted_request() -> None:
    admission, settle = RateLimitAccounting("admission"), RateLimitAccounting("settle")
    assert settlement(8_000, 3_000, settle) == 5_000  # unused max_tokens given back
    assert settlement(8_000, 3_000, admission) == 0  # kept for the window
    assert settlement(8_000, 0, admission) == 8_000  # never admitted (a 429): nothing was charged
    assert settlement(8_000, 9_000, admission) == -1_000  # cost more than reserved: taken either way
    assert settlement(8_000, 9_000, settle) == -1_000


def test_the_local_bucket_gives_nothing_back_under_admission_accounting() -> None:
    now = [0.0]
    bucket = LocalTokenBucket(60_000, clock=lambda: now[0], accounting=RateLimitAccounting("admission"))
    reservation = bucket.reserve(10_000)
    bucket.reconcile(reservation, 2_000)
    assert bucket.available_tokens() == 50_000
    settle_bucket = LocalTokenBucket(60_000, clock=lambda: now[0])
    settle_bucket.reconcile(settle_bucket.reserve(10_000), 2_000)
    assert settle_bucket.available_tokens() == 58_000


def test_a_reply_s_headers_apply_in_the_same_step_as_its_refund() -> None:
    """The refund never shows to another request when the server's remaining count is lower."""
    now = [0.0]
    bucket = LocalTokenBucket(60_000, clock=lambda: now[0])
    reservation = bucket.reserve(10_000)
    bucket.reconcile(reservation, 2_000, headers={"x-ratelimit-remaining-tokens": "45000"})
    assert bucket.available_tokens() == 45_000


def test_a_decided_bucket_catches_up_with_the_server_less_what_is_still_in_transit() -> None:
    """Our prompt estimate errs high: where the server says more is left, the bucket catches up,
    except for what was reserved too recently for the server to have counted it."""
    now = [0.0]
    bucket = LocalTokenBucket(60_000, clock=lambda: now[0], accounting=RateLimitAccounting("admission"))
    first = bucket.reserve(40_000)
    now[0] = 1.0  # refilled 1,000
    bucket.reserve(5_000)  # just now: possibly not yet admitted there
    headers = {"x-ratelimit-limit-tokens": "60000", "x-ratelimit-remaining-tokens": "30000"}
    bucket.reconcile(first, 30_000, headers=headers)
    assert bucket.available_tokens() == 25_000  # 30,000 left there, less the 5,000 in transit
    bucket.observe_headers({"x-ratelimit-limit-tokens": "90000", "x-ratelimit-remaining-tokens": "80000"})
    assert bucket.available_tokens() == 25_000  # a larger limit than ours: its remaining is not ours
    undecided = LocalTokenBucket(60_000, clock=lambda: now[0], accounting=RateLimitAccounting("auto"))
    undecided.reconcile(undecided.reserve(40_000), 30_000, headers=headers)
    assert undecided.available_tokens() == 20_000  # not sure what the count means yet: no catching up


# -- finding out the accounting from the headers -----------------------------------------------------


def simulate_replies(
    server_accounting: str, accounting: RateLimitAccounting, replies: int = 40, limit: int = 200_000
) -> None:
    """A server keeping or settling charges, replies 0.5 s apart, each request reserved a little above
    what the server charges (our prompt estimate errs high), two more requests admitted between replies."""
    rng = random.Random(7)
    server = RefillingBucket(limit, now=0.0)
    now = 0.0
    gap = 0.5 * 200_000 / limit  # a larger limit serves proportionally more requests per second
    for _ in range(replies):
        for _ in range(2):
            server_charge = 4_200 + 4_096
            server.take(server_charge, now)
            accounting.reserved(server_charge + rng.randint(300, 600))  # what the client reserved
        now += gap
        used = 4_300 + rng.randint(0, 900)
        reserved = 4_200 + 4_096 + rng.randint(300, 600)
        if server_accounting == "settle":
            server.give(4_200 + 4_096 - used, now)
        remaining = int(server.level(now))
        accounting.answered(
            now, reserved, used, RateLimitHeaders(limit_tokens=limit, remaining_tokens=remaining)
        )


@pytest.mark.parametrize("limit", [200_000, 1_000_000, 30_000_000])
@pytest.mark.parametrize("server_accounting", ["admission", "settle"])
def test_auto_finds_the_server_s_accounting_from_the_remaining_tokens(
    server_accounting: str, limit: int
) -> None:
    accounting = RateLimitAccounting("auto")
    assert accounting.keeps_admission_charge and not accounting.decided  # the safe side until known
    simulate_replies(server_accounting, accounting, limit=limit)
    assert accounting.decided
    assert accounting.mode == server_accounting
    assert server_accounting in accounting.describe()


def test_without_headers_auto_stays_on_the_safe_side() -> None:
    accounting = RateLimitAccounting("auto")
    for index in range(20):
        accounting.answered(float(index), 8_000, 3_000, RateLimitHeaders())
    assert accounting.mode == "admission" and not accounting.decided and not accounting.headers_seen


def test_a_configured_accounting_is_never_changed_by_headers() -> None:
    accounting = RateLimitAccounting("admission")
    simulate_replies("settle", accounting)
    assert accounting.mode == "admission" and accounting.decided


# -- sizing max_tokens ----------------------------------------------------------------------------


def test_max_tokens_is_sized_from_the_replies_seen_only_where_the_charge_is_kept() -> None:
    budget = ReplyBudget(min_replies=4)
    admission, settle = RateLimitAccounting("admission"), RateLimitAccounting("settle")
    assert budget.max_tokens(4_096, admission) == 4_096  # nothing seen yet
    for tokens in (600, 900, 750, 800):
        budget.replied(tokens)
    assert budget.max_tokens(4_096, admission) == 900 * 5 // 4 + 64  # longest reply, headroom, margin
    assert budget.max_tokens(1_000, admission) == 1_000  # never above the configured budget
    assert budget.max_tokens(4_096, settle) == 4_096  # unused tokens come back: no need to size
    assert ReplyBudget(enabled=False).max_tokens(4_096, admission) == 4_096


def test_while_auto_reads_the_headers_requests_ask_for_the_full_budget() -> None:
    budget = ReplyBudget(min_replies=1)
    budget.replied(500)
    accounting = RateLimitAccounting("auto")
    accounting.answered(0.0, 8_000, 3_000, RateLimitHeaders(limit_tokens=200_000, remaining_tokens=150_000))
    assert accounting.headers_seen and not accounting.decided
    assert budget.max_tokens(4_096, accounting) == 4_096
    assert budget.max_tokens(4_096, RateLimitAccounting("auto")) == 500 * 5 // 4 + 64  # no headers: sized


def test_small_replies_are_never_given_a_budget_below_the_floor() -> None:
    budget = ReplyBudget(min_replies=1)
    budget.replied(10)
    assert budget.max_tokens(4_096, RateLimitAccounting("admission")) == 256


# -- requests in flight ------------------------------------------------------------------------------


def test_in_flight_follows_budget_times_latency_within_bounds() -> None:
    gate = InFlightGate(lambda: 1_000_000, headroom=1.5)
    assert gate.limit == 1024  # no reply yet: the upper bound
    gate.observed(charged_tokens=5_000, latency_s=12.0)
    # 1M / 60 / 5000 = 3.33 requests per second, x 12 s, x 1.5 headroom = 60
    assert gate.limit == 60
    slow = InFlightGate(lambda: 200_000, headroom=1.5)
    slow.observed(5_000, 12.0)
    assert slow.limit == 12
    capped = InFlightGate(lambda: 1_000_000, requests_per_minute=60, headroom=1.0)
    capped.observed(5_000, 12.0)
    assert capped.limit == 12  # one request a second at most
    assert InFlightGate(lambda: 10_000, lowest=4).limit == 1024
    tiny = InFlightGate(lambda: 10_000, lowest=4)
    tiny.observed(5_000, 1.0)
    assert tiny.limit == 4


def test_in_flight_adapts_as_latency_changes() -> None:
    gate = InFlightGate(lambda: 1_000_000, headroom=1.0)
    gate.observed(5_000, 12.0)
    first = gate.limit
    for _ in range(30):
        gate.observed(5_000, 3.0)
    assert gate.limit < first / 3


def test_the_gate_holds_requests_beyond_the_limit_and_a_stop_ends_the_wait() -> None:
    gate = InFlightGate(lambda: 60_000, lowest=1, highest=2, headroom=1.0)
    gate.observed(60_000, 0.1)  # one request a minute: the lowest bound, 1
    assert gate.limit == 1
    stop = threading.Event()
    entered = threading.Event()
    outcome: list[str] = []

    def second() -> None:
        try:
            with gate.slot(stop, poll_s=0.01):
                outcome.append("entered")
                entered.set()
        except InterruptedError:
            outcome.append("stopped")

    with gate.slot():
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.1)
        assert not entered.is_set() and gate.in_flight == 1
        stop.set()
        thread.join(2)
    assert outcome == ["stopped"]
    with gate.slot():
        assert gate.in_flight == 1
    assert gate.in_flight == 0 and gate.peak_in_flight == 1


# -- the teacher against the test server in both accountings ------------------------------------------

PAPER = (
    "SEPT9 promoter methylation in plasma for colorectal cancer screening.\n"
    + "The SEPT9 promoter was hypermethylated in colorectal cancer compared with controls. "
    "Methylated SEPT9 detected colorectal cancer with a sensitivity of 68% and a specificity of 79%. "
    "Samples were collected before treatment and processed within four hours of collection. " * 12
)


@pytest.mark.integration
@pytest.mark.parametrize("server_accounting", ["admission", "settle"])
def test_the_teacher_finds_the_accounting_sizes_max_tokens_and_is_never_refused(
    server_accounting: str,
) -> None:
    """32 requests from 12 threads against a server whose TPM limit holds about 17 of them at the
    configured max_tokens: no 429, the accounting found from the headers, max_tokens sized only where
    the server keeps the admission charge."""
    tpm = 100_000
    config = OpenAITestServerConfig(
        tokens_per_minute=tpm, latency_s=(0.05, 0.1), accounting=server_accounting
    )
    bank = load_question_bank()
    with running_test_server(config) as handle:
        teacher = OpenAITeacher(TeacherConfig(base_url=handle.base_url, tpm=tpm, max_retries=0))
        with ThreadPoolExecutor(max_workers=12) as pool:
            replies = list(
                pool.map(
                    lambda _: teacher.complete_structured(
                        build_messages(PAPER, bank), TeacherExtraction, max_tokens=2_500
                    ),
                    range(32),
                )
            )
        stats = handle.stats()
    assert all(reply.parsed is not None for reply in replies)
    assert stats.responses_429 == 0 and stats.rate_limited == 0
    assert teacher.accounting.decided and teacher.accounting.mode == server_accounting
    if server_accounting == "admission":
        assert teacher.reply_budget.sized_requests > 0  # the charge per request came down
    else:
        assert teacher.reply_budget.sized_requests == 0
    assert "requests in flight" in teacher.describe_pacing()
