"""Watching an input folder for new papers and announcing them as Prefect `paper.added` events.

Prefect has no file watcher of its own. `scan_for_new_papers` compares the folder with a state
file of paper contents already announced (sha256 of the normalised text, the extraction stage's
cache identity) and returns the ones not seen before; `watch_once` emits one `paper.added` event
per new content and records it as seen only after the event went out. A deployment trigger on
`paper.added` then reruns the pipeline, whose extraction cache makes it extract only the new papers.

Renaming or copying a paper does not announce it again (same content); editing one does (new
content). The state file also remembers each file's size and modification time, so unchanged files
are not read again on the next scan. It is replaced atomically: a crash leaves the old state, and
the next scan announces again what the crashed one may not have recorded (at least once).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from methyl_distill.extraction.outputs import atomic_write_text
from methyl_distill.extraction.papers import content_sha256, list_input_files
from methyl_distill.readers.document import UnreadablePaperError
from methyl_distill.readers.formats import read_paper_file

logger = logging.getLogger(__name__)

PAPER_ADDED_EVENT = "paper.added"
PAPER_RESOURCE_PREFIX = "methyl-distill.paper."
INPUT_DIRECTORY_LABEL = "methyl-distill.input-directory"
PATH_LABEL = "methyl-distill.path"
STATE_VERSION = 1


class SeenPaper(BaseModel):
    model_config = ConfigDict(extra="forbid")

    first_path: str = Field(description="Relative path of the file this content was first seen in.")
    announced_at: datetime


class FileStamp(BaseModel):
    """What a file looked like when it was last read: unchanged size and mtime mean unchanged content."""

    model_config = ConfigDict(extra="forbid")

    size: int
    mtime_ns: int
    sha256: str | None = Field(description="Content hash, or None when the file is not readable paper text.")


class WatchState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = STATE_VERSION
    input_directory: str
    seen: dict[str, SeenPaper] = Field(default_factory=dict, description="Announced contents by sha256.")
    files: dict[str, FileStamp] = Field(default_factory=dict, description="Stamps by relative path.")


class WatchStateError(ValueError):
    """The state file exists but cannot be used."""


@dataclass(frozen=True)
class NewPaper:
    sha256: str
    relative_path: str
    size: int


@dataclass(frozen=True)
class WatchReport:
    announced: list[NewPaper]
    known: int
    unreadable: list[str]


def default_state_path(input_directory: str | Path) -> Path:
    """The state file for a folder: under the user's cache directory, one per absolute folder path."""
    resolved = str(Path(input_directory).expanduser().resolve())
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(resolved.encode("utf-8")).hexdigest()[:16]
    return cache_home / "methyl-distill" / "watch" / f"{digest}.json"


def load_watch_state(state_path: str | Path, input_directory: str | Path) -> WatchState:
    """The saved state, or an empty one if the file does not exist yet."""
    path = Path(state_path)
    resolved = str(Path(input_directory).expanduser().resolve())
    if not path.exists():
        return WatchState(input_directory=resolved)
    try:
        state = WatchState.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise WatchStateError(
            f"watch state file {path} is not valid ({exc.error_count()} errors, first: "
            f"{exc.errors()[0]['msg']}); delete it to announce every paper again"
        ) from None
    if state.version != STATE_VERSION:
        raise WatchStateError(
            f"watch state file {path} has version {state.version}, expected {STATE_VERSION}"
        )
    if state.input_directory != resolved:
        raise WatchStateError(
            f"watch state file {path} belongs to {state.input_directory}, not {resolved}; "
            "use another --state_file"
        )
    return state


def save_watch_state(state_path: str | Path, state: WatchState) -> None:
    atomic_write_text(state_path, state.model_dump_json(indent=1) + "\n")


