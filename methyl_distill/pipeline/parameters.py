"""What a pipeline run takes: one parameter model for the flow, the CLI and the deployments.

`PipelineParameters` is the one list of the pipeline's parameters, their defaults and their
descriptions. `pipeline_flow` takes exactly these fields (a test holds its signature to the model),
`methyl-distill run` takes its help texts and defaults from it (a test holds every option to a
field), and the deployments in `deployments/prefect.yaml` are validated against it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from methyl_distill.extraction.outputs import refuse_output_inside_input
from methyl_distill.extraction.parameters import DEFAULT_MAX_CONCURRENCY
from methyl_distill.readers.formats import DEFAULT_MAX_FILE_MB
from methyl_distill.sft_dataset import DatasetConfig
from methyl_distill.teacher.config import (
    TeacherApi,
    TeacherConfig,
    api_key_in_environment,
    resolve_teacher_config,
)
from methyl_distill.teacher.llama_cpp_server import EmbeddedTeacherConfig
from methyl_distill.training.finetune import FinetuneConfig
from methyl_distill.training.presets import get_preset

TeacherChoice = Literal["auto", "embedded", "configured"]
PIPELINE_SUMMARY_FILE = "pipeline_summary.json"
STAGE_DIRECTORIES = {
    "extraction": "extraction",
    "markers": "markers",
    "dataset": "dataset",
    "finetune": "finetune",
    "evaluation": "evaluation",
}
DEFAULT_STUDENT_PRESET = "smollm2-135m"
DEFAULT_EVALUATION_LIMIT = 8
DEFAULT_EVALUATION_MAX_NEW_TOKENS = 128


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


def embedded_chunk_tokens(config: EmbeddedTeacherConfig) -> int:
    """Paper-text tokens per request for SmolLM2: a quarter of its context, so the question list, the
    schema instruction and the reply fit beside it (the extraction stage shrinks it further if not)."""
    return max(512, config.n_ctx // 4)


INPUT_ROOTS_VARIABLE = "methyl-distill-input-roots"


class InputOutsideRootsError(ValueError):
    """A run was asked to read papers from a folder outside the allowed input roots."""


def check_input_root(input_directory: str | Path, roots: list[str]) -> None:
    """Raise `InputOutsideRootsError` unless `input_directory` is one of `roots` or lies inside one
    (symlinks resolved, so a link cannot lead out)."""
    source = Path(input_directory).expanduser().resolve()
    resolved = [Path(root).expanduser().resolve() for root in roots]
    if not any(source == root or root in source.parents for root in resolved):
        raise InputOutsideRootsError(
            f"input_directory {source} is outside the allowed input roots "
            f"({', '.join(str(root) for root in resolved) or 'none'}): a deployment run reads papers only "
            "from there; add the folder to allowed_input_roots or the Prefect variable "
            f"{INPUT_ROOTS_VARIABLE!r}"
        )


class PipelineParameters(BaseModel):
    """Everything a pipeline run takes, validated before any stage starts."""

    model_config = ConfigDict(extra="forbid")

    input_directory: str = Field(
        description="Directory of papers (.pdf, JATS .xml, .html, .txt, .md), searched recursively."
    )
    output_directory: str = Field(
        description="Directory for every stage's outputs: extraction/, markers/, dataset/, finetune/<run>/, "
        f"evaluation/<run>/ and {PIPELINE_SUMMARY_FILE}; <run> names the student preset and a digest of "
        "the training data and hyper-parameters."
    )
    teacher: TeacherChoice = Field(
        default="auto",
        description="auto: the configured endpoint when OPENAI_API_KEY or OPENAI_BASE_URL (or "
        "teacher_base_url, teacher_config, a Secret block) is set, else the embedded SmolLM2; embedded / "
        "configured force one.",
    )
    teacher_base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible endpoint of the configured teacher (overrides OPENAI_BASE_URL).",
    )
    teacher_model: str | None = Field(
        default=None, description="Model of the configured teacher (overrides TEACHER_MODEL)."
    )
    question_bank: str | None = Field(
        default=None, description="Question bank TOML; default: the bundled one."
    )
    refresh_extraction: bool = Field(default=False, description="Re-extract every paper, ignoring the cache.")
    max_chunk_tokens: int | None = Field(
        default=None,
        ge=128,
        description="Paper tokens per request; default: the teacher's (a quarter of the context when "
        "embedded).",
    )
    dataset: DatasetConfig | None = Field(
        default=None,
        description="Dataset stage configuration; default: DatasetConfig(), with grounding='flag' for the "
        "embedded teacher (SmolLM2 rarely quotes verbatim). Its max_length, unless set, is the student's "
        "training length (finetune.max_length, else the student preset's).",
    )
    student_preset: str = Field(
        default=DEFAULT_STUDENT_PRESET, description="Student model preset of the fine-tune."
    )
    finetune: FinetuneConfig | None = Field(
        default=None, description="LoRA hyper-parameters; default: a short run that ends in minutes on a CPU."
    )
    finetune_deployment: str | None = Field(
        default=None,
        description="Run the fine-tune as this deployment ('finetune/finetune-cuda') and wait for it; "
        "default: in this process.",
    )
    evaluate: bool = Field(default=True, description="Evaluate base and tuned student on the test split.")
    evaluation_limit: int | None = Field(
        default=DEFAULT_EVALUATION_LIMIT,
        ge=1,
        description="Test examples evaluated (None, as a flow parameter: all); CPU generation is slow.",
    )
    evaluation_max_new_tokens: int = Field(
        default=DEFAULT_EVALUATION_MAX_NEW_TOKENS, ge=1, description="Longest answer per test question."
    )
    teacher_config: TeacherConfig | None = Field(
        default=None,
        description="The configured teacher's whole configuration (no key); default: read from the "
        "environment or .env (OPENAI_BASE_URL, TEACHER_*).",
    )
    embedded_teacher: EmbeddedTeacherConfig | None = Field(
        default=None, description="How the embedded llama.cpp teacher runs; default: EmbeddedTeacherConfig()."
    )
    max_concurrency: int = Field(
        default=DEFAULT_MAX_CONCURRENCY,
        ge=1,
        description="Upper bound of the teacher requests in flight (within it they follow the TPM budget and "
        "the latency; the embedded teacher serves one at a time).",
    )
    finetune_timeout_s: float | None = Field(
        default=None, gt=0, description="Longest wait for the fine-tune deployment; default: no limit."
    )
    keep_back_matter: bool = Field(
        default=False,
        description="Let the teacher read reference lists and acknowledgements too (left out by default).",
    )
    max_file_mb: float = Field(
        default=DEFAULT_MAX_FILE_MB,
        gt=0,
        description="Largest paper file read, in MB; a larger one is listed in failures.jsonl, not read.",
    )
    allowed_input_roots: list[str] | None = Field(
        default=None,
        description="Folders a deployment run may read papers from (input_directory must lie inside one); "
        f"default: the Prefect variable {INPUT_ROOTS_VARIABLE!r}, else the deployment's own input_directory. "
        "Runs outside a deployment are not restricted.",
    )
    teacher_api: TeacherApi | None = Field(
        default=None,
        description="online, or batch: the configured teacher through OpenAI's Batch API (half price, "
        "results within 24 h); overrides TEACHER_API.",
    )

    @model_validator(mode="after")
    def _check_paths(self) -> PipelineParameters:
        source = Path(self.input_directory).expanduser()
        if not source.is_dir():
            raise ValueError(f"input_directory {self.input_directory!r} does not exist or is not a directory")
        refuse_output_inside_input(source, self.output_directory)
        return self

    def stage_directory(self, stage: str) -> str:
        return str(Path(self.output_directory).expanduser().resolve() / STAGE_DIRECTORIES[stage])

    @property
    def finetune_run(self) -> FinetuneConfig:
        return self.finetune or short_lora_run()

    @property
    def training_max_length(self) -> int:
        """Tokens per sample the fine-tune trains on: the run's max_length, else the student preset's."""
        return self.finetune_run.max_length or get_preset(self.student_preset).max_length

    def dataset_config(self, embedded: bool) -> DatasetConfig:
        """The dataset stage's configuration: `dataset`, or the default for the teacher; its max_length
        is the student's training length unless it was set (in the object or its TOML file)."""
        config = self.dataset or (DatasetConfig(grounding="flag") if embedded else DatasetConfig())
        if "max_length" in config.model_fields_set:
            return config
        return DatasetConfig.model_validate({**config.model_dump(), "max_length": self.training_max_length})

    @property
    def embedded_server(self) -> EmbeddedTeacherConfig:
        return self.embedded_teacher or EmbeddedTeacherConfig()

    def configured_teacher(self) -> TeacherConfig | None:
        """The configured teacher of this run (`teacher_config` or the environment's, with the
        overrides), resolved once; None when the embedded teacher answers: forced, or `auto` with no
        key, endpoint or Secret block configured."""
        if self.teacher == "embedded":
            return None
        configured = resolve_teacher_config(
            self.teacher_config, self.teacher_base_url, self.teacher_model, self.teacher_api
        )
        if self.teacher == "configured" or self.teacher_base_url or self.teacher_config is not None:
            return configured
        if api_key_in_environment() or configured.base_url or configured.api_key_secret_block:
            return configured
        return None

    def uses_embedded_teacher(self) -> bool:
        return self.configured_teacher() is None

    def embedded_chunk_tokens(self) -> int:
        """Paper-text tokens per request for the embedded teacher: `max_chunk_tokens` if given."""
        if self.max_chunk_tokens is not None:
            return self.max_chunk_tokens
        return embedded_chunk_tokens(self.embedded_server)
