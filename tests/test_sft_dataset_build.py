"""Tests of the dataset build: records reading, sample rules, outputs, atomicity, config, CLI."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from methyl_distill.extraction.records import AnsweredQuestion, PaperRecord, QAPair
from methyl_distill.sft_dataset import (
    DatasetConfig,
    DatasetConfigError,
    EmptyDatasetError,
    OutputDirectoryError,
    RecordsFileError,
    build_sft_dataset,
)
from methyl_distill.sft_dataset.dataset_writer import MARKER_FILE
from methyl_distill.sft_dataset.record_reader import scan_records
from methyl_distill.sft_dataset.synthetic_records import synthetic_record, write_synthetic_corpus

REPO = Path(__file__).resolve().parent.parent
GENES = ("SEPT9", "MGMT", "SHOX2", "GSTP1", "MLH1", "RASSF1A", "CDKN2A", "NDRG4", "BMP3", "VIM", "APC")
CONDITIONS = (
    "colorectal cancer",
    "glioblastoma",
    "lung cancer",
    "prostate cancer",
    "breast cancer",
    "melanoma",
)


def _paper_text(index: int) -> tuple[str, dict[str, object]]:
    """A small paper about one marker; gene and condition vary with `index`, so papers differ."""
    gene, condition = GENES[index % len(GENES)], CONDITIONS[index % len(CONDITIONS)]
    facts: dict[str, object] = {
        "gene": gene,
        "partner": "SHOX2" if gene != "SHOX2" else "SEPT9",
        "condition": condition,
        "sample": "plasma cell-free DNA",
        "assay": "quantitative MSP",
        "cpg": f"cg{12345678 + index}",
        "sensitivity": 50 + index % 40,
        "specificity": 89,
        "cohort": 1000 + index,
    }
    facts["finding"] = (
        f"Promoter hypermethylation of {gene} was detected in {facts['sensitivity']}% of {condition} "
        f"cases (study {index}) and the CpG site {facts['cpg']} showed the largest difference."
    )
    facts["performance"] = (
        f"In plasma cell-free DNA from {facts['cohort']} subjects, quantitative MSP of {gene} reached a "
        f"sensitivity of {facts['sensitivity']}% and a specificity of 89% for {condition}."
    )
    facts["panel"] = f"Combining {gene} with {facts['partner']} improved detection of early-stage disease."
    text = "\n".join(
        [
            f"Title: {gene} study {index}",
            "Samples were collected under informed consent and stored until extraction.",
            str(facts["finding"]),
            "Bisulfite conversion was performed with a commercial kit.",
            str(facts["performance"]),
            str(facts["panel"]),
        ]
    )
    return text, facts


def _corpus(directory: Path, papers: int) -> tuple[Path, Path, list[PaperRecord]]:
    papers_dir = directory / "papers"
    papers_dir.mkdir(parents=True)
    records = []
    for index in range(papers):
        text, facts = _paper_text(index)
        (papers_dir / f"p{index}.txt").write_text(text, encoding="utf-8")
        records.append(synthetic_record(text, facts, f"p{index}"))
    records_path = directory / "records.jsonl"
    records_path.write_text("".join(record.model_dump_json() + "\n" for record in records), encoding="utf-8")
    return papers_dir, records_path, records


def _lines(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def _all_samples(summary) -> list[dict]:  # type: ignore[no-untyped-def]
    return [
        row for path in (summary.train_jsonl, summary.val_jsonl, summary.test_jsonl) for row in _lines(path)
    ]


# --- records -------------------------------------------------------------------------------------


def test_newest_record_per_paper_content_wins_across_files(tmp_path: Path) -> None:
    text, facts = _paper_text(1)
    old = synthetic_record(text, facts, "p1", datetime(2026, 1, 1, tzinfo=UTC))
    new = old.model_copy(
        update={"extracted_at": datetime(2026, 2, 1, tzinfo=UTC), "teacher_model": "newer-teacher"}
    )
    other_text, other_facts = _paper_text(2)
    other = synthetic_record(other_text, other_facts, "p2")
    first, second = tmp_path / "run1.jsonl", tmp_path / "run2.jsonl"
    first.write_text(new.model_dump_json() + "\n" + other.model_dump_json() + "\n", encoding="utf-8")
    second.write_text(old.model_dump_json() + "\n", encoding="utf-8")  # the later file holds the older one
    scan = scan_records([first, second])
    records = list(scan.iter_records())
    assert [record.teacher_model for record in records if record.file_id == "p1"] == ["newer-teacher"]
    assert scan.paper_count == 2 and scan.superseded == 1


def test_a_tie_goes_to_the_later_file_and_naive_times_compare(tmp_path: Path) -> None:
    text, facts = _paper_text(1)
    record = synthetic_record(text, facts, "p1")
    naive = json.loads(record.model_dump_json())
    naive["extracted_at"] = "2026-11-01T00:00:00"  # no time zone: read as UTC, equal to the other
    naive["teacher_model"] = "later-file"
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text(record.model_dump_json() + "\n", encoding="utf-8")
    second.write_text(json.dumps(naive) + "\n", encoding="utf-8")
    assert [r.teacher_model for r in scan_records([first, second]).iter_records()] == ["later-file"]


def test_corrupt_lines_are_named_and_skipped_or_fail(tmp_path: Path) -> None:
    text, facts = _paper_text(1)
    good = synthetic_record(text, facts, "p1").model_dump_json()
    broken_schema = json.loads(good)
    broken_schema["content_sha256"] = "x" * 64
    broken_schema["chunks"] = 0  # violates ge=1
    path = tmp_path / "records.jsonl"
    path.write_text(
        "\n".join([good, '{"truncated": ', "", json.dumps(broken_schema)]) + "\n", encoding="utf-8"
    )
    scan = scan_records([path], "skip")
    assert [record.file_id for record in scan.iter_records()] == ["p1"]
    assert len(scan.corrupt) == 2
    assert scan.corrupt[0].startswith(f"{path}:2: ")
    assert scan.corrupt[1].startswith(f"{path}:4: ") and "chunks" in scan.corrupt[1]
    with pytest.raises(RecordsFileError, match=r"records\.jsonl:2: "):
        scan_records([path], "fail")


def test_a_corrupt_newest_record_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    text, facts = _paper_text(1)
    old = synthetic_record(text, facts, "p1", datetime(2026, 1, 1, tzinfo=UTC))
    broken = json.loads(old.model_dump_json())
    broken["extracted_at"] = "2026-03-01T00:00:00Z"
    broken["answers"] = "not a list"
    path = tmp_path / "records.jsonl"
    path.write_text(old.model_dump_json() + "\n" + json.dumps(broken) + "\n", encoding="utf-8")
    scan = scan_records([path], "skip")
    assert [r.extracted_at for r in scan.iter_records()] == [datetime(2026, 1, 1, tzinfo=UTC)]
    assert len(scan.corrupt) == 1 and ":2: " in scan.corrupt[0]
    with pytest.raises(RecordsFileError, match=":2: "):
        list(scan_records([path], "fail").iter_records())


def test_missing_records_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RecordsFileError, match="records file not found"):
        scan_records([tmp_path / "nope.jsonl"])


# --- the build end to end ------------------------------------------------------------------------


def test_build_writes_messages_jsonl_dataset_dict_and_card(tmp_path: Path) -> None:
    from datasets import load_from_disk

    papers_dir, records_path, _ = _corpus(tmp_path, 20)
    summary = build_sft_dataset([records_path], tmp_path / "out", papers_dir)
    assert summary.files_exist()
    rows = _all_samples(summary)
    assert len(rows) == summary.total_samples > 0
    for row in rows:
        roles = [message["role"] for message in row["messages"]]
        assert roles == ["system", "user", "assistant"]
        assert all(message["content"].strip() for message in row["messages"])
        assert row["meta"]["style"] in {"closed_book", "grounded", "extraction"}
    styles = {row["meta"]["style"] for row in rows}
    assert styles == {"closed_book", "grounded", "extraction"}
    extraction = next(row for row in rows if row["meta"]["style"] == "extraction")
    target = json.loads(extraction["messages"][2]["content"])
    assert target["markers"][0]["gene"] in GENES
    # No paper in two splits.
    papers_by_split = {
        split: {row["meta"]["file_id"] for row in _lines(path)}
        for split, path in (
            ("train", summary.train_jsonl),
            ("val", summary.val_jsonl),
            ("test", summary.test_jsonl),
        )
    }
    assert not papers_by_split["train"] & papers_by_split["val"]
    assert not papers_by_split["train"] & papers_by_split["test"]
    assert not papers_by_split["val"] & papers_by_split["test"]
    assert papers_by_split["test"] and papers_by_split["val"]
    # The DatasetDict holds the same rows.
    dataset = load_from_disk(summary.dataset_dict)
    assert {split: len(dataset[split]) for split in dataset} == {
        "train": summary.splits["train"].samples,
        "validation": summary.splits["validation"].samples,
        "test": summary.splits["test"].samples,
    }
    assert dataset["train"][0]["messages"] == _lines(summary.train_jsonl)[0]["messages"]
    card = Path(summary.card).read_text(encoding="utf-8")
    assert "configs:" in card and "path: train.jsonl" in card
    assert "SEPT9" in card and "## Left out" in card and '"max_length": 2048' in card
    stats = json.loads(Path(summary.stats_json).read_text(encoding="utf-8"))
    assert stats["splits"]["train"]["samples"] == summary.splits["train"].samples
    assert summary.papers == 20 and summary.paper_status == {"ok": 20}


def test_build_is_deterministic(tmp_path: Path) -> None:
    papers_dir, records_path, _ = _corpus(tmp_path, 12)
    first = build_sft_dataset([records_path], tmp_path / "a", papers_dir)
    second = build_sft_dataset([records_path], tmp_path / "b", papers_dir)
    for name in ("train_jsonl", "val_jsonl", "test_jsonl"):
        assert Path(getattr(first, name)).read_bytes() == Path(getattr(second, name)).read_bytes()


def test_invalid_and_duplicate_answers_are_dropped_and_counted(tmp_path: Path) -> None:
    papers_dir, records_path, records = _corpus(tmp_path, 3)
    record = records[0]
    text = (papers_dir / "p0.txt").read_text(encoding="utf-8")
    evidence = text.splitlines()[2]
    extra = [
        AnsweredQuestion(question_id="q1", question="Which marker?", answer="   ", evidence=[evidence]),
        AnsweredQuestion(question_id="q2", question="Which marker?", answer="...", evidence=[evidence]),
        AnsweredQuestion(
            question_id="q3", question="Which marker is it?", answer="which marker is it", evidence=[]
        ),
        AnsweredQuestion(question_id="q4", question="  ", answer="SEPT9", evidence=[evidence]),
    ]
    original = record.additional_qa[0]
    dup = QAPair(
        question=original.question.upper(), answer=f"  {original.answer} ", evidence=original.evidence
    )
    changed = record.model_copy(
        update={"answers": record.answers + extra, "additional_qa": [*record.additional_qa, dup]}
    )
    records_path.write_text(
        "".join(r.model_dump_json() + "\n" for r in [changed, *records[1:]]), encoding="utf-8"
    )
    config = DatasetConfig(mix={"closed_book": 1.0, "grounded": 0.0, "extraction": 0.0})
    summary = build_sft_dataset([records_path], tmp_path / "out", papers_dir, config)
    for reason in ("empty_answer", "answer_without_content", "answer_repeats_question", "empty_question"):
        assert summary.drops.get(reason) == 1, reason
    assert summary.drops.get("exact_duplicate") == 1
    answers = [row["messages"][2]["content"] for row in _all_samples(summary)]
    assert sum(answer.strip() == original.answer for answer in answers) == 1


def test_ungrounded_answers_are_dropped_or_flagged(tmp_path: Path) -> None:
    papers_dir, records_path, records = _corpus(tmp_path, 4)
    bad = records[0].model_copy(
        update={
            "additional_qa": [
                QAPair(
                    question="What does SEPT9 methylation predict in colorectal cancer?",
                    answer="Poor survival.",
                    evidence=["SEPT9 methylation predicted poor overall survival in stage III patients."],
                )
            ]
        }
    )
    records_path.write_text(
        "".join(r.model_dump_json() + "\n" for r in [bad, *records[1:]]), encoding="utf-8"
    )
    dropped = build_sft_dataset(
        [records_path], tmp_path / "drop", papers_dir, DatasetConfig(grounding="drop")
    )
    assert dropped.drops.get("ungrounded") == 1
    assert not any("Poor survival." in row["messages"][2]["content"] for row in _all_samples(dropped))
    config = DatasetConfig(grounding="flag", mix={"closed_book": 1.0, "grounded": 0.0})
    flagged = build_sft_dataset([records_path], tmp_path / "flag", papers_dir, config)
    kept = [row for row in _all_samples(flagged) if row["messages"][2]["content"] == "Poor survival."]
    assert len(kept) == 1 and kept[0]["meta"]["flags"] == ["ungrounded"]
    assert flagged.flags.get("ungrounded") == 1
    # A question about 'the study' needs its paper: under 'flag' it is grounded on the paper's opening.
    referential = bad.model_copy(
        update={
            "additional_qa": [
                bad.additional_qa[0].model_copy(update={"question": "What did the study find?"})
            ]
        }
    )
    records_path.write_text(
        "".join(r.model_dump_json() + "\n" for r in [referential, *records[1:]]), encoding="utf-8"
    )
    grounded = build_sft_dataset(
        [records_path], tmp_path / "flag2", papers_dir, DatasetConfig(grounding="flag")
    )
    row = next(row for row in _all_samples(grounded) if row["messages"][2]["content"] == "Poor survival.")
    assert row["meta"]["style"] == "grounded" and row["meta"]["flags"] == ["ungrounded"]
    assert "Title: SEPT9 study 0" in row["messages"][1]["content"]


def test_missing_paper_files_are_counted_and_named(tmp_path: Path) -> None:
    papers_dir, records_path, _ = _corpus(tmp_path, 5)
    (papers_dir / "p3.txt").unlink()
    summary = build_sft_dataset([records_path], tmp_path / "out", papers_dir)
    assert summary.paper_status == {"missing": 1, "ok": 4}
    assert summary.missing_papers[0].startswith("p3: missing")
    assert summary.drops.get("paper_missing", 0) >= 3
    assert all(row["meta"]["file_id"] != "p3" for row in _all_samples(summary))
    assert "p3: missing" in Path(summary.card).read_text(encoding="utf-8")
    # Under 'flag', the paper's self-contained Q&A survive as closed-book samples, flagged.
    flagged = build_sft_dataset(
        [records_path], tmp_path / "flag", papers_dir, DatasetConfig(grounding="flag")
    )
    p3 = [row for row in _all_samples(flagged) if row["meta"]["file_id"] == "p3"]
    assert p3 and all(row["meta"]["style"] == "closed_book" for row in p3)
    assert all("grounding_unchecked" in row["meta"]["flags"] for row in p3)


def test_a_changed_paper_is_flagged_and_checked_against_its_current_text(tmp_path: Path) -> None:
    papers_dir, records_path, _ = _corpus(tmp_path, 3)
    path = papers_dir / "p1.txt"
    path.write_text(path.read_text(encoding="utf-8") + "\nAn added sentence.", encoding="utf-8")
    summary = build_sft_dataset([records_path], tmp_path / "out", papers_dir)
    assert summary.paper_status == {"changed": 1, "ok": 2}
    rows = [row for row in _all_samples(summary) if row["meta"]["file_id"] == "p1"]
    assert rows and all("paper_changed" in row["meta"]["flags"] for row in rows)


def test_over_long_samples_are_dropped_or_truncated(tmp_path: Path) -> None:
    papers_dir, records_path = write_synthetic_corpus(tmp_path, 12, seed=2, filler_sentences=8)
    base = {
        "max_length": 300,
        "system_prompt": "",
        "mix": {"closed_book": 1.0, "grounded": 1.0, "extraction": 0.0},
    }
    dropped = build_sft_dataset([records_path], tmp_path / "drop", papers_dir, DatasetConfig(**base))
    truncated = build_sft_dataset(
        [records_path], tmp_path / "trunc", papers_dir, DatasetConfig(**base, length_policy="truncate")
    )
    assert dropped.drops.get("too_long", 0) > 0
    assert truncated.drops.get("too_long", 0) < dropped.drops["too_long"]
    assert truncated.total_samples > dropped.total_samples
    assert truncated.flags.get("truncated", 0) > 0
    for row in _all_samples(truncated):
        assert row["meta"]["tokens"] <= 300
        if "truncated" in row["meta"]["flags"]:
            assert [message["role"] for message in row["messages"]] == ["user", "assistant"]
            user = row["messages"][0]["content"]
            assert user.startswith("Excerpt from a research paper:") and "[...]" in user
    assert all(row["meta"]["tokens"] <= 300 for row in _all_samples(dropped))


def test_not_reported_answers_are_capped(tmp_path: Path) -> None:
    papers_dir, records_path, _ = _corpus(tmp_path, 10)
    none = build_sft_dataset(
        [records_path], tmp_path / "none", papers_dir, DatasetConfig(not_reported_share=0)
    )
    assert not any(row["messages"][2]["content"].startswith("Not reported") for row in _all_samples(none))
    assert none.drops["not_reported"] == 10
    some = build_sft_dataset(
        [records_path], tmp_path / "some", papers_dir, DatasetConfig(not_reported_share=0.2)
    )
    kept = [row for row in _all_samples(some) if row["messages"][2]["content"].startswith("Not reported")]
    grounded = [row for row in _all_samples(some) if row["meta"]["style"] == "grounded"]
    assert 0 < len(kept) <= 0.2 * len(grounded) + 1
    assert all(row["meta"]["style"] == "grounded" for row in kept)


# --- bad input and atomicity ---------------------------------------------------------------------


def test_zero_usable_samples_stops_before_writing(tmp_path: Path) -> None:
    _, records_path, _ = _corpus(tmp_path, 3)
    with pytest.raises(EmptyDatasetError, match=r"no usable samples.*paper_no_directory.*papers_directory"):
        build_sft_dataset([records_path], tmp_path / "out", papers_directory=None)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no staging left behind


def test_an_existing_dataset_is_replaced_whole_and_other_folders_refused(tmp_path: Path) -> None:
    papers_dir, records_path, _ = _corpus(tmp_path, 6)
    output = tmp_path / "out"
    build_sft_dataset([records_path], output, papers_dir)
    (output / "stale.txt").write_text("from an older build", encoding="utf-8")
    build_sft_dataset([records_path], output, papers_dir, DatasetConfig(seed=99))
    assert not (output / "stale.txt").exists() and (output / MARKER_FILE).exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(OutputDirectoryError, match="not a dataset written by methyl-distill"):
        build_sft_dataset([records_path], foreign, papers_dir)
    assert (foreign / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_a_failure_while_writing_leaves_the_previous_dataset_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import methyl_distill.sft_dataset.build as build_module

    papers_dir, records_path, _ = _corpus(tmp_path, 6)
    output = tmp_path / "out"
    first = build_sft_dataset([records_path], output, papers_dir)
    before = {path.name: path.read_bytes() for path in output.iterdir() if path.is_file()}

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(build_module, "write_dataset_dict", broken)
    with pytest.raises(OSError, match="disk full"):
        build_sft_dataset([records_path], output, papers_dir, DatasetConfig(seed=5))
    after = {path.name: path.read_bytes() for path in output.iterdir() if path.is_file()}
    assert after == before and first.files_exist()
    assert [p.name for p in tmp_path.iterdir() if "staging" in p.name] == []


def test_a_dataset_is_swapped_in_whole_and_killed_builds_leave_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import subprocess

    from methyl_distill.sft_dataset import dataset_writer

    papers_dir, records_path, _ = _corpus(tmp_path, 6)
    output = tmp_path / "out"
    first = build_sft_dataset([records_path], output, papers_dir)
    # Leftovers of builds killed mid-way: one whose owner is gone, one without an owner file, and
    # one of a build still running (its pid alive): only that one is kept.
    gone_owner = tmp_path / ".out.staging-dead"
    gone_owner.mkdir()
    (gone_owner / ".owner-pid").write_text("2147480000", encoding="utf-8")  # above any pid_max
    (tmp_path / ".out.old-1a2b3c4d").mkdir()
    running = subprocess.Popen(["sleep", "30"])
    try:
        live = tmp_path / ".out.staging-live"
        live.mkdir()
        (live / ".owner-pid").write_text(str(running.pid), encoding="utf-8")

        renames: list[tuple[str, str]] = []
        real_rename = os.rename
        monkeypatch.setattr(
            dataset_writer.os, "rename", lambda a, b: (renames.append((str(a), str(b))), real_rename(a, b))[1]
        )
        second = build_sft_dataset([records_path], output, papers_dir, DatasetConfig(seed=99))
        assert renames == []  # swapped in one step (RENAME_EXCHANGE), never a moment with no folder
        assert second.files_exist() and not first.files_exist()  # the first summary's files were replaced
        siblings = sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".out."))
        assert siblings == [".out.staging-live"]
        assert not (output / ".owner-pid").exists()
    finally:
        running.kill()
        running.wait()


def test_a_summary_whose_split_files_were_rewritten_is_stale(tmp_path: Path) -> None:
    papers_dir, records_path, _ = _corpus(tmp_path, 6)
    summary = build_sft_dataset([records_path], tmp_path / "out", papers_dir)
    assert summary.files_exist() and set(summary.split_sha256) == {
        summary.train_jsonl,
        summary.val_jsonl,
        summary.test_jsonl,
    }
    with Path(summary.val_jsonl).open("a", encoding="utf-8") as handle:
        handle.write('{"messages": []}\n')
    assert not summary.files_exist()


# --- configuration and CLI -----------------------------------------------------------------------


def test_every_shipped_dataset_config_loads(tmp_path: Path) -> None:
    shipped = sorted((REPO / "methyl_distill" / "sft_dataset").glob("dataset*.toml"))
    assert shipped, "methyl_distill/sft_dataset/dataset.toml is missing"
    for path in shipped:
        DatasetConfig.from_toml(path)
    assert (
        DatasetConfig.from_toml(REPO / "methyl_distill" / "sft_dataset" / "dataset.toml") == DatasetConfig()
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("max_lenght = 10", "max_lenght"),
        ("grounding = 'maybe'", "grounding"),
        ("val_fraction = 0.6\ntest_fraction = 0.5", "val_fraction \\+ test_fraction"),
        ("grounded_template = 'no placeholders'", "grounded_template lacks"),
        ("push_to_hub = true", "push_to_hub: publishing is no longer part of the dataset configuration"),
        ("[mix]\nclosed_book = 0\ngrounded = 0\nextraction = 0", "selects nothing"),
        ("max_length = ", "not valid TOML"),
    ],
)
def test_bad_config_files_are_clear_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "dataset.toml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetConfigError, match=message) as raised:
        DatasetConfig.from_toml(path)
    assert str(path) in str(raised.value)


def test_cli_builds_without_prefect_and_flags_override_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from methyl_distill.cli import dataset as dataset_cli

    papers_dir, records_path, _ = _corpus(tmp_path, 8)
    config = tmp_path / "dataset.toml"
    config.write_text("seed = 3\nmax_length = 4000\n", encoding="utf-8")
    parser = argparse.ArgumentParser()
    dataset_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "build-dataset",
            "--records",
            str(records_path),
            "--output_directory",
            str(tmp_path / "out"),
            "--papers_directory",
            str(papers_dir),
            "--config",
            str(config),
            "--max_length",
            "1024",
            "--without_prefect",
        ]
    )
    assert args.handler(args) == 0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text(encoding="utf-8"))
    assert stats["config"]["seed"] == 3 and stats["config"]["max_length"] == 1024
    assert "samples" in capsys.readouterr().out


def test_synthetic_corpus_builds(tmp_path: Path) -> None:
    papers_dir, records_path = write_synthetic_corpus(tmp_path, 30, seed=1, filler_sentences=4)
    summary = build_sft_dataset([records_path], tmp_path / "out", papers_dir)
    assert summary.paper_status == {"ok": 30}
    assert summary.drops.get("ungrounded", 0) == 0 and summary.drops.get("no_evidence", 0) == 0
    assert summary.total_samples >= 90


def test_parallel_workers_build_the_same_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import methyl_distill.sft_dataset.build as build_module

    papers_dir, records_path = write_synthetic_corpus(tmp_path, 24, seed=6)
    serial = build_sft_dataset([records_path], tmp_path / "serial", papers_dir, DatasetConfig(workers=1))
    monkeypatch.setattr(build_module, "_SHARD_PAPERS", 5)  # 5 shards over 2 spawned processes
    parallel = build_sft_dataset([records_path], tmp_path / "parallel", papers_dir, DatasetConfig(workers=2))
    for name in ("train_jsonl", "val_jsonl", "test_jsonl"):
        assert Path(getattr(serial, name)).read_bytes() == Path(getattr(parallel, name)).read_bytes()
    assert serial.drops == parallel.drops and serial.paper_status == parallel.paper_status


def test_a_corrupt_record_in_a_worker_fails_the_build_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import methyl_distill.sft_dataset.build as build_module

    papers_dir, records_path = write_synthetic_corpus(tmp_path, 12, seed=7)
    lines = records_path.read_text(encoding="utf-8").splitlines()
    broken = json.loads(lines[9])
    broken["markers"] = [{"marker": "no other fields"}]  # a valid header, an invalid body
    lines[9] = json.dumps(broken)
    records_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setattr(build_module, "_SHARD_PAPERS", 4)
    config = DatasetConfig(workers=2, corrupt_lines="fail")
    with pytest.raises(RecordsFileError, match=r"records\.jsonl:10: not a valid PaperRecord: markers"):
        build_sft_dataset([records_path], tmp_path / "out", papers_dir, config)
    assert not (tmp_path / "out").exists()
    assert not [path for path in tmp_path.iterdir() if "staging" in path.name]
    skipped = build_sft_dataset([records_path], tmp_path / "out", papers_dir, DatasetConfig(workers=2))
    assert skipped.papers == 11 and len(skipped.corrupt_lines) == 1


def test_source_paths_may_not_leave_the_papers_directory(tmp_path: Path) -> None:
    from methyl_distill.sft_dataset.paper_text import PaperLibrary

    papers = tmp_path / "papers"
    papers.mkdir()
    (tmp_path / "secret.txt").write_text("not a paper", encoding="utf-8")
    (papers / "a.txt").write_text("A paper about MGMT.", encoding="utf-8")
    library = PaperLibrary(papers)
    assert library.load(["../secret.txt"], "sha").status == "outside_directory"
    assert library.load(["a.txt"], "sha").status == "changed"  # found, but not the recorded content
    assert library.load(["b.txt"], "sha").status == "missing"
    assert PaperLibrary(None).load(["a.txt"], "sha").status == "no_directory"
    with pytest.raises(FileNotFoundError, match="papers directory not found"):
        PaperLibrary(tmp_path / "absent")
