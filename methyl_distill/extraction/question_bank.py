"""The question bank: the versioned questions the teacher answers for every paper.

The bank is a TOML file (the bundled one is `question_bank.toml` next to this module) with a
`version` string and a list of `[[questions]]`. The extraction cache key digests the questions as the
teacher reads them (id, text, guidance), not the version: an edited question is asked again even
where nobody bumped the version, which is recorded in each record as a label.
`load_question_bank` validates the file and names it in every error, so a user editing the bank
sees what to fix.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# The bundled bank is package data: next to this module in a checkout, an editable install and a wheel.
DEFAULT_QUESTION_BANK = Path(__file__).resolve().parent / "question_bank.toml"
QUESTION_BANK_ENV = "METHYL_DISTILL_QUESTION_BANK"

_QUESTION_ID_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"


class QuestionBankError(ValueError):
    """A question bank file that cannot be read or does not validate."""


class Question(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(
        pattern=_QUESTION_ID_PATTERN,
        description="Unique id: lowercase letters, digits and underscores, starting with a letter.",
    )
    text: str = Field(min_length=8, description="The question as the teacher reads it.")
    topic: str = Field(default="general", min_length=1, description="Group of the question in reports.")
    guidance: str | None = Field(
        default=None, description="What a good answer contains; shown to the teacher with the question."
    )

    @field_validator("text", "topic", "guidance")
    @classmethod
    def _single_line(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = " ".join(value.split())
        if not value:
            raise ValueError("must not be blank")
        return value


class QuestionBank(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(
        min_length=1,
        description="A label recorded in each record (the cache key follows the questions themselves).",
    )
    questions: tuple[Question, ...] = Field(min_length=1, description="The questions, in the order asked.")

    @field_validator("version")
    @classmethod
    def _version_is_trimmed(cls, value: str) -> str:
        if value.strip() != value or not value.strip():
            raise ValueError("must be a non-blank string without surrounding spaces")
        return value

    @field_validator("questions")
    @classmethod
    def _unique(cls, questions: tuple[Question, ...]) -> tuple[Question, ...]:
        seen_ids: set[str] = set()
        seen_texts: dict[str, str] = {}
        for question in questions:
            if question.id in seen_ids:
                raise ValueError(f"duplicate question id {question.id!r}")
            seen_ids.add(question.id)
            folded = question.text.casefold()
            if folded in seen_texts:
                raise ValueError(f"questions {seen_texts[folded]!r} and {question.id!r} have the same text")
            seen_texts[folded] = question.id
        return questions

    @property
    def ids(self) -> list[str]:
        return [question.id for question in self.questions]

    def get(self, question_id: str) -> Question:
        for question in self.questions:
            if question.id == question_id:
                return question
        raise KeyError(question_id)


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"])
        if location.startswith("questions."):
            # questions.3.id -> questions[4].id: the 1-based position a user counts in the file.
            _, index, *rest = location.split(".")
            location = f"questions[{int(index) + 1}]" + "".join(f".{part}" for part in rest)
        problems.append(f"{location or 'file'}: {item['msg']}")
    return "; ".join(problems)


def default_question_bank_path() -> Path:
    """METHYL_DISTILL_QUESTION_BANK if set, else the bundled bank (package data next to this module)."""
    configured = os.environ.get(QUESTION_BANK_ENV)
    if configured:
        return Path(configured).expanduser()
    if DEFAULT_QUESTION_BANK.is_file():
        return DEFAULT_QUESTION_BANK
    raise QuestionBankError(
        f"no question bank given and the bundled one ({DEFAULT_QUESTION_BANK}) is missing from the "
        f"installed package: reinstall methyl-distill, pass --question_bank FILE or set {QUESTION_BANK_ENV}"
    )


def load_question_bank(path: str | Path | None = None) -> QuestionBank:
    """Load and validate a question bank; the default one (see `default_question_bank_path`) when None."""
    bank_path = Path(path).expanduser() if path is not None else default_question_bank_path()
    try:
        raw = bank_path.read_bytes()
    except FileNotFoundError as exc:
        raise QuestionBankError(f"question bank {bank_path}: file not found") from exc
    except OSError as exc:
        raise QuestionBankError(f"question bank {bank_path}: cannot read: {exc}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise QuestionBankError(f"question bank {bank_path}: not UTF-8 text ({exc.reason})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise QuestionBankError(f"question bank {bank_path}: invalid TOML: {exc}") from exc
    try:
        return QuestionBank.model_validate(data)
    except ValidationError as exc:
        raise QuestionBankError(f"question bank {bank_path}: {_describe(exc)}") from exc
