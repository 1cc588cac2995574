"""A paper's text for grounding: find evidence quotes tolerantly and cut excerpts around them.

Quotes are found by the project's one quote rule (`methyl_distill.text.quotes`, the extraction's
grounding uses it too): compared on the text's *fold* (NFKC, lower case, letters, digits, decimal
points and comparison signs), which is tolerant of whitespace, line breaks, hyphenation
('methyl-\\nation'), typographic quotes and dashes, ligatures and punctuation, while still demanding
the same words and numbers in the same order. A quote with an ellipsis ('the SEPT9 ... assay')
matches when each of its fragments occurs. Every folded character keeps the offset of its source
character, so a match maps back to a span of the text for the excerpt, whose edges snap to the
sentence boundaries of `methyl_distill.text.sentences`.

`PaperLibrary` finds a record's paper under the papers directory from its `source_paths`, reads it
with the extraction's readers (PDF, JATS, HTML, text: the very text the teacher read, so its sha256
matches the record's) and says why when it cannot ('missing', 'unreadable', 'outside_directory').
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from methyl_distill.extraction.papers import content_sha256
from methyl_distill.readers.document import UnreadablePaperError, normalise_text
from methyl_distill.readers.formats import ReadingOptions, detect_format, read_paper_bytes
from methyl_distill.readers.plain_text import decode_text_bytes
from methyl_distill.sft_dataset.token_estimate import piece_prefix, run_class
from methyl_distill.text.quotes import LocatedQuote, code_points, fold_with_offsets, locate_quote
from methyl_distill.text.sentences import sentence_boundaries

_WHITESPACE = re.compile(r"\s")
ELISION = "[...]"
# Enough characters beyond an excerpt's edge to see a sentence boundary at the edge whole (the stop,
# its closers, the white space, the next sentence's first character; white space is collapsed).
_BOUNDARY_LOOKAHEAD_CHARS = 8


@dataclass(frozen=True, slots=True)
class Excerpt:
    """Excerpt text and its token-estimate pieces (None when an edge cuts a word: count it directly)."""

    text: str
    pieces: int | None


class PaperText:
    """A paper's display text (NFKC, no soft hyphens, unwrapped) with its fold (`skeleton`) for quote
    matching."""

    __slots__ = ("_offsets", "_pieces", "skeleton", "text")

    def __init__(self, text: str) -> None:
        self.text = _display_text(text)
        codes = code_points(self.text)
        self.skeleton, self._offsets = fold_with_offsets(self.text, codes)
        self._pieces = piece_prefix(codes)

    @classmethod
    def many(cls, texts: Sequence[str]) -> list[PaperText]:
        """`PaperText(text)` of each text, with the skeletons and piece sums computed over all of them at
        once. The texts are joined by a newline, which is neither a letter nor a digit and ends every
        piece run, so each text's slice of the joint arrays is exactly what it would get alone."""
        if not texts:
            return []
        displays = [_display_text(text) for text in texts]
        joined = "\n".join(displays)
        codes = code_points(joined)
        skeleton, offsets = fold_with_offsets(joined, codes)
        pieces = piece_prefix(codes)
        bounds = np.cumsum([len(display) + 1 for display in displays]) - 1  # each text's end in `joined`
        starts = bounds - [len(display) for display in displays]
        lows = np.searchsorted(offsets, starts).tolist()
        highs = np.searchsorted(offsets, bounds).tolist()
        out = []
        for display, start, end, low, high in zip(
            displays, starts.tolist(), bounds.tolist(), lows, highs, strict=True
        ):
            paper = cls.__new__(cls)
            paper.text = display
            paper.skeleton = skeleton[low:high]
            paper._offsets = offsets[low:high] - start
            paper._pieces = pieces[start : end + 1] - pieces[start]
            out.append(paper)
        return out

    def _window_pieces(self, left: int, right: int) -> int | None:
        text = self.text
        for edge in (left, right):
            if 0 < edge < len(text):
                before, after = run_class(text[edge - 1]), run_class(text[edge])
                if before == after and before in (1, 2):  # the edge cuts a letter or digit run
                    return None
        return int(self._pieces[right] - self._pieces[left])

    def locate(self, quote: str, min_chars: int = 1) -> LocatedQuote:
        """Where `quote` occurs: every fragment must be found (in order where possible)."""
        return locate_quote(self.skeleton, self._offsets, quote, min_chars, self.text)

    def excerpt(self, spans: list[tuple[int, int]], budget: int) -> Excerpt | None:
        """Text around `spans` of at most about `budget` characters, or None if the spans alone exceed it.

        Windows around the spans share the budget left after the spans; windows that meet are merged;
        edges snap to a sentence boundary near the edge, else to a word boundary. Gaps and cut edges
        are marked '[...]'.
        """
        if not spans:
            return self.opening(budget)
        merged = merge_spans(spans)
        evidence_chars = sum(end - start for start, end in merged)
        if evidence_chars > budget:
            return None
        margin = (budget - evidence_chars) // (2 * len(merged))
        windows: list[list[int]] = []
        for start, end in merged:
            left, right = max(0, start - margin), min(len(self.text), end + margin)
            window = [self._snap_start(left, start), self._snap_end(end, right), start, end]
            if windows and window[0] <= windows[-1][1]:
                windows[-1][1] = max(windows[-1][1], window[1])
                windows[-1][3] = window[3]
            else:
                windows.append(window)
        return self._render([(left, right) for left, right, _, _ in windows])

    def opening(self, budget: int) -> Excerpt:
        """The paper's beginning, up to a sentence end within `budget` characters."""
        return self._render([(0, self._snap_end(0, min(len(self.text), budget)))])

    def _render(self, windows: list[tuple[int, int]]) -> Excerpt:
        """The windows joined by ' [...] ', with '[...]' where the text goes on before or after."""
        body = f" {ELISION} ".join(self.text[left:right] for left, right in windows)
        markers = len(windows) - 1
        if windows[0][0] > 0:
            body, markers = f"{ELISION} {body}", markers + 1
        if windows[-1][1] < len(self.text):
            body, markers = f"{body} {ELISION}", markers + 1
        pieces: int | None = markers * len(ELISION)  # '[', '.', '.', '.', ']': one piece each
        for left, right in windows:
            window = self._window_pieces(left, right)
            if window is None or pieces is None:
                pieces = None
                break
            pieces += window
        return Excerpt(body, pieces)

    # Excerpt edges snap to the shared sentence boundaries. In the unwrapped display text the only line
    # breaks are paragraph breaks, so a line break ends a sentence here as everywhere else.
    def _snap_start(self, left: int, evidence_start: int) -> int:
        """The first sentence start in the outer half of (left, evidence_start], else a word start."""
        if left == 0:
            return 0
        half = left + (evidence_start - left) // 2
        lookbehind = max(0, left - _BOUNDARY_LOOKAHEAD_CHARS)  # a stop just before `left` counts too
        for boundary in sentence_boundaries(self.text, lookbehind, half):
            if boundary.next_start > left:
                return boundary.next_start
        space = _WHITESPACE.search(self.text, left, evidence_start)
        return space.end() if space else evidence_start

    def _snap_end(self, evidence_end: int, right: int) -> int:
        """The last sentence end in the outer half of (evidence_end, right], else a word end."""
        if right >= len(self.text):
            return len(self.text)
        half = evidence_end + (right - evidence_end) // 2
        last_end = None
        lookahead = min(len(self.text), right + _BOUNDARY_LOOKAHEAD_CHARS)
        for boundary in sentence_boundaries(self.text, half, lookahead):
            if boundary.end > right:
                break
            last_end = boundary.end
        if last_end is not None:
            return last_end
        space = self.text.rfind(" ", evidence_end, right)
        newline = self.text.rfind("\n", evidence_end, right)
        cut = max(space, newline)
        return cut if cut > evidence_end else evidence_end


