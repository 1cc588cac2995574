"""Pydantic records: the data contract between the extraction stage and everything downstream.

`TeacherExtraction` is what the teacher must return for one paper (or one chunk of it); its JSON
schema is sent to the teacher as a structured-output schema. `PaperRecord` is one line of
`records.jsonl`; `FailureRecord` is one line of `failures.jsonl`.

The extraction cache key digests the JSON schema of `TeacherExtraction` as it is sent, so a change
to what the teacher is asked for re-extracts every paper by itself; `SCHEMA_VERSION` is a label
recorded in each record.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from methyl_distill.readers.document import PaperSource
from methyl_distill.teacher.protocol import TokenUsage
from methyl_distill.text.not_reported import NOT_REPORTED

SCHEMA_VERSION = "1"

Direction = Literal["hypermethylated", "hypomethylated", "mixed", "not_stated"]
ClinicalUse = Literal[
    "early_detection",
    "screening",
    "diagnosis",
    "prognosis",
    "prediction_of_therapy_response",
    "monitoring",
    "risk_assessment",
    "other",
]


class _Strict(BaseModel):
    """Teacher-facing models: every field required (nullable where optional), no extra keys.

    That is what OpenAI's strict json_schema mode demands, and it keeps fallbacks honest too.
    """

    model_config = ConfigDict(extra="forbid")


class MarkerPerformance(_Strict):
    sensitivity: float | None = Field(description="Sensitivity as a fraction 0-1, or null if not reported.")
    specificity: float | None = Field(description="Specificity as a fraction 0-1, or null if not reported.")
    auc: float | None = Field(description="Area under the ROC curve 0-1, or null if not reported.")
    cohort_size: int | None = Field(description="Number of subjects or samples studied, or null.")
    notes: str = Field(description="Other performance figures as stated (PPV, NPV, hazard ratio...), or ''.")


class MarkerRecord(_Strict):
    marker: str = Field(description="The marker as the paper names it, e.g. 'MGMT promoter' or 'cg05575921'.")
    gene: str | None = Field(description="HGNC gene symbol, e.g. 'SEPT9', or null for intergenic sites.")
    cpg_sites: list[str] = Field(
        description="CpG probe ids (cg########) or coordinates named for this marker."
    )
    region: str | None = Field(
        description="Genomic region: promoter, CpG island, exon 1, enhancer..., or null."
    )
    direction: Direction = Field(description="Methylation change in the condition relative to controls.")
    condition: str | None = Field(description="Disease or condition studied, e.g. 'glioblastoma'.")
    sample_types: list[str] = Field(
        description="Tissue or sample types: tumour tissue, plasma cfDNA, stool..."
    )
    assays: list[str] = Field(description="Assays used: MSP, qMSP, bisulfite sequencing, pyrosequencing...")
    clinical_uses: list[ClinicalUse] = Field(description="Clinical uses the paper reports for the marker.")
    performance: MarkerPerformance
    related: list[str] = Field(
        description="Relationships: panel partners, silenced expression, mutations, other markers."
    )
    evidence: list[str] = Field(description="Verbatim quotes from the paper supporting this record.")


class AnswerRecord(_Strict):
    question_id: str = Field(description="The id of the question from the question bank.")
    answer: str = Field(description=f"The answer, grounded in the paper; '{NOT_REPORTED}' if absent.")
    evidence: list[str] = Field(description="Verbatim quotes from the paper supporting the answer.")


class QAPair(_Strict):
    question: str
    answer: str
    evidence: list[str] = Field(description="Verbatim quotes from the paper supporting the answer.")


class TeacherExtraction(_Strict):
    """What the teacher returns for one paper or one chunk of a paper."""

    answers: list[AnswerRecord] = Field(description="One answer per question of the question bank.")
    markers: list[MarkerRecord] = Field(description="Every methylation marker the text reports.")
    additional_qa: list[QAPair] = Field(
        description="Further question-answer pairs a methylation researcher would ask, grounded in the text."
    )


class AnsweredQuestion(BaseModel):
    """A question of the bank with the teacher's answer: what the original script wrote per paper."""

    question_id: str
    question: str
    answer: str
    evidence: list[str] = Field(default_factory=list)


def _now() -> datetime:
    return datetime.now(UTC)


class PaperRecord(BaseModel):
    """One successfully extracted paper: one line of records.jsonl."""

    model_config = ConfigDict(extra="forbid")

    file_id: str = Field(description="Stable id from the relative path of the first file with this content.")
    file_ids: list[str] = Field(description="Every file id whose content is identical (extracted once).")
    source_paths: list[str] = Field(description="Paths of those files relative to the input directory.")
    content_sha256: str = Field(description="sha256 of the text the teacher read (see `source`).")
    source: PaperSource = Field(
        default_factory=PaperSource,
        description="How the paper was read: format, reader, title, DOI/PMID/PMCID, sections left out.",
    )
    question_bank_version: str
    prompt_version: str
    schema_version: str = SCHEMA_VERSION
    teacher_model: str
    chunks: int = Field(ge=1, description="Number of chunks the paper was split into.")
    answers: list[AnsweredQuestion]
    markers: list[MarkerRecord]
    additional_qa: list[QAPair]
    usage: TokenUsage
    estimated_cost_usd: float | None = None
    dropped_evidence_quotes: int = Field(
        default=0,
        ge=0,
        description="Teacher quotes not found verbatim in the paper, dropped from the record.",
    )
    extracted_at: datetime = Field(default_factory=_now)


FailureStage = Literal["read", "chunk", "request", "validate", "write"]


class FailureRecord(BaseModel):
    """A paper that could not be extracted, with the reason: one line of failures.jsonl."""

    model_config = ConfigDict(extra="forbid")

    file_id: str
    source_path: str
    stage: FailureStage
    reason: str
    raw_output: str | None = Field(
        default=None, description="The teacher's raw text when it failed validation."
    )
    usage: TokenUsage = Field(default_factory=TokenUsage)
    failed_at: datetime = Field(default_factory=_now)
