"""The pipeline: parameters validated up front, teacher choice, and one run to completion.

The flow test runs every stage for real: extraction against the project's OpenAI-compatible test
server over HTTP, the dataset stage, a LoRA fine-tune of the tiny Mistral with ms-swift on CPU and
the evaluation, then a rerun that extracts nothing again.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import ValidationError

from methyl_distill.pipeline.parameters import PIPELINE_SUMMARY_FILE, PipelineParameters
from methyl_distill.pipeline.run_outputs import outputs_markdown
from methyl_distill.teacher.config import TeacherConfig
from methyl_distill.teacher.llama_cpp_server import EmbeddedTeacherConfig
from methyl_distill.training.finetune import FinetuneConfig

SAMPLE_PAPERS = Path(__file__).resolve().parent.parent / "data" / "papers"


def test_parameters_reject_missing_input_and_outputs_inside_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="does not exist"):
        PipelineParameters(input_directory=str(tmp_path / "nope"), output_directory=str(tmp_path / "out"))
    (tmp_path / "papers").mkdir()
    with pytest.raises(ValidationError, match="is inside input_directory"):
        PipelineParameters(
            input_directory=str(tmp_path / "papers"), output_directory=str(tmp_path / "papers/out")
        )
    with pytest.raises(ValidationError, match="extra"):
        PipelineParameters.model_validate(
            {"input_directory": str(tmp_path / "papers"), "output_directory": str(tmp_path / "o"), "typo": 1}
        )
    parameters = PipelineParameters(
        input_directory=str(tmp_path / "papers"), output_directory=str(tmp_path / "o")
    )
    assert parameters.stage_directory("dataset") == str((tmp_path / "o" / "dataset").resolve())
    assert parameters.finetune_run.max_steps is not None  # the default is a short run
    assert parameters.student_preset == "smollm2-135m"


def test_dataset_max_length_is_the_students_training_length_unless_set(tmp_path: Path) -> None:
    from methyl_distill.sft_dataset import DatasetConfig

    (tmp_path / "papers").mkdir()
    where = {"input_directory": str(tmp_path / "papers"), "output_directory": str(tmp_path / "o")}

    def dataset(embedded: bool = False, **parameters: object) -> DatasetConfig:
        return PipelineParameters.model_validate({**where, **parameters}).dataset_config(embedded)

    assert dataset().max_length == 1024  # the default short run trains at 1024
    assert dataset(embedded=True).grounding == "flag" and dataset(embedded=True).max_length == 1024
    mistral = {"student_preset": "mistral-7b", "finetune": FinetuneConfig(max_steps=3)}
    assert dataset(**mistral).max_length == 4096  # the run sets none: the preset's
    assert dataset(**{**mistral, "finetune": FinetuneConfig(max_length=3000)}).max_length == 3000
    assert dataset(**mistral, dataset=DatasetConfig(seed=5)).model_dump() == {
        **DatasetConfig(seed=5).model_dump(),
        "max_length": 4096,
    }
    assert dataset(**mistral, dataset=DatasetConfig(max_length=2048)).max_length == 2048  # set: kept
    assert dataset(**mistral, dataset={"seed": 5}).max_length == 4096  # as a deployment passes it
    toml = tmp_path / "dataset.toml"
    toml.write_text("seed = 5\n", encoding="utf-8")
    assert dataset(**mistral, dataset=DatasetConfig.from_toml(toml)).max_length == 4096
    toml.write_text("max_length = 1536\n", encoding="utf-8")
    assert dataset(**mistral, dataset=DatasetConfig.from_toml(toml)).max_length == 1536
    shipped = Path(__file__).resolve().parent.parent / "methyl_distill" / "sft_dataset" / "dataset.toml"
    assert dataset(**mistral, dataset=DatasetConfig.from_toml(shipped)).max_length == 4096


@pytest.mark.parametrize(
    ("choice", "parameters", "environment", "embedded"),
    [
        ("auto", {}, {}, True),
        ("auto", {}, {"OPENAI_API_KEY": "sk-x"}, False),
        ("auto", {}, {"OPENAI_API_KEY": ""}, True),
        ("auto", {}, {"OPENAI_BASE_URL": "http://127.0.0.1:1/v1"}, False),
        ("auto", {"teacher_base_url": "http://127.0.0.1:1/v1"}, {}, False),
        ("auto", {"teacher_config": TeacherConfig(base_url="http://127.0.0.1:1/v1")}, {}, False),
        ("auto", {}, {"TEACHER_API_KEY_SECRET_BLOCK": "openai-key"}, False),
        ("embedded", {}, {"OPENAI_API_KEY": "sk-x"}, True),
        ("configured", {}, {}, False),
    ],
)
def test_teacher_choice(
    choice: str,
    parameters: dict[str, object],
    environment: dict[str, str],
    embedded: bool,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "TEACHER_API_KEY_SECRET_BLOCK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "papers").mkdir()
    chosen = PipelineParameters.model_validate(
        {"input_directory": "papers", "output_directory": "out", "teacher": choice, **parameters}
    )
    assert chosen.uses_embedded_teacher() is embedded


def test_embedded_chunks_leave_room_for_questions_schema_and_reply(tmp_path: Path) -> None:
    config = EmbeddedTeacherConfig()
    parameters = PipelineParameters(
        input_directory=str(tmp_path), output_directory=str(tmp_path.parent / "o")
    )
    chunk = parameters.embedded_chunk_tokens()
    assert chunk + config.max_output_tokens < config.n_ctx - 2000
    given = parameters.model_copy(update={"max_chunk_tokens": 700})
    assert given.embedded_chunk_tokens() == 700


@pytest.fixture
def extraction_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[object]:
    from tests.fake_openai.server import OpenAITestServerConfig, running_test_server

    with running_test_server(OpenAITestServerConfig(latency_s=(0.0, 0.01))) as server:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-pipeline-key")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("METHYL_DISTILL_CACHE_DIR", str(tmp_path / "prefect-cache"))
        monkeypatch.setenv("METHYL_DISTILL_MODEL_CACHE", str(tmp_path / "model-cache"))
        yield server


def _teacher_variables(environment: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name, value in environment.items() if name.startswith(("OPENAI_", "TEACHER_"))}


def tiny_student() -> FinetuneConfig:
    return FinetuneConfig(
        max_steps=2,
        save_steps=2,
        learning_rate=5e-3,
        batch_size=2,
        max_length=1024,
        gradient_checkpointing=False,
        device="cpu",
        seed=0,
    )


@pytest.mark.flow
def test_unknown_student_preset_fails_before_extraction(
    prefect_harness: None, extraction_server, tmp_path: Path
):
    from methyl_distill.flows.pipeline import pipeline_flow

    with pytest.raises(ValueError, match="unknown model preset"):
        pipeline_flow(str(SAMPLE_PAPERS), str(tmp_path / "out"), student_preset="no-such-model")
    assert extraction_server.stats().requests == 0
    assert not (tmp_path / "out").exists()


@pytest.mark.flow
def test_pipeline_runs_every_stage_and_reruns_from_cache(
    prefect_harness: None, extraction_server, tmp_path: Path
) -> None:
    from methyl_distill.flows.pipeline import pipeline_flow

    papers = tmp_path / "papers"
    shutil.copytree(SAMPLE_PAPERS, papers)
    output = tmp_path / "out"
    environment_before = dict(os.environ)
    summary = pipeline_flow(
        input_directory=str(papers),
        output_directory=str(output),
        student_preset="tiny-mistral",
        finetune=tiny_student(),
        evaluation_limit=2,
        evaluation_max_new_tokens=8,
    )
    # The teacher travels as an argument, not in os.environ (ms-swift sets variables of its own).
    assert _teacher_variables(os.environ) == _teacher_variables(environment_before)
    first_requests = extraction_server.stats().requests
    assert first_requests >= 10
    assert summary.teacher.startswith("gpt-4o at http://127.0.0.1")
    extraction = summary.stages["extraction"]
    # The sample papers: eight text files, a PDF and a JATS article.
    assert extraction["papers"] == 10 and extraction["extracted"] == 10 and extraction["failed"] == 0
    assert extraction["files_by_format"] == {"jats": 1, "pdf": 1, "text": 8}
    assert Path(summary.records_path).parent == output.resolve() / "extraction"
    assert summary.markers_page_path == str(output.resolve() / "markers" / "markers.html")
    assert Path(summary.markers_page_path).is_file() and summary.stages["markers"]["papers"] == 10
    assert Path(summary.dataset_directory, "train.jsonl").stat().st_size > 0
    assert Path(summary.adapter_path or "", "adapter_config.json").is_file()
    assert summary.stages["finetune"]["global_step"] == 2
    assert summary.evaluation_report_path is not None and Path(summary.evaluation_report_path).is_file()
    assert summary.stages["evaluation"]["examples"] >= 1
    written = json.loads((output / PIPELINE_SUMMARY_FILE).read_text(encoding="utf-8"))
    assert written["adapter_path"] == summary.adapter_path
    assert summary.adapter_path in outputs_markdown(summary)
    assert "sk-test-pipeline-key" not in (output / PIPELINE_SUMMARY_FILE).read_text(encoding="utf-8")

    rerun = pipeline_flow(
        input_directory=str(papers),
        output_directory=str(output),
        student_preset="tiny-mistral",
        finetune=tiny_student(),
        evaluate=False,
    )
    assert extraction_server.stats().requests == first_requests  # every paper came from the cache
    assert rerun.stages["extraction"]["cached"] == 10
    assert rerun.adapter_path == summary.adapter_path
    assert rerun.evaluation_report_path is None


def test_run_command_maps_flags_and_says_where_outputs_are(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import methyl_distill.flows.pipeline

    from methyl_distill.cli import main
    from methyl_distill.pipeline.run_outputs import PipelineSummary

    calls: list[dict] = []

    def fake_pipeline(**kwargs: object) -> PipelineSummary:
        calls.append(kwargs)
        return PipelineSummary(
            output_directory=str(tmp_path / "out"),
            teacher="embedded smollm2-135m-instruct (llama.cpp)",
            records_path=str(tmp_path / "out/extraction/records.jsonl"),
            dataset_directory=str(tmp_path / "out/dataset"),
            adapter_path=str(tmp_path / "out/finetune/run/adapter"),
            evaluation_report_path=str(tmp_path / "out/evaluation/run/evaluation.md"),
            stages={"extraction": {"papers": 8, "extracted": 7, "cached": 1, "failed": 0}},
        )

    monkeypatch.setattr(methyl_distill.flows.pipeline, "pipeline_flow", fake_pipeline)
    dataset_config = (
        Path(__file__).resolve().parent.parent / "methyl_distill" / "sft_dataset" / "dataset.toml"
    )
    code = main(
        [
            "run",
            "--input_directory",
            str(SAMPLE_PAPERS),
            "--output_directory",
            str(tmp_path / "out"),
            "--max_steps",
            "5",
            "--student",
            "tiny-mistral",
            "--dataset_config",
            str(dataset_config),
            "--no_evaluation",
        ]
    )
    assert code == 0
    (call,) = calls
    assert call["student_preset"] == "tiny-mistral" and call["evaluate"] is False
    assert call["finetune"].max_steps == 5 and call["finetune"].save_steps == 5
    assert call["dataset"].max_length > 0
    assert "teacher" not in call and "max_concurrency" not in call  # defaults stay the flow's own
    printed = capsys.readouterr().out
    assert "adapter:     " + str(tmp_path / "out/finetune/run/adapter") in printed
    assert "evaluation:  " + str(tmp_path / "out/evaluation/run/evaluation.md") in printed
    assert "7 extracted, 1 cached" in printed


@pytest.mark.flow
def test_the_embedded_server_hands_the_extraction_its_configuration(
    prefect_harness: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The embedded branch with the fake OpenAI server standing in for llama.cpp: the configuration
    the server hands back reaches the extraction as it is (prompt mode, grammar, the server's own key,
    never the user's), one request at a time, chunks sized for SmolLM2's context; the server's key
    reaches neither the flow's stored parameters nor anything else in Prefect's database."""
    import methyl_distill.flows.pipeline as pipeline_module
    from prefect import flow
    from pydantic import SecretStr

    from methyl_distill.teacher.llama_cpp_server import embedded_teacher_config
    from tests.fake_openai.server import OpenAITestServerConfig, running_test_server
    from tests.test_extract_flow import _prefect_database

    model = EmbeddedTeacherConfig().model_alias
    server_key = "per-run-SENTINEL-key-5521"
    # Started here, not inside the flow run: uvicorn's logging set-up deadlocks with Prefect's log
    # handlers when it runs inside one. Like llama.cpp under the embedded teacher, it wants a key.
    fake = running_test_server(
        OpenAITestServerConfig(latency_s=(0.0, 0.01), models=[model], api_key=server_key)
    )
    handle = fake.__enter__()
    request.addfinalizer(lambda: fake.__exit__(None, None, None))

    class StandInServer:
        started: ClassVar[list[StandInServer]] = []

        def __init__(self, config: EmbeddedTeacherConfig) -> None:
            self.config = config
            self.model = config.model_alias
            self.base_url = handle.base_url

        def __enter__(self) -> StandInServer:
            StandInServer.started.append(self)
            return self

        def __exit__(self, *exc_info: object) -> None:
            return None

        def teacher_config(self, question_ids: list[str]) -> TeacherConfig:
            return embedded_teacher_config(
                self.base_url, self.config, question_ids, api_key=SecretStr(server_key)
            )

    handed: list[dict[str, object]] = []
    real_extract_flow = pipeline_module.extract_flow

    def spying_extract_flow(*args: object, **kwargs: object) -> object:
        handed.append(kwargs)
        return real_extract_flow(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline_module, "EmbeddedTeacherServer", StandInServer)
    monkeypatch.setattr(pipeline_module, "extract_flow", spying_extract_flow)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-user-key-for-the-real-teacher")
    monkeypatch.setenv("METHYL_DISTILL_CACHE_DIR", str(tmp_path / "cache"))
    papers = tmp_path / "papers"
    papers.mkdir()
    for index, gene in enumerate(("SEPT9", "MGMT")):  # short: the fake's answers ignore the grammar's bounds
        (papers / f"{gene.lower()}.txt").write_text(
            f"{gene} promoter hypermethylation was found in {60 + index}% of tumours by qMSP.",
            encoding="utf-8",
        )
    parameters = PipelineParameters(
        input_directory=str(papers), output_directory=str(tmp_path / "out"), teacher="embedded"
    )

    @flow
    def extraction_stage() -> tuple[object, str]:
        return pipeline_module._extract(parameters, None)

    summary, teacher_name = extraction_stage()
    assert teacher_name == f"embedded {EmbeddedTeacherConfig().model_alias} (llama.cpp)"
    assert summary.extracted == 2 and summary.failed == 0  # type: ignore[attr-defined]
    (call,) = handed
    (server,) = StandInServer.started
    teacher = call["teacher_config"]
    assert isinstance(teacher, TeacherConfig) and teacher.base_url == server.base_url
    assert teacher.api_key_source == "session" and teacher.output_mode == "prompt" and teacher.grammar
    assert call["max_concurrency"] == 1 and call["max_chunk_tokens"] == parameters.embedded_chunk_tokens()
    stats = handle.stats()
    assert stats.max_in_flight == 1 and stats.grammar_requests == stats.requests >= 2
    database = _prefect_database()
    for path in database.parent.glob(database.name + "*"):
        assert server_key.encode() not in path.read_bytes()


