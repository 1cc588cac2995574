"""`methyl-distill markers`: extraction records → the marker table (Parquet, CSV, markers.html)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "markers",
        help="Build the evidence-linked marker table (Parquet, CSV, markers.html) from extraction records.",
        description=(
            "Turn the records.jsonl of one or more extraction runs into a marker table: one row per "
            "marker finding (gene, CpG ids, region, direction, condition, sample types, assays, clinical "
            "uses, sensitivity, specificity, AUC, cohort size, the paper and its verbatim quotes), the "
            "findings grouped by marker and condition across papers with conflicting directions flagged, "
            "and markers.html, a self-contained page to sort, filter and read the evidence offline. "
            "Each paper counts once however many records files hold it. See docs/markers.md."
        ),
    )
    parser.add_argument("--records", nargs="+", required=True, metavar="FILE", help="records.jsonl file(s).")
    parser.add_argument(
        "--output_directory",
        required=True,
        help="Directory for marker_findings.{parquet,csv}, marker_groups.{parquet,csv}, markers.html "
        "and markers_summary.json (created if missing; those files are replaced).",
    )
    parser.set_defaults(handler=run_markers)


def run_markers(args: argparse.Namespace) -> int:
    # Plain code, no Prefect run: the table takes seconds, and a temporary Prefect server would take
    # longer to start than the work. The pipeline runs the same core as a task.
    from methyl_distill.markers import build_marker_table

    summary = build_marker_table(args.records, args.output_directory)
    print(summary.headline())
    for line in summary.skipped_lines:
        print(f"  skipped {line}")
    if summary.papers_without_markers:
        print(f"Papers without markers ({len(summary.papers_without_markers)}):")
        for paper in summary.papers_without_markers:
            print(f"  {paper.paper_id}  {paper.title or ', '.join(paper.source_paths)}")
    print(f"page:     {summary.page}")
    print(f"findings: {summary.findings_parquet} (+ .csv)")
    print(f"groups:   {summary.groups_parquet} (+ .csv)")
    print(f"summary:  {summary.summary_json}")
    return 0
