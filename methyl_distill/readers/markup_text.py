"""Plain text from article markup (JATS XML, HTML): inline runs, citation markers and tables.

The markup readers flatten each paragraph into a list of string pieces. Two kinds of placeholder
travel in those pieces until `finish_inline` turns them into text:

- `LINE_BREAK` marks a hard line break inside a paragraph (a `<br>`, a display formula). Everything
  else is white space that the markup's own indentation put there, so each line is collapsed to
  single spaces.
- `citation_placeholder` stands for one citation marker (a JATS `<xref ref-type="bibr">`, an HTML
  link to `#ref12`). A numbered marker ("3", "5–7") becomes `CITATION`; an author-year marker
  ("Smith et al., 2010") is kept wrapped, because it may be part of the sentence ("as Smith et al.,
  2010 showed") and only goes when a bracket holds nothing but citations. A bare year ("Smith et al.
  (2010)") is sentence text, not a marker.

`remove_citation_markers` then deletes every bracket that holds only citations, with the space
before it ("as reported [3, 4]." -> "as reported."), every run of bare numbered markers (superscript
citations), and the punctuation they would leave dangling ("previously [3], and" -> "previously,
and", "(Table 2; [5])" -> "(Table 2)"). A bracket that also holds other words keeps them.

A superscript number right after a digit is a power and is written so: `10<sup>6</sup>` reads
"10^6", not "106" (`exponent`). Other superscripts and all subscripts run into the text ("CpG",
"m6A", "H2O").

`table_rows` turns a table (HTML and the JATS XHTML table model share the tags; OASIS/CALS tables
in JATS have `row` and `entry`) into one line per row with cells joined by " | "; a cell spanning
columns is written once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from lxml import etree

__all__ = [
    "CITATION",
    "LINE_BREAK",
    "citation_placeholder",
    "exponent",
    "finish_inline",
    "local_name",
    "remove_citation_markers",
    "table_rows",
]

# Private-use characters: no paper's text has them, and `finish_inline` removes any that survive.
CITATION = "\ue000"
_AUTHOR_OPEN = "\ue001"
_AUTHOR_CLOSE = "\ue002"
_REMOVED = "\ue003"  # Where a marker was taken out, until the punctuation around it is tidied.
LINE_BREAK = "\ue004"
_PLACEHOLDERS = re.compile("[\ue000-\ue004]")

# A numbered marker: numbers with ranges and lists, a letter at most on either side ("3", "5–7",
# "12a", "3,4", "S2"), or nothing at all (an empty `<xref/>`).
_NUMBER = r"[a-z]?\d+[a-z]?"
_NUMBERED = re.compile(rf"[\[(]?\s*(?:{_NUMBER}(?:[\s,;\u2010-\u2015-]+{_NUMBER})*)?\s*[\])]?", re.IGNORECASE)
_YEAR = re.compile(r"(?:1[5-9]|20)\d\d[a-z]?")

_ONE = rf"(?:{CITATION}|{_AUTHOR_OPEN}[^{_AUTHOR_OPEN}{_AUTHOR_CLOSE}]*{_AUTHOR_CLOSE})"
# What may stand between markers: commas, semicolons, dashes, "and", white space.
_BETWEEN = r"(?:[\s,;\u2010-\u2015-]|\band\b|&)*"
# Words that may open a bracket of citations: "(e.g., 3)", "[see 4, 5]", "(reviewed in 6)".
_LEAD_IN = r"(?:(?:e\.g\.|i\.e\.|see also|see|cf\.|refs?\.|reviewed in|for (?:a )?review,? see)[\s,:]*)?"
_BRACKETED = rf"[\[(]\s*{_LEAD_IN}{_ONE}(?:{_BETWEEN}{_ONE})*\s*[\])]"
_CITATION_BRACKETS = re.compile(rf"[ ]*{_BRACKETED}(?:{_BETWEEN}{_BRACKETED})*")
_BARE_NUMBERED = re.compile(rf"[ ]*{CITATION}(?:{_BETWEEN}{CITATION})*")
_NARRATIVE = re.compile(rf"{_AUTHOR_OPEN}([^{_AUTHOR_OPEN}{_AUTHOR_CLOSE}]*){_AUTHOR_CLOSE}")
_TIDY = (
    # "previously, [3], and" -> "previously, and"
    (re.compile(rf"([,;])[ ]*{_REMOVED}[ ]*[,;]"), r"\1"),
    # "(Table 2; [5])" -> "(Table 2)"
    (re.compile(rf"[ ]*[,;][ ]*{_REMOVED}[ ]*(?=[)\]])"), ""),
    # "([5]; Table 2)" -> "(Table 2)"
    (re.compile(rf"(?<=[(\[])[ ]*{_REMOVED}[ ]*[,;]?[ ]*"), ""),
    # "as shown [3] ." -> "as shown."
    (re.compile(rf"[ ]*{_REMOVED}[ ]*(?=[,.;:!?)\]]|$)"), ""),
    # "(3)Methylation" at the start of a line, or between words.
    (re.compile(rf"^[ ]*{_REMOVED}[ ]*"), ""),
)
_SPACES = re.compile(r"\s+")
_SIGNED_NUMBER = re.compile(r"[-+\u2212\u2013]?\d+(?:\.\d+)?")


def citation_placeholder(marker_text: str) -> str:
    """What stands for one citation marker whose text is `marker_text` until `finish_inline`."""
    text = " ".join(marker_text.split())
    if _YEAR.fullmatch(text):
        return text
    if _NUMBERED.fullmatch(text):
        return CITATION
    return f"{_AUTHOR_OPEN}{text}{_AUTHOR_CLOSE}"


def exponent(pieces: list[str], superscript: etree._Element) -> str | None:
    """ "^6" for a `<sup>` holding only a number right after a digit (a power: 10^6, 10^-3); else None."""
    text = (superscript.text or "").strip()
    follows_digit = bool(pieces) and pieces[-1][-1:].isdigit()
    if follows_digit and len(superscript) == 0 and _SIGNED_NUMBER.fullmatch(text):
        return f"^{text}"
    return None


def remove_citation_markers(line: str) -> str:
    """One line of text without its citation placeholders and the brackets and punctuation around them."""
    line = _CITATION_BRACKETS.sub(_REMOVED, line)
    line = _BARE_NUMBERED.sub(_REMOVED, line)
    line = _NARRATIVE.sub(r"\1", line)
    for pattern, replacement in _TIDY:
        line = pattern.sub(replacement, line)
    return _PLACEHOLDERS.sub("", line)


def finish_inline(pieces: Iterable[str]) -> str:
    """The text of a paragraph's pieces: lines at `LINE_BREAK`s, each collapsed to single spaces and
    without citation markers; empty lines dropped."""
    lines = []
    for raw_line in "".join(pieces).split(LINE_BREAK):
        line = remove_citation_markers(_SPACES.sub(" ", raw_line).strip())
        line = _SPACES.sub(" ", line).strip()
        if line:
            lines.append(line)
    return "\n".join(lines)


def local_name(element: etree._Element) -> str:
    """An element's tag without namespace, lower-cased for HTML; '' for comments and entities."""
    tag = element.tag
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1]


def _own_table(row: etree._Element, table: etree._Element) -> bool:
    """Whether `row` belongs to `table` itself and not to a table nested in one of its cells."""
    parent = row.getparent()
    while parent is not None and local_name(parent) != "table":
        parent = parent.getparent()
    return parent is table


def table_rows(table: etree._Element, cell_text: Callable[[etree._Element], str]) -> list[str]:
    """The rows of `table` (head, body and foot, in document order), each as its cells' text joined
    with " | "; rows with no text are left out. `cell_text` flattens one `<td>`/`<th>`."""
    rows = []
    for row in table.iter():
        if local_name(row) not in ("tr", "row") or not _own_table(row, table):
            continue
        cells = [cell_text(cell) for cell in row if local_name(cell) in ("td", "th", "entry")]
        cells = [" ".join(cell.split()) for cell in cells]
        if any(cells):
            rows.append(" | ".join(cells))
    return rows
