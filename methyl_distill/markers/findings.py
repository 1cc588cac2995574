"""Extraction records → one row per marker finding, each with its paper and its evidence quotes.

A *finding* is one `MarkerRecord` of one paper: "this paper reports SEPT9 promoter
hypermethylation in colorectal cancer, in plasma, by qMSP, sensitivity 0.68, and here are the
quotes". Nothing is invented on the way: a metric the paper did not report stays None (blank in the
CSV, null in Parquet, "—" on the page); a direction the paper did not state is `unknown`; a paper
whose record lists no marker is kept in `papers_without_markers`, not dropped silently.

Several `records.jsonl` files may be given (several runs, several folders). The records are read
with the dataset stage's reader (`scan_records`), so both stages agree on what a paper is and which
record of it counts: one paper per content hash, its newest record wins, and a line that is not a
valid `PaperRecord` is logged as a warning with its file and line number and skipped. On top of
that, two records that share a file id but not their content (the paper was edited between two
runs) are one paper too: the newer record wins and the older is counted as superseded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from methyl_distill.extraction.records import Direction, MarkerRecord, PaperRecord
from methyl_distill.markers.marker_names import condition_key, marker_key
from methyl_distill.sft_dataset.record_reader import RecordsFileError, scan_records

logger = logging.getLogger(__name__)

FindingDirection = Literal["hypermethylated", "hypomethylated", "mixed", "unknown"]
FINDING_DIRECTIONS: tuple[FindingDirection, ...] = ("hypermethylated", "hypomethylated", "mixed", "unknown")
_DIRECTIONS: dict[Direction, FindingDirection] = {
    "hypermethylated": "hypermethylated",
    "hypomethylated": "hypomethylated",
    "mixed": "mixed",
    "not_stated": "unknown",
}
# Float noise from unit conversions (0.817 arrives as 0.8170000000000001): rounding this far changes
# no reported figure.
_METRIC_DIGITS = 10


class MarkersInputError(ValueError):
    """The records given to the marker table cannot be read (a missing file, none given)."""


class PaperReference(BaseModel):
    """The paper a finding comes from, as the records name it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    paper_id: str = Field(description="The record's file id: the first file with this paper's content.")
    file_ids: tuple[str, ...] = Field(description="Every file id with this content.")
    source_paths: tuple[str, ...] = Field(description="Those files' paths relative to the input folder.")
    title: str | None = None
    doi: str | None = None
    pmid: str | None = None
    pmcid: str | None = None
    content_sha256: str
    teacher_model: str
    extracted_at: datetime
    records_file: str = Field(description="The records.jsonl this paper's record was read from.")
    markers: int = Field(ge=0, description="Marker findings in the record.")


class MarkerFinding(BaseModel):
    """One marker reported by one paper: one row of the findings table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    finding_id: str = Field(description="`<paper_id>#<n>`: the n-th marker (from 1) of that paper's record.")
    marker_key: str = Field(description="The normalised marker the table groups by (marker_names.py).")
    marker: str = Field(description="The marker as the paper names it.")
    gene: str | None = Field(description="The gene symbol as reported (None for an intergenic site).")
    cpg_sites: tuple[str, ...]
    region: str | None
    direction: FindingDirection = Field(description="'unknown' where the paper does not state it.")
    condition: str | None = Field(description="The condition as reported (None: not stated).")
    condition_key: str = Field(description="The normalised condition the table groups by ('' if none).")
    sample_types: tuple[str, ...]
    assays: tuple[str, ...]
    clinical_uses: tuple[str, ...]
    sensitivity: float | None
    specificity: float | None
    auc: float | None
    cohort_size: int | None
    performance_notes: str
    related: tuple[str, ...]
    evidence: tuple[str, ...] = Field(description="Verbatim quotes from the paper supporting the finding.")
    paper_id: str
    title: str | None
    doi: str | None
    pmid: str | None
    pmcid: str | None
    source_paths: tuple[str, ...]
    content_sha256: str
    records_file: str


@dataclass
class MarkerFindings:
    """What the records hold, paper by paper, and what reading them met on the way."""

    records_files: tuple[str, ...]
    papers: list[PaperReference] = field(default_factory=list)
    findings: list[MarkerFinding] = field(default_factory=list)
    skipped_lines: list[str] = field(default_factory=list)  # "file:line: reason"
    superseded_records: int = 0

    @property
    def papers_without_markers(self) -> list[PaperReference]:
        return [paper for paper in self.papers if paper.markers == 0]


def _metric(value: float | None) -> float | None:
    return None if value is None else round(value, _METRIC_DIGITS)


def findings_of(record: PaperRecord, records_file: str) -> list[MarkerFinding]:
    """The record's markers as findings, in the order the record lists them."""
    return [_finding(record, records_file, index, marker) for index, marker in enumerate(record.markers, 1)]