def merge_spans(spans: Sequence[tuple[int, int]]) -> list[list[int]]:
    """`spans` sorted, with overlapping or touching spans merged: [[start, end], ...]."""
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


def evidence_chars(spans: Sequence[tuple[int, int]]) -> int:
    """Characters of the text that `spans` cover (overlaps counted once): the least excerpt budget
    that holds them."""
    if len(spans) == 1:
        return spans[0][1] - spans[0][0]
    return sum(end - start for start, end in merge_spans(spans))


def _display_text(text: str) -> str:
    return unwrap_text(unicodedata.normalize("NFKC", text).replace("\u00ad", ""))


def unwrap_text(text: str) -> str:
    """Undo hard line wrapping: join hyphenated line breaks ('methyl-\\nation' -> 'methylation',
    '5-aza-\\n2' -> '5-aza-2'), turn other line breaks into spaces, keep paragraphs (one blank line
    between), collapse runs of whitespace."""
    paragraphs: list[str] = []
    current: list[str] = []
    for raw in text.split("\n"):
        line = " ".join(raw.split())
        if not line:
            if current:
                paragraphs.append("".join(current))
                current = []
            continue
        if current:
            previous = current[-1]
            if previous[-1] == "-" and len(previous) >= 2 and previous[-2].isalnum():
                if previous[-2].islower() and line[0].islower():  # a word hyphenated at the break
                    current[-1] = previous[:-1]
                # else a compound broken after its hyphen ('5-aza-' + '2'): keep it, join tightly
            else:
                current.append(" ")
        current.append(line)
    if current:
        paragraphs.append("".join(current))
    return "\n\n".join(paragraphs)


