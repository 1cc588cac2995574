"""Output files: atomic replacement, the original script's layout, readable Q&A."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from methyl_distill.extraction.outputs import (
    atomic_write_text,
    format_processed_file,
    write_extraction_outputs,
)
from methyl_distill.extraction.records import AnsweredQuestion, FailureRecord, PaperRecord, QAPair, TokenUsage
from methyl_distill.readers.document import PaperSource


def _record(file_id: str = "mgmt-txt", file_ids: tuple[str, ...] = ("mgmt-txt",)) -> PaperRecord:
    return PaperRecord(
        file_id=file_id,
        file_ids=list(file_ids),
        source_paths=[f"{name}.txt" for name in file_ids],
        content_sha256="0" * 64,
        question_bank_version="1",
        prompt_version="1",
        teacher_model="gpt-4o",
        chunks=1,
        answers=[
            AnsweredQuestion(
                question_id="markers",
                question="Which markers?",
                answer="MGMT promoter.",
                evidence=["MGMT promoter was methylated"],
            ),
            AnsweredQuestion(question_id="auc", question="What AUC?", answer="Not reported in the paper."),
        ],
        markers=[],
        additional_qa=[QAPair(question="Which drug?", answer="Temozolomide.", evidence=["temozolomide"])],
        usage=TokenUsage(prompt_tokens=10, completion_tokens=5, requests=1),
    )


def test_atomic_write_replaces_whole_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "records.jsonl"
    atomic_write_text(target, "old\n")
    atomic_write_text(target, "new\n")
    assert target.read_text(encoding="utf-8") == "new\n"
    assert sorted(path.name for path in target.parent.iterdir()) == ["records.jsonl"]


def test_a_crash_while_writing_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "all_results.json"
    atomic_write_text(target, "complete old content\n")

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "half of the new cont")
    assert target.read_text(encoding="utf-8") == "complete old content\n"
    assert [path.name for path in tmp_path.iterdir()] == ["all_results.json"]


def test_processed_file_reads_question_then_answer() -> None:
    text = format_processed_file(_record())
    assert text.startswith("# mgmt-txt\n")
    assert (
        'Question: Which markers?\nAnswer: MGMT promoter.\nEvidence: "MGMT promoter was methylated"\n' in text
    )
    assert "Question: What AUC?\nAnswer: Not reported in the paper.\n" in text
    assert "## Additional questions" in text and "Question: Which drug?\nAnswer: Temozolomide." in text


def test_outputs_layout(tmp_path: Path) -> None:
    duplicate = _record("a-txt", ("a-txt", "b-txt"))
    failure = FailureRecord(file_id="bad-txt", source_path="bad.txt", stage="read", reason="empty file")
    paths = write_extraction_outputs(tmp_path / "out", [_record(), duplicate], [failure])

    entries = json.loads(Path(paths.all_results).read_text(encoding="utf-8"))
    assert [entry["file_id"] for entry in entries] == ["a-txt", "b-txt", "mgmt-txt"]
    assert entries[0]["input_questions"] == ["Which markers?", "What AUC?"]
    assert entries[0]["generated_answers"] == ["MGMT promoter.", "Not reported in the paper."]
    assert PaperRecord.model_validate(entries[1]["record"]).file_ids == ["a-txt", "b-txt"]
    records = Path(paths.records).read_text(encoding="utf-8").splitlines()
    assert [PaperRecord.model_validate_json(line).file_id for line in records] == ["a-txt", "mgmt-txt"]
    [line] = Path(paths.failures).read_text(encoding="utf-8").splitlines()
    assert FailureRecord.model_validate_json(line).reason == "empty file"
    assert sorted(path.name for path in Path(paths.processed_files).iterdir()) == [
        "a-txt.txt",
        "b-txt.txt",
        "mgmt-txt.txt",
    ]
    # An empty run still writes every file, so downstream stages never read a stale one.
    empty = write_extraction_outputs(tmp_path / "out", [], [])
    assert Path(empty.records).read_text(encoding="utf-8") == ""
    assert json.loads(Path(empty.all_results).read_text(encoding="utf-8")) == []


def test_processed_files_and_all_results_say_where_each_paper_came_from(tmp_path: Path) -> None:
    source = PaperSource(
        format="pdf",
        reader="pdf/1",
        pages=3,
        title="SDC2 methylation in stool DNA",
        doi="10.5555/md.sample.0002",
        pmid="31234567",
        pmcid=None,
        sections=("Abstract", "Methods"),
        omitted_sections=("References", "Acknowledgements"),
        omitted_tokens=812,
    )
    record = _record("sdc2-pdf", ("sdc2-pdf", "copy-pdf")).model_copy(
        update={"source": source, "source_paths": ["papers/sdc2.pdf", "copy.pdf"]}
    )
    paths = write_extraction_outputs(tmp_path / "out", [record], [])

    header = (Path(paths.processed_files) / "copy-pdf.txt").read_text(encoding="utf-8").split("\n\n")[1]
    assert header.splitlines() == [
        "Source: copy.pdf (pdf, 3 pages, read by pdf/1)",
        "Title: SDC2 methylation in stool DNA",
        "DOI: 10.5555/md.sample.0002",
        "PMID: 31234567",
        "Left out: References, Acknowledgements (~812 tokens)",
    ]
    entries = {entry["file_id"]: entry for entry in json.loads(Path(paths.all_results).read_text("utf-8"))}
    assert entries["sdc2-pdf"]["source_path"] == "papers/sdc2.pdf"
    assert entries["copy-pdf"]["source_path"] == "copy.pdf"
    assert {entry["doi"] for entry in entries.values()} == {"10.5555/md.sample.0002"}
    assert entries["sdc2-pdf"]["format"] == "pdf" and entries["sdc2-pdf"]["pmcid"] is None
    assert PaperRecord.model_validate(entries["sdc2-pdf"]["record"]).source == source


def test_extract_refuses_an_output_folder_inside_its_input_folder(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from methyl_distill.extraction.parameters import ExtractParameters

    papers = tmp_path / "papers"
    papers.mkdir()
    for output in (papers, papers / "out", papers / "a" / ".." / "b"):
        with pytest.raises(ValidationError, match=r"is inside input_directory .* read its own outputs"):
            ExtractParameters(input_directory=str(papers), output_directory=str(output))
    # Beside the input folder (even with a name that starts the same) is fine.
    ExtractParameters(input_directory=str(papers), output_directory=str(tmp_path / "papers-out"))


def test_an_output_folder_is_claimed_and_a_foreign_one_refused(tmp_path: Path) -> None:
    from methyl_distill.extraction.outputs import (
        OUTPUT_MARKER_FILE,
        ForeignOutputDirectoryError,
        claim_output_directory,
        remove_stale_temporaries,
    )

    fresh = claim_output_directory(tmp_path / "new" / "out")
    assert (fresh / OUTPUT_MARKER_FILE).is_file()

    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.docx").write_bytes(b"PK")
    (foreign / "records.jsonl").write_text("mine\n", encoding="utf-8")
    with pytest.raises(ForeignOutputDirectoryError, match=r"did not write \(chapter1\.docx\)"):
        write_extraction_outputs(foreign, [_record()], [])
    assert (foreign / "records.jsonl").read_text(encoding="utf-8") == "mine\n"  # untouched
    assert not (foreign / OUTPUT_MARKER_FILE).exists()

    # The outputs of an earlier version (no marker, only our files) are adopted.
    earlier = tmp_path / "earlier"
    (earlier / "processed_files").mkdir(parents=True)
    for name in ("records.jsonl", "all_results.json", "failures.jsonl", ".records.jsonl.k3j2.tmp"):
        (earlier / name).write_text("", encoding="utf-8")
    (earlier / "processed_files" / ".mgmt-txt.txt.a1b2.tmp").write_text("half", encoding="utf-8")
    (earlier / "processed_files" / ".notes.tmp").write_text("a user's", encoding="utf-8")
    paths = write_extraction_outputs(earlier, [_record()], [])
    assert (earlier / OUTPUT_MARKER_FILE).is_file()
    # Only our own temporaries were deleted.
    left = sorted(path.name for path in Path(paths.processed_files).iterdir())
    assert left == [".notes.tmp", "mgmt-txt.txt"]
    assert not (earlier / ".records.jsonl.k3j2.tmp").exists()
    (earlier / ".user-data.tmp").write_text("keep", encoding="utf-8")
    assert remove_stale_temporaries(earlier) == 0 and (earlier / ".user-data.tmp").exists()
