"""PDFs made in memory with reportlab, for the PDF reader's tests, its benchmark and the sample paper.

Every page is laid out here, line by line, so the tests know exactly what the reader should find:
a full-width front matter (title, authors, identifiers, abstract), then the body in two balanced
columns, with full-width tables between column bands, a running header and footer on every page.

Paragraph text carries break marks that decide where a line ends:

- `~` inside a word: the word is hyphenated there at a line end ("colorec~tal" is drawn "colorec-" /
  "tal" and reads "colorectal");
- `-|` after a real hyphen: the line ends at that hyphen ("methylation-|specific" is drawn
  "methylation-" / "specific" and reads "methylation-specific").

`expected_sections` gives what a faithful reader returns: each heading with its paragraphs, marks
resolved, table rows as cells joined by " | ".
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, replace

from reportlab.lib.pagesizes import A4
from reportlab.lib.pdfencrypt import StandardEncryption
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas

PAGE_WIDTH, PAGE_HEIGHT = A4
MARGIN = 56.0
CONTENT_TOP = PAGE_HEIGHT - 62.0
CONTENT_BOTTOM = 62.0
TEXT_WIDTH = PAGE_WIDTH - 2 * MARGIN
GUTTER = 18.0
COLUMN_WIDTH = (TEXT_WIDTH - GUTTER) / 2
RIGHT_COLUMN_X = MARGIN + COLUMN_WIDTH + GUTTER

BODY_FONT, BODY_SIZE, BODY_LEADING = "Times-Roman", 9.5, 11.5
HEADING_FONT, HEADING_SIZE = "Times-Bold", 10.0
TABLE_FONT, TABLE_SIZE = "Times-Roman", 9.0
SYLLABLE_BREAK = "~"
COMPOUND_BREAK = "-|"


# --- content ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Heading:
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str
    hanging: bool = False  # reference-list entries: continuation lines indented


@dataclass(frozen=True)
class Table:
    """A full-width table: a caption, then rows whose cells start at `column_offsets` from the margin."""

    caption: str
    rows: tuple[tuple[str, ...], ...]
    column_offsets: tuple[float, ...]


Block = Heading | Paragraph | Table


@dataclass(frozen=True)
class PaperContent:
    title: str
    authors: str
    affiliation: str
    identifiers: str
    abstract: tuple[str, ...]
    body: tuple[Block, ...]
    header_left: str = "Journal of Epigenetic Markers 7 (2024) 112–119"
    header_right: str = "Page {page} of {pages}"
    footer: str = "{page}"
    info_title: str | None = None
    paragraph_indent: float = 0.0
    paragraph_gap: float = 4.0


def resolve_marks(text: str) -> str:
    """Paragraph text as a reader should return it: hyphenation breaks joined, real hyphens kept."""
    return text.replace(COMPOUND_BREAK, "-").replace(SYLLABLE_BREAK, "")


def table_rows_text(table: Table) -> str:
    return "\n".join(" | ".join(row) for row in table.rows)


def expected_sections(content: PaperContent) -> list[tuple[str, list[str]]]:
    """(heading, paragraphs) in reading order after the title: 'Abstract' first, then the body's
    sections; a table is its caption and its rows (one paragraph, a row a line)."""
    sections: list[tuple[str, list[str]]] = [("Abstract", [resolve_marks(p) for p in content.abstract])]
    for block in content.body:
        if isinstance(block, Heading):
            sections.append((block.text, []))
        elif isinstance(block, Paragraph):
            sections[-1][1].append(resolve_marks(block.text))
        else:
            sections[-1][1].extend([block.caption, table_rows_text(block)])
    return sections


# --- layout -----------------------------------------------------------------------------------------


@dataclass
class _Line:
    text: str
    font: str
    size: float
    leading: float
    indent: float = 0.0
    justify_to: float | None = None  # stretch word spaces to fill this width


@dataclass
class _Space:
    height: float


_ColumnItem = _Line | _Space


@dataclass
class _DrawText:
    x: float
    baseline: float
    text: str
    font: str
    size: float
    word_space: float = 0.0


@dataclass
class _DrawRule:
    x1: float
    y: float
    x2: float


class PageLimitReached(Exception):
    """The layout was asked for more pages than it may make."""


def wrap_marked_text(text: str, font: str, size: float, width: float, first_indent: float = 0.0) -> list[str]:
    """Greedy line breaking that honours break marks: a marked word always ends its line at the mark."""
    lines: list[str] = []
    current = ""
    available = width - first_indent

    def fits(candidate: str) -> bool:
        return stringWidth(candidate, font, size) <= available

    def finish(line: str) -> None:
        nonlocal current, available
        lines.append(line)
        current = ""
        available = width

    for word in text.split():
        while True:
            mark = _first_mark(word)
            if mark is None:
                candidate = f"{current} {word}" if current else word
                if fits(candidate) or not current:
                    current = candidate
                else:
                    finish(current)
                    current = word
                break
            position, mark_text = mark
            head = word[:position] + "-" if mark_text == SYLLABLE_BREAK else word[: position + 1]
            candidate = f"{current} {head}" if current else head
            if not fits(candidate) and current:
                finish(current)
                candidate = head
            finish(candidate)
            word = word[position + len(mark_text) :]
            if not word:
                break
    if current:
        lines.append(current)
    return lines


def _first_mark(word: str) -> tuple[int, str] | None:
    marks = [(word.find(mark), mark) for mark in (COMPOUND_BREAK, SYLLABLE_BREAK) if mark in word]
    return min(marks) if marks else None


class _Layout:
    """Places lines on pages: full-width blocks at the cursor, column bands balanced between the two
    columns and continued on the next page when they do not fit."""

    def __init__(self, max_pages: int | None = None) -> None:
        self.pages: list[list[_DrawText | _DrawRule]] = [[]]
        self.y = CONTENT_TOP
        self.max_pages = max_pages
        self.band: list[_ColumnItem] = []

    def new_page(self) -> None:
        if self.max_pages is not None and len(self.pages) >= self.max_pages:
            raise PageLimitReached
        self.pages.append([])
        self.y = CONTENT_TOP

    def _draw(self, op: _DrawText | _DrawRule) -> None:
        self.pages[-1].append(op)

    def full_width_line(self, line: _Line, x: float = MARGIN) -> None:
        if self.y - line.leading < CONTENT_BOTTOM:
            self.new_page()
        self.y -= line.leading
        self._draw(
            _DrawText(x + line.indent, self.y + line.leading - line.size, line.text, line.font, line.size)
        )

    def full_width_paragraph(
        self, text: str, font: str, size: float, leading: float, centred: bool = False
    ) -> None:
        lines = wrap_marked_text(text, font, size, TEXT_WIDTH)
        for number, text_line in enumerate(lines):
            last = number == len(lines) - 1
            line = _Line(text_line, font, size, leading, justify_to=None if last or centred else TEXT_WIDTH)
            if centred:
                line.indent = (TEXT_WIDTH - stringWidth(text_line, font, size)) / 2
            self._place_line(line, MARGIN, self.y)
            self.y -= leading

    def space(self, height: float) -> None:
        self.y -= height

    def _place_line(self, line: _Line, x: float, top: float) -> None:
        if top - line.leading < CONTENT_BOTTOM:
            self.new_page()
            top = self.y
        word_space = 0.0
        if line.justify_to is not None and line.text.count(" "):
            slack = line.justify_to - line.indent - stringWidth(line.text, line.font, line.size)
            word_space = max(0.0, slack / line.text.count(" "))
            if word_space > 5.0:  # a line cut short by a break mark stays ragged
                word_space = 0.0
        self._draw(_DrawText(x + line.indent, top - line.size, line.text, line.font, line.size, word_space))

    # Column bands.

    def column_paragraph(self, text: str, indent: float, gap: float, hanging: bool = False) -> None:
        if gap:
            self.band.append(_Space(gap))
        first_indent = 0.0 if hanging else indent
        lines = wrap_marked_text(
            text, BODY_FONT, BODY_SIZE, COLUMN_WIDTH - (10.0 if hanging else 0.0), first_indent
        )
        for number, text_line in enumerate(lines):
            last = number == len(lines) - 1
            line_indent = (10.0 if hanging and number else 0.0) + (first_indent if number == 0 else 0.0)
            self.band.append(
                _Line(
                    text_line,
                    BODY_FONT,
                    BODY_SIZE,
                    BODY_LEADING,
                    indent=line_indent,
                    justify_to=None if last else COLUMN_WIDTH,
                )
            )

    def column_heading(self, text: str) -> None:
        self.band.append(_Space(7.0))
        self.band.append(_Line(text, HEADING_FONT, HEADING_SIZE, 13.0))
        self.band.append(_Space(2.0))

    def finish_band(self) -> None:
        items, self.band = self.band, []
        while items:
            while items and isinstance(items[0], _Space):
                items.pop(0)
            if not items:
                break
            available = self.y - CONTENT_BOTTOM
            total = sum(_height(item) for item in items)
            if total <= 2 * available - 2 * BODY_LEADING:
                left, right = _balanced_split(items)
                self._place_column(left, MARGIN)
                bottom_left = self.y - sum(_height(item) for item in left)
                self._place_column(right, RIGHT_COLUMN_X)
                bottom_right = self.y - sum(_height(item) for item in _drop_leading_spaces(right))
                self.y = min(bottom_left, bottom_right)
                return
            left, items = _take_height(items, available)
            right, items = _take_height(_drop_leading_spaces(items), available)
            self._place_column(left, MARGIN)
            self._place_column(right, RIGHT_COLUMN_X)
            self.new_page()

    def _place_column(self, items: list[_ColumnItem], x: float) -> None:
        top = self.y
        for item in _drop_leading_spaces(items):
            if isinstance(item, _Space):
                top -= item.height
                continue
            self._place_line(item, x, top)
            top -= item.leading

    def table(self, table: Table) -> None:
        self.finish_band()
        self.space(8.0)
        self.full_width_paragraph(table.caption, "Times-Bold", TABLE_SIZE, 11.0)
        self.space(2.0)
        self._draw(_DrawRule(MARGIN, self.y, MARGIN + TEXT_WIDTH))
        for number, row in enumerate(table.rows):
            if self.y - 12.0 < CONTENT_BOTTOM:
                self.new_page()
            self.y -= 12.0
            for offset, cell in zip(table.column_offsets, row, strict=True):
                font = "Times-Bold" if number == 0 else TABLE_FONT
                self._draw(_DrawText(MARGIN + offset, self.y + 3.0, cell, font, TABLE_SIZE))
            if number == 0:
                self._draw(_DrawRule(MARGIN, self.y, MARGIN + TEXT_WIDTH))
        self._draw(_DrawRule(MARGIN, self.y, MARGIN + TEXT_WIDTH))
        self.space(10.0)


def _height(item: _ColumnItem) -> float:
    return item.height if isinstance(item, _Space) else item.leading


def _drop_leading_spaces(items: list[_ColumnItem]) -> list[_ColumnItem]:
    start = 0
    while start < len(items) and isinstance(items[start], _Space):
        start += 1
    return items[start:]


def _balanced_split(items: list[_ColumnItem]) -> tuple[list[_ColumnItem], list[_ColumnItem]]:
    total = sum(_height(item) for item in items)
    height = 0.0
    for index, item in enumerate(items):
        height += _height(item)
        if height >= total / 2 and isinstance(item, _Line):
            return items[: index + 1], items[index + 1 :]
    return items, []


def _take_height(items: list[_ColumnItem], available: float) -> tuple[list[_ColumnItem], list[_ColumnItem]]:
    height = 0.0
    for index, item in enumerate(items):
        if height + _height(item) > available:
            return items[:index], items[index:]
        height += _height(item)
    return items, []


def _pieces_of(operation: _DrawText | _DrawRule, unit: str) -> list[_DrawText | _DrawRule]:
    """A line split into one drawing per word (`unit` "word") or per character ("glyph"), each at
    the place the whole line put it."""
    if isinstance(operation, _DrawRule):
        return [operation]
    pieces: list[_DrawText | _DrawRule] = []
    x = operation.x
    space = stringWidth(" ", operation.font, operation.size) + operation.word_space
    for word in operation.text.split(" "):
        for piece in [word] if unit == "word" else list(word):
            pieces.append(_DrawText(x, operation.baseline, piece, operation.font, operation.size))
            x += stringWidth(piece, operation.font, operation.size)
        x += space
    return pieces


def _lay_out(content: PaperContent, max_pages: int | None = None) -> list[list[_DrawText | _DrawRule]]:
    layout = _Layout(max_pages)
    try:
        layout.full_width_paragraph(content.title, "Helvetica-Bold", 16.0, 20.0)
        layout.space(6.0)
        layout.full_width_paragraph(content.authors, "Helvetica", 10.0, 13.0)
        layout.full_width_paragraph(content.affiliation, "Helvetica-Oblique", 8.0, 10.0)
        layout.full_width_paragraph(content.identifiers, "Helvetica", 8.0, 10.0)
        layout.space(10.0)
        layout.full_width_paragraph("Abstract", HEADING_FONT, HEADING_SIZE, 13.0)
        for paragraph in content.abstract:
            layout.full_width_paragraph(paragraph, BODY_FONT, 9.0, 11.0)
            layout.space(3.0)
        layout.space(10.0)
        for block in content.body:
            if isinstance(block, Heading):
                layout.column_heading(block.text)
            elif isinstance(block, Paragraph):
                layout.column_paragraph(
                    block.text, content.paragraph_indent, content.paragraph_gap, hanging=block.hanging
                )
            else:
                layout.table(block)
        layout.finish_band()
    except PageLimitReached:
        pass
    return layout.pages


def render_paper(
    content: PaperContent,
    *,
    max_pages: int | None = None,
    encrypt: StandardEncryption | None = None,
    word_objects: bool = False,
    glyph_objects: bool = False,
    shuffle_seed: int | None = None,
) -> bytes:
    """The paper as PDF bytes (deterministic: reportlab's invariant mode).

    `word_objects` draws every word as a text object of its own, `glyph_objects` every character
    (as some PDF producers do); `shuffle_seed` draws each page's pieces in a random order, so the
    content stream's order says nothing about the reading order."""
    pages = _lay_out(content, max_pages)
    if word_objects or glyph_objects:
        unit = "glyph" if glyph_objects else "word"
        pages = [
            [piece for operation in operations for piece in _pieces_of(operation, unit)]
            for operations in pages
        ]
    if shuffle_seed is not None:
        generator = random.Random(shuffle_seed)
        pages = [generator.sample(operations, len(operations)) for operations in pages]
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=A4, invariant=1, encrypt=encrypt)
    if content.info_title is not None:
        canvas.setTitle(content.info_title)
    canvas.setAuthor("methyl-distill test fixtures")
    for number, operations in enumerate(pages, start=1):
        names = {"page": number, "pages": len(pages)}
        canvas.setFont("Helvetica", 8.0)
        canvas.drawString(MARGIN, PAGE_HEIGHT - 36.0, content.header_left.format(**names))
        canvas.drawRightString(PAGE_WIDTH - MARGIN, PAGE_HEIGHT - 36.0, content.header_right.format(**names))
        canvas.drawCentredString(PAGE_WIDTH / 2, 34.0, content.footer.format(**names))
        canvas.setLineWidth(0.5)
        for operation in operations:
            if isinstance(operation, _DrawRule):
                canvas.line(operation.x1, operation.y, operation.x2, operation.y)
                continue
            text = canvas.beginText(operation.x, operation.baseline)
            text.setFont(operation.font, operation.size)
            text.setWordSpace(operation.word_space)  # word spacing outlives BT/ET: always set it
            text.textOut(operation.text)
            canvas.drawText(text)
        canvas.showPage()
    canvas.save()
    return buffer.getvalue()