PaperStatus = Literal["ok", "changed", "missing", "unreadable", "outside_directory", "no_directory"]


@dataclass(frozen=True, slots=True)
class LoadedPaper:
    status: PaperStatus
    text: PaperText | None = None
    path: str | None = None
    detail: str = ""


def read_teacher_text(name: str, data: bytes, content_sha: str) -> str:
    """The text the teacher read of a paper file: read as the extraction reads it, with its back
    matter left out (the default) or, when that does not give the recorded content, kept.

    A text file without back matter is its whole normalised text: that is tried first, as it is
    most papers of a large corpus and costs a tenth of a full read (sections, identifiers)."""
    if detect_format(name, data[:4096]) in ("text", "markdown"):
        whole = normalise_text(decode_text_bytes(data)[0])
        if content_sha256(whole) == content_sha:
            return whole
    result = read_paper_bytes(name, data)
    if content_sha256(result.paper.text) != content_sha and result.omitted.sections:
        return read_paper_bytes(name, data, ReadingOptions(keep_back_matter=True)).paper.text
    return result.paper.text


class PaperLibrary:
    """Finds the paper of a record under the papers directory (the extraction's input directory)."""

    def __init__(self, papers_directory: str | Path | None) -> None:
        self.root = Path(papers_directory).resolve() if papers_directory is not None else None
        if self.root is not None and not self.root.is_dir():
            raise FileNotFoundError(f"{papers_directory}: papers directory not found")
        self._root = str(self.root) if self.root is not None else ""
        self._inside_prefix = self._root.rstrip(os.sep) + os.sep

    def load(self, source_paths: list[str], content_sha: str) -> LoadedPaper:
        """The first of `source_paths` whose content still has `content_sha`; else a readable one
        flagged 'changed'; else the reason none could be used."""
        return self.load_many([(source_paths, content_sha)])[0]

    def load_many(self, requests: Sequence[tuple[list[str], str]]) -> list[LoadedPaper]:
        """`load` of each (source_paths, content_sha); the texts are indexed together (fewer numpy calls)."""
        found = [self._find(source_paths, content_sha) for source_paths, content_sha in requests]
        texts = iter(PaperText.many([text for _, text in found if text is not None]))
        return [paper if text is None else replace(paper, text=next(texts)) for paper, text in found]

    def _find(self, source_paths: list[str], content_sha: str) -> tuple[LoadedPaper, str | None]:
        """The paper's status (without its PaperText) and its normalised text, if one was readable."""
        if self.root is None:
            return LoadedPaper("no_directory", detail="no papers directory given"), None
        fallback: tuple[LoadedPaper, str] | None = None
        problem = LoadedPaper("missing", detail=f"none of {source_paths} exists under {self.root}")
        for relative in source_paths:
            # Lexical check (no syscalls): a source path may not climb out of the papers directory.
            # (String operations: pathlib's per-call parsing costs more than reading a small paper.)
            path = os.path.normpath(os.path.join(self._root, relative))
            if path != self._root and not path.startswith(self._inside_prefix):
                problem = LoadedPaper("outside_directory", detail=f"{relative} lies outside {self.root}")
                continue
            try:
                with open(path, "rb") as handle:
                    data = handle.read()
                text = read_teacher_text(path, data, content_sha)
            except FileNotFoundError:
                continue
            except (OSError, UnreadablePaperError) as exc:
                problem = LoadedPaper("unreadable", path=str(path), detail=f"{relative}: {exc}")
                continue
            if content_sha256(text) == content_sha:
                return LoadedPaper("ok", None, path), text
            if fallback is None:
                fallback = (
                    LoadedPaper("changed", None, path, detail=f"{relative}: content differs from the record"),
                    text,
                )
        return fallback or (problem, None)
