"""Which marker records are extraction targets, and how they are packed into samples that fit.

A marker record is *grounded* when its paper contains its evidence: at least one of its quotes is
found (the project's quote rule, `PaperText.locate`) and, under grounding 'drop', none is missing
(else it is left out as `marker_ungrounded`). Grounded markers are the extraction targets, and
what marker coverage counts (`marker_coverage.py`).

Packing happens in two steps, so that a paper's markers fit `max_length` instead of being dropped:

1. By characters, when samples are built (`pack_by_evidence`): markers in document order (of
   their first quote) share a sample while their evidence fills at most 60% of the excerpt budget.
   A marker whose evidence alone is longer than the budget gets a sample of its own whose excerpt
   is its evidence.
2. By tokens, when lengths are enforced (`sample_length.py`): a sample over `max_length` is split
   into contiguous groups of its markers balanced by size (`balanced_ranges`), again until each
   fits or holds one marker; a single marker's excerpt is then shortened around its evidence, down
   to the evidence alone. Only a marker that does not fit even so is dropped
   (`marker_evidence_too_long`).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import NamedTuple

from methyl_distill.extraction.records import MarkerRecord
from methyl_distill.sft_dataset.config import DatasetConfig
from methyl_distill.sft_dataset.paper_text import PaperText, evidence_chars

# Markers share an excerpt while their evidence fills at most this share of its budget.
_EVIDENCE_SHARE = 0.6
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


class LocatedMarker(NamedTuple):
    """A grounded marker record: its position in the record (its identity within the paper), where
    its evidence lies in the paper's text, and whether one of its quotes was not found (kept under
    grounding 'flag'). A named tuple: one is made per marker of every paper."""

    position: int  # in the record's markers: its identity within the paper
    record: MarkerRecord
    spans: tuple[tuple[int, int], ...]
    partly_missing: bool
    start: int
    evidence_chars: int

    @property
    def name(self) -> str:
        """The marker as the paper names it (for reports)."""
        return self.record.marker or self.record.gene or f"marker {self.position + 1}"


def locate_markers(
    markers: Sequence[MarkerRecord], text: PaperText, config: DatasetConfig
) -> tuple[list[LocatedMarker], int]:
    """The grounded markers in document order, and how many markers are not grounded."""
    located: list[LocatedMarker] = []
    ungrounded = 0
    for index, marker in enumerate(markers):
        spans: list[tuple[int, int]] = []
        missing = 0
        for quote in marker.evidence:
            found = text.locate(quote, config.min_quote_chars)
            if found.status == "found":
                spans.extend(found.spans)
            elif found.status == "missing":
                missing += 1
        if not spans or (missing and config.grounding == "drop"):
            ungrounded += 1
            continue
        located.append(
            LocatedMarker(
                position=index,
                record=marker,
                spans=tuple(spans),
                partly_missing=missing > 0,
                start=min(start for start, _ in spans),
                evidence_chars=evidence_chars(spans),
            )
        )
    located.sort(key=lambda marker: (marker.start, marker.position))
    return located, ungrounded


def pack_by_evidence(located: Sequence[LocatedMarker], budget: int) -> list[list[LocatedMarker]]:
    """Markers in order, grouped while their evidence fills at most 60% of `budget` characters; a
    marker whose evidence exceeds that share starts a group (and one over it stays alone)."""
    groups: list[list[LocatedMarker]] = []
    used = 0
    for marker in located:
        if groups and used + marker.evidence_chars <= _EVIDENCE_SHARE * budget:
            groups[-1].append(marker)
            used += marker.evidence_chars
        else:
            groups.append([marker])
            used = marker.evidence_chars
    return groups


def balanced_ranges(weights: Sequence[int], parts: int) -> list[tuple[int, int]]:
    """`parts` contiguous, non-empty (start, end) ranges of `weights` (fewer if there are fewer
    items), each cut where the running total passes the next equal share of the whole."""
    parts = max(1, min(parts, len(weights)))
    total = sum(weights)
    ranges: list[tuple[int, int]] = []
    start = running = 0
    for position, weight in enumerate(weights):
        running += weight
        cuts_left = parts - len(ranges) - 1
        if cuts_left == 0:
            break
        items_after = len(weights) - position - 1
        if items_after >= cuts_left and (
            items_after == cuts_left or running * parts >= total * (len(ranges) + 1)
        ):
            ranges.append((start, position + 1))
            start = position + 1
    ranges.append((start, len(weights)))
    return ranges


def extraction_identity(markers: Sequence[LocatedMarker]) -> str:
    """The deduplication text of an extraction sample: each marker's evidence with every token
    (between white space) prefixed by a short tag of the marker's name (4 base-36 digits of its
    CRC-32), so that the word bigrams deduplication compares are the marker's own. Two samples are
    then (near) duplicates only when they hold the same markers with (nearly) the same evidence; two
    markers of a paper that share a quote ('a panel of GSTP1, APC and RASSF1A ...') are different
    targets, not duplicates."""
    parts = []
    for marker in markers:
        code = zlib.crc32(marker.name.casefold().encode())
        tag = "".join(_BASE36[code // 36**power % 36] for power in range(4))
        tokens = " ".join(marker.record.evidence).split()
        parts.append(tag + f" {tag}".join(tokens) if tokens else tag)
    return "\n".join(parts)
