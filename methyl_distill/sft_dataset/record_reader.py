"""Reading `records.jsonl` files of one or more extraction runs: the newest record per paper content wins.

The files are read twice: a first pass validates every line and remembers, per paper content
(`content_sha256`), where the newest record lies (file, byte offset); the second pass loads only those
records, one at a time. Memory stays proportional to the number of papers, not to the records' size.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from methyl_distill.records import PaperRecord

logger = logging.getLogger(__name__)


class RecordsFileError(ValueError):
    """A records file that cannot be read, or a corrupt line under the 'fail' policy."""


@dataclass(frozen=True, slots=True)
class _Location:
    extracted_at: datetime
    file_index: int
    line_number: int
    offset: int


@dataclass
class RecordScan:
    """Where the newest record of every paper lies, and what the scan met on the way."""

    paths: tuple[Path, ...]
    winners: dict[str, _Location] = field(default_factory=dict)
    lines_read: int = 0
    corrupt_lines: list[str] = field(default_factory=list)  # "file:line: reason"
    superseded: int = 0

    @property
    def paper_count(self) -> int:
        return len(self.winners)

    def iter_records(self) -> Iterator[PaperRecord]:
        """The winning records, in the order of their first file and line (deterministic)."""
        order = sorted(self.winners.values(), key=lambda loc: (loc.file_index, loc.offset))
        handles = [path.open("rb") for path in self.paths]
        try:
            for location in order:
                handle = handles[location.file_index]
                handle.seek(location.offset)
                yield PaperRecord.model_validate_json(handle.readline())
        finally:
            for handle in handles:
                handle.close()


def _short_reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "record"
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return f"{where}: {first['msg']}{more}"
    return str(exc)


def scan_records(paths: Sequence[str | Path], corrupt_lines: Literal["skip", "fail"] = "skip") -> RecordScan:
    """Validate every line of `paths` and find the newest record per paper content.

    Newest means the latest `extracted_at`; on a tie the later file (then the later line) wins.
    A corrupt line (invalid JSON or not a PaperRecord) is named by file and line; under the 'fail'
    policy it raises `RecordsFileError`, under 'skip' it is logged and counted.
    """
    if not paths:
        raise RecordsFileError("no records files given")
    resolved = tuple(Path(path) for path in paths)
    scan = RecordScan(paths=resolved)
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
                try:
                    record = PaperRecord.model_validate_json(line)
                except ValidationError as exc:
                    problem = f"{path}:{line_number}: not a valid PaperRecord: {_short_reason(exc)}"
                    if corrupt_lines == "fail":
                        raise RecordsFileError(problem) from exc
                    logger.warning("Skipping %s", problem)
                    scan.corrupt_lines.append(problem)
                    continue
                extracted_at = record.extracted_at
                if extracted_at.tzinfo is None:  # a naive time is read as UTC, so times compare
                    extracted_at = extracted_at.replace(tzinfo=UTC)
                location = _Location(extracted_at, file_index, line_number, line_offset)
                current = scan.winners.get(record.content_sha256)
                if current is None:
                    scan.winners[record.content_sha256] = location
                    continue
                scan.superseded += 1
                if (location.extracted_at, file_index, line_number) >= (
                    current.extracted_at,
                    current.file_index,
                    current.line_number,
                ):
                    scan.winners[record.content_sha256] = location
    return scan
