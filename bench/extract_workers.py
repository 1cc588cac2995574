"""Several task workers, one budget: the share of the TPM limit used by 1, 2 and 4 worker processes.

Prints numbers; it is not a test. For each worker count N, on one Prefect server (a temporary one,
or PREFECT_API_URL's):

1. a fresh instance of the project's OpenAI test server (default 200,000 TPM, replies after 12 s,
   OpenAI's accounting: the admission charge, prompt estimate + max_tokens, kept for the window);
2. N `methyl-distill extract-worker` processes holding the key, sharing a fresh Prefect global
   concurrency limit (a new name per N, so each starts full) and one cache folder;
3. `extract_flow(..., workers="task_workers")` over P synthetic papers (default 100, new ones per N).

Reported per N: the combined share of the limit used in the steady state (server-side tokens charged
per minute from `--warmup-s` after the first admission to the last one, over the limit), 429s and
their share of requests, papers per minute, wall time, and papers taken by each worker.

Run: `nice .venv/bin/python bench/extract_workers.py` (about 10 minutes on 2 cores with the defaults).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.pop("OPENAI_API_KEY", None)  # only the workers hold one

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from extract_throughput import (  # noqa: E402
    free_port,
    start_server,
    steady_state_window,
    write_papers,
)

API_KEY = "sk-bench-workers"


def start_workers(
    count: int, limit: int, api_url: str, cache: Path, logs: Path
) -> list[tuple[subprocess.Popen[bytes], Path]]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.update(
        {"PREFECT_API_URL": api_url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "OPENAI_API_KEY": API_KEY}
    )
    workers = []
    for index in range(count):
        log_path = logs / f"worker-{index}.log"
        command = [str(Path(sys.executable).with_name("methyl-distill")), "extract-worker"]
        command += ["--limit", str(limit), "--cache_dir", str(cache)]
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, env=env, cwd=logs, stdout=log, stderr=subprocess.STDOUT)
        workers.append((process, log_path))
    deadline = time.monotonic() + 180
    for process, log_path in workers:
        while "Subscribing to runs of task" not in log_path.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start: {log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
    time.sleep(1.0)
    return workers


def stop_workers(workers: list[tuple[subprocess.Popen[bytes], Path]]) -> list[int]:
    for process, _ in workers:
        process.terminate()
    codes = []
    for process, _ in workers:
        try:
            codes.append(process.wait(timeout=30))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append(process.wait())
    return codes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--papers", type=int, default=100, help="Papers per worker count.")
    parser.add_argument("--limit", type=int, default=16, help="Papers each worker extracts at once.")
    parser.add_argument("--tpm", type=int, default=200_000)
    parser.add_argument("--latency", type=float, nargs=2, default=(12.0, 12.0))
    parser.add_argument("--accounting", choices=["admission", "settle"], default="admission")
    parser.add_argument("--warmup-s", type=float, default=60.0, help="Excluded from the steady-state window.")
    parser.add_argument("--seed", type=int, default=20261202)
    args = parser.parse_args(argv)

    from methyl_distill.flows.extract import extract_flow
    from prefect.settings import PREFECT_API_URL

    from methyl_distill.ops.temporary_prefect_server import prefect_api
    from methyl_distill.teacher.config import TeacherConfig

    work = Path(tempfile.mkdtemp(prefix="extract-workers-bench-"))
    os.environ.setdefault("PREFECT_HOME", str(work / "prefect-home"))
    print(
        f"work directory {work}; {args.papers} papers per run; test server {args.tpm} TPM, latency "
        f"{args.latency[0]:g}-{args.latency[1]:g} s, accounting {args.accounting}; "
        f"--limit {args.limit} per worker",
        flush=True,
    )
    rows = []
    with prefect_api():
        api_url = str(PREFECT_API_URL.value())
        for count in args.workers:
            papers = work / f"papers-{count}"
            write_papers(papers, args.papers, args.seed + count)  # new papers: nothing cached
            server = start_server(free_port(), args.tpm, tuple(args.latency), count, args.accounting)
            logs = work / f"logs-{count}"
            logs.mkdir()
            workers = start_workers(count, args.limit, api_url, work / "cache", logs)
            try:
                teacher = TeacherConfig(
                    base_url=server.base_url, tpm=args.tpm, bucket_limit_name=f"bench-{uuid.uuid4().hex[:8]}"
                )
                began = time.monotonic()
                summary = extract_flow(
                    input_directory=str(papers),
                    output_directory=str(work / f"out-{count}"),
                    teacher_config=teacher,
                    cache_dir=str(work / "cache"),
                    workers="task_workers",
                )
                wall = time.monotonic() - began
                stats = server.stats()
            finally:
                stop_workers(workers)
                server.stop()
            taken = [
                len(re.findall(r"Received task run", log_path.read_text(errors="replace")))
                for _, log_path in workers
            ]
            start_s, end_s = steady_state_window(stats, args.warmup_s)
            share = stats.tokens_charged_per_minute(start_s, end_s) / args.tpm
            busy_s = stats.ledger[-1][0] - stats.ledger[0][0]
            rows.append((count, summary, stats, share, wall, busy_s, taken, end_s - start_s))
            print(
                f"{count} worker(s): {summary.extracted} extracted, {summary.failed} failed, "
                f"{summary.cached} cached; "
                f"share of the limit {share:.3f} over {end_s - start_s:.0f} s; requests {stats.requests}, "
                f"429s {stats.responses_429} ({stats.responses_429 / max(1, stats.requests):.2%}); "
                f"{summary.extracted * 60 / busy_s:.1f} papers/min (first request to last reply); "
                f"wall {wall:.0f} s; "
                f"papers taken per worker {taken}",
                flush=True,
            )
    print(
        f"\n| workers | papers | share of the {args.tpm:,} TPM limit (steady state) | 429s / requests "
        "| papers/min | wall |"
    )
    print("|---|---|---|---|---|---|")
    for count, summary, stats, share, wall, busy_s, _taken, window in rows:
        print(
            f"| {count} | {summary.extracted} | {share:.3f} ({window:.0f} s window) | "
            f"{stats.responses_429} / "
            f"{stats.requests} ({stats.responses_429 / max(1, stats.requests):.1%}) | "
            f"{summary.extracted * 60 / busy_s:.1f} | {wall:.0f} s |"
        )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
