"""Reading `records.jsonl` files of one or more extraction runs: the newest record per paper content wins.

The files are read twice. The first pass parses every line's JSON and header (`content_sha256`,
`extracted_at`) and remembers, per paper content, where its records lie (file, byte offset), newest
first. The second pass fully validates the newest record of each paper, one at a time; if that line
turns out not to be a valid PaperRecord it is reported (or fails the run) and the next newest record
of the paper is used. Memory stays proportional to the number of papers, not to the records' size,
and each record is fully validated once. (A superseded line is only checked for JSON and header.)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from methyl_distill.extraction.records import PaperRecord

logger = logging.getLogger(__name__)


class RecordsFileError(ValueError):
    """A records file that cannot be read, or a corrupt line under the 'fail' policy."""


class _RecordHeader(BaseModel):
    model_config = ConfigDict(extra="ignore")

    content_sha256: str
    extracted_at: datetime | None = None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class _Location:
    extracted_at: datetime
    file_index: int
    line_number: int
    offset: int

    @property
    def sort_position(self) -> tuple[int, int]:
        return self.file_index, self.offset


@dataclass
class RecordShard:
    """Some papers' record locations (newest first): what one worker reads and validates."""

    paths: tuple[Path, ...]
    corrupt_lines: Literal["skip", "fail"]
    groups: list[list[_Location]]
    corrupt: list[str] = field(default_factory=list)  # "file:line: reason"

    def _problem(self, location: _Location, reason: str, exc: Exception | None = None) -> None:
        problem = f"{self.paths[location.file_index]}:{location.line_number}: {reason}"
        if self.corrupt_lines == "fail":
            raise RecordsFileError(problem) from exc
        logger.warning("Skipping %s", problem)
        self.corrupt.append(problem)

    def iter_records(self) -> Iterator[PaperRecord]:
        """The newest valid record of each paper; a corrupt newest record falls back to the next."""
        handles = [path.open("rb") for path in self.paths]
        try:
            for locations in self.groups:
                for location in locations:
                    handle = handles[location.file_index]
                    handle.seek(location.offset)
                    try:
                        record = PaperRecord.model_validate_json(handle.readline())
                    except ValidationError as exc:
                        self._problem(location, f"not a valid PaperRecord: {_short_reason(exc)}", exc)
                        continue
                    yield record
                    break
        finally:
            for handle in handles:
                handle.close()


@dataclass
class RecordScan:
    """Where the records of every paper lie, and what the scan met on the way."""

    paths: tuple[Path, ...]
    corrupt_lines: Literal["skip", "fail"] = "skip"
    candidates: dict[str, list[_Location]] = field(default_factory=dict)
    lines_read: int = 0
    corrupt: list[str] = field(default_factory=list)  # "file:line: reason" (from the first pass)

    @property
    def paper_count(self) -> int:
        return len(self.candidates)

    @property
    def superseded(self) -> int:
        return sum(len(locations) - 1 for locations in self.candidates.values())

    def _problem(self, location: _Location, reason: str, exc: Exception | None = None) -> None:
        shard = RecordShard(self.paths, self.corrupt_lines, [])
        shard._problem(location, reason, exc)
        self.corrupt.extend(shard.corrupt)

    def shards(self, papers_per_shard: int) -> list[RecordShard]:
        """The papers in the order of their newest record's file and line, cut into shards."""
        ordered = sorted(self.candidates.values(), key=lambda locations: locations[0].sort_position)
        return [
            RecordShard(self.paths, self.corrupt_lines, ordered[start : start + papers_per_shard])
            for start in range(0, len(ordered), papers_per_shard)
        ]

    def iter_records(self) -> Iterator[PaperRecord]:
        """The newest valid record of each paper, in order (deterministic); see `RecordShard`."""
        for shard in self.shards(max(1, self.paper_count)):
            yield from shard.iter_records()
            self.corrupt.extend(shard.corrupt)


def _short_reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "record"
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return f"{where}: {first['msg']}{more}"
    return str(exc)


def scan_records(paths: Sequence[str | Path], corrupt_lines: Literal["skip", "fail"] = "skip") -> RecordScan:
    """Find the records of every paper content in `paths`, newest first.

    Newest means the latest `extracted_at`; on a tie the later file (then the later line) wins. A
    corrupt line (invalid JSON, or not a PaperRecord) is named by file and line; under the 'fail'
    policy it raises `RecordsFileError`, under 'skip' it is logged and counted.
    """
    if not paths:
        raise RecordsFileError("no records files given")
    resolved = tuple(Path(path) for path in paths)
    scan = RecordScan(paths=resolved, corrupt_lines=corrupt_lines)
    for file_index, path in enumerate(resolved):
        if not path.is_file():
            raise RecordsFileError(f"{path}: records file not found")
        with path.open("rb") as handle:
            offset = 0
            for line_number, line in enumerate(handle, start=1):
                line_offset, offset = offset, offset + len(line)
                if not line.strip():
                    continue
                scan.lines_read += 1
                location = _Location(_EPOCH, file_index, line_number, line_offset)
                try:
                    header = _RecordHeader.model_validate_json(line)
                except ValidationError as exc:
                    scan._problem(location, f"not a valid PaperRecord: {_short_reason(exc)}", exc)
                    continue
                extracted_at = header.extracted_at or _EPOCH
                if extracted_at.tzinfo is None:  # a naive time is read as UTC, so times compare
                    extracted_at = extracted_at.replace(tzinfo=UTC)
                location = _Location(extracted_at, file_index, line_number, line_offset)
                scan.candidates.setdefault(header.content_sha256, []).append(location)
    for locations in scan.candidates.values():
        locations.sort(key=lambda loc: (loc.extracted_at, loc.file_index, loc.line_number), reverse=True)
    return scan
