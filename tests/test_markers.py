"""The marker table: names and conditions matched across papers, papers counted once, conflicts
flagged, nothing invented, bad input reported; its files, the command and the pipeline's task.

The page in a real browser: tests/test_markers_page.py.
"""

from __future__ import annotations

import csv
import html
import json
import logging
import math
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from methyl_distill.markers import (
    MarkersInputError,
    build_marker_table,
    group_findings,
    read_marker_findings,
)
from methyl_distill.markers.marker_names import GENE_ALIASES, condition_key, marker_key
from methyl_distill.markers.markers_page import CONTENT_SECURITY_POLICY
from tests.marker_records import SEPT9_QUOTE, marker, paper, sample_corpus, write_records


@pytest.mark.parametrize(
    ("gene", "name", "key"),
    [
        ("SEPT9", "SEPT9", "SEPTIN9"),
        ("SEPTIN9", "SEPTIN9", "SEPTIN9"),
        ("sept-9", "sept-9", "SEPTIN9"),
        ("SEPT9 promoter", "SEPT9 promoter", "SEPTIN9"),
        ("mSEPT9", "mSEPT9", "SEPTIN9"),
        ("RASSF1A", "RASSF1A promoter", "RASSF1"),
        ("p16INK4a", "p16", "CDKN2A"),
        ("p16", "p16", "CDKN2A"),
        ("hMLH1", "hMLH1", "MLH1"),
        ("TIMP-3", "TIMP-3", "TIMP3"),
        ("TIMP\u20133", "TIMP\u20133", "TIMP3"),  # an en dash
        ("RAR\u03b22", "RAR\u03b22", "RARB"),  # RARβ2
        ("MGMT gene promoter", "MGMT", "MGMT"),
        ("HLA-A", "HLA-A", "HLA-A"),  # letters after the hyphen: a different symbol, kept
        ("NKX2-1", "NKX2-1", "NKX2-1"),
        ("p14ARF", "p14ARF", "P14ARF"),  # its own promoter: not merged into CDKN2A
        (None, "cg05575921", "cg05575921"),
        (None, "CG05575921", "cg05575921"),
        (None, "chr7 enhancer", "CHR7 ENHANCER"),
        ("  ", "SHOX2", "SHOX2"),  # a blank gene falls back to the name
        (None, "", ""),
    ],
)
def test_marker_key_matches_the_documented_names(gene: str | None, name: str, key: str) -> None:
    assert marker_key(gene, name) == key


def test_every_alias_points_at_a_symbol_that_is_not_itself_an_alias() -> None:
    for alias, symbol in GENE_ALIASES.items():
        assert alias != symbol and symbol not in GENE_ALIASES, alias
        assert marker_key(alias, alias) == symbol


@pytest.mark.parametrize(
    ("condition", "key"),
    [
        ("Colorectal Cancer", "colorectal cancer"),
        ("  colorectal\n  cancer. ", "colorectal cancer"),
        ("\u201cBreast tumour\u201d", "breast tumor"),
        ("Oesophageal adenocarcinoma", "esophageal adenocarcinoma"),
        ("acute myeloid leukaemia", "acute myeloid leukemia"),
        ("non\u2010small cell lung cancer", "non-small cell lung cancer"),
        ("colorectal neoplasia", "colorectal neoplasia"),  # not merged with cancer: a curator's call
        (None, ""),
        ("   ", ""),
    ],
)
def test_condition_key_folds_case_space_punctuation_and_spelling(condition: str | None, key: str) -> None:
    assert condition_key(condition) == key


def test_findings_keep_what_the_papers_say_and_invent_nothing(tmp_path: Path) -> None:
    records = write_records(tmp_path / "records.jsonl", sample_corpus())
    read = read_marker_findings([records])
    assert [p.paper_id for p in read.papers_without_markers] == ["review-no-markers"]
    assert len(read.papers) == 5 and len(read.findings) == 5
    by_id = {finding.finding_id: finding for finding in read.findings}
    sept9 = by_id["sept9-plasma#1"]
    assert (sept9.marker, sept9.gene, sept9.marker_key) == ("SEPT9 promoter", "SEPT9", "SEPTIN9")
    assert (sept9.sensitivity, sept9.specificity, sept9.auc, sept9.cohort_size) == (0.68, 0.89, 0.84, 1544)
    assert sept9.evidence == (SEPT9_QUOTE,) and sept9.doi == "10.5555/sept9.2024" and sept9.pmid == "12345678"
    assert sept9.records_file == str(records.resolve())
    actb = by_id["sept9-plasma#2"]
    assert actb.direction == "unknown"  # not_stated in the record
    assert (actb.sensitivity, actb.specificity, actb.auc, actb.cohort_size) == (None, None, None, None)
    assert actb.condition == "Colorectal Cancer" and actb.condition_key == "colorectal cancer"


