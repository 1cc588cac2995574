"""Sentences of a text: the one rule every stage splits by.

A sentence ends at `.`, `!` or `?`, with any closing quotes or brackets right after it, when white
space and the start of a new sentence follow: an upper-case ASCII letter, a digit, an opening
bracket or quote, or a lower-case word with a capital or digit in it ("ddPCR", "cfDNA", "p16"). So
"e.g. the", "p < 0.001", "1.5-fold" and "the assay. and" never end one, and "(p < 0.001). Then" and
'called "silenced." The' do. The full stop of an abbreviation (`ABBREVIATIONS`: "e.g.", "i.e.",
"et al.", "vs.", "cf.", "ca.", "approx.", "Fig.", "Figs.", "Ref.", "Refs.", "No.", "Dr.") ends no
sentence either, even before a capital, digit or bracket ("e.g. 120 men", "Fig. 2", "et al. (2019)");
nor does the full stop of an initial, a lone capital before a capitalised word ("J. Smith", but
"-80 °C. DNA" and "group A. 12 more" are two sentences each).

A line break also ends a sentence (`line_breaks=True`, the default): headings, list items and table
rows carry no full stop. Chunking turns that off, because inside one of its paragraphs a line break
is hard wrapping, not the end of a thought.

`sentence_boundaries` is the rule, boundary by boundary, each with the offset where a sentence ends
and where the next begins (both without the white space between them); `sentence_spans` and
`split_sentences` are views over it for whole texts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

__all__ = ["ABBREVIATIONS", "SentenceBoundary", "sentence_boundaries", "sentence_spans", "split_sentences"]

# Words whose full stop ends no sentence.
ABBREVIATIONS = ("e.g", "i.e", "et al", "vs", "cf", "ca", "approx", "Fig", "Figs", "Ref", "Refs", "No", "Dr")

_CLOSERS = "\"'\u201d\u2019)\\]"  # " ' ” ’ ) ]
_OPENERS = "A-Z0-9(\\[\"'\u201c\u2018"  # capitals, digits, ( [ " ' “ ‘
# A lower-case word with a capital or digit in it opens a sentence too: "ddPCR", "cfDNA", "p16", "mRNA".
_MIXED_CASE_WORD = "[a-z]+[A-Z0-9]"
# One fixed-width look-behind per abbreviation, checked once a full stop matched: the stop is no stop
# when it closes one.
_NOT_ABBREVIATION = "".join(rf"(?<!\b{re.escape(word)}\.)" for word in ABBREVIATIONS)
_TERMINATED = rf"(?P<stop>(?:\.{_NOT_ABBREVIATION}|[!?])[{_CLOSERS}]*)\s+(?=[{_OPENERS}]|{_MIXED_CASE_WORD})"
# With line breaks as boundaries, a line break ends a sentence even after an abbreviation. (The
# look-ahead for the first character lets the regex engine skip ahead fast.)
_LINE_BREAK = r"(?P<line>\n\s*)"
_BOUNDARY = re.compile(rf"(?=[.!?]){_TERMINATED}")
_BOUNDARY_OR_LINE_BREAK = re.compile(rf"(?=[.!?\n])(?:{_TERMINATED}|{_LINE_BREAK})")
_INITIAL_PRECEDERS = "([\t\n\r\f\v "


class SentenceBoundary(NamedTuple):
    """Where one sentence ends (after its stop and closers) and the next begins (its first character)."""

    end: int
    next_start: int


def _closes_initial(text: str, stop: int, next_start: int) -> bool:
    """Whether the full stop at `stop` closes an initial: a lone capital after white space or an
    opening bracket, with a capital next ("J. Smith"; not "-80 °C. DNA", "group A. 12 more")."""
    return (
        text[stop] == "."
        and text[next_start].isupper()
        and stop >= 1
        and "A" <= text[stop - 1] <= "Z"
        and (stop == 1 or text[stop - 2] in _INITIAL_PRECEDERS)
    )


def sentence_boundaries(
    text: str, start: int = 0, end: int | None = None, *, line_breaks: bool = True
) -> Iterator[SentenceBoundary]:
    """The sentence boundaries of `text[start:end]`, in order.

    A boundary counts when it lies wholly inside the range, the first character of the next sentence
    included; the abbreviation check looks at the text before `start` too.
    """
    pattern = _BOUNDARY_OR_LINE_BREAK if line_breaks else _BOUNDARY
    for match in pattern.finditer(text, start, len(text) if end is None else end):
        stop = match.start("stop")
        if stop < 0:  # a line break
            sentence_end = match.start()
            while sentence_end > 0 and text[sentence_end - 1].isspace():  # spaces before it, or a range
                sentence_end -= 1  # that starts inside the white space
            yield SentenceBoundary(sentence_end, match.end())
        elif not _closes_initial(text, stop, match.end()) or (line_breaks and "\n" in match.group()):
            yield SentenceBoundary(match.end("stop"), match.end())


def sentence_spans(text: str, *, line_breaks: bool = True) -> list[tuple[int, int]]:
    """(start, end) of every sentence of `text`, without surrounding white space; none is empty."""
    spans: list[tuple[int, int]] = []
    start = len(text) - len(text.lstrip())
    for boundary in sentence_boundaries(text, line_breaks=line_breaks):
        if boundary.end > start:
            spans.append((start, boundary.end))
        start = boundary.next_start
    end = len(text.rstrip())
    if end > start:
        spans.append((start, end))
    return spans


def split_sentences(text: str, *, line_breaks: bool = True) -> list[str]:
    """The sentences of `text`, in order, each a substring of it without surrounding white space."""
    return [text[start:end] for start, end in sentence_spans(text, line_breaks=line_breaks)]
