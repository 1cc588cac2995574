"""How findings are matched across papers: one key per marker, one key per condition.

Papers name the same gene differently (`SEPT9` and `SEPTIN9`, `RASSF1A` and `RASSF1`, `p16` and
`CDKN2A`, `hMLH1`, `TIMP-3`), and the same disease in different case, spacing and spelling. The
marker table groups findings by `marker_key` and `condition_key`; these rules decide what counts as
"the same", so they are deliberately small, predictable and written down (docs/markers.md lists
them). They never change what a finding says: the names as reported stay in every row.

Marker key, in order:

1. Unicode NFKC; dashes of every kind become '-'; Greek letters are spelled as Latin capitals
   (`RARβ2` → `RARB2`); whitespace collapsed; upper case.
2. A trailing word that describes rather than names (`promoter`, `gene`, `methylation`, ...) is
   dropped: `MGMT promoter` → `MGMT`.
3. A hyphen between a letters-only stem and a number is dropped (`TIMP-3` → `TIMP3`, `SFRP-2` →
   `SFRP2`); `HLA-A` or `NKX2-1` are left alone.
4. The alias list `GENE_ALIASES` maps old symbols, isoform names and common synonyms to the current
   HGNC symbol (`SEPT9` → `SEPTIN9`).
5. A finding without a gene symbol (an intergenic CpG probe) is keyed by its name as reported, and
   a probe id is written in its usual lower case (`cg05575921`).

Condition key: NFKC, case-folded, dashes unified, whitespace collapsed, surrounding punctuation and
quotes stripped, and British spellings of a few medical words made American (`tumour` → `tumor`,
`oesophageal` → `esophageal`, `leukaemia` → `leukemia`, ...). Nothing else: `colorectal cancer` and
`colorectal neoplasia` stay two conditions, because deciding that they are one is a curator's call.
"""

from __future__ import annotations

import re
import unicodedata

# Old symbols, isoform names and synonyms seen in methylation papers → the current HGNC symbol.
# Keys are in the form step 1-3 above leaves them (upper case, no hyphen before a number).
GENE_ALIASES: dict[str, str] = {
    # Septin 9: HGNC renamed the SEPT family to SEPTIN in 2019; most screening papers say SEPT9.
    "SEPT9": "SEPTIN9",
    "MSEPT9": "SEPTIN9",
    # RASSF1A is the promoter-methylated isoform of RASSF1 measured in nearly every study.
    "RASSF1A": "RASSF1",
    # p16INK4a is encoded by CDKN2A (p14ARF, from its own promoter at the same locus, is left apart).
    "P16": "CDKN2A",
    "P16INK4A": "CDKN2A",
    "P16INK4": "CDKN2A",
    "INK4A": "CDKN2A",
    "CDKN2A/P16": "CDKN2A",
    # Human-prefixed names.
    "HMLH1": "MLH1",
    "HTERT": "TERT",
    # Old or short symbols.
    "DAPK": "DAPK1",
    "RARB2": "RARB",
    "RAR-B2": "RARB",
    "RAR-B": "RARB",
    "CDH1/E-CADHERIN": "CDH1",
    "E-CADHERIN": "CDH1",
    "14-3-3Σ": "SFN",
    "O6-MGMT": "MGMT",
    "SHP1": "PTPN6",
    "VIMENTIN": "VIM",
}

# Words after a symbol that describe where or what was measured, not which gene.
_DESCRIPTIVE_SUFFIXES = (
    "promoter region",
    "promoter",
    "gene",
    "methylation",
    "cpg island",
    "locus",
)
_DASHES = re.compile(r"[\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe63\uff0d]")
_WHITESPACE = re.compile(r"\s+")
_HYPHEN_BEFORE_NUMBER = re.compile(r"^([A-Z]+)-(\d+[A-Z]?)$")
_CPG_PROBE = re.compile(r"^cg\d{8}$", re.IGNORECASE)
_GREEK = str.maketrans(
    {
        "α": "A",
        "Α": "A",
        "β": "B",
        "Β": "B",
        "γ": "G",
        "Γ": "G",
        "δ": "D",
        "Δ": "D",
        "ε": "E",
        "κ": "K",
    }
)
_BRITISH_SPELLINGS = {
    "tumour": "tumor",
    "tumours": "tumors",
    "oesophageal": "esophageal",
    "oesophagus": "esophagus",
    "oesophagogastric": "esophagogastric",
    "leukaemia": "leukemia",
    "leukaemias": "leukemias",
    "haematological": "hematological",
    "haematologic": "hematologic",
    "anaemia": "anemia",
    "oestrogen": "estrogen",
    "paediatric": "pediatric",
    "tumoural": "tumoral",
    "haemangioma": "hemangioma",
    "haemangiomas": "hemangiomas",
    "oedema": "edema",
}
_WORD = re.compile(r"[a-z]+")


def _plain(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = _DASHES.sub("-", text)
    return _WHITESPACE.sub(" ", text).strip()


def marker_key(gene: str | None, marker: str) -> str:
    """The key that findings of the same marker share across papers (see the module docstring).

    `gene` is the finding's gene symbol (None for an intergenic site), `marker` its name as the
    paper gives it; the key is '' only when both are empty."""
    if gene is not None and gene.strip():
        return normalise_gene_symbol(gene)
    name = _plain(marker)
    if _CPG_PROBE.match(name):
        return name.lower()
    return normalise_gene_symbol(name) if name else ""


def normalise_gene_symbol(symbol: str) -> str:
    """A gene symbol as the marker table keys it: `sept-9 promoter` → `SEPTIN9`."""
    text = _plain(symbol).translate(_GREEK).upper()
    stripped = True
    while stripped:
        stripped = False
        for suffix in _DESCRIPTIVE_SUFFIXES:
            ending = " " + suffix.upper()
            if text.endswith(ending) and len(text) > len(ending):
                text = text[: -len(ending)].rstrip()
                stripped = True
    if _CPG_PROBE.match(text):
        return text.lower()
    text = _HYPHEN_BEFORE_NUMBER.sub(r"\1\2", text)
    return GENE_ALIASES.get(text, text)


def condition_key(condition: str | None) -> str:
    """The key that findings about the same condition share ('' when none is stated)."""
    if condition is None:
        return ""
    text = _plain(condition).casefold().strip(" .,;:'\"()[]{}\u2018\u2019\u201c\u201d")
    return _WORD.sub(lambda word: _BRITISH_SPELLINGS.get(word.group(0), word.group(0)), text)
