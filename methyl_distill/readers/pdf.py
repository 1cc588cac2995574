"""PDF papers: the text in reading order, with its sections and identifiers, read through PDFium.

The model, bottom up. PDFium's text page lists a page's characters in content order and ties each to
the text object (one text-showing operator) that drew it. The characters of one text object, with
the spaces PDFium generated between them, are a *run*: one box, one font size (the font's size times
the scale of the character's matrix), bold or not. Runs whose boxes overlap vertically are a *row*;
inside a row, runs closer than about a word space are one *segment*, and wider gaps separate
segments (table cells, or the two columns). A page is read in the direction most of its text runs,
so a landscape table drawn turned on a portrait page reads upright; text turned otherwise (margin
stamps, axis labels) is left out.

Running headers and footers are rows in the outer 8% of the page height whose text, digits made
'#', repeats on another page ("Page 3 of 12", "Epigenetics 12 (2024) 45-52"); lone page numbers
there go too.

Reading order. A page has two columns when a vertical *gutter* (the widest strip, in the middle 40%
of the text width, that the fewest segments cross) has at least three column-wide lines on each
side. Rows are then *full* (a segment crosses the gutter, or the row is a table row: several cells
on one side and nothing where the right column starts) or *split*. Consecutive split rows are a
band, read left column first, then right; full rows are read where they stand, so a full-width
title, abstract or table above or between two-column bands keeps its place.

Lines then become blocks: a new paragraph starts after a larger vertical gap than the usual line
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

import ctypes
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby, pairwise, repeat
from typing import Literal

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from methyl_distill.readers.document import (
    DocumentBuilder,
    PaperMetadata,
    ReadPaper,
    UnreadablePaperError,
    clean_doi,
    heading_key,
    identifiers_in_text,
    role_of_heading,
)

logger = logging.getLogger(__name__)

READER = "pdf/1"

# Geometry, in font sizes (em) unless said otherwise.
_SEGMENT_GAP_EM = 0.8  # runs closer than this are one segment; wider gaps separate cells or columns
_WORD_GAP_EM = 0.12  # a gap wider than this between two runs is a word space
_MARGIN_ZONE = 0.08  # the outer share of the page height where running headers and footers stand
_GUTTER_WINDOW = (0.3, 0.7)  # where a gutter may lie, as shares of the text width
_COLUMN_LINE_SHARE = 0.3  # a line at least this share of the text width is a column's text line
_MIN_COLUMN_LINES = 3
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

_KNOWN_BODY_HEADINGS = frozenset(
    {
        "introduction",
        "background",
        "methods",
        "materials and methods",
        "material and methods",
        "patients and methods",
        "methods and materials",
        "experimental procedures",
        "results",
        "results and discussion",
        "discussion",
        "conclusion",
        "conclusions",
        "limitations",
        "statistical analysis",
        "supplementary material",
        "supplementary information",
        "supplementary data",
        "data availability",
        "data availability statement",
        "abbreviations",
        "keywords",
    }
)
_NUMBERED_HEADING = re.compile(r"^(?:\d{1,2}(?:\.\d{1,2})*\.?|[IVX]{1,5}\.)\s+[A-Z][^.!?]*$")
_CAPTION = re.compile(r"^(?:Supplementary\s+)?(?:Table|Figure|Fig\.?)\s*S?\d", re.IGNORECASE)
_LIST_ITEM = re.compile(r"^(?:\[\d{1,3}\]|\d{1,3}\.|[•▪◦‣∙·–])\s")
_BOLD_FONT = re.compile(r"bold|black|heavy|semibold|demi|cmbx|[-,]bd\b", re.IGNORECASE)
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*(?:-[^\W_]+(?:['’][^\W_]+)*)*")
_LINE_END_HYPHENS = ("-", "\u2010", "\u00ad")
_HYPHEN_MARKS = "\ufffe\x02-\u00ad"  # PDFium marks a hyphen it takes for a line-end one with U+FFFE
_PDFIUM_HYPHEN = str.maketrans({"\ufffe": "-", "\x02": "-", "\r": " ", "\n": " ", "\x00": None})
_DIGITS = re.compile(r"\d+")
_LETTERS = re.compile(r"[^\W\d_]")
_PAGE_NUMBER = re.compile(r"^(?:page\s*)?[-–—]?\s*(?:#|[ivxlc]{1,6})\s*[-–—]?(?:\s*(?:of|/)\s*#)?$")
_FILENAME_TITLE = re.compile(
    r"\.(?:pdf|docx?|rtf|tex|dvi|indd|qxd|ps|eps)$|^microsoft word|^untitled|^title$|^doi:|^\d+$|[\\/]",
    re.IGNORECASE,
)
_FORCE_BOLD_FLAG = 0x40000
_OPENERS = "([{\"'“‘"
_TERMINAL = (".", "!", "?", ":", ".)", ".”", '."')


def _address_returning(name: str, *arguments: type) -> Callable[..., int | None]:
    """PDFium's function `name`, which returns a pointer, returning it as a plain address (None for
    NULL): ctypes then makes no pointer object per call."""
    address = ctypes.cast(getattr(pdfium_c, name), ctypes.c_void_p).value
    if address is None:
        raise ImportError(f"PDFium has no {name}")
    return ctypes.CFUNCTYPE(ctypes.c_void_p, *arguments)(address)


# Called once per character: the text object that drew it (text page, character index).
_GET_TEXT_OBJECT = _address_returning("FPDFText_GetTextObject", ctypes.c_void_p, ctypes.c_int)
# A text object's font: the key under which a font's weight is looked up once per page.
_GET_FONT = _address_returning("FPDFTextObj_GetFont", ctypes.c_void_p)

Region = Literal["full", "left", "right"]


# --- pieces of a page --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Run:
    """The characters one text object drew; the box is in the frame where its text runs left to
    right (`turn`: 0 upright, 90 drawn upwards, -90 drawn downwards)."""

    text: str
    left: float
    bottom: float
    right: float
    top: float
    size: float
    bold: bool
    turn: int = 0


@dataclass(slots=True)
class _Segment:
    """Runs side by side on one row, close enough to read as one piece of text."""

    text: str
    left: float
    right: float
    top: float
    bottom: float
    size: float
    bold: bool


@dataclass(slots=True)
class _Row:
    """Runs whose boxes overlap vertically, as segments from left to right."""

    top: float
    bottom: float
    segments: list[_Segment]


@dataclass(slots=True)
class _Line:
    """What is read as one line: a segment, or the cells of a table row."""

    cells: list[str]
    left: float
    right: float
    top: float
    bottom: float
    size: float
    bold: bool
    page: int
    region: Region
    band: int
    column_left: float
    column_right: float

    @property
    def text(self) -> str:
        return " | ".join(self.cells)

    @property
    def is_table_row(self) -> bool:
        return len(self.cells) > 1


@dataclass(slots=True)
class _Block:
    kind: Literal["paragraph", "heading", "table"]
    lines: list[_Line]
    text: str = ""

    @property
    def page(self) -> int:
        return self.lines[0].page


@dataclass
class _PageText:
    """One page's rows (running headers and footers still in), its height and number."""

    number: int
    height: float
    rows: list[_Row] = field(default_factory=list)


