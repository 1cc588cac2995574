"""Every grounded marker reaches the training data: extraction samples are packed to fit max_length,
and the build reports marker coverage (issue 13).

The case of the issue: an ageing paper with five markers (ELOVL2, cg16867657, FHL2, cg06639320,
KLF14) whose evidence is long, so one extraction sample holding all five is over 2,048 tokens;
its Q&A answers name only two of them.
"""

from __future__ import annotations

import itertools
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from methyl_distill.extraction.papers import content_sha256
from methyl_distill.extraction.records import (
    AnsweredQuestion,
    MarkerPerformance,
    MarkerRecord,
    PaperRecord,
    TokenUsage,
)
from methyl_distill.readers.document import normalise_text
from methyl_distill.sft_dataset import DatasetConfig, DatasetSummary, build_sft_dataset
from methyl_distill.sft_dataset.extraction_packing import balanced_ranges
from methyl_distill.sft_dataset.marker_coverage import CoverageTally, ShardCoverage
from methyl_distill.sft_dataset.paper_text import PaperText
from methyl_distill.text.token_count import estimate_chat_tokens

AGEING_MARKERS = ("ELOVL2", "cg16867657", "FHL2", "cg06639320", "KLF14")
FILLER = (
    "Participants gave written informed consent and the study was approved by the ethics committee. "
    "Blood was drawn in EDTA tubes and stored at minus eighty degrees until DNA extraction. "
    "Bisulfite conversion used a commercial kit following the manufacturer's instructions. "
)


def _evidence(name: str, number: int) -> list[str]:
    """Two distinct evidence sentences about marker `name` (~170 characters each: the five markers'
    evidence fits one extraction excerpt, so they are packed into one sample by characters)."""
    return [
        f"Methylation of {name} increased steadily with age in whole blood of the {1000 + number} donors "
        f"aged 2 to 94 years, with a Pearson correlation of 0.{80 + number} in the discovery cohort.",
        f"In {500 + number} saliva samples measured by pyrosequencing, {name} explained {20 + number} "
        f"percent of the variance in age and lowered the error of the predictor.",
    ]


def _marker(name: str, evidence: list[str]) -> MarkerRecord:
    is_probe = name.startswith("cg")
    return MarkerRecord(
        marker=name,
        gene=None if is_probe else name,
        cpg_sites=[name] if is_probe else [],
        region=None if is_probe else "promoter CpG island",
        direction="hypermethylated",
        condition="chronological ageing",
        sample_types=["whole blood", "saliva", "buccal swabs"],
        assays=["Infinium MethylationEPIC arrays", "targeted bisulfite pyrosequencing"],
        clinical_uses=["other"],
        performance=MarkerPerformance(
            sensitivity=None, specificity=None, auc=None, cohort_size=1000, notes="age prediction"
        ),
        related=[f"{other} in the age predictor" for other in AGEING_MARKERS if other != name],
        evidence=evidence,
    )


def _ageing_paper(
    extra: dict[str, list[str]], unquoted: dict[str, list[str]]
) -> tuple[str, list[MarkerRecord]]:
    """The paper's text (each marker's evidence between filler paragraphs) and its marker records;
    `extra` adds markers with their evidence at the end, `unquoted` markers whose evidence the text
    does not contain."""
    evidence = {name: _evidence(name, number) for number, name in enumerate(AGEING_MARKERS)} | extra
    paragraphs = ["Title: An epigenetic clock of five CpG sites for forensic age estimation", FILLER]
    for quotes in evidence.values():
        paragraphs += [" ".join(quotes), FILLER]
    markers = [_marker(name, quotes) for name, quotes in (evidence | unquoted).items()]
    return "\n\n".join(paragraphs), markers


