"""What every reader returns: a paper's text, its sections and the metadata found in the file.

A reader (plain text, PDF, JATS XML, HTML) turns one file into a `ReadPaper`. The text is built by a
`DocumentBuilder` one section at a time, so every format gets the same shape: the title, the
abstract, then each headed section as `heading`, blank line, body, sections separated by a blank
line. `Section` spans point into that text, and each section has a role (`title`, `abstract`,
`body`, `back_matter`). Back matter (the reference list, acknowledgements, funding, competing
interests, author contributions) is recognised by its heading (`role_of_heading`) or by the
format's own markup (JATS `<ref-list>`, `<ack>`), and `omit_back_matter` leaves it out of what the
teacher reads, counting the tokens that saves.

Every piece of text passes through `clean_text` on its way in: ligatures spelled out, odd spaces made
plain, zero-width characters and soft hyphens dropped, NFC, LF line ends, no trailing spaces. The
text the teacher reads is exactly `ReadPaper.text` after `omit_back_matter`: the grounding check, the
dataset stage's excerpts and the cache key all use that same text.

A file that cannot be used raises `UnreadablePaperError` with a reason a user can act on.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from methyl_distill.text.token_count import estimate_tokens

PaperFormat = Literal["text", "markdown", "pdf", "jats", "html"]
SectionRole = Literal["title", "abstract", "body", "back_matter"]


class UnreadablePaperError(ValueError):
    """A file is not usable paper text; the message says why, in words a user can act on."""


class Section(BaseModel):
    """One section of a paper's text: `text[start:end]` holds its heading (if any) and its body."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str = Field(description="The heading as the paper gives it; '' for untitled text.")
    role: SectionRole
    start: int = Field(ge=0)
    end: int = Field(ge=0)


class PaperMetadata(BaseModel):
    """Identifiers found in the file (front matter, PDF info, HTML meta tags, or the text)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str | None = None
    doi: str | None = None
    pmid: str | None = None
    pmcid: str | None = None

    def merged_with(self, fallback: PaperMetadata) -> PaperMetadata:
        """These values, with `fallback`'s where these are missing."""
        return PaperMetadata(
            title=self.title or fallback.title,
            doi=self.doi or fallback.doi,
            pmid=self.pmid or fallback.pmid,
            pmcid=self.pmcid or fallback.pmcid,
        )


class ReadPaper(BaseModel):
    """A paper as a reader found it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str
    sections: tuple[Section, ...]
    metadata: PaperMetadata
    format: PaperFormat
    reader: str = Field(description="The reader and its version, e.g. 'pdf/1': part of the cache key.")
    encoding: str | None = Field(default=None, description="The text encoding used (text files).")
    pages: int | None = Field(default=None, description="Pages (PDF).")


class OmittedText(BaseModel):
    """What `omit_back_matter` left out of one paper."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sections: tuple[str, ...] = ()
    characters: int = 0
    tokens: int = Field(default=0, description="Estimated tokens the teacher did not have to read.")


