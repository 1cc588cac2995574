"""Verbatim quotes of a text: what a grammar may let a small model cite as evidence.

The embedded SmolLM2 teacher paraphrases when asked for verbatim quotes. With
`GrammarLimits.verbatim_properties` its evidence strings are constrained to the candidates from
`quote_candidates`: every sentence of the paper text, long sentences cut at clause boundaries, so
each quote is verbatim by construction and short enough for the output budget. Likewise a gene
symbol can be limited to the symbol-like words of the text (`symbol_candidates`). Sentences are those
of `methyl_distill.text.sentences`, line breaks included as boundaries.
"""

from __future__ import annotations

import re

from methyl_distill.text.sentences import split_sentences

__all__ = ["quote_candidates", "symbol_candidates"]

_CLAUSE_END = re.compile(r"(?<=[,;:])\s+")
MIN_QUOTE_CHARS = 12


def _clauses(sentence: str) -> list[str]:
    """`sentence` split after , ; or : outside parentheses ("(hazard ratio 0.55; 95% CI ...)" stays whole)."""
    clauses: list[str] = []
    for part in _CLAUSE_END.split(sentence):
        if clauses and clauses[-1].count("(") > clauses[-1].count(")"):
            clauses[-1] = f"{clauses[-1]} {part}"
        else:
            clauses.append(part)
    return clauses


def _pieces(sentence: str, max_chars: int) -> list[str]:
    """`sentence` if it fits, else consecutive clauses merged up to `max_chars` (a clause longer
    than that is cut at a word boundary)."""
    if len(sentence) <= max_chars:
        return [sentence]
    pieces: list[str] = []
    current = ""
    for clause in _clauses(sentence):
        while len(clause) > max_chars:
            cut = clause.rfind(" ", 0, max_chars)
            cut = cut if cut > 0 else max_chars
            if current:
                pieces.append(current)
                current = ""
            pieces.append(clause[:cut])
            clause = clause[cut:].lstrip()
        candidate = f"{current} {clause}" if current else clause
        if len(candidate) <= max_chars:
            current = candidate
        else:
            pieces.append(current)
            current = clause
    if current:
        pieces.append(current)
    return pieces


def quote_candidates(text: str, max_chars: int = 200) -> list[str]:
    """The sentences of `text` in order, each at most `max_chars` long (longer ones split into
    clause runs), without duplicates and without fragments under 12 characters. Every candidate
    occurs verbatim in `text`."""
    if max_chars < MIN_QUOTE_CHARS:
        raise ValueError(f"max_chars must be at least {MIN_QUOTE_CHARS}, got {max_chars}")
    candidates: dict[str, None] = {}
    for sentence in split_sentences(text):
        for piece in _pieces(sentence, max_chars):
            piece = piece.strip()
            if len(piece) >= MIN_QUOTE_CHARS and piece in text:
                candidates[piece] = None
    return list(candidates)


# Gene-symbol-like words: an upper-case letter, then upper-case letters, digits or hyphens, with at
# least one more letter or digit (SEPT9, CDKN2A, MGMT, RASSF1A, p16INK4a's INK4a is not one).
_SYMBOL = re.compile(r"(?<![\w-])[A-Z][A-Z0-9-]*[A-Z0-9](?![\w-])")


def symbol_candidates(text: str) -> list[str]:
    """The symbol-like words of `text` (upper case, 2-12 characters, e.g. SEPT9, CDKN2A), in order
    of first occurrence, without duplicates. They include abbreviations (PCR, DNA): a grammar
    bound, not a gene list."""
    return list(dict.fromkeys(m.group() for m in _SYMBOL.finditer(text) if len(m.group()) <= 12))
