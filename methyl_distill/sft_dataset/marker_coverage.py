"""Marker coverage: how many of the records' grounded markers reach the training data.

A marker record is *grounded* when its paper contains its evidence by the dataset stage's rule
(`extraction_packing.locate_markers`: at least one quote found, and under grounding 'drop' none
missing); markers of papers that could not be read are not counted. A grounded marker is
*covered* when it is in the assistant content of at least one sample written to train, validation
or test (after the length rules, deduplication and the 'not reported' cap): as one of the records
of an extraction sample's `{"markers": [...]}`, or named (gene symbol, marker name or CpG id) in a
Q&A sample's answer. Markers are told apart by paper and position in the record, so two records of
the same gene in one paper are counted as two.

Bookkeeping stays small at hundreds of thousands of papers: each shard numbers its grounded markers
and lists (sample, marker) pairs (`ShardCoverage`); the build offsets and collects them
(`CoverageTally`) and, once it knows which samples are kept, marks the covered markers with numpy.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping

import numpy as np
from pydantic import BaseModel, Field

# Papers named in a coverage warning.
_WARNING_PAPERS = 10


class PaperCoverage(BaseModel):
    grounded: int = Field(description="Grounded markers of the paper's record.")
    covered: int = Field(description="Of them, the markers in at least one written sample.")
    missing: list[str] = Field(description="Names of the grounded markers in no written sample.")


class MarkerCoverage(BaseModel):
    """Grounded markers of the records, and how many reach a written sample (see the module)."""

    grounded: int = Field(default=0, description="Grounded markers in the records.")
    covered: int = Field(default=0, description="Grounded markers in at least one written sample.")
    papers: int = Field(default=0, description="Papers with at least one grounded marker.")
    complete_papers: int = Field(default=0, description="Papers whose grounded markers are all covered.")
    incomplete: dict[str, PaperCoverage] = Field(
        default_factory=dict,
        description="Per paper (file id) with a grounded marker in no sample: counts and the missing "
        "markers. A paper not listed here has all its grounded markers covered.",
    )

    @property
    def share(self) -> float:
        return self.covered / self.grounded if self.grounded else 1.0

    def warning(self) -> str | None:
        """A message naming the papers and markers that are missing, or None when all are covered."""
        if self.covered == self.grounded:
            return None
        shown = list(self.incomplete.items())[:_WARNING_PAPERS]
        papers = "; ".join(f"{file_id}: {', '.join(paper.missing)}" for file_id, paper in shown)
        hidden = len(self.incomplete) - len(shown)
        more = f"; ... and {hidden} more papers" if hidden else ""
        return (
            f"{self.grounded - self.covered} of {self.grounded} grounded markers reach no sample "
            f"(in {len(self.incomplete)} paper{'s' if len(self.incomplete) > 1 else ''}): {papers}{more}"
        )


class ShardCoverage:
    """One shard's grounded markers, numbered in paper order, and which of its samples cover which."""

    def __init__(self) -> None:
        self.file_ids: list[str] = []  # per paper with grounded markers
        self.counts: list[int] = []  # its number of grounded markers
        self.names: list[str] = []  # per grounded marker
        self.samples = array("q")  # (sample, marker) pairs: the shard-local sample index ...
        self.markers = array("q")  # ... and the shard-local number of the marker it covers

    def add_paper(self, file_id: str, markers: Iterable[tuple[int, str]]) -> dict[int, int]:
        """Number a paper's grounded markers ((position in the record, name) each); returns
        position -> number, for `add_sample`."""
        numbers: dict[int, int] = {}
        for position, name in markers:
            numbers[position] = len(self.names)
            self.names.append(name)
        if numbers:
            self.file_ids.append(file_id)
            self.counts.append(len(numbers))
        return numbers

    def add_sample(self, sample: int, positions: Iterable[int], numbers: Mapping[int, int]) -> None:
        """Sample `sample` covers the markers at `positions` of its paper's record (those grounded)."""
        for position in positions:
            number = numbers.get(position)
            if number is not None:
                self.samples.append(sample)
                self.markers.append(number)


class CoverageTally:
    """The shards' coverage bookkeeping in build order, measured against the kept samples."""

    def __init__(self) -> None:
        self._file_ids: list[str] = []
        self._counts = array("q")
        self._names: list[str] = []
        self._samples: list[np.ndarray] = []
        self._markers: list[np.ndarray] = []

    def add(self, shard: ShardCoverage, first_sample: int) -> None:
        """A shard's coverage; its samples are numbered from `first_sample` in the build."""
        self._samples.append(np.frombuffer(shard.samples, dtype=np.int64) + first_sample)
        self._markers.append(np.frombuffer(shard.markers, dtype=np.int64) + len(self._names))
        self._file_ids.extend(shard.file_ids)
        self._counts.extend(shard.counts)
        self._names.extend(shard.names)

    def measure(self, keep: np.ndarray) -> MarkerCoverage:
        """Coverage of the grounded markers by the samples where `keep` is true."""
        covered = np.zeros(len(self._names), dtype=bool)
        if self._samples:
            samples, markers = np.concatenate(self._samples), np.concatenate(self._markers)
            covered[markers[keep[samples]]] = True
        counts = np.frombuffer(self._counts, dtype=np.int64)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
        per_paper = np.add.reduceat(covered.astype(np.int64), starts) if counts.size else counts
        coverage = MarkerCoverage(
            grounded=len(self._names),
            covered=int(covered.sum()),
            papers=int(counts.size),
            complete_papers=int((per_paper == counts).sum()),
        )
        for paper in np.flatnonzero(per_paper < counts).tolist():
            start, count = int(starts[paper]), int(counts[paper])
            missing = [self._names[start + k] for k in range(count) if not covered[start + k]]
            file_id = self._file_ids[paper]
            # Two contents under one file id (a file changed between runs) are listed together.
            previous = coverage.incomplete.get(file_id, PaperCoverage(grounded=0, covered=0, missing=[]))
            coverage.incomplete[file_id] = PaperCoverage(
                grounded=previous.grounded + count,
                covered=previous.covered + int(per_paper[paper]),
                missing=previous.missing + missing,
            )
        return coverage
