"""Progress on the command's console: a live display in a terminal, plain log lines otherwise.

`methyl-distill extract | build-dataset | finetune | run` open `console_progress()` around their
flow. It registers a `ConsoleProgress` as the process's progress watcher (`ops/run_progress.py`):
each stage that reports itself (extraction, dataset, fine-tune) then shows how far it is, its rate
and the time left, and the stage's own details (tokens per minute against the limit, 429s and cost
for the extraction; loss for the fine-tune).

- In a terminal: one live line per running stage, drawn with rich (a bar, done of total, rate,
  ETA, details); log records are printed above it, and each stage leaves one summary line when it
  ends.
- When stderr is no terminal (a pipe, a CI log, a file): a plain log line per stage every
  `interval_s` seconds or each time it passes another `percent_step` percent, whichever comes
  first, plus one when it starts and one when it ends. No control characters reach the log.

Rates count only what was done while watching (a resumed fine-tune's earlier steps do not make it
look fast); the ETA is what is left at the rate so far.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO

from methyl_distill.ops.run_progress import ProgressSource, StageSnapshot, watching

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 30.0
DEFAULT_PERCENT_STEP = 10.0


def format_duration(seconds: float) -> str:
    """12s, 4m05s, 1h02m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_rate(count: int, elapsed_s: float, unit: str) -> str | None:
    """`count` units over `elapsed_s` as the readable rate (per second when at least one, else per
    minute, else per hour); None before anything was counted."""
    if count <= 0 or elapsed_s <= 0:
        return None
    per_second = count / elapsed_s
    if per_second >= 1:
        return f"{per_second:.1f} {unit}/s"
    if per_second * 60 >= 1:
        return f"{per_second * 60:.1f} {unit}/min"
    return f"{per_second * 3600:.1f} {unit}/h"


@dataclass
class _Watched:
    """One stage on the console, with what the rate is measured from."""

    source: ProgressSource
    started_at: float
    base_done: int | None = None  # done when its total was first known: the rate counts from there
    base_at: float = 0.0
    done_seen: int = -1  # done when last seen to change, and when
    done_at: float = 0.0
    line_at: float = 0.0
    line_done: int = -1
    percent_mark: float = 0.0

    def measure(
        self, snapshot: StageSnapshot, now: float, *, final: bool = False
    ) -> tuple[str | None, str | None]:
        """(rate, ETA) of the stage so far, as text; `final`: the rate up to the last unit done (a
        fine-tune's saving is not training slower)."""
        if snapshot.total is None:
            return None, None
        if snapshot.done != self.done_seen:
            self.done_seen, self.done_at = snapshot.done, now
        if self.base_done is None or snapshot.done < self.base_done:
            self.base_done, self.base_at = snapshot.done, now
            return None, None
        until = self.done_at if final and self.done_at > self.base_at else now
        counted, elapsed = snapshot.done - self.base_done, until - self.base_at
        rate = format_rate(counted, elapsed, snapshot.unit)
        if rate is None:
            return None, None
        left = max(0, snapshot.total - snapshot.done)
        return rate, format_duration(left * elapsed / counted)


def describe(snapshot: StageSnapshot, rate: str | None = None, eta: str | None = None) -> str:
    """The stage as one plain line: `extraction: 4/10 papers (40%), 1.2 papers/min, ETA 5m00s;
    tokens/min 12,345 of 200,000; 429s 0; cost $0.03`."""
    parts = [f"{snapshot.stage}:"]
    if snapshot.phase:
        parts.append(f"{snapshot.phase},")
    if snapshot.total is not None:
        percent = 100.0 * snapshot.done / snapshot.total if snapshot.total else 100.0
        parts.append(f"{snapshot.done}/{snapshot.total} {snapshot.unit} ({percent:.0f}%)")
    elif snapshot.done:
        parts.append(f"{snapshot.done} {snapshot.unit}")
    text = " ".join(parts).rstrip(",")
    if rate:
        text += f", {rate}"
    if eta:
        text += f", ETA {eta}"
    details = "; ".join(f"{label} {value}" for label, value in snapshot.details)
    return f"{text}; {details}" if details else text