# --- the two-column test paper ----------------------------------------------------------------------

TWO_COLUMN_TITLE = "MLH1 promoter methylation and LINE-1 hypomethylation in sporadic colorectal cancer"
TWO_COLUMN_DOI = "10.5555/jem.2024.0712"
TWO_COLUMN_PMID = "38012345"

TWO_COLUMN_PAPER = PaperContent(
    title=TWO_COLUMN_TITLE,
    authors="Lucie Moreau, Daniel Okafor, Mei Tanaka",
    affiliation="Department of Pathology, Example University Hospital, Lyon, France",
    identifiers=f"https://doi.org/{TWO_COLUMN_DOI} · PMID: {TWO_COLUMN_PMID} · Received 3 March 2024",
    info_title=TWO_COLUMN_TITLE,
    paragraph_indent=10.0,
    paragraph_gap=0.0,
    abstract=(
        "Silencing of the mismatch repair gene MLH1 by promoter hypermethylation causes most sporadic "
        "colorectal cancers with microsatellite instability. We measured MLH1 promoter methylation by "
        "methylation-specific PCR and LINE-1 methylation by pyrosequencing in 297 colorectal cancers. "
        "MLH1 was methylated in 39 of 48 tumours with high microsatellite instability (81.3%) and in 5 of "
        "212 stable tumours (2.4%). LINE-1 methylation was lower in stable tumours than in unstable ones.",
    ),
    body=(
        Heading("1. Introduction"),
        Paragraph(
            "About fifteen percent of colorec~tal cancers show high microsatellite instability. In most "
            "sporadic cases the cause is silencing of MLH1 by hyper~methylation of its CpG island, a "
            "CpG-|rich region that spans the promoter and the first exon. Methylation of this region "
            "switches off transcription in both alleles."
        ),
        Paragraph(
            "Global hypomethylation is measured at repeated elements. The LINE-|1 retrotransposon makes up "
            "about seventeen percent of the genome, and LINE-1 methylation is a common surrogate for the "
            "methylation level of the whole genome in tumour tissue."
        ),
        Paragraph(
            "Here we asked whether MLH1 methylation and LINE-1 hypomethylation mark distinct groups of "
            "sporadic tumours. We also compared the methylation-specific assay with bisulfite sequencing, "
            "which reads every CpG site in the amplicon but needs more DNA and more time."
        ),
        Heading("2. Materials and methods"),
        Heading("2.1. Tumour samples"),
        Paragraph(
            "We studied 297 primary colorectal cancers resected between 2015 and 2021. Tumour DNA was "
            "extracted from formalin-fixed tissue with at least seventy percent tumour cells and "
            "treated with sodium bisulfite. Cell lines were treated with 5-aza-|2'-deoxycytidine as "
            "controls for demethylation."
        ),
        Paragraph(
            "MLH1 methylation was scored by methylation-|specific PCR with primers for the proximal "
            "promoter. We confirmed the calls by bisulfite sequencing in twenty tumours. The methyl~ation "
            "level of LINE-1 was measured by pyrosequencing at four CpG sites."
        ),
        Paragraph(
            "Microsatellite status was determined with five mononucleotide markers. Tumours with two or "
            "more unstable markers were called unstable, and the CpG island methylator phenotype was "
            "scored with a panel of five genes. Germline testing was offered to every patient with an "
            "unstable tumour that lacked MLH1 methylation."
        ),
        Heading("Statistical analysis"),
        Paragraph(
            "Groups were compared with the Fisher exact test and the Mann-Whitney test. All tests were "
            "two-sided, and p values below 0.05 were taken as significant."
        ),
        Heading("3. Results"),
        Paragraph(
            "MLH1 was methylated in 39 of 48 tumours with high microsatellite instability (81.3%) and in 5 "
            "of 212 stable tumours (2.4%). Tumours with the CpG island methylator phenotype carried MLH1 "
            "methylation in 27 of 37 cases (72.9%)."
        ),
        Paragraph(
            "Mean LINE-1 methylation was 64.2% in unstable tumours and 70.9% in stable tumours (p < 0.001). "
            "No tumour with MLH1 methylation carried a germline mutation in the mismatch repair genes."
        ),
        Paragraph(
            "Methylation of MLH1 was more frequent in women and in tumours of the proximal colon. Patients "
            "with methylated tumours were older at diagnosis than patients with unmethylated tumours, with "
            "a median age of 74 years against 66 years. The results by subgroup are shown in Table 1."
        ),
        Table(
            caption="Table 1. MLH1 methylation and LINE-1 methylation by tumour subgroup.",
            rows=(
                ("Subgroup", "Tumours (n)", "MLH1 methylated (%)", "LINE-1 (%)"),
                ("MSI-high", "48", "81.3", "64.2"),
                ("MSS", "212", "2.4", "70.9"),
                ("CIMP-high", "37", "72.9", "66.1"),
            ),
            column_offsets=(0.0, 150.0, 290.0, 400.0),
        ),
        Heading("4. Discussion"),
        Paragraph(
            "MLH1 methylation explained most sporadic tumours with microsatellite instability in this "
            "series. The methylation-specific assay agreed with bisulfite sequencing in every tumour that "
            "we tested with both methods."
        ),
        Paragraph(
            "LINE-1 hypomethylation was more marked in stable tumours, which fits the view that global "
            "hypomethylation and chromosomal instability go together. Testing MLH1 methylation helps to "
            "separate sporadic cases from Lynch syndrome."
        ),
        Paragraph(
            "Our study has limits. The tumours came from one hospital, and LINE-1 pyrosequencing covers "
            "only a few CpG sites of a repeat that occurs many thousand times in the genome."
        ),
        Heading("5. Conclusions"),
        Paragraph(
            "MLH1 promoter methylation marks sporadic colorectal cancers with microsatellite instability, "
            "and LINE-1 hypomethylation marks stable tumours."
        ),
        Heading("Acknowledgements"),
        Paragraph(
            "We thank the pathology biobank staff for their help. The work was funded by grant EX-2024-17."
        ),
        Heading("References"),
        Paragraph(
            "1. Moreau L, Okafor D. Mismatch repair deficiency in colorectal cancer. Gut Epigenet. "
            "2021;4:10-19.",
            hanging=True,
        ),
        Paragraph(
            "2. Tanaka M, Moreau L. Repetitive element methylation as a marker of global DNA methylation. "
            "Epigenet Rep. 2022;9:200-208.",
            hanging=True,
        ),
    ),
)

