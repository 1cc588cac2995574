"""Console progress: the plain core (lines, rates, meters, the training log) and the command end to end.

The end-to-end tests run the installed `methyl-distill extract` against the project's OpenAI test
server, once in a pseudo-terminal (the live display) and once into a pipe (plain log lines), with
one injected 429 that the console must count.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from methyl_distill.ops.console_progress import ConsoleProgress, describe, format_duration, format_rate
from methyl_distill.ops.run_progress import CountingProgress, StageSnapshot, reporting, tracked, watching
from methyl_distill.teacher.token_bucket import LocalTokenBucket
from methyl_distill.teacher.usage_meter import MeteredBudget
from methyl_distill.training.training_progress import TrainingLogProgress
from tests.fake_openai.server import OpenAITestServerConfig, running_test_server
from tests.fake_openai.state import FaultRule

SAMPLE_PAPERS = Path(__file__).resolve().parent.parent / "data" / "papers"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_durations_rates_and_the_plain_line() -> None:
    assert [format_duration(s) for s in (0, 12.4, 65, 3600 + 125)] == ["0s", "12s", "1m05s", "1h02m"]
    assert format_rate(0, 10, "papers") is None
    assert format_rate(3, 1.5, "steps") == "2.0 steps/s"
    assert format_rate(3, 90, "papers") == "2.0 papers/min"
    assert format_rate(1, 7200, "papers") == "0.5 papers/h"
    snapshot = StageSnapshot(
        "extraction", 4, 10, "papers", details=(("tokens/min", "12,345 of 200,000"), ("429s", "2"))
    )
    assert describe(snapshot, "1.2 papers/min", "5m00s") == (
        "extraction: 4/10 papers (40%), 1.2 papers/min, ETA 5m00s; tokens/min 12,345 of 200,000; 429s 2"
    )
    assert describe(StageSnapshot("fine-tune", 0, None, "steps", phase="loading the model")) == (
        "fine-tune: loading the model"
    )


def test_plain_lines_every_ten_percent_or_interval_with_rate_and_eta() -> None:
    clock, lines = FakeClock(), []
    console = ConsoleProgress(emit_line=lines.append, interval_s=30, percent_step=10, clock=clock)
    stage = CountingProgress("extraction", 40, "papers")
    with watching(console), reporting(stage):
        assert lines == ["extraction: 0/40 papers (0%) (started)"]
        for _ in range(3):  # 7.5 %: not yet a line
            clock.now += 1
            stage.advance()
            console.poll_once()
        assert len(lines) == 1
        clock.now += 1
        stage.advance()  # 10 %
        console.poll_once()
        assert lines[-1] == "extraction: 4/40 papers (10%), 1.0 papers/s, ETA 36s"
        clock.now += 29
        console.poll_once()  # nothing new since the last line: quiet
        assert len(lines) == 2
        stage.advance()
        clock.now += 1
        console.poll_once()  # 30 s since the last line
        assert lines[-1].startswith("extraction: 5/40 papers (12%), 8.8 papers/min, ETA ")
        clock.now += 5
        stage.done = 40
    assert lines[-1] == "extraction: 40/40 papers (100%), 1.0 papers/s; took 39s"
    assert len(lines) == 4


def test_the_summary_rate_ends_at_the_last_unit_done() -> None:
    clock, lines = FakeClock(), []
    console = ConsoleProgress(emit_line=lines.append, clock=clock)
    stage = CountingProgress("fine-tune", 10, "steps", phase="training")
    with watching(console), reporting(stage):
        clock.now += 5
        stage.done = 10
        console.poll_once()
        stage.phase = "saving"
        clock.now += 60  # saving the adapter: no step is slower for it
    assert lines[-1] == "fine-tune: saving, 10/10 steps (100%), 2.0 steps/s; took 1m05s"


def test_a_stage_is_only_seen_while_watched_and_tracked_counts_item_sizes() -> None:
    seen: list[tuple[str, StageSnapshot]] = []

    class Recorder:
        def stage_started(self, source) -> None:
            seen.append(("started", source.snapshot()))

        def stage_finished(self, source) -> None:
            seen.append(("finished", source.snapshot()))

    assert list(tracked(iter("ab"), "dataset", "papers", [3, 2])) == ["a", "b"]  # nobody watches
    assert seen == []
    with watching(Recorder()):
        items = list(tracked(iter("ab"), "dataset", "papers", [3, 2], lambda item: {"last": item}))
    assert items == ["a", "b"]
    assert [(kind, snap.done, snap.total, snap.details) for kind, snap in seen] == [
        ("started", 0, 5, ()),
        ("finished", 5, 5, (("last", "b"),)),
    ]


def test_metered_budget_counts_tokens_per_minute_and_refused_requests() -> None:
    clock = FakeClock()
    inner = LocalTokenBucket(10_000)
    meter = MeteredBudget(inner, clock=clock)
    assert meter.limit_tokens == 10_000 and "LocalTokenBucket" in repr(meter)
    for actual in (1_200, 0, 800):  # the 0: a 429, refused before admission
        meter.reconcile(meter.reserve(2_000), actual)
        clock.now += 20
    assert (meter.refused, meter.attempts, meter.tokens_last_minute()) == (1, 3, 2_000)
    clock.now += 25  # the first settlement is now more than a minute old
    assert meter.tokens_last_minute() == 800
    assert meter.available_tokens == inner.available_tokens  # anything else is the budget's own


def test_training_log_progress_follows_swift_logging_jsonl(tmp_path: Path) -> None:
    log = tmp_path / "logging.jsonl"
    log.write_text(json.dumps({"loss": 9.0, "global_step/max_steps": "2/4"}) + "\n")  # an earlier run
    progress = TrainingLogProgress(log)
    assert progress.snapshot() == StageSnapshot("fine-tune", 0, None, "steps", phase="loading the model")
    with log.open("a") as handle:
        handle.write(json.dumps({"loss": 2.5, "global_step/max_steps": "3/8"}) + "\n")
        handle.write(json.dumps({"eval_loss": 2.25, "global_step/max_steps": "4/8"}) + "\n")
        handle.write('{"loss": 1.0, "global_st')  # still being written
    snapshot = progress.snapshot()
    assert (snapshot.done, snapshot.total, snapshot.phase) == (4, 8, "training")
    assert snapshot.details == (("loss", "2.5000"), ("eval loss", "2.2500"))
    with log.open("a") as handle:
        handle.write('ep/max_steps": "5/8"}\n')
        handle.write(json.dumps({"last_model_checkpoint": "/x", "global_step": 8}) + "\n")  # the summary
    assert progress.snapshot().details[0] == ("loss", "1.0000")
    assert progress.snapshot().done == 5


# ---- end to end: the command in a terminal and into a pipe -------------------------------------------


def _write_papers(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    samples = sorted(SAMPLE_PAPERS.glob("*.txt"))
    for index in range(count):
        sample = samples[index % len(samples)]
        text = sample.read_text(encoding="utf-8")
        (folder / f"{sample.stem}_{index:02d}.txt").write_text(f"{text}\n\nCopy {index}.\n", encoding="utf-8")


def _extract_command(tmp_path: Path, name: str) -> tuple[list[str], dict[str, str]]:
    papers = tmp_path / "papers"
    if not papers.exists():
        _write_papers(papers, 6)
    command = [str(Path(sys.executable).with_name("methyl-distill")), "extract"]
    command += ["--input_directory", str(papers), "--output_directory", str(tmp_path / name)]
    command += ["--cache_dir", str(tmp_path / f"cache-{name}"), "--max_concurrency", "1"]
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.update(
        {
            "OPENAI_API_KEY": "sk-test-console",
            "PREFECT_HOME": str(tmp_path / f"prefect-{name}"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "TERM": "xterm-256color",
        }
    )
    return command, env


def _run_in_pseudo_terminal(command: list[str], env: dict[str, str], timeout_s: float) -> tuple[int, str]:
    """Run with stdout and stderr on a pseudo-terminal of 160 columns; (exit code, what it showed)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    process = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    shown = bytearray()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the terminal closed: the process has ended
                    break
                if not chunk:
                    break
                shown += chunk
            elif process.poll() is not None:
                break
        return process.wait(timeout=30), shown.decode("utf-8", errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)


