"""`build_marker_table`: records.jsonl file(s) → the marker table's files and a summary of them.

Plain code (no Prefect): `methyl-distill markers` calls it directly, and the pipeline's
`build-marker-table` task (tasks/markers.py) wraps it after the extraction. The summary says what a
reader needs to trust the table: how many papers were read, which had no markers, which lines were
skipped and why, how many findings and conflicts there are.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from methyl_distill.extraction.outputs import atomic_write_text
from methyl_distill.markers.findings import (
    FINDING_DIRECTIONS,
    MarkerFindings,
    MarkersInputError,
    read_marker_findings,
)
from methyl_distill.markers.grouping import MarkerGroup, group_findings
from methyl_distill.markers.markers_page import render_markers_page
from methyl_distill.markers.outputs import (
    FINDING_COLUMNS,
    GROUP_COLUMNS,
    finding_row,
    group_row,
    write_table,
)

logger = logging.getLogger(__name__)

FINDINGS_TABLE = "marker_findings"
GROUPS_TABLE = "marker_groups"
MARKERS_PAGE = "markers.html"
MARKERS_SUMMARY = "markers_summary.json"


class PaperWithoutMarkers(BaseModel):
    """A paper whose record lists no marker: counted and named, never dropped silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    paper_id: str
    title: str | None
    source_paths: tuple[str, ...]
    records_file: str


class MarkerTableSummary(BaseModel):
    """What `build_marker_table` wrote and what it found (also written as markers_summary.json)."""

    model_config = ConfigDict(extra="forbid")

    output_directory: str
    records_files: list[str]
    findings_parquet: str
    findings_csv: str
    groups_parquet: str
    groups_csv: str
    page: str
    summary_json: str
    papers: int = Field(description="Distinct papers read (each counted once across the records files).")
    papers_with_markers: int
    papers_without_markers: list[PaperWithoutMarkers]
    findings: int = Field(description="Marker findings: one per marker per paper record.")
    findings_with_metrics: int = Field(description="Findings reporting sensitivity, specificity or AUC.")
    markers: int = Field(description="Distinct normalised markers.")
    groups: int = Field(description="Distinct marker and condition pairs.")
    conflicts: int = Field(description="Marker and condition pairs whose papers disagree on the direction.")
    directions: dict[str, int] = Field(description="Findings by direction ('unknown': not stated).")
    skipped_lines: list[str] = Field(description="'file:line: reason' of each records line skipped.")
    superseded_records: int = Field(description="Older records of a paper that a newer record replaced.")

    def headline(self) -> str:
        """One line for a terminal or a log."""
        return (
            f"{self.findings} findings of {self.markers} markers ({self.groups} marker/condition pairs, "
            f"{self.conflicts} with conflicting directions) from {self.papers_with_markers} of {self.papers} "
            f"papers; {len(self.papers_without_markers)} without markers; "
            f"{len(self.skipped_lines)} records lines skipped"
        )


@dataclass
class MarkerTable:
    """The findings read from the records and their groups across papers, before anything is written."""

    read: MarkerFindings
    groups: list[MarkerGroup]


def assemble_marker_table(records: Sequence[str | Path]) -> MarkerTable:
    """Read `records` (see `read_marker_findings`) and group the findings (see `group_findings`)."""
    read = read_marker_findings(records)
    return MarkerTable(read=read, groups=group_findings(read.findings))


def build_marker_table(records: Sequence[str | Path], output_directory: str | Path) -> MarkerTableSummary:
    """Read `records`, write the findings and groups tables (Parquet + CSV), markers.html and
    markers_summary.json into `output_directory`, and return the summary."""
    return write_marker_table(assemble_marker_table(records), output_directory)


def write_marker_table(table: MarkerTable, output_directory: str | Path) -> MarkerTableSummary:
    """Write `table`'s files into `output_directory` (created if missing) and return the summary."""
    read, groups = table.read, table.groups
    root = Path(output_directory).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise MarkersInputError(f"output_directory {root} is a file, not a folder")
    root.mkdir(parents=True, exist_ok=True)
    findings_parquet, findings_csv = write_table(
        root, FINDINGS_TABLE, [finding_row(finding) for finding in read.findings], FINDING_COLUMNS
    )
    groups_parquet, groups_csv = write_table(
        root, GROUPS_TABLE, [group_row(group) for group in groups], GROUP_COLUMNS
    )
    directions = Counter(finding.direction for finding in read.findings)
    summary = MarkerTableSummary(
        output_directory=str(root),
        records_files=list(read.records_files),
        findings_parquet=str(findings_parquet),
        findings_csv=str(findings_csv),
        groups_parquet=str(groups_parquet),
        groups_csv=str(groups_csv),
        page=str(root / MARKERS_PAGE),
        summary_json=str(root / MARKERS_SUMMARY),
        papers=len(read.papers),
        papers_with_markers=len(read.papers) - len(read.papers_without_markers),
        papers_without_markers=[
            PaperWithoutMarkers(
                paper_id=paper.paper_id,
                title=paper.title,
                source_paths=paper.source_paths,
                records_file=paper.records_file,
            )
            for paper in read.papers_without_markers
        ],
        findings=len(read.findings),
        findings_with_metrics=sum(
            1
            for finding in read.findings
            if any(value is not None for value in (finding.sensitivity, finding.specificity, finding.auc))
        ),
        markers=len({finding.marker_key for finding in read.findings}),
        groups=len(groups),
        conflicts=sum(1 for group in groups if group.conflict),
        directions={direction: directions.get(direction, 0) for direction in FINDING_DIRECTIONS},
        skipped_lines=read.skipped_lines,
        superseded_records=read.superseded_records,
    )
    atomic_write_text(summary.page, render_markers_page(read.papers, read.findings, groups, summary))
    atomic_write_text(summary.summary_json, summary.model_dump_json(indent=2) + "\n")
    logger.info("Marker table in %s: %s", root, summary.headline())
    return summary