# Real hyphenated words the layout breaks at their hyphen, in context: the hyphen must stay.
TWO_COLUMN_KEPT_HYPHENS = (
    "a CpG-rich region",
    "The LINE-1 retrotransposon",
    "with 5-aza-2'-deoxycytidine as",
    "by methylation-specific PCR with",
)
# Words the layout hyphenates at a line end, in context: the hyphen must go.
TWO_COLUMN_JOINED_WORDS = (
    "percent of colorectal cancers",
    "MLH1 by hypermethylation of its",
    "The methylation level of LINE-1",
)


def two_column_paper(
    info_title: str | None = TWO_COLUMN_TITLE,
    *,
    word_objects: bool = False,
    glyph_objects: bool = False,
    shuffle_seed: int | None = None,
) -> bytes:
    """A two-page two-column paper with the full-width title, abstract and table, running headers and
    footers, hyphenated line breaks, a reference list and acknowledgements."""
    return render_paper(
        replace(TWO_COLUMN_PAPER, info_title=info_title),
        word_objects=word_objects,
        glyph_objects=glyph_objects,
        shuffle_seed=shuffle_seed,
    )


def encrypted_paper(user_password: str = "secret", owner_password: str = "owner") -> bytes:
    """The two-column paper encrypted; with an empty user password it opens without one."""
    encryption = StandardEncryption(user_password, ownerPassword=owner_password, canPrint=1)
    return render_paper(TWO_COLUMN_PAPER, encrypt=encryption)