# --- reading the file --------------------------------------------------------------------------------


def read_pdf(data: bytes) -> ReadPaper:
    """A PDF's text in reading order, sections and identifiers; `UnreadablePaperError` if unusable."""
    _check_file_shape(data)
    pdf = _open(data)
    try:
        page_count = len(pdf)
        if page_count == 0:
            raise UnreadablePaperError("corrupt or truncated PDF: it has no pages")
        pages = [_read_page(pdf, index) for index in range(page_count)]
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


def _read_page(pdf: pdfium.PdfDocument, index: int) -> _PageText:
    try:
        page = pdf[index]
    except pdfium.PdfiumError as exc:
        raise UnreadablePaperError(
            f"corrupt or truncated PDF: page {index + 1} cannot be loaded ({exc})"
        ) from exc
    try:
        width, height = page.get_size()
        textpage = page.get_textpage()
        try:
            runs = list(_page_runs(textpage, width, height))
        finally:
            textpage.close()
    finally:
        page.close()
    # A page is read in the direction most of its text runs: a landscape table drawn turned on a
    # portrait page is read turned upright, and turned margin stamps on an upright page are left out.
    letters: Counter[int] = Counter()
    for run in runs:
        letters[run.turn] += len(run.text)
    turn = max(letters, key=lambda turn: (letters[turn], turn == 0)) if letters else 0
    runs = [run for run in runs if run.turn == turn]
    return _PageText(number=index, height=height if turn == 0 else width, rows=_rows(runs))


