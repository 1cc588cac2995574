"""The fine-tune as the command's console shows it: phase, optimizer step of the total, latest losses.

ms-swift appends each of the trainer's log entries to `<output_dir>/logging.jsonl` as it logs them
(`{"loss": ..., "global_step/max_steps": "3/30", "learning_rate": ..., ...}`; an evaluation adds
`eval_loss`). `TrainingLogProgress` reads the lines added since it was made whenever it is asked
for a snapshot, so it follows a training run in this process or in the processes of a launcher
alike, and costs nothing while nobody asks.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any

from methyl_distill.ops.run_progress import StageSnapshot

STAGE = "fine-tune"
SWIFT_LOG_FILE = "logging.jsonl"


class TrainingLogProgress:
    """A `ProgressSource` that follows ms-swift's logging.jsonl (only the lines written after it was made)."""

    def __init__(self, log_path: Path, *, phase: str = "loading the model") -> None:
        self.log_path = Path(log_path)
        self.phase = phase
        self._offset = self.log_path.stat().st_size if self.log_path.is_file() else 0
        self._lock = threading.Lock()
        self.step = 0
        self.total_steps: int | None = None
        self.loss: float | None = None
        self.eval_loss: float | None = None

    def snapshot(self) -> StageSnapshot:
        with self._lock:
            self._read_new_entries()
            details: list[tuple[str, str]] = []
            if self.loss is not None:
                details.append(("loss", f"{self.loss:.4f}"))
            if self.eval_loss is not None:
                details.append(("eval loss", f"{self.eval_loss:.4f}"))
            return StageSnapshot(
                stage=STAGE,
                done=self.step,
                total=self.total_steps,
                unit="steps",
                phase=self.phase,
                details=tuple(details),
            )

    def _read_new_entries(self) -> None:
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return
        complete = chunk.rfind(b"\n") + 1  # a line still being written is read next time
        self._offset += complete
        for line in chunk[:complete].splitlines():
            try:
                entry = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(entry, dict):
                self._take(entry)

    def _take(self, entry: dict[str, Any]) -> None:
        steps = entry.get("global_step/max_steps")
        if not isinstance(steps, str) or "/" not in steps:
            return  # ms-swift's closing summary, not a log entry
        done, _, total = steps.partition("/")
        if done.isdigit() and total.isdigit():
            self.step, self.total_steps = int(done), int(total)
            if self.phase == "loading the model":
                self.phase = "training"
        for key, attribute in (("loss", "loss"), ("eval_loss", "eval_loss")):
            value = entry.get(key)
            if isinstance(value, int | float) and math.isfinite(value):
                setattr(self, attribute, float(value))
