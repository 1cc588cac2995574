"""Quote matching: whether, and where, a quote occurs in a text; and when two short texts are the same.

Texts are compared by their *fold*: NFKC-normalised, lower-cased, letters and digits only, plus the
few characters that change what a number or a marker says: a decimal point between two digits
("1.5" is not "15"; the Lancet's "1·5" is "1.5"), the comparison signs < > ≤ ≥ ("p < 0.05" is not
"p > 0.05"), a plus sign, and a minus sign ("-", "−" or "–" folded to "-") where it is a sign: before
a number that follows no letter or digit ("-2.5" is not "2.5"), or ending a word whose last
character is a capital or a digit ("ER- tumours" is not "ER+ tumours", "CD34-"); not inside a
word, at a line break or after a lower-case word, where it is hyphenation ("methylation-specific"
is "methylation specific", "hyper-\nmethylation" and "hyper- methylation" are "hypermethylation").
The fold is blind to white space, line breaks, hyphenation ("methyl-\\nation"), typographic quotes
and dashes, ligatures and other punctuation, yet demands the same words and numbers in the same order.

A quote occurs in a text when each of its fragments, the parts between ellipses ("...", "…", "[...]",
". . ."), occurs in the text's fold: "the SEPT9 ... assay". `locate_quote` says where (in order when
the fragments occur in order, else wherever each first occurs), using the offset in the text of every
folded character; `FoldedText.occurs` only says whether. Each fragment must cover whole words of
the text (the fold has no spaces: "a test" is not in "greatest"). Two short texts (answers, marker
names, conditions) are the same when their folds are equal.

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
# What the fold keeps of an ASCII text: letters, digits, < and >, full stops between two digits, plus
# signs, and minus signs before a number (after no letter or digit) or ending a word after a capital
# or a digit (not followed by a letter, digit, line break or another hyphen).
_ASCII_KEPT = re.compile(
    r"[A-Za-z0-9<>]+|(?<=[0-9])\.(?=[0-9])|\+"
    r"|(?<![A-Za-z0-9<>])-(?=[0-9]|\.[0-9])|(?<=[A-Z0-9])-(?![A-Za-z0-9<>\n\r-])"
)
_PLUS, _HYPHEN = ord("+"), ord("-")
_MINUS_SIGNS = (_HYPHEN, 0x2212, 0x2013)  # hyphen-minus, minus sign, en dash (a minus in many PDFs)
_LINE_BREAKS = (0x0A, 0x0D)
# Comparison signs kept in the fold, and the variants folded onto them.
_COMPARISONS = {"<": "<", ">": ">", "\u2264": "\u2264", "\u2265": "\u2265"}
_COMPARISONS |= {"\u2266": "\u2264", "\u2a7d": "\u2264", "\u2267": "\u2265", "\u2a7e": "\u2265"}


@cache
def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For every code point of the Basic Multilingual Plane: is it kept (a letter, digit or comparison
    sign), its folded code, is it a decimal digit, and is it a capital or a decimal digit."""
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
    capital_or_digit = np.fromiter((char.isupper() for char in chars), dtype=bool, count=0x10000) | digit
    return keep, folded, digit, capital_or_digit


