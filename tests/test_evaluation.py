"""Evaluation metrics and the report, without models (the real base-vs-tuned run is in test_finetune.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from methyl_distill.training.chat_jsonl import ChatExample, ChatFileError, read_chat_examples
from methyl_distill.training.evaluation import build_report, render_markdown, score_examples, write_report
from methyl_distill.training.evaluation_metrics import (
    aggregate,
    extract_cpg_ids,
    extract_gene_symbols,
    longest_common_subsequence,
    marker_recall,
    methylation_direction,
    rouge_l,
    score_answer,
)


def test_lcs() -> None:
    assert longest_common_subsequence("ABCBDAB", "BDCABA") == 4
    assert longest_common_subsequence([], ["a"]) == 0
    assert longest_common_subsequence("abc", "abc") == 3
    assert longest_common_subsequence("abcdef", "fedcba") == 1


def test_rouge_l_known_values() -> None:
    score = rouge_l("the cat sat on the mat", "the cat on the mat")
    assert score.precision == 1.0
    assert score.recall == pytest.approx(5 / 6)
    assert score.f1 == pytest.approx(2 * (5 / 6) / (1 + 5 / 6))
    assert rouge_l("MGMT promoter", "mgmt PROMOTER.").f1 == 1.0  # case and punctuation do not count
    assert rouge_l("a b c", "").f1 == 0.0
    assert rouge_l("alpha beta", "gamma delta").f1 == 0.0
    # Word order matters: LCS, not bag of words.
    assert rouge_l("a b c d", "d c b a").f1 == pytest.approx(0.25)


def test_marker_extraction() -> None:
    text = (
        "Promoter hypermethylation of MGMT, SEPT9 and CDKN2A (p16INK4a) measured by qMSP and PCR on DNA "
        "from FFPE tissue; probes cg05575921 and CG00000029 and chr6:1,378,000 in AHRR; AUC 0.91 (95% CI)."
    )
    assert extract_gene_symbols(text) == {"MGMT", "SEPT9", "CDKN2A", "P16INK4A", "AHRR"}
    assert extract_cpg_ids(text) == {"cg05575921", "cg00000029", "chr6:1378000"}


def test_marker_recall() -> None:
    reference = "MGMT and GSTP1 are hypermethylated; cg05575921 is hypomethylated."
    assert marker_recall(reference, "Only mgmt was studied at cg05575921.") == (2, 3)
    assert marker_recall(reference, "No idea.") == (0, 3)
    assert marker_recall("Methylation was measured by PCR.", "anything") == (0, 0)


@pytest.mark.parametrize(
    ("text", "direction"),
    [
        ("The promoter was hypermethylated in tumours.", "hypermethylated"),
        ("Hyper-methylation of RASSF1A", "hypermethylated"),
        ("showed increased methylation in cases", "hypermethylated"),
        ("LINE-1 hypomethylation", "hypomethylated"),
        ("a loss of methylation at the locus", "hypomethylated"),
        ("reduced DNA methylation", "hypomethylated"),
        ("MGMT was hypermethylated while LINE-1 was hypomethylated", "mixed"),
        ("both hyper- and hypomethylated sites", "mixed"),
        ("Methylation was measured by pyrosequencing.", None),
    ],
)
def test_methylation_direction(text: str, direction: str | None) -> None:
    assert methylation_direction(text) == direction


def test_score_and_aggregate() -> None:
    agree = score_answer("MGMT is hypermethylated.", "MGMT promoter is hypermethylated.")
    assert agree.direction_agrees is True and agree.markers_found == agree.markers_named == 1
    disagree = score_answer("MGMT is hypermethylated.", "MGMT is hypomethylated.")
    assert disagree.direction_agrees is False
    silent = score_answer("Assayed by pyrosequencing.", "It was hypermethylated.")
    assert silent.direction_agrees is None and silent.markers_named == 0
    totals = aggregate([agree, disagree, silent])
    assert totals.examples == 3
    assert totals.marker_recall == 1.0 and totals.examples_with_markers == 2
    assert totals.direction_agreement == 0.5 and totals.examples_with_direction == 2
    assert totals.rouge_l_f1 == pytest.approx(
        (agree.rouge_l_f1 + disagree.rouge_l_f1 + silent.rouge_l_f1) / 3
    )
    empty = aggregate([])
    assert empty.marker_recall is None and empty.direction_agreement is None


def test_report_is_written(tmp_path: Path) -> None:
    examples = [
        ChatExample(
            line=1, prompt=[{"role": "user", "content": "Which gene?"}], reference="MGMT is hypermethylated."
        ),
        ChatExample(
            line=2, prompt=[{"role": "user", "content": "Which probe?"}], reference="cg05575921 | AHRR"
        ),
    ]
    answers = {
        "base": ["I do not know.", "Some probe."],
        "tuned": ["MGMT promoter is hypermethylated.", "cg05575921 in AHRR."],
    }
    rows = score_examples(examples, answers)
    report = build_report(
        rows,
        test_path=tmp_path / "test.jsonl",
        adapter_path=tmp_path / "adapter",
        base_model="m",
        max_new_tokens=9,
    )
    assert report.aggregates["tuned"].marker_recall == 1.0
    assert report.aggregates["base"].marker_recall == 0.0
    summary = write_report(report, tmp_path / "report")
    saved = json.loads(Path(summary.report_json_path).read_text())
    assert saved["aggregates"]["tuned"]["direction_agreement"] == 1.0
    assert len(Path(summary.answers_path).read_text().splitlines()) == 2
    markdown = Path(summary.report_markdown_path).read_text()
    assert markdown == render_markdown(report)
    assert "| marker recall (genes + CpG ids) | 0.0% | 100.0% | +100.0% |" in markdown
    assert "cg05575921 \\| AHRR" in markdown  # table cells are escaped
    assert "## Tuning helped most (ROUGE-L)" in markdown and "No example." in markdown


def test_question_files(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(
        '{"question": "What is SEPT9?"}\n\n'
        '{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},'
        ' {"role": "assistant", "content": "a"}]}\n'
    )
    first, second = read_chat_examples(path)
    assert first.prompt == [{"role": "user", "content": "What is SEPT9?"}] and first.reference is None
    assert second.line == 3 and second.reference == "a" and second.question == "u"
    with pytest.raises(ChatFileError, match=r"q\.jsonl:1: the last message must be"):
        read_chat_examples(path, require_reference=True)
    path.write_text('{"messages": [{"role": "robot", "content": "x"}]}\n')
    with pytest.raises(ChatFileError, match=r"q\.jsonl:1: message 0 has role 'robot'"):
        read_chat_examples(path)
