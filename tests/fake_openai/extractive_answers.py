"""Grounded `TeacherExtraction` answers built by extraction, without a language model.

The project's OpenAI-compatible test server answers with these, so flows, grounding checks and
benchmarks see plausible output whose every quote is a verbatim sentence of the paper. Nothing here
is clever: questions are matched to sentences by keywords, markers are found by regex (gene-like
symbols in sentences about methylation, cg probe ids), figures by pattern.

The prompt is read with the extraction prompts' own parsers (`paper_text_in`, `questions_in`), the
sentences are those of `methyl_distill.text.sentences` and a missing answer is `NOT_REPORTED`, so
the fake cannot drift from what the pipeline writes and checks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from methyl_distill.extraction.prompts import paper_text_in, questions_in
from methyl_distill.extraction.records import (
    AnswerRecord,
    ClinicalUse,
    Direction,
    MarkerPerformance,
    MarkerRecord,
    QAPair,
    TeacherExtraction,
)
from methyl_distill.teacher.protocol import ChatMessage
from methyl_distill.text.not_reported import NOT_REPORTED
from methyl_distill.text.sentences import split_sentences

_CG_ID = re.compile(r"\bcg\d{8}\b")
_GENE_LIKE = re.compile(r"\b[A-Z][A-Z0-9]{1,9}(?:-[A-Z0-9]{1,4})?\b")
_WORD = re.compile(r"[a-z][a-z0-9-]+")

# Upper-case words in methylation papers that are not genes.
_NOT_GENES_WORDS = """\
DNA RNA CPG PCR MSP QMSP AUC ROC CI HR OR RR USA UK WHO FDA II III IV VI NGS WGBS RRBS EPIC TCGA GEO
CRC HCC NSCLC SCLC GBM ESCC HNSCC AML CLL ALL BRCA CFDNA CTDNA FIT FOBT PSA CT MRI PET NPV PPV SD
IQR OS PFS DFS RFS TMZ IDH EGFR-TKI LOD ROC-AUC BMI ICD TNM AJCC UICC NCCN HPV EBV HIV ID NA NR ND
THE AND FOR WITH NOT BUT ALSO THIS THAT FROM WERE WAS ARE HAS HAVE QPCR DDPCR RT-PCR QRT-PCR COBRA
MALDI-TOF"""
_NOT_GENES = frozenset(_NOT_GENES_WORDS.split())

_STOPWORDS_WORDS = """\
what which when where whose with from that this these those were was does did have has been being
into onto their there about paper study report reported reports show shows shown other more most
than then they them used using also each such only over under between among like within without the
and for are any all how its per"""
_STOPWORDS = frozenset(_STOPWORDS_WORDS.split())

# Question topics and the words that signal a sentence answers them.
_TOPIC_WORDS: dict[str, tuple[str, ...]] = {
    "marker": ("methylat", "marker", "gene", "promoter", "cpg"),
    "direction": ("hypermethyl", "hypomethyl", "methylation level", "increased", "decreased", "loss", "gain"),
    "condition": ("cancer", "carcinoma", "tumour", "tumor", "glioma", "glioblastoma", "disease", "patients"),
    "sample": (
        "plasma",
        "serum",
        "stool",
        "urine",
        "tissue",
        "blood",
        "cfdna",
        "cell-free",
        "biops",
        "sputum",
    ),
    "assay": ("pcr", "msp", "sequencing", "pyrosequencing", "array", "bisulfite", "methylight", "assay"),
    "clinical": (
        "diagnos",
        "prognos",
        "screening",
        "detection",
        "survival",
        "response",
        "monitor",
        "predict",
    ),
    "performance": ("sensitivity", "specificity", "auc", "area under", "accuracy", "%"),
    "cohort": ("patients", "samples", "subjects", "participants", "cohort", "cases", "controls"),
    "relationship": ("panel", "combined", "expression", "silenc", "mutation", "together", "correlat"),
}
_TOPIC_TRIGGERS: dict[str, tuple[str, ...]] = {
    "marker": ("marker", "gene", "cpg", "site", "region", "promoter"),
    "direction": ("direction", "hyper", "hypo", "increase", "decrease"),
    "condition": ("disease", "condition", "cancer", "tumour", "tumor"),
    "sample": ("sample", "tissue", "specimen", "fluid", "plasma", "stool"),
    "assay": ("assay", "method", "technique", "measured", "platform"),
    "clinical": ("clinical", "use", "diagnos", "prognos", "screening", "therapy", "monitor"),
    "performance": ("performance", "sensitivity", "specificity", "auc", "accuracy"),
    "cohort": ("cohort", "size", "patients", "many"),
    "relationship": ("panel", "relationship", "expression", "mutation", "combined", "other"),
}

_REGIONS = ("promoter", "CpG island", "exon 1", "first exon", "enhancer", "gene body", "shore", "5' UTR")
_SAMPLE_TYPES = (
    "plasma cfDNA",
    "cell-free DNA",
    "plasma",
    "serum",
    "stool",
    "urine",
    "tumour tissue",
    "tumor tissue",
    "tissue",
    "whole blood",
    "blood",
    "saliva",
    "sputum",
    "bronchial aspirate",
    "biopsy",
    "cervical smear",
)
_ASSAYS = (
    "quantitative methylation-specific PCR",
    "methylation-specific PCR",
    "qMSP",
    "MSP",
    "bisulfite sequencing",
    "pyrosequencing",
    "droplet digital PCR",
    "ddPCR",
    "MethyLight",
    "real-time PCR",
    "WGBS",
    "RRBS",
    "Infinium MethylationEPIC",
    "450K array",
    "EPIC array",
    "methylation array",
    "targeted sequencing",
)
_CLINICAL_USES: tuple[tuple[str, ClinicalUse], ...] = (
    ("early detection", "early_detection"),
    ("screening", "screening"),
    ("diagnos", "diagnosis"),
    ("prognos", "prognosis"),
    ("survival", "prognosis"),
    ("response to", "prediction_of_therapy_response"),
    ("predict", "prediction_of_therapy_response"),
    ("monitor", "monitoring"),
    ("recurrence", "monitoring"),
    ("risk", "risk_assessment"),
)
_CONDITION = re.compile(
    r"\b((?:[A-Za-z-]+ ){0,2}(?:cancer|carcinoma|adenocarcinoma|glioblastoma|glioma|lymphoma|leuka?emia|"
    r"melanoma|neoplasia|adenomas?|polyps?|syndrome|disease))\b",
    re.IGNORECASE,
)
_CONDITION_LEAD_STOP = frozenset(
    ("in", "of", "with", "and", "for", "the", "a", "an", "from", "to", "by", "on", "patients", "among", "as")
)
_PERCENT = r"(?:of |was |were |= |: |reached |at )?(\d{1,3}(?:\.\d+)?)\s?%"
_SENSITIVITY = re.compile(r"sensitivity " + _PERCENT, re.IGNORECASE)
_SPECIFICITY = re.compile(r"specificity " + _PERCENT, re.IGNORECASE)
_AUC = re.compile(
    r"(?:AUC|area under the (?:ROC |receiver operating characteristic )?curve)\s?"
    r"(?:of |was |= |: )?(0?\.\d+|1\.0)",
    re.IGNORECASE,
)
_COHORT = re.compile(
    r"\b(\d{1,3}(?:,\d{3})*|\d+) (?:patients|subjects|samples|participants|individuals|cases|specimens)\b"
)
MAX_MARKERS = 8
MAX_EVIDENCE = 2


@dataclass(frozen=True)
class ExtractionPrompt:
    """What the server found in a request: the paper text and the questions."""

    paper: str
    questions: list[tuple[str, str]]


def _as_text_message(message: Mapping[str, Any]) -> ChatMessage:
    """`message` with its content as one string (the text parts of a multi-part content joined)."""
    content = message.get("content")
    if isinstance(content, list):
        content = "\n".join(part["text"] for part in content if isinstance(part, dict) and "text" in part)
    return {"role": str(message.get("role")), "content": content if isinstance(content, str) else ""}


def parse_prompt(messages: Iterable[Mapping[str, Any]]) -> ExtractionPrompt:
    """The `<paper>` block and the `- [id] question` lines of the request's user messages."""
    text_messages = [_as_text_message(message) for message in messages]
    return ExtractionPrompt(paper=paper_text_in(text_messages) or "", questions=questions_in(text_messages))


