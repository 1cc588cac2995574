"""Samples spilled to disk as they are made, so memory holds only small per-sample metadata.

At hundreds of thousands of samples the texts (excerpts, answers, JSON targets) run to gigabytes;
the store writes each finished sample's JSON line to a spill file in the staging folder and keeps
its offset, paper, style, token count, flags and markers. Splitting, capping and deduplicating work
on that metadata; the split files are then written by reading the lines back in their final order.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path

from methyl_distill.sft_dataset.dataset_writer import sample_line
from methyl_distill.sft_dataset.sample_builder import Sample, unit_draw


def sample_messages(sample: Sample, system_prompt: str) -> list[dict[str, str]]:
    messages = [{"role": "user", "content": sample.user}, {"role": "assistant", "content": sample.assistant}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


class SampleStore:
    def __init__(self, path: Path, system_prompt: str, include_meta: bool, seed: int) -> None:
        self.path = path
        self._system_prompt = system_prompt
        self._include_meta = include_meta
        self._seed = seed
        self._handle = path.open("wb")
        self._offsets = array("q")
        self.papers: list[str] = []
        self.styles: list[str] = []
        self.tokens = array("q")
        self.flags: list[tuple[str, ...]] = []
        self.markers: list[tuple[str, ...]] = []
        self.not_reported_draws: dict[int, float] = {}  # sample index -> draw, for 'not reported' answers
        self.grounded_answered = 0

    def __len__(self) -> int:
        return len(self._offsets)

    def add(self, samples: Iterable[Sample]) -> None:
        for sample in samples:
            meta = None
            if self._include_meta:
                meta = {
                    "file_id": sample.file_id,
                    "style": sample.style,
                    "flags": list(sample.flags),
                    "markers": list(sample.markers),
                    "tokens": sample.tokens,
                }
            line = sample_line(sample_messages(sample, self._system_prompt), meta).encode("utf-8") + b"\n"
            index = len(self._offsets)
            self._offsets.append(self._handle.tell())
            self._handle.write(line)
            self.papers.append(sample.paper)
            self.styles.append(sample.style)
            self.tokens.append(sample.tokens)
            self.flags.append(sample.flags)
            self.markers.append(sample.markers)
            if sample.not_reported:
                self.not_reported_draws[index] = unit_draw(
                    self._seed, sample.paper, "not_reported", sample.question
                )
            elif sample.style == "grounded":
                self.grounded_answered += 1

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
