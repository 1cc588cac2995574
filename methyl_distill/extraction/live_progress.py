"""The extraction stage as the command's console shows it: papers done, tokens per minute, 429s, cost.

Read from what the run keeps anyway: the papers done and the cost from its `RunTally` (a paper
counts when its record or failure is in), the tokens per minute and the refused requests from a
`MeteredBudget` put between the teacher and its budget for the run. Nothing is set up when nobody
watches (`run_progress.is_watched()`): a deployment's run is left exactly as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from methyl_distill.extraction.run_tally import RunTally
from methyl_distill.ops.run_progress import StageSnapshot, is_watched, reporting
from methyl_distill.teacher.usage_meter import MeteredBudget, meter_teacher_budget, unmeter_teacher_budget

STAGE = "extraction"


class ExtractionProgress:
    """A `ProgressSource` over the run's tally and its teacher's metered budget."""

    def __init__(self, total: int, tally: RunTally, meter: MeteredBudget | None) -> None:
        self.total = total
        self.tally = tally
        self.meter = meter

    def snapshot(self) -> StageSnapshot:
        tally = self.tally
        details: list[tuple[str, str]] = []
        if tally.cached:
            details.append(("cached", str(tally.cached)))
        if tally.failed:
            details.append(("failed", str(tally.failed)))
        # Papers extracted in other processes (task workers) pass no request through this meter:
        # then it knows nothing, and shows nothing rather than zeros.
        if self.meter is not None and (self.meter.attempts or not tally.usage.requests):
            limit = self.meter.limit_tokens
            details.append(("tokens/min", f"{self.meter.tokens_last_minute():,} of {limit:,}"))
            details.append(("429s", str(self.meter.refused)))
        details.append(("cost", f"${tally.cost_usd:.2f}"))
        return StageSnapshot(
            stage=STAGE,
            done=len(tally.records) + tally.failed,
            total=self.total,
            unit="papers",
            details=tuple(details),
        )


@contextmanager
def reporting_extraction(total: int, tally: RunTally, teacher: Any) -> Iterator[ExtractionProgress | None]:
    """Report the extraction of `total` papers while the block runs, when someone watches."""
    if not is_watched():
        yield None
        return
    meter = meter_teacher_budget(teacher) if teacher is not None else None
    try:
        source = ExtractionProgress(total, tally, meter)
        with reporting(source):
            yield source
    finally:
        if teacher is not None:
            unmeter_teacher_budget(teacher)
