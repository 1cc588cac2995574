"""Prefect at ten thousand papers: every task run recorded, and an all-cached rerun with no teacher call.

Prints numbers; it is not a test. The extraction flow (the local path, as `methyl-distill extract`
runs it: bounded thread pool, `--batch_size` task runs created at a time) extracts P synthetic papers
(default 10,000) against the project's OpenAI test server with no latency and no practical TPM
limit, on a temporary Prefect server of its own (PREFECT_HOME in a fresh folder), then runs again
over the same papers, all cached. For each run it reports:

- wall time, and wall time per paper: with a server that answers at once this is the Prefect
  overhead per paper plus our own per-paper work (reading the reply, grounding, writing the outputs);
- CPU seconds in the flow's process and in the Prefect server's, per paper;
- teacher calls (the test server's request count): every paper once, then none;
- task runs recorded by the Prefect server for the flow run, and how many in a final state
  (Completed / Cached), read through the API once the server has gone quiet: a dropped event (the
  server's in-memory event queue holds 10,000 messages) would leave runs missing or not final.

Run: `nice .venv/bin/python bench/extract_10k.py` (`--papers 2000` for a shorter run; on 2 shared
cores 10,000 takes about an hour: see docs/extraction.md for measured numbers).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.pop("OPENAI_API_KEY", None)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from extract_throughput import free_port, start_server, write_papers  # noqa: E402

# How long the count of recorded task runs may stay short of the papers without changing.
RECORDING_PATIENCE_S = 120.0


def cpu_seconds(test_server_pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of this process and of the Prefect server (every live child
    process but the OpenAI test server)."""
    import psutil

    me = psutil.Process()
    prefect_server = 0.0
    for child in me.children(recursive=True):
        if child.pid == test_server_pid:
            continue
        try:
            prefect_server += sum(child.cpu_times()[:2])
        except psutil.Error:  # exited meanwhile
            continue
    return sum(me.cpu_times()[:2]), prefect_server


def task_runs_of_latest_flow_run() -> tuple[int, dict[str, int]]:
    """(task runs the server recorded for the newest `extract` flow run, their count by state name)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    states: dict[str, int] = {}
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)[0]
        by_id = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))
        offset = 0
        while page := client.read_task_runs(flow_run_filter=by_id, limit=200, offset=offset):
            for task_run in page:
                name = task_run.state.name if task_run.state else "none"
                states[name] = states.get(name, 0) + 1
            offset += len(page)
    total = sum(states.values())
    return total, states


def wait_until_recorded(papers: int) -> tuple[float, tuple[int, dict[str, int]]]:
    """Seconds until every task run of the newest flow run is recorded in a final state (or the count
    stopped changing for `RECORDING_PATIENCE_S`), and what was recorded then."""
    began = last_change = time.monotonic()
    last = -1
    while True:
        recorded, states = task_runs_of_latest_flow_run()
        final = states.get("Completed", 0) + states.get("Cached", 0)
        if final == papers:
            return time.monotonic() - began, (recorded, states)
        if final != last:
            last, last_change = final, time.monotonic()
        elif time.monotonic() - last_change > RECORDING_PATIENCE_S:
            return time.monotonic() - began, (recorded, states)
        time.sleep(5.0)


def timed_run(run: Any, test_server_pid: int) -> tuple[Any, float, float, float]:
    began, (own_before, server_before) = time.monotonic(), cpu_seconds(test_server_pid)
    summary = run()
    wall = time.monotonic() - began
    own_after, server_after = cpu_seconds(test_server_pid)
    return summary, wall, own_after - own_before, server_after - server_before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--papers", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16, help="The flow's max_concurrency.")
    parser.add_argument("--batch-size", type=int, default=250, help="The flow's batch_size.")
    parser.add_argument("--seed", type=int, default=20261202)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="extract-10k-bench-"))
    os.environ["PREFECT_HOME"] = str(work / "prefect-home")
    from methyl_distill.flows.extract import extract_flow

    from methyl_distill.ops.temporary_prefect_server import prefect_api
    from methyl_distill.teacher.config import TeacherConfig

    began = time.monotonic()
    write_papers(work / "papers", args.papers, args.seed)
    print(
        f"work directory {work}; {args.papers} papers written in {time.monotonic() - began:.0f} s", flush=True
    )
    server = start_server(free_port(), 10**9, (0.0, 0.0), seed=7)
    teacher = TeacherConfig(base_url=server.base_url, tpm=10**9, bucket_backend="local")

    def extract(output: str) -> Any:
        return extract_flow(
            input_directory=str(work / "papers"),
            output_directory=str(work / output),
            teacher_config=teacher,
            cache_dir=str(work / "cache"),
            max_concurrency=args.concurrency,
            batch_size=args.batch_size,
        )

    rows = []
    try:
        with prefect_api():
            for label, output in (("first run", "out-1"), ("all-cached rerun", "out-2")):
                requests_before = server.stats().requests
                summary, wall, own_cpu, server_cpu = timed_run(
                    lambda output=output: extract(output), server.process.pid
                )
                calls = server.stats().requests - requests_before
                settle_s, (recorded, states) = wait_until_recorded(args.papers)
                rows.append((label, summary, wall, own_cpu, server_cpu, calls, settle_s, recorded, states))
                print(
                    f"{label}: {summary.extracted} extracted, {summary.cached} cached, "
                    f"{summary.failed} failed; teacher calls {calls}; wall {wall:.0f} s = "
                    f"{1000 * wall / args.papers:.1f} ms/paper; CPU "
                    f"{1000 * own_cpu / args.papers:.1f} ms/paper in the flow's process, "
                    f"{1000 * server_cpu / args.papers:.1f} ms/paper in the Prefect server; all recorded "
                    f"{settle_s:.0f} s after the flow returned; task runs recorded {recorded} of "
                    f"{args.papers}, states {states}",
                    flush=True,
                )
    finally:
        server.stop()
    print(
        "\n| run | papers | teacher calls | wall | wall/paper | flow CPU/paper | Prefect server CPU/paper "
        "| task runs recorded (final) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, summary, wall, own_cpu, server_cpu, calls, _settle, recorded, states in rows:
        final = sum(count for name, count in states.items() if name in ("Completed", "Cached"))
        print(
            f"| {label} | {summary.papers} | {calls} | {wall:.0f} s | {1000 * wall / args.papers:.1f} ms | "
            f"{1000 * own_cpu / args.papers:.1f} ms | {1000 * server_cpu / args.papers:.1f} ms | "
            f"{recorded} ({final}) |"
        )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