def test_input_roots_hold_deployment_runs_to_their_folders(tmp_path: Path) -> None:
    from methyl_distill.pipeline.parameters import InputOutsideRootsError, check_input_root

    root = tmp_path / "papers"
    (root / "lung").mkdir(parents=True)
    (tmp_path / "papers-private").mkdir()
    (root / "escape").symlink_to(tmp_path / "papers-private", target_is_directory=True)
    check_input_root(root, [str(root)])
    check_input_root(root / "lung", [str(tmp_path / "elsewhere"), str(root)])
    for outside in (tmp_path / "papers-private", root / "escape", Path("/etc")):
        with pytest.raises(InputOutsideRootsError, match="outside the allowed input roots"):
            check_input_root(outside, [str(root)])
    with pytest.raises(InputOutsideRootsError, match=r"\(none\)"):
        check_input_root(root, [])


@pytest.mark.flow
def test_an_event_cannot_point_a_deployment_run_at_another_folder(
    prefect_harness: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What a `paper.added` event with a forged input folder meets: the deployment's own folder (or
    the configured roots) bounds what the run reads, before anything is read."""
    from methyl_distill.flows.pipeline import _check_input_roots
    from prefect.client.orchestration import get_client
    from prefect.variables import Variable

    from methyl_distill.pipeline.parameters import INPUT_ROOTS_VARIABLE, InputOutsideRootsError

    papers, secrets = tmp_path / "papers", tmp_path / "secrets"
    papers.mkdir()
    secrets.mkdir()
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("pipeline")
        deployment_id = client.create_deployment(
            flow_id=flow_id,
            name="roots-test",
            entrypoint="flows/pipeline.py:pipeline_flow",
            parameters={"input_directory": str(papers), "output_directory": str(tmp_path / "out")},
        )

    def run_with(input_directory: Path, **extra: object) -> None:
        parameters = PipelineParameters(
            input_directory=str(input_directory), output_directory=str(tmp_path / "out"), **extra
        )
        _check_input_roots(parameters)

    run_with(secrets)  # not a deployment run: the user's own choice
    monkeypatch.setenv("PREFECT__RUNTIME__DEPLOYMENT__ID", str(deployment_id))
    run_with(papers)
    with pytest.raises(InputOutsideRootsError, match="outside the allowed input roots"):
        run_with(secrets)
    run_with(secrets, allowed_input_roots=[str(tmp_path)])
    Variable.set(INPUT_ROOTS_VARIABLE, [str(secrets)], overwrite=True)
    try:
        run_with(secrets)
        with pytest.raises(InputOutsideRootsError):
            run_with(papers)
    finally:
        Variable.unset(INPUT_ROOTS_VARIABLE)
