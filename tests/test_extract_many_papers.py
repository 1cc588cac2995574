"""Hundreds of papers in one run: every task run reaches the Prefect server's database, in a final state.

Prefect 3 records task runs from the events their clients send; a burst larger than the server's
in-memory event queue would drop some (FACTS.md: a third of 5000 at once). The flow creates
`batch_size` task runs at a time; with a small batch size here, 300 papers make twelve batches, the
shape of a 10,000-paper run (bench/extract_10k.py measures that one). The rerun is all cached, with no
teacher call, and its task runs are recorded too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
from methyl_distill.flows.extract import extract_flow

from methyl_distill.teacher.config import TeacherConfig
from tests.fake_openai.server import OpenAITestServerConfig, ServerHandle, running_test_server

pytestmark = [pytest.mark.flow, pytest.mark.usefixtures("prefect_harness")]

PAPERS = 300
BATCH_SIZE = 25
RECORDED_WITHIN_S = 60.0


@pytest.fixture(scope="module")
def server() -> Iterator[ServerHandle]:
    with running_test_server(OpenAITestServerConfig(tokens_per_minute=10**9, latency_s=(0.0, 0.0))) as handle:
        yield handle


def _write_papers(folder: Path) -> None:
    folder.mkdir()
    for index in range(PAPERS):
        (folder / f"paper_{index:03d}.txt").write_text(
            f"Study {index}: SEPT9 promoter hypermethylation in plasma cell-free DNA detected colorectal "
            f"cancer in {index + 20} of {index + 40} patients, with a sensitivity of 0.{60 + index % 30} "
            f"and a specificity of 0.9. MGMT methylation was measured by pyrosequencing.\n",
            encoding="utf-8",
        )


def _recorded_states(flow_run_id: UUID) -> dict[str, int]:
    """State names of the flow run's task runs as the server's database holds them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    by_id = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    states: dict[str, int] = {}
    with get_client(sync_client=True) as client:
        offset = 0
        while page := client.read_task_runs(flow_run_filter=by_id, limit=200, offset=offset):
            for task_run in page:
                name = task_run.state.name if task_run.state is not None else "none"
                states[name] = states.get(name, 0) + 1
            offset += len(page)
    return states


def _wait_until_recorded(flow_run_id: UUID, final_name: str) -> dict[str, int]:
    deadline = time.monotonic() + RECORDED_WITHIN_S
    while True:
        states = _recorded_states(flow_run_id)
        if states.get(final_name, 0) == PAPERS or time.monotonic() > deadline:
            return states
        time.sleep(1.0)


def test_every_task_run_of_a_batched_run_is_recorded(server: ServerHandle, tmp_path: Path) -> None:
    papers = tmp_path / "papers"
    _write_papers(papers)
    teacher = TeacherConfig(base_url=server.base_url, tpm=10**9, bucket_backend="local")

    def run(output: str) -> tuple[UUID, object]:
        state = extract_flow(
            input_directory=str(papers),
            output_directory=str(tmp_path / output),
            teacher_config=teacher,
            cache_dir=str(tmp_path / "cache"),
            batch_size=BATCH_SIZE,
            return_state=True,
        )
        flow_run_id = state.state_details.flow_run_id
        assert flow_run_id is not None
        return flow_run_id, state.result()

    first_id, first = run("out-1")
    requests_after_first = server.stats().requests
    assert (first.extracted, first.failed) == (PAPERS, 0)  # type: ignore[attr-defined]
    assert _wait_until_recorded(first_id, "Completed") == {"Completed": PAPERS}

    second_id, second = run("out-2")
    assert second.cached == PAPERS  # type: ignore[attr-defined]
    assert server.stats().requests == requests_after_first  # no teacher call
    assert _wait_until_recorded(second_id, "Cached") == {"Cached": PAPERS}
