"""Extraction records with known markers, for the marker-table tests (test_markers*.py).

Real `PaperRecord`s, written as records.jsonl lines the way the extraction writes them, so the marker
table reads exactly what it reads in production.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from methyl_distill.extraction.records import (
    ClinicalUse,
    Direction,
    MarkerPerformance,
    MarkerRecord,
    PaperRecord,
)
from methyl_distill.readers.document import PaperSource
from methyl_distill.teacher.protocol import TokenUsage
from methyl_distill.text.hashing import sha256_of_text


def marker(
    gene: str | None,
    direction: Direction = "hypermethylated",
    condition: str | None = "colorectal cancer",
    *,
    name: str | None = None,
    sensitivity: float | None = None,
    specificity: float | None = None,
    auc: float | None = None,
    cohort_size: int | None = None,
    evidence: Sequence[str] = (),
    sample_types: Sequence[str] = (),
    assays: Sequence[str] = (),
    cpg_sites: Sequence[str] = (),
    region: str | None = None,
    clinical_uses: Sequence[ClinicalUse] = (),
    notes: str = "",
) -> MarkerRecord:
    return MarkerRecord(
        marker=name or gene or "",
        gene=gene,
        cpg_sites=list(cpg_sites),
        region=region,
        direction=direction,
        condition=condition,
        sample_types=list(sample_types),
        assays=list(assays),
        clinical_uses=list(clinical_uses),
        performance=MarkerPerformance(
            sensitivity=sensitivity, specificity=specificity, auc=auc, cohort_size=cohort_size, notes=notes
        ),
        related=[],
        evidence=list(evidence),
    )


def paper(
    file_id: str,
    markers: Iterable[MarkerRecord],
    *,
    title: str | None = None,
    doi: str | None = None,
    pmid: str | None = None,
    content: str | None = None,
    extracted_at: datetime | None = None,
) -> PaperRecord:
    return PaperRecord(
        file_id=file_id,
        file_ids=[file_id],
        source_paths=[f"{file_id}.txt"],
        content_sha256=sha256_of_text(content if content is not None else f"text of {file_id}"),
        source=PaperSource(title=title, doi=doi, pmid=pmid),
        question_bank_version="test",
        prompt_version="test",
        teacher_model="test-teacher",
        chunks=1,
        answers=[],
        markers=list(markers),
        additional_qa=[],
        usage=TokenUsage(),
        extracted_at=extracted_at or datetime(2026, 1, 1, tzinfo=UTC),
    )


def write_records(path: Path, records: Iterable[PaperRecord | str]) -> Path:
    """records.jsonl with one line per record (a `str` is written as it is: a malformed line)."""
    lines = [item if isinstance(item, str) else item.model_dump_json() for item in records]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


SEPT9_QUOTE = (
    "Methylated SEPT9 in plasma detected colorectal cancer with a sensitivity of 68% at 89% specificity."
)


def sample_corpus() -> list[PaperRecord]:
    """Five papers: SEPT9 under two names in agreement, RASSF1A/RASSF1 in conflict, a paper with no
    marker, a finding with no metric and no stated direction."""
    return [
        paper(
            "sept9-plasma",
            [
                marker(
                    "SEPT9",
                    name="SEPT9 promoter",
                    sensitivity=0.68,
                    specificity=0.89,
                    auc=0.84,
                    cohort_size=1544,
                    evidence=[SEPT9_QUOTE],
                    sample_types=["plasma cfDNA"],
                    assays=["qMSP"],
                    region="promoter",
                    clinical_uses=["screening"],
                ),
                marker("ACTB", "not_stated", "Colorectal Cancer", evidence=["ACTB served as reference."]),
            ],
            title="Circulating methylated SEPT9 DNA for colorectal cancer screening",
            doi="10.5555/sept9.2024",
            pmid="12345678",
        ),
        paper(
            "septin9-validation",
            [
                marker(
                    "SEPTIN9",
                    condition="Colorectal  cancer.",
                    sensitivity=0.81,
                    specificity=0.92,
                    evidence=["SEPTIN9 methylation reached a sensitivity of 81% in the validation cohort."],
                    sample_types=["plasma"],
                    assays=["ddPCR"],
                )
            ],
            title="A SEPTIN9 validation study",
        ),
        paper(
            "rassf1a-breast",
            [
                marker(
                    "RASSF1A",
                    condition="breast cancer",
                    auc=0.71,
                    evidence=["RASSF1A promoter hypermethylation was found in 62% of breast tumours."],
                    sample_types=["tumour tissue"],
                )
            ],
            title="RASSF1A promoter hypermethylation in breast tumours",
        ),
        paper(
            "rassf1-hypo",
            [
                marker(
                    "RASSF1",
                    "hypomethylated",
                    "Breast cancer",
                    evidence=["RASSF1 was hypomethylated in the tumours of this cohort."],
                    cpg_sites=["cg21554552"],
                )
            ],
            title="RASSF1 hypomethylation in a breast cancer cohort",
        ),
        paper("review-no-markers", [], title="A review without marker findings"),
    ]
