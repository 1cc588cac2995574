"""PDF papers: the text in reading order, with its sections and identifiers, read through PDFium.

`methyl_distill.readers.pdf_layout` turns each page into lines in reading order (runs, rows,
columns, running headers and footers left out); this module checks the file and makes a paper of
those lines.

Lines become blocks: a new paragraph starts after a larger vertical gap than the usual line
pitch, at a first-line indent, after a short line that ends a sentence, or where the font size
changes; a paragraph runs on across columns and pages. A line ending in a hyphen is joined by the
evidence of the document itself: a capital or digit after it, a capital or digit inside the first
part ("CpG-"), or the hyphenated form seen elsewhere keeps the hyphen; the joined form seen
elsewhere joins; otherwise two parts that are both words elsewhere keep it ("methylation-" /
"specific") and anything else ("colorec-" / "tal") is joined. Rows of several cells are table rows,
cells joined by " | ", one row a line.

Headings are lines that name a known section (Abstract, Methods, References...), numbered lines
("2.1. Tumour samples") set in bold or a larger size, and short bold or larger lines. The title is
the largest text on page 1; what stands before the first heading on page 1 is the front matter
and goes into the title's section. Back matter (References, Acknowledgements...) gets its role from
`role_of_heading`, so `omit_back_matter` can leave it out.

A PDF that cannot be read raises `UnreadablePaperError`: 'no text layer: scanned, needs OCR',
'encrypted: password needed' or 'corrupt or truncated PDF: ...'.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from methyl_distill.readers.document import (
    DocumentBuilder,
    PaperMetadata,
    ReadPaper,
    UnreadablePaperError,
    clean_doi,
    identifiers_in_text,
    is_known_heading,
    role_of_heading,
)
from methyl_distill.readers.pdf_layout import Line, PageText, page_lines, read_page, strip_running_lines

logger = logging.getLogger(__name__)

READER = "pdf/1"

# Geometry, in font sizes (em) unless said otherwise.
_INDENT_EM = (0.5, 4.0)  # a first-line indent is this far right of the column's left edge
_PARAGRAPH_PITCH = 1.25  # a vertical step this many times the usual line pitch starts a paragraph
# A line that ends a sentence and is shorter than this share of its column ends a paragraph.
_SHORT_LINE_SHARE = 0.8
_VERY_SHORT_LINE_SHARE = 0.5
_HEADING_SIZE = 1.12  # a line this many times the body size is set large
_TITLE_SIZE = 1.15
_MAX_HEADING_WORDS = 14
# A scanned PDF has (almost) no text: fewer letters than this per page.
_MIN_LETTERS_PER_PAGE = 40

_NUMBERED_HEADING = re.compile(r"^(?:\d{1,2}(?:\.\d{1,2})*\.?|[IVX]{1,5}\.)\s+[A-Z][^.!?]*$")
_CAPTION = re.compile(r"^(?:Supplementary\s+)?(?:Table|Figure|Fig\.?)\s*S?\d", re.IGNORECASE)
_LIST_ITEM = re.compile(r"^(?:\[\d{1,3}\]|\d{1,3}\.|[•▪◦‣∙·–])\s")
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*(?:-[^\W_]+(?:['’][^\W_]+)*)*")
_LINE_END_HYPHENS = ("-", "\u2010", "\u00ad")
_LETTERS = re.compile(r"[^\W\d_]")
_FILENAME_TITLE = re.compile(
    r"\.(?:pdf|docx?|rtf|tex|dvi|indd|qxd|ps|eps)$|^microsoft word|^untitled|^title$|^doi:|^\d+$|[\\/]",
    re.IGNORECASE,
)
_OPENERS = "([{\"'“‘"
_TERMINAL = (".", "!", "?", ":", ".)", ".”", '."')


# --- reading the file --------------------------------------------------------------------------------


def read_pdf(data: bytes) -> ReadPaper:
    """A PDF's text in reading order, sections and identifiers; `UnreadablePaperError` if unusable."""
    _check_file_shape(data)
    pdf = _open(data)
    try:
        page_count = len(pdf)
        if page_count == 0:
            raise UnreadablePaperError("corrupt or truncated PDF: it has no pages")
        pages = [read_page(pdf, index) for index in range(page_count)]
        info = _info_metadata(pdf)
    finally:
        pdf.close()
    return _paper_from_pages(pages, info, page_count)


def _check_file_shape(data: bytes) -> None:
    if not data:
        raise UnreadablePaperError("corrupt or truncated PDF: the file is empty")
    if b"%PDF-" not in data[:1024]:
        raise UnreadablePaperError("corrupt or truncated PDF: no '%PDF-' header, so this is not a PDF file")
    if b"%%EOF" not in data[-65536:]:
        raise UnreadablePaperError(
            f"corrupt or truncated PDF: the file ends after {len(data)} bytes without its '%%EOF' marker, "
            "so it was cut short (an interrupted download?); download it again"
        )


