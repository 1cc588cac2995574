"""Writing the extraction stage's outputs, atomically.

Layout of the output directory:

- `processed_files/<file_id>.txt`: the readable Q&A of one paper file: where the paper came from
  (file, format, title, identifiers, sections left out), then each question and its answer;
- `all_results.json`: one entry per paper file: `file_id`, `input_questions`, `generated_answers`
  (the original script's layout) plus the file's `source_path`, `format`, `title`, `doi`, `pmid`,
  `pmcid` and `record`, the structured `PaperRecord`;
- `records.jsonl`: one `PaperRecord` per distinct paper (the dataset stage reads this);
- `failures.jsonl`: one `FailureRecord` per file that could not be read or extracted;
- `batch_state.json` (batch mode only): the ids of the run's batches, so a killed run resumes them.

Every file is written to a temporary file in the same directory, flushed, fsynced and renamed over
the target, so a crash (even `kill -9`) leaves either the old or the new file, never half of one;
the temporary file such a crash may leave behind is removed by the next run (a run owns its output
directory: two runs writing to one directory at the same time is not supported).

An output directory is ours when it holds `OUTPUT_MARKER_FILE`, written when a run first claims it
(`claim_output_directory`). A run refuses a non-empty folder that is not ours, unless it holds
nothing but the files an extraction writes (an output folder of an earlier version, adopted), so a
mistyped path never has its files overwritten; and only our own temporary files are ever deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from methyl_distill.extraction.records import FailureRecord, PaperRecord

PROCESSED_FILES_DIR = "processed_files"
ALL_RESULTS_FILE = "all_results.json"
RECORDS_FILE = "records.jsonl"
FAILURES_FILE = "failures.jsonl"
OUTPUT_MARKER_FILE = ".methyl-distill-extraction"
# The batch ids of a run with the Batch API (`batch_extraction`), so a killed run resumes them.
BATCH_STATE_FILE = "batch_state.json"
_AGGREGATE_FILES = (RECORDS_FILE, ALL_RESULTS_FILE, FAILURES_FILE)
_OUR_ENTRIES = frozenset((*_AGGREGATE_FILES, PROCESSED_FILES_DIR, OUTPUT_MARKER_FILE, BATCH_STATE_FILE))


class ForeignOutputDirectoryError(ValueError):
    """The output directory holds files that an extraction did not write."""


class ExtractionOutputPaths(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    output_directory: str
    records: str
    all_results: str
    failures: str
    processed_files: str

    @classmethod
    def under(cls, output_directory: str | Path) -> ExtractionOutputPaths:
        root = Path(output_directory).expanduser().resolve()
        return cls(
            output_directory=str(root),
            records=str(root / RECORDS_FILE),
            all_results=str(root / ALL_RESULTS_FILE),
            failures=str(root / FAILURES_FILE),
            processed_files=str(root / PROCESSED_FILES_DIR),
        )


def refuse_output_inside_input(
    input_directory: str | Path, output_directory: str | Path, input_name: str = "input_directory"
) -> None:
    """Raise `ValueError` when the output folder is the input folder or lies inside it: the next run
    would read its own outputs (processed files, a dataset card) as papers."""
    source = Path(input_directory).expanduser().resolve()
    output = Path(output_directory).expanduser().resolve()
    if output == source or source in output.parents:
        raise ValueError(
            f"output_directory {output} is inside {input_name} {source}: the next run would read its own "
            f"outputs as papers; choose an output folder outside {source}"
        )


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened for fsync
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _our_temporaries(directory: Path) -> list[Path]:
    """Temporary files `atomic_write_bytes` makes for our outputs in `directory` (`.<name>.<random>.tmp`)."""
    if directory.name == PROCESSED_FILES_DIR:
        return list(directory.glob(".*.txt.*.tmp"))
    names = (*_AGGREGATE_FILES, BATCH_STATE_FILE)
    return [path for name in names for path in directory.glob(f".{name}.*.tmp")]


def remove_stale_temporaries(directory: str | Path) -> int:
    """Delete the temporary files of our outputs that a killed writer left in `directory` (nothing
    else); returns how many."""
    removed = 0
    for leftover in _our_temporaries(Path(directory)):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
            removed += 1
    return removed


def claim_output_directory(output_directory: str | Path) -> Path:
    """Make `output_directory` ours (create it, write the marker) or raise
    `ForeignOutputDirectoryError` if it holds files an extraction did not write."""
    root = Path(output_directory).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise ForeignOutputDirectoryError(f"output_directory {root} exists and is not a folder")
    if (root / OUTPUT_MARKER_FILE).is_file():
        return root
    if root.is_dir():
        ours = {path.name for path in _our_temporaries(root)} | _OUR_ENTRIES
        foreign = sorted(entry.name for entry in root.iterdir() if entry.name not in ours)
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise ForeignOutputDirectoryError(
                f"output_directory {root} holds files that methyl-distill extract did not write ({shown}); "
                "choose a new or empty folder, or the folder of an earlier extract run"
            )
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / OUTPUT_MARKER_FILE, "written by methyl-distill extract: its outputs live here\n")
    return root


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace `path` with `data` all at once: readers see the old or the new content, never a mix."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_directory(target.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def source_lines(record: PaperRecord, file_id: str | None = None) -> list[str]:
    """What the processed file says about the paper: its file, format, title and identifiers."""
    source = record.source
    file_id = file_id or record.file_id
    index = record.file_ids.index(file_id) if file_id in record.file_ids else 0
    path = record.source_paths[index] if index < len(record.source_paths) else record.source_paths[0]
    how = source.format + (f", {source.pages} pages" if source.pages else "")
    if source.encoding and source.encoding not in ("utf-8", "ascii"):
        how += f", {source.encoding}"
    lines = [f"Source: {path} ({how}, read by {source.reader})"]
    for label, value in (
        ("Title", source.title),
        ("DOI", source.doi),
        ("PMID", source.pmid),
        ("PMCID", source.pmcid),
    ):
        if value:
            lines.append(f"{label}: {value}")
    if source.omitted_sections:
        lines.append(f"Left out: {', '.join(source.omitted_sections)} (~{source.omitted_tokens} tokens)")
    return lines


def format_processed_file(record: PaperRecord, file_id: str | None = None) -> str:
    """The readable Q&A of one paper: where it came from, then each question, its answer, its evidence."""
    lines = [f"# {file_id or record.file_id}", "", *source_lines(record, file_id), ""]
    for answered in record.answers:
        lines.append(f"Question: {answered.question}")
        lines.append(f"Answer: {answered.answer}")
        lines.extend(f'Evidence: "{quote}"' for quote in answered.evidence)
        lines.append("")
    if record.additional_qa:
        lines.append("## Additional questions")
        lines.append("")
        for pair in record.additional_qa:
            lines.append(f"Question: {pair.question}")
            lines.append(f"Answer: {pair.answer}")
            lines.extend(f'Evidence: "{quote}"' for quote in pair.evidence)
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def processed_file_path(output_directory: str | Path, file_id: str) -> Path:
    return Path(output_directory) / PROCESSED_FILES_DIR / f"{file_id}.txt"


def _unchanged(path: Path, data: bytes) -> bool:
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


def write_processed_files(output_directory: str | Path, record: PaperRecord) -> list[Path]:
    """`processed_files/<file_id>.txt` for every file holding the record's paper.

    A file that already holds exactly this text is left alone, so an all-cached rerun writes nothing.
    """
    paths = []
    for file_id in record.file_ids:
        path = processed_file_path(output_directory, file_id)
        data = format_processed_file(record, file_id).encode("utf-8")
        if not _unchanged(path, data):
            atomic_write_bytes(path, data)
        paths.append(path)
    return paths


def prune_processed_files(output_directory: str | Path, keep_file_ids: set[str]) -> int:
    """Delete `processed_files/<file_id>.txt` of every file id not in `keep_file_ids`; returns how many."""
    removed = 0
    for path in (Path(output_directory) / PROCESSED_FILES_DIR).glob("*.txt"):
        if path.stem not in keep_file_ids:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
    return removed


def all_results_entries(records: Iterable[PaperRecord]) -> list[dict[str, object]]:
    """One entry per paper file, in the original script's layout plus the structured record."""
    entries: list[dict[str, object]] = []
    for record in records:
        structured = record.model_dump(mode="json")
        source = record.source
        for file_id, source_path in zip(record.file_ids, record.source_paths, strict=False):
            entries.append(
                {
                    "file_id": file_id,
                    "source_path": source_path,
                    "format": source.format,
                    "title": source.title,
                    "doi": source.doi,
                    "pmid": source.pmid,
                    "pmcid": source.pmcid,
                    "input_questions": [answered.question for answered in record.answers],
                    "generated_answers": [answered.answer for answered in record.answers],
                    "record": structured,
                }
            )
    return sorted(entries, key=lambda entry: str(entry["file_id"]))


