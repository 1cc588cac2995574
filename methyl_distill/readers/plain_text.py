"""Plain text and Markdown papers: decoded in whatever encoding they were saved in, text kept as written.

Decoding tries, in order: a UTF-16 byte-order mark, UTF-8 (with or without its BOM), cp1252 /
Latin-1 when the result reads as Western text (most older exports), then charset-normalizer's best
guess (Cyrillic, Greek, CJK code pages...). The encoding used is recorded in `ReadPaper.encoding`.
Only bytes that no encoding explains as text are rejected.

The text itself is only normalised (`normalise_text`: NFC, LF, no trailing spaces), never reflowed,
so a text file's cache identity does not change with this reader. Sections are found at heading
lines: Markdown `#` headings, and short lines standing alone that name a known section
(`is_known_heading`: 'Abstract', 'Methods', 'References'...) or are numbered ('2. Results'). The
sections cover the whole text; the lead text before the first heading (usually the title) is its
first section.
"""

from __future__ import annotations

import re

from methyl_distill.readers.document import (
    PaperMetadata,
    ReadPaper,
    Section,
    UnreadablePaperError,
    identifiers_in_text,
    is_known_heading,
    normalise_text,
    role_of_heading,
)

READER = "text/1"

# A text file has almost no C0 control characters besides tab, newline, carriage return, form feed.
_MAX_CONTROL_SHARE = 0.01
_CONTROLS = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")  # C0 and C1 controls, but \t \n \r \f
# charset-normalizer's "chaos" (mess) above this is not text in the guessed encoding.
_MAX_CHAOS = 0.2

_MARKDOWN_HEADING = re.compile(r"^(#{1,6})\s+(\S.*?)\s*#*\s*$")
_NUMBERED_HEADING = re.compile(r"^(?:\d+(?:\.\d+)*\.?|[IVX]+\.)\s+[A-Z][^.!?]*$")
_MAX_HEADING_CHARS = 80


def decode_text_bytes(data: bytes) -> tuple[str, str]:
    """A text file's bytes decoded, with the encoding used, or `UnreadablePaperError` saying why."""
    if not data.strip():
        raise UnreadablePaperError("empty file" if not data else "file contains only whitespace")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError as exc:
            raise UnreadablePaperError(f"invalid UTF-16 text: {exc.reason}") from exc
    if b"\x00" in data:
        raise UnreadablePaperError("binary file (contains NUL bytes)")
    try:
        text, encoding = data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError as exc:
        text, encoding = _decode_legacy(data, exc)
    controls = len(_CONTROLS.findall(text))
    if controls > max(2, _MAX_CONTROL_SHARE * len(text)):
        raise UnreadablePaperError(f"binary file ({controls} control characters in {len(text)} characters)")
    if not text.strip():
        raise UnreadablePaperError("file contains only whitespace")
    return text, encoding


def _decode_legacy(data: bytes, utf8_error: UnicodeDecodeError) -> tuple[str, str]:
    western = _decode_western(data)
    if western is not None:
        return western
    from charset_normalizer import from_bytes  # imported here: only non-Western legacy files need it

    best = from_bytes(data).best()
    if best is None or best.chaos > _MAX_CHAOS:
        offset = utf8_error.start
        raise UnreadablePaperError(
            f"not text in any known encoding (not UTF-8: byte 0x{data[offset]:02x} at offset {offset}, "
            "and no legacy encoding explains it); convert the file to UTF-8"
        )
    return str(best), best.encoding


# What Western European text has beyond ASCII: Latin-1 letters and signs, cp1252's typographic marks.
_WESTERN = frozenset(
    [chr(code) for code in range(0xA0, 0x100) if code not in (0xD7, 0xF7)]
    + list(
        "\u2018\u2019\u201a\u201c\u201d\u201e\u2013\u2014\u2026\u2022\u20ac\u2122\u2020\u2021\u2030\u0152\u0153\u0160\u0161\u017d\u017e\u0178\u02c6\u02dc\u2039\u203a\u0192"
    )
    + ["\u00d7", "\u00f7"]
)
_MAX_NON_ASCII_LETTER_SHARE = 0.3