def truncated_paper() -> bytes:
    """The two-column paper cut in half, as an interrupted download leaves it."""
    data = two_column_paper()
    return data[: len(data) // 2]


def image_only_paper() -> bytes:
    """A 'scanned' page: a raster image of grey text-like bars and some shapes, no text at all."""
    from PIL import Image, ImageDraw
    from reportlab.lib.utils import ImageReader

    image = Image.new("L", (600, 800), 255)
    draw = ImageDraw.Draw(image)
    generator = random.Random(7)
    for row in range(60, 760, 14):
        x = 50
        while x < 540:
            width = generator.randint(15, 60)
            draw.rectangle((x, row, min(x + width, 550), row + 7), fill=generator.randint(30, 90))
            x += width + 6
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=A4, invariant=1)
    for _ in range(2):
        canvas.drawImage(ImageReader(image), 40, 60, width=PAGE_WIDTH - 80, height=PAGE_HEIGHT - 120)
        canvas.rect(30, 30, PAGE_WIDTH - 60, PAGE_HEIGHT - 60)
        canvas.circle(PAGE_WIDTH / 2, 45, 8, fill=1)
        canvas.showPage()
    canvas.save()
    return buffer.getvalue()


DEJAVU_SERIF = "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf"


def special_characters_paper() -> bytes | None:
    """One page in an embedded TrueType font with ligature characters, odd spaces and soft hyphens
    (one mid-word, one ending a line); None where the DejaVu font is not installed."""
    from pathlib import Path

    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    if not Path(DEJAVU_SERIF).is_file():
        return None
    pdfmetrics.registerFont(TTFont("DejaVuSerif", DEJAVU_SERIF))
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=A4, invariant=1)
    canvas.setFont("DejaVuSerif", 10)
    lines = (
        "The \ufb01rst e\ufb00ect of methylation was \ufb02agged in \ufb01ve o\ufb03ces "
        "at 5\u00a0mg\u2009per kg.",
        "Each sample was hy\u00adbridised overnight, and the co\u00ad",
        "hort was followed for\u202ffive years.",
    )
    for number, line in enumerate(lines):
        canvas.drawString(MARGIN, 700 - 13 * number, line)
    canvas.showPage()
    canvas.save()
    return buffer.getvalue()