def test_a_paper_in_several_records_files_counts_once(tmp_path: Path) -> None:
    corpus = sample_corpus()
    first = write_records(tmp_path / "run1.jsonl", corpus[:3])
    later = corpus[0].model_copy(update={"extracted_at": datetime(2026, 2, 1, tzinfo=UTC)})
    second = write_records(tmp_path / "run2.jsonl", [later, *corpus[3:]])
    read = read_marker_findings([first, second])
    assert sorted(p.paper_id for p in read.papers) == sorted(record.file_id for record in corpus)
    assert len(read.findings) == 5  # SEPT9 paper's two findings once, not twice
    assert read.superseded_records == 1
    (sept9_paper,) = [p for p in read.papers if p.paper_id == "sept9-plasma"]
    assert sept9_paper.records_file == str(second.resolve())  # the newer record


def test_an_edited_paper_counts_once_its_newer_record_wins(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = paper("shox2", [marker("SHOX2", condition="lung cancer")], content="first version")
    new = paper(
        "shox2",
        [marker("SHOX2", condition="lung cancer"), marker("PTGER4", condition="lung cancer")],
        content="second version",
        extracted_at=datetime(2026, 3, 1, tzinfo=UTC),
    )
    for order in ([new, old], [old, new]):
        path = write_records(tmp_path / "records.jsonl", order)
        with caplog.at_level(logging.WARNING):
            read = read_marker_findings([path])
        assert [p.paper_id for p in read.papers] == ["shox2"]
        assert [f.marker_key for f in read.findings] == ["SHOX2", "PTGER4"]
        assert read.superseded_records == 1
        assert "older than another record of the same file" in caplog.text


def test_a_malformed_line_is_reported_with_its_line_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = sample_corpus()
    path = write_records(
        tmp_path / "records.jsonl",
        [corpus[0], '{"file_id": "broken", "content_sha256": ', corpus[1], '{"content_sha256": "abc"}'],
    )
    with caplog.at_level(logging.WARNING):
        read = read_marker_findings([path])
    assert [p.paper_id for p in read.papers] == ["sept9-plasma", "septin9-validation"]
    assert len(read.skipped_lines) == 2
    assert read.skipped_lines[0].startswith(f"{path.resolve()}:2: ")
    assert read.skipped_lines[1].startswith(f"{path.resolve()}:4: ")
    assert f"{path.resolve()}:2" in caplog.text and f"{path.resolve()}:4" in caplog.text


def test_a_missing_records_file_is_an_error_naming_it(tmp_path: Path) -> None:
    present = write_records(tmp_path / "records.jsonl", sample_corpus())
    with pytest.raises(MarkersInputError, match=r"nope\.jsonl: records file not found"):
        read_marker_findings([present, tmp_path / "nope.jsonl"])
    with pytest.raises(MarkersInputError, match="no records files given"):
        read_marker_findings([])
    with pytest.raises(
        MarkersInputError, match=r"is a folder, not a records file: did you mean .*records\.jsonl"
    ):
        read_marker_findings([tmp_path])
    with pytest.raises(MarkersInputError, match="is a file, not a folder"):
        build_marker_table([present], present)


def test_groups_count_papers_range_metrics_and_flag_conflicts(tmp_path: Path) -> None:
    read = read_marker_findings([write_records(tmp_path / "records.jsonl", sample_corpus())])
    groups = {(group.marker_key, group.condition_key): group for group in group_findings(read.findings)}
    assert set(groups) == {
        ("SEPTIN9", "colorectal cancer"),
        ("ACTB", "colorectal cancer"),
        ("RASSF1", "breast cancer"),
    }
    sept9 = groups["SEPTIN9", "colorectal cancer"]
    assert sept9.papers == 2 and sept9.findings == 2 and sept9.direction == "hypermethylated"
    assert not sept9.conflict
    assert sept9.names_reported == ("SEPT9 promoter", "SEPTIN9")
    assert (sept9.sensitivity.low, sept9.sensitivity.high, sept9.sensitivity.findings) == (0.68, 0.81, 2)
    assert (sept9.auc.low, sept9.auc.high, sept9.auc.findings) == (0.84, 0.84, 1)
    assert sept9.cohort_size.findings == 1 and sept9.sample_types == ("plasma cfDNA", "plasma")
    rassf1 = groups["RASSF1", "breast cancer"]
    assert rassf1.conflict and rassf1.direction == "conflict"
    assert rassf1.hypermethylated_papers == ("rassf1a-breast",)
    assert rassf1.hypomethylated_papers == ("rassf1-hypo",)
    assert groups["ACTB", "colorectal cancer"].direction == "unknown"
    assert groups["ACTB", "colorectal cancer"].sensitivity.findings == 0
    # The best-supported pairs first (two papers each), a conflict before an agreement.
    assert [group.marker_key for group in group_findings(read.findings)] == ["RASSF1", "SEPTIN9", "ACTB"]


def test_no_conflict_within_one_paper_or_without_a_condition() -> None:
    from methyl_distill.markers.findings import findings_of

    one_paper = paper(
        "mgmt",
        [
            marker("MGMT", "hypermethylated", "glioma", region="promoter"),
            marker("MGMT", "hypomethylated", "glioma", region="gene body"),
        ],
    )
    unstated = [
        paper("a", [marker("LINE1", "hypermethylated", None)]),
        paper("b", [marker("LINE1", "hypomethylated", None)]),
    ]
    findings = [f for record in [one_paper, *unstated] for f in findings_of(record, "records.jsonl")]
    groups = {group.marker_key: group for group in group_findings(findings)}
    assert groups["MGMT"].direction == "varied" and not groups["MGMT"].conflict
    assert groups["LINE1"].condition_key == "" and not groups["LINE1"].conflict
    mixed = [
        f
        for record in (paper("c", [marker("X1", "mixed")]), paper("d", [marker("X1", "hypermethylated")]))
        for f in findings_of(record, "records.jsonl")
    ]
    (group,) = group_findings(mixed)
    assert group.direction == "varied" and not group.conflict and group.mixed_papers == ("c",)


def test_outputs_parquet_csv_page_and_summary(tmp_path: Path) -> None:
    records = write_records(tmp_path / "records.jsonl", sample_corpus())
    summary = build_marker_table([records], tmp_path / "markers")
    out = tmp_path / "markers"
    assert sorted(path.name for path in out.iterdir()) == [
        "marker_findings.csv",
        "marker_findings.parquet",
        "marker_groups.csv",
        "marker_groups.parquet",
        "markers.html",
        "markers_summary.json",
    ]
    assert summary.papers == 5 and summary.papers_with_markers == 4 and summary.findings == 5
    assert [p.paper_id for p in summary.papers_without_markers] == ["review-no-markers"]
    assert summary.markers == 3 and summary.groups == 3 and summary.conflicts == 1
    assert summary.directions == {"hypermethylated": 3, "hypomethylated": 1, "mixed": 0, "unknown": 1}
    assert summary.findings_with_metrics == 3
    assert json.loads(Path(summary.summary_json).read_text(encoding="utf-8")) == summary.model_dump(
        mode="json"
    )

    findings = pq.read_table(summary.findings_parquet)
    assert str(findings.schema.field("evidence").type) == "list<element: string>"
    assert str(findings.schema.field("sensitivity").type) == "double"
    assert str(findings.schema.field("cohort_size").type) == "int64"
    rows = {row["finding_id"]: row for row in findings.to_pylist()}
    assert rows["sept9-plasma#1"]["evidence"] == [SEPT9_QUOTE]
    assert rows["sept9-plasma#2"]["sensitivity"] is None and rows["sept9-plasma#2"]["direction"] == "unknown"
    frame = findings.to_pandas()
    assert math.isnan(frame.set_index("finding_id").loc["sept9-plasma#2", "auc"])

    with open(summary.findings_csv, encoding="utf-8", newline="") as handle:
        csv_rows = {row["finding_id"]: row for row in csv.DictReader(handle)}
    assert csv_rows["sept9-plasma#2"]["sensitivity"] == "" and csv_rows["sept9-plasma#2"]["cohort_size"] == ""
    assert csv_rows["sept9-plasma#1"]["sensitivity"] == "0.68"
    assert json.loads(csv_rows["sept9-plasma#1"]["evidence"]) == [SEPT9_QUOTE]

    groups = {row["marker_key"]: row for row in pq.read_table(summary.groups_parquet).to_pylist()}
    assert groups["RASSF1"]["conflict"] is True
    assert groups["RASSF1"]["hypomethylated_papers"] == ["rassf1-hypo"]
    assert groups["SEPTIN9"]["cohort_size_min"] == 1544 and groups["SEPTIN9"]["papers"] == 2
    assert groups["ACTB"]["auc_min"] is None and groups["ACTB"]["auc_findings"] == 0
    with open(summary.groups_csv, encoding="utf-8", newline="") as handle:
        header = next(csv.reader(handle))
    assert header == pq.read_table(summary.groups_parquet).column_names

    page = Path(summary.page).read_text(encoding="utf-8")
    assert f'content="{html.escape(CONTENT_SECURITY_POLICY)}"' in page
    assert "<link" not in page and " src=" not in page  # nothing to load from anywhere


def test_record_text_cannot_break_out_of_the_page(tmp_path: Path) -> None:
    hostile = "</script><script>document.title='owned'</script><!-- & >"
    record = paper("x", [marker("GSTP1", evidence=[hostile], name=hostile)], title=hostile)
    summary = build_marker_table([write_records(tmp_path / "r.jsonl", [record])], tmp_path / "out")
    page = Path(summary.page).read_text(encoding="utf-8")
    assert hostile not in page
    assert page.count("</script>") == 2  # the data's and the script's own
    data = page.split('id="marker-data">', 1)[1].split("</script>", 1)[0]
    assert json.loads(data)["findings"][0]["evidence"] == [hostile]


def test_records_without_any_marker_give_empty_tables_with_their_columns(tmp_path: Path) -> None:
    records = write_records(tmp_path / "records.jsonl", [paper("empty", [], title="Nothing here")])
    summary = build_marker_table([records], tmp_path / "out")
    assert summary.findings == 0 and summary.papers == 1 and len(summary.papers_without_markers) == 1
    table = pq.read_table(summary.findings_parquet)
    assert table.num_rows == 0 and "evidence" in table.column_names
    assert Path(summary.groups_csv).read_text(encoding="utf-8").startswith("marker_key,condition,")


def test_markers_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from methyl_distill.cli import main

    corpus = sample_corpus()
    first = write_records(tmp_path / "a.jsonl", [*corpus[:3], "not json"])
    second = write_records(tmp_path / "b.jsonl", corpus[2:])  # rassf1a-breast in both
    code = main(["markers", "--records", str(first), str(second), "--output_directory", str(tmp_path / "m")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "5 findings of 3 markers (3 marker/condition pairs, 1 with conflicting directions)" in printed
    assert "from 4 of 5 papers; 1 without markers; 1 records lines skipped" in printed
    assert f"skipped {first.resolve()}:4: " in printed
    assert "review-no-markers  A review without marker findings" in printed
    assert f"page:     {tmp_path / 'm' / 'markers.html'}" in printed

    code = main(
        ["markers", "--records", str(tmp_path / "missing.jsonl"), "--output_directory", str(tmp_path)]
    )
    assert code == 1
    assert "missing.jsonl: records file not found" in capsys.readouterr().err


@pytest.mark.flow
def test_the_pipeline_task_writes_the_table_and_publishes_the_summary(
    prefect_harness: None, tmp_path: Path
) -> None:
    from methyl_distill.tasks.markers import build_markers
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    records = write_records(tmp_path / "records.jsonl", sample_corpus())

    @flow
    def marker_stage() -> object:
        return build_markers([str(records)], str(tmp_path / "markers"))

    summary = marker_stage()
    assert Path(summary.page).is_file() and summary.conflicts == 1  # type: ignore[attr-defined]
    with get_client(sync_client=True) as client:
        (artifact, *_) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["marker-table"])),
            limit=1,
        )
    table = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    rows = {row["marker"]: row for row in table}
    assert rows["SEPTIN9"]["papers"] == 2 and rows["SEPTIN9"]["sensitivity"] == "68%–81%"
    assert (
        rows["RASSF1"]["direction"] == "conflict" and rows["RASSF1"]["hypomethylated_papers"] == "rassf1-hypo"
    )
    assert rows["ACTB"]["auc"] == "—"
