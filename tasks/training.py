"""Prefect tasks of the training stage: fine-tune and evaluate, tagged `gpu`, with their artifacts.

The work is in `methyl_distill.training`; these tasks add the tag that a concurrency limit uses to
keep one model per GPU (`prefect concurrency-limit create gpu 1`), and artifacts: the loss curve
(a PNG embedded in markdown) with the final metrics, and the evaluation report. No Prefect caching:
a fine-tune's output folder is its own record (a finished run is returned as it is, an interrupted
one resumes from its last checkpoint), so rerunning the flow is always safe.
"""

from __future__ import annotations

import os
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from methyl_distill.training.distributed_launch import launch_plan
from methyl_distill.training.evaluation import EvaluationSummary, evaluate
from methyl_distill.training.finetune import FinetuneConfig, FinetuneSummary, finetune
from methyl_distill.training.loss_plot import png_data_uri
from methyl_distill.training.runtime_device import DeviceRequest


def _number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def finetune_markdown(summary: FinetuneSummary) -> str:
    """The fine-tune artifact: loss curve and final metrics."""
    rows = [
        ("preset", summary.preset),
        ("base model", f"`{summary.base_model}`"),
        ("device", f"{summary.device} ({summary.torch_dtype}, {summary.attn_impl})"),
        ("samples", f"{summary.train_samples} train / {summary.val_samples} validation"),
        ("optimizer steps", str(summary.global_step)),
        (
            "first / final training loss",
            f"{_number(summary.first_train_loss)} / {_number(summary.final_train_loss)}",
        ),
        ("final validation loss", _number(summary.final_eval_loss)),
        ("training time", f"{_number(summary.train_runtime_s, 1)} s"),
        ("trainable parameters", summary.trainable_parameters or "n/a"),
        ("resumed from", f"`{summary.resumed_from}`" if summary.resumed_from else "no (fresh run)"),
        (
            "TensorBoard",
            f"`tensorboard --logdir {summary.tensorboard_path}`" if summary.tensorboard_path else "n/a",
        ),
        ("adapter", f"`{summary.adapter_path}`"),
        ("merged model", f"`{summary.merged_model_path}`" if summary.merged_model_path else "not merged"),
    ]
    table = "\n".join(["| | |", "| --- | --- |", *(f"| {name} | {value} |" for name, value in rows)])
    image = f"![loss curve]({png_data_uri(Path(summary.loss_curve_path))})"
    return f"# LoRA fine-tune of {summary.preset}\n\n{image}\n\n{table}\n"


@task(name="finetune", tags=["gpu"])
def finetune_task(
    dataset_directory: str,
    output_directory: str,
    preset: str,
    config: FinetuneConfig,
    cache_dir: str | None = None,
    model_source: str | None = None,
) -> FinetuneSummary:
    """LoRA SFT with ms-swift (see `methyl_distill.training.finetune`); publishes the loss curve."""
    logger = get_run_logger()
    summary = finetune(
        Path(dataset_directory),
        Path(output_directory),
        preset=preset,
        config=config,
        cache_dir=Path(cache_dir) if cache_dir else None,
        model_source=model_source,
        # GPUs and machines: config.num_gpus, else the job's METHYL_DISTILL_GPUS (a deployment's job
        # variables), and the torchrun rendezvous variables (NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT).
        launch=launch_plan(config.num_gpus, os.environ),
    )
    create_markdown_artifact(
        key="finetune-loss-curve",
        markdown=finetune_markdown(summary),
        description=f"Loss curve and final metrics of the LoRA fine-tune in {summary.output_directory}",
    )
    logger.info(
        "Fine-tuned %s for %d steps: loss %s -> %s; adapter %s",
        preset,
        summary.global_step,
        _number(summary.first_train_loss),
        _number(summary.final_train_loss),
        summary.adapter_path,
    )
    return summary


@task(name="evaluate", tags=["gpu"])
def evaluate_task(
    test_path: str,
    adapter_path: str,
    output_directory: str,
    max_new_tokens: int = 512,
    limit: int | None = None,
    device: DeviceRequest = "auto",
) -> EvaluationSummary:
    """Base vs tuned on the test split (see `methyl_distill.training.evaluation`); publishes the report."""
    summary = evaluate(
        Path(test_path),
        Path(adapter_path),
        Path(output_directory),
        max_new_tokens=max_new_tokens,
        limit=limit,
        device=device,
    )
    create_table_artifact(
        key="evaluation-metrics",
        table=[
            {
                "model": name,
                "examples": scores.examples,
                "rouge_l_f1": round(scores.rouge_l_f1, 4),
                "marker_recall": None if scores.marker_recall is None else round(scores.marker_recall, 4),
                "direction_agreement": (
                    None if scores.direction_agreement is None else round(scores.direction_agreement, 4)
                ),
            }
            for name, scores in summary.metrics.items()
        ],
        description="Base vs tuned student on the test split",
    )
    create_markdown_artifact(
        key="evaluation-report",
        markdown=Path(summary.report_markdown_path).read_text(encoding="utf-8"),
        description=f"Evaluation report ({summary.report_json_path})",
    )
    return summary
