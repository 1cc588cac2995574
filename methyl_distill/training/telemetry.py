"""Where a fine-tune reports its metrics: TensorBoard always, Weights & Biases when configured.

TensorBoard needs no account and no server: the trainer writes event files into the run's own
folder (`<output_directory>/tensorboard/`), and `tensorboard --logdir <output_directory>` shows
them, live during training and afterwards. The scalars are the trainer's log entries (`train/loss`,
`eval/loss`, `train/learning_rate`, `train/grad_norm`, ...), the same entries ms-swift returns as
`log_history`, from which `training_log.jsonl` and `loss_curve.png` are made.

Weights & Biases is added when the environment of the process that trains (the GPU worker) names a
project and holds a key: `WANDB_API_KEY` and `WANDB_PROJECT` (wandb's own variables; `WANDB_ENTITY`,
`WANDB_MODE`, `WANDB_NAME` are read by wandb itself). wandb is not a dependency of the project:
install it where you want it (`pip install wandb`); with the variables set and no wandb installed
the fine-tune stops before loading the model.

transformers (>= 5.15) takes the TensorBoard folder from `TENSORBOARD_LOGGING_DIR`, which ms-swift
only sets when unset: the recipe sets it before each run, so that a second fine-tune in the same
process writes into its own folder.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path

TENSORBOARD_DIR = "tensorboard"
TENSORBOARD_DIR_VARIABLE = "TENSORBOARD_LOGGING_DIR"
WANDB_VARIABLES = ("WANDB_API_KEY", "WANDB_PROJECT")


def wandb_configured(environ: Mapping[str, str]) -> bool:
    return all(environ.get(name) for name in WANDB_VARIABLES)


def report_targets(environ: Mapping[str, str] | None = None) -> list[str]:
    """ms-swift's `report_to`: tensorboard, plus wandb when `WANDB_API_KEY` and `WANDB_PROJECT` are set.

    Raises ModuleNotFoundError when W&B is configured and wandb is not installed."""
    environ = os.environ if environ is None else environ
    targets = ["tensorboard"]
    if wandb_configured(environ):
        if importlib.util.find_spec("wandb") is None:
            raise ModuleNotFoundError(
                "WANDB_API_KEY and WANDB_PROJECT are set, so the fine-tune would report to Weights & Biases, "
                "but wandb is not installed here: pip install wandb (or unset WANDB_PROJECT)"
            )
        targets.append("wandb")
    return targets


def tensorboard_directory(output_directory: Path) -> Path:
    return Path(output_directory) / TENSORBOARD_DIR


def read_scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the TensorBoard event files under `directory`: tag -> [(step, value)], in
    step order (a resumed run's files are read together)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, dict[int, float]] = {}
    for events in sorted(Path(directory).rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags().get("scalars", []):
            for event in accumulator.Scalars(tag):
                scalars.setdefault(tag, {})[event.step] = event.value
    return {tag: sorted(points.items()) for tag, points in scalars.items()}
