"""Finding and reading the input papers.

`discover_papers` walks an input directory for .txt and .md files, decodes each one robustly and
returns the readable papers grouped by content (identical texts are extracted once, every file id
recorded) together with the files it had to reject and why. A file's id comes from its path
relative to the input directory, so it is stable across runs and machines.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from methyl_distill.text.hashing import sha256_of_text

logger = logging.getLogger(__name__)

PAPER_SUFFIXES = (".txt", ".md")
# A text file has almost no C0 control characters besides tab, newline, carriage return, form feed.
_MAX_CONTROL_SHARE = 0.01
_ALLOWED_CONTROLS = frozenset("\t\n\r\f")
_SLUG_UNSAFE = re.compile(r"[^a-z0-9]+")
_MAX_SLUG_CHARS = 120


class Paper(BaseModel):
    """One distinct paper text and every file that holds it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file_id: str = Field(description="Id of the first file (by relative path) with this content.")
    file_ids: tuple[str, ...] = Field(description="Ids of every file with this content.")
    source_paths: tuple[str, ...] = Field(description="Those files' paths relative to the input directory.")
    content_sha256: str = Field(description="sha256 of the normalised text: the paper's cache identity.")
    text: str = Field(description="The normalised text.")

    @property
    def source_path(self) -> str:
        return self.source_paths[0]


class RejectedFile(BaseModel):
    """An input file that cannot be used as a paper, with the reason."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file_id: str
    source_path: str
    reason: str


class PaperDiscovery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    papers: tuple[Paper, ...]
    rejected: tuple[RejectedFile, ...]

    @property
    def file_count(self) -> int:
        return sum(len(paper.file_ids) for paper in self.papers) + len(self.rejected)


class UnreadablePaperError(ValueError):
    """The bytes of a file are not usable paper text."""


def normalise_text(text: str) -> str:
    """The canonical form of a paper's text: NFC, LF line ends, no trailing spaces, stripped."""
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return text.strip()


def decode_paper_bytes(data: bytes) -> str:
    """Decode a paper file's bytes to normalised text, or raise `UnreadablePaperError` saying why."""
    if not data.strip():
        raise UnreadablePaperError("empty file" if not data else "file contains only whitespace")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise UnreadablePaperError(f"invalid UTF-16 text: {exc.reason}") from exc
    else:
        if b"\x00" in data:
            raise UnreadablePaperError("binary file (contains NUL bytes)")
        try:
            text = data.decode("utf-8-sig")  # strips a UTF-8 byte-order mark
        except UnicodeDecodeError as exc:
            raise UnreadablePaperError(
                f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                "convert the file to UTF-8"
            ) from exc
    controls = sum(1 for char in text if unicodedata.category(char) == "Cc" and char not in _ALLOWED_CONTROLS)
    if controls > max(2, _MAX_CONTROL_SHARE * len(text)):
        raise UnreadablePaperError(f"binary file ({controls} control characters in {len(text)} characters)")
    text = normalise_text(text)
    if not text:
        raise UnreadablePaperError("file contains only whitespace")
    return text


def content_sha256(text: str) -> str:
    """The paper's cache identity: the SHA-256 of its normalised text."""
    return sha256_of_text(text)


def slugify_path(relative_path: str) -> str:
    """A filesystem-safe slug of a relative path: `Lung/SHOX2 study.txt` -> `lung-shox2-study-txt`."""
    folded = unicodedata.normalize("NFKD", relative_path).encode("ascii", "ignore").decode("ascii").lower()
    slug = _SLUG_UNSAFE.sub("-", folded).strip("-")
    if len(slug) > _MAX_SLUG_CHARS:
        slug = slug[:_MAX_SLUG_CHARS].rstrip("-")
    return slug or "paper"


def assign_file_ids(relative_paths: Iterable[str]) -> dict[str, str]:
    """Stable, unique file ids for relative paths.

    Ids are slugs of the path, so they are readable and stable across runs and machines. A path
    whose slug loses information (non-ASCII letters, cut short) gets a short hash of the exact path
    appended; paths whose slugs collide (`a b.txt` and `a-b.txt`) all get one, so no two files ever
    share an id. Ids are only used for output names: the extraction cache is keyed by content.
    """
    paths = sorted(set(relative_paths))
    slugs = {path: slugify_path(path) for path in paths}
    counts: dict[str, int] = {}
    for slug in slugs.values():
        counts[slug] = counts.get(slug, 0) + 1
    ids: dict[str, str] = {}
    taken: set[str] = set()
    for path, slug in slugs.items():
        exact = slug == _SLUG_UNSAFE.sub("-", path.lower()).strip("-")
        if counts[slug] > 1 or not exact:
            digest = sha256_of_text(path)[:8]
            slug = f"{slug}-{digest}"
        while slug in taken:  # a plain slug that happens to look like a hashed one
            slug = f"{slug}-{sha256_of_text(slug)[:4]}"
        taken.add(slug)
        ids[path] = slug
    return ids


@dataclass(frozen=True)
class _Readable:
    relative_path: str
    file_id: str
    text: str
    sha256: str


def find_paper_files(input_directory: Path) -> list[Path]:
    """Every .txt and .md file under `input_directory` (recursively, hidden entries skipped), sorted."""
    found = []
    for path in input_directory.rglob("*"):
        relative_parts = path.relative_to(input_directory).parts
        if any(part.startswith(".") for part in relative_parts):
            continue
        if path.suffix.lower() in PAPER_SUFFIXES and path.is_file():
            found.append(path)
    return sorted(found, key=lambda item: item.relative_to(input_directory).as_posix())


def discover_papers(input_directory: str | Path) -> PaperDiscovery:
    """Read every paper under `input_directory`; group identical texts; report unusable files."""
    root = Path(input_directory).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"input directory {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"input directory {root} is not a directory")
    files = find_paper_files(root)
    relative = {path: path.relative_to(root).as_posix() for path in files}
    ids = assign_file_ids(relative.values())

    readable: list[_Readable] = []
    rejected: list[RejectedFile] = []
    for path in files:
        rel = relative[path]
        try:
            text = decode_paper_bytes(path.read_bytes())
        except UnreadablePaperError as exc:
            logger.warning("Skipping %s: %s", rel, exc)
            rejected.append(RejectedFile(file_id=ids[rel], source_path=rel, reason=str(exc)))
            continue
        except OSError as exc:
            logger.warning("Skipping %s: cannot read: %s", rel, exc)
            rejected.append(RejectedFile(file_id=ids[rel], source_path=rel, reason=f"cannot read: {exc}"))
            continue
        readable.append(_Readable(rel, ids[rel], text, content_sha256(text)))

    groups: dict[str, list[_Readable]] = {}
    for item in readable:
        groups.setdefault(item.sha256, []).append(item)
    papers = []
    for sha, members in groups.items():
        if len(members) > 1:
            logger.info(
                "Identical content in %s: extracted once",
                ", ".join(member.relative_path for member in members),
            )
        papers.append(
            Paper(
                file_id=members[0].file_id,
                file_ids=tuple(member.file_id for member in members),
                source_paths=tuple(member.relative_path for member in members),
                content_sha256=sha,
                text=members[0].text,
            )
        )
    return PaperDiscovery(papers=tuple(papers), rejected=tuple(rejected))
