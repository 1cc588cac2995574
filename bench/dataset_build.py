"""Benchmark of the dataset stage: build from 100,000 synthetic records (with paper texts).

Prints the wall time and the peak memory (resident set, ru_maxrss) of the build, which runs in a
fresh child process so that generating the corpus does not count. Target on a 2-core machine:
under 60 s and under 2 GB.

    .venv/bin/python bench/dataset_build.py [--papers 100000] [--filler_sentences 6] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build_child(workdir: Path) -> None:
    """Runs in the child: the build alone, then one JSON line of measurements."""
    from methyl_distill.sft_dataset import build_sft_dataset

    started = time.perf_counter()
    summary = build_sft_dataset([workdir / "records.jsonl"], workdir / "dataset", workdir / "papers")
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)  # the worker processes, reaped by now
    peak_kib = usage.ru_maxrss  # KiB on Linux
    text_bytes = sum(
        os.path.getsize(path) for path in (summary.train_jsonl, summary.val_jsonl, summary.test_jsonl)
    )
    print(
        json.dumps(
            {
                "wall_seconds": round(wall, 2),
                "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
                "worker_cpu_seconds": round(workers.ru_utime + workers.ru_stime, 2),
                "worker_peak_rss_mib": round(workers.ru_maxrss / 1024, 1),
                "workers": summary.config.workers or min(os.cpu_count() or 1, 8),
                "load_average_1min": round(os.getloadavg()[0], 2),
                "peak_rss_mib": round(peak_kib / 1024, 1),
                "phase_seconds": summary.phase_seconds,
                "samples": {split: stats.samples for split, stats in summary.splits.items()},
                "tokens": sum(stats.tokens for stats in summary.splits.values()),
                "jsonl_mib": round(text_bytes / 2**20, 1),
                "drops": summary.drops,
            }
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--papers", type=int, default=100_000, help="Synthetic records (one per paper).")
    parser.add_argument(
        "--filler_sentences", type=int, default=6, help="Paper length: ~3x this many sentences."
    )
    parser.add_argument(
        "--workdir", default=None, help="Keep the corpus and dataset here (default: temp dir)."
    )
    parser.add_argument("--build-child", dest="child", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="Reuse a corpus already generated in --workdir (skip generation).",
    )
    args = parser.parse_args()
    if args.child:
        build_child(Path(args.child))
        return 0

    from methyl_distill.sft_dataset.synthetic_records import write_synthetic_corpus

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-dataset-"))
    try:
        started = time.perf_counter()
        if args.reuse and (workdir / "records.jsonl").exists():
            papers_dir, records = workdir / "papers", workdir / "records.jsonl"
        else:
            papers_dir, records = write_synthetic_corpus(
                workdir, args.papers, filler_sentences=args.filler_sentences
            )
        paper_mib = sum(path.stat().st_size for path in papers_dir.iterdir()) / 2**20
        with records.open("rb") as handle:
            record_count = sum(1 for _ in handle)
        print(
            f"corpus: {record_count} records ({records.stat().st_size / 2**20:.0f} MiB), papers "
            f"{paper_mib:.0f} MiB, ready in {time.perf_counter() - started:.1f} s"
        )
        shutil.rmtree(workdir / "dataset", ignore_errors=True)
        child = subprocess.run(
            [sys.executable, __file__, "--build-child", str(workdir)],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"},
        )
        if child.returncode != 0:
            print(child.stderr, file=sys.stderr)
            return child.returncode
        result = json.loads(child.stdout.strip().splitlines()[-1])
        print(json.dumps(result, indent=2))
        total_mib = result["peak_rss_mib"] + result["workers"] * result["worker_peak_rss_mib"]
        ok = result["wall_seconds"] < 60 and total_mib < 2048
        print(
            f"build: {result['wall_seconds']:.1f} s wall, CPU {result['cpu_seconds']:.1f} s main + "
            f"{result['worker_cpu_seconds']:.1f} s in {result['workers']} workers (load average "
            f"{result['load_average_1min']}); peak RSS {result['peak_rss_mib']:.0f} MiB main, "
            f"{result['worker_peak_rss_mib']:.0f} MiB largest worker (target < 60 s, < 2048 MiB): "
            f"{'OK' if ok else 'OVER TARGET'}"
        )
        return 0
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
