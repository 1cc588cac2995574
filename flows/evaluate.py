"""The evaluation flow: base vs tuned student on the test split, scored against the teacher's answers."""

from __future__ import annotations

from methyl_distill.tasks.training import evaluate_task
from prefect import flow

from methyl_distill.training.evaluation import EvaluationSummary
from methyl_distill.training.runtime_device import DeviceRequest


@flow(name="evaluate", log_prints=False)
def evaluate_flow(
    test_path: str,
    adapter_path: str,
    output_directory: str,
    max_new_tokens: int = 512,
    limit: int | None = None,
    device: DeviceRequest = "auto",
) -> EvaluationSummary:
    """Answer `test_path` with the base and the tuned model; write evaluation.json and .md reports."""
    return evaluate_task(test_path, adapter_path, output_directory, max_new_tokens, limit, device)