def _jsonl(models: Iterable[PaperRecord] | Iterable[FailureRecord]) -> str:
    return "".join(model.model_dump_json() + "\n" for model in models)


def write_extraction_outputs(
    output_directory: str | Path,
    records: Sequence[PaperRecord],
    failures: Sequence[FailureRecord],
    *,
    processed_files: bool = True,
) -> ExtractionOutputPaths:
    """Write every output file of a run, each one atomically; returns their paths.

    `processed_files=False` skips the per-paper files, for callers that wrote them as each paper
    finished.
    """
    paths = ExtractionOutputPaths.under(claim_output_directory(output_directory))
    Path(paths.processed_files).mkdir(parents=True, exist_ok=True)
    for directory in (paths.output_directory, paths.processed_files):
        remove_stale_temporaries(directory)
    ordered = sorted(records, key=lambda record: record.file_id)
    if processed_files:
        for record in ordered:
            write_processed_files(paths.output_directory, record)
    atomic_write_text(
        paths.all_results, json.dumps(all_results_entries(ordered), indent=2, ensure_ascii=False) + "\n"
    )
    atomic_write_text(paths.records, _jsonl(ordered))
    atomic_write_text(paths.failures, _jsonl(sorted(failures, key=lambda failure: failure.file_id)))
    return paths
