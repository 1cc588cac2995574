"""Extraction throughput under one TPM budget: the Prefect flow against a one-request-at-a-time loop.

Prints numbers; it is not a test. Two instances of the project's OpenAI-compatible test server run as
separate processes, each enforcing the same TPM limit (default 200,000) with GPT-4o-like latency on
long structured answers (uniform 10-20 s):

1. `flows/extract.py:extract_flow` extracts N synthetic paper-like texts (default 200) through the
   shared token bucket against server A, while a loop like the original script (one request at a
   time, same prompts, same teacher client) runs against server B for the same window.
   Reported: the sustained share of the TPM limit used (server-side tokens charged per minute over
   the steady-state window / limit), 429s and their share of requests, papers/min of both, ratio.
2. An all-cached rerun over 1000 papers: the cache is filled first against a third server with no
   latency and no practical limit, then (once the Prefect server has recorded the fill's events) the
   flow runs again; it must make 0 teacher calls. Wall and CPU seconds of the rerun are reported.

Run: `nice .venv/bin/python bench/extract_throughput.py` (about 10-15 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# The temporary API starts in 25 s on a fresh PREFECT_HOME here (FACTS.md): more than the default allows.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.pop("OPENAI_API_KEY", None)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fake_openai.state import StatsSnapshot  # noqa: E402

GENES = [
    "MGMT",
    "SEPT9",
    "SHOX2",
    "GSTP1",
    "MLH1",
    "RASSF1A",
    "CDKN2A",
    "NDRG4",
    "BMP3",
    "VIM",
    "APC",
    "CDH1",
    "PTGER4",
    "TAC1",
    "SFRP2",
    "RUNX3",
    "DAPK1",
    "TFPI2",
    "WIF1",
    "HOXA9",
    "PAX6",
    "ZNF331",
    "GATA4",
    "SOX17",
    "TWIST1",
    "APC2",
    "RARB2",
    "BRCA1",
    "CCND2",
    "PITX2",
]
CONDITIONS = (
    "colorectal cancer",
    "glioblastoma",
    "non-small cell lung cancer",
    "prostate cancer",
    "breast cancer",
    "hepatocellular carcinoma",
    "bladder cancer",
    "gastric cancer",
    "cervical cancer",
    "pancreatic cancer",
)
SAMPLES = (
    "plasma cell-free DNA",
    "tumour tissue",
    "stool",
    "urine",
    "serum",
    "bronchial aspirate",
    "whole blood",
)
ASSAYS = (
    "methylation-specific PCR",
    "quantitative methylation-specific PCR",
    "bisulfite sequencing",
    "pyrosequencing",
    "droplet digital PCR",
    "the Infinium MethylationEPIC array",
    "targeted bisulfite sequencing",
)
FILLER = (
    "Samples were collected before treatment and processed within four hours of collection.",
    "DNA was extracted with a commercial kit and quantified by fluorometry.",
    "Bisulfite conversion efficiency exceeded ninety-nine percent in every batch.",
    "Investigators who scored the assays were blinded to the clinical diagnosis.",
    "The study protocol was approved by the institutional review board and all participants gave consent.",
    "Statistical analyses were performed with two-sided tests at a significance level of five percent.",
    "Receiver operating characteristic curves were drawn for each marker and for the combined panel.",
    "Clinical data were retrieved from the electronic health records by two independent reviewers.",
    "Missing values were handled by complete-case analysis, and sensitivity analyses gave similar results.",
    "Limitations include the retrospective design and the modest number of early-stage cases.",
    "Further prospective studies in screening populations are needed to confirm these findings.",
    "The methylation level was expressed as the percentage of methylated reference.",
)


def synthetic_paper(index: int, rng: random.Random) -> str:
    """A paper-like text of ~1,500-2,500 words about a few methylation markers (facts are invented)."""
    genes = rng.sample(GENES, 3)
    condition, sample, assay = rng.choice(CONDITIONS), rng.choice(SAMPLES), rng.choice(ASSAYS)
    cohort = rng.randint(60, 2400)
    probe = f"cg{rng.randint(10_000_000, 99_999_999)}"
    lines = [
        f"{genes[0]} and {genes[1]} promoter methylation in {sample} for the detection of {condition} "
        f"(synthetic study {index})",
        "",
        "Abstract",
        f"We evaluated promoter hypermethylation of {genes[0]}, {genes[1]} and {genes[2]} in {sample} "
        f"from {cohort} patients with {condition} and matched controls.",
        f"Methylation was measured by {assay}.",
        f"{genes[0]} methylation detected {condition} with a sensitivity of {rng.randint(55, 95)}% and a "
        f"specificity of {rng.randint(70, 99)}%.",
        f"The combined panel reached an AUC of 0.{rng.randint(70, 97)} in the validation cohort.",
        "",
    ]
    for section in ("Introduction", "Methods", "Results", "Discussion"):
        lines.append(section)
        for paragraph in range(rng.randint(4, 6)):
            sentences = []
            for _ in range(rng.randint(5, 8)):
                gene = rng.choice(genes)
                roll = rng.random()
                if roll < 0.25:
                    direction = rng.choice(("hypermethylated", "hypomethylated"))
                    sentences.append(
                        f"The {gene} promoter was {direction} in {condition} compared with controls."
                    )
                elif roll < 0.35:
                    sentences.append(
                        f"The CpG site {probe} in the {gene} CpG island showed a mean beta value of "
                        f"0.{rng.randint(20, 89)} in cases."
                    )
                elif roll < 0.45:
                    sentences.append(
                        f"Methylation of {gene} was associated with silenced expression and with poor "
                        f"overall survival (hazard ratio {rng.randint(11, 39) / 10:.1f})."
                    )
                elif roll < 0.55:
                    sentences.append(
                        f"In {sample}, {gene} methylation was found in {rng.randint(20, 90)} of "
                        f"{rng.randint(91, 200)} patients and in {rng.randint(1, 15)} of "
                        f"{rng.randint(50, 150)} controls."
                    )
                else:
                    sentences.append(rng.choice(FILLER))
            lines.append(" ".join(sentences))
            if paragraph % 2:
                lines.append("")
        lines.append("")
    return "\n".join(lines) + "\n"


def write_papers(directory: Path, count: int, seed: int, start: int = 0) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for index in range(start, start + count):
        (directory / f"paper_{index:05d}.txt").write_text(synthetic_paper(index, rng), encoding="utf-8")


@dataclass
class ServerProcess:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stats(self) -> StatsSnapshot:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/control/stats", timeout=30) as response:
            return StatsSnapshot.model_validate(json.loads(response.read()))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(port: int, tpm: int, latency: tuple[float, float], seed: int) -> ServerProcess:
    command = [
        sys.executable,
        "-m",
        "tests.fake_openai.server",
        "--port",
        str(port),
        "--tpm",
        str(tpm),
        "--latency",
        str(latency[0]),
        str(latency[1]),
        "--seed",
        str(seed),
    ]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    server = ServerProcess(port, process)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{server.base_url}/models", timeout=2):
                return server
        except OSError:
            if process.poll() is not None:
                detail = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"test server on port {port} exited: {detail}") from None
            time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"test server on port {port} did not start")


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds (user + system) of this process and of its live children (the temporary Prefect
    server the flow starts runs as a child process)."""
    import psutil

    me = psutil.Process()
    own = sum(me.cpu_times()[:2])
    children = 0.0
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):  # exited meanwhile
            children += sum(child.cpu_times()[:2])
    return own, children


