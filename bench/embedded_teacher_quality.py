"""Quality of the embedded teacher (SmolLM2-135M on llama.cpp) on the bundled papers.

Prints numbers; it is not a test. Starts the embedded teacher exactly as `methyl-distill run` does
(`EmbeddedTeacherServer`, its settings overrides, the pipeline's chunk size, one request at a time),
runs the extraction flow over data/papers into a temporary directory with a fresh cache, and reads
records.jsonl back. Per paper and in total it reports

- answers: bank questions answered with something other than "Not reported in the paper.",
- verbatim: share of the teacher's evidence quotes found verbatim in the paper (the extraction
  stage keeps those and counts the dropped ones in `dropped_evidence_quotes`),
- schema junk: answers or marker names holding JSON/schema fragments ('$defs', '{', '#/'),
- markers: marker records, and how many name a gene symbol that occurs in the paper,
- failures and wall time.

Run: `nice .venv/bin/python bench/embedded_teacher_quality.py` (about 40 s per paper on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
for _name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "TEACHER_MODEL"):
    os.environ.pop(_name, None)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from methyl_distill.flows.extract import extract_flow  # noqa: E402

from methyl_distill.extraction.grounding import EvidenceChecker  # noqa: E402
from methyl_distill.extraction.question_bank import load_question_bank  # noqa: E402
from methyl_distill.pipeline.parameters import embedded_chunk_tokens  # noqa: E402
from methyl_distill.teacher.llama_cpp_server import EmbeddedTeacherConfig, EmbeddedTeacherServer  # noqa: E402
from methyl_distill.text.not_reported import is_not_reported  # noqa: E402

SCHEMA_JUNK = ("$defs", "{", "#/", "$ref")


def _is_answered(answer: str) -> bool:
    return not is_not_reported(answer)


def _quotes(record: dict[str, Any]) -> list[str]:
    quotes = [q for a in record["answers"] for q in a["evidence"]]
    quotes += [q for m in record["markers"] for q in m["evidence"]]
    quotes += [q for qa in record["additional_qa"] for q in qa["evidence"]]
    return quotes


def paper_metrics(record: dict[str, Any], paper_text: str) -> dict[str, Any]:
    answers = record["answers"]
    answered = [a for a in answers if _is_answered(a["answer"])]
    folded = " ".join(paper_text.split())
    junk = [a["answer"] for a in answers if any(f in a["answer"] for f in SCHEMA_JUNK)]
    junk += [m["marker"] for m in record["markers"] if any(f in m["marker"] for f in SCHEMA_JUNK)]
    checker = EvidenceChecker(paper_text)
    kept = [q for q in _quotes(record) if checker.occurs(q)]
    dropped = int(record.get("dropped_evidence_quotes", 0))
    grounded_markers = [
        m for m in record["markers"] if m.get("gene") and m["gene"].casefold() in paper_text.casefold()
    ]
    return {
        "file_id": record["file_id"],
        "questions": len(answers),
        "answered": len(answered),
        "answered_with_evidence": sum(1 for a in answered if a["evidence"]),
        "answers_verbatim": sum(1 for a in answered if " ".join(a["answer"].split()) in folded),
        "quotes_kept": len(kept),
        "quotes_dropped": dropped,
        "schema_junk": len(junk),
        "markers": len(record["markers"]),
        "markers_gene_in_paper": len(grounded_markers),
        "additional_qa": len(record["additional_qa"]),
        "sample_answers": [f"[{a['question_id']}] {a['answer'][:90]}" for a in answered[:3]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--papers", type=Path, default=REPO / "data" / "papers")
    parser.add_argument("--json", type=Path, default=None, help="Also write the metrics here.")
    parser.add_argument("--keep", type=Path, default=None, help="Write the extraction here (kept).")
    parser.add_argument(
        "--score", type=Path, default=None, help="Only score an extraction kept earlier (no teacher run)."
    )
    args = parser.parse_args()
    if args.score is not None:
        report(args, args.score, wall=None, server_start=None, tokens=None)
        return

    bank = load_question_bank(None)
    config = EmbeddedTeacherConfig()
    with tempfile.TemporaryDirectory(prefix="embedded-quality-") as scratch:
        output = args.keep or Path(scratch) / "extraction"
        started = time.monotonic()
        with EmbeddedTeacherServer(config) as server:
            server_ready = time.monotonic()
            summary = extract_flow(
                input_directory=str(args.papers),
                output_directory=str(output),
                refresh=True,
                teacher_config=server.teacher_config(bank.ids),
                max_concurrency=1,
                max_chunk_tokens=embedded_chunk_tokens(config),
                cache_dir=str(Path(scratch) / "cache"),
            )
        wall = time.monotonic() - started
        report(args, output, wall, server_ready - started, summary.usage.total_tokens)


def report(
    args: argparse.Namespace, output: Path, wall: float | None, server_start: float | None, tokens: int | None
) -> None:
    records = [json.loads(line) for line in (output / "records.jsonl").read_text().splitlines() if line]
    failures_path = output / "failures.jsonl"
    failures = (
        [line for line in failures_path.read_text().splitlines() if line] if failures_path.exists() else []
    )
    rows = []
    for record in records:
        text = (args.papers / record["source_paths"][0]).read_text(encoding="utf-8")
        rows.append(paper_metrics(record, text))
    print(f"{'paper':40} {'answered':>9} {'verbatim':>9} {'junk':>5} {'markers':>8} {'add_qa':>7}")
    for row in rows:
        quotes = row["quotes_kept"] + row["quotes_dropped"]
        share = f"{row['quotes_kept']}/{quotes}"
        markers = f"{row['markers_gene_in_paper']}/{row['markers']}"
        answered = f"{row['answered']}/{row['questions']}"
        print(
            f"{row['file_id'][:40]:40} {answered:>9} {share:>9} {row['schema_junk']:>5} "
            f"{markers:>8} {row['additional_qa']:>7}"
        )
        for sample in row["sample_answers"]:
            print(f"    {sample}")
    kept = sum(r["quotes_kept"] for r in rows)
    dropped = sum(r["quotes_dropped"] for r in rows)
    totals = {
        "papers": len(rows),
        "failures": len(failures),
        "answered": sum(r["answered"] for r in rows),
        "questions": sum(r["questions"] for r in rows),
        "answered_with_evidence": sum(r["answered_with_evidence"] for r in rows),
        "answers_verbatim": sum(r["answers_verbatim"] for r in rows),
        "quotes_kept": kept,
        "quotes_dropped": dropped,
        "verbatim_share": round(kept / (kept + dropped), 3) if kept + dropped else None,
        "schema_junk": sum(r["schema_junk"] for r in rows),
        "markers": sum(r["markers"] for r in rows),
        "markers_gene_in_paper": sum(r["markers_gene_in_paper"] for r in rows),
        "additional_qa": sum(r["additional_qa"] for r in rows),
        "wall_s": None if wall is None else round(wall, 1),
        "server_start_s": None if server_start is None else round(server_start, 1),
        "teacher_tokens": tokens,
    }
    print(json.dumps(totals, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"totals": totals, "papers": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
