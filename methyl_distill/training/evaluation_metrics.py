"""Scores of a student answer against the teacher's reference answer: plain functions, no models.

- Marker recall: the gene symbols and CpG probe ids named in the reference that the answer names too.
- ROUGE-L: F1 of the longest common subsequence of word tokens (Lin, 2004), implemented here.
- Methylation direction: hyper / hypo / mixed as a text states it; agreement is scored only where the
  reference states a direction.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

TextDirection = Literal["hypermethylated", "hypomethylated", "mixed"]

# Illumina array probes (cg########, ch.N.N...) and CpG coordinates like chr6:1,378,000.
_CPG_ID = re.compile(
    r"\b(cg\d{8}|ch\.\d{1,2}\.\d+[A-Z]?|chr(?:\d{1,2}|X|Y):\d[\d,]*(?:-\d[\d,]*)?)\b", re.IGNORECASE
)
# HGNC-style symbols: an upper-case letter, then upper-case letters / digits, an optional -suffix
# (SEPT9, MGMT, CDKN2A, RASSF1A, LINC00473, HOXA9-AS1), and the p16INK4a / p14ARF family.
_GENE_SYMBOL = re.compile(r"\b([A-Z][A-Z0-9]{1,11}(?:-[A-Z0-9]{1,4})?|p1[456][A-Za-z0-9]*)\b")
# Upper-case words of methylation papers that are not genes.
_NOT_GENE_WORDS = """
    DNA RNA MRNA MIRNA LNCRNA CDNA CFDNA CTDNA GDNA PCR QPCR RT-PCR MSP QMSP MS-HRM HRM MSRE BS WGBS RRBS
    EPIC EPIC2 HM27 HM450 TCGA GEO ICGC AUC ROC CI OR HR RR SD SE IQR FDR PPV NPV LOD NGS SNP SNV CNV
    CIMP CGI CGIS DMR DMRS DMP DMPS TSS UTR LINE LINE-1 ALU SINE LTR CRC HCC NSCLC SCLC AML ALL CLL CML
    MDS GBM BRCA PDAC ESCC OSCC HNSCC RCC ICC HPV EBV HBV HCV FFPE PBMC PBMCS CTC CTCS EWAS GWAS BMI USA
    UK EU FDA CE IVD II III IV VI VII VIII IX XI XII WHO TNM AJCC NCCN FIT FOBT PSA CEA CA AFP
    AND OR NOT THE FOR WITH BUT YES NO NA NR ID IDS VS ET AL JSON
"""
NOT_GENES = frozenset(_NOT_GENE_WORDS.split())

_HYPER = re.compile(
    r"\bhyper-?methylat\w*|\b(?:increased|higher|elevated|gain(?:ed)? of|more)\s+(?:dna\s+)?methylation\b",
    re.IGNORECASE,
)
_HYPO = re.compile(
    r"\bhypo-?methylat\w*|\bdemethylat\w*|"
    r"\b(?:decreased|lower|reduced|loss of|less)\s+(?:dna\s+)?methylation\b",
    re.IGNORECASE,
)
_MIXED = re.compile(r"\b(?:both\s+hyper-?\s*and\s+hypo-?methylat\w*|mixed\s+methylation)", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9]+(?:[.-][a-z0-9]+)*")


def extract_cpg_ids(text: str) -> set[str]:
    return {match.lower().replace(",", "") for match in _CPG_ID.findall(text)}


def extract_gene_symbols(text: str) -> set[str]:
    symbols: set[str] = set()
    for match in _GENE_SYMBOL.findall(text):
        upper = match.upper()
        if upper in NOT_GENES or upper.isdigit() or _CPG_ID.fullmatch(match):
            continue
        # A lone short word in capitals is usually an acronym unless it carries a digit (AR and ER excepted).
        if len(upper) < 3 and not any(ch.isdigit() for ch in upper) and upper not in {"AR", "ER", "PR"}:
            continue
        symbols.add(upper)
    return symbols


def extract_markers(text: str) -> set[str]:
    """Gene symbols and CpG ids a text names, normalised (symbols upper-case, probe ids lower-case)."""
    return extract_gene_symbols(text) | extract_cpg_ids(text)


def marker_recall(reference: str, answer: str) -> tuple[int, int]:
    """(found, named): how many of the reference's markers the answer names; (0, 0) when it names none."""
    wanted = extract_markers(reference)
    if not wanted:
        return 0, 0
    found = extract_markers(answer)
    # Case-insensitive for genes written in lower case in the answer (e.g. "mgmt").
    found |= {token.upper() for token in re.findall(r"[A-Za-z0-9-]+", answer) if token.upper() in wanted}
    return len(wanted & found), len(wanted)


