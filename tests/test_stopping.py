"""Stopping a run, piece by piece: the stop request, the batch mapping, the teacher client, the runner
thread. The whole command under a real signal: tests/test_stop_extraction.py."""

from __future__ import annotations

import concurrent.futures
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from methyl_distill.extraction.paper_batches import map_in_batches
from methyl_distill.extraction.records import TeacherExtraction
from methyl_distill.extraction.stopping import RunAbandoned, RunStop, run_stoppable, stop_on_signals
from methyl_distill.teacher.config import TeacherConfig
from methyl_distill.teacher.openai_client import OpenAITeacher, TeacherStopped
from tests.fake_openai.server import OpenAITestServerConfig, ServerHandle, running_test_server
from tests.tracked_bucket import TrackedBucket

MESSAGES = [{"role": "user", "content": "Which methylation markers does the paper report? SEPT9 in plasma."}]


def test_a_stop_abandons_after_its_grace_period_or_at_a_second_request() -> None:
    stop = RunStop(grace_s=0.2)
    assert not stop.is_requested and stop.exit_code == 130
    stop.request(signal.SIGTERM)
    assert stop.is_requested and not stop.abandon.is_set() and stop.exit_code == 143
    assert stop.abandon.wait(2) and stop.reason == "SIGTERM"
    stop.reset()
    assert not stop.is_requested and not stop.abandon.is_set()
    stop = RunStop(grace_s=60)
    stop.request(signal.SIGINT)
    stop.request(signal.SIGINT)  # a second Ctrl-C: at once
    assert stop.abandon.is_set() and stop.exit_code == 130
    stop.reset()


def test_signal_handlers_request_the_stop_and_are_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals(RunStop(grace_s=60)) as stop:
        signal.raise_signal(signal.SIGTERM)
        assert stop.is_requested and stop.exit_code == 143 and not stop.abandon.is_set()
    assert signal.getsignal(signal.SIGTERM) is before and not stop.is_requested


@pytest.mark.parametrize("batch_size", [5, 50], ids=["batches-left", "one-batch"])
def test_a_stop_submits_no_further_batch_and_cancels_what_has_not_started(batch_size: int) -> None:
    stop = RunStop(grace_s=60)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    release = threading.Event()
    started: list[int] = []
    submitted: list[list[int]] = []

    def work(item: int) -> int:
        started.append(item)
        release.wait(5)
        return item

    class Future:  # what map_in_batches needs of a Prefect future
        def __init__(self, future: concurrent.futures.Future[int]) -> None:
            self.wrapped = future

        def add_done_callback(self, fn: Callable[..., None]) -> None:
            self.wrapped.add_done_callback(lambda _future: fn(self))

        def wait(self, timeout: float | None = None) -> None:
            concurrent.futures.wait([self.wrapped], timeout=timeout)

    def submit(batch: Any) -> list[Future]:
        submitted.append(list(batch))
        return [Future(pool.submit(work, item)) for item in batch]

    with pool:
        # Nothing has finished when the stop comes; then the two running ones end.
        threading.Timer(0.2, stop.request, args=(signal.SIGINT,)).start()
        threading.Timer(0.6, release.set).start()
        yielded = [
            item
            for item, _future in map_in_batches(
                list(range(20)),
                submit,
                batch_size=batch_size,
                stop=stop,
                cancel=lambda future: future.wrapped.cancel(),
            )
        ]
    stop.reset()
    assert sorted(yielded) == sorted(started) == [0, 1]  # only what had started
    # About two batches in flight, no further one.
    assert submitted == ([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]] if batch_size == 5 else [list(range(20))])


@pytest.fixture()
def slow_server() -> Iterator[ServerHandle]:
    with running_test_server(OpenAITestServerConfig(latency_s=(1.5, 1.5))) as handle:
        yield handle


def _teacher(server: ServerHandle, stop: RunStop, bucket: TrackedBucket) -> OpenAITeacher:
    config = TeacherConfig(base_url=server.base_url, max_retries=2, max_reasks=0, timeout_s=30)
    return OpenAITeacher(
        config, api_key=SecretStr("sk-test"), budget=bucket, stop=stop.requested, abandon=stop.abandon
    )


def test_a_stopped_teacher_sends_nothing_and_abandons_requests_in_flight(slow_server: ServerHandle) -> None:
    stop = RunStop(grace_s=0.3)
    bucket = TrackedBucket(200_000)
    teacher = _teacher(slow_server, stop, bucket)
    outcome: list[BaseException] = []

    def ask() -> None:
        try:
            teacher.complete_structured(MESSAGES, TeacherExtraction, max_tokens=500)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=ask)
    thread.start()
    deadline = time.monotonic() + 10
    while slow_server.stats().requests == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    stop.request(signal.SIGINT)
    thread.join(5)
    # Abandoned after the grace period, long before the 1.5 s reply: settled on the safe side.
    assert time.monotonic() - started < 1.2
    assert len(outcome) == 1 and isinstance(outcome[0], TeacherStopped)
    assert bucket.unsettled() == [] and len(bucket.reservations) == 1
    with pytest.raises(TeacherStopped, match="no new request"):
        teacher.complete_structured(MESSAGES, TeacherExtraction, max_tokens=500)
    assert slow_server.stats().requests == 1 and len(bucket.reservations) == 1


def test_a_stopped_teacher_lets_a_request_in_flight_finish_within_the_grace_period(
    slow_server: ServerHandle,
) -> None:
    stop = RunStop(grace_s=10)
    bucket = TrackedBucket(200_000)
    teacher = _teacher(slow_server, stop, bucket)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        reply = pool.submit(teacher.complete_structured, MESSAGES, TeacherExtraction, max_tokens=500)
        while slow_server.stats().requests == 0:
            time.sleep(0.01)
        stop.request(signal.SIGTERM)
        assert reply.result(10).parsed is not None
    stop.reset()
    assert bucket.unsettled() == [] and slow_server.stats().requests == 1


def test_run_stoppable_hands_over_results_and_gives_up_after_the_abandonment() -> None:
    assert run_stoppable(lambda: 7, RunStop()) == 7
    with pytest.raises(ValueError, match="boom"):
        run_stoppable(lambda: (_ for _ in ()).throw(ValueError("boom")), RunStop())
    stop = RunStop(grace_s=0.1)
    stop.request(signal.SIGINT)
    started = time.monotonic()
    with pytest.raises(RunAbandoned):
        run_stoppable(lambda: time.sleep(30), stop, finish_s=0.2)
    assert time.monotonic() - started < 3
