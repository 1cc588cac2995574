"""The question bank: the bundled file validates, and a broken user file gets a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from methyl_distill.extraction.question_bank import (
    DEFAULT_QUESTION_BANK,
    QuestionBankError,
    load_question_bank,
)

TOPICS_RESEARCHERS_ASK = {
    "markers",
    "cpg_sites",
    "direction",
    "condition",
    "sample_types",
    "assays",
    "clinical_use",
    "sensitivity_specificity",
    "auc",
    "cohort",
    "panel",
    "expression_silencing",
    "mutations_subtypes",
}


def test_bundled_bank_loads_and_covers_what_researchers_ask() -> None:
    bank = load_question_bank()
    assert bank.version
    assert 12 <= len(bank.questions) <= 16
    assert set(bank.ids) >= TOPICS_RESEARCHERS_ASK
    assert load_question_bank(DEFAULT_QUESTION_BANK) == bank


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bank.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_user_bank_is_loaded(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        'version = "mine-1"\n[[questions]]\nid = "markers"\ntext = "Which   markers are\\nreported?"\n',
    )
    bank = load_question_bank(path)
    assert bank.version == "mine-1"
    assert bank.questions[0].text == "Which markers are reported?"  # whitespace folded to one line
    assert bank.questions[0].topic == "general"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            'version = "1"\n[[questions]]\nid = "a"\ntext = "Question one?"\n'
            '[[questions]]\nid = "a"\ntext = "Question two?"\n',
            "duplicate question id 'a'",
        ),
        (
            'version = "1"\n[[questions]]\nid = "a"\ntext = "Same question?"\n'
            '[[questions]]\nid = "b"\ntext = "same question?"\n',
            "same text",
        ),
        ('version = "1"\n[[questions]]\nid = "Bad Id"\ntext = "Question one?"\n', "questions[1].id"),
        ('version = "1"\n[[questions]]\nid = "a"\n', "questions[1].text: Field required"),
        ('version = "1"\nquestions = []\n', "questions"),
        ('[[questions]]\nid = "a"\ntext = "Question one?"\n', "version: Field required"),
        ('version = "1"\ncolour = "red"\n[[questions]]\nid = "a"\ntext = "Question one?"\n', "colour"),
        ('version = "1"\n[[questions]\n', "invalid TOML"),
    ],
)
def test_broken_bank_names_the_file_and_the_problem(tmp_path: Path, content: str, expected: str) -> None:
    path = _write(tmp_path, content)
    with pytest.raises(QuestionBankError) as excinfo:
        load_question_bank(path)
    assert str(path) in str(excinfo.value)
    assert expected in str(excinfo.value)


def test_missing_and_non_utf8_banks(tmp_path: Path) -> None:
    with pytest.raises(QuestionBankError, match="file not found"):
        load_question_bank(tmp_path / "absent.toml")
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('version = "1"\n# caf\xe9\n'.encode("latin-1"))
    with pytest.raises(QuestionBankError, match="not UTF-8"):
        load_question_bank(latin1)


def test_default_bank_can_be_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, 'version = "env-1"\n[[questions]]\nid = "a"\ntext = "Question one?"\n')
    monkeypatch.setenv("METHYL_DISTILL_QUESTION_BANK", str(path))
    assert load_question_bank().version == "env-1"
    monkeypatch.delenv("METHYL_DISTILL_QUESTION_BANK")
    assert load_question_bank().version == load_question_bank(DEFAULT_QUESTION_BANK).version
