"""Samples spilled to disk as they are made, so memory holds only small per-sample metadata.

At hundreds of thousands of samples the texts (excerpts, answers, JSON targets) run to gigabytes;
the store appends each shard's finished JSON lines to a spill file in the staging folder and keeps
their offsets, papers, styles, token counts, flags and markers. Splitting, capping and deduplicating
work on that metadata; the split files are then written by reading the lines back in final order.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path

from methyl_distill.sft_dataset.shard_worker import ShardOutput


class SampleStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = path.open("wb")
        self._offsets = array("q")
        self._size = 0  # bytes written so far (no tell() per line: each is a seek syscall)
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
        offsets, size = self._offsets, self._size
        for line in shard.lines:
            offsets.append(size)
            size += len(line) + 1
        if shard.lines:
            self._handle.write(b"\n".join(shard.lines))
            self._handle.write(b"\n")
        self._size = size
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

    def lines(self, indices: Iterable[int]) -> Iterator[bytes]:
        """The JSON lines of `indices` (UTF-8, each with its newline), in that order."""
        offsets, count = self._offsets, len(self._offsets)
        # One pread of exactly the line's bytes: a buffered readline after a seek would read a whole
        # buffer per line, and the lines come in shuffled order.
        with self.path.open("rb", buffering=0) as handle:
            descriptor = handle.fileno()
            for index in indices:
                start = offsets[index]
                end = offsets[index + 1] if index + 1 < count else self._size
                line = os.pread(descriptor, end - start, start)
                while len(line) < end - start:  # a short read (rare): read the rest
                    more = os.pread(descriptor, end - start - len(line), start + len(line))
                    if not more:
                        raise OSError(f"{self.path}: truncated at sample {index}")
                    line += more
                yield line

    def remove(self) -> None:
        if not self._handle.closed:
            self._handle.close()
        self.path.unlink(missing_ok=True)