# What the fake may quote: sentences of the paper long enough to say something (headings and
# fragments left out).
_MIN_CITABLE_CHARS = 30
_CITABLE_ENDINGS = ".!?)\"'\u201d\u2019]"


def citable_sentences(paper: str) -> list[str]:
    """Verbatim sentences of the paper (each a substring of it), headings and fragments left out."""
    return [
        sentence
        for sentence in split_sentences(paper)
        if len(sentence) >= _MIN_CITABLE_CHARS and sentence[-1] in _CITABLE_ENDINGS and " " in sentence
    ]


def _keywords(question: str) -> set[str]:
    return {word for word in _WORD.findall(question.lower()) if len(word) >= 4 and word not in _STOPWORDS}


def _topics(question: str) -> list[str]:
    lowered = question.lower()
    return [topic for topic, triggers in _TOPIC_TRIGGERS.items() if any(t in lowered for t in triggers)]


def _score(sentence: str, keywords: set[str], topics: Sequence[str]) -> int:
    lowered = sentence.lower()
    score = sum(2 for word in keywords if word in lowered)
    for topic in topics:
        score += sum(1 for signal in _TOPIC_WORDS[topic] if signal in lowered)
    return score


def answer_question(question: str, sentences: Sequence[str]) -> tuple[str, list[str]]:
    """The best one or two sentences for a question, as answer and evidence."""
    keywords, topics = _keywords(question), _topics(question)
    scored = sorted(
        ((score, index) for index, s in enumerate(sentences) if (score := _score(s, keywords, topics)) >= 2),
        key=lambda pair: (-pair[0], pair[1]),
    )
    if not scored:
        return NOT_REPORTED, []
    best_score, best = scored[0]
    evidence = [sentences[best]]
    # A second sentence only when it is as relevant as the best: keeps replies near GPT-4o's length.
    if len(scored) > 1 and scored[1][0] == best_score:
        evidence.append(sentences[scored[1][1]])
    return sentences[best], evidence


