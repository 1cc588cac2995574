"""The marker table's files: Parquet for analysis, CSV for anything, both with the same columns.

Two tables: `marker_findings` (one row per finding, `MarkerFinding`) and `marker_groups` (one row
per marker and condition, `MarkerGroup` flattened: each metric range becomes `<metric>_min`,
`<metric>_max` and `<metric>_findings`). Their columns are declared once here (`FINDING_COLUMNS`,
`GROUP_COLUMNS`) and both formats are written from that declaration, so an empty table still has its
columns and types.

A value that was not reported is empty: null in Parquet, an empty cell in the CSV. List columns
(CpG sites, assays, evidence quotes, paper ids...) are lists in Parquet and JSON arrays in the CSV
(`["MSP", "qMSP"]`: unambiguous whatever the quotes contain; `json.loads` in Python,
`jsonlite::fromJSON` in R). Every file is written to a temporary file and renamed into place, so a
reader never sees half of one.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from methyl_distill.extraction.outputs import atomic_write_bytes, atomic_write_text
from methyl_distill.markers.findings import MarkerFinding
from methyl_distill.markers.grouping import MarkerGroup, MetricRange

ColumnKind = Literal["string", "float", "int", "bool", "list"]

FINDING_COLUMNS: tuple[tuple[str, ColumnKind], ...] = (
    ("finding_id", "string"),
    ("marker_key", "string"),
    ("marker", "string"),
    ("gene", "string"),
    ("cpg_sites", "list"),
    ("region", "string"),
    ("direction", "string"),
    ("condition", "string"),
    ("condition_key", "string"),
    ("sample_types", "list"),
    ("assays", "list"),
    ("clinical_uses", "list"),
    ("sensitivity", "float"),
    ("specificity", "float"),
    ("auc", "float"),
    ("cohort_size", "int"),
    ("performance_notes", "string"),
    ("related", "list"),
    ("evidence", "list"),
    ("paper_id", "string"),
    ("title", "string"),
    ("doi", "string"),
    ("pmid", "string"),
    ("pmcid", "string"),
    ("source_paths", "list"),
    ("content_sha256", "string"),
    ("records_file", "string"),
)

_METRICS = ("sensitivity", "specificity", "auc", "cohort_size")


def _metric_columns() -> tuple[tuple[str, ColumnKind], ...]:
    columns: list[tuple[str, ColumnKind]] = []
    for metric in _METRICS:
        kind: ColumnKind = "int" if metric == "cohort_size" else "float"
        columns += [(f"{metric}_min", kind), (f"{metric}_max", kind), (f"{metric}_findings", "int")]
    return tuple(columns)


GROUP_COLUMNS: tuple[tuple[str, ColumnKind], ...] = (
    ("marker_key", "string"),
    ("condition", "string"),
    ("condition_key", "string"),
    ("papers", "int"),
    ("findings", "int"),
    ("direction", "string"),
    ("conflict", "bool"),
    ("hypermethylated_papers", "list"),
    ("hypomethylated_papers", "list"),
    ("mixed_papers", "list"),
    ("unknown_papers", "list"),
    *_metric_columns(),
    ("sample_types", "list"),
    ("assays", "list"),
    ("clinical_uses", "list"),
    ("names_reported", "list"),
    ("paper_ids", "list"),
    ("finding_ids", "list"),
)


class ParquetUnavailableError(RuntimeError):
    """pyarrow is not installed (it comes with the `dataset` extra)."""


def finding_row(finding: MarkerFinding) -> dict[str, Any]:
    row = finding.model_dump()
    return {name: row[name] for name, _ in FINDING_COLUMNS}


def group_row(group: MarkerGroup) -> dict[str, Any]:
    row = group.model_dump()
    for metric in _METRICS:
        measured: MetricRange = getattr(group, metric)
        as_number: Callable[[float], float | int] = int if metric == "cohort_size" else float
        row[f"{metric}_min"] = None if measured.low is None else as_number(measured.low)
        row[f"{metric}_max"] = None if measured.high is None else as_number(measured.high)
        row[f"{metric}_findings"] = measured.findings
    return {name: row[name] for name, _ in GROUP_COLUMNS}


def _csv_cell(value: Any, kind: ColumnKind) -> str:
    if value is None:
        return ""
    if kind == "list":
        return json.dumps(list(value), ensure_ascii=False)
    if kind == "bool":
        return "true" if value else "false"
    return str(value)


def table_csv(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, ColumnKind]]) -> str:
    """The rows as CSV text (RFC 4180 quoting, header first)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([name for name, _ in columns])
    for row in rows:
        writer.writerow([_csv_cell(row[name], kind) for name, kind in columns])
    return buffer.getvalue()


def write_parquet(
    path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, ColumnKind]]
) -> None:
    """The rows as one Parquet file with the declared column types, written atomically."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ParquetUnavailableError(
            "writing the marker table as Parquet needs pyarrow: pip install 'methyl-distill[dataset]'"
        ) from exc
    types = {
        "string": pa.string(),
        "float": pa.float64(),
        "int": pa.int64(),
        "bool": pa.bool_(),
        "list": pa.list_(pa.string()),
    }
    schema = pa.schema([pa.field(name, types[kind]) for name, kind in columns])
    table = pa.Table.from_pylist(
        [{name: list(row[name]) if kind == "list" else row[name] for name, kind in columns} for row in rows],
        schema=schema,
    )
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    atomic_write_bytes(path, buffer.getvalue().to_pybytes())


def write_table(
    directory: Path,
    name: str,
    rows: Sequence[dict[str, Any]],
    columns: Sequence[tuple[str, ColumnKind]],
) -> tuple[Path, Path]:
    """`<name>.parquet` and `<name>.csv` in `directory`; returns their paths."""
    parquet, csv_path = directory / f"{name}.parquet", directory / f"{name}.csv"
    write_parquet(parquet, rows, columns)
    atomic_write_text(csv_path, table_csv(rows, columns))
    return parquet, csv_path
