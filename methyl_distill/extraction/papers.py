"""Finding and reading the input papers: every file under the input folder is accounted for.

`discover_papers` walks an input directory and hands every file to the readers
(`methyl_distill.readers.formats`: plain text, Markdown, PDF, JATS XML, HTML, chosen by content and
name). It returns the readable papers grouped by their text (identical texts are extracted once,
every file id recorded) and every file it could not use with the reason: unsupported formats by
name, image-only or encrypted PDFs, XML that is not an article, undecodable text, symlinks that
lead outside the input folder, folders that cannot be read. Hidden files and folders (names starting
with '.') are skipped by design and counted. A file's id comes from its path relative to the input
directory, so it is stable across runs and machines.
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from methyl_distill.readers.document import PaperSource, UnreadablePaperError
from methyl_distill.readers.formats import ReadingOptions, read_paper_file
from methyl_distill.text.hashing import sha256_of_text

logger = logging.getLogger(__name__)

_SLUG_UNSAFE = re.compile(r"[^a-z0-9]+")
_PLAIN_NAME = r"[a-z0-9]+(?:_[a-z0-9]+)*"
_PLAIN_PATH = re.compile(
    rf"(?:{_PLAIN_NAME}/)*{_PLAIN_NAME}\.(?:txt|text|md|markdown|pdf|xml|nxml|html|htm|xhtml)"
)
_MAX_SLUG_CHARS = 120


class Paper(BaseModel):
    """One distinct paper text and every file that holds it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file_id: str = Field(description="Id of the first file (by relative path) with this content.")
    file_ids: tuple[str, ...] = Field(description="Ids of every file with this content.")
    source_paths: tuple[str, ...] = Field(description="Those files' paths relative to the input directory.")
    content_sha256: str = Field(description="sha256 of the text the teacher reads: the paper's identity.")
    text: str = Field(description="The text the teacher reads (back matter left out unless kept).")
    source: PaperSource = Field(default_factory=PaperSource, description="How the first file was read.")

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
    hidden_skipped: int = Field(default=0, description="Hidden files and folders skipped by design.")

    @property
    def file_count(self) -> int:
        return sum(len(paper.file_ids) for paper in self.papers) + len(self.rejected)


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


def file_id_of(relative_path: str) -> str:
    """A file's id: readable, stable across runs and machines, and a function of its own path only.

    A plain path (lower-case letters and digits joined by '_', folders by '/', one paper suffix:
    `lung/shox2_lavage.md`) becomes its slug with '/' as '--' (`lung--shox2-lavage-md`), which no
    other plain path shares. Any other path gets its lossy slug and a short hash of the exact path
    (`Lung/SHOX2 study.txt` -> `lung-shox2-study-txt-<8 hex>`). A plain id ends in a paper suffix and
    a hashed one in 8 hex digits, so the two kinds never meet; adding or removing other files never
    changes an id. Ids name output files only: the extraction cache is keyed by content."""
    if _PLAIN_PATH.fullmatch(relative_path) and len(relative_path) <= _MAX_SLUG_CHARS:
        return relative_path.replace("/", "--").replace("_", "-").replace(".", "-")
    return f"{slugify_path(relative_path)}-{sha256_of_text(relative_path)[:8]}"


def assign_file_ids(relative_paths: Iterable[str]) -> dict[str, str]:
    """`file_id_of` each path."""
    return {path: file_id_of(path) for path in relative_paths}


@dataclass(frozen=True)
class _Readable:
    relative_path: str
    file_id: str
    text: str
    sha256: str
    source: PaperSource