def _page_runs(textpage: pdfium.PdfTextPage, width: float, height: float) -> Iterator[_Run]:
    """The page's runs: for each text object, its characters with the spaces PDFium put between them.

    Text objects that PDFium found touching (nothing generated between them) in one font are
    measured as one run when their ends lie on one line: producers that draw every glyph as an
    object of its own would otherwise cost a run per character."""
    count = textpage.count_chars()
    if count <= 0:
        return
    handle = textpage.raw
    address = ctypes.cast(handle, ctypes.c_void_p).value
    objects = list(map(_GET_TEXT_OBJECT, repeat(address, count), range(count)))
    text = textpage.get_text_range(0, count)
    if len(text) != count:  # characters outside the BMP, or ones PDFium leaves out: one at a time
        text = "".join(chr(pdfium_c.FPDFText_GetUnicode(handle, index) or 0xFFFD) for index in range(count))
    measurer = _RunMeasurer(handle, text, objects, width, height)
    spans = _object_spans(objects)
    index = 0
    while index < len(spans):
        last = _touching_until(spans, index, text, objects)
        if last == index:
            run = measurer.run(*spans[index])
        else:
            run = measurer.run(spans[index][0], spans[last][1], one_line=True)
            if run is None:  # not one line after all: each object on its own
                yield from filter(None, (measurer.run(*span) for span in spans[index : last + 1]))
        if run is not None:
            yield run
        index = last + 1


def _touching_until(
    spans: list[tuple[int, int]], index: int, text: str, objects: Sequence[int | None]
) -> int:
    """The index of the last span from `index` on that touches the one before it in the same font
    (a line-end hyphen, where PDFium drops the line break, ends the chain)."""
    last = index
    font: int | None = None
    while (
        last + 1 < len(spans)
        and spans[last + 1][0] == spans[last][1]
        and text[spans[last][1] - 1] not in _HYPHEN_MARKS
    ):
        if font is None:
            font = _GET_FONT(objects[spans[index][0]])
        if _GET_FONT(objects[spans[last + 1][0]]) != font:
            break
        last += 1
    return last


def _object_spans(objects: Sequence[int | None]) -> list[tuple[int, int]]:
    """(start, end) of each run: consecutive characters of one text object, generated characters
    (spaces PDFium inserted, object None) between two characters of the same object included."""
    groups: list[tuple[int | None, int, int]] = []
    position = 0
    for obj, members in groupby(objects):
        length = len(list(members))
        groups.append((obj, position, position + length))
        position += length
    spans: list[tuple[int, int]] = []
    index = 0
    while index < len(groups):
        obj, start, end = groups[index]
        if obj is None:
            index += 1
            continue
        while index + 2 < len(groups) and groups[index + 1][0] is None and groups[index + 2][0] == obj:
            end = groups[index + 2][2]
            index += 2
        spans.append((start, end))
        index += 1
    return spans