def tokenize_words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def longest_common_subsequence(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the LCS of two token sequences: O(len(a) x len(b)) time, O(min) memory."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return 0
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0] * (len(b) + 1)
        for j, other in enumerate(b, start=1):
            current[j] = previous[j - 1] + 1 if token == other else max(previous[j], current[j - 1])
        previous = current
    return previous[-1]


class RougeL(BaseModel):
    model_config = ConfigDict(extra="forbid")

    precision: float
    recall: float
    f1: float


def rouge_l(reference: str, answer: str) -> RougeL:
    """ROUGE-L of `answer` against `reference` on lower-cased word tokens (F1, beta = 1)."""
    ref, cand = tokenize_words(reference), tokenize_words(answer)
    if not ref or not cand:
        return RougeL(precision=0.0, recall=0.0, f1=0.0)
    lcs = longest_common_subsequence(ref, cand)
    if lcs == 0:
        return RougeL(precision=0.0, recall=0.0, f1=0.0)
    precision, recall = lcs / len(cand), lcs / len(ref)
    return RougeL(precision=precision, recall=recall, f1=2 * precision * recall / (precision + recall))


def methylation_direction(text: str) -> TextDirection | None:
    """The methylation direction a text states, or None when it states none."""
    if _MIXED.search(text):
        return "mixed"
    hyper, hypo = bool(_HYPER.search(text)), bool(_HYPO.search(text))
    if hyper and hypo:
        return "mixed"
    if hyper:
        return "hypermethylated"
    if hypo:
        return "hypomethylated"
    return None


class AnswerScore(BaseModel):
    model_config = ConfigDict(extra="forbid")

    markers_found: int
    markers_named: int
    rouge_l_f1: float
    reference_direction: TextDirection | None
    answer_direction: TextDirection | None
    direction_agrees: bool | None


def score_answer(reference: str, answer: str) -> AnswerScore:
    found, named = marker_recall(reference, answer)
    wanted_direction = methylation_direction(reference)
    given_direction = methylation_direction(answer)
    return AnswerScore(
        markers_found=found,
        markers_named=named,
        rouge_l_f1=rouge_l(reference, answer).f1,
        reference_direction=wanted_direction,
        answer_direction=given_direction,
        direction_agrees=None if wanted_direction is None else given_direction == wanted_direction,
    )


class AggregateScores(BaseModel):
    model_config = ConfigDict(extra="forbid")

    examples: int
    rouge_l_f1: float
    marker_recall: float | None
    examples_with_markers: int
    direction_agreement: float | None
    examples_with_direction: int


def aggregate(scores: Sequence[AnswerScore]) -> AggregateScores:
    """Mean ROUGE-L; micro-averaged marker recall; direction agreement over references that state one."""
    named = sum(s.markers_named for s in scores)
    directional = [s for s in scores if s.direction_agrees is not None]
    return AggregateScores(
        examples=len(scores),
        rouge_l_f1=sum(s.rouge_l_f1 for s in scores) / len(scores) if scores else 0.0,
        marker_recall=sum(s.markers_found for s in scores) / named if named else None,
        examples_with_markers=sum(1 for s in scores if s.markers_named),
        direction_agreement=(
            sum(1 for s in directional if s.direction_agrees) / len(directional) if directional else None
        ),
        examples_with_direction=len(directional),
    )
