"""Keeping the run's aggregate files up to date while papers finish, so a killed run shows its work.

`records.jsonl`, `all_results.json` and `failures.jsonl` hold every paper of the input folder. During
a run they are rewritten (each atomically) as papers finish: the records and failures of this run so
far, plus, for papers this run has not reached yet, the record the previous run left for the same
content (renamed to this run's files). A run killed at any point (even `kill -9`) therefore leaves
files that show everything it finished and nothing of papers that are gone.

Rewriting costs time that grows with the corpus, so a rewrite waits at least `COST_FACTOR` times as
long as the last one took (never more than `MAX_INTERVAL_S`): with a few hundred papers every paper
is written at once; with tens of thousands the files lag by seconds. The end of the run writes them
once more and removes the `processed_files/` entries of files that no longer hold an extracted paper
(deleted, renamed, or now failing); a stopped run keeps the previous records of papers it did not reach.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from pydantic import ValidationError

from methyl_distill.extraction.outputs import (
    ExtractionOutputPaths,
    prune_processed_files,
    write_extraction_outputs,
)
from methyl_distill.extraction.papers import Paper
from methyl_distill.extraction.records import PaperRecord
from methyl_distill.extraction.run_tally import RunTally, record_for_files_of

logger = logging.getLogger(__name__)

COST_FACTOR = 20.0
MAX_INTERVAL_S = 10.0


def read_records(path: str | Path) -> list[PaperRecord]:
    """The records of a records.jsonl (lines that do not parse are skipped: the file is rewritten)."""
    records: list[PaperRecord] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return records
    for line in lines:
        try:
            records.append(PaperRecord.model_validate_json(line))
        except ValidationError:
            continue
    return records


class LiveAggregates:
    """The aggregate files of one run, rewritten as its papers finish."""

    def __init__(
        self,
        output_directory: str | Path,
        papers: Iterable[Paper],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.paths = ExtractionOutputPaths.under(output_directory)
        previous = {record.content_sha256: record for record in read_records(self.paths.records)}
        self._carried = {
            paper.content_sha256: record_for_files_of(previous[paper.content_sha256], paper)
            for paper in papers
            if paper.content_sha256 in previous
        }
        self._clock = clock
        self._next_write = clock()

    def paper_done(self, paper: Paper, tally: RunTally) -> None:
        """A paper finished (extracted, cached or failed): rewrite the files if a rewrite is due."""
        self._carried.pop(paper.content_sha256, None)
        if self._clock() >= self._next_write:
            self._write(tally)

    def finish(self, tally: RunTally, *, stopped: bool = False) -> ExtractionOutputPaths:
        """The final files of the run, and no processed file of a file that holds no extracted paper.
        A `stopped` run keeps the previous run's records of the papers it did not reach."""
        if not stopped:
            self._carried.clear()
        paths = self._write(tally)
        kept = [*tally.records, *self._carried.values()]
        removed = prune_processed_files(
            paths.output_directory, {file_id for record in kept for file_id in record.file_ids}
        )
        if removed:
            logger.info("Removed %d processed file(s) of papers that are gone or now fail", removed)
        return paths

    def _write(self, tally: RunTally) -> ExtractionOutputPaths:
        started = self._clock()
        records = [*tally.records, *self._carried.values()]
        paths = write_extraction_outputs(
            self.paths.output_directory, records, tally.failures, processed_files=False
        )
        took = self._clock() - started
        self._next_write = self._clock() + min(MAX_INTERVAL_S, COST_FACTOR * took)
        return paths
