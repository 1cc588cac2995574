"""The fine-tune flow: a dataset folder (train.jsonl, val.jsonl) -> a LoRA adapter, as its own deployment too.

`finetune_flow(dataset_directory, output_directory, preset, config)` returns a `FinetuneSummary`
whose string paths (adapter_path, loss_curve_path, ...) the pipeline and the evaluation read. The
task is tagged `gpu`: `prefect concurrency-limit create gpu 1` keeps one fine-tune per GPU worker.
"""

from __future__ import annotations

from methyl_distill.tasks.training import finetune_task
from prefect import flow

from methyl_distill.training.finetune import FinetuneConfig, FinetuneSummary


@flow(name="finetune", log_prints=False)
def finetune_flow(
    dataset_directory: str,
    output_directory: str,
    preset: str = "smollm2-135m",
    config: FinetuneConfig | None = None,
    cache_dir: str | None = None,
    model_source: str | None = None,
) -> FinetuneSummary:
    """LoRA SFT of `preset` on `dataset_directory`; rerunning resumes an interrupted run."""
    return finetune_task(
        dataset_directory,
        output_directory,
        preset,
        config or FinetuneConfig(),
        cache_dir=cache_dir,
        model_source=model_source,
    )
