"""The fine-tune flow: a dataset folder (train.jsonl, val.jsonl) -> a LoRA adapter, as its own deployment too.

`finetune_flow(dataset_directory, output_directory, preset, config)` returns a `FinetuneSummary`
whose string paths (adapter_path, loss_curve_path, ...) the pipeline and the evaluation read. The
task is tagged `gpu`: `prefect concurrency-limit create gpu 1` keeps one fine-tune per GPU worker.
"""

from __future__ import annotations

from methyl_distill.tasks.publishing import check_hub_access_task, push_model_task
from methyl_distill.tasks.training import finetune_task
from prefect import flow

from methyl_distill.ops.hub_publish import HubTarget
from methyl_distill.training.finetune import FinetuneConfig, FinetuneSummary
from methyl_distill.training.model_release import ModelReleaseOptions


@flow(name="finetune", log_prints=False)
def finetune_flow(
    dataset_directory: str,
    output_directory: str,
    preset: str = "smollm2-135m",
    config: FinetuneConfig | None = None,
    cache_dir: str | None = None,
    model_source: str | None = None,
    push_to_hub: HubTarget | None = None,
    release: ModelReleaseOptions | None = None,
) -> FinetuneSummary:
    """LoRA SFT of `preset` on `dataset_directory`; rerunning resumes an interrupted run. With
    `push_to_hub`, the adapter (or, with `release.merged`, the merged model) and its card are pushed
    after training (docs/training.md#publishing-to-the-hub)."""
    if push_to_hub is not None:
        check_hub_access_task(push_to_hub)  # a missing or refused token fails before the training
    summary = finetune_task(
        dataset_directory,
        output_directory,
        preset,
        config or FinetuneConfig(),
        cache_dir=cache_dir,
        model_source=model_source,
    )
    if push_to_hub is not None:
        push_model_task(summary, push_to_hub, release or ModelReleaseOptions())
    return summary