def find_markers(sentences: Sequence[str]) -> list[str]:
    """Gene-like symbols in sentences about methylation, then cg ids, in order of appearance."""
    found: list[str] = []
    for sentence in sentences:
        if "methylat" not in sentence.lower():
            continue
        for symbol in _GENE_LIKE.findall(sentence):
            if len(symbol) >= 3 and symbol.upper() not in _NOT_GENES and symbol not in found:
                found.append(symbol)
        for cg_id in _CG_ID.findall(sentence):
            if cg_id not in found:
                found.append(cg_id)
    return found[:MAX_MARKERS]


def _first_in(sentences: Sequence[str], options: Sequence[str]) -> list[str]:
    found: list[str] = []
    for option in options:
        pattern = re.compile(r"(?<![A-Za-z])" + re.escape(option) + r"(?![A-Za-z])", re.IGNORECASE)
        for sentence in sentences:
            match = pattern.search(sentence)
            if match and not any(option.lower() in other.lower() for other in found):
                found.append(match.group(0))
                break
    return found


def _direction(sentences: Sequence[str]) -> Direction:
    text = " ".join(sentences).lower()
    hyper = text.count("hypermethyl") + text.count("increased methylation")
    hypo = text.count("hypomethyl") + text.count("loss of methylation") + text.count("decreased methylation")
    if hyper and hypo:
        return "mixed"
    if hyper:
        return "hypermethylated"
    if hypo:
        return "hypomethylated"
    return "not_stated"


