"""Stopping a run: a signal asks for it, nothing new starts, what is in flight gets a grace period.

The model: one `RunStop` per process (signals are process-wide), `PROCESS_STOP`. The command line
installs the handlers (`stop_on_signals`): the first SIGINT or SIGTERM *requests* a stop, which

- stops the submission of papers (`paper_batches.map_in_batches`: papers not started are cancelled),
- makes the teacher client refuse every new request (`OpenAITeacher`, `stop`): the paper is left
  not extracted, neither cached nor counted as a failure, and
- after `grace_s` *abandons* the requests still in flight (the client stops waiting for them; their
  reservations stay charged on the token bucket, the safe side).

A second signal abandons at once. The stage then writes its aggregate files with what it finished
and raises `ExtractionStopped`; the command exits with 128 + the signal's number (130 for SIGINT,
143 for SIGTERM). `run_stoppable` runs the stage in a thread of its own, so the signals are handled
in the main thread whatever the stage is doing, and gives up on it `finish_s` after the abandonment.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TypeVar

logger = logging.getLogger(__name__)

# How long requests in flight may take to finish after a stop before they are abandoned.
DEFAULT_GRACE_S = 10.0
# How long the stage may take after the abandonment to write its outputs and report its state.
DEFAULT_FINISH_S = 10.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

ResultT = TypeVar("ResultT")


class RunStop:
    """A stop request and, `grace_s` later (or at a second request), the abandonment of what is in flight."""

    def __init__(self, grace_s: float = DEFAULT_GRACE_S) -> None:
        self.grace_s = grace_s
        self.requested = threading.Event()  # no new paper, no new teacher request
        self.abandon = threading.Event()  # stop waiting for requests in flight
        self.signal_number: int | None = None
        self.abandoned_at: float | None = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    @property
    def is_requested(self) -> bool:
        return self.requested.is_set()

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports a process ended by it (130 without one)."""
        return 128 + (self.signal_number or signal.SIGINT)

    @property
    def reason(self) -> str:
        return signal.Signals(self.signal_number).name if self.signal_number else "a stop request"

    def request(self, signal_number: int | None = None) -> None:
        """Ask the run to stop; a second request abandons the requests in flight at once."""
        with self._lock:
            if self.requested.is_set():
                self._abandon_locked()
                return
            self.signal_number = signal_number
            self.requested.set()
            self._timer = threading.Timer(self.grace_s, self._abandon)
            self._timer.daemon = True
            self._timer.start()

    def reset(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None
            self.requested.clear()
            self.abandon.clear()
            self.signal_number = None
            self.abandoned_at = None

    def _abandon(self) -> None:
        with self._lock:
            self._abandon_locked()

    def _abandon_locked(self) -> None:
        if not self.abandon.is_set():
            self.abandoned_at = time.monotonic()
            self.abandon.set()


PROCESS_STOP = RunStop()


class ExtractionStopped(Exception):
    """A stopped run ended: its finished papers are kept (cache, processed_files/, aggregate files)."""

    def __init__(self, reason: str, done: int, not_done: int) -> None:
        super().__init__(
            f"stopped by {reason}: {done} paper(s) done, {not_done} not extracted; a rerun continues "
            "from there (finished papers are cached)"
        )
        self.done = done
        self.not_done = not_done


class RunAbandoned(Exception):
    """The run did not end in time after a stop: the caller exits without waiting for it."""


@contextlib.contextmanager
def stop_on_signals(stop: RunStop = PROCESS_STOP) -> Iterator[RunStop]:
    """SIGINT and SIGTERM request a stop (a second one abandons at once) while inside; the previous
    handlers come back afterwards. Outside the main thread, where Python allows no handlers, nothing
    is installed."""
    stop.reset()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handle(signal_number: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signal_number).name
        if stop.is_requested:
            logger.warning("%s again: abandoning the requests in flight", name)
        else:
            logger.warning(
                "%s: stopping; no new teacher request, up to %.0f s for those in flight (%s again to "
                "stop at once)",
                name,
                stop.grace_s,
                name,
            )
        stop.request(signal_number)

    previous = {number: signal.signal(number, handle) for number in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        stop.reset()


def run_stoppable(
    work: Callable[[], ResultT], stop: RunStop = PROCESS_STOP, *, finish_s: float = DEFAULT_FINISH_S
) -> ResultT:
    """Run `work` in a thread of its own (with this thread's context variables) and return or raise
    what it did. Meanwhile this thread only waits, so signal handlers run at once. After a stop,
    `work` has until `finish_s` after the abandonment; then `RunAbandoned` is raised and `work` is
    left running (a daemon thread)."""
    context = contextvars.copy_context()
    outcome: list[tuple[bool, object]] = []

    def target() -> None:
        try:
            outcome.append((True, context.run(work)))
        except BaseException as exc:  # handed over to the caller's thread
            outcome.append((False, exc))

    thread = threading.Thread(target=target, name="stoppable-run", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.1)
        abandoned_at = stop.abandoned_at
        if thread.is_alive() and abandoned_at is not None and time.monotonic() > abandoned_at + finish_s:
            raise RunAbandoned(f"the run did not end within {finish_s:.0f} s of abandoning its requests")
    succeeded, value = outcome[0]
    if succeeded:
        return value  # type: ignore[return-value]
    assert isinstance(value, BaseException)
    raise value