LANDSCAPE_ROWS = (
    ("Marker", "Sensitivity (%)", "Specificity (%)"),
    ("SDC2", "84.4", "93.3"),
    ("SEPT9", "68.0", "91.0"),
)


def landscape_table_page(turn: int = 90) -> bytes:
    """A portrait page whose content is drawn turned by `turn` degrees (90 or -90), with /Rotate
    set so that a viewer shows a landscape table upright; plus an upright margin stamp."""
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=A4, invariant=1)
    canvas.saveState()
    if turn == 90:
        canvas.translate(PAGE_WIDTH, 0)
    else:
        canvas.translate(0, PAGE_HEIGHT)
    canvas.rotate(turn)
    canvas.setFont("Times-Roman", 10)
    canvas.drawString(
        72, 500, "Table 2. Methylation markers in stool DNA, by marker, in the validation cohort."
    )
    for number, row in enumerate(LANDSCAPE_ROWS):
        for x, cell in zip((72, 300, 500), row, strict=True):
            canvas.drawString(x, 470 - 14 * number, cell)
    canvas.restoreState()
    canvas.setFont("Helvetica", 7)
    canvas.drawString(20, 20, "Downloaded from example.org")
    canvas.setPageRotation(turn % 360)
    canvas.showPage()
    canvas.save()
    return buffer.getvalue()


