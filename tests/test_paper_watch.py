"""The paper watcher: new contents are announced once, state survives, failures are retried."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from methyl_distill.extraction.papers import content_sha256
from methyl_distill.ops.paper_watch import (
    INPUT_DIRECTORY_LABEL,
    PAPER_ADDED_EVENT,
    PAPER_RESOURCE_PREFIX,
    PATH_LABEL,
    WatchStateError,
    default_state_path,
    load_watch_state,
    watch_once,
)
from methyl_distill.readers.document import normalise_text


class RecordingEmitter:
    """Stands in for prefect.events.emit_event: records events, can refuse some."""

    def __init__(self, refuse: set[str] | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.refuse = refuse or set()

    def __call__(self, **kwargs: Any) -> object | None:
        if kwargs["resource"][PATH_LABEL] in self.refuse:
            return None
        self.events.append(kwargs)
        return kwargs

    @property
    def paths(self) -> list[str]:
        return [event["resource"][PATH_LABEL] for event in self.events]


@pytest.fixture
def papers(tmp_path: Path) -> Path:
    folder = tmp_path / "papers"
    (folder / "lung").mkdir(parents=True)
    (folder / "mgmt.txt").write_text("MGMT promoter methylation in glioblastoma.\n", encoding="utf-8")
    (folder / "lung" / "shox2.md").write_text("SHOX2 methylation in bronchial lavage.\n", encoding="utf-8")
    return folder


def test_first_scan_announces_every_paper_with_labels(papers: Path, tmp_path: Path) -> None:
    emit = RecordingEmitter()
    report = watch_once(papers, tmp_path / "state.json", emit=emit)
    assert sorted(emit.paths) == ["lung/shox2.md", "mgmt.txt"]
    event = next(e for e in emit.events if e["resource"][PATH_LABEL] == "mgmt.txt")
    sha = content_sha256(normalise_text("MGMT promoter methylation in glioblastoma.\n"))
    assert event["event"] == PAPER_ADDED_EVENT
    assert event["resource"]["prefect.resource.id"] == f"{PAPER_RESOURCE_PREFIX}{sha}"
    assert event["resource"][INPUT_DIRECTORY_LABEL] == str(papers.resolve())
    assert event["payload"]["sha256"] == sha
    assert report.known == 2 and len(report.announced) == 2


def test_rescan_announces_only_new_or_changed_content(papers: Path, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    watch_once(papers, state, emit=RecordingEmitter())
    emit = RecordingEmitter()
    assert watch_once(papers, state, emit=emit).announced == []
    assert emit.events == []

    (papers / "sept9.txt").write_text("SEPT9 in plasma.\n", encoding="utf-8")
    (papers / "copy-of-mgmt.txt").write_text("MGMT promoter methylation in glioblastoma.\n", encoding="utf-8")
    (papers / "mgmt.txt").rename(papers / "renamed.txt")
    watch_once(papers, state, emit=emit)
    assert emit.paths == ["sept9.txt"]  # renamed and copied contents are not new

    (papers / "lung" / "shox2.md").write_text("SHOX2 and PTGER4 methylation in plasma.\n", encoding="utf-8")
    watch_once(papers, state, emit=emit)
    assert emit.paths == ["sept9.txt", "lung/shox2.md"]  # edited content is new


def test_baseline_records_without_announcing(papers: Path, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    emit = RecordingEmitter()
    report = watch_once(papers, state, emit=emit, baseline=True)
    assert emit.events == [] and report.announced == [] and report.known == 2
    (papers / "new.txt").write_text("GSTP1 in urine.\n", encoding="utf-8")
    watch_once(papers, state, emit=emit)
    assert emit.paths == ["new.txt"]


def test_undelivered_events_are_retried_next_scan(papers: Path, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    first = watch_once(papers, state, emit=RecordingEmitter(refuse={"mgmt.txt"}))
    assert [paper.relative_path for paper in first.announced] == ["lung/shox2.md"]
    emit = RecordingEmitter()
    watch_once(papers, state, emit=emit)
    assert emit.paths == ["mgmt.txt"]


def test_an_emitter_that_raises_keeps_what_was_announced(papers: Path, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    calls = []

    def flaky(**kwargs: Any) -> object:
        calls.append(kwargs)
        if len(calls) == 2:
            raise ConnectionError("API down")
        return kwargs

    with pytest.raises(ConnectionError):
        watch_once(papers, state, emit=flaky)
    saved = json.loads(state.read_text(encoding="utf-8"))
    assert len(saved["seen"]) == 1  # the first event went out before the failure
    emit = RecordingEmitter()
    watch_once(papers, state, emit=emit)
    assert len(emit.events) == 1
    assert emit.paths[0] != calls[0]["resource"][PATH_LABEL]


def test_unreadable_files_are_reported_not_announced(papers: Path, tmp_path: Path) -> None:
    (papers / "empty.txt").write_bytes(b"")
    (papers / "binary.md").write_bytes(b"\x00\x01\x02binary")
    (papers / ".hidden.txt").write_text("hidden\n", encoding="utf-8")
    (papers / "notes.pdf").write_bytes(b"%PDF")
    emit = RecordingEmitter()
    report = watch_once(papers, tmp_path / "state.json", emit=emit)
    assert sorted(report.unreadable) == ["binary.md", "empty.txt", "notes.pdf"]  # every format is read
    assert sorted(emit.paths) == ["lung/shox2.md", "mgmt.txt"]


def test_unchanged_files_are_not_read_again(
    papers: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state.json"
    watch_once(papers, state, emit=RecordingEmitter())
    read: list[str] = []
    original = Path.read_bytes

    def spy(self: Path) -> bytes:
        read.append(self.name)
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", spy)
    (papers / "new.txt").write_text("RASSF1A in serum.\n", encoding="utf-8")
    watch_once(papers, state, emit=RecordingEmitter())
    assert [name for name in read if name.endswith((".txt", ".md"))] == ["new.txt"]


def test_state_is_written_atomically_and_validated(papers: Path, tmp_path: Path) -> None:
    state = tmp_path / "nested" / "state.json"
    watch_once(papers, state, emit=RecordingEmitter())
    assert [p.name for p in state.parent.iterdir()] == ["state.json"]  # no temporary files left
    loaded = load_watch_state(state, papers)
    assert len(loaded.seen) == 2 and set(loaded.files) == {"mgmt.txt", "lung/shox2.md"}

    state.write_text("{not json", encoding="utf-8")
    with pytest.raises(WatchStateError, match=r"state\.json is not valid"):
        watch_once(papers, state, emit=RecordingEmitter())
    other = tmp_path / "other"
    other.mkdir()
    watch_once(other, tmp_path / "other.json", emit=RecordingEmitter())
    with pytest.raises(WatchStateError, match="belongs to"):
        watch_once(papers, tmp_path / "other.json", emit=RecordingEmitter())


def test_missing_input_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError, match="does not exist"):
        watch_once(tmp_path / "nope", tmp_path / "state.json", emit=RecordingEmitter())


def test_default_state_path_is_per_folder_under_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first, second = default_state_path(tmp_path / "a"), default_state_path(tmp_path / "b")
    assert first != second
    assert first.parent == tmp_path / "cache" / "methyl-distill" / "watch"
    assert default_state_path(os.path.relpath(tmp_path / "a")) == first


def test_papers_in_every_format_are_announced(papers: Path, tmp_path: Path) -> None:
    import shutil

    samples = Path(__file__).resolve().parent.parent / "data" / "papers"
    for name in ("sdc2_stool_colorectal_adenoma.pdf", "pax1_cervical_screening.xml"):
        shutil.copy(samples / name, papers / name)
    emit = RecordingEmitter()
    report = watch_once(papers, tmp_path / "state.json", emit=emit)
    assert sorted(emit.paths) == [
        "lung/shox2.md",
        "mgmt.txt",
        "pax1_cervical_screening.xml",
        "sdc2_stool_colorectal_adenoma.pdf",
    ]
    assert report.unreadable == []
