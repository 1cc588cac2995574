"""One extraction run spread over task workers: real processes, one budget, one cache, one output.

A real Prefect server (the command line's temporary one, or the session's test harness when it is
already up), two real `methyl-distill extract-worker` processes holding the key, the project's
OpenAI test server, and the flow submitting to them (`workers="task_workers"`). Every paper must be
asked for exactly once over both workers, its record land in the flow's one output, both workers
must reserve on the shared Prefect limit, a paper's failure must come back as its `FailureRecord`,
and a rerun must come all from the cache. The round trip of a failure through Prefect's JSON
serializer and the worker's endpoint rule are checked without any server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from methyl_distill.tasks.extraction_workers import (
    PaperFailedOnWorker,
    teacher_for_workers,
    teacher_with_own_endpoint,
)
from prefect.serializers import JSONSerializer

from methyl_distill.extraction.records import FailureRecord, PaperRecord
from methyl_distill.teacher.config import TeacherConfig
from tests.fake_openai.server import OpenAITestServerConfig, running_test_server

SAMPLE_PAPERS = Path(__file__).resolve().parent.parent / "data" / "papers"
API_KEY = "sk-test-workers-key-5e1d"  # only the workers have it
REJECT_MARKER = "PAPER-THE-SERVER-REFUSES"
PAPERS = 12
WORKERS = 2
LIMIT = 2


def test_a_failure_survives_prefects_json_serializer() -> None:
    failure = FailureRecord(
        file_id="a", source_path="a.txt", stage="validate", reason="schema errors", raw_output='{"x": 1}'
    )
    serializer = JSONSerializer()
    back = serializer.loads(serializer.dumps(PaperFailedOnWorker(failure)))
    assert isinstance(back, PaperFailedOnWorker)
    assert back.failure == failure


def test_a_worker_puts_back_its_own_credentials_only_for_the_same_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret_url = "https://user:pw@llm.example.org/v1"
    shipped = TeacherConfig.model_validate_json(TeacherConfig(base_url=secret_url).model_dump_json())
    assert shipped.base_url == "https://***:***@llm.example.org/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", secret_url)
    assert teacher_with_own_endpoint(shipped).base_url == secret_url
    monkeypatch.setenv("OPENAI_BASE_URL", "https://other:pw@elsewhere.example.org/v1")
    with pytest.raises(ValueError, match="OPENAI_BASE_URL"):
        teacher_with_own_endpoint(shipped)


def test_workers_share_the_prefect_budget_and_never_get_credentials() -> None:
    assert teacher_for_workers(TeacherConfig()).bucket_backend == "prefect"
    shipped = teacher_for_workers(TeacherConfig(base_url="https://u:secret-pw@llm.example.org/v1?api-key=k1"))
    assert "secret-pw" not in repr(shipped.__dict__) and "k1" not in repr(shipped.__dict__)
    with pytest.raises(ValueError, match="bucket_backend=local"):
        teacher_for_workers(TeacherConfig(bucket_backend="local"))


def _write_papers(folder: Path) -> None:
    folder.mkdir(parents=True)
    samples = sorted(SAMPLE_PAPERS.glob("*.txt"))
    for index in range(PAPERS):
        text = samples[index % len(samples)].read_text(encoding="utf-8")
        marker = f"\n{REJECT_MARKER}\n" if index == 0 else ""
        (folder / f"paper_{index:02d}.txt").write_text(
            f"{text}\n\nThis copy is number {index} of the workers test.{marker}\n", encoding="utf-8"
        )


@pytest.fixture
def prefect_api_url(tmp_path: Path) -> Iterator[str]:
    """A real Prefect server the workers can reach: the session's (a test harness) when one is up,
    else a temporary one of our own."""
    from prefect.settings import PREFECT_API_URL

    from methyl_distill.ops.temporary_prefect_server import prefect_api

    with prefect_api():
        yield str(PREFECT_API_URL.value())


def _start_worker(
    index: int, api_url: str, cache: Path, log_folder: Path
) -> tuple[subprocess.Popen[bytes], Path]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.update(
        {
            "PREFECT_API_URL": api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "OPENAI_API_KEY": API_KEY,
            "HF_HUB_OFFLINE": "1",
        }
    )
    log_path = log_folder / f"worker-{index}.log"
    command = [
        str(Path(sys.executable).with_name("methyl-distill")),
        "extract-worker",
        "--limit",
        str(LIMIT),
        "--cache_dir",
        str(cache),
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=env, cwd=log_folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return process, log_path


def _wait_for_subscriptions(workers: list[tuple[subprocess.Popen[bytes], Path]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for process, log_path in workers:
        while "Subscribing to runs of task" not in log_path.read_text(errors="replace"):
            assert process.poll() is None, log_path.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")[-4000:]
            time.sleep(0.2)
    time.sleep(1.0)  # the subscription's websocket opens just after the message


def _stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.terminate()
        try:
            return process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait(timeout=10)


@pytest.mark.integration
def test_two_task_workers_extract_each_paper_once_into_one_output(
    tmp_path: Path, prefect_api_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from methyl_distill.flows.extract import extract_flow
    from prefect.client.orchestration import get_client

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # the flow holds no key
    papers, cache = tmp_path / "papers", tmp_path / "cache"
    _write_papers(papers)
    limit_name = f"test-workers-{uuid.uuid4().hex[:8]}"
    config = OpenAITestServerConfig(latency_s=(0.2, 0.4), seed=5)
    with running_test_server(config) as server:
        server.inject("content_rejected", marker=REJECT_MARKER)
        teacher = TeacherConfig(base_url=server.base_url, bucket_limit_name=limit_name, max_retries=3)
        workers = [_start_worker(index, prefect_api_url, cache, tmp_path) for index in range(WORKERS)]
        try:
            _wait_for_subscriptions(workers, timeout_s=120)

            def run(output: str):  # type: ignore[no-untyped-def]
                return extract_flow(
                    input_directory=str(papers),
                    output_directory=str(tmp_path / output),
                    teacher_config=teacher,
                    cache_dir=str(cache),
                    workers="task_workers",
                    batch_size=5,  # several batches, as a large run has
                )

            first = run("out-1")
            after_first = server.stats()
            second = run("out-2")
            after_second = server.stats()
            with get_client(sync_client=True) as client:
                shared_limit = client.read_global_concurrency_limit_by_name(limit_name)
        finally:
            exit_codes = [_stop(process) for process, _ in workers]
    logs = [log_path.read_text(errors="replace") for _, log_path in workers]
    detail = "\n----\n".join(log[-3000:] for log in logs)

    # One output: every good paper's record and processed file, the refused paper in failures.jsonl.
    assert (first.extracted, first.cached, first.failed) == (PAPERS - 1, 0, 1), detail
    records = [
        PaperRecord.model_validate_json(line)
        for line in (tmp_path / "out-1" / "records.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert len(records) == PAPERS - 1
    assert {path.stem for path in (tmp_path / "out-1" / "processed_files").glob("*.txt")} == {
        record.file_id for record in records
    }
    failures = [
        FailureRecord.model_validate_json(line)
        for line in (tmp_path / "out-1" / "failures.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert [(failure.file_id, failure.stage) for failure in failures] == [("paper-00-txt", "request")]
    assert API_KEY not in (tmp_path / "out-1" / "failures.jsonl").read_text(encoding="utf-8")
    # Each paper asked for exactly once over both workers: one request per chunk, one for the refusal.
    assert after_first.requests == sum(record.chunks for record in records) + 1, after_first
    assert after_first.responses_429 == 0
    # Both workers took papers, each reserving on the one shared Prefect limit.
    for log in logs:
        assert "Received task run" in log, detail
        assert f"the Prefect global concurrency limit '{limit_name}'" in log, detail
    assert shared_limit.limit == teacher.tpm
    # The rerun: all from the cache, the refused paper asked again (failures are not cached).
    assert (second.cached, second.extracted, second.failed) == (PAPERS - 1, 0, 1)
    assert after_second.requests == after_first.requests + 1
    assert list((cache / "parameters").glob("*")) == []  # each run's parameters deleted when it ended
    assert all(code in (0, 143) for code in exit_codes), exit_codes


def test_the_kubernetes_workers_run_the_extract_worker_command() -> None:
    import yaml

    from methyl_distill.cli import build_parser

    manifest = Path(__file__).resolve().parent.parent / "deployments" / "kubernetes" / "extract-workers.yaml"
    deployment = yaml.safe_load(manifest.read_text(encoding="utf-8"))
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert command[:4] == ["tini", "--", "methyl-distill", "extract-worker"]
    arguments = build_parser().parse_args(command[3:])  # options the command really has
    assert arguments.limit >= 1
    env = {entry["name"]: entry for entry in container["env"]}
    assert {"PREFECT_API_URL", "METHYL_DISTILL_CACHE_STORAGE_BLOCK", "OPENAI_API_KEY"} <= set(env)
    assert "secretKeyRef" in env["OPENAI_API_KEY"]["valueFrom"]  # the key never in the manifest


def test_a_paper_its_workers_gave_up_on_is_reported_as_a_failure(tmp_path: Path) -> None:
    from methyl_distill.tasks.extraction import paper_outcome
    from methyl_distill.tasks.extraction_workers import TaskWorkerRuns, WorkerPaperRun

    from methyl_distill.extraction.extract import ExtractionConfig
    from methyl_distill.extraction.papers import Paper
    from methyl_distill.extraction.question_bank import load_question_bank

    teacher = TeacherConfig(base_url="http://127.0.0.1:9/v1")
    paper = Paper(file_id="p", file_ids=("p",), source_paths=("p.txt",), content_sha256="0" * 64, text="T.")
    runs = TaskWorkerRuns(load_question_bank(), ExtractionConfig.for_teacher(teacher), teacher, tmp_path)
    run = WorkerPaperRun(paper, uuid.uuid4(), None)
    run.finish(runs._failed(run, "its workers stopped 4 times before it was done"))
    outcome = paper_outcome(run)  # type: ignore[arg-type]
    assert isinstance(outcome, FailureRecord)
    assert (outcome.file_id, outcome.stage) == ("p", "request")
    assert "stopped 4 times" in outcome.reason


@pytest.mark.integration
def test_a_stopped_worker_leaves_its_papers_to_the_other(
    tmp_path: Path, prefect_api_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGTERM to one worker half way (a pod's scale-down), when it has two papers in flight and a
    third received and waiting for a slot: it takes no further paper, finishes the two, hands the
    third back without a request, and the run still ends with every paper extracted, each asked for
    once, the third by the other worker."""
    import threading

    from methyl_distill.flows.extract import extract_flow

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    papers, cache = tmp_path / "papers", tmp_path / "cache"
    _write_papers(papers)
    config = OpenAITestServerConfig(latency_s=(3.0, 3.0), seed=6)
    with running_test_server(config) as server:
        limit_name = f"test-stop-{uuid.uuid4().hex[:8]}"
        teacher = TeacherConfig(base_url=server.base_url, bucket_limit_name=limit_name)
        workers = [_start_worker(index, prefect_api_url, cache, tmp_path) for index in range(WORKERS)]
        stopped_code: list[int] = []

        def stop_first_worker_when_it_holds_a_paper() -> None:
            deadline = time.monotonic() + 120
            log_path = workers[0][1]
            while log_path.read_text(errors="replace").count("Received task run") < LIMIT + 1:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.05)
            stopped_code.append(_stop(workers[0][0]))  # SIGTERM, waits for its exit

        try:
            _wait_for_subscriptions(workers, timeout_s=120)
            stopper = threading.Thread(target=stop_first_worker_when_it_holds_a_paper, daemon=True)
            stopper.start()
            summary = extract_flow(
                input_directory=str(papers),
                output_directory=str(tmp_path / "out"),
                teacher_config=teacher,
                cache_dir=str(cache),
                workers="task_workers",
            )
            stopper.join(timeout=60)
            stats = server.stats()
        finally:
            for process, _ in workers:
                _stop(process)
    logs = "\n----\n".join(log_path.read_text(errors="replace")[-3000:] for _, log_path in workers)
    assert stopped_code == [143], logs
    assert (summary.extracted, summary.failed) == (PAPERS, 0), logs
    records = (tmp_path / "out" / "records.jsonl").read_text(encoding="utf-8").splitlines()
    assert stats.requests == sum(PaperRecord.model_validate_json(line).chunks for line in records), stats
    assert "Received task run" in workers[1][1].read_text(errors="replace")
    assert "its worker stopped before it was done; submitted again" in caplog.text


