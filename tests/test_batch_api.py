"""The Batch API path: the real openai SDK against the project's test server's files and batches
endpoints, `extract_paper` answered from batch results, no Prefect."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from methyl_distill.extraction.batch_extraction import (
    BatchAnswerMissing,
    BatchExtraction,
    BatchReplayTeacher,
    BatchStateFile,
    answer_in_batches,
)
from methyl_distill.extraction.extract import ExtractionConfig, extract_paper
from methyl_distill.extraction.papers import Paper, discover_papers
from methyl_distill.extraction.question_bank import QuestionBank, load_question_bank
from methyl_distill.extraction.records import FailureRecord, PaperRecord
from methyl_distill.extraction.stopping import RunStop
from methyl_distill.teacher.batch_api import BatchRunner, BatchState, parse_result_lines
from methyl_distill.teacher.config import TeacherConfig, endpoint_without_credentials
from methyl_distill.teacher.openai_client import OpenAITeacher
from tests.fake_openai.batches import BatchServerConfig
from tests.fake_openai.server import OpenAITestServerConfig, ServerHandle, running_test_server

SAMPLE_PAPERS = Path(__file__).resolve().parent.parent / "data" / "papers"
NAMES = [
    "gstp1_prostate_cancer.txt",
    "mgmt_glioblastoma_temozolomide.txt",
    "sept9_plasma_colorectal_screening.txt",
]
FAST = BatchServerConfig(validating_s=0.01, in_progress_s=0.02, finalizing_s=0.01)
REASKED = "Your previous reply was not valid"


@pytest.fixture()
def server() -> Iterator[ServerHandle]:
    with running_test_server(OpenAITestServerConfig(retry_after_s=0.05), FAST) as handle:
        yield handle


@pytest.fixture(scope="module")
def papers(tmp_path_factory: pytest.TempPathFactory) -> list[Paper]:
    folder = tmp_path_factory.mktemp("papers")
    for name in NAMES:
        shutil.copy(SAMPLE_PAPERS / name, folder / name)
    return discover_papers(folder).papers


@pytest.fixture(scope="module")
def bank() -> QuestionBank:
    return load_question_bank()


def _config(server: ServerHandle, **settings: object) -> TeacherConfig:
    values: dict[str, object] = {
        "base_url": server.base_url,
        "api": "batch",
        "max_reasks": 1,
        "max_retries": 2,
        "retry_max_wait_s": 0.05,
        "batch_poll_min_s": 0.02,
        "batch_poll_max_s": 0.1,
        "batch_online_max_requests": 0,
    }
    return TeacherConfig.model_validate({**values, **settings})


def _online(config: TeacherConfig) -> OpenAITeacher:
    return OpenAITeacher(config, api_key=SecretStr("sk-test-batch"))


def _extraction_config(teacher: TeacherConfig) -> ExtractionConfig:
    # Small chunks: most papers take several requests, as long papers do.
    return ExtractionConfig.for_teacher(teacher, max_chunk_tokens=700)


def _in_batches(
    server: ServerHandle,
    papers: list[Paper],
    bank: QuestionBank,
    folder: Path,
    stop: RunStop | None = None,
    **settings: object,
) -> tuple[BatchReplayTeacher, list[PaperRecord | FailureRecord]]:
    config = _config(server, **settings)
    extraction = _extraction_config(config)
    teacher = answer_in_batches(
        papers,
        _online(config),
        bank,
        extraction,
        output_directory=folder,
        is_cached=lambda _paper: False,
        stop=stop or RunStop(),
    )
    return teacher, [extract_paper(paper, teacher, bank, extraction) for paper in papers]


def _records(outcomes: list[PaperRecord | FailureRecord]) -> list[PaperRecord]:
    assert all(isinstance(outcome, PaperRecord) for outcome in outcomes), outcomes
    return [outcome for outcome in outcomes if isinstance(outcome, PaperRecord)]


def _input_lines(server: ServerHandle) -> list[list[dict[str, object]]]:
    """The request lines of every uploaded batch input file, batch by batch."""
    assert server.batches is not None
    files = [data for meta, data in server.batches.files.values() if meta["purpose"] == "batch"]
    return [[json.loads(line) for line in data.decode().splitlines()] for data in files]


def test_batch_answers_make_the_records_online_answers_make(
    server: ServerHandle, papers: list[Paper], bank: QuestionBank, tmp_path: Path
) -> None:
    teacher, outcomes = _in_batches(server, papers, bank, tmp_path)
    batch_records = _records(outcomes)
    assert server.stats().requests == 0  # not one online request
    assert server.batches is not None and server.batches.stats().batches_created == 1
    [lines] = _input_lines(server)
    assert {line["url"] for line in lines} == {"/v1/chat/completions"}
    assert sum(record.chunks for record in batch_records) == len(lines) > len(papers)
    assert all(line["body"]["response_format"]["type"] == "json_schema" for line in lines)  # type: ignore[index]
    assert teacher.settled_output_mode == "json_schema"

    config = _config(server, api="online")
    online = _online(config)
    online_records = _records(
        [extract_paper(paper, online, bank, _extraction_config(config)) for paper in papers]
    )
    for batch, direct in zip(batch_records, online_records, strict=True):
        assert batch.answers == direct.answers
        assert batch.markers == direct.markers
        assert batch.additional_qa == direct.additional_qa
        assert batch.chunks == direct.chunks
        assert batch.usage.requests == batch.chunks
        # Half the online price per token by default.
        full = config.estimate_cost_usd(batch.usage)
        assert batch.estimated_cost_usd == pytest.approx(full / 2)
    state = BatchStateFile(tmp_path).load()
    assert state is not None and state.answered and len(state.jobs) == 1


def test_failed_and_missing_lines_are_asked_again_in_a_follow_up_batch(
    server: ServerHandle, papers: list[Paper], bank: QuestionBank, tmp_path: Path
) -> None:
    server.inject("server_error", count=2)
    server.inject("drop_connection", count=1)  # a line in neither file
    _teacher, outcomes = _in_batches(server, papers, bank, tmp_path)
    records = _records(outcomes)
    assert server.batches is not None
    stats = server.batches.stats()
    assert stats.batches_created == 2 and stats.lines_failed == 2 and stats.lines_dropped == 1
    assert stats.batch_sizes[1] == 3  # the follow-up holds exactly the three lines without an answer
    assert server.stats().requests == 0
    assert sum(record.usage.requests for record in records) == sum(record.chunks for record in records) + 3


def test_a_few_follow_ups_go_online(
    server: ServerHandle, papers: list[Paper], bank: QuestionBank, tmp_path: Path
) -> None:
    server.inject("server_error", count=1)
    _teacher, outcomes = _in_batches(server, papers, bank, tmp_path, batch_online_max_requests=4)
    _records(outcomes)
    assert server.batches is not None and server.batches.stats().batches_created == 1
    assert server.stats().completed == 1  # the one failed line, asked online


def test_invalid_json_is_asked_again_with_the_error_and_bounded(
    server: ServerHandle, papers: list[Paper], bank: QuestionBank, tmp_path: Path
) -> None:
    server.inject("invalid_json", count=1)
    _teacher, outcomes = _in_batches(server, papers[:1], bank, tmp_path)
    [record] = _records(outcomes)
    follow_up = _input_lines(server)[1]
    assert len(follow_up) == 1
    messages = follow_up[0]["body"]["messages"]  # type: ignore[index]
    assert REASKED in messages[-1]["content"] and "invalid JSON" in messages[-1]["content"]
    assert record.usage.requests == record.chunks + 1

    # A paper whose replies are never valid fails as online: max_reasks + 1 attempts, raw output kept.
    server.clear_faults()
    marker = papers[1].text.split(".")[0][:40]
    server.inject("invalid_json", marker=marker)
    _teacher, outcomes = _in_batches(server, papers[1:2], bank, tmp_path / "again")
    [failure] = outcomes
    assert isinstance(failure, FailureRecord) and failure.stage == "validate"
    assert "invalid JSON" in failure.reason and failure.raw_output


def test_a_line_refused_for_its_content_fails_its_paper_without_asking_again(
    server: ServerHandle, papers: list[Paper], bank: QuestionBank, tmp_path: Path
) -> None:
    marker = papers[0].text.split(".")[0][:40]
    server.inject("content_rejected", marker=marker)
    _teacher, outcomes = _in_batches(server, papers, bank, tmp_path)
    failure = outcomes[0]
    assert isinstance(failure, FailureRecord) and failure.stage == "request"
    assert "flagged" in failure.reason
    _records(outcomes[1:])
    assert server.batches is not None
    assert server.batches.stats().batches_created == 1  # nothing asked again


def test_the_queue_limit_splits_the_work_and_refused_batches_are_submitted_again(
    papers: list[Paper], bank: QuestionBank, tmp_path: Path
) -> None:
    with running_test_server(batch_config=FAST.model_copy(update={"queue_tokens": 3000})) as server:
        # The client knows the limit: batches that fit, the next once one has ended.
        _teacher, outcomes = _in_batches(server, papers, bank, tmp_path / "known", batch_queue_tokens=3000)
        _records(outcomes)
        assert server.batches is not None
        stats = server.batches.stats()
        assert stats.batches_created >= 3 and stats.token_limit_failures == 0
        assert 0 < stats.max_enqueued_tokens <= 3000

    with running_test_server(batch_config=FAST.model_copy(update={"queue_tokens": 3000})) as server:
        # The client thinks the queue larger (other work fills it): refusals, then smaller batches.
        _teacher, outcomes = _in_batches(
            server, papers, bank, tmp_path / "unknown", batch_queue_tokens=90_000
        )
        _records(outcomes)
        assert server.batches is not None
        stats = server.batches.stats()
        assert stats.token_limit_failures >= 1
        assert stats.batches_created > stats.token_limit_failures
        assert server.stats().requests == 0


def test_a_request_larger_than_the_queue_goes_online(
    server: ServerHandle, papers: list[Paper], bank: QuestionBank, tmp_path: Path
) -> None:
    _teacher, outcomes = _in_batches(server, papers[:1], bank, tmp_path, batch_queue_tokens=100)
    [record] = _records(outcomes)
    assert server.batches is not None and server.batches.stats().batches_created == 0
    assert server.stats().completed == record.chunks


def test_a_killed_run_resumes_its_batches_instead_of_paying_again(
    papers: list[Paper], bank: QuestionBank, tmp_path: Path
) -> None:
    slow = FAST.model_copy(update={"in_progress_s": 0.5})
    with running_test_server(batch_config=slow) as server:
        config = _config(server)
        extraction_config = _extraction_config(config)
        online = _online(config)
        # The first run submits its batch, writes the state file and dies without a word.
        state_file = BatchStateFile(tmp_path)
        endpoint = endpoint_without_credentials(config.endpoint)
        runner = BatchRunner(online.client, config, state_file, endpoint=endpoint)
        extraction = BatchExtraction(online, bank, extraction_config, runner, stop=RunStop())
        pending, _waiting = extraction._collect(papers)
        runner._submit_what_fits([request.batch_request() for request in pending.values()])
        submitted = state_file.load()
        assert submitted is not None and [job.status for job in submitted.jobs] == ["validating"]
        del runner, extraction

        teacher = answer_in_batches(
            papers,
            _online(config),
            bank,
            extraction_config,
            output_directory=tmp_path,
            is_cached=lambda _paper: False,
            stop=RunStop(),
        )
        _records([extract_paper(paper, teacher, bank, extraction_config) for paper in papers])
        assert server.batches is not None and server.batches.stats().batches_created == 1  # no second
        resumed = state_file.load()
        assert resumed is not None and resumed.answered
        assert [job.id for job in resumed.jobs] == [job.id for job in submitted.jobs]


def test_a_stop_cancels_the_submitted_batches_and_the_next_run_goes_on(
    papers: list[Paper], bank: QuestionBank, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with running_test_server(batch_config=FAST.model_copy(update={"in_progress_s": 30})) as server:
        assert server.batches is not None
        stop = RunStop(grace_s=60)
        config = _config(server)
        extraction_config = _extraction_config(config)
        teachers: list[BatchReplayTeacher] = []

        def run() -> None:
            teachers.append(
                answer_in_batches(
                    papers,
                    _online(config),
                    bank,
                    extraction_config,
                    output_directory=tmp_path,
                    is_cached=lambda _paper: False,
                    stop=stop,
                )
            )

        thread = threading.Thread(target=run, daemon=True)
        with caplog.at_level(logging.WARNING):
            thread.start()
            deadline = time.monotonic() + 20
            while server.batches.stats().batches_created == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            stop.request()
            thread.join(10)
        assert not thread.is_alive()
        assert "cancelling 1 submitted batch(es)" in caplog.text
        [batch] = server.batches.batches.values()
        deadline = time.monotonic() + 5
        while batch.body["status"] != "cancelled" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert batch.body["status"] == "cancelled" and server.batches.stats().cancelled == 1
        state = BatchStateFile(tmp_path).load()
        assert state is not None and not state.answered
        assert [job.status for job in state.jobs] == ["cancelling"]
        # No paper is done, and none is a failure: each is left for the next run.
        with pytest.raises(BatchAnswerMissing):
            extract_paper(papers[0], teachers[0], bank, extraction_config)

        server.batches.config = FAST  # the next run: the cancelled batch is read, the rest asked again
        _teacher, outcomes = _in_batches(server, papers, bank, tmp_path)
        _records(outcomes)
        assert server.batches.stats().batches_created == 2


def test_result_lines_that_are_no_json_count_as_missing() -> None:
    failed = {"custom_id": "a", "response": {"status_code": 500, "body": {"error": {"message": "boom"}}}}
    text = json.dumps(failed) + "\nnot json\n"
    [result] = parse_result_lines(text, "test")
    assert result.custom_id == "a" and result.status_code == 500 and result.retryable


def test_a_state_file_that_is_not_ours_is_refused_with_its_name(tmp_path: Path) -> None:
    state_file = BatchStateFile(tmp_path)
    state_file.path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=r"batch_state\.json is not a batch state file"):
        state_file.load()
    state_file.save(BatchState(endpoint="e", model="m"))
    assert state_file.load() == BatchState(endpoint="e", model="m")


def test_batch_mode_is_a_setting_and_an_option(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from methyl_distill.cli.extract import register
    from methyl_distill.extraction.parameters import ExtractParameters
    from methyl_distill.teacher.config import teacher_config_from_environment

    monkeypatch.setenv("TEACHER_API", "batch")
    monkeypatch.setenv("TEACHER_BATCH_QUEUE_TOKENS", "1350000")
    config = teacher_config_from_environment()
    assert config.api == "batch" and config.batch_queue_tokens == 1_350_000
    assert config.input_price_per_mtok == config.price_input_per_mtok / 2
    monkeypatch.setenv("TEACHER_BATCH_PRICE_OUTPUT_PER_MTOK", "4")
    assert teacher_config_from_environment().output_price_per_mtok == 4
    monkeypatch.delenv("TEACHER_API")
    parameters = ExtractParameters(input_directory="in", output_directory="out", teacher_api="batch")
    assert parameters.resolved_teacher().api == "batch"

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["extract", "--input_directory", "a", "--output_directory", "b", "--teacher_api", "batch"]
    )
    assert args.teacher_api == "batch"


def test_an_endpoint_without_json_schema_moves_the_batch_down_a_mode(
    papers: list[Paper], bank: QuestionBank, tmp_path: Path
) -> None:
    with running_test_server(OpenAITestServerConfig(json_schema="rejected_400"), FAST) as server:
        teacher, outcomes = _in_batches(server, papers[:1], bank, tmp_path)
        [record] = _records(outcomes)
        assert teacher.settled_output_mode == "json_object"
        first, second = _input_lines(server)
        assert {line["body"]["response_format"]["type"] for line in first} == {"json_schema"}  # type: ignore[index]
        assert {line["body"]["response_format"]["type"] for line in second} == {"json_object"}  # type: ignore[index]
        # The refused lines (never billed) belong to no paper's answer: the record counts the answers.
        assert record.usage.requests == record.chunks


def test_the_test_servers_files_and_batches_speak_the_sdks_types(server: ServerHandle) -> None:
    import openai

    client = openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0)
    line = {
        "custom_id": "one",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o", "max_tokens": 50, "messages": [{"role": "user", "content": "Hello."}]},
    }
    uploaded = client.files.create(
        file=("in.jsonl", json.dumps(line).encode(), "application/jsonl"), purpose="batch"
    )
    assert client.files.retrieve(uploaded.id).bytes == len(json.dumps(line))
    created = [
        client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        for _ in range(3)
    ]
    page = client.batches.list(limit=2)
    assert [batch.id for batch in page.data] == [created[2].id, created[1].id] and page.has_more
    assert [batch.id for batch in client.batches.list(limit=2, after=created[1].id).data] == [created[0].id]
    deadline = time.monotonic() + 5
    while client.batches.retrieve(created[0].id).status != "completed" and time.monotonic() < deadline:
        time.sleep(0.02)
    done = client.batches.retrieve(created[0].id)
    assert done.request_counts is not None and done.request_counts.completed == 1 and done.output_file_id
    [result] = parse_result_lines(client.files.content(done.output_file_id).text, "output")
    assert result.custom_id == "one" and result.completion is not None
    with pytest.raises(openai.BadRequestError, match="Cannot cancel a batch with status 'completed'"):
        client.batches.cancel(done.id)
    with pytest.raises(openai.BadRequestError, match="completion_window"):
        client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="1h"
        )  # type: ignore[arg-type]