class _RunMeasurer:
    """Boxes, sizes and weights of one text page's runs, with the structures PDFium fills made once
    and each font's weight looked up once."""

    def __init__(
        self, handle: object, text: str, objects: Sequence[int | None], width: float, height: float
    ) -> None:
        self.handle = handle
        self.text = text
        self.objects = objects
        self.width = width
        self.height = height
        self.matrix = pdfium_c.FS_MATRIX()
        self.first_box = pdfium_c.FS_RECTF()
        self.last_box = pdfium_c.FS_RECTF()
        self.bold_fonts: dict[int | None, bool] = {}

    def run(self, start: int, end: int, one_line: bool = False) -> _Run | None:
        """The run of characters `start`..`end`; None for white space, for text turned other than by
        a right angle, and (with `one_line`) when its first and last characters do not stand on one
        line."""
        piece = self.text[start:end]
        stripped = piece.strip()
        if not stripped:
            return None
        first = start + (len(piece) - len(piece.lstrip()))
        last = start + len(piece.rstrip()) - 1
        handle, matrix, first_box, last_box = self.handle, self.matrix, self.first_box, self.last_box
        pdfium_c.FPDFText_GetMatrix(handle, first, matrix)
        a, b = matrix.a, matrix.b
        if abs(b) <= 0.1 * abs(a) and a > 0:
            turn = 0
        elif abs(a) <= 0.1 * abs(b):
            turn = 90 if b > 0 else -90
        else:
            return None
        scale = abs(a * matrix.d - b * matrix.c) ** 0.5 or 1.0
        size = pdfium_c.FPDFText_GetFontSize(handle, first) * scale
        pdfium_c.FPDFText_GetLooseCharBox(handle, first, first_box)
        pdfium_c.FPDFText_GetLooseCharBox(handle, last, last_box)
        head = self._turned(first_box, turn)
        tail = head if last == first else self._turned(last_box, turn)
        if one_line and (
            min(head[3], tail[3]) - max(head[1], tail[1]) < 0.5 * min(head[3] - head[1], tail[3] - tail[1])
            or tail[2] < head[0]
        ):
            return None
        font = _GET_FONT(self.objects[start])
        bold = self.bold_fonts.get(font)
        if bold is None:
            bold = self.bold_fonts[font] = self._is_bold(first)
        top, bottom = max(head[3], tail[3]), min(head[1], tail[1])
        if top - bottom <= 0:
            top, bottom = bottom + size, bottom
        text = stripped.translate(_PDFIUM_HYPHEN)
        return _Run(text, min(head[0], tail[0]), bottom, max(head[2], tail[2]), top, size, bold, turn)

    def _turned(self, box: pdfium_c.FS_RECTF, turn: int) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) of a character box in the frame where its text runs left to
        right: the page turned so that text drawn upwards (90) or downwards (-90) stands upright."""
        if turn == 0:
            return box.left, box.bottom, box.right, box.top
        if turn == 90:
            return box.bottom, self.width - box.right, box.top, self.width - box.left
        return self.height - box.top, box.left, self.height - box.bottom, box.right

    def _is_bold(self, index: int) -> bool:
        name = ctypes.create_string_buffer(256)
        flags = ctypes.c_int(0)
        pdfium_c.FPDFText_GetFontInfo(self.handle, index, name, len(name), ctypes.byref(flags))
        return (
            bool(_BOLD_FONT.search(name.value.decode("latin-1")))
            or bool(flags.value & _FORCE_BOLD_FLAG)
            or pdfium_c.FPDFText_GetFontWeight(self.handle, index) >= 600
        )


def _rows(runs: list[_Run]) -> list[_Row]:
    """Runs grouped into rows (boxes overlapping by half the smaller height), top to bottom."""
    runs.sort(key=lambda run: (-run.top, run.left))
    groups: list[tuple[list[float], list[_Run]]] = []  # ([top, bottom] of the row's tallest run, runs)
    for run in runs:
        height = run.top - run.bottom
        for span, members in reversed(groups[-4:]):
            overlap = min(span[0], run.top) - max(span[1], run.bottom)
            if overlap >= 0.5 * min(height, span[0] - span[1]):
                members.append(run)
                if height > span[0] - span[1]:
                    span[0], span[1] = run.top, run.bottom
                break
        else:
            groups.append(([run.top, run.bottom], [run]))
    return [_Row(top=span[0], bottom=span[1], segments=_segments(members)) for span, members in groups]


def _segments(runs: list[_Run]) -> list[_Segment]:
    runs.sort(key=lambda run: run.left)
    segments: list[_Segment] = []
    pieces: list[_Run] = []
    right = 0.0
    for run in runs:
        if pieces and run.left - right > _SEGMENT_GAP_EM * max(run.size, pieces[-1].size):
            segments.append(_segment(pieces))
            pieces = []
        right = max(right, run.right) if pieces else run.right
        pieces.append(run)
    if pieces:
        segments.append(_segment(pieces))
    return segments


def _segment(runs: list[_Run]) -> _Segment:
    text = runs[0].text
    for previous, run in pairwise(runs):
        gap = run.left - previous.right
        text += (" " if gap > _WORD_GAP_EM * run.size else "") + run.text
    main = max(runs, key=lambda run: len(run.text))
    return _Segment(
        text,
        runs[0].left,
        max(run.right for run in runs),
        max(run.top for run in runs),
        min(run.bottom for run in runs),
        main.size,
        main.bold,
    )


def _info_metadata(pdf: pdfium.PdfDocument) -> dict[str, str]:
    try:
        return {
            key: value
            for key, value in pdf.get_metadata_dict(skip_empty=True).items()
            if isinstance(value, str)
        }
    except pdfium.PdfiumError:
        return {}


# --- running headers and footers ---------------------------------------------------------------------


def _margin_key(text: str) -> str:
    return " ".join(_DIGITS.sub("#", text.casefold()).split())


def _strip_running_lines(pages: list[_PageText]) -> None:
    """Remove running headers, footers and page numbers from the pages' rows, in place."""
    seen_on: defaultdict[str, set[int]] = defaultdict(set)
    candidates: list[tuple[_PageText, _Row]] = []
    for page in pages:
        zone = _MARGIN_ZONE * page.height
        for row in page.rows:
            middle = (row.top + row.bottom) / 2
            if middle > page.height - zone or middle < zone:
                candidates.append((page, row))
                for segment in row.segments:
                    seen_on[_margin_key(segment.text)].add(page.number)
    for page, row in candidates:
        row.segments = [
            segment
            for segment in row.segments
            if len(seen_on[key := _margin_key(segment.text)]) < 2 and not _PAGE_NUMBER.match(key)
        ]
        if not row.segments:
            page.rows.remove(row)


