"""The loss curve of a fine-tuning run as a PNG, from the trainer's log history."""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def loss_series(log_history: Iterable[Mapping[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """(step, loss) points of the training loss and of the validation loss, finite values only."""
    series: dict[str, list[tuple[int, float]]] = {"train": [], "eval": []}
    for entry in log_history:
        step = entry.get("step")
        if not isinstance(step, int):
            continue
        for key, name in (("loss", "train"), ("eval_loss", "eval")):
            value = entry.get(key)
            if isinstance(value, int | float) and math.isfinite(value):
                series[name].append((step, float(value)))
    return series


def plot_loss_curve(log_history: Iterable[Mapping[str, Any]], path: Path, *, title: str) -> Path:
    """Write the training (and validation) loss by step to `path` as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    series = loss_series(log_history)
    if not series["train"] and not series["eval"]:
        raise ValueError("the log history has no loss values to plot")
    figure, axes = plt.subplots(figsize=(7, 4), dpi=110)
    try:
        for name, label, style in (("train", "training loss", "-o"), ("eval", "validation loss", "-s")):
            points = series[name]
            if points:
                steps, losses = zip(*points, strict=True)
                axes.plot(steps, losses, style, markersize=3, label=label)
        axes.set_xlabel("optimizer step")
        axes.set_ylabel("cross-entropy loss")
        axes.set_title(title)
        axes.grid(alpha=0.3)
        axes.legend()
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png")
    finally:
        plt.close(figure)
    return path


def png_data_uri(path: Path) -> str:
    """The PNG at `path` as a data URI, for embedding in a markdown artifact."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")
