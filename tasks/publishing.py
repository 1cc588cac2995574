"""Prefect tasks that publish to the Hugging Face Hub: the dataset, the adapter or merged model.

Thin edges over `methyl_distill.sft_dataset.hub_push` and `methyl_distill.training.model_release`:
each adds a link artifact to the commit. No caching (a push is an effect, and pushing the same files
again makes no commit) and no task retries: huggingface_hub already retries the transient HTTP
errors of each request, and a refused token or repository is not made right by trying again.
`check_hub_access_task` runs first in a flow, so a missing or refused token fails before the work.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact

from methyl_distill.ops.hub_publish import HubTarget, PushResult, check_hub_access
from methyl_distill.sft_dataset import DatasetSummary
from methyl_distill.sft_dataset.hub_push import push_dataset_to_hub
from methyl_distill.training.finetune import FinetuneSummary
from methyl_distill.training.model_release import ModelReleaseOptions, push_model_to_hub


@task(name="check-hub-access")
def check_hub_access_task(target: HubTarget) -> str:
    """The user the token belongs to (see `check_hub_access`)."""
    return check_hub_access(target)


def _link(result: PushResult, what: str) -> None:
    create_link_artifact(
        key=f"hub-{result.repo_type}",
        link=result.commit_url,
        link_text=f"{result.repo_id}@{result.revision}",
        description=f"{what} pushed to the Hugging Face Hub ({len(result.files)} files in one commit)",
    )
    get_run_logger().info("%s pushed to %s: %s", what, result.url, result.commit_url)


@task(name="push-dataset-to-hub")
def push_dataset_task(summary: DatasetSummary, target: HubTarget) -> PushResult:
    result = push_dataset_to_hub(summary, target)
    _link(result, "Dataset")
    return result


@task(name="push-model-to-hub")
def push_model_task(summary: FinetuneSummary, target: HubTarget, options: ModelReleaseOptions) -> PushResult:
    result = push_model_to_hub(summary, target, options)
    _link(result, "Merged model" if options.merged else "Adapter")
    return result
