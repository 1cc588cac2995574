"""Mapping papers in batches: bounded bursts of task runs, each result handed over as soon as it is done.

Thousands of task runs created in one burst overflow the Prefect server's event queue (about 5000
at once lost a third of them), so papers are submitted a batch at a time with at most about two
batches in flight, and each (paper, future) is yielded the moment its future finishes, whatever the
order. Plain code: any future with `add_done_callback` and `wait` will do.

A stop (`stopping.RunStop`) ends the submission: no further batch, the submitted papers that have not
started are cancelled (`cancel`), and those running are still yielded as they finish, until the stop
abandons the requests in flight and `ABANDON_WAIT_S` has passed: their clients give up at once, so
only a paper stuck elsewhere is left behind.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar

from methyl_distill.extraction.stopping import RunStop

# Task runs created per burst: well below the ~5000 at which the server's event queue overflowed.
DEFAULT_BATCH_SIZE = 250
# How long papers still running are waited for once a stop has abandoned their requests.
ABANDON_WAIT_S = 3.0
# How often the collection looks at a stop while no paper finishes.
STOP_POLL_S = 0.1

ItemT = TypeVar("ItemT")


class CompletableFuture(Protocol):
    def add_done_callback(self, fn: Callable[..., None]) -> None: ...

    def wait(self, timeout: float | None = None) -> None: ...


FutureT = TypeVar("FutureT", bound=CompletableFuture)


def batches(items: Sequence[ItemT], size: int) -> Iterator[Sequence[ItemT]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _never_cancel(_future: object) -> bool:
    return False


def map_in_batches(
    items: Sequence[ItemT],
    submit_batch: Callable[[Sequence[ItemT]], list[FutureT]],
    batch_size: int,
    *,
    stop: RunStop | None = None,
    cancel: Callable[[FutureT], bool] = _never_cancel,
) -> Iterator[tuple[ItemT, FutureT]]:
    """Submit batch after batch, keeping at most about two batches in flight; yield each
    (item, future) as soon as its future has finished. After `stop` is requested, submit nothing
    more and `cancel` the futures not started (`cancel` says whether it could)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    finished: queue.Queue[tuple[ItemT, FutureT]] = queue.Queue()

    def on_done(item: ItemT, future: FutureT) -> Callable[..., None]:
        return lambda _future: finished.put((item, future))

    running: dict[int, FutureT] = {}  # submitted and not yet yielded, by id
    cancelled: dict[int, FutureT] = {}  # kept referenced: their ids stay unique
    pending = batches(items, batch_size)
    exhausted = cancelling_done = False
    while True:
        if stop is not None and stop.is_requested and not cancelling_done:
            exhausted = cancelling_done = True
            for key, future in list(running.items()):
                if cancel(future):
                    cancelled[key] = future
                    del running[key]
        while not exhausted and len(running) <= batch_size:
            batch = next(pending, None)
            if batch is None:
                exhausted = True
                break
            for item, future in zip(batch, submit_batch(batch), strict=True):
                running[id(future)] = future
                future.add_done_callback(on_done(item, future))
        if not running:
            return
        abandoned_at = stop.abandoned_at if stop is not None else None
        if abandoned_at is not None and time.monotonic() > abandoned_at + ABANDON_WAIT_S:
            return  # papers stuck beyond their requests' abandonment are left behind
        try:
            item, future = finished.get(timeout=STOP_POLL_S if stop is not None else None)
        except queue.Empty:
            continue
        if id(future) in cancelled or running.pop(id(future), None) is None:
            continue
        future.wait()  # a Prefect future takes its final state from itself, not from the API
        yield item, future
