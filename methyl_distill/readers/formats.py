"""Which reader a file gets, chosen by its content first and its name second, and reading it.

`detect_format` looks at the first bytes: `%PDF-` is a PDF whatever its name; XML whose root is
an article (or a PMC article set) is JATS; a document that opens with `<html` or an HTML doctype is
a web page; a ZIP container (.docx, .epub, .odt), RTF or an image is named as unsupported. Only
then does the suffix decide: `.txt`/`.text` plain text, `.md`/`.markdown` Markdown, `.xml`/`.nxml`
JATS, `.html`/`.htm`/`.xhtml` HTML. Any other file is unsupported, by name, with the formats we do
read in the message: nothing is skipped without a reason.

`read_paper_bytes` runs the reader and then `omit_back_matter` unless
`ReadingOptions.keep_back_matter` is set: the teacher does not read reference lists and acknowledgements.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from methyl_distill.readers.document import (
    OmittedText,
    PaperFormat,
    ReadPaper,
    UnreadablePaperError,
    omit_back_matter,
)

SUPPORTED = ".pdf, .xml/.nxml (JATS), .html/.htm, .txt and .md"
_TEXT_SUFFIXES = {".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown"}
_XML_SUFFIXES = frozenset({".xml", ".nxml"})
_HTML_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
_NAMED_UNSUPPORTED = {
    ".docx": "Word document",
    ".doc": "Word document",
    ".odt": "OpenDocument text",
    ".rtf": "RTF document",
    ".epub": "EPUB book",
    ".pptx": "PowerPoint file",
    ".ppt": "PowerPoint file",
    ".xlsx": "Excel workbook",
    ".xls": "Excel workbook",
    ".csv": "table",
    ".tsv": "table",
    ".tex": "LaTeX source",
    ".bib": "bibliography",
    ".ris": "citation file",
    ".zip": "ZIP archive",
    ".gz": "compressed file",
    ".tgz": "compressed archive",
    ".tar": "archive",
    ".json": "JSON file",
}
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"II*\x00", b"MM\x00*")


def _is_bitmap(head: bytes) -> bool:
    """A Windows bitmap: "BM", then the file size and two reserved 16-bit fields, zero in practice.
    "BM" alone is no proof: a text about BMP3 methylation starts with it too."""
    return head.startswith(b"BM") and len(head) >= 10 and head[6:10] == b"\x00\x00\x00\x00"


DEFAULT_MAX_FILE_MB = 256.0


class ReadingOptions(BaseModel):
    """How papers are read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_file_mb: float = Field(
        default=DEFAULT_MAX_FILE_MB,
        gt=0,
        description="Largest file read, in MB (10^6 bytes); a larger one is reported, not read into memory.",
    )
    keep_back_matter: bool = Field(
        default=False,
        description="Let the teacher read reference lists, acknowledgements, funding and competing-interest "
        "statements too (left out by default: they hold no marker findings).",
    )


class ReadResult(BaseModel):
    """A paper as the teacher will read it, and what was left out of it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    paper: ReadPaper
    omitted: OmittedText


def _unsupported(suffix: str, what: str | None = None) -> UnreadablePaperError:
    name = f"{suffix} files" if suffix else "files without a suffix"
    kind = f" ({what})" if what else ""
    return UnreadablePaperError(f"{name}{kind} are not supported: methyl-distill reads {SUPPORTED}")


def detect_format(name: str, head: bytes) -> PaperFormat:
    """The format of a file from its first bytes and its name; `UnreadablePaperError` if unsupported."""
    suffix = Path(name).suffix.lower()
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if suffix == ".pdf":
        if not head.strip():
            raise UnreadablePaperError("empty file")
        raise UnreadablePaperError("corrupt or truncated PDF: the file does not start with a %PDF- header")
    opening = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if opening.startswith(b"pk\x03\x04"):
        raise _unsupported(suffix, _NAMED_UNSUPPORTED.get(suffix, "ZIP container"))
    if opening.startswith(b"{\\rtf"):
        raise _unsupported(suffix, "RTF document")
    if head.startswith(_IMAGE_MAGIC) or _is_bitmap(head):
        raise UnreadablePaperError(
            f"image file{f' ({suffix})' if suffix else ''}: no text to read (scanned pages need OCR)"
        )
    if opening.startswith((b"<!doctype html", b"<html")) or (
        opening.startswith(b"<") and b"<html" in opening[:1024]
    ):
        return "html"
    if opening.startswith((b"<?xml", b"<!doctype", b"<article", b"<pmc-articleset", b"<!--")):
        return "jats"
    if suffix in _TEXT_SUFFIXES:
        return _TEXT_SUFFIXES[suffix]  # type: ignore[return-value]
    if suffix in _XML_SUFFIXES:
        return "jats"
    if suffix in _HTML_SUFFIXES:
        return "html"
    raise _unsupported(suffix, _NAMED_UNSUPPORTED.get(suffix))


def read_paper_bytes(name: str, data: bytes, options: ReadingOptions | None = None) -> ReadResult:
    """Read one paper file's bytes (`name` is its file name, for the format and messages)."""
    options = options or ReadingOptions()
    paper_format = detect_format(name, data[:4096])
    # The readers are imported when a file needs them: `methyl-distill --help` stays quick.
    if paper_format in ("text", "markdown"):
        from methyl_distill.readers.plain_text import read_plain_text

        paper = read_plain_text(data, markdown=paper_format == "markdown")
    elif paper_format == "pdf":
        from methyl_distill.readers.pdf import read_pdf

        paper = read_pdf(data)
    elif paper_format == "jats":
        from methyl_distill.readers.jats import read_jats

        paper = read_jats(data)
    else:
        from methyl_distill.readers.html import read_html

        paper = read_html(data)
    if not any(char.isalnum() for char in paper.text):
        raise UnreadablePaperError(
            f"no readable text in this {paper_format} file: no letters or digits, only spaces, "
            "punctuation, invisible or control characters"
        )
    if options.keep_back_matter:
        omitted = OmittedText()
    else:
        paper, omitted = omit_back_matter(paper)
    return ReadResult(paper=paper, omitted=omitted)


def read_paper_file(path: str | Path, options: ReadingOptions | None = None) -> ReadResult:
    """Read one paper file; `OSError` if it cannot be opened, `UnreadablePaperError` if not usable."""
    target = Path(path)
    options = options or ReadingOptions()
    size = target.stat().st_size
    if size > options.max_file_mb * 1_000_000:
        raise UnreadablePaperError(
            f"file too large: {size / 1_000_000:,.1f} MB, over the limit of {options.max_file_mb:g} MB "
            "(max_file_mb)"
        )
    return read_paper_bytes(target.name, target.read_bytes(), options)