def _decode_western(data: bytes) -> tuple[str, str] | None:
    """cp1252 (Latin-1 when no byte needs cp1252's extra marks) for text that reads as Western text.

    charset-normalizer often names a Baltic or Central European code page for short English or
    French exports; older papers are overwhelmingly cp1252. Text whose letters are mostly non-ASCII
    (Cyrillic or Greek mis-read as cp1252) is left to the detector."""
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        return None
    beyond_ascii = [char for char in text if ord(char) > 0x7F]
    if any(char not in _WESTERN for char in beyond_ascii):
        return None
    letters = sum(1 for char in text if char.isalpha())
    if (
        not letters
        or sum(1 for char in beyond_ascii if char.isalpha()) > _MAX_NON_ASCII_LETTER_SHARE * letters
    ):
        return None
    uses_cp1252_marks = any(0x80 <= byte <= 0x9F for byte in data)
    return text, "cp1252" if uses_cp1252_marks else "latin-1"


def is_heading_line(line: str, *, markdown: bool) -> str | None:
    """The heading a line holds, or None: a Markdown heading, or a short line naming a section."""
    stripped = line.strip()
    if not stripped or len(stripped) > _MAX_HEADING_CHARS:
        return None
    if markdown:
        match = _MARKDOWN_HEADING.match(stripped)
        if match:
            return match.group(2)
    if is_known_heading(stripped):
        return stripped.rstrip(":")
    if _NUMBERED_HEADING.match(stripped) and len(stripped.split()) <= 8:
        return stripped
    return None


def find_sections(text: str, *, markdown: bool) -> tuple[Section, ...]:
    """Sections of a plain text at its heading lines; a heading counts when it starts a paragraph
    (any line, in Markdown). Only short lines can be headings, so only those are looked at."""
    starts: list[tuple[int, str]] = []
    offset = 0
    previous_blank = True
    for line in text.split("\n"):
        if len(line) <= _MAX_HEADING_CHARS and (previous_blank or markdown):
            heading = is_heading_line(line, markdown=markdown)
            if heading is not None:
                starts.append((offset, heading))
        previous_blank = not line
        offset += len(line) + 1
    sections: list[Section] = []
    if not starts or starts[0][0] > 0:
        first_end = starts[0][0] if starts else len(text)
        sections.append(Section(title="", role="title", start=0, end=_trimmed_end(text, 0, first_end)))
    for index, (start, title) in enumerate(starts):
        end = starts[index + 1][0] if index + 1 < len(starts) else len(text)
        sections.append(
            Section(title=title, role=role_of_heading(title), start=start, end=_trimmed_end(text, start, end))
        )
    return tuple(sections)


def _trimmed_end(text: str, start: int, end: int) -> int:
    while end > start and text[end - 1] in " \n":
        end -= 1
    return end


def _title_of(text: str, markdown: bool) -> str | None:
    for line in text.split("\n")[:5]:
        stripped = line.strip()
        if not stripped:
            continue
        if markdown:
            match = _MARKDOWN_HEADING.match(stripped)
            if match:
                return match.group(2)
        return stripped if len(stripped) <= 300 and role_of_heading(stripped) == "body" else None
    return None


def read_plain_text(data: bytes, *, markdown: bool = False) -> ReadPaper:
    """A .txt or .md paper: decoded, normalised, its sections and identifiers found."""
    decoded, encoding = decode_text_bytes(data)
    text = normalise_text(decoded)
    if not text:
        raise UnreadablePaperError("file contains only whitespace")
    metadata = PaperMetadata(title=_title_of(text, markdown)).merged_with(identifiers_in_text(text[:20000]))
    return ReadPaper(
        text=text,
        sections=find_sections(text, markdown=markdown),
        metadata=metadata,
        format="markdown" if markdown else "text",
        reader=READER,
        encoding=encoding,
    )