@pytest.mark.integration
def test_extract_shows_live_progress_in_a_terminal_and_plain_lines_in_a_pipe(tmp_path: Path) -> None:
    config = OpenAITestServerConfig(
        latency_s=(0.7, 0.9), seed=1, faults=[FaultRule(kind="rate_limit", count=1)], retry_after_s=0.2
    )
    with running_test_server(config) as server:
        command, env = _extract_command(tmp_path, "terminal")
        env["OPENAI_BASE_URL"] = server.base_url
        code, shown = _run_in_pseudo_terminal(command, env, timeout_s=300)
        assert code == 0, shown[-3000:]
        assert server.stats().responses_429 == 1

        # A pipe: the same command after another 429, with the output captured.
        server.inject("rate_limit", count=1)
        piped, piped_env = _extract_command(tmp_path, "pipe")
        piped_env["OPENAI_BASE_URL"] = server.base_url
        result = subprocess.run(piped, env=piped_env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]

    # The terminal: the live line (a bar, done of total, the teacher's use) redrawn in place, and a
    # summary line at the end.
    assert "\x1b[2K" in shown  # drawn over itself
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)
    bars = re.findall(r"extraction [━╺╸]+ (\d)/6 papers", plain)
    assert len(bars) >= 3 and bars[0] == "0" and len(set(bars)) >= 3, bars
    assert re.search(r"ETA \d+s", plain), plain[-3000:]
    assert re.search(r"tokens/min [\d,]+ of 200,000", plain)
    summary = r"extraction: 6/6 papers \(100%\), [\d.]+ papers/(s|min); .*429s 1; cost \$[\d.]+; took"
    assert re.search(summary, plain), plain[-3000:]

    # The pipe: plain lines, no control characters, at least one per 10 % passed (a paper is 17 %).
    assert "\x1b" not in result.stderr and "━" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "console_progress" in line]
    assert "extraction: 0/6 papers (0%)" in lines[0] and lines[0].endswith("(started)")
    progress = [int(m.group(1)) for line in lines if (m := re.search(r"extraction: (\d)/6 papers", line))]
    assert progress[0] == 0 and progress[-1] == 6 and len(set(progress)) >= 4, lines
    assert any(re.search(r"\d+/6 papers \(\d+%\), [\d.]+ papers/(s|min), ETA \d+s", line) for line in lines)
    assert re.search(r"429s 1; cost \$[\d.]+; took \d+s$", lines[-1]), lines[-1]


def test_build_dataset_command_reports_papers_shard_by_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from methyl_distill.cli import main
    from methyl_distill.sft_dataset import build
    from methyl_distill.sft_dataset.synthetic_records import write_synthetic_corpus

    for name in ("PREFECT_LOGGING_EXTRA_LOGGERS", "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"):
        monkeypatch.setenv(name, "")  # the command sets them; restored after the test
    monkeypatch.setattr(build, "_SHARD_PAPERS", 5)  # 12 papers: shards of 5, 5 and 2
    papers, records = write_synthetic_corpus(tmp_path / "corpus", 12, seed=3)
    caplog.set_level("INFO", logger="methyl_distill.ops.console_progress")
    arguments = ["build-dataset", "--records", str(records), "--papers_directory", str(papers)]
    code = main([*arguments, "--output_directory", str(tmp_path / "dataset"), "--without_prefect"])
    assert code == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "methyl_distill.ops.console_progress"]
    assert lines[0] == "dataset: 0/12 papers (0%) (started)"
    assert re.fullmatch(
        r"dataset: 12/12 papers \(100%\), [\d.]+ papers/s; samples [\d,]+; took \d+s", lines[-1]
    )