def wait_until_prefect_server_idle(timeout_s: float = 300.0, quiet_s: int = 3) -> float:
    """Wait until the child processes (the temporary Prefect server) use under 10% of a core for
    `quiet_s` seconds in a row; returns the seconds waited. The server records a run's task-run
    events for a while after the flow returns: a rerun started at once would pay for that too."""
    began = time.monotonic()
    last, quiet = cpu_seconds()[1], 0
    while quiet < quiet_s and time.monotonic() - began < timeout_s:
        time.sleep(1.0)
        now = cpu_seconds()[1]
        quiet = quiet + 1 if now - last < 0.1 else 0
        last = now
    return time.monotonic() - began


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LoopResult:
    papers_done: int = 0
    failures: int = 0
    started: float = 0.0
    stopped: float = 0.0
    durations: list[float] = field(default_factory=list)


def one_request_at_a_time(
    papers: list[Path], base_url: str, tpm: int, stop: threading.Event, result: LoopResult
) -> None:
    """The original script's shape: for each paper, one request, wait for it, write, next."""
    from methyl_distill.extraction.prompts import build_messages
    from methyl_distill.extraction.question_bank import load_question_bank
    from methyl_distill.extraction.records import TeacherExtraction
    from methyl_distill.teacher.config import TeacherConfig
    from methyl_distill.teacher.openai_client import OpenAITeacher

    config = TeacherConfig(base_url=base_url, tpm=tpm)
    teacher = OpenAITeacher(config)
    bank = load_question_bank()
    result.started = time.monotonic()
    for path in papers:
        if stop.is_set():
            break
        began = time.monotonic()
        reply = teacher.complete_structured(
            build_messages(path.read_text(encoding="utf-8"), bank),
            TeacherExtraction,
            max_tokens=config.max_output_tokens,
        )
        if stop.is_set() and time.monotonic() - began > 0:  # finished after the window closed: not counted
            break
        result.durations.append(time.monotonic() - began)
        if reply.parsed is None:
            result.failures += 1
        else:
            result.papers_done += 1
    result.stopped = time.monotonic()


