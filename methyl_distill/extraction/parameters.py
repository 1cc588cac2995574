"""What an extraction run takes: one parameter model for the flow, the CLI and the deployments.

`ExtractParameters` is the one list of the extraction's parameters, their defaults and their
descriptions. `extract_flow` takes exactly these fields (a test holds its signature to the model),
`methyl-distill extract` generates its options from it, and the deployments in
`deployments/prefect.yaml` are validated against it.

The teacher is configured explicitly: `teacher_config` is a whole `TeacherConfig` (no key); when
it is not given, the configuration is read from the environment or `.env` here, at the edge.
`teacher_base_url` and `teacher_model` override either.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from methyl_distill.extraction.chunking import MIN_CHUNK_TOKENS, ChunkingConfig
from methyl_distill.extraction.outputs import refuse_output_inside_input
from methyl_distill.extraction.paper_batches import DEFAULT_BATCH_SIZE
from methyl_distill.readers.formats import DEFAULT_MAX_FILE_MB, ReadingOptions
from methyl_distill.teacher.config import TeacherApi, TeacherConfig, resolve_teacher_config

if TYPE_CHECKING:  # the extraction core (numpy, the prompts) stays out of `methyl-distill --help`
    from methyl_distill.extraction.extract import ExtractionConfig

# An upper bound: the requests in flight follow the budget and the latency (`teacher.request_pacing`).
# 1M TPM with 12 s replies of ~5k tokens charged each needs about 60 in flight.
DEFAULT_MAX_CONCURRENCY = 128
_DEFAULT_CHUNK = ChunkingConfig()
# local: the threads of this process; task_workers: Prefect task workers (tasks/extraction_workers.py).
ExtractionWorkers = Literal["local", "task_workers"]


class ExtractParameters(BaseModel):
    """Everything an extraction run takes, validated before any paper is read."""

    model_config = ConfigDict(extra="forbid")

    input_directory: str = Field(
        description="Directory of papers (.pdf, JATS .xml, .html, .txt, .md), searched recursively."
    )
    output_directory: str = Field(
        description="Directory for processed_files/, all_results.json, records.jsonl and failures.jsonl."
    )
    refresh: bool = Field(default=False, description="Re-extract every paper, ignoring the cache.")
    question_bank: str | None = Field(
        default=None,
        description="Question bank TOML file; default: METHYL_DISTILL_QUESTION_BANK, else the bundled one.",
    )
    teacher_base_url: str | None = Field(
        default=None, description="OpenAI-compatible endpoint; overrides OPENAI_BASE_URL and teacher_config."
    )
    teacher_model: str | None = Field(
        default=None, description="Teacher model name; overrides TEACHER_MODEL and teacher_config."
    )
    max_concurrency: int = Field(
        default=DEFAULT_MAX_CONCURRENCY,
        ge=1,
        description="Upper bound of the teacher requests in flight (papers extracted at once); within it, "
        "the number in flight follows the TPM/RPM budget and the latency observed.",
    )
    batch_size: int = Field(
        default=DEFAULT_BATCH_SIZE, ge=1, description="Task runs created at once (papers per burst)."
    )
    max_chunk_tokens: int | None = Field(
        default=None,
        ge=MIN_CHUNK_TOKENS,
        description=f"Most paper tokens per request; default {_DEFAULT_CHUNK.max_chunk_tokens}, less "
        "when the teacher's context or TPM limit asks for it.",
    )
    chunk_overlap_tokens: int | None = Field(
        default=None,
        ge=0,
        description=f"Tokens shared by neighbouring chunks; default {_DEFAULT_CHUNK.overlap_tokens} "
        "(a quarter of max_chunk_tokens when that is smaller).",
    )
    cache_dir: str | None = Field(
        default=None,
        description="Folder of the extraction cache; default: METHYL_DISTILL_CACHE_DIR, else "
        "~/.cache/methyl-distill.",
    )
    teacher_config: TeacherConfig | None = Field(
        default=None,
        description="The whole teacher configuration (endpoint, model, budget, output mode, grammar; no "
        "key); default: read from the environment or .env (OPENAI_BASE_URL, TEACHER_*).",
    )

    keep_back_matter: bool = Field(
        default=False,
        description="Let the teacher read reference lists and acknowledgements too (left out by default; "
        "the tokens saved are counted per paper).",
    )

    max_file_mb: float = Field(
        default=DEFAULT_MAX_FILE_MB,
        gt=0,
        description="Largest paper file read, in MB; a larger one is listed in failures.jsonl, not read.",
    )

    workers: ExtractionWorkers = Field(
        default="local",
        description="Where papers are extracted: local (threads of this process), or task_workers "
        "(`methyl-distill extract-worker` processes on the same Prefect server, sharing its budget and "
        "the cache; needs PREFECT_API_URL).",
    )
    teacher_api: TeacherApi | None = Field(
        default=None,
        description="online, or batch: OpenAI's Batch API (half price, results within 24 h); overrides "
        "TEACHER_API and teacher_config.",
    )

    @model_validator(mode="after")
    def _output_outside_input(self) -> ExtractParameters:
        refuse_output_inside_input(self.input_directory, self.output_directory)
        return self

    def reading_options(self) -> ReadingOptions:
        return ReadingOptions(keep_back_matter=self.keep_back_matter, max_file_mb=self.max_file_mb)

    def resolved_teacher(self) -> TeacherConfig:
        """The teacher configuration of this run: `teacher_config` or the environment's, with the
        overrides."""
        return resolve_teacher_config(
            self.teacher_config, self.teacher_base_url, self.teacher_model, self.teacher_api
        )

    def extraction_config(self, teacher: TeacherConfig) -> ExtractionConfig:
        from methyl_distill.extraction.extract import ExtractionConfig

        return ExtractionConfig.for_teacher(
            teacher, max_chunk_tokens=self.max_chunk_tokens, chunk_overlap_tokens=self.chunk_overlap_tokens
        )

    def output_path(self) -> Path:
        return Path(self.output_directory).expanduser().resolve()
