"""Batch mode on 200 papers: wall time, online calls, batches and the cost estimate.

Prints numbers; it is not a test. `extract_flow(..., teacher_api="batch")` extracts N synthetic
papers (default 200, as `bench/extract_throughput.py` writes them) through the Batch API of the
project's OpenAI test server (in this process), with gpt-4o's usage-tier-1 enqueued-token limit
(90,000 tokens, client and server alike), 1% failed lines and 1% invalid replies, and a compressed
clock: a batch validates for `--validating-s`, runs `--in-progress-s` plus `--per-line-s` per line and
finalizes for `--finalizing-s` (OpenAI's take minutes to hours: the wall time here measures our side,
not theirs).

Reported: wall time of the flow, papers extracted / failed, batches created, refused for the queue
limit and their sizes, lines answered / failed, the online chat requests (follow-ups sent online),
tokens, and the cost estimate at batch prices beside what the same tokens cost online.

Run: `nice .venv/bin/python bench/batch_extract.py` (about a minute or two on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.pop("OPENAI_API_KEY", None)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from extract_throughput import wait_until_prefect_server_idle, write_papers  # noqa: E402

from tests.fake_openai.batches import BatchServerConfig  # noqa: E402
from tests.fake_openai.server import OpenAITestServerConfig, running_test_server  # noqa: E402
from tests.fake_openai.state import FaultRule  # noqa: E402

TIER_1_QUEUE_TOKENS = 90_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--papers", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--queue-tokens", type=int, default=TIER_1_QUEUE_TOKENS)
    parser.add_argument("--validating-s", type=float, default=0.5)
    parser.add_argument("--in-progress-s", type=float, default=1.0)
    parser.add_argument("--per-line-s", type=float, default=0.01)
    parser.add_argument("--finalizing-s", type=float, default=0.5)
    parser.add_argument(
        "--fault-rate", type=float, default=0.01, help="Share of failed and of invalid lines."
    )
    args = parser.parse_args(argv)

    from methyl_distill.flows.extract import extract_flow

    from methyl_distill.teacher.config import TeacherConfig

    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    write_papers(work / "papers", args.papers, args.seed)
    server_config = OpenAITestServerConfig(
        seed=args.seed,
        faults=[
            FaultRule(kind="server_error", probability=args.fault_rate),
            FaultRule(kind="invalid_json", probability=args.fault_rate),
        ],
    )
    batch_config = BatchServerConfig(
        validating_s=args.validating_s,
        in_progress_s=args.in_progress_s,
        seconds_per_line=args.per_line_s,
        finalizing_s=args.finalizing_s,
        queue_tokens=args.queue_tokens,
    )
    teacher = TeacherConfig(
        model="gpt-4o",
        api="batch",
        batch_queue_tokens=args.queue_tokens,
        batch_poll_min_s=0.5,
        batch_poll_max_s=2.0,
    )
    print(
        f"work directory {work}; {args.papers} papers; enqueued-token limit {args.queue_tokens}", flush=True
    )
    with running_test_server(server_config, batch_config) as server:
        assert server.batches is not None
        started = time.monotonic()
        summary = extract_flow(
            input_directory=str(work / "papers"),
            output_directory=str(work / "out"),
            teacher_config=teacher.model_copy(update={"base_url": server.base_url}),
            cache_dir=str(work / "cache"),
        )
        wall = time.monotonic() - started
        batches = server.batches.stats()
        online = server.stats()
    online_price = TeacherConfig().estimate_cost_usd(summary.usage)
    sizes = batches.batch_sizes
    print(
        f"wall time: {wall:.1f} s for {summary.papers} papers ({summary.papers / wall * 60:.0f} papers/min)"
    )
    print(f"papers: {summary.extracted} extracted, {summary.cached} cached, {summary.failed} failed")
    print(
        f"batches: {batches.batches_created} created, {batches.token_limit_failures} refused for the queue "
        f"limit; lines per batch {min(sizes, default=0)}-{max(sizes, default=0)}; peak enqueued "
        f"{batches.max_enqueued_tokens} tokens (limit {args.queue_tokens})"
    )
    print(
        f"lines: {batches.lines_answered} answered, {batches.lines_failed} failed; online chat requests: "
        f"{online.requests} (follow-ups sent online)"
    )
    print(
        f"tokens: {summary.usage.prompt_tokens} prompt + {summary.usage.completion_tokens} completion in "
        f"{summary.usage.requests} requests; cost estimate ${summary.estimated_cost_usd:.2f} at batch prices "
        f"(${online_price:.2f} at online prices)"
    )
    # The temporary Prefect server records the task runs for a while after the flow returns.
    wait_until_prefect_server_idle(timeout_s=60)
    return 0 if summary.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
