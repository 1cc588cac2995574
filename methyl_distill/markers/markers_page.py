"""`markers.html`: the marker table as one self-contained page, to open in any browser, offline.

Everything is inside the file: the stylesheet (`markers_page.css`), the script (`markers_page.js`)
and the data, as one JSON document in a `<script type="application/json">` element. The script
builds the two tables from it (marker and condition pairs; findings), sorts and filters them, and
opens a finding's evidence quotes in place. All text from the records is inserted as text, never as
HTML, and the page's Content-Security-Policy forbids every network request (`default-src 'none'`):
the page works, and stays quiet, without a network.

docs/markers.md describes how to use the page.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any

from methyl_distill import __version__
from methyl_distill.markers.findings import MarkerFinding, PaperReference
from methyl_distill.markers.grouping import MarkerGroup

if TYPE_CHECKING:
    from methyl_distill.markers.marker_table import MarkerTableSummary

# Inline style and script only; no fetch, image, font or frame from anywhere (data: images for icons).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; "
    "base-uri 'none'; form-action 'none'"
)


def _asset(name: str) -> str:
    return resources.files("methyl_distill.markers").joinpath(name).read_text(encoding="utf-8")


def _script_json(value: Any) -> str:
    """JSON that cannot end the `<script>` element it sits in, whatever the quotes contain."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def page_data(
    papers: Sequence[PaperReference],
    findings: Sequence[MarkerFinding],
    groups: Sequence[MarkerGroup],
    summary: MarkerTableSummary,
) -> dict[str, Any]:
    """What the page's script reads: the papers by id, the findings, the groups and the counts."""
    return {
        "papers": {
            paper.paper_id: paper.model_dump(
                mode="json",
                include={"title", "doi", "pmid", "pmcid", "source_paths", "markers", "records_file"},
            )
            for paper in papers
        },
        "findings": [
            finding.model_dump(mode="json", exclude={"content_sha256", "records_file"})
            for finding in findings
        ],
        "groups": [group.model_dump(mode="json") for group in groups],
        "summary": summary.model_dump(
            mode="json",
            include={
                "records_files",
                "papers",
                "papers_with_markers",
                "papers_without_markers",
                "findings",
                "findings_with_metrics",
                "markers",
                "groups",
                "conflicts",
                "directions",
                "skipped_lines",
                "superseded_records",
            },
        ),
    }


def render_markers_page(
    papers: Sequence[PaperReference],
    findings: Sequence[MarkerFinding],
    groups: Sequence[MarkerGroup],
    summary: MarkerTableSummary,
    *,
    generated_at: datetime | None = None,
) -> str:
    """The whole page as one string of HTML."""
    generated = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    paper_count, sources = summary.papers, len(summary.records_files)
    subtitle = (
        f"Evidence-linked methylation markers from {paper_count} paper{'s' if paper_count != 1 else ''} "
        f"({sources} records file{'s' if sources != 1 else ''}) · generated {generated} by "
        f"methyl-distill {__version__}"
    )
    values = {
        "CSP": html.escape(CONTENT_SECURITY_POLICY, quote=True),
        "STYLE": _asset("markers_page.css"),
        "SUBTITLE": html.escape(subtitle),
        "DATA": _script_json(page_data(papers, findings, groups, summary)),
        "SCRIPT": _asset("markers_page.js"),
    }
    # One pass: text put in is never searched for placeholders again.
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], _TEMPLATE)


_PLACEHOLDER = re.compile(r"@@([A-Z]+)@@")


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="@@CSP@@">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Methylation markers · methyl-distill</title>
<style>
@@STYLE@@
</style>
</head>
<body>
<header class="masthead">
  <div class="masthead-inner">
    <div>
      <h1>Methylation markers</h1>
      <p class="subtitle">@@SUBTITLE@@</p>
    </div>
    <dl class="stats" id="stats"></dl>
  </div>
</header>
<main>
  <div id="notices" class="notices"></div>
  <div class="panel">
    <div class="tabs" role="tablist">
      <button type="button" role="tab" id="tab-groups" data-view="groups" aria-selected="true"></button>
      <button type="button" role="tab" id="tab-findings" data-view="findings" aria-selected="false"></button>
    </div>
    <div class="toolbar">
      <label class="search">
        <span class="visually-hidden">Filter</span>
        <input type="search" id="filter" autocomplete="off" spellcheck="false"
          placeholder="Filter: marker, condition, sample, assay, paper…">
      </label>
      <label class="select">Direction
        <select id="direction">
          <option value="">any</option>
          <option value="hypermethylated">hypermethylated</option>
          <option value="hypomethylated">hypomethylated</option>
          <option value="mixed">mixed</option>
          <option value="unknown">unknown</option>
          <option value="conflict">conflict</option>
          <option value="varied">varied</option>
        </select>
      </label>
      <label class="check"><input type="checkbox" id="conflicts-only"> Conflicts only</label>
      <span id="scope" class="scope" hidden></span>
      <span id="row-count" class="row-count" aria-live="polite"></span>
    </div>
    <div class="table-wrap">
      <table id="groups-table" class="data" aria-labelledby="tab-groups"></table>
      <table id="findings-table" class="data" aria-labelledby="tab-findings" hidden></table>
      <p id="empty" class="empty" hidden>No rows match the filter.</p>
      <p id="more" class="more" hidden></p>
    </div>
  </div>
  <footer class="legend">
    <p><span class="na">—</span> not reported by the paper (never estimated).
      <span class="badge dir-unknown">unknown</span> direction not stated.
      <span class="badge dir-conflict">conflict</span> papers report opposite directions for the same
      marker and condition. Ranges show the lowest and highest reported value and, in brackets, how
      many findings reported one. Quotes are verbatim from the papers.</p>
    <details id="sources"><summary>Sources</summary><ul id="source-list"></ul></details>
  </footer>
</main>
<noscript><p class="empty">This page needs JavaScript to show the table; the same data is in
marker_findings.csv and marker_groups.csv beside it.</p></noscript>
<script type="application/json" id="marker-data">@@DATA@@</script>
<script>
@@SCRIPT@@
</script>
</body>
</html>
"""