# --- reading order -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Columns:
    """A page's column geometry: the gutter's middle and the columns' edges (one column: gutter None)."""

    gutter: float | None
    left: tuple[float, float]
    right: tuple[float, float]
    full: tuple[float, float]


def _page_columns(rows: list[_Row]) -> _Columns:
    segments = [segment for row in rows for segment in row.segments]
    x_min = min(segment.left for segment in segments)
    x_max = max(segment.right for segment in segments)
    width = x_max - x_min
    wide = [segment for segment in segments if segment.right - segment.left >= _COLUMN_LINE_SHARE * width]
    full = (
        _mode(segment.left for segment in wide) if wide else x_min,
        _upper(segment.right for segment in wide) or x_max,
    )
    one_column = _Columns(None, full, full, full)
    gutter = _gutter(segments, x_min + _GUTTER_WINDOW[0] * width, x_min + _GUTTER_WINDOW[1] * width)
    if gutter is None:
        return one_column
    middle, crossing = gutter
    left_lines = [segment for segment in wide if segment.right <= middle]
    right_lines = [segment for segment in wide if segment.left >= middle]
    if min(len(left_lines), len(right_lines)) < _MIN_COLUMN_LINES or crossing > 0.5 * min(
        len(left_lines), len(right_lines)
    ):
        return one_column
    return _Columns(
        middle,
        (
            _mode(segment.left for segment in left_lines),
            _upper(segment.right for segment in left_lines) or middle,
        ),
        (
            _mode(segment.left for segment in right_lines),
            _upper(segment.right for segment in right_lines) or x_max,
        ),
        full,
    )


def _gutter(segments: list[_Segment], low: float, high: float) -> tuple[float, int] | None:
    """The middle of the widest strip between `low` and `high` that the fewest segments cross, and
    how many cross it."""
    events = sorted(
        [(segment.left, 1) for segment in segments] + [(segment.right, -1) for segment in segments]
    )
    coverage = 0
    strips: list[tuple[float, float, int]] = []
    previous = float("-inf")
    for x, change in events:
        start, end = max(previous, low), min(x, high)
        if end > start:
            strips.append((start, end, coverage))
        coverage += change
        previous = x
    if previous < high:
        strips.append((max(previous, low), high, coverage))
    if not strips:
        return None
    fewest = min(strip[2] for strip in strips)
    best: tuple[float, float] | None = None
    current: tuple[float, float] | None = None
    for start, end, count in strips:
        if count != fewest:
            current = None
            continue
        current = (
            (current[0], end) if current is not None and abs(current[1] - start) < 1e-6 else (start, end)
        )
        if best is None or current[1] - current[0] > best[1] - best[0]:
            best = current
    assert best is not None
    return (best[0] + best[1]) / 2, fewest


def _mode(values: Iterable[float]) -> float:
    counts = Counter(round(value) for value in values)
    return float(min(counts, key=lambda value: (-counts[value], value)))


def _upper(values: Iterable[float]) -> float | None:
    ordered = sorted(values)
    return ordered[int(0.9 * (len(ordered) - 1))] if ordered else None


