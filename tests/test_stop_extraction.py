"""Stopping `methyl-distill extract` with Ctrl-C (SIGINT to the process group) or SIGTERM (a pod stop).

Real processes: the installed command, its temporary Prefect server, the project's OpenAI test server
with about a second of latency. A stop must stop: no new teacher request after the signal beyond
those already on their way, the finished papers kept (records.jsonl, processed_files/), the process
gone within seconds with 130 / 143, and no process of the run left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from methyl_distill.extraction.records import PaperRecord
from tests.fake_openai.server import OpenAITestServerConfig, running_test_server

pytestmark = pytest.mark.integration

SAMPLE_PAPERS = Path(__file__).resolve().parent.parent / "data" / "papers"
API_KEY = "sk-test-stop-run"
PAPERS = 20
MAX_CONCURRENCY = 2
EXIT_WITHIN_S = 20.0


def _write_papers(folder: Path, count: int) -> None:
    """`count` distinct papers: the sample texts, each copy told apart by a sentence of its own."""
    folder.mkdir(parents=True)
    samples = sorted(SAMPLE_PAPERS.glob("*.txt"))
    for index in range(count):
        sample = samples[index % len(samples)]
        text = sample.read_text(encoding="utf-8")
        (folder / f"{sample.stem}_{index:02d}.txt").write_text(
            f"{text}\n\nThis copy is number {index} of the stop test.\n", encoding="utf-8"
        )


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_stopped_extraction_stops_keeps_its_work_and_leaves_nothing_running(
    tmp_path: Path, signal_number: signal.Signals
) -> None:
    papers, output = tmp_path / "papers", tmp_path / "out"
    _write_papers(papers, PAPERS)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    config = OpenAITestServerConfig(latency_s=(0.9, 1.1), seed=3)
    with running_test_server(config) as server:
        env.update(
            {
                "OPENAI_API_KEY": API_KEY,
                "OPENAI_BASE_URL": server.base_url,
                "PREFECT_HOME": str(tmp_path / "prefect-home"),  # its own temporary server database
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            }
        )
        command = [
            str(Path(sys.executable).with_name("methyl-distill")),
            "extract",
            "--input_directory",
            str(papers),
            "--output_directory",
            str(output),
            "--cache_dir",
            str(tmp_path / "cache"),
            "--max_concurrency",
            str(MAX_CONCURRENCY),
        ]
        log_path = tmp_path / "extract.log"
        with log_path.open("wb") as log:
            # Its own process group, as a terminal's foreground job: Ctrl-C reaches the whole group.
            process = subprocess.Popen(
                command, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        started: list[psutil.Process] = []
        try:
            processed = output / "processed_files"
            deadline = time.monotonic() + 300
            while len(list(processed.glob("*.txt"))) < 2:
                assert process.poll() is None, log_path.read_text(errors="replace")[-4000:]
                assert time.monotonic() < deadline, "2 papers were not done within 5 minutes"
                time.sleep(0.05)
            started = _descendants(process.pid)
            at_signal = server.stats()
            signalled = time.monotonic()
            if signal_number == signal.SIGINT:
                os.killpg(process.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
            else:
                process.send_signal(signal.SIGTERM)  # what `timeout` or a pod stop does
            try:
                exit_code = process.wait(timeout=EXIT_WITHIN_S)
            except subprocess.TimeoutExpired:
                pytest.fail(
                    f"still running {EXIT_WITHIN_S:.0f} s after {signal_number.name}; log:\n"
                    + log_path.read_text(errors="replace")[-4000:]
                )
            took = time.monotonic() - signalled
            print(f"{signal_number.name}: exited with {exit_code} after {took:.1f} s")
            at_end = server.stats()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
            leftovers = [child for child in started if _alive(child)]
            for child in leftovers:
                child.kill()
        log_text = log_path.read_text(errors="replace")
        assert exit_code == 128 + signal_number, log_text[-4000:]
        assert leftovers == [], f"left running: {leftovers}"
        # Requests already on their way when the signal came may still arrive (at most one per
        # worker); nothing after them.
        assert at_end.requests <= at_signal.requests + MAX_CONCURRENCY, (at_signal.requests, at_end.requests)
        assert at_end.requests < PAPERS, "the run went on to the end"
        # The finished papers are kept: every processed file has its record, and nothing failed.
        records = [
            PaperRecord.model_validate_json(line)
            for line in (output / "records.jsonl").read_text(encoding="utf-8").splitlines()
        ]
        processed_ids = {path.stem for path in (output / "processed_files").glob("*.txt")}
        assert len(records) >= 2
        assert {record.file_id for record in records} == processed_ids
        assert (output / "failures.jsonl").read_text(encoding="utf-8") == ""
        assert list(output.rglob(".*.tmp")) == []