class ConsoleProgress:
    """A `ProgressWatcher` drawing on a rich console (`live_console`) or writing plain lines
    through `emit_line`; see the module docstring."""

    def __init__(
        self,
        *,
        live_console: Any = None,
        emit_line: Callable[[str], None] | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        percent_step: float = DEFAULT_PERCENT_STEP,
        poll_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.live_console = live_console
        self._emit_line = emit_line or logger.info
        self.interval_s = interval_s
        self.percent_step = percent_step
        self.poll_s = poll_s
        self._clock = clock
        self._lock = threading.Lock()
        self._stages: list[_Watched] = []
        self._live: Any = None
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._handler_streams: list[tuple[logging.StreamHandler[Any], Any]] = []

    # ---- the watcher ------------------------------------------------------------------------------
    def stage_started(self, source: ProgressSource) -> None:
        watched = _Watched(source, started_at=self._clock())
        with self._lock:
            self._stages.append(watched)
        snapshot = source.snapshot()
        watched.measure(snapshot, watched.started_at)
        if self.live_console is None:
            watched.line_at, watched.line_done = watched.started_at, snapshot.done
            self._emit_line(f"{describe(snapshot)} (started)")

    def stage_finished(self, source: ProgressSource) -> None:
        with self._lock:
            watched = next((item for item in self._stages if item.source is source), None)
            if watched is None:
                return
            self._stages.remove(watched)
        snapshot = source.snapshot()
        now = self._clock()
        rate, _ = watched.measure(snapshot, now, final=True)
        line = f"{describe(snapshot, rate)}; took {format_duration(now - watched.started_at)}"
        if self.live_console is not None:
            self.live_console.print(line, highlight=False, markup=False)
        else:
            self._emit_line(line)

    # ---- plain lines ------------------------------------------------------------------------------
    def poll_once(self) -> None:
        """Write the line of every stage that is due one (plain mode)."""
        with self._lock:
            stages = list(self._stages)
        now = self._clock()
        for watched in stages:
            snapshot = watched.source.snapshot()
            rate, eta = watched.measure(snapshot, now)
            if snapshot.done == watched.line_done and now - watched.line_at < self.interval_s * 4:
                continue  # nothing new: a line only now and then to say it is still alive
            percent = 100.0 * snapshot.done / snapshot.total if snapshot.total else 0.0
            if (
                now - watched.line_at >= self.interval_s
                or percent >= watched.percent_mark + self.percent_step
            ):
                watched.line_at, watched.line_done = now, snapshot.done
                watched.percent_mark = percent - percent % self.percent_step if self.percent_step else percent
                self._emit_line(describe(snapshot, rate, eta))

    def _poll(self) -> None:
        while not self._closing.wait(self.poll_s):
            try:
                self.poll_once()
            except Exception as exc:  # a progress line is not worth failing a run for
                logger.debug("progress line failed: %s", exc)

    # ---- the live display -------------------------------------------------------------------------
    def render(self) -> Any:
        """The live display: one row per running stage."""
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        with self._lock:
            stages = list(self._stages)
        if not stages:
            return Text("")
        now = self._clock()
        table = Table.grid(padding=(0, 1))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column(width=24, no_wrap=True)
        table.add_column(no_wrap=True)
        table.add_column(style="dim")
        for watched in stages:
            snapshot = watched.source.snapshot()
            rate, eta = watched.measure(snapshot, now)
            bar = ProgressBar(total=snapshot.total, completed=snapshot.done, width=24)
            if snapshot.total is not None:
                count = f"{snapshot.done}/{snapshot.total} {snapshot.unit}"
            else:
                count = snapshot.phase or f"{snapshot.done} {snapshot.unit}"
            timing = " · ".join(
                part
                for part in (
                    snapshot.phase if snapshot.total is not None else None,
                    rate,
                    f"ETA {eta}" if eta else None,
                    f"{format_duration(now - watched.started_at)} elapsed",
                )
                if part
            )
            details = " · ".join(f"{label} {value}" for label, value in snapshot.details)
            table.add_row(snapshot.stage, bar, count, " · ".join(p for p in (timing, details) if p))
        return table

    # ---- start and stop ---------------------------------------------------------------------------
    def start(self) -> None:
        if self.live_console is None:
            self._thread = threading.Thread(target=self._poll, name="console-progress", daemon=True)
            self._thread.start()
            return
        from rich.live import Live

        self._live = Live(
            get_renderable=self.render,
            console=self.live_console,
            refresh_per_second=2,
            transient=True,
            # Printed above the display when stdout is the same terminal; when it is redirected
            # (`methyl-distill run > summary.txt`), what the command prints must stay there.
            redirect_stdout=sys.stdout.isatty(),
            redirect_stderr=True,
        )
        self._live.start()
        self._log_above_the_display()

    def stop(self) -> None:
        if self._thread is not None:
            self._closing.set()
            self._thread.join()
            self._thread = None
        if self._live is not None:
            for handler, stream in self._handler_streams:
                handler.setStream(stream)
            self._handler_streams.clear()
            self._live.stop()
            self._live = None

    def _log_above_the_display(self) -> None:
        """Log handlers that write to the terminal hold the real stderr/stdout: while the display
        is live they write through rich's redirection instead, so that records print above it
        rather than through it."""
        real = {id(sys.__stderr__): sys.stderr, id(sys.__stdout__): sys.stdout}
        for handler in logging.getLogger().handlers:
            if type(handler) is logging.StreamHandler and id(handler.stream) in real:
                redirected = real[id(handler.stream)]
                if redirected is not handler.stream:
                    self._handler_streams.append((handler, handler.setStream(redirected)))


@contextmanager
def console_progress(
    stream: TextIO | None = None,
    *,
    interval_s: float = DEFAULT_INTERVAL_S,
    percent_step: float = DEFAULT_PERCENT_STEP,
) -> Iterator[ConsoleProgress]:
    """Show the progress of the stages this process runs in the block on `stream` (stderr): live in
    a terminal, plain log lines otherwise."""
    from rich.console import Console

    console = Console(file=stream or sys.stderr)
    live = console.is_terminal and not console.is_dumb_terminal
    progress = ConsoleProgress(
        live_console=console if live else None, interval_s=interval_s, percent_step=percent_step
    )
    progress.start()
    try:
        with watching(progress):
            yield progress
    finally:
        progress.stop()