def find_condition(sentences: Sequence[str]) -> str | None:
    for sentence in sentences:
        for match in _CONDITION.finditer(sentence):
            words = match.group(1).split()
            kept = [words[-1]]
            for word in reversed(words[:-1]):  # qualifiers back to the first function word
                if word.lower() in _CONDITION_LEAD_STOP:
                    break
                kept.insert(0, word)
            return " ".join(kept)
    return None


def _fraction(pattern: re.Pattern[str], text: str, *, percent: bool) -> float | None:
    match = pattern.search(text)
    if not match:
        return None
    value = float(match.group(1))
    value = value / 100 if percent else value
    return value if 0 <= value <= 1 else None


def _performance(sentences: Sequence[str]) -> MarkerPerformance:
    text = " ".join(sentences)
    cohorts = [int(number.replace(",", "")) for number in _COHORT.findall(text)]
    return MarkerPerformance(
        sensitivity=_fraction(_SENSITIVITY, text, percent=True),
        specificity=_fraction(_SPECIFICITY, text, percent=True),
        auc=_fraction(_AUC, text, percent=False),
        cohort_size=max(cohorts) if cohorts else None,
        notes="",
    )


def _clinical_uses(sentences: Sequence[str]) -> list[ClinicalUse]:
    text = " ".join(sentences).lower()
    uses: list[ClinicalUse] = []
    for signal, use in _CLINICAL_USES:
        if signal in text and use not in uses:
            uses.append(use)
    return uses


def build_marker(marker: str, sentences: Sequence[str], all_markers: Sequence[str]) -> MarkerRecord:
    pattern = re.compile(r"(?<![A-Za-z0-9])" + re.escape(marker) + r"(?![A-Za-z0-9])")
    about = [s for s in sentences if pattern.search(s)]
    is_probe = bool(_CG_ID.fullmatch(marker))
    regions = _first_in(about, _REGIONS)
    named = (
        f"{marker} {regions[0]}"
        if regions and re.search(re.escape(marker) + r" " + re.escape(regions[0]), " ".join(about))
        else marker
    )
    cpg_sites = sorted({cg for s in about for cg in _CG_ID.findall(s)} | ({marker} if is_probe else set()))
    return MarkerRecord(
        marker=named,
        gene=None if is_probe else marker,
        cpg_sites=cpg_sites,
        region=regions[0] if regions else None,
        direction=_direction(about),
        condition=find_condition(about) or find_condition(sentences),
        sample_types=_first_in(about, _SAMPLE_TYPES),
        assays=_first_in(about, _ASSAYS) or _first_in(sentences, _ASSAYS)[:1],
        clinical_uses=_clinical_uses(about),
        performance=_performance(about),
        related=[other for other in all_markers if other != marker and any(other in s for s in about)],
        evidence=about[:MAX_EVIDENCE],
    )


def extract_grounded(paper: str, questions: Sequence[tuple[str, str]]) -> TeacherExtraction:
    """Answer every question and list every marker, quoting only verbatim sentences of `paper`."""
    sentences = citable_sentences(paper)
    answers = []
    for question_id, question in questions:
        answer, evidence = answer_question(question, sentences)
        answers.append(AnswerRecord(question_id=question_id, answer=answer, evidence=evidence))
    markers = find_markers(sentences)
    records = [build_marker(marker, sentences, markers) for marker in markers]
    additional = []
    for record in records[:3]:
        if record.evidence:
            additional.append(
                QAPair(
                    question=f"What does the paper report about methylation of {record.marker}?",
                    answer=record.evidence[0],
                    evidence=[record.evidence[0]],
                )
            )
    return TeacherExtraction(answers=answers, markers=records, additional_qa=additional)