def code_points(text: str) -> np.ndarray:
    """The code points of `text` as a uint32 array (one per character)."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def fold_with_offsets(text: str, codes: np.ndarray | None = None) -> tuple[str, np.ndarray]:
    """The fold of `text` (already NFKC-normalised) and the offset in `text` of each folded character.

    `codes` are `text`'s code points when the caller has them already.
    """
    if codes is None:
        codes = code_points(text)
    keep_table, fold_table, digit_table, capital_or_digit_table = _tables()
    bmp = np.minimum(codes, 0xFFFF)
    keep = keep_table[bmp]
    folded = fold_table[bmp]
    digit = digit_table[bmp]
    capital_or_digit = capital_or_digit_table[bmp]
    if codes.size and int(codes.max()) >= 0x10000:  # astral characters: rare, decided one by one
        for index in np.flatnonzero(codes >= 0x10000):
            char = chr(int(codes[index]))
            keep[index] = char.isalnum()
            folded[index] = codes[index]
            digit[index] = char.isdecimal()
            capital_or_digit[index] = char.isupper() or char.isdecimal()
    word = keep.copy()  # letters, digits and comparison signs: what a sign can follow or precede
    if codes.size >= 3:  # a full stop or middle dot between two digits is a decimal point
        dots = (codes[1:-1] == _FULL_STOP) | (codes[1:-1] == _MIDDLE_DOT)
        decimal = np.flatnonzero(dots & digit[:-2] & digit[2:]) + 1
        keep[decimal] = True
        folded[decimal] = _FULL_STOP
    _keep_signs(codes, word, digit, capital_or_digit, keep, folded)
    offsets = np.flatnonzero(keep)
    return folded[keep].astype("<u4").tobytes().decode("utf-32-le"), offsets


def _keep_signs(
    codes: np.ndarray,
    word: np.ndarray,
    digit: np.ndarray,
    capital_or_digit: np.ndarray,
    keep: np.ndarray,
    folded: np.ndarray,
) -> None:
    """Mark the plus and minus signs the fold keeps (see the module doc), in place."""
    plus = codes == _PLUS
    minus = np.isin(codes, _MINUS_SIGNS)
    if not (plus.any() or minus.any()):
        return
    after = np.zeros_like(word)  # does a letter or digit come before this character
    after[1:] = word[:-1]
    before = np.zeros_like(word)  # ... after it
    before[:-1] = word[1:]
    number_next = np.zeros_like(word)  # a digit, or a full stop and a digit, comes next
    number_next[:-1] = digit[1:]
    number_next[:-2] |= (codes[1:-1] == _FULL_STOP) & digit[2:]
    break_or_hyphen_next = np.zeros_like(word)
    break_or_hyphen_next[:-1] = np.isin(codes[1:], _LINE_BREAKS) | minus[1:]
    after_capital_or_digit = np.zeros_like(word)
    after_capital_or_digit[1:] = capital_or_digit[:-1]
    ends_word = after_capital_or_digit & ~before & ~break_or_hyphen_next
    sign = minus & ((~after & number_next) | ends_word)
    keep[plus | sign] = True
    folded[plus] = _PLUS
    folded[sign] = _HYPHEN


def _fold_normalised(text: str) -> str:
    """The fold of an NFKC-normalised text, without offsets; ASCII (most quotes) by a regular
    expression that keeps exactly what the tables keep, the rest by the tables."""
    if text.isascii():
        return "".join(_ASCII_KEPT.findall(text)).lower()
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


def _find_whole_words(
    folded_text: str, offsets: np.ndarray, text: str | None, fragment: str, start: int
) -> int:
    """The first position from `start` where `fragment` occurs in the fold and, when `text` is given,
    covers whole words of the text (no letter or digit just before or just after): the fold has no
    spaces, so "a test" must not be found inside "greatest". -1 when there is none."""
    position = folded_text.find(fragment, start)
    while position >= 0 and text is not None:
        first, last = int(offsets[position]), int(offsets[position + len(fragment) - 1])
        if not (first > 0 and text[first - 1].isalnum()) and not (
            last + 1 < len(text) and text[last + 1].isalnum()
        ):
            return position
        position = folded_text.find(fragment, position + 1)
    return position


def locate_quote(
    folded_text: str, offsets: np.ndarray, quote: str, min_chars: int = 1, text: str | None = None
) -> LocatedQuote:
    """Where `quote` occurs in the text whose fold and offsets are given: every fragment must occur,
    in order where possible, and, when the `text` itself is given, cover whole words of it. Quotes
    whose fragments fold to fewer than `min_chars` characters in all are 'too_short'."""
    fragments = fold_quote(quote)
    if sum(len(fragment) for fragment in fragments) < min_chars:
        return LocatedQuote("too_short")
    spans = []
    cursor = 0
    for fragment in fragments:
        position = _find_whole_words(folded_text, offsets, text, fragment, cursor)
        if position < 0:
            position = _find_whole_words(folded_text, offsets, text, fragment, 0)
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
        return locate_quote(self.folded, self.offsets, quote, min_chars, self.text)

    def occurs(self, quote: str) -> bool:
        """Whether every fragment of `quote` occurs in the text (a quote without letters or digits
        does not)."""
        return self.locate(quote).status == "found"
