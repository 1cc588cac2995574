"""The marker-table task: `build_marker_table` after the extraction, and its summary as an artifact.

No cache: the table is a few seconds of reading records and writing files, and always reflects the
records.jsonl it is given (a cached result could point at files a later run replaced). No retries:
it does no network IO, so a failure is a bug or bad input to be seen, not a blip to wait out.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from methyl_distill.markers import MarkerGroup, MarkerTableSummary
from methyl_distill.markers.marker_table import assemble_marker_table, write_marker_table

# The artifact shows the best-supported pairs (conflicts first among equals); the files hold them all.
ARTIFACT_MAX_ROWS = 200


def _range(low: float | None, high: float | None, *, as_percent: bool = False) -> str:
    if low is None or high is None:
        return "—"

    def shown(value: float) -> str:
        return f"{value * 100:.3g}%" if as_percent else f"{value:.3g}"

    return shown(low) if low == high else f"{shown(low)}–{shown(high)}"


def summary_rows(groups: list[MarkerGroup]) -> list[dict[str, Any]]:
    """The marker and condition pairs as rows of the run's table artifact."""
    return [
        {
            "marker": group.marker_key,
            "condition": group.condition or "—",
            "papers": group.papers,
            "findings": group.findings,
            "direction": group.direction,
            "sensitivity": _range(group.sensitivity.low, group.sensitivity.high, as_percent=True),
            "specificity": _range(group.specificity.low, group.specificity.high, as_percent=True),
            "auc": _range(group.auc.low, group.auc.high),
            "hypermethylated_papers": ", ".join(group.hypermethylated_papers) if group.conflict else "",
            "hypomethylated_papers": ", ".join(group.hypomethylated_papers) if group.conflict else "",
        }
        for group in groups[:ARTIFACT_MAX_ROWS]
    ]


@task(name="build-marker-table", tags=["markers"])
def build_markers(records: list[str], output_directory: str) -> MarkerTableSummary:
    """Write the marker table (methyl_distill.markers.build_marker_table) and publish its summary."""
    table = assemble_marker_table(records)
    summary = write_marker_table(table, output_directory)
    groups = table.groups
    shown = min(len(groups), ARTIFACT_MAX_ROWS)
    create_table_artifact(
        key="marker-table",
        table=summary_rows(groups),
        description=(
            f"{summary.headline()}. {shown} of {len(groups)} marker/condition pairs shown; every one, with "
            f"its findings and evidence, is in {summary.page}"
        ),
    )
    logger = get_run_logger()
    logger.info("Marker table: %s; page: %s", summary.headline(), summary.page)
    for line in summary.skipped_lines:
        logger.warning("Skipped records line %s", line)
    if summary.papers_without_markers:
        logger.info(
            "Papers without markers: %s",
            ", ".join(paper.paper_id for paper in summary.papers_without_markers),
        )
    return summary