def _record(
    file_id: str, text: str, markers: list[MarkerRecord], answers: list[tuple[str, str]]
) -> PaperRecord:
    """The paper's record; each answer's evidence is the first marker's first quote."""
    return PaperRecord(
        file_id=file_id,
        file_ids=[file_id],
        source_paths=[f"{file_id}.txt"],
        content_sha256=content_sha256(normalise_text(text)),
        question_bank_version="test-1",
        prompt_version="test-1",
        teacher_model="exact",
        chunks=1,
        answers=[
            AnsweredQuestion(
                question_id=f"q{index}", question=question, answer=answer, evidence=[markers[0].evidence[0]]
            )
            for index, (question, answer) in enumerate(answers)
        ],
        markers=markers,
        additional_qa=[],
        usage=TokenUsage(prompt_tokens=1000, completion_tokens=400, requests=1),
        extracted_at=datetime(2026, 11, 1, tzinfo=UTC),
    )


def _write_corpus(
    directory: Path, extra: dict[str, list[str]] | None = None, unquoted: dict[str, list[str]] | None = None
) -> tuple[Path, Path]:
    """The ageing paper (its answers name ELOVL2 and FHL2 only) and a short one-marker paper."""
    papers = directory / "papers"
    papers.mkdir(parents=True)
    text, markers = _ageing_paper(extra or {}, unquoted or {})
    ageing = _record(
        "ageing",
        text,
        markers,
        [
            ("Which gene is the strongest age marker?", "ELOVL2, whose methylation rises with age."),
            ("Which marker was added to the predictor?", "FHL2 improved the age predictor."),
        ],
    )
    short_text = (
        "Title: SEPT9 in plasma.\n\nMethylated SEPT9 in plasma cell-free DNA detected 68% of colorectal "
        "cancers at 89% specificity.\n\nSamples were stored frozen."
    )
    short_marker = _marker(
        "SEPT9", ["Methylated SEPT9 in plasma cell-free DNA detected 68% of colorectal cancers"]
    )
    short = _record("sept9", short_text, [short_marker], [("Which marker was studied?", "SEPT9 in plasma.")])
    (papers / "ageing.txt").write_text(text, encoding="utf-8")
    (papers / "sept9.txt").write_text(short_text, encoding="utf-8")
    records = directory / "records.jsonl"
    records.write_text(ageing.model_dump_json() + "\n" + short.model_dump_json() + "\n", encoding="utf-8")
    return papers, records


def _rows(summary: DatasetSummary) -> list[dict]:
    paths = (summary.train_jsonl, summary.val_jsonl, summary.test_jsonl)
    return [
        json.loads(line) for path in paths for line in Path(path).read_text(encoding="utf-8").splitlines()
    ]


def _extraction_targets(rows: list[dict]) -> list[tuple[str, list[dict], str]]:
    """(file id, marker records, user message) of each extraction sample."""
    return [
        (
            row["meta"]["file_id"],
            json.loads(row["messages"][-1]["content"])["markers"],
            row["messages"][-2]["content"],
        )
        for row in rows
        if row["meta"]["style"] == "extraction"
    ]


def test_the_issue_case_one_extraction_sample_would_be_over_2048_tokens(tmp_path: Path) -> None:
    papers, records = _write_corpus(tmp_path)
    summary = build_sft_dataset([records], tmp_path / "wide", papers, DatasetConfig(max_length=8192))
    (ageing,) = [
        row
        for row in _rows(summary)
        if row["meta"]["style"] == "extraction" and row["meta"]["file_id"] == "ageing"
    ]
    assert len(json.loads(ageing["messages"][-1]["content"])["markers"]) == 5
    assert ageing["meta"]["tokens"] > 2048