def _page_lines(page: _PageText, band_base: int) -> list[_Line]:
    """The page's lines in reading order: full rows where they stand, split bands left then right."""
    if not page.rows:
        return []
    columns = _page_columns(page.rows)
    if columns.gutter is None:
        return [_line(row, row.segments, page.number, "full", band_base, columns.full) for row in page.rows]
    lines: list[_Line] = []
    band: list[_Row] = []
    band_number = band_base
    for row in page.rows:
        if _is_full_row(row, columns):
            if band:
                lines.extend(_band_lines(band, columns, page.number, band_number))
                band = []
                band_number += 1
            lines.append(_line(row, row.segments, page.number, "full", band_number, columns.full))
            band_number += 1
        else:
            band.append(row)
    if band:
        lines.extend(_band_lines(band, columns, page.number, band_number))
    return lines


def _is_full_row(row: _Row, columns: _Columns) -> bool:
    gutter = columns.gutter
    assert gutter is not None
    if any(segment.left < gutter - 0.5 and segment.right > gutter + 0.5 for segment in row.segments):
        return True
    left = [segment for segment in row.segments if segment.right <= gutter]
    right = [segment for segment in row.segments if segment.left >= gutter]
    if right and (len(left) > 1 or len(right) > 1):
        # Cells on both sides of the gutter, nothing where the right column's lines start: a table
        # across the page, not a row of two columns.
        return abs(right[0].left - columns.right[0]) > 1.5 * right[0].size
    return False


def _band_lines(rows: list[_Row], columns: _Columns, page: int, band: int) -> list[_Line]:
    gutter = columns.gutter
    assert gutter is not None
    left: list[_Line] = []
    right: list[_Line] = []
    for row in rows:
        on_left = [segment for segment in row.segments if segment.right <= gutter]
        on_right = [segment for segment in row.segments if segment.left >= gutter]
        if on_left:
            left.append(_line(row, on_left, page, "left", band, columns.left))
        if on_right:
            right.append(_line(row, on_right, page, "right", band, columns.right))
    return left + right


def _line(
    row: _Row, segments: list[_Segment], page: int, region: Region, band: int, column: tuple[float, float]
) -> _Line:
    main = max(segments, key=lambda segment: len(segment.text))
    return _Line(
        cells=[segment.text for segment in segments],
        left=segments[0].left,
        right=segments[-1].right,
        top=main.top,
        bottom=main.bottom,
        size=main.size,
        bold=main.bold,
        page=page,
        region=region,
        band=band,
        column_left=column[0],
        column_right=column[1],
    )


# --- paragraphs, hyphens and headings ----------------------------------------------------------------


def _ends_with_hyphen(text: str) -> bool:
    """Whether a line ends in a hyphen that follows a word ("colorec-", "2'-", "(MSP)-"), not a dash."""
    return len(text) >= 2 and text.endswith(_LINE_END_HYPHENS) and (text[-2].isalnum() or text[-2] in "'’)]")


def _vocabulary(lines: list[_Line]) -> Counter[str]:
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


def _join_lines(lines: list[_Line], vocabulary: Counter[str]) -> str:
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


def _typography(lines: list[_Line]) -> _Typography:
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


def _is_styled(line: _Line, body: _Typography) -> bool:
    return (line.bold and not body.bold) or line.size >= _HEADING_SIZE * body.size


def _heading_kind(line: _Line, body: _Typography) -> Literal["known", "numbered", "styled"] | None:
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
    key = heading_key(text)
    if (key in _KNOWN_BODY_HEADINGS or role_of_heading(text) != "body") and not ends_like_prose:
        return "known"
    if styled and _NUMBERED_HEADING.match(text):
        return "numbered"
    if styled and not text.endswith((".", ",", ";")):
        return "styled"
    return None


def _starts_paragraph(previous: _Line, line: _Line, body: _Typography) -> bool:
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


def _blocks(lines: list[_Line], body: _Typography, title_lines: set[int]) -> list[_Block]:
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


def _title_lines(lines: list[_Line], body: _Typography, page_height: float) -> list[int]:
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


def _paper_from_pages(pages: list[_PageText], info: dict[str, str], page_count: int) -> ReadPaper:
    # Identifiers often stand in running headers and footers: look before they go.
    first_pages = "\n".join(
        segment.text for page in pages[:2] for row in page.rows for segment in row.segments
    )
    _check_text_layer(pages, page_count)
    _strip_running_lines(pages)
    lines = [line for page in pages for line in _page_lines(page, band_base=1000 * page.number)]
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


def _check_text_layer(pages: list[_PageText], page_count: int) -> None:
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