class PaperSource(BaseModel):
    """What the records say about how a paper was read: format, reader, identifiers, what was left out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: PaperFormat = "text"
    reader: str = Field(default="text/1", description="The reader and its version.")
    encoding: str | None = None
    pages: int | None = None
    title: str | None = None
    doi: str | None = None
    pmid: str | None = None
    pmcid: str | None = None
    sections: tuple[str, ...] = Field(default=(), description="Headings of the sections the teacher read.")
    omitted_sections: tuple[str, ...] = Field(default=(), description="Back-matter sections left out.")
    omitted_tokens: int = Field(default=0, ge=0, description="Estimated tokens of the sections left out.")

    @classmethod
    def of(cls, paper: ReadPaper, omitted: OmittedText) -> PaperSource:
        return cls(
            format=paper.format,
            reader=paper.reader,
            encoding=paper.encoding,
            pages=paper.pages,
            sections=tuple(section.title for section in paper.sections if section.title),
            omitted_sections=omitted.sections,
            omitted_tokens=omitted.tokens,
            **paper.metadata.model_dump(),
        )


# --- cleaning ---------------------------------------------------------------------------------------

_LIGATURES = str.maketrans(
    {
        "\ufb00": "ff",
        "\ufb01": "fi",
        "\ufb02": "fl",
        "\ufb03": "ffi",
        "\ufb04": "ffl",
        "\ufb05": "st",
        "\ufb06": "st",
        "\u0132": "IJ",
        "\u0133": "ij",
        # Odd spaces become plain ones.
        "\u00a0": " ",
        "\u1680": " ",
        **{chr(code): " " for code in range(0x2000, 0x200B)},
        "\u202f": " ",
        "\u205f": " ",
        "\u3000": " ",
        "\t": " ",
        # Zero-width characters, soft hyphens and object replacement characters are dropped.
        "\u200b": None,
        "\u200c": None,
        "\u200d": None,
        "\u2060": None,
        "\ufeff": None,
        "\u00ad": None,
        "\ufffc": None,
        # Line and paragraph separators are line breaks.
        "\u2028": "\n",
        "\u2029": "\n\n",
        "\x0b": "\n",
        "\x0c": "\n",
    }
)
_SPACE_RUN = re.compile(r" {2,}")
_BLANK_RUN = re.compile(r"\n{3,}")


def normalise_text(text: str) -> str:
    """The canonical form of a text file's text: NFC, LF line ends, no trailing spaces, stripped.

    Plain text files get only this, so their text (and cache identity) is what it always was."""
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return text.strip()


def clean_text(text: str) -> str:
    """Text from a PDF, XML or HTML file made plain: `normalise_text`, ligatures spelled out, odd
    spaces made plain and runs of spaces collapsed, zero-width characters and soft hyphens dropped,
    at most one blank line in a row."""
    text = normalise_text(text.replace("\r\n", "\n").translate(_LIGATURES))
    text = "\n".join(_SPACE_RUN.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_RUN.sub("\n\n", text).strip()


# --- headings ---------------------------------------------------------------------------------------

_NUMBERING = re.compile(r"^(?:\d+(?:\.\d+)*\.?|[IVXLC]+\.|[A-Z]\.)\s+")
_BACK_MATTER_HEADINGS = frozenset(
    {
        "references",
        "reference list",
        "references and notes",
        "bibliography",
        "literature cited",
        "works cited",
        "cited literature",
        "acknowledgements",
        "acknowledgments",
        "acknowledgement",
        "acknowledgment",
        "funding",
        "funding information",
        "funding statement",
        "financial support",
        "conflict of interest",
        "conflicts of interest",
        "conflict of interest statement",
        "competing interests",
        "competing financial interests",
        "declaration of competing interest",
        "declaration of interests",
        "disclosure",
        "disclosures",
        "author contributions",
        "authors contributions",
        "contributions",
    }
)
_ABSTRACT_HEADINGS = frozenset({"abstract", "summary"})
# Headings of body sections that name a section of a paper (what is not back matter or abstract).
BODY_HEADINGS = frozenset(
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


@lru_cache(maxsize=4096)
def heading_key(title: str) -> str:
    """A heading reduced for comparison: numbering, markdown marks, case and punctuation dropped."""
    key = _NUMBERING.sub("", title.strip().lstrip("#").strip())
    key = key.replace("\u2019", "'").replace("'", "").casefold()
    return " ".join(re.sub(r"[^\w\s]", " ", key).split())


@lru_cache(maxsize=4096)
def role_of_heading(title: str) -> SectionRole:
    """The role a section has by its heading: back matter, abstract, or body."""
    key = heading_key(title)
    if key in _BACK_MATTER_HEADINGS:
        return "back_matter"
    if key in _ABSTRACT_HEADINGS:
        return "abstract"
    return "body"


def is_known_heading(title: str) -> bool:
    """Whether a heading names a known section of a paper: back matter, abstract or a body section."""
    key = heading_key(title)
    return key in _BACK_MATTER_HEADINGS or key in _ABSTRACT_HEADINGS or key in BODY_HEADINGS


# --- identifiers ------------------------------------------------------------------------------------

_DOI = re.compile(r"(?<![\w.])(10\.\d{4,9}/[^\s\"'<>]+)")
_PMID = re.compile(r"\bPMID\s*:?\s*(\d{1,9})\b")
_PMCID = re.compile(r"\b(PMC\d{4,10})\b")


def clean_doi(value: str) -> str | None:
    """A DOI from a link, a 'doi:' label or running text, without trailing punctuation."""
    match = _DOI.search(value)
    return match.group(1).rstrip(".,;:)]}") if match else None


def identifiers_in_text(text: str) -> PaperMetadata:
    """DOI, PMID and PMCID as the text states them (the first of each)."""
    # The substring tests first: most texts name none, and a plain search is much faster than a regex.
    pmid = _PMID.search(text) if "PMID" in text else None
    pmcid = _PMCID.search(text) if "PMC" in text else None
    return PaperMetadata(
        doi=clean_doi(text) if "10." in text and "/" in text else None,
        pmid=pmid.group(1) if pmid else None,
        pmcid=pmcid.group(1) if pmcid else None,
    )


# --- building ---------------------------------------------------------------------------------------

SECTION_SEPARATOR = "\n\n"


class DocumentBuilder:
    """Assembles a paper's text one section at a time, recording each section's span.

    `add(title, body)` appends `title`, a blank line and `body` (either may be empty), each cleaned
    with `clean_text`; the role follows the heading unless given. Empty sections are skipped."""

    def __init__(self) -> None:
        self._pieces: list[str] = []
        self._sections: list[Section] = []
        self._length = 0

    def add(self, title: str, body: str, role: SectionRole | None = None) -> None:
        title = " ".join(clean_text(title).split())
        body = clean_text(body)
        if not title and not body:
            return
        piece = f"{title}{SECTION_SEPARATOR}{body}" if title and body else title or body
        start = self._length + (len(SECTION_SEPARATOR) if self._pieces else 0)
        self._pieces.append(piece)
        self._length = start + len(piece)
        self._sections.append(
            Section(title=title, role=role or role_of_heading(title), start=start, end=self._length)
        )

    @property
    def is_empty(self) -> bool:
        return not self._pieces

    def text(self) -> str:
        return SECTION_SEPARATOR.join(self._pieces)

    def sections(self) -> tuple[Section, ...]:
        return tuple(self._sections)


def omit_back_matter(paper: ReadPaper) -> tuple[ReadPaper, OmittedText]:
    """The paper without its back-matter sections, and what that left out.

    Readers' sections cover the whole text. When nothing is back matter the paper is returned as it
    is; otherwise the kept sections are joined by one blank line. A paper that is nothing but back
    matter is returned whole: leaving out everything would leave nothing to read."""
    dropped = [section for section in paper.sections if section.role == "back_matter"]
    if not dropped or len(dropped) == len(paper.sections):
        return paper, OmittedText()
    pieces: list[str] = []
    kept: list[Section] = []
    length = 0
    for section in paper.sections:
        if section.role == "back_matter":
            continue
        piece = paper.text[section.start : section.end].strip()
        if not piece:
            continue
        start = length + (len(SECTION_SEPARATOR) if pieces else 0)
        pieces.append(piece)
        length = start + len(piece)
        kept.append(section.model_copy(update={"start": start, "end": length}))
    omitted_pieces = [paper.text[section.start : section.end] for section in dropped]
    omitted = OmittedText(
        sections=tuple(section.title for section in dropped),
        characters=sum(len(piece) for piece in omitted_pieces),
        tokens=sum(estimate_tokens(piece) for piece in omitted_pieces),
    )
    return paper.model_copy(update={"text": SECTION_SEPARATOR.join(pieces), "sections": tuple(kept)}), omitted