def test_every_grounded_marker_reaches_a_sample_that_fits(tmp_path: Path) -> None:
    papers, records = _write_corpus(tmp_path)
    config = DatasetConfig()  # max_length 2048
    summary = build_sft_dataset([records], tmp_path / "out", papers, config)
    rows = _rows(summary)
    targets = _extraction_targets(rows)

    found = sorted((file_id, marker["marker"]) for file_id, markers, _ in targets for marker in markers)
    expected = sorted([("ageing", name) for name in AGEING_MARKERS] + [("sept9", "SEPT9")])
    assert found == expected  # each marker exactly once, none lost
    assert len([target for target in targets if target[0] == "ageing"]) >= 2  # the paper was split
    for _, markers, user in targets:
        excerpt = PaperText(user)
        for marker in markers:
            assert all(excerpt.locate(quote).status == "found" for quote in marker["evidence"])
    for row in rows:
        assert row["meta"]["tokens"] <= config.max_length
        assert estimate_chat_tokens(row["messages"]) == row["meta"]["tokens"]  # counted, not assumed
    assert "too_long" not in summary.drops and "marker_evidence_too_long" not in summary.drops

    coverage = summary.marker_coverage
    assert (coverage.grounded, coverage.covered, coverage.papers, coverage.complete_papers) == (6, 6, 2, 2)
    assert coverage.incomplete == {}
    card = Path(summary.card).read_text(encoding="utf-8")
    assert "6 of 6 grounded markers (100.0%) are in at least one sample" in card
    assert json.loads(Path(summary.stats_json).read_text(encoding="utf-8"))["marker_coverage"]["covered"] == 6


def test_a_lone_marker_too_long_with_its_context_gets_a_shorter_excerpt(tmp_path: Path) -> None:
    papers, records = _write_corpus(tmp_path)
    summary = build_sft_dataset([records], tmp_path / "out", papers, DatasetConfig(max_length=700))
    rows = [row for row in _rows(summary) if row["meta"]["style"] == "extraction"]
    ageing = [row for row in rows if row["meta"]["file_id"] == "ageing"]
    assert len(ageing) == 5 and all("truncated" in row["meta"]["flags"] for row in ageing)
    for _, markers, user in _extraction_targets(ageing):
        (marker,) = markers
        assert all(PaperText(user).locate(quote).status == "found" for quote in marker["evidence"])
        assert "[...]" in user
    assert all(row["meta"]["tokens"] <= 700 for row in rows)
    assert summary.marker_coverage.covered == summary.marker_coverage.grounded == 6 and not summary.drops


def test_a_marker_whose_evidence_alone_is_too_long_is_dropped_and_reported_missing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    long_evidence = [
        f"Across the {count} tissues of the atlas, the methylation of TRIM59 tracked age in every organ "
        f"examined, and the slope of the relation in tissue number {count} was steeper in men than in women, "
        f"which the authors attribute to differences in cell turnover between the sexes at every age."
        for count in range(12)
    ]
    papers, records = _write_corpus(tmp_path, extra={"TRIM59": long_evidence})
    with caplog.at_level(logging.WARNING, logger="methyl_distill.sft_dataset.build"):
        summary = build_sft_dataset([records], tmp_path / "out", papers, DatasetConfig(max_length=2048))

    assert summary.drops["marker_evidence_too_long"] == 1
    targets = _extraction_targets(_rows(summary))
    names = {marker["marker"] for _, markers, _ in targets for marker in markers}
    assert names == {*AGEING_MARKERS, "SEPT9"}  # all others still there
    coverage = summary.marker_coverage
    assert (coverage.grounded, coverage.covered, coverage.complete_papers) == (7, 6, 1)
    assert coverage.incomplete["ageing"].model_dump() == {"grounded": 6, "covered": 5, "missing": ["TRIM59"]}
    assert "1 of 7 grounded markers reach no sample (in 1 paper): ageing: TRIM59" in caplog.text
    card = Path(summary.card).read_text(encoding="utf-8")
    assert "| ageing | 6 | 5 | TRIM59 |" in card and "| marker_evidence_too_long | 1 |" in card


def test_markers_that_share_a_quote_are_not_duplicates_of_each_other(tmp_path: Path) -> None:
    panel = "A panel of GSTP1, APC and RASSF1A increased urinary sensitivity to 83% at a specificity of 93%."
    papers, records = _write_corpus(tmp_path, extra={"APC": [panel], "RASSF1A": [panel]})
    # 1024 tokens: one marker per sample, so APC's and RASSF1A's samples differ only in the record.
    summary = build_sft_dataset([records], tmp_path / "out", papers, DatasetConfig(max_length=1024))
    targets = _extraction_targets(_rows(summary))
    assert all(len(markers) == 1 for file_id, markers, _ in targets if file_id == "ageing")
    names = sorted(marker["marker"] for _, markers, _ in targets for marker in markers)
    assert names == sorted([*AGEING_MARKERS, "APC", "RASSF1A", "SEPT9"])
    assert "near_duplicate" not in summary.drops
    assert summary.marker_coverage.covered == summary.marker_coverage.grounded == 8


