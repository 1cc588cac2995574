"""The aggregate files during a run: what a killed run leaves, and the cleanup at its end."""

from __future__ import annotations

from pathlib import Path

from methyl_distill.extraction.aggregates import LiveAggregates, read_records
from methyl_distill.extraction.outputs import (
    processed_file_path,
    write_extraction_outputs,
    write_processed_files,
)
from methyl_distill.extraction.papers import Paper
from methyl_distill.extraction.records import FailureRecord, PaperRecord
from methyl_distill.extraction.run_tally import RunTally
from methyl_distill.teacher.config import TeacherConfig
from methyl_distill.teacher.protocol import TokenUsage


def _paper(name: str) -> Paper:
    return Paper(
        file_id=f"{name}-txt",
        file_ids=(f"{name}-txt",),
        source_paths=(f"{name}.txt",),
        text=f"{name} methylation.",
        content_sha256=name * 8,
    )


def _record(paper: Paper, model: str) -> PaperRecord:
    return PaperRecord(
        file_id=paper.file_id,
        file_ids=list(paper.file_ids),
        source_paths=list(paper.source_paths),
        content_sha256=paper.content_sha256,
        question_bank_version="v",
        prompt_version="1",
        teacher_model=model,
        chunks=1,
        answers=[],
        markers=[],
        additional_qa=[],
        usage=TokenUsage(),
    )


class Clock:
    """Each reading is 10 ms after the last: a write seems to take 10 ms."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        self.now += 0.01
        return self.now


def test_aggregates_show_finished_papers_and_the_previous_run_for_the_rest(tmp_path: Path) -> None:
    out = tmp_path / "out"
    kept, gone, new, renamed = _paper("kept"), _paper("gone"), _paper("new"), _paper("kept")
    renamed = renamed.model_copy(
        update={"file_id": "kept2-txt", "file_ids": ("kept2-txt",), "source_paths": ("kept2.txt",)}
    )
    # The previous run extracted `kept` and `gone`; `gone` has been deleted, `kept` renamed since.
    write_extraction_outputs(out, [_record(kept, "old"), _record(gone, "old")], [])
    for record in (_record(kept, "old"), _record(gone, "old")):
        processed_file_path(out, record.file_id).write_text("# old\n", encoding="utf-8")

    clock = Clock()
    tally = RunTally(TeacherConfig())
    aggregates = LiveAggregates(out, [renamed, new], clock=clock)
    tally.finish(new, _record(new, "gpt-4o"), from_cache=False)
    aggregates.paper_done(new, tally)  # the first paper is written at once

    on_disk = {record.file_id: record for record in read_records(out / "records.jsonl")}
    assert set(on_disk) == {"new-txt", "kept2-txt"}  # the gone paper left, the pending one carried
    assert on_disk["kept2-txt"].teacher_model == "old" and on_disk["new-txt"].teacher_model == "gpt-4o"
    assert '"kept2-txt"' in (out / "all_results.json").read_text(encoding="utf-8")

    write_processed_files(out, tally.records[0])

    failure = FailureRecord(file_id="", source_path="", stage="request", reason="HTTP 500 after retries")
    tally.fail(renamed, failure)
    (out / "records.jsonl").write_text("sentinel\n", encoding="utf-8")
    aggregates.paper_done(renamed, tally)  # not due: a rewrite waits COST_FACTOR times the last one's cost
    assert (out / "records.jsonl").read_text(encoding="utf-8") == "sentinel\n"
    clock.now += 60
    paths = aggregates.finish(tally)
    assert [record.file_id for record in read_records(paths.records)] == ["new-txt"]
    assert '"kept2-txt"' in Path(paths.failures).read_text(encoding="utf-8")
    # Processed files of papers that are gone or now fail are removed.
    assert sorted(path.name for path in Path(paths.processed_files).iterdir()) == ["new-txt.txt"]