# --- the benchmark corpus ---------------------------------------------------------------------------

_GENES = ("SEPT9", "SDC2", "MGMT", "MLH1", "GSTP1", "RASSF1A", "SHOX2", "NDRG4", "BMP3", "VIM", "CDKN2A")
_SENTENCES = (
    "Promoter methylation of {gene} was measured by quantitative methylation-specific PCR in {n} samples.",
    "The sensitivity of {gene} methylation for cancer was {p}% at a specificity of {q}%.",
    "DNA was extracted from {n} plasma samples and treated with sodium bisulfite before amplification.",
    "The area under the curve of the {gene} assay was 0.{d} in the validation cohort.",
    "Methylation levels of {gene} rose with tumour stage, from {p}% in stage I to {q}% in stage IV.",
    "Investigators who scored the assays did not know the clinical diagnosis of any participant.",
    "Hypermethylation of the {gene} CpG island silenced its expression in {n} of the tumour cell lines.",
    "Bisulfite conversion was complete in every batch, as controls without conversion showed.",
    "Combining {gene} with a second marker raised the sensitivity to {q}% without loss of specificity.",
    "Samples were stored at minus eighty degrees and analysed within {n} days of collection.",
)


def _benchmark_content(pages: int, seed: int) -> PaperContent:
    generator = random.Random(seed)

    def sentence() -> str:
        return generator.choice(_SENTENCES).format(
            gene=generator.choice(_GENES),
            n=generator.randint(20, 900),
            p=generator.randint(10, 60),
            q=generator.randint(61, 99),
            d=generator.randint(60, 98),
        )

    def paragraph() -> Paragraph:
        return Paragraph(" ".join(sentence() for _ in range(generator.randint(3, 7))))

    body: list[Block] = []
    # About 12 paragraphs fill a page; make more than enough and let the page limit cut the rest.
    for section in range(pages * 6):
        body.append(
            Heading(f"{section + 1}. Section {section + 1} on {generator.choice(_GENES)} methylation")
        )
        body.extend(paragraph() for _ in range(4))
    return PaperContent(
        title=f"Benchmark paper {seed}: DNA methylation markers in body fluids",
        authors="A. Author, B. Author",
        affiliation="Institute of Examples",
        identifiers=f"doi:10.5555/bench.{seed}",
        abstract=(" ".join(sentence() for _ in range(5)),),
        body=tuple(body),
        header_left="Benchmark Journal 1 (2024) {page}",
    )