def test_coverage_counts_markers_named_in_answers_and_only_grounded_markers(tmp_path: Path) -> None:
    # No extraction samples: only the markers that an answer names reach the data (the issue's
    # "three markers no Q&A answer happens to name"). A marker whose quote is not in the paper is
    # not grounded and not counted.
    papers, records = _write_corpus(
        tmp_path, unquoted={"MADEUP1": ["MADEUP1 methylation predicted age in the teacher's imagination."]}
    )
    config = DatasetConfig(mix={"closed_book": 1.0, "grounded": 1.0, "extraction": 0.0})
    summary = build_sft_dataset([records], tmp_path / "out", papers, config)
    assert not any(row["meta"]["style"] == "extraction" for row in _rows(summary))
    coverage = summary.marker_coverage
    assert coverage.grounded == 6  # five ageing markers + SEPT9; MADEUP1 is not grounded
    assert coverage.covered == 3  # ELOVL2, FHL2, SEPT9
    assert coverage.incomplete["ageing"].missing == ["cg16867657", "cg06639320", "KLF14"]


def test_coverage_tally_across_shards_counts_only_kept_samples() -> None:
    first, second = ShardCoverage(), ShardCoverage()
    a = first.add_paper("a", [(0, "M0"), (1, "M1"), (2, "M2")])
    assert first.add_paper("none", []) == {}  # a paper without grounded markers is not listed
    b = first.add_paper("b", [(1, "N1")])
    first.add_sample(0, (0, 2), a)
    first.add_sample(1, (0, 1), b)  # position 0 of paper b is not grounded: ignored
    first.add_sample(2, (1,), a)  # sample 2 is dropped below
    c = second.add_paper("c", [(0, "P0"), (3, "P3")])
    second.add_sample(0, (3,), c)
    second.add_sample(1, (0,), c)  # dropped below
    tally = CoverageTally()
    tally.add(first, first_sample=0)
    tally.add(second, first_sample=3)
    keep = np.array([True, True, False, True, False])
    coverage = tally.measure(keep)
    assert (coverage.grounded, coverage.covered, coverage.papers, coverage.complete_papers) == (6, 4, 3, 1)
    assert {
        file_id: (paper.grounded, paper.covered, paper.missing)
        for file_id, paper in coverage.incomplete.items()
    } == {
        "a": (3, 2, ["M1"]),
        "c": (2, 1, ["P0"]),
    }
    assert coverage.warning() == "2 of 6 grounded markers reach no sample (in 2 papers): a: M1; c: P0"
    assert tally.measure(np.ones(5, dtype=bool)).warning() is None
    assert CoverageTally().measure(np.zeros(0, dtype=bool)).grounded == 0


@pytest.mark.parametrize(
    ("weights", "parts", "expected"),
    [
        ([1, 1, 1, 1], 2, [(0, 2), (2, 4)]),
        ([10, 1, 1, 1], 2, [(0, 1), (1, 4)]),
        ([1, 1, 1, 10], 2, [(0, 3), (3, 4)]),
        ([5, 5, 5, 5, 5], 3, [(0, 2), (2, 4), (4, 5)]),
        ([1, 1], 5, [(0, 1), (1, 2)]),
        ([1, 1, 1, 100], 3, [(0, 2), (2, 3), (3, 4)]),
        ([7], 2, [(0, 1)]),
    ],
)
def test_balanced_ranges_are_contiguous_non_empty_and_balanced(
    weights: list[int], parts: int, expected: list[tuple[int, int]]
) -> None:
    ranges = balanced_ranges(weights, parts)
    assert ranges == expected
    assert ranges[0][0] == 0 and ranges[-1][1] == len(weights)
    assert all(start < end for start, end in ranges)
    assert all(previous[1] == following[0] for previous, following in itertools.pairwise(ranges))
