"""Merging the teacher's answers for the chunks of one paper into one record's answers, markers and Q&A.

One answer per bank question (the substantive answers of all chunks, in chunk order), markers
deduplicated by gene (or name), condition and CpG sites, extra Q&A kept only when grounded. Texts
count as the same when their folds are equal (`methyl_distill.text.quotes.fold`); an answer counts
as "not reported" by `methyl_distill.text.not_reported.is_not_reported`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from methyl_distill.extraction.grounding import EvidenceChecker
from methyl_distill.extraction.question_bank import QuestionBank
from methyl_distill.extraction.records import (
    AnsweredQuestion,
    MarkerPerformance,
    MarkerRecord,
    QAPair,
    TeacherExtraction,
)
from methyl_distill.text.not_reported import NOT_REPORTED, is_not_reported
from methyl_distill.text.quotes import fold

logger = logging.getLogger(__name__)


def merge_answers(
    bank: QuestionBank, extractions: list[TeacherExtraction], checker: EvidenceChecker
) -> list[AnsweredQuestion]:
    """One answer per bank question: the substantive answers of all chunks, in chunk order."""
    collected: dict[str, list[tuple[str, list[str]]]] = {question_id: [] for question_id in bank.ids}
    unknown: set[str] = set()
    for extraction in extractions:
        for answer in extraction.answers:
            if answer.question_id not in collected:
                unknown.add(answer.question_id)
                continue
            collected[answer.question_id].append((answer.answer.strip(), answer.evidence))
    if unknown:
        logger.warning("Teacher answered questions not in the bank (ignored): %s", ", ".join(sorted(unknown)))

    unanswered = [question_id for question_id, answers in collected.items() if not answers]
    if unanswered:
        logger.warning("Teacher gave no answer to %d question(s): %s", len(unanswered), ", ".join(unanswered))
    merged = []
    for question in bank.questions:
        texts: list[str] = []
        evidence: list[str] = []
        for text, quotes in collected[question.id]:
            if is_not_reported(text):
                continue
            if fold(text) not in {fold(existing) for existing in texts}:
                texts.append(text)
            evidence.extend(quotes)
        merged.append(
            AnsweredQuestion(
                question_id=question.id,
                question=question.text,
                answer="\n".join(texts) if texts else NOT_REPORTED,
                evidence=checker.keep(evidence) if texts else [],
            )
        )
    return merged


def _union(*lists: Iterable[str]) -> list[str]:
    result: list[str] = []
    folded: set[str] = set()
    for items in lists:
        for item in items:
            item = item.strip()
            if item and fold(item) not in folded:
                result.append(item)
                folded.add(fold(item))
    return result


def _marker_identity(marker: MarkerRecord) -> str:
    return (marker.gene or marker.marker).strip().upper()


def _sites(marker: MarkerRecord) -> set[str]:
    return {site.strip().lower() for site in marker.cpg_sites if site.strip()}


def _same_marker(a: MarkerRecord, b: MarkerRecord) -> bool:
    if _marker_identity(a) != _marker_identity(b):
        return False
    if a.condition and b.condition and fold(a.condition) != fold(b.condition):
        return False
    sites_a, sites_b = _sites(a), _sites(b)
    if sites_a and sites_b:
        return not sites_a.isdisjoint(sites_b)
    # A gene-level record and a site-level one stay apart unless they carry the same name.
    return sites_a == sites_b or fold(a.marker) == fold(b.marker)


def _merge_performance(a: MarkerPerformance, b: MarkerPerformance) -> MarkerPerformance:
    return MarkerPerformance(
        sensitivity=a.sensitivity if a.sensitivity is not None else b.sensitivity,
        specificity=a.specificity if a.specificity is not None else b.specificity,
        auc=a.auc if a.auc is not None else b.auc,
        cohort_size=a.cohort_size if a.cohort_size is not None else b.cohort_size,
        notes="; ".join(_union([a.notes], [b.notes])),
    )


def _merge_marker(a: MarkerRecord, b: MarkerRecord) -> MarkerRecord:
    if a.direction == b.direction or b.direction == "not_stated":
        direction = a.direction
    elif a.direction == "not_stated":
        direction = b.direction
    else:
        direction = "mixed"
    return MarkerRecord(
        marker=a.marker,
        gene=a.gene or b.gene,
        cpg_sites=_union(a.cpg_sites, b.cpg_sites),
        region=a.region or b.region,
        direction=direction,
        condition=a.condition or b.condition,
        sample_types=_union(a.sample_types, b.sample_types),
        assays=_union(a.assays, b.assays),
        clinical_uses=list(dict.fromkeys([*a.clinical_uses, *b.clinical_uses])),
        performance=_merge_performance(a.performance, b.performance),
        related=_union(a.related, b.related),
        evidence=_union(a.evidence, b.evidence),
    )


def merge_markers(extractions: list[TeacherExtraction], checker: EvidenceChecker) -> list[MarkerRecord]:
    """Markers of all chunks, deduplicated by gene (or name), condition and CpG sites."""
    merged: list[MarkerRecord] = []
    for extraction in extractions:
        for marker in extraction.markers:
            for index, existing in enumerate(merged):
                if _same_marker(existing, marker):
                    merged[index] = _merge_marker(existing, marker)
                    break
            else:
                merged.append(marker)
    return [marker.model_copy(update={"evidence": checker.keep(marker.evidence)}) for marker in merged]


def merge_additional_qa(extractions: list[TeacherExtraction], checker: EvidenceChecker) -> list[QAPair]:
    """Extra Q&A of all chunks, one per distinct question, kept only when grounded in a quote."""
    pairs: list[QAPair] = []
    seen: set[str] = set()
    for extraction in extractions:
        for pair in extraction.additional_qa:
            key = fold(pair.question)
            if not key or key in seen or is_not_reported(pair.answer):
                continue
            evidence = checker.keep(pair.evidence)
            if not evidence:
                continue  # an extra pair without a quote found in the paper is not grounded
            seen.add(key)
            pairs.append(pair.model_copy(update={"evidence": evidence}))
    return pairs