def scan_for_new_papers(
    input_directory: str | Path, state: WatchState
) -> tuple[list[NewPaper], WatchState, list[str]]:
    """Contents in the folder that `state` has not seen, the state with refreshed file stamps
    (nothing marked seen yet), and the relative paths of unreadable files."""
    root = Path(input_directory).expanduser()
    if not root.is_dir():
        raise NotADirectoryError(f"input directory {root} does not exist or is not a directory")
    files: dict[str, FileStamp] = {}
    new: dict[str, NewPaper] = {}
    unreadable: list[str] = []
    for path, relative in list_input_files(root).files:
        try:
            stat = path.stat()
        except OSError as exc:  # removed between listing and stat
            logger.debug("skipping %s: %s", relative, exc)
            continue
        previous = state.files.get(relative)
        if previous is not None and (previous.size, previous.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
            stamp = previous
        else:
            stamp = FileStamp(
                size=stat.st_size, mtime_ns=stat.st_mtime_ns, sha256=_hash_paper(path, relative)
            )
        files[relative] = stamp
        if stamp.sha256 is None:
            unreadable.append(relative)
        elif stamp.sha256 not in state.seen and stamp.sha256 not in new:
            new[stamp.sha256] = NewPaper(sha256=stamp.sha256, relative_path=relative, size=stat.st_size)
    return list(new.values()), state.model_copy(update={"files": files}), unreadable


def _hash_paper(path: Path, relative: str) -> str | None:
    try:
        return content_sha256(read_paper_file(path).paper.text)
    except (UnreadablePaperError, OSError) as exc:
        logger.warning("not announcing %s: %s", relative, exc)
        return None


def paper_added_event(paper: NewPaper, input_directory: str | Path) -> dict[str, Any]:
    """Keyword arguments of `prefect.events.emit_event` announcing `paper`."""
    resolved = str(Path(input_directory).expanduser().resolve())
    return {
        "event": PAPER_ADDED_EVENT,
        "resource": {
            "prefect.resource.id": f"{PAPER_RESOURCE_PREFIX}{paper.sha256}",
            "prefect.resource.name": paper.relative_path,
            INPUT_DIRECTORY_LABEL: resolved,
            PATH_LABEL: paper.relative_path,
        },
        "payload": {"sha256": paper.sha256, "path": paper.relative_path, "size_bytes": paper.size},
    }


EventEmitter = Callable[..., object]


def _prefect_emit(**kwargs: Any) -> object:
    from prefect.events import emit_event

    return emit_event(**kwargs)


def _flush_prefect_events() -> None:
    """Wait until Prefect's background events worker has sent what was emitted (a CLI exits next)."""
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all()


def watch_once(
    input_directory: str | Path,
    state_path: str | Path | None = None,
    *,
    emit: EventEmitter | None = None,
    baseline: bool = False,
) -> WatchReport:
    """One scan: announce each new content, mark it seen once its event went out, save the state.

    `emit` defaults to `prefect.events.emit_event`. An emitter that returns None (Prefect's, when no
    events client is configured) counts as not delivered: the paper stays unseen for the next scan.
    `baseline` records the new contents as seen without announcing them: for starting to watch a
    folder whose papers were already processed.
    """
    state_file = Path(state_path) if state_path is not None else default_state_path(input_directory)
    emitter = emit or _prefect_emit
    state = load_watch_state(state_file, input_directory)
    new, state, unreadable = scan_for_new_papers(input_directory, state)
    announced: list[NewPaper] = []
    seen = dict(state.seen)
    try:
        for paper in new:
            if baseline:
                seen[paper.sha256] = SeenPaper(first_path=paper.relative_path, announced_at=datetime.now(UTC))
                continue
            if emitter(**paper_added_event(paper, input_directory)) is None:
                logger.warning(
                    "paper.added for %s was not delivered (no Prefect events client)", paper.relative_path
                )
                continue
            seen[paper.sha256] = SeenPaper(first_path=paper.relative_path, announced_at=datetime.now(UTC))
            announced.append(paper)
            logger.info("announced new paper %s (%s)", paper.relative_path, paper.sha256[:12])
    finally:
        save_watch_state(state_file, state.model_copy(update={"seen": seen}))
        if emit is None and announced:
            _flush_prefect_events()
    if baseline:
        logger.info("baseline: %d paper(s) recorded as seen without announcing them", len(new))
    return WatchReport(announced=announced, known=len(seen), unreadable=unreadable)


def watch_forever(
    input_directory: str | Path,
    state_path: str | Path | None = None,
    *,
    interval_s: float = 30.0,
    stop: threading.Event | None = None,
    emit: EventEmitter | None = None,
    on_report: Callable[[WatchReport], None] | None = None,
) -> None:
    """Scan every `interval_s` seconds until `stop` is set (or forever)."""
    stop = stop or threading.Event()
    while not stop.is_set():
        report = watch_once(input_directory, state_path, emit=emit)
        if on_report is not None:
            on_report(report)
        stop.wait(interval_s)
