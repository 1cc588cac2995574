"""A PDF page as ordered lines, read through PDFium: runs, rows, segments, columns and bands.

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
there go too (`strip_running_lines`).

Reading order (`page_lines`). A page has two columns when a vertical *gutter* (the widest strip, in
the middle 40% of the text width, that the fewest segments cross) has at least three column-wide
lines on each side. Rows are then *full* (a segment crosses the gutter, or the row is a table row:
several cells on one side and nothing where the right column starts) or *split*. Consecutive split
rows are a band, read left column first, then right; full rows are read where they stand, so a
full-width title, abstract or table above or between two-column bands keeps its place. Each `Line`
keeps its page, region, band and column edges: `methyl_distill.readers.pdf` makes blocks of them.
"""

from __future__ import annotations

import ctypes
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby, pairwise, repeat
from typing import Literal

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from methyl_distill.readers.document import UnreadablePaperError

# Geometry, in font sizes (em) unless said otherwise.
_SEGMENT_GAP_EM = 0.8  # runs closer than this are one segment; wider gaps separate cells or columns
_WORD_GAP_EM = 0.12  # a gap wider than this between two runs is a word space
_MARGIN_ZONE = 0.08  # the outer share of the page height where running headers and footers stand
_GUTTER_WINDOW = (0.3, 0.7)  # where a gutter may lie, as shares of the text width
_COLUMN_LINE_SHARE = 0.3  # a line at least this share of the text width is a column's text line
_MIN_COLUMN_LINES = 3

_BOLD_FONT = re.compile(r"bold|black|heavy|semibold|demi|cmbx|[-,]bd\b", re.IGNORECASE)
_FORCE_BOLD_FLAG = 0x40000
_HYPHEN_MARKS = "\ufffe\x02-\u00ad"  # PDFium marks a hyphen it takes for a line-end one with U+FFFE
_PDFIUM_HYPHEN = str.maketrans({"\ufffe": "-", "\x02": "-", "\r": " ", "\n": " ", "\x00": None})
_DIGITS = re.compile(r"\d+")
_PAGE_NUMBER = re.compile(r"^(?:page\s*)?[-–—]?\s*(?:#|[ivxlc]{1,6})\s*[-–—]?(?:\s*(?:of|/)\s*#)?$")


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
class Segment:
    """Runs side by side on one row, close enough to read as one piece of text."""

    text: str
    left: float
    right: float
    top: float
    bottom: float
    size: float
    bold: bool


@dataclass(slots=True)
class Row:
    """Runs whose boxes overlap vertically, as segments from left to right."""

    top: float
    bottom: float
    segments: list[Segment]


@dataclass(slots=True)
class Line:
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


@dataclass
class PageText:
    """One page's rows (running headers and footers still in), its height and number."""

    number: int
    height: float
    rows: list[Row] = field(default_factory=list)


# --- a page's runs and rows --------------------------------------------------------------------------


def read_page(pdf: pdfium.PdfDocument, index: int) -> PageText:
    """Page `index`'s rows, read in the direction most of its text runs."""
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
    return PageText(number=index, height=height if turn == 0 else width, rows=_rows(runs))


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


def _rows(runs: list[_Run]) -> list[Row]:
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
    return [Row(top=span[0], bottom=span[1], segments=_segments(members)) for span, members in groups]


def _segments(runs: list[_Run]) -> list[Segment]:
    runs.sort(key=lambda run: run.left)
    segments: list[Segment] = []
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


def _segment(runs: list[_Run]) -> Segment:
    text = runs[0].text
    for previous, run in pairwise(runs):
        gap = run.left - previous.right
        text += (" " if gap > _WORD_GAP_EM * run.size else "") + run.text
    main = max(runs, key=lambda run: len(run.text))
    return Segment(
        text,
        runs[0].left,
        max(run.right for run in runs),
        max(run.top for run in runs),
        min(run.bottom for run in runs),
        main.size,
        main.bold,
    )


# --- running headers and footers ---------------------------------------------------------------------


def _margin_key(text: str) -> str:
    return " ".join(_DIGITS.sub("#", text.casefold()).split())


def strip_running_lines(pages: list[PageText]) -> None:
    """Remove running headers, footers and page numbers from the pages' rows, in place."""
    seen_on: defaultdict[str, set[int]] = defaultdict(set)
    candidates: list[tuple[PageText, Row]] = []
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


def _page_columns(rows: list[Row]) -> _Columns:
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


def _gutter(segments: list[Segment], low: float, high: float) -> tuple[float, int] | None:
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


def page_lines(page: PageText, band_base: int) -> list[Line]:
    """The page's lines in reading order: full rows where they stand, split bands left then right."""
    if not page.rows:
        return []
    columns = _page_columns(page.rows)
    if columns.gutter is None:
        return [_line(row, row.segments, page.number, "full", band_base, columns.full) for row in page.rows]
    lines: list[Line] = []
    band: list[Row] = []
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


def _is_full_row(row: Row, columns: _Columns) -> bool:
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


def _band_lines(rows: list[Row], columns: _Columns, page: int, band: int) -> list[Line]:
    gutter = columns.gutter
    assert gutter is not None
    left: list[Line] = []
    right: list[Line] = []
    for row in rows:
        on_left = [segment for segment in row.segments if segment.right <= gutter]
        on_right = [segment for segment in row.segments if segment.left >= gutter]
        if on_left:
            left.append(_line(row, on_left, page, "left", band, columns.left))
        if on_right:
            right.append(_line(row, on_right, page, "right", band, columns.right))
    return left + right


def _line(
    row: Row, segments: list[Segment], page: int, region: Region, band: int, column: tuple[float, float]
) -> Line:
    main = max(segments, key=lambda segment: len(segment.text))
    return Line(
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
