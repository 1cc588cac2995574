"""Mapping papers in batches: bounded bursts of task runs, each result handed over as soon as it is done.

Thousands of task runs created in one burst overflow the Prefect server's event queue (about 5000
at once lost a third of them), so papers are submitted a batch at a time with at most about two
batches in flight, and each (paper, future) is yielded the moment its future finishes, whatever the
order. Plain code: any future with `add_done_callback` and `wait` will do.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar

# Task runs created per burst: well below the ~5000 at which the server's event queue overflowed.
DEFAULT_BATCH_SIZE = 250

ItemT = TypeVar("ItemT")


class CompletableFuture(Protocol):
    def add_done_callback(self, fn: Callable[..., None]) -> None: ...

    def wait(self, timeout: float | None = None) -> None: ...


FutureT = TypeVar("FutureT", bound=CompletableFuture)


def batches(items: Sequence[ItemT], size: int) -> Iterator[Sequence[ItemT]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def map_in_batches(
    items: Sequence[ItemT], submit_batch: Callable[[Sequence[ItemT]], list[FutureT]], batch_size: int
) -> Iterator[tuple[ItemT, FutureT]]:
    """Submit batch after batch, keeping at most about two batches in flight; yield each
    (item, future) as soon as its future has finished."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    finished: queue.Queue[tuple[ItemT, FutureT]] = queue.Queue()

    def on_done(item: ItemT, future: FutureT) -> Callable[..., None]:
        return lambda _future: finished.put((item, future))

    in_flight = 0
    pending = batches(items, batch_size)
    exhausted = False
    while True:
        while not exhausted and in_flight <= batch_size:
            batch = next(pending, None)
            if batch is None:
                exhausted = True
                break
            for item, future in zip(batch, submit_batch(batch), strict=True):
                future.add_done_callback(on_done(item, future))
                in_flight += 1
        if in_flight == 0:
            return
        item, future = finished.get()
        in_flight -= 1
        future.wait()  # a Prefect future takes its final state from itself, not from the API
        yield item, future