def _finding(record: PaperRecord, records_file: str, index: int, marker: MarkerRecord) -> MarkerFinding:
    performance = marker.performance
    return MarkerFinding(
        finding_id=f"{record.file_id}#{index}",
        marker_key=marker_key(marker.gene, marker.marker),
        marker=marker.marker,
        gene=marker.gene,
        cpg_sites=tuple(marker.cpg_sites),
        region=marker.region,
        direction=_DIRECTIONS[marker.direction],
        condition=marker.condition if marker.condition and marker.condition.strip() else None,
        condition_key=condition_key(marker.condition),
        sample_types=tuple(marker.sample_types),
        assays=tuple(marker.assays),
        clinical_uses=tuple(marker.clinical_uses),
        sensitivity=_metric(performance.sensitivity),
        specificity=_metric(performance.specificity),
        auc=_metric(performance.auc),
        cohort_size=performance.cohort_size,
        performance_notes=performance.notes,
        related=tuple(marker.related),
        evidence=tuple(marker.evidence),
        paper_id=record.file_id,
        title=record.source.title,
        doi=record.source.doi,
        pmid=record.source.pmid,
        pmcid=record.source.pmcid,
        source_paths=tuple(record.source_paths),
        content_sha256=record.content_sha256,
        records_file=records_file,
    )


def _paper_of(record: PaperRecord, records_file: str) -> PaperReference:
    return PaperReference(
        paper_id=record.file_id,
        file_ids=tuple(record.file_ids or [record.file_id]),
        source_paths=tuple(record.source_paths),
        title=record.source.title,
        doi=record.source.doi,
        pmid=record.source.pmid,
        pmcid=record.source.pmcid,
        content_sha256=record.content_sha256,
        teacher_model=record.teacher_model,
        extracted_at=record.extracted_at,
        records_file=records_file,
        markers=len(record.markers),
    )


def read_marker_findings(records_paths: Sequence[str | Path]) -> MarkerFindings:
    """Every marker finding of the papers in `records_paths`, each paper counted once.

    Raises `MarkersInputError` naming the file when a records file is missing; a malformed line is
    a warning (file and line) and is skipped.
    """
    if not records_paths:
        raise MarkersInputError("no records files given")
    paths = tuple(str(Path(path).expanduser().resolve()) for path in records_paths)
    for given, path in zip(records_paths, paths, strict=True):
        if Path(path).is_dir():
            hint = Path(given) / "records.jsonl"
            raise MarkersInputError(
                f"{given} is a folder, not a records file"
                + (f": did you mean {hint}?" if hint.is_file() else "")
            )
        if not Path(path).is_file():
            raise MarkersInputError(f"{given}: records file not found")
    try:
        scan = scan_records(paths, "skip")
    except RecordsFileError as exc:  # e.g. removed between the check above and the scan
        raise MarkersInputError(str(exc)) from exc
    # The scan yields each content's newest record but does not say which file it came from: the
    # content hash leads back to it. (Should the newest line of a paper be invalid, the scan falls
    # back to an older one, possibly from another file; the file named is then the newest's.)
    file_of_content = {
        content: paths[locations[0].file_index] for content, locations in scan.candidates.items()
    }
    kept: dict[str, tuple[PaperRecord, str]] = {}  # content sha256 -> record, records file
    owner_of_file_id: dict[str, str] = {}  # file id -> content sha256 of the record that has it
    superseded = 0
    for record in scan.iter_records():
        records_file = file_of_content[record.content_sha256]
        rivals = {
            owner_of_file_id[file_id]
            for file_id in {record.file_id, *record.file_ids}
            if file_id in owner_of_file_id
        }
        if any(kept[rival][0].extracted_at > record.extracted_at for rival in rivals):
            superseded += 1
            logger.warning(
                "%s: the record of %s (extracted %s) is older than another record of the same file; "
                "using the newer one",
                records_file,
                record.file_id,
                record.extracted_at.isoformat(),
            )
            continue
        for rival in rivals:
            superseded += 1
            older, older_file = kept.pop(rival)
            logger.warning(
                "%s: the record of %s (extracted %s) is older than another record of the same file; "
                "using the newer one",
                older_file,
                older.file_id,
                older.extracted_at.isoformat(),
            )
            for file_id in {older.file_id, *older.file_ids}:
                owner_of_file_id.pop(file_id, None)
        kept[record.content_sha256] = (record, records_file)
        for file_id in {record.file_id, *record.file_ids}:
            owner_of_file_id[file_id] = record.content_sha256
    result = MarkerFindings(
        records_files=paths,
        skipped_lines=list(scan.corrupt),
        superseded_records=superseded + scan.superseded,
    )
    for record, records_file in sorted(kept.values(), key=lambda kept_record: kept_record[0].file_id):
        result.papers.append(_paper_of(record, records_file))
        result.findings.extend(findings_of(record, records_file))
    return result
