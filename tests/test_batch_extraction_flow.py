"""The extraction flow with `teacher_api="batch"`: the project's test server's Batch API, the real
openai SDK, Prefect caching under the session's test harness, shared with online runs both ways."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from methyl_distill.flows.extract import ExtractionSummary, extract_flow

from methyl_distill.extraction.outputs import BATCH_STATE_FILE
from methyl_distill.extraction.records import PaperRecord
from methyl_distill.teacher.config import TeacherConfig
from tests.fake_openai.batches import BatchServerConfig
from tests.fake_openai.server import OpenAITestServerConfig, ServerHandle, running_test_server

pytestmark = [pytest.mark.flow, pytest.mark.usefixtures("prefect_harness")]

SAMPLE_PAPERS = Path(__file__).resolve().parent.parent / "data" / "papers"
FIRST, SECOND, THIRD = (
    "gstp1_prostate_cancer.txt",
    "mgmt_glioblastoma_temozolomide.txt",
    "sept9_plasma_colorectal_screening.txt",
)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerHandle]:
    batches = BatchServerConfig(validating_s=0.01, in_progress_s=0.02, finalizing_s=0.01)
    with running_test_server(OpenAITestServerConfig(latency_s=(0.0, 0.01)), batches) as handle:
        yield handle


def _run(server: ServerHandle, papers: list[str], tmp_path: Path, output: str, api: str) -> ExtractionSummary:
    folder = tmp_path / f"papers-{output}"
    folder.mkdir(exist_ok=True)
    for name in papers:
        shutil.copy(SAMPLE_PAPERS / name, folder / name)
    teacher = TeacherConfig(
        base_url=server.base_url,
        max_reasks=1,
        retry_max_wait_s=0.05,
        batch_poll_min_s=0.02,
        batch_poll_max_s=0.1,
    )
    return extract_flow(
        input_directory=str(folder),
        output_directory=str(tmp_path / output),
        teacher_config=teacher,
        teacher_api=api,  # type: ignore[arg-type]
        cache_dir=str(tmp_path / "cache"),
        max_concurrency=4,
        max_chunk_tokens=700,
    )


def _records(summary: ExtractionSummary) -> dict[str, PaperRecord]:
    lines = Path(summary.records_path).read_text(encoding="utf-8").splitlines()
    records = map(PaperRecord.model_validate_json, lines)
    return {Path(record.source_paths[0]).name: record for record in records}


def _latest_artifact_data(key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    return str(artifact.data)


def _shape(summary: ExtractionSummary) -> dict[str, object]:
    """What an output folder holds, without the answers' content."""
    entries = json.loads(Path(summary.all_results_path).read_text(encoding="utf-8"))
    return {
        "files": sorted(
            path.name for path in Path(summary.output_directory).iterdir() if path.name != BATCH_STATE_FILE
        ),
        "processed": sorted(path.name for path in Path(summary.processed_files_dir).iterdir()),
        "entry_keys": sorted({key for entry in entries for key in entry}),
        "record_keys": sorted({key for record in _records(summary).values() for key in record.model_dump()}),
        "failures": Path(summary.failures_path).read_text(encoding="utf-8"),
    }


def test_batch_runs_share_the_cache_with_online_runs_both_ways(server: ServerHandle, tmp_path: Path) -> None:
    assert server.batches is not None
    online = _run(server, [FIRST], tmp_path, "online-1", "online")
    assert (online.extracted, online.cached) == (1, 0)
    online_requests = server.stats().requests

    # The paper extracted online comes from the cache; the other one through the Batch API alone.
    batch = _run(server, [FIRST, SECOND], tmp_path, "batch", "batch")
    assert (batch.extracted, batch.cached, batch.failed) == (1, 1, 0)
    assert server.stats().requests == online_requests  # not one online request
    stats = server.batches.stats()
    second = _records(batch)[SECOND]
    assert stats.batches_created == 1 and stats.lines_answered == second.chunks > 1
    # Costs at the batch price: half the online one.
    assert (
        batch.estimated_cost_usd == pytest.approx(TeacherConfig().estimate_cost_usd(batch.usage) / 2)
        and batch.estimated_cost_usd > 0
    )
    state = json.loads((Path(batch.output_directory) / BATCH_STATE_FILE).read_text(encoding="utf-8"))
    assert state["answered"] and len(state["jobs"]) == 1
    # The progress in the UI: each batch and its status.
    markdown = _latest_artifact_data("extraction-batches")
    assert f"`{state['jobs'][0]['id']}` | completed" in markdown and "1 done" in markdown

    # The outputs have the shape of an online run's.
    reference = _run(server, [FIRST, SECOND], tmp_path, "online-2", "online")
    assert (reference.extracted, reference.cached) == (0, 2)  # the batch paper is cached for online runs
    assert _shape(batch) == _shape(reference)
    assert _records(batch)[SECOND].answers == second.answers

    # The paper extracted in batch mode is not asked again online; only the new one is.
    before = server.stats().completed
    online = _run(server, [FIRST, SECOND, THIRD], tmp_path, "online-3", "online")
    assert (online.extracted, online.cached) == (1, 2)
    third = _records(online)[THIRD]
    assert server.stats().completed - before == third.chunks
    assert server.batches.stats().batches_created == 1

    # An all-cached batch run submits nothing and forgets the finished batch state.
    again = _run(server, [FIRST, SECOND, THIRD], tmp_path, "batch", "batch")
    assert (again.extracted, again.cached) == (0, 3)
    assert server.batches.stats().batches_created == 1
    assert not (Path(again.output_directory) / BATCH_STATE_FILE).exists()


def test_a_stop_during_the_batch_phase_cancels_the_batches_and_keeps_nothing_half_done(
    tmp_path: Path,
) -> None:
    from methyl_distill.extraction.stopping import PROCESS_STOP, ExtractionStopped

    slow = BatchServerConfig(validating_s=0.01, in_progress_s=30, finalizing_s=0.01)
    with running_test_server(batch_config=slow) as server:
        assert server.batches is not None
        batches = server.batches
        outcome: list[BaseException | ExtractionSummary] = []

        def run() -> None:
            try:
                outcome.append(_run(server, [FIRST, SECOND], tmp_path, "stopped", "batch"))
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        try:
            thread.start()
            deadline = time.monotonic() + 120
            while batches.stats().batches_created == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            PROCESS_STOP.request()
            thread.join(60)
        finally:
            PROCESS_STOP.reset()
        assert not thread.is_alive()
        [stopped] = outcome
        assert isinstance(stopped, ExtractionStopped) and stopped.done == 0
        [batch] = batches.batches.values()
        assert batch.body["status"] in ("cancelling", "cancelled")
        state = json.loads((tmp_path / "stopped" / BATCH_STATE_FILE).read_text(encoding="utf-8"))
        assert [job["id"] for job in state["jobs"]] == [batch.body["id"]] and not state["answered"]
        assert (tmp_path / "stopped" / "records.jsonl").read_text(encoding="utf-8") == ""
