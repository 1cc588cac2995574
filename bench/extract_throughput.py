"""Extraction throughput under one TPM budget, in both rate-limit accountings, at two tiers.

Prints numbers; it is not a test. For each scenario (default: admission and settle accounting at
200,000 and 1,000,000 TPM) a fresh instance of the project's OpenAI-compatible test server runs as a
separate process, enforcing that limit with GPT-4o-like latency on long structured answers (12 s):

1. `flows/extract.py:extract_flow` extracts synthetic paper-like texts (80 per 100k TPM of the limit)
   with default flags: the rate-limit accounting is found from the server's headers, max_tokens is
   sized where the admission charge is kept, the requests in flight follow budget x latency.
   Reported per scenario: the sustained share of the TPM limit used (server-side tokens charged per
   minute over the steady-state window / limit), 429s and their share of requests, papers/min, tokens
   charged per paper, the most requests in flight and the client's own account of its pacing. Beside
   the first scenario a loop like the original script (one request at a time, same prompts, same
   client) runs against a second server for comparison (`--no-loop` to skip).
2. An all-cached rerun over 1000 papers: the cache is filled first against a server with no latency
   and no practical limit, then (once the Prefect server has recorded the fill's events) the flow
   runs again; it must make 0 teacher calls. Wall and CPU seconds of the rerun are reported.

Run: `.venv/bin/python bench/extract_throughput.py` (about 25 minutes on 2 cores; `--scenarios
admission:200000` for one).
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


def start_server(
    port: int, tpm: int, latency: tuple[float, float], seed: int, accounting: str = "settle"
) -> ServerProcess:
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
        "--accounting",
        accounting,
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
    input_directory: Path,
    output_directory: Path,
    base_url: str,
    cache_dir: Path,
    tpm: int,
    concurrency: int | None = None,
):
    from methyl_distill.flows.extract import extract_flow

    from methyl_distill.teacher.config import TeacherConfig

    extra = {"max_concurrency": concurrency} if concurrency is not None else {}  # None: the default
    return extract_flow(
        input_directory=str(input_directory),
        output_directory=str(output_directory),
        teacher_config=TeacherConfig(base_url=base_url, model="gpt-4o", tpm=tpm),
        cache_dir=str(cache_dir),
        **extra,
    )


def steady_state_window(stats: StatsSnapshot, warmup_s: float) -> tuple[float, float]:
    """From `warmup_s` after the first admission (the initially full bucket drained) to the last admission."""
    admissions = [at for at, delta in stats.ledger if delta > 0]
    if admissions[-1] - admissions[0] <= warmup_s + 1:
        print(f"(run too short for a {warmup_s:g} s warm-up: the window is the whole run)")
        return admissions[0], stats.ledger[-1][0]
    return admissions[0] + warmup_s, admissions[-1]


@dataclass
class Scenario:
    accounting: str
    tpm: int

    @classmethod
    def parse(cls, text: str) -> Scenario:
        accounting, _, tpm = text.partition(":")
        if accounting not in ("settle", "admission") or not tpm.isdigit():
            raise argparse.ArgumentTypeError(f"scenario {text!r}: expected settle:TPM or admission:TPM")
        return cls(accounting, int(tpm))

    @property
    def name(self) -> str:
        return f"{self.accounting} {self.tpm // 1000}k TPM"


@dataclass
class ScenarioResult:
    scenario: Scenario
    papers: int
    extracted: int
    failed: int
    requests: int
    responses_429: int
    share_of_limit: float
    papers_per_min: float
    tokens_charged_per_paper: float
    max_in_flight: int
    wall_s: float
    window_s: float
    pacing: str


def measure_scenario(
    scenario: Scenario,
    papers_dir: Path,
    work: Path,
    latency: tuple[float, float],
    warmup_s: float,
    concurrency: int | None,
    loop: tuple[LoopResult, float] | None = None,
) -> ScenarioResult:
    """One extraction flow against a test server with this accounting and TPM limit; with `loop`, the
    one-request-at-a-time loop runs beside it against a second server for `loop[1]` seconds."""
    label = f"{scenario.accounting}-{scenario.tpm}"
    server = start_server(free_port(), scenario.tpm, latency, seed=1, accounting=scenario.accounting)
    loop_server = (
        start_server(free_port(), scenario.tpm, latency, seed=2, accounting=scenario.accounting)
        if loop
        else None
    )
    stop = threading.Event()
    loop_thread = stopper = None
    try:
        if loop is not None and loop_server is not None:
            loop_thread = threading.Thread(
                target=one_request_at_a_time,
                args=(sorted(papers_dir.iterdir()), loop_server.base_url, scenario.tpm, stop, loop[0]),
                daemon=True,
            )
            loop_thread.start()
            stopper = threading.Timer(loop[1], stop.set)
            stopper.start()
        began = time.monotonic()
        summary = run_flow(
            papers_dir,
            work / f"out-{label}",
            server.base_url,
            work / f"cache-{label}",
            scenario.tpm,
            concurrency,
        )
        wall = time.monotonic() - began
        stop.set()
        if stopper is not None:
            stopper.cancel()
        if loop_thread is not None:
            loop_thread.join()
        stats = server.stats()
    finally:
        server.stop()
        if loop_server is not None:
            loop_server.stop()
    start_s, end_s = steady_state_window(stats, warmup_s)
    per_minute = stats.tokens_charged_per_minute(start_s, end_s)
    answered = sum(1 for at in stats.completed_at if start_s <= at < end_s)
    requests_per_paper = max(1, stats.completed) / max(1, summary.papers)
    charged = sum(delta for _, delta in stats.ledger)
    return ScenarioResult(
        scenario=scenario,
        papers=summary.papers,
        extracted=summary.extracted,
        failed=summary.failed,
        requests=stats.requests,
        responses_429=stats.responses_429,
        share_of_limit=per_minute / scenario.tpm,
        papers_per_min=answered * 60 / (end_s - start_s) / requests_per_paper,
        tokens_charged_per_paper=charged / max(1, summary.extracted),
        max_in_flight=stats.max_in_flight,
        wall_s=wall,
        window_s=end_s - start_s,
        pacing=summary.teacher_pacing or "",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenarios",
        type=lambda text: [Scenario.parse(part) for part in text.split(",")],
        default=[
            Scenario("admission", 200_000),
            Scenario("settle", 200_000),
            Scenario("admission", 1_000_000),
            Scenario("settle", 1_000_000),
        ],
        help="Comma-separated ACCOUNTING:TPM (settle or admission), each against a fresh test server.",
    )
    parser.add_argument(
        "--papers-per-100k-tpm", type=int, default=80, help="Papers of a scenario, per 100k TPM of its limit."
    )
    parser.add_argument("--cached-papers", type=int, default=1000, help="0 skips the all-cached rerun.")
    parser.add_argument("--latency", type=float, nargs=2, default=(12.0, 12.0))
    parser.add_argument(
        "--concurrency", type=int, default=None, help="The flow's max_concurrency (default: the flow's)."
    )
    parser.add_argument("--loop-window-s", type=float, default=240.0, help="Longest time the loop runs.")
    parser.add_argument("--no-loop", action="store_true", help="Skip the one-request-at-a-time loop.")
    parser.add_argument("--warmup-s", type=float, default=60.0, help="Excluded from the steady-state window.")
    parser.add_argument("--seed", type=int, default=20261128)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="extract-bench-"))
    os.environ["PREFECT_HOME"] = str(work / "prefect-home")
    largest = max(scenario.tpm for scenario in args.scenarios)
    papers_needed = {s.tpm: max(20, s.tpm * args.papers_per_100k_tpm // 100_000) for s in args.scenarios}
    papers_dir = work / "papers"
    write_papers(papers_dir, papers_needed[largest], args.seed)
    print(f"work directory {work}; server latency {args.latency[0]:g}-{args.latency[1]:g} s", flush=True)

    results: list[ScenarioResult] = []
    loop = LoopResult()
    for index, scenario in enumerate(args.scenarios):
        subset = work / f"papers-{papers_needed[scenario.tpm]}"
        if not subset.exists():
            subset.mkdir()
            for path in sorted(papers_dir.iterdir())[: papers_needed[scenario.tpm]]:
                os.link(path, subset / path.name)  # a symlink out of the folder would be refused
        with_loop = (loop, args.loop_window_s) if index == 0 and not args.no_loop else None
        print(f"-- {scenario.name}: {papers_needed[scenario.tpm]} papers", flush=True)
        result = measure_scenario(
            scenario, subset, work, tuple(args.latency), args.warmup_s, args.concurrency, with_loop
        )
        results.append(result)
        print(
            f"   {result.extracted} extracted, {result.failed} failed, {result.requests} requests, "
            f"{result.responses_429} 429s, {result.share_of_limit:.3f} of the limit, "
            f"{result.papers_per_min:.1f} papers/min, wall {result.wall_s:.0f} s\n   pacing: {result.pacing}",
            flush=True,
        )

    print("\n== Phase 1: extraction under one TPM budget, default flags ==")
    print(
        "| accounting | TPM limit | papers | requests | 429s (share) | share of the limit used | papers/min "
        "| tokens charged per paper | most in flight | steady window |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.scenario.accounting} | {r.scenario.tpm:,} | {r.papers} | {r.requests} | "
            f"{r.responses_429} ({r.responses_429 / max(1, r.requests):.1%}) | {r.share_of_limit:.3f} | "
            f"{r.papers_per_min:.1f} | {r.tokens_charged_per_paper:,.0f} | {r.max_in_flight} | "
            f"{r.window_s / 60:.1f} min |"
        )
    if not args.no_loop and loop.stopped > loop.started:
        loop_minutes = (loop.stopped - loop.started) / 60
        loop_ppm = loop.papers_done / loop_minutes
        first = results[0]
        print(
            f"one-request-at-a-time loop beside the first scenario: {loop.papers_done} papers "
            f"({loop.failures} failed) in {loop_minutes:.1f} min = {loop_ppm:.2f} papers/min; "
            f"ratio flow/loop {first.papers_per_min / max(loop_ppm, 1e-9):.1f}x"
        )
    if args.cached_papers <= 0:
        shutil.rmtree(work, ignore_errors=True)
        return 0
    cache_dir = work / "cache-rerun"

    # Phase 2: all-cached rerun of 1000 papers.
    cached_dir = work / "papers-cached"
    write_papers(cached_dir, args.cached_papers, args.seed + 1)
    fast = start_server(free_port(), 10**9, (0.0, 0.0), seed=3)
    try:
        began = time.monotonic()
        fill = run_flow(cached_dir, work / "out-2", fast.base_url, cache_dir, 10**9)
        fill_wall = time.monotonic() - began
        settle_s = wait_until_prefect_server_idle()
        before = fast.stats().requests
        began, cpu_before = time.monotonic(), cpu_seconds()
        rerun = run_flow(cached_dir, work / "out-3", fast.base_url, cache_dir, 10**9)
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