@pytest.mark.integration
def test_a_stopped_run_leaves_no_paper_to_its_workers(
    tmp_path: Path, prefect_api_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C on `extract --workers task_workers`: the papers no worker started are cancelled and
    never asked for, those in flight finish, the outputs hold what was done, and the next run
    extracts only the rest."""
    import threading

    from methyl_distill.flows.extract import extract_flow

    from methyl_distill.extraction.stopping import PROCESS_STOP, ExtractionStopped

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    papers, cache = tmp_path / "papers", tmp_path / "cache"
    _write_papers(papers)
    config = OpenAITestServerConfig(latency_s=(2.0, 2.0), seed=7)
    with running_test_server(config) as server:
        limit_name = f"test-run-stop-{uuid.uuid4().hex[:8]}"
        teacher = TeacherConfig(base_url=server.base_url, bucket_limit_name=limit_name)
        workers = [_start_worker(index, prefect_api_url, cache, tmp_path) for index in range(WORKERS)]
        at_stop: list[int] = []

        def stop_the_run_after_two_papers() -> None:
            deadline = time.monotonic() + 120
            while server.stats().completed < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            at_stop.append(server.stats().requests)
            PROCESS_STOP.request()  # what the command's SIGINT handler does

        def run(output: str):  # type: ignore[no-untyped-def]
            return extract_flow(
                input_directory=str(papers),
                output_directory=str(tmp_path / output),
                teacher_config=teacher,
                cache_dir=str(cache),
                workers="task_workers",
            )

        try:
            _wait_for_subscriptions(workers, timeout_s=120)
            stopper = threading.Thread(target=stop_the_run_after_two_papers, daemon=True)
            stopper.start()
            try:
                with pytest.raises(ExtractionStopped) as stopped:
                    run("out-1")
            finally:
                stopper.join(timeout=60)
                PROCESS_STOP.reset()
            time.sleep(3.0)  # any paper a worker still took would be asked for by now
            after_stop = server.stats().requests
            second = run("out-2")
            after_second = server.stats().requests
        finally:
            for process, _ in workers:
                _stop(process)
    # Only the requests already on their way when the stop came (one per worker slot) went out.
    assert after_stop <= at_stop[0] + WORKERS * LIMIT, (at_stop, after_stop)
    assert after_stop < PAPERS
    done = stopped.value.done
    records = (tmp_path / "out-1" / "records.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(records) == done >= 2
    # The next run takes the finished papers from the cache and asks only for the rest.
    assert second.cached >= done and second.extracted + second.cached == PAPERS
    assert after_second - after_stop == second.extracted
