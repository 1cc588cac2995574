"""Progress of a run's stages, for whoever watches this process (the command's console).

A stage that knows how far it is (papers extracted, shards of the dataset built, optimizer steps)
hands a `ProgressSource` to `reporting(source)` for as long as it runs; a watcher registered with
`watching(watcher)` (the command's `ConsoleProgress`) is told when each stage starts and ends and
reads `source.snapshot()` as often as it draws. The sources only answer when asked: nothing is
pushed, so a stage pays nothing for being watched beyond a few counters, and a run with no watcher
(a deployment's run on a worker) pays nothing at all. The Prefect UI's path (progress and table
artifacts, the run logger) is separate and unchanged.

Watchers are process-wide, not per thread: the flow runs in a thread of its own under the
command, and tasks run in a thread pool.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

ItemT = TypeVar("ItemT")


@dataclass(frozen=True)
class StageSnapshot:
    """How far one stage is: `done` of `total` (None while unknown) `unit`s, and stage details
    already formatted for display, as (label, text) pairs in display order."""

    stage: str
    done: int
    total: int | None
    unit: str
    phase: str | None = None
    details: tuple[tuple[str, str], ...] = ()


class ProgressSource(Protocol):
    def snapshot(self) -> StageSnapshot: ...


class ProgressWatcher(Protocol):
    def stage_started(self, source: ProgressSource) -> None: ...

    def stage_finished(self, source: ProgressSource) -> None: ...


_lock = threading.Lock()
_watchers: list[ProgressWatcher] = []


def is_watched() -> bool:
    """Whether a watcher is registered: a stage may skip preparing what nobody reads."""
    with _lock:
        return bool(_watchers)


@contextmanager
def watching(watcher: ProgressWatcher) -> Iterator[ProgressWatcher]:
    """Tell `watcher` about every stage reported in this process while the block runs."""
    with _lock:
        _watchers.append(watcher)
    try:
        yield watcher
    finally:
        with _lock:
            _watchers.remove(watcher)


def _current_watchers() -> list[ProgressWatcher]:
    with _lock:
        return list(_watchers)


@contextmanager
def reporting(source: ProgressSource) -> Iterator[ProgressSource]:
    """The stage of `source` runs in this block: watchers learn of its start and its end."""
    watchers = _current_watchers()
    for watcher in watchers:
        watcher.stage_started(source)
    try:
        yield source
    finally:
        for watcher in watchers:
            watcher.stage_finished(source)


@dataclass
class CountingProgress:
    """A stage counted by its caller: `advance(n)` as units are done; `details` and `phase` as the
    caller sets them."""

    stage: str
    total: int | None
    unit: str
    done: int = 0
    phase: str | None = None
    details: dict[str, str] = field(default_factory=dict)

    def advance(self, count: int = 1) -> None:
        self.done += count

    def snapshot(self) -> StageSnapshot:
        return StageSnapshot(
            stage=self.stage,
            done=self.done,
            total=self.total,
            unit=self.unit,
            phase=self.phase,
            details=tuple(self.details.items()),
        )


def tracked(
    items: Iterable[ItemT],
    stage: str,
    unit: str,
    sizes: Sequence[int],
    details: Callable[[ItemT], dict[str, str]] | None = None,
) -> Iterator[ItemT]:
    """`items` as they come, reported as stage `stage`: the i-th item done counts `sizes[i]` units
    (a shard of the dataset counts its papers); `details(item)` updates the displayed details."""
    progress = CountingProgress(stage, sum(sizes), unit)
    with reporting(progress):
        for index, item in enumerate(items):
            yield item
            progress.advance(sizes[index] if index < len(sizes) else 0)
            if details is not None:
                progress.details.update(details(item))
