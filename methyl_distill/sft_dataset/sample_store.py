"""Samples spilled to disk as they are made, so memory holds only small per-sample metadata.

At hundreds of thousands of samples the texts (excerpts, answers, JSON targets) run to gigabytes;
the store appends each shard's finished JSON lines to a spill file in the staging folder and keeps
their offsets, papers, styles, token counts, flags and markers. Splitting, capping and deduplicating
work on that metadata; the split files are then written by reading the lines back in final order.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path

from methyl_distill.sft_dataset.shard_worker import ShardOutput


class SampleStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = path.open("wb")
        self._offsets = array("q")
        self.papers: list[str] = []
        self.styles: list[str] = []
        self.tokens = array("q")
        self.flags: list[tuple[str, ...]] = []
        self.markers: list[tuple[str, ...]] = []
        self.not_reported_draws: dict[int, float] = {}  # sample index -> draw, for 'not reported' answers

    def __len__(self) -> int:
        return len(self._offsets)

    def add_shard(self, shard: ShardOutput) -> None:
        base = len(self._offsets)
        for line in shard.lines:
            self._offsets.append(self._handle.tell())
            self._handle.write(line)
            self._handle.write(b"\n")
        self.papers.extend(shard.papers)
        self.styles.extend(shard.styles)
        self.tokens.extend(shard.tokens)
        self.flags.extend(shard.flags)
        self.markers.extend(shard.markers)
        self.not_reported_draws.update(
            {base + index: draw for index, draw in shard.not_reported_draws.items()}
        )

    def finish_writing(self) -> None:
        self._handle.close()

    def lines(self, indices: Iterable[int]) -> Iterator[str]:
        """The JSON lines of `indices`, in that order (without the newline)."""
        with self.path.open("rb") as handle:
            for index in indices:
                handle.seek(self._offsets[index])
                yield handle.readline().rstrip(b"\n").decode("utf-8")

    def remove(self) -> None:
        if not self._handle.closed:
            self._handle.close()
        self.path.unlink(missing_ok=True)
