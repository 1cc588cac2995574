"""Progress of a run, sent from a background thread at most every couple of seconds.

Each update of a Prefect progress artifact is an API call; made inline, it held up the collection of
finished papers for as long as a busy server took to answer (about a second each in an all-cached
rerun). `ThrottledProgress` counts in the caller's thread and sends the latest share from its own
thread through `send` (any callable taking a percentage); `close()` sends the final value and waits
for it. A failing `send` is logged, never raised: a progress bar is not worth failing a run for.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 2.0


class ThrottledProgress:
    def __init__(
        self, total: int, send: Callable[[float], object], *, interval_s: float = DEFAULT_INTERVAL_S
    ) -> None:
        self.total = max(total, 1)
        self.done = 0
        self._send = send
        self._interval_s = interval_s
        self._changed = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._report, name="run-progress", daemon=True)
        self._thread.start()

    @property
    def percent(self) -> float:
        return round(100.0 * self.done / self.total, 1)

    def advance(self) -> None:
        self.done += 1
        self._changed.set()

    def close(self) -> None:
        self._closing.set()
        self._changed.set()
        self._thread.join()

    def __enter__(self) -> ThrottledProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _report(self) -> None:
        sent = 0
        while True:
            self._changed.wait()
            closing = self._closing.is_set()
            self._changed.clear()
            done = self.done
            if done != sent:
                try:
                    self._send(round(100.0 * done / self.total, 1))
                    sent = done
                except Exception as exc:
                    logger.warning("Could not report progress: %s", exc)
            if closing:
                return
            self._closing.wait(self._interval_s)