def _open(data: bytes) -> pdfium.PdfDocument:
    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        code = getattr(exc, "err_code", None)
        if code == pdfium_c.FPDF_ERR_PASSWORD:
            raise UnreadablePaperError(
                "encrypted: password needed to open this PDF; save an unprotected copy and read that"
            ) from exc
        if code == pdfium_c.FPDF_ERR_SECURITY:
            raise UnreadablePaperError(
                "encrypted: password needed, or an unsupported security handler; save an unprotected copy"
            ) from exc
        raise UnreadablePaperError(f"corrupt or truncated PDF: PDFium could not open it ({exc})") from exc


def _info_metadata(pdf: pdfium.PdfDocument) -> dict[str, str]:
    try:
        return {
            key: value
            for key, value in pdf.get_metadata_dict(skip_empty=True).items()
            if isinstance(value, str)
        }
    except pdfium.PdfiumError:
        return {}


# --- paragraphs, hyphens and headings ----------------------------------------------------------------


@dataclass(slots=True)
class _Block:
    kind: Literal["paragraph", "heading", "table"]
    lines: list[Line]
    text: str = ""

    @property
    def page(self) -> int:
        return self.lines[0].page


def _ends_with_hyphen(text: str) -> bool:
    """Whether a line ends in a hyphen that follows a word ("colorec-", "2'-", "(MSP)-"), not a dash."""
    return len(text) >= 2 and text.endswith(_LINE_END_HYPHENS) and (text[-2].isalnum() or text[-2] in "'’)]")


def _vocabulary(lines: list[Line]) -> Counter[str]:
    """How often each word (and each hyphenated compound) occurs, leaving out the pieces of words
    broken at a line end."""
    counts: Counter[str] = Counter()
    previous_hyphen = False
    for line in lines:
        words = _WORD.findall(line.text.casefold())
        hyphen = _ends_with_hyphen(line.text)
        if previous_hyphen and words:
            words = words[1:]
        if hyphen and words:
            words = words[:-1]
        previous_hyphen = hyphen
        for word in words:
            counts[word] += 1
            if "-" in word:
                counts.update(word.split("-"))
    return counts


def joins_line_break_hyphen(head: str, tail: str, vocabulary: Counter[str]) -> bool:
    """Whether the hyphen that ends a line after `head` (the word before it) is a hyphenation break
    to be removed before `tail` (the next line's first word), by the document's own evidence."""
    if head.endswith("\u00ad"):
        return True
    head = head.rstrip("".join(_LINE_END_HYPHENS)).lstrip(_OPENERS)
    if not tail or not tail[0].isalpha() or not tail[0].islower() or not head:
        return False
    last = head.rsplit("-", 1)[-1]
    if not last or any(char.isdigit() for char in last) or any(char.isupper() for char in last[1:]):
        return False
    tail_word = tail.split("-", 1)[0]
    joined = (last + tail_word).casefold()
    hyphenated = f"{last}-{tail_word}".casefold()
    if vocabulary[hyphenated] != vocabulary[joined]:
        return vocabulary[joined] > vocabulary[hyphenated]
    return not (vocabulary[last.casefold()] and vocabulary[tail_word.casefold()])


def _join_lines(lines: list[Line], vocabulary: Counter[str]) -> str:
    text = lines[0].text
    for line in lines[1:]:
        following = line.text
        if _ends_with_hyphen(text):
            if joins_line_break_hyphen(text.rsplit(None, 1)[-1], _first_word(following), vocabulary):
                text = text[:-1] + following
            else:
                text += following
        elif text.endswith(("–", "—", "/")):
            text += following
        else:
            text += " " + following
    return text


def _first_word(text: str) -> str:
    match = _WORD.match(text.lstrip(_OPENERS))
    return match.group() if match else ""


@dataclass(frozen=True, slots=True)
class _Typography:
    """The body text's size, weight and usual line pitch."""

    size: float
    bold: bool
    pitch: float


