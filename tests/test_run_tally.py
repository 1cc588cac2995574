"""The run's bookkeeping: counts, costs, the per-paper table, renamed files, redacted failures."""

from __future__ import annotations

from pathlib import Path

from methyl_distill.extraction.outputs import ExtractionOutputPaths
from methyl_distill.extraction.papers import Paper, PaperDiscovery, RejectedFile
from methyl_distill.extraction.records import FailureRecord, PaperRecord
from methyl_distill.extraction.run_tally import RunTally
from methyl_distill.readers.document import PaperSource
from methyl_distill.teacher.config import TeacherConfig
from methyl_distill.teacher.protocol import TokenUsage

KEY = "sk-live-SECRET-123"


def _paper(file_id: str, *duplicates: str, source: PaperSource | None = None) -> Paper:
    ids = (file_id, *duplicates)
    return Paper(
        file_id=file_id,
        file_ids=ids,
        source_paths=tuple(f"{name}.txt" for name in ids),
        text="SEPT9 methylation.",
        content_sha256="0" * 64,
        source=source or PaperSource(),
    )


def _record(file_id: str, usage: TokenUsage) -> PaperRecord:
    return PaperRecord(
        file_id=file_id,
        file_ids=[file_id],
        source_paths=[f"{file_id}.txt"],
        content_sha256="0" * 64,
        question_bank_version="v",
        prompt_version="1",
        teacher_model="gpt-4o",
        chunks=1,
        answers=[],
        markers=[],
        additional_qa=[],
        usage=usage,
    )


def test_counts_costs_renames_and_redaction() -> None:
    tally = RunTally(TeacherConfig(), redact=lambda text: text.replace(KEY, "***"))
    tally.reject(RejectedFile(file_id="empty-txt", source_path="empty.txt", reason="empty file"))
    spent = TokenUsage(prompt_tokens=1_000_000, completion_tokens=100_000, requests=2)
    # A cached record of a paper that now lives in two files, under another name.
    renamed = tally.finish(_paper("b", "b-copy"), _record("old-name", spent), from_cache=True)
    assert renamed.file_id == "b" and renamed.file_ids == ["b", "b-copy"]
    pdf = PaperSource(format="pdf", reader="pdf/1", omitted_sections=("References",), omitted_tokens=900)
    tally.finish(_paper("a", source=pdf), _record("a", spent), from_cache=False)
    failure = FailureRecord(
        file_id="",
        source_path="",
        stage="request",
        reason=f"HTTP 401: bad key {KEY}",
        raw_output=f"echo {KEY}",
        usage=TokenUsage(prompt_tokens=10, requests=1),
    )
    tally.fail(_paper("c", "c-copy"), failure)

    assert (tally.extracted, tally.cached, tally.failed, tally.rejected) == (1, 1, 1, 1)
    assert tally.counts() == "1 extracted, 1 cached, 1 failed, 1 rejected"
    # Cached papers cost nothing in this run; failed ones cost what they spent.
    assert tally.usage == TokenUsage(prompt_tokens=1_000_010, completion_tokens=100_000, requests=3)
    assert tally.cost_usd == (1_000_010 * 2.5 + 100_000 * 10.0) / 1_000_000
    kept, copy = tally.failures[-2:]  # a failed paper held by two files: both are listed
    assert (kept.file_id, kept.source_path) == ("c", "c.txt")
    assert KEY not in kept.reason and KEY not in (kept.raw_output or "") and "***" in kept.reason
    assert (copy.file_id, copy.source_path, copy.stage) == ("c-copy", "c-copy.txt", "request")
    assert copy.reason == f"{kept.reason} (same content as c.txt)" and copy.usage == TokenUsage()
    assert [row["file_id"] for row in tally.table()] == ["a", "b", "c", "empty-txt"]
    assert {row["status"] for row in tally.table()} == {"extracted", "cached", "failed (request)", "rejected"}
    rows = {row["file_id"]: row for row in tally.table()}
    assert (rows["a"]["format"], rows["a"]["tokens_left_out"]) == ("pdf", 900)
    assert (rows["b"]["format"], rows["b"]["tokens_left_out"]) == ("text", 0)
    assert (rows["empty-txt"]["format"], rows["empty-txt"]["note"]) == ("", "empty file")

    discovery = PaperDiscovery(
        papers=[_paper("a", source=pdf), _paper("b", "b-copy"), _paper("c", "c-copy")],
        rejected=[RejectedFile(file_id="empty-txt", source_path="empty.txt", reason="empty file")],
        hidden_skipped=2,
    )
    summary = tally.summary(discovery, ExtractionOutputPaths.under(Path("/tmp/out")))
    assert (summary.files_found, summary.papers, summary.duplicate_files) == (6, 3, 2)
    assert (summary.failed, summary.rejected) == (1, 1)
    assert summary.estimated_cost_usd == tally.cost_usd
    assert summary.files_by_format == {"pdf": 1, "text": 4}
    assert (summary.hidden_skipped, summary.back_matter_tokens_left_out, summary.rejected) == (2, 900, 1)