def benchmark_paper(pages: int = 30, seed: int = 0) -> bytes:
    """A `pages`-page two-column paper of plausible methylation sentences (deterministic per seed)."""
    return render_paper(_benchmark_content(pages, seed), max_pages=pages)


# --- the project's sample paper ---------------------------------------------------------------------

SAMPLE_PAPER = PaperContent(
    title="SDC2 promoter hypermethylation in stool DNA detects colorectal cancer and advanced adenoma",
    authors="Hanna Lindqvist, Rafael Ortega, Wei Zhang, Amara Nwosu",
    affiliation="Department of Gastroenterology, Northbridge University Medical Centre "
    "(an invented institution)",
    identifiers="Journal of Epigenetic Markers 7 (2024) 201–202 · doi:10.5555/jem.2024.0201 · "
    "Received 12 February 2024; accepted 2 May 2024",
    info_title="SDC2 promoter hypermethylation in stool DNA detects colorectal cancer and advanced adenoma",
    header_left="Journal of Epigenetic Markers 7 (2024) 201–202",
    header_right="Lindqvist et al.",
    footer="{page}",
    paragraph_gap=4.0,
    abstract=(
        "Syndecan-2 (SDC2) is hypermethylated in most colorectal cancers. We tested SDC2 promoter "
        "methylation in stool DNA by quantitative methylation-specific PCR (qMSP) in 412 participants "
        "who had a colonoscopy: 96 with colorectal cancer, 88 with advanced adenoma, 64 with "
        "non-advanced adenoma and 164 without neoplasia. Stool SDC2 methylation detected 81 of 96 "
        "cancers (sensitivity 84.4%) and 37 of 88 advanced adenomas (42.0%), with a specificity of "
        "93.3% in participants without neoplasia. The area under the curve (AUC) was 0.91 for "
        "colorectal cancer and 0.71 for advanced adenoma. Stool SDC2 methylation is a sensitive "
        "marker for noninvasive detection of colorectal neoplasia.",
    ),
    body=(
        Heading("1. Introduction"),
        Paragraph(
            "Colorectal cancer is the third most common cancer worldwide, and screening reduces its "
            "mortality. Colonoscopy is accurate but invasive, and the faecal immunochemical test (FIT) "
            "misses many advanced adenomas, the precursors that screening aims to remove."
        ),
        Paragraph(
            "Tumour cells shed into the bowel lumen carry their DNA into the stool. SDC2 encodes "
            "syndecan-2, a cell surface proteoglycan, and its promoter CpG island is methylated in most "
            "colorectal tumours but rarely in normal colonic mucosa. We asked how well SDC2 methylation "
            "in stool DNA detects colorectal cancer and advanced adenoma in a colonoscopy cohort."
        ),
        Heading("2. Methods"),
        Heading("2.1. Participants"),
        Paragraph(
            "We enrolled 412 adults aged 45 to 80 years who were scheduled for colonoscopy at one centre "
            "between 2021 and 2023. Each participant gave a stool sample before bowel preparation. "
            "Colonoscopy and histology defined four groups: colorectal cancer (n = 96), advanced "
            "adenoma (n = 88), non-advanced adenoma (n = 64) and no neoplasia (n = 164). Advanced "
            "adenoma meant an adenoma of at least 10 mm, with villous histology or high-grade dysplasia. "
            "The ethics committee approved the study and all participants gave written consent."
        ),
        Heading("2.2. Stool DNA and qMSP"),
        Paragraph(
            "Human DNA was captured from 4 g of stool with a magnetic bead method and treated with sodium "
            "bisulfite. SDC2 methylation was measured by quantitative methylation-specific PCR (qMSP) "
            "with primers and a probe for the SDC2 promoter CpG island. The beta-actin gene (ACTB) served "
            "as the reference for input DNA. A sample was called positive when SDC2 amplified with a cycle "
            "threshold (Ct) below 38 and ACTB amplified with a Ct below 36. Technicians who ran the assay "
            "did not know the colonoscopy findings."
        ),
        Heading("2.3. Statistical analysis"),
        Paragraph(
            "Sensitivity and specificity are given with exact 95% confidence intervals (CI). The "
            "colonoscopy-negative group defined specificity. Receiver operating characteristic curves "
            "were built from SDC2 Ct values, and the area under the curve (AUC) was estimated with its 95% "
            "CI. A FIT result (cut-off 20 µg haemoglobin per g of stool) was available for every "
            "participant."
        ),
        Heading("3. Results"),
        Paragraph(
            "Stool SDC2 methylation was positive in 81 of 96 participants with colorectal cancer "
            "(sensitivity 84.4%, 95% CI 75.5–91.0) and in 37 of 88 with advanced adenoma (42.0%, 95% CI "
            "31.6–53.1). It was positive in 9 of 64 participants with non-advanced adenoma (14.1%) and in "
            "11 of 164 without neoplasia, a specificity of 93.3% (95% CI 88.3–96.6)."
        ),
        Paragraph(
            "Sensitivity for cancer did not depend much on stage: 76.5% in stage I (13 of 17), 85.7% in "
            "stage II (30 of 35), 86.2% in stage III (25 of 29) and 86.7% in stage IV (13 of 15). It was "
            "similar for proximal and distal tumours (83.3% and 85.0%). The AUC was 0.91 (95% CI "
            "0.87–0.95) for colorectal cancer and 0.71 (95% CI 0.64–0.78) for advanced adenoma."
        ),
        Paragraph(
            "FIT detected 70 of 96 cancers (72.9%) and 24 of 88 advanced adenomas (27.3%) at a specificity "
            "of 94.5%. A positive result on either test detected 89 of 96 cancers (92.7%) and 49 of 88 "
            "advanced adenomas (55.7%), with a specificity of 88.4%."
        ),
        Table(
            caption="Table 1. Detection of colorectal neoplasia by stool SDC2 methylation and FIT.",
            rows=(
                ("Group", "Participants (n)", "SDC2 positive (%)", "FIT positive (%)", "AUC (SDC2)"),
                ("Colorectal cancer", "96", "84.4", "72.9", "0.91"),
                ("Advanced adenoma", "88", "42.0", "27.3", "0.71"),
                ("Non-advanced adenoma", "64", "14.1", "10.9", "0.58"),
                ("No neoplasia", "164", "6.7", "5.5", "n/a"),
            ),
            column_offsets=(0.0, 120.0, 215.0, 315.0, 410.0),
        ),
        Heading("4. Discussion"),
        Paragraph(
            "In this colonoscopy cohort, SDC2 methylation in stool DNA detected more than four in five "
            "colorectal cancers and two in five advanced adenomas, at a specificity above 93%. "
            "Sensitivity was already high in stage I, which matters for screening. SDC2 methylation "
            "detected more advanced adenomas than FIT, and the two tests together detected more lesions "
            "than either alone, at some cost in specificity."
        ),
        Paragraph(
            "The study has limitations. It was done at one centre, the cohort was enriched for neoplasia, "
            "and the cut-off was chosen in the same data, so the accuracy may be lower in a screening "
            "population. A multicentre study in average-risk adults is needed."
        ),
        Heading("5. Conclusions"),
        Paragraph(
            "SDC2 promoter hypermethylation in stool DNA, measured by qMSP, is a sensitive and specific "
            "marker for colorectal cancer and detects many advanced adenomas."
        ),
        Heading("Acknowledgements"),
        Paragraph(
            "We thank the endoscopy nurses for collecting the samples. This invented study was written as "
            "sample data for methyl-distill; its participants and results are fictitious."
        ),
        Heading("References"),
        Paragraph(
            "1. Oh T, Kim N, Moon Y, et al. Genome-wide identification and validation of a novel "
            "methylation biomarker, SDC2, for blood-based detection of colorectal cancer. J Mol Diagn. "
            "2013;15:498-507.",
            hanging=True,
        ),
        Paragraph(
            "2. Imperiale TF, Ransohoff DF, Itzkowitz SH, et al. Multitarget stool DNA testing for "
            "colorectal-cancer screening. N Engl J Med. 2014;370:1287-1297.",
            hanging=True,
        ),
    ),
)


def sample_paper() -> bytes:
    """data/papers/sdc2_stool_colorectal_adenoma.pdf: our own short paper on stool SDC2 methylation."""
    return render_paper(SAMPLE_PAPER)


__all__ = [
    "SAMPLE_PAPER",
    "TWO_COLUMN_PAPER",
    "Heading",
    "PaperContent",
    "Paragraph",
    "Table",
    "benchmark_paper",
    "encrypted_paper",
    "expected_sections",
    "image_only_paper",
    "render_paper",
    "resolve_marks",
    "sample_paper",
    "truncated_paper",
    "two_column_paper",
]
