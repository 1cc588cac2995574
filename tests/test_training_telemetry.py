"""Training telemetry: TensorBoard event files in the run's folder holding the loss the curve is drawn
from, W&B only when configured, and the fine-tune followed on the console (tiny Mistral on CPU)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from methyl_distill.ops.console_progress import ConsoleProgress
from methyl_distill.ops.run_progress import watching
from methyl_distill.training.finetune import FinetuneConfig, finetune
from methyl_distill.training.telemetry import read_scalars, report_targets

QA = (
    ("Which gene is hypermethylated in glioblastoma?", "MGMT promoter hypermethylation."),
    ("Which probe is hypomethylated in smokers?", "cg05575921 in AHRR is hypomethylated."),
)
STEPS = 4


def test_weights_and_biases_only_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    assert report_targets({}) == ["tensorboard"]
    assert report_targets({"WANDB_API_KEY": "k"}) == ["tensorboard"]  # no project: not configured
    configured = {"WANDB_API_KEY": "k", "WANDB_PROJECT": "methyl-distill"}
    real_find_spec = importlib.util.find_spec

    def wandb_absent(name: str, *args: object):
        return None if name == "wandb" else real_find_spec(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", wandb_absent)
    with pytest.raises(ModuleNotFoundError, match="pip install wandb"):
        report_targets(configured)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: object())
    assert report_targets(configured) == ["tensorboard", "wandb"]


@pytest.mark.slow
def test_fine_tune_writes_tensorboard_events_with_the_logged_loss_and_shows_its_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("WANDB_API_KEY", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    for split, repeat in (("train", 8), ("val", 1)):
        with (dataset / f"{split}.jsonl").open("w", encoding="utf-8") as handle:
            for _ in range(repeat):
                for question, answer in QA:
                    messages = [
                        {"role": "user", "content": question},
                        {"role": "assistant", "content": answer},
                    ]
                    handle.write(json.dumps({"messages": messages}) + "\n")
    config = FinetuneConfig(
        max_steps=STEPS,
        save_steps=STEPS,
        learning_rate=5e-3,
        batch_size=4,
        max_length=128,
        gradient_checkpointing=False,
        device="cpu",
        seed=0,
    )
    lines: list[str] = []
    console = ConsoleProgress(emit_line=lines.append, poll_s=0.05, interval_s=0.05)
    console.start()
    try:
        with watching(console):
            summary = finetune(
                dataset, tmp_path / "run", preset="tiny-mistral", config=config, cache_dir=tmp_path / "cache"
            )
    finally:
        console.stop()

    # Event files in the run's own folder, holding every logged loss, step for step as the log
    # history that training_log.jsonl and loss_curve.png are made of.
    assert summary.tensorboard_path == str((tmp_path / "run" / "tensorboard").resolve())
    assert list(Path(summary.tensorboard_path).glob("events.out.tfevents.*"))
    scalars = read_scalars(Path(summary.tensorboard_path))
    log = [json.loads(line) for line in Path(summary.training_log_path).read_text().splitlines()]
    logged = [(entry["step"], entry["loss"]) for entry in log if "loss" in entry]
    assert len(logged) == STEPS and all(math.isfinite(loss) for _, loss in logged)
    assert [step for step, _ in scalars["train/loss"]] == [step for step, _ in logged]
    assert [value for _, value in scalars["train/loss"]] == pytest.approx(
        [loss for _, loss in logged], rel=1e-6
    )
    eval_logged = [(entry["step"], entry["eval_loss"]) for entry in log if "eval_loss" in entry]
    assert [(s, pytest.approx(v, rel=1e-6)) for s, v in scalars["eval/loss"]] == eval_logged
    assert "train/learning_rate" in scalars
    from methyl_distill.tasks.training import finetune_markdown  # the fine-tune's Prefect artifact

    assert f"`tensorboard --logdir {summary.tensorboard_path}`" in finetune_markdown(summary)

    # The console followed it: the steps as they were logged, the loss, and a summary line.
    assert lines[0] == "fine-tune: loading the model (started)"
    steps = [line for line in lines if line.startswith("fine-tune: training, ")]
    assert steps and f"/{STEPS} steps" in steps[-1] and "; loss " in steps[-1], lines
    assert lines[-1].startswith(f"fine-tune: saving, {STEPS}/{STEPS} steps (100%)"), lines
    assert f"loss {logged[-1][1]:.4f}" in lines[-1] and "eval loss" in lines[-1]
