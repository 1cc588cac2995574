"""The marker table: every methylation marker finding in the records, with its paper and its quotes.

See docs/markers.md. `build_marker_table` (marker_table.py) is the plain core: records.jsonl file(s)
→ `marker_findings` and `marker_groups` (Parquet + CSV), `markers.html` and `markers_summary.json`.
`methyl-distill markers` runs it; the pipeline's `build-marker-table` task (tasks/markers.py) runs it
after the extraction.
"""

from methyl_distill.markers.findings import MarkerFinding, MarkersInputError, read_marker_findings
from methyl_distill.markers.grouping import MarkerGroup, group_findings
from methyl_distill.markers.marker_table import MarkerTableSummary, build_marker_table

__all__ = [
    "MarkerFinding",
    "MarkerGroup",
    "MarkerTableSummary",
    "MarkersInputError",
    "build_marker_table",
    "group_findings",
    "read_marker_findings",
]
