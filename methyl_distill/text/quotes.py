"""Quote matching: whether, and where, a quote occurs in a text; and when two short texts are the same.

Texts are compared by their *fold*: NFKC-normalised, lower-cased, letters and digits only, plus the
few characters that change what a number says: a decimal point between two digits ("1.5" is not
"15"; the Lancet's "1·5" is "1.5") and the comparison signs < > ≤ ≥ ("p < 0.05" is not "p > 0.05").
The fold is blind to white space, line breaks, hyphenation ("methyl-\\nation"), typographic quotes
and dashes, ligatures and other punctuation, yet demands the same words and numbers in the same order.

A quote occurs in a text when each of its fragments, the parts between ellipses ("...", "…", "[...]",
". . ."), occurs in the text's fold: "the SEPT9 ... assay". `locate_quote` says where (in order when
the fragments occur in order, else wherever each first occurs), using the offset in the text of every
folded character; `FoldedText.occurs` only says whether. Two short texts (answers, marker names,
conditions) are the same when their folds are equal.

Folding goes through numpy lookup tables over the Basic Multilingual Plane: a few microseconds per
kilobyte, so whole papers are folded once and quotes looked up in the fold.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from typing import Literal

import numpy as np

__all__ = [
    "FoldedText",
    "LocatedQuote",
    "QuoteStatus",
    "code_points",
    "fold",
    "fold_quote",
    "fold_with_offsets",
    "locate_quote",
]

# An ellipsis: three or more full stops, spaced or not, optionally in square brackets ('…' is '...'
# after NFKC).
_ELLIPSIS = re.compile(r"\[?\s*(?:\.\s*){3,}\]?")
_FULL_STOP, _MIDDLE_DOT = ord("."), ord("\u00b7")
# What the fold drops from an ASCII text: all but letters, digits, < and >, and full stops that are
# not between two digits.
_ASCII_DROPPED = re.compile(r"[^A-Za-z0-9<>.]+|(?<![0-9])\.|\.(?![0-9])")
# Comparison signs kept in the fold, and the variants folded onto them.
_COMPARISONS = {"<": "<", ">": ">", "\u2264": "\u2264", "\u2265": "\u2265"}
_COMPARISONS |= {"\u2266": "\u2264", "\u2a7d": "\u2264", "\u2267": "\u2265", "\u2a7e": "\u2265"}


@cache
def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every code point of the Basic Multilingual Plane: is it kept (a letter, digit or comparison
    sign), its folded code, and is it a decimal digit."""
    chars = [chr(code) for code in range(0x10000)]
    keep = np.fromiter((char.isalnum() or char in _COMPARISONS for char in chars), dtype=bool, count=0x10000)
    lowered = [_COMPARISONS.get(char, char.lower()) for char in chars]
    folded = np.fromiter(
        (ord(low) if len(low) == 1 else code for code, low in enumerate(lowered)),
        dtype=np.uint32,
        count=0x10000,
    )
    folded[0x3C2] = 0x3C3  # final sigma folds like sigma (str.lower() picks either by context)
    digit = np.fromiter((char.isdecimal() for char in chars), dtype=bool, count=0x10000)
    return keep, folded, digit


def code_points(text: str) -> np.ndarray:
    """The code points of `text` as a uint32 array (one per character)."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def fold_with_offsets(text: str, codes: np.ndarray | None = None) -> tuple[str, np.ndarray]:
    """The fold of `text` (already NFKC-normalised) and the offset in `text` of each folded character.

    `codes` are `text`'s code points when the caller has them already.
    """
    if codes is None:
        codes = code_points(text)
    keep_table, fold_table, digit_table = _tables()
    bmp = np.minimum(codes, 0xFFFF)
    keep = keep_table[bmp]
    folded = fold_table[bmp]
    digit = digit_table[bmp]
    if codes.size and int(codes.max()) >= 0x10000:  # astral characters: rare, decided one by one
        for index in np.flatnonzero(codes >= 0x10000):
            char = chr(int(codes[index]))
            keep[index] = char.isalnum()
            folded[index] = codes[index]
            digit[index] = char.isdecimal()
    if codes.size >= 3:  # a full stop or middle dot between two digits is a decimal point
        dots = (codes[1:-1] == _FULL_STOP) | (codes[1:-1] == _MIDDLE_DOT)
        decimal = np.flatnonzero(dots & digit[:-2] & digit[2:]) + 1
        keep[decimal] = True
        folded[decimal] = _FULL_STOP
    offsets = np.flatnonzero(keep)
    return folded[keep].astype("<u4").tobytes().decode("utf-32-le"), offsets


def _fold_normalised(text: str) -> str:
    """The fold of an NFKC-normalised text, without offsets; ASCII (most quotes) by a regular
    expression that keeps exactly what the tables keep, the rest by the tables."""
    if text.isascii():
        return _ASCII_DROPPED.sub("", text).lower()
    return fold_with_offsets(text)[0]


def fold(text: str) -> str:
    """The fold of `text`: the key under which two texts count as the same (see the module doc)."""
    return _fold_normalised(unicodedata.normalize("NFKC", text))


def fold_quote(quote: str) -> list[str]:
    """The folds of a quote's fragments (its parts between ellipses), empty ones left out."""
    normalised = unicodedata.normalize("NFKC", quote)
    parts = _ELLIPSIS.split(normalised) if "..." in normalised or ". ." in normalised else [normalised]
    return [folded for part in parts if (folded := _fold_normalised(part))]


QuoteStatus = Literal["found", "missing", "too_short"]


@dataclass(frozen=True, slots=True)
class LocatedQuote:
    """Whether a quote was found, and the span of the text each of its fragments covers."""

    status: QuoteStatus
    spans: tuple[tuple[int, int], ...] = ()


def locate_quote(folded_text: str, offsets: np.ndarray, quote: str, min_chars: int = 1) -> LocatedQuote:
    """Where `quote` occurs in the text whose fold and offsets are given: every fragment must occur,
    in order where possible. Quotes whose fragments fold to fewer than `min_chars` characters in all
    are 'too_short'."""
    fragments = fold_quote(quote)
    if sum(len(fragment) for fragment in fragments) < min_chars:
        return LocatedQuote("too_short")
    spans = []
    cursor = 0
    for fragment in fragments:
        position = folded_text.find(fragment, cursor)
        if position < 0:
            position = folded_text.find(fragment)
            if position < 0:
                return LocatedQuote("missing")
        cursor = position + len(fragment)
        spans.append((int(offsets[position]), int(offsets[cursor - 1]) + 1))
    return LocatedQuote("found", tuple(spans))


class FoldedText:
    """A text folded once, for many quote look-ups. `text` is the NFKC form the spans refer to."""

    __slots__ = ("folded", "offsets", "text")

    def __init__(self, text: str) -> None:
        self.text = unicodedata.normalize("NFKC", text)
        self.folded, self.offsets = fold_with_offsets(self.text)

    def locate(self, quote: str, min_chars: int = 1) -> LocatedQuote:
        return locate_quote(self.folded, self.offsets, quote, min_chars)

    def occurs(self, quote: str) -> bool:
        """Whether every fragment of `quote` occurs in the text (a quote without letters or digits
        does not)."""
        return self.locate(quote).status == "found"