def run_flow(
    input_directory: Path, output_directory: Path, base_url: str, cache_dir: Path, concurrency: int, tpm: int
):
    from methyl_distill.flows.extract import extract_flow

    from methyl_distill.teacher.config import TeacherConfig

    return extract_flow(
        input_directory=str(input_directory),
        output_directory=str(output_directory),
        teacher_config=TeacherConfig(base_url=base_url, model="gpt-4o", tpm=tpm),
        cache_dir=str(cache_dir),
        max_concurrency=concurrency,
    )


def steady_state_window(stats: StatsSnapshot, warmup_s: float) -> tuple[float, float]:
    """From `warmup_s` after the first admission (the initially full bucket drained) to the last admission."""
    admissions = [at for at, delta in stats.ledger if delta > 0]
    if admissions[-1] - admissions[0] <= warmup_s + 1:
        print(f"(run too short for a {warmup_s:g} s warm-up: the window is the whole run)")
        return admissions[0], stats.ledger[-1][0]
    return admissions[0] + warmup_s, admissions[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--papers", type=int, default=200)
    parser.add_argument("--cached-papers", type=int, default=1000)
    parser.add_argument("--tpm", type=int, default=200_000)
    parser.add_argument("--latency", type=float, nargs=2, default=(10.0, 20.0))
    parser.add_argument("--concurrency", type=int, default=16, help="The flow's max_concurrency.")
    parser.add_argument("--loop-window-s", type=float, default=240.0, help="Longest time the loop runs.")
    parser.add_argument("--warmup-s", type=float, default=60.0, help="Excluded from the steady-state window.")
    parser.add_argument("--seed", type=int, default=20261128)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="extract-bench-"))
    os.environ["PREFECT_HOME"] = str(work / "prefect-home")
    papers_dir, cache_dir = work / "papers", work / "cache"
    write_papers(papers_dir, args.papers, args.seed)
    sizes = [len(p.read_text()) for p in papers_dir.iterdir()]
    print(f"work directory {work}; {args.papers} papers of {min(sizes)}-{max(sizes)} characters", flush=True)

    flow_server = start_server(free_port(), args.tpm, tuple(args.latency), seed=1)
    loop_server = start_server(free_port(), args.tpm, tuple(args.latency), seed=2)
    try:
        stop, loop = threading.Event(), LoopResult()
        loop_papers = sorted(papers_dir.iterdir())
        loop_thread = threading.Thread(
            target=one_request_at_a_time,
            args=(loop_papers, loop_server.base_url, args.tpm, stop, loop),
            daemon=True,
        )
        began = time.monotonic()
        loop_thread.start()
        stopper = threading.Timer(args.loop_window_s, stop.set)
        stopper.start()
        summary = run_flow(
            papers_dir, work / "out-1", flow_server.base_url, cache_dir, args.concurrency, args.tpm
        )
        flow_wall = time.monotonic() - began
        stop.set()
        stopper.cancel()
        loop_thread.join()
        stats = flow_server.stats()
    finally:
        flow_server.stop()
        loop_server.stop()

    start_s, end_s = steady_state_window(stats, args.warmup_s)
    per_minute = stats.tokens_charged_per_minute(start_s, end_s)
    completions = stats.completed
    throughput_window = [at for at, delta in stats.ledger if delta <= 0]  # settlements: one per response
    settled_in_window = sum(1 for at in throughput_window if start_s <= at < end_s)
    flow_ppm_steady = settled_in_window * 60 / (end_s - start_s) * (summary.papers / max(1, completions))
    # Overall: first admission to last response, i.e. without the Prefect start-up.
    busy_s = stats.ledger[-1][0] - stats.ledger[0][0]
    flow_ppm_overall = summary.extracted * 60 / busy_s
    loop_minutes = (loop.stopped - loop.started) / 60
    loop_ppm = loop.papers_done / loop_minutes if loop_minutes > 0 else 0.0
    print("\n== Phase 1: extraction under one TPM budget ==")
    print(f"server: {args.tpm} TPM, latency uniform {args.latency[0]:g}-{args.latency[1]:g} s")
    print(
        f"flow: {summary.extracted} extracted, {summary.failed} failed, {summary.cached} cached, "
        f"max_concurrency {args.concurrency}, wall {flow_wall:.0f} s (Prefect start-up included)"
    )
    print(
        f"flow requests {stats.requests}, completed {completions}, 429s {stats.responses_429} "
        f"({stats.responses_429 / max(1, stats.requests):.2%} of requests), "
        f"max in flight {stats.max_in_flight}"
    )
    print(
        f"steady-state window {start_s:.0f}-{end_s:.0f} s after server start "
        f"({(end_s - start_s) / 60:.1f} min): "
        f"{per_minute:,.0f} tokens charged/min = {per_minute / args.tpm:.3f} of the limit"
    )
    print(
        f"peak tokens charged in any 60 s window: {stats.peak_tokens_in_any_minute():,} "
        f"(the bucket starts full, so up to 2x the limit in the first minute)"
    )
    print(
        f"flow papers/min: {flow_ppm_steady:.1f} steady-state, {flow_ppm_overall:.1f} overall "
        f"(first request to last response, {busy_s:.0f} s)"
    )
    print(
        f"one-request-at-a-time loop: {loop.papers_done} papers ({loop.failures} failed) in "
        f"{loop_minutes:.1f} min = {loop_ppm:.2f} papers/min"
    )
    if loop_ppm:
        print(
            f"ratio flow/loop: {flow_ppm_steady / loop_ppm:.1f}x steady-state, "
            f"{flow_ppm_overall / loop_ppm:.1f}x overall"
        )

    # Phase 2: all-cached rerun of 1000 papers.
    cached_dir = work / "papers-1000"
    shutil.copytree(papers_dir, cached_dir)
    write_papers(cached_dir, args.cached_papers - args.papers, args.seed + 1, start=args.papers)
    fast = start_server(free_port(), 10**9, (0.0, 0.0), seed=3)
    try:
        began = time.monotonic()
        fill = run_flow(cached_dir, work / "out-2", fast.base_url, cache_dir, 16, 10**9)
        fill_wall = time.monotonic() - began
        settle_s = wait_until_prefect_server_idle()
        before = fast.stats().requests
        began, cpu_before = time.monotonic(), cpu_seconds()
        rerun = run_flow(cached_dir, work / "out-3", fast.base_url, cache_dir, 16, 10**9)
        rerun_wall, cpu_after = time.monotonic() - began, cpu_seconds()
        calls = fast.stats().requests - before
    finally:
        fast.stop()
    print("\n== Phase 2: all-cached rerun ==")
    print(
        f"cache fill: {fill.extracted} extracted, {fill.cached} already cached, {fill.failed} failed "
        f"in {fill_wall:.0f} s (fast server); the Prefect server was busy for {settle_s:.0f} s more"
    )
    print(
        f"rerun of {rerun.papers} papers: {rerun.cached} cached, {rerun.extracted} extracted, "
        f"teacher calls {calls}, wall {rerun_wall:.1f} s ({1000 * rerun_wall / max(1, rerun.papers):.1f} ms "
        f"per paper); CPU {cpu_after[0] - cpu_before[0]:.1f} s in the flow's process, "
        f"{cpu_after[1] - cpu_before[1]:.1f} s in its children (the temporary Prefect server)"
    )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