@dataclass
class InputListing:
    """What a walk of the input folder found: files to read, entries refused, hidden entries skipped."""

    files: list[tuple[Path, str]]
    refused: list[tuple[str, str]]
    hidden: int


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def list_input_files(root: Path) -> InputListing:
    """Every entry under `root`, sorted by relative path: regular files to read (symlinks to files
    inside `root` included), entries refused with a reason (symlinks leading outside `root` or to a
    folder, broken symlinks, folders that cannot be read), and the number of hidden entries."""
    resolved_root = root.resolve()
    files: list[tuple[Path, str]] = []
    refused: list[tuple[str, str]] = []
    hidden = 0

    def unreadable_folder(error: OSError) -> None:
        folder = Path(error.filename) if error.filename else root
        relative = folder.relative_to(root).as_posix() if _inside(folder, root) else str(folder)
        refused.append((relative + "/", f"folder cannot be read: {error.strerror or error}"))

    for folder, dirnames, filenames in os.walk(root, onerror=unreadable_folder, followlinks=False):
        base = Path(folder)
        kept_dirs = []
        for name in sorted(dirnames):
            path = base / name
            relative = path.relative_to(root).as_posix()
            if name.startswith("."):
                hidden += 1
            elif path.is_symlink():
                refused.append((relative, _symlink_reason(path, resolved_root, folder=True)))
            else:
                kept_dirs.append(name)
        dirnames[:] = kept_dirs
        for name in filenames:
            path = base / name
            relative = path.relative_to(root).as_posix()
            if name.startswith("."):
                hidden += 1
                continue
            if path.is_symlink():
                reason = _symlink_reason(path, resolved_root, folder=False)
                if reason:
                    refused.append((relative, reason))
                    continue
            elif not path.is_file():
                refused.append((relative, "not a regular file (a socket, pipe or device)"))
                continue
            files.append((path, relative))
    files.sort(key=lambda item: item[1])
    refused.sort()
    return InputListing(files=files, refused=refused, hidden=hidden)


def _symlink_reason(path: Path, resolved_root: Path, *, folder: bool) -> str:
    """Why a symlink is not read ('' for a symlink to a regular file inside the input folder)."""
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return f"broken symlink (to {os.readlink(path)})"
    if not _inside(target, resolved_root):
        return f"symlink leads outside the input folder (to {target}): not followed"
    if folder or target.is_dir():
        return "symlink to a folder: not followed (its files are read where they lie)"
    if not target.is_file():
        return "symlink to something that is not a regular file"
    return ""


def discover_papers(input_directory: str | Path, options: ReadingOptions | None = None) -> PaperDiscovery:
    """Read every paper under `input_directory`; group identical texts; report every unusable file."""
    root = Path(input_directory).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"input directory {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"input directory {root} is not a directory")
    listing = list_input_files(root)
    ids = assign_file_ids([relative for _, relative in listing.files] + [rel for rel, _ in listing.refused])

    readable: list[_Readable] = []
    rejected = [
        RejectedFile(file_id=ids[rel], source_path=rel, reason=reason) for rel, reason in listing.refused
    ]
    for rel, reason in listing.refused:
        logger.warning("Skipping %s: %s", rel, reason)
    for path, rel in listing.files:
        try:
            result = read_paper_file(path, options)
        except UnreadablePaperError as exc:
            logger.warning("Skipping %s: %s", rel, exc)
            rejected.append(RejectedFile(file_id=ids[rel], source_path=rel, reason=str(exc)))
            continue
        except OSError as exc:
            logger.warning("Skipping %s: cannot read: %s", rel, exc)
            reason = f"cannot read: {exc.strerror or exc}"
            rejected.append(RejectedFile(file_id=ids[rel], source_path=rel, reason=reason))
            continue
        except Exception as exc:  # a reader's own fault on odd input must not stop the run
            logger.exception("Skipping %s: the reader failed", rel)
            reason = f"the reader failed on this file ({type(exc).__name__}: {exc}); please report it"
            rejected.append(RejectedFile(file_id=ids[rel], source_path=rel, reason=reason))
            continue
        text = result.paper.text
        source = PaperSource.of(result.paper, result.omitted)
        readable.append(_Readable(rel, ids[rel], text, content_sha256(text), source))
    if listing.hidden:
        logger.info("Skipped %d hidden file(s) or folder(s) under %s", listing.hidden, root)

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
                source=members[0].source,
            )
        )
    rejected.sort(key=lambda item: item.source_path)
    return PaperDiscovery(papers=tuple(papers), rejected=tuple(rejected), hidden_skipped=listing.hidden)