def _typography(lines: list[Line]) -> _Typography:
    weights: Counter[tuple[float, bool]] = Counter()
    for line in lines:
        weights[(round(line.size * 2) / 2, line.bold)] += len(line.text)
    (size, bold), _ = weights.most_common(1)[0]
    pitches = [
        previous.bottom - line.bottom
        for previous, line in pairwise(lines)
        if line.page == previous.page
        and line.band == previous.band
        and line.region == previous.region
        and abs(line.size - size) < 0.3
        and abs(previous.size - size) < 0.3
        and 0 < previous.bottom - line.bottom < 3 * size
    ]
    pitches.sort()
    pitch = pitches[len(pitches) // 2] if pitches else 1.2 * size
    return _Typography(size, bold, pitch)


def _is_styled(line: Line, body: _Typography) -> bool:
    return (line.bold and not body.bold) or line.size >= _HEADING_SIZE * body.size


def _heading_kind(line: Line, body: _Typography) -> Literal["known", "numbered", "styled"] | None:
    """Whether a line is a heading, and by which sign."""
    text = line.text.strip()
    if (
        line.is_table_row
        or len(text) > 120
        or len(text.split()) > _MAX_HEADING_WORDS
        or not (text[:1].isupper() or text[:1].isdigit())
        or _CAPTION.match(text)
    ):
        return None
    styled = _is_styled(line, body) and line.size >= 0.95 * body.size
    ends_like_prose = text.endswith((".", ",", ";")) and not styled
    if is_known_heading(text) and not ends_like_prose:
        return "known"
    if styled and _NUMBERED_HEADING.match(text):
        return "numbered"
    if styled and not text.endswith((".", ",", ";")):
        return "styled"
    return None


def _starts_paragraph(previous: Line, line: Line, body: _Typography) -> bool:
    """Whether `line` starts a new paragraph rather than continuing the one `previous` ends."""
    if abs(line.size - previous.size) > 0.04 * max(line.size, previous.size) or (
        line.bold != previous.bold and (_is_styled(line, body) or _is_styled(previous, body))
    ):
        return True
    indent = line.left - line.column_left
    indented = _INDENT_EM[0] * line.size < indent < _INDENT_EM[1] * line.size
    previous_indented = previous.left - previous.column_left > _INDENT_EM[0] * previous.size
    ends_sentence = previous.text.rstrip().endswith(_TERMINAL)
    # A first-line indent; but a list entry's second line is indented under the entry's marker.
    if indented and not previous_indented and not _LIST_ITEM.match(previous.text):
        return True
    if _LIST_ITEM.match(line.text) and ends_sentence:  # the next entry of a list
        return True
    same_place = line.page == previous.page and line.band == previous.band and line.region == previous.region
    # In place, the vertical step and the indent tell; a short last line only when it is very short
    # (ragged-right text has lines of 75% and more). Across columns and pages, only the line ends tell.
    short = _SHORT_LINE_SHARE if not same_place else _VERY_SHORT_LINE_SHARE
    width = previous.column_right - previous.column_left
    if ends_sentence and previous.right - previous.column_left < short * width:
        return True
    if same_place:
        step = previous.bottom - line.bottom
        return step > _PARAGRAPH_PITCH * body.pitch * line.size / body.size or step < 0
    return False


def _blocks(lines: list[Line], body: _Typography, title_lines: set[int]) -> list[_Block]:
    """Lines grouped into headings, paragraphs and tables (lines given by index in `title_lines` are
    left out: the title is taken separately)."""
    blocks: list[_Block] = []
    seen_structure = False  # a known or numbered heading has been met: styled lines may head sections
    for index, line in enumerate(lines):
        if index in title_lines:
            continue
        kind = _heading_kind(line, body)
        if kind in ("known", "numbered"):
            seen_structure = True
        elif kind == "styled" and not seen_structure and line.page == 0:
            kind = None
        previous = blocks[-1] if blocks else None
        if kind is not None:
            if (
                previous is not None
                and previous.kind == "heading"
                and kind == "styled"
                and previous.lines[-1].page == line.page
                and previous.lines[-1].size == line.size
                and previous.lines[-1].band == line.band
                and 0 < previous.lines[-1].bottom - line.bottom < 1.5 * body.pitch * line.size / body.size
            ):
                previous.lines.append(line)  # a heading over two lines
            else:
                blocks.append(_Block("heading", [line]))
        elif line.is_table_row:
            if previous is not None and previous.kind == "table":
                previous.lines.append(line)
            else:
                blocks.append(_Block("table", [line]))
        elif (
            previous is not None
            and previous.kind == "paragraph"
            and not _starts_paragraph(previous.lines[-1], line, body)
        ):
            previous.lines.append(line)
        else:
            blocks.append(_Block("paragraph", [line]))
    return blocks


# --- the paper ---------------------------------------------------------------------------------------


def _title_lines(lines: list[Line], body: _Typography, page_height: float) -> list[int]:
    """Indexes of the title's lines: the largest text in the upper part of page 1."""
    candidates = [
        index
        for index, line in enumerate(lines)
        if line.page == 0
        and line.size >= _TITLE_SIZE * body.size
        and line.top > page_height / 3
        and not line.is_table_row
    ]
    if not candidates:
        return []
    groups: list[list[int]] = []
    for index in candidates:
        if (
            groups
            and groups[-1][-1] == index - 1
            and abs(lines[index].size - lines[groups[-1][-1]].size) < 0.05 * lines[index].size
        ):
            groups[-1].append(index)
        else:
            groups.append([index])

    def rank(group: list[int]) -> tuple[bool, float]:
        words = sum(len(lines[index].text.split()) for index in group)
        return words >= 3, lines[group[0]].size

    return max(groups, key=rank)


def _looks_like_title(value: str | None) -> bool:
    if not value:
        return False
    value = value.strip()
    return 10 <= len(value) <= 400 and len(value.split()) >= 3 and not _FILENAME_TITLE.search(value)


def _block_text(block: _Block, vocabulary: Counter[str]) -> str:
    if block.kind == "table":
        return "\n".join(line.text for line in block.lines)
    if block.kind == "heading":
        return " ".join(line.text for line in block.lines)
    return _join_lines(block.lines, vocabulary)


def _paper_from_pages(pages: list[PageText], info: dict[str, str], page_count: int) -> ReadPaper:
    # Identifiers often stand in running headers and footers: look before they go.
    first_pages = "\n".join(
        segment.text for page in pages[:2] for row in page.rows for segment in row.segments
    )
    _check_text_layer(pages, page_count)
    strip_running_lines(pages)
    lines = [line for page in pages for line in page_lines(page, band_base=1000 * page.number)]
    if not lines:
        raise UnreadablePaperError(
            "no text layer: scanned, needs OCR (only running headers and page numbers)"
        )
    body = _typography(lines)
    vocabulary = _vocabulary(lines)
    title_indexes = _title_lines(lines, body, pages[0].height)
    blocks = _blocks(lines, body, set(title_indexes))
    for block in blocks:
        block.text = _block_text(block, vocabulary)
    logger.debug(
        "%d pages: %d lines, %d blocks, body text %.1f pt%s",
        page_count,
        len(lines),
        len(blocks),
        body.size,
        " bold" if body.bold else "",
    )
    info_title = info.get("Title", "").strip()
    shown_title = " ".join(lines[index].text for index in title_indexes)
    builder = _document(blocks, shown_title or (info_title if _looks_like_title(info_title) else ""))
    metadata = (
        PaperMetadata(title=info_title if _looks_like_title(info_title) else shown_title or None)
        .merged_with(identifiers_in_text(first_pages))
        .merged_with(PaperMetadata(doi=clean_doi(" ".join(info.values()))))
    )
    return ReadPaper(
        text=builder.text(),
        sections=builder.sections(),
        metadata=metadata,
        format="pdf",
        reader=READER,
        pages=page_count,
    )


def _check_text_layer(pages: list[PageText], page_count: int) -> None:
    letters = sum(
        len(_LETTERS.findall(segment.text)) for page in pages for row in page.rows for segment in row.segments
    )
    if letters < _MIN_LETTERS_PER_PAGE * page_count:
        raise UnreadablePaperError(
            f"no text layer: scanned, needs OCR ({page_count} page{'s' * (page_count != 1)}, "
            f"{letters} letters of text); run OCR (e.g. ocrmypdf) and read the result"
        )


def _document(blocks: list[_Block], title: str) -> DocumentBuilder:
    """The paper's sections: the title with the front matter (the short blocks on page 1 before the
    first heading), unheaded lead text (its first block the abstract when no heading names one),
    then one section per heading."""
    builder = DocumentBuilder()
    first_heading = next(
        (number for number, block in enumerate(blocks) if block.kind == "heading"), len(blocks)
    )
    lead = blocks[:first_heading]
    front_end = 0
    while front_end < len(lead) and lead[front_end].page == 0 and len(lead[front_end].text.split()) < 40:
        front_end += 1
    builder.add(title, "\n\n".join(block.text for block in lead[:front_end]), role="title")
    rest = lead[front_end:]
    has_abstract = any(
        block.kind == "heading" and role_of_heading(block.text) == "abstract" for block in blocks
    )
    if rest and not has_abstract and rest[0].page == 0 and first_heading < len(blocks):
        builder.add("", rest[0].text, role="abstract")
        rest = rest[1:]
    builder.add("", "\n\n".join(block.text for block in rest), role="body")
    heading: str | None = None
    section: list[str] = []
    for block in blocks[first_heading:]:
        if block.kind == "heading":
            if heading is not None:
                builder.add(heading, "\n\n".join(section))
            heading, section = block.text, []
        else:
            section.append(block.text)
    if heading is not None:
        builder.add(heading, "\n\n".join(section))
    return builder
