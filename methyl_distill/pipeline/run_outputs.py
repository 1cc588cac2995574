"""What a pipeline run leaves behind: its summary, the name of its training run, the outputs table;
and the fine-tune run as a deployment elsewhere, whose summary comes back through shared storage."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from methyl_distill.extraction.run_tally import ExtractionSummary
from methyl_distill.markers import MarkerTableSummary
from methyl_distill.pipeline.parameters import PipelineParameters
from methyl_distill.sft_dataset import DatasetSummary
from methyl_distill.text.hashing import update_with_file
from methyl_distill.training.evaluation import EvaluationSummary
from methyl_distill.training.finetune import FinetuneSummary

SummaryT = TypeVar("SummaryT", bound=BaseModel)


class PipelineSummary(BaseModel):
    """Where a pipeline run put everything (string paths) and each stage's own summary."""

    model_config = ConfigDict(extra="forbid")

    output_directory: str
    teacher: str = Field(description="Which teacher answered: embedded model or configured endpoint.")
    records_path: str
    dataset_directory: str
    adapter_path: str | None
    evaluation_report_path: str | None
    markers_page_path: str | None = Field(default=None, description="markers.html: the marker table page.")
    markers_directory: str | None = Field(
        default=None, description="The marker table: Parquet and CSV tables, markers.html, summary."
    )
    stages: dict[str, dict[str, Any]] = Field(description="Each stage's summary, as it returned it.")

    @classmethod
    def of_stages(
        cls,
        parameters: PipelineParameters,
        teacher: str,
        extraction: ExtractionSummary,
        dataset: DatasetSummary,
        finetuned: FinetuneSummary,
        evaluation: EvaluationSummary | None,
        markers: MarkerTableSummary | None = None,
    ) -> PipelineSummary:
        stages = {
            "extraction": extraction,
            "markers": markers,
            "dataset": dataset,
            "finetune": finetuned,
            "evaluation": evaluation,
        }
        return cls(
            output_directory=str(Path(parameters.output_directory).expanduser().resolve()),
            teacher=teacher,
            records_path=extraction.records_path,
            dataset_directory=dataset.output_directory,
            adapter_path=finetuned.adapter_path,
            evaluation_report_path=evaluation.report_markdown_path if evaluation is not None else None,
            markers_page_path=markers.page if markers is not None else None,
            markers_directory=markers.output_directory if markers is not None else None,
            stages={
                name: stage.model_dump(mode="json") for name, stage in stages.items() if stage is not None
            },
        )


def training_run_name(parameters: PipelineParameters, dataset_directory: str) -> str:
    """`<preset>-<digest>` of what a fine-tune learns from: the training files, the preset and the
    hyper-parameters. Each new dataset gets its own fine-tune and evaluation folders (a rerun on the
    same dataset finds its finished fine-tune there), and no run overwrites another's adapter."""
    digest = hashlib.sha256()
    for name in ("train.jsonl", "val.jsonl"):
        path = Path(dataset_directory) / name
        digest.update(name.encode())
        if path.is_file():
            update_with_file(digest, path)
    digest.update(parameters.student_preset.encode())
    digest.update(parameters.finetune_run.model_dump_json().encode())
    return f"{parameters.student_preset}-{digest.hexdigest()[:12]}"


def run_finetune_deployment(
    name: str, parameters: dict[str, Any], *, timeout_s: float | None
) -> FinetuneSummary:
    """Run the fine-tune deployment `name` (for example on the CUDA pool), wait for it and read the
    summary it wrote into its output folder (call inside a flow run)."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    flow_run: FlowRun = run_deployment(  # type: ignore[assignment]  # sync call inside a sync flow
        name=name, parameters=parameters, timeout=timeout_s
    )
    state = flow_run.state
    if state is None or not state.is_completed():
        raise RuntimeError(
            f"fine-tune deployment {name} run {flow_run.name} ended "
            f"{state.name if state else 'without a state'}: {state.message if state else ''}"
        )
    return read_finetune_summary(parameters["output_directory"], FinetuneSummary)


def read_finetune_summary(output_directory: str, summary_type: type[SummaryT]) -> SummaryT:
    """The fine-tune's summary as it wrote it into its output folder (shared storage between workers)."""
    path = Path(output_directory) / "finetune_summary.json"
    if not path.is_file():
        raise RuntimeError(
            f"the fine-tune deployment completed but {path} is missing: the pipeline and the fine-tune "
            "worker must share the output directory (a network volume or the same machine)"
        )
    return summary_type.model_validate_json(path.read_text(encoding="utf-8"))


def outputs_markdown(summary: PipelineSummary) -> str:
    rows = [
        ("Outputs", summary.output_directory),
        ("Teacher", summary.teacher),
        ("Extraction records", summary.records_path),
        ("Marker table", summary.markers_page_path or "(not built)"),
        ("Dataset", summary.dataset_directory),
        ("Adapter", summary.adapter_path or "(not trained)"),
        ("Evaluation report", summary.evaluation_report_path or "(not evaluated)"),
    ]
    lines = ["| | |", "|---|---|", *(f"| {name} | `{value}` |" for name, value in rows)]
    return "# Pipeline outputs\n\n" + "\n".join(lines) + "\n"
