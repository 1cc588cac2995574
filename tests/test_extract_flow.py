"""The extraction flow end to end: real HTTP to the project's OpenAI-compatible test server, the real
openai SDK, the real token bucket, Prefect caching under the session's test harness."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from methyl_distill.flows.extract import ExtractionSummary, extract_flow

from methyl_distill.extraction.papers import file_id_of
from methyl_distill.extraction.records import FailureRecord, PaperRecord
from methyl_distill.teacher.config import TeacherConfig
from tests.fake_openai.server import OpenAITestServerConfig, ServerHandle, running_test_server

pytestmark = [pytest.mark.flow, pytest.mark.usefixtures("prefect_harness")]

SAMPLE_PAPERS = Path(__file__).resolve().parent.parent / "data" / "papers"
API_KEY = "sk-test-SENTINEL-key-7f3a9c"  # must never reach the cache or the outputs
FAIL_MARKER = "PAPER-THAT-ALWAYS-FAILS"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerHandle]:
    config = OpenAITestServerConfig(
        tokens_per_minute=200_000, latency_s=(0.0, 0.02), retry_after_s=0.05, slow_s=0.3
    )
    # The key is the one setting that comes from the environment: it is never a parameter.
    with pytest.MonkeyPatch.context() as patch, running_test_server(config) as handle:
        patch.setenv("OPENAI_API_KEY", API_KEY)
        yield handle


def _teacher(server: ServerHandle, **settings: object) -> TeacherConfig:
    """The teacher, handed to the flow explicitly: the test server, fast retries."""
    values: dict[str, object] = {"base_url": server.base_url, "max_retries": 6, "retry_max_wait_s": 0.2}
    return TeacherConfig.model_validate({"max_reasks": 1, **values, **settings})


def _run(
    server: ServerHandle,
    input_directory: Path,
    tmp_path: Path,
    teacher: dict[str, object] | None = None,
    **options: object,
) -> ExtractionSummary:
    return extract_flow(
        input_directory=str(input_directory),
        output_directory=str(tmp_path / "out"),
        teacher_config=_teacher(server, **(teacher or {})),
        cache_dir=str(tmp_path / "cache"),
        max_concurrency=4,
        **options,  # type: ignore[arg-type]
    )


def _records(summary: ExtractionSummary) -> list[PaperRecord]:
    lines = Path(summary.records_path).read_text(encoding="utf-8").splitlines()
    return [PaperRecord.model_validate_json(line) for line in lines]


def _failures(summary: ExtractionSummary) -> list[FailureRecord]:
    lines = Path(summary.failures_path).read_text(encoding="utf-8").splitlines()
    return [FailureRecord.model_validate_json(line) for line in lines]


def _files_contain(folder: Path, needle: str) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file() and needle.encode() in path.read_bytes()]


def _latest_artifact_data(key: str) -> object:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    return json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data


def _prefect_database() -> Path:
    from prefect.settings import get_current_settings

    url = get_current_settings().server.database.connection_url
    assert url is not None
    text = url.get_secret_value()
    assert text.startswith("sqlite"), text
    return Path(text.split(":///", 1)[1])


def _copy_papers(target: Path, names: list[str]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(SAMPLE_PAPERS / name, target / name)


def test_extract_cache_rerun_changes_refresh_and_bad_inputs(server: ServerHandle, tmp_path: Path) -> None:
    papers = tmp_path / "papers"
    _copy_papers(papers, ["mgmt_glioblastoma_temozolomide.txt", "gstp1_prostate_cancer.txt"])
    (papers / "nested").mkdir()
    shutil.copy(SAMPLE_PAPERS / "gstp1_prostate_cancer.txt", papers / "nested" / "gstp1 copy.md")
    (papers / "empty.txt").write_bytes(b"")
    (papers / "figure.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (papers / "noise.md").write_bytes(bytes(range(128, 256)) * 40)  # no encoding explains it

    first = _run(server, papers, tmp_path)
    requests_after_first = server.stats().requests
    assert (first.papers, first.extracted, first.cached, first.failed) == (2, 2, 0, 0)
    assert (first.files_found, first.rejected, first.duplicate_files) == (6, 3, 1)
    assert first.usage.requests == 2 and first.usage.prompt_tokens > 0 and first.estimated_cost_usd > 0

    records = {record.file_id: record for record in _records(first)}
    assert set(records) == {"gstp1-prostate-cancer-txt", "mgmt-glioblastoma-temozolomide-txt"}
    gstp1 = records["gstp1-prostate-cancer-txt"]
    assert gstp1.file_ids == ["gstp1-prostate-cancer-txt", file_id_of("nested/gstp1 copy.md")]
    assert gstp1.source_paths == ["gstp1_prostate_cancer.txt", "nested/gstp1 copy.md"]
    assert any(marker.gene == "GSTP1" for marker in gstp1.markers)
    assert all(
        quote in (papers / "gstp1_prostate_cancer.txt").read_text()
        for a in gstp1.answers
        for quote in a.evidence
    )
    failures = {failure.source_path: failure for failure in _failures(first)}
    assert set(failures) == {"empty.txt", "figure.txt", "noise.md"}
    assert all(failure.stage == "read" for failure in failures.values())
    assert failures["empty.txt"].reason == "empty file"
    assert failures["noise.md"].reason.startswith("not text in any known encoding")
    assert failures["figure.txt"].reason.startswith("image file (.txt): no text to read")

    entries = json.loads(Path(first.all_results_path).read_text(encoding="utf-8"))
    assert [entry["file_id"] for entry in entries] == [
        "gstp1-prostate-cancer-txt",
        "mgmt-glioblastoma-temozolomide-txt",
        file_id_of("nested/gstp1 copy.md"),
    ]
    assert len(entries[0]["input_questions"]) == len(entries[0]["generated_answers"]) == len(gstp1.answers)
    processed = sorted(path.name for path in Path(first.processed_files_dir).iterdir())
    assert processed == [f"{entry['file_id']}.txt" for entry in entries]
    copy_id = file_id_of("nested/gstp1 copy.md")
    readable = (Path(first.processed_files_dir) / f"{copy_id}.txt").read_text(encoding="utf-8")
    assert readable.count("Question: ") >= len(gstp1.answers) and "Answer: " in readable

    # The run shows a per-paper table and a finished progress bar in the Prefect UI.
    table = _latest_artifact_data("extraction-papers")
    assert isinstance(table, list)
    statuses = {row["file_id"]: row["status"] for row in table}
    assert statuses["gstp1-prostate-cancer-txt"] == "extracted" and statuses["empty-txt"] == "rejected"
    assert all(row["prompt_tokens"] > 0 for row in table if row["status"] == "extracted")
    assert _latest_artifact_data("extraction-progress") == 100.0

    # Rerun: zero teacher calls, everything from the cache.
    second = _run(server, papers, tmp_path)
    assert server.stats().requests == requests_after_first
    assert (second.extracted, second.cached, second.usage.requests) == (0, 2, 0)
    assert {record.file_id for record in _records(second)} == set(records)

    # A changed paper and an added one are extracted alone.
    mgmt = papers / "mgmt_glioblastoma_temozolomide.txt"
    mgmt.write_text(mgmt.read_text(encoding="utf-8") + "\nA sentence added in revision.\n", encoding="utf-8")
    _copy_papers(papers, ["sept9_plasma_colorectal_screening.txt"])
    third = _run(server, papers, tmp_path)
    assert (third.extracted, third.cached) == (2, 1)
    assert server.stats().requests == requests_after_first + 2

    # Refresh re-extracts everything.
    fourth = _run(server, papers, tmp_path, refresh=True)
    assert (fourth.extracted, fourth.cached) == (3, 0)
    assert server.stats().requests == requests_after_first + 5

    # A renamed file is served from the cache under its new name.
    (papers / "gstp1_prostate_cancer.txt").rename(papers / "GSTP1 renamed.txt")
    fifth = _run(server, papers, tmp_path)
    assert (fifth.extracted, fifth.cached) == (0, 3)
    renamed = next(record for record in _records(fifth) if "GSTP1 renamed.txt" in record.source_paths)
    assert renamed.file_ids == [file_id_of("GSTP1 renamed.txt"), file_id_of("nested/gstp1 copy.md")]
    assert (Path(fifth.processed_files_dir) / f"{file_id_of('GSTP1 renamed.txt')}.txt").exists()

    # The API key is nowhere on disk (cache, outputs, Prefect's database); no temporary files are left behind.
    assert _files_contain(tmp_path / "cache", API_KEY) == []
    assert _files_contain(tmp_path / "out", API_KEY) == []
    database = _prefect_database()
    assert database.exists()
    for path in database.parent.glob(database.name + "*"):  # the database and its WAL
        assert API_KEY.encode() not in path.read_bytes()
    assert [path for path in (tmp_path / "out").rglob("*.tmp")] == []


def _write_failing_paper(path: Path) -> None:
    """A sample paper with the marker the test server's injected `invalid_json` fault answers."""
    text = (SAMPLE_PAPERS / "rassf1a_breast_cancer_serum.txt").read_text(encoding="utf-8")
    path.write_text(f"{text}\n{FAIL_MARKER}\n", encoding="utf-8")


def test_failures_are_reported_and_not_cached(server: ServerHandle, tmp_path: Path) -> None:
    papers = tmp_path / "papers"
    _copy_papers(papers, ["shox2_ptger4_lung_cancer.txt"])
    _write_failing_paper(papers / "broken.txt")
    shutil.copy(papers / "broken.txt", papers / "broken copy.md")  # the same paper in a second file
    server.inject("invalid_json", marker=FAIL_MARKER)
    try:
        first = _run(server, papers, tmp_path)
        assert (first.extracted, first.failed) == (1, 1)
        failure, copy = _failures(first)  # every file that holds the failed paper is listed
        assert failure.file_id == file_id_of("broken copy.md") and failure.stage == "validate"
        assert "invalid" in failure.reason.lower() and failure.raw_output
        assert failure.usage.requests == 2  # the first answer and one re-ask
        assert (copy.file_id, copy.source_path, copy.stage) == ("broken-txt", "broken.txt", "validate")
        assert copy.reason.endswith("(same content as broken copy.md)") and copy.usage.requests == 0

        before = server.stats().requests
        second = _run(server, papers, tmp_path)
        assert (second.cached, second.failed) == (1, 1)  # the failure was retried, not served from cache
        assert server.stats().requests == before + 2
    finally:
        server.clear_faults()
    third = _run(server, papers, tmp_path)
    assert (third.extracted, third.cached, third.failed) == (1, 1, 0)
    assert _failures(third) == []


def _nowhere_on_disk(needles: list[str], *folders: Path) -> None:
    """None of `needles` in any file under `folders` or in Prefect's database (and its WAL)."""
    database = _prefect_database()
    stored = [*database.parent.glob(database.name + "*"), *(p for f in folders for p in f.rglob("*"))]
    for path in stored:
        if path.is_file():
            content = path.read_bytes()
            assert [needle for needle in needles if needle.encode() in content] == [], path


def test_endpoint_credentials_are_used_but_shown_and_stored_nowhere(
    server: ServerHandle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """OPENAI_BASE_URL with user:password and ?api-key=: requests work, and neither the credentials
    nor the key reach logs, the summary, the outputs, the cache or Prefect's database (the
    configuration is a stored flow parameter); a failed paper leaves no exception file in the cache."""
    caplog.set_level(logging.INFO)
    secrets = ["USER-SENTINEL-31", "PASS-SENTINEL-59", "QUERY-SENTINEL-26"]
    host = server.base_url.split("://", 1)[1]
    base_url = f"http://{secrets[0]}:{secrets[1]}@{host}?api-key={secrets[2]}&api-version=1"
    papers = tmp_path / "papers"
    _copy_papers(papers, ["shox2_ptger4_lung_cancer.txt"])
    _write_failing_paper(papers / "broken.txt")
    server.inject("invalid_json", marker=FAIL_MARKER)
    try:
        summary = _run(server, papers, tmp_path, {"base_url": base_url})
    finally:
        server.clear_faults()
    assert (summary.extracted, summary.failed) == (1, 1)  # the URL's query did not break the requests
    assert [path.name for path in (tmp_path / "cache").iterdir()] != []
    # One cache file: the record. The failed paper's exception, which Prefect persists, is gone.
    cached = [path for path in (tmp_path / "cache").rglob("*") if path.is_file()]
    assert len(cached) == 1 and b"PaperExtractionFailed" not in cached[0].read_bytes()
    assert "***" in caplog.text and "api-version=1" in caplog.text  # the endpoint is shown, redacted
    for secret in secrets:
        assert secret not in caplog.text and secret not in summary.model_dump_json()
    _nowhere_on_disk(secrets, tmp_path / "out", tmp_path / "cache")


def test_a_secret_block_key_is_redacted_in_failure_texts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The key comes from a Prefect Secret block; the server refuses it with a 401 that quotes it."""
    from prefect.blocks.system import Secret

    block_key = "sk-block-SENTINEL-key-4410"
    Secret(value=block_key).save("methyl-distill-test-teacher-key", overwrite=True)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    papers = tmp_path / "papers"
    _copy_papers(papers, ["shox2_ptger4_lung_cancer.txt"])
    wants_another_key = OpenAITestServerConfig(api_key="sk-the-right-one", latency_s=(0.0, 0.01))
    with running_test_server(wants_another_key) as other:
        summary = _run(other, papers, tmp_path, {"api_key_secret_block": "methyl-distill-test-teacher-key"})
    assert summary.failed == 1
    (failure,) = _failures(summary)
    assert "401" in failure.reason and "***" in failure.reason and block_key not in failure.reason
    assert block_key not in caplog.text
    _nowhere_on_disk([block_key], tmp_path / "out", tmp_path / "cache")


def test_under_injected_faults_every_paper_ends_extracted_or_failed(
    server: ServerHandle, tmp_path: Path
) -> None:
    papers = tmp_path / "papers"
    _copy_papers(papers, sorted(path.name for path in SAMPLE_PAPERS.glob("*.txt")))
    for kind, probability in [
        ("rate_limit", 0.25),
        ("service_unavailable", 0.1),
        ("server_error", 0.1),
        ("drop_connection", 0.1),
        ("slow", 0.05),
        ("invalid_json", 0.15),
        ("truncated", 0.1),
        ("empty_content", 0.1),
    ]:
        server.inject(kind, probability=probability)  # type: ignore[arg-type]
    try:
        first = _run(server, papers, tmp_path)
    finally:
        server.clear_faults()
    extracted = {record.file_id for record in _records(first)}
    failed = {failure.file_id: failure for failure in _failures(first)}
    assert len(extracted) + len(failed) == 8 and not extracted & set(failed)
    assert extracted, "with bounded faults and retries, most papers must get through"
    assert all(
        failure.reason and failure.stage in {"request", "validate", "chunk"} for failure in failed.values()
    )
    assert sum(server.stats().faults.values()) > 0

    second = _run(server, papers, tmp_path)
    assert second.cached == len(extracted)  # nothing extracted twice
    assert second.extracted == len(failed) and second.failed == 0


def test_long_papers_are_chunked_and_refused_requests_split_further(tmp_path: Path) -> None:
    papers = tmp_path / "papers"
    papers.mkdir()
    texts = [path.read_text(encoding="utf-8") for path in sorted(SAMPLE_PAPERS.glob("*.txt"))]
    (papers / "review.txt").write_text("\n\n".join(texts), encoding="utf-8")  # ~4000 words
    (papers / "chunked.txt").write_text("\n\n".join(texts[:3]), encoding="utf-8")
    # The client believes in a 128k context; the server allows 9000 tokens and refuses the whole review.
    small_context = OpenAITestServerConfig(context_tokens=9000, latency_s=(0.0, 0.01))
    with pytest.MonkeyPatch.context() as patch, running_test_server(small_context) as server:
        patch.setenv("OPENAI_API_KEY", API_KEY)
        summary = _run(server, papers, tmp_path, {"max_output_tokens": 4000}, max_chunk_tokens=1200)
        refused = server.stats().responses_by_status.get("400", 0)
    assert (summary.extracted, summary.failed) == (2, 0)
    records = {record.file_id: record for record in _records(summary)}
    assert records["chunked-txt"].chunks >= 2
    review = records["review-txt"]
    assert review.chunks > records["chunked-txt"].chunks and refused == 0  # pre-chunked: nothing refused
    genes = {marker.gene for marker in review.markers}
    assert {"MGMT", "SEPT9", "GSTP1", "NDRG4"} <= genes  # markers of every part survive the merge
    text = (papers / "review.txt").read_text(encoding="utf-8")
    assert all(quote in text for answer in review.answers for quote in answer.evidence)

    # Without the client-side chunk limit, the server refuses the whole review and it is split further.
    with pytest.MonkeyPatch.context() as patch, running_test_server(small_context) as server:
        patch.setenv("OPENAI_API_KEY", API_KEY)
        unchunked = _run(server, papers, tmp_path / "second", {"max_output_tokens": 4000}, refresh=True)
        refused = server.stats().responses_by_status.get("400", 0)
    assert (unchunked.extracted, unchunked.failed) == (2, 0) and refused >= 1
    assert {record.file_id: record.chunks for record in _records(unchunked)}["review-txt"] >= 2


def test_many_papers_are_mapped_in_batches(server: ServerHandle, tmp_path: Path) -> None:
    papers = tmp_path / "papers"
    papers.mkdir()
    for index in range(60):
        (papers / f"paper_{index:03d}.txt").write_text(
            f"Study {index}: SEPT9 promoter hypermethylation was found in {index % 50 + 30}% of samples "
            f"from {index + 40} patients with colorectal cancer by qMSP.",
            encoding="utf-8",
        )
    first = _run(server, papers, tmp_path, batch_size=15)
    assert (first.papers, first.extracted, first.failed) == (60, 60, 0)
    before = server.stats().requests
    second = _run(server, papers, tmp_path, batch_size=15)
    assert (second.cached, second.extracted) == (60, 0) and server.stats().requests == before
    assert len(_records(second)) == 60


def test_prefect_global_concurrency_limit_is_the_shared_bucket(server: ServerHandle, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client

    papers = tmp_path / "papers"
    _copy_papers(papers, ["cdkn2a_p16_head_neck.txt", "stool_dna_ndrg4_bmp3_panel.txt"])
    shared = {"bucket_backend": "prefect", "bucket_limit_name": "extract-flow-test-tpm", "tpm": 150_000}
    summary = _run(server, papers, tmp_path, shared)
    assert (summary.extracted, summary.failed) == (2, 0)
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name("extract-flow-test-tpm")
    assert limit.limit == 150_000 and limit.slot_decay_per_second == pytest.approx(150_000 / 60)


def test_cli_accepts_and_ignores_progress_file(
    server: ServerHandle, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    from methyl_distill.cli.extract import register

    parser = argparse.ArgumentParser(prog="methyl-distill")
    register(parser.add_subparsers(dest="command", required=True))

    papers = tmp_path / "papers"
    _copy_papers(papers, ["mlh1_colorectal_msi_lynch.txt"])
    progress_file = tmp_path / "progress.json"
    with caplog.at_level(logging.WARNING, logger="methyl_distill.cli.extract"):
        args = parser.parse_args(
            [
                "extract",
                "--input_directory",
                str(papers),
                "--output_directory",
                str(tmp_path / "out"),
                "--progress_file",
                str(progress_file),
                "--teacher_base_url",
                server.base_url,
                "--cache_dir",
                str(tmp_path / "cache"),
                "--max_concurrency",
                "2",
            ]
        )
        code = args.handler(args)
    assert code == 0
    assert any("--progress_file is ignored" in record.getMessage() for record in caplog.records)
    assert not progress_file.exists()
    assert "1 extracted, 0 cached, 0 failed" in capsys.readouterr().out
    assert (tmp_path / "out" / "records.jsonl").read_text(encoding="utf-8").count("\n") == 1


@pytest.mark.integration
def test_rerun_after_kill_9_loses_nothing_and_repeats_no_finished_paper(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    papers = tmp_path / "papers"
    _copy_papers(papers, sorted(path.name for path in SAMPLE_PAPERS.glob("*.txt")))
    cache = tmp_path / "cache"
    output = tmp_path / "out"
    slow = OpenAITestServerConfig(latency_s=(0.4, 0.6), seed=7)
    with running_test_server(slow) as server:
        env = {
            **os.environ,
            "PREFECT_API_URL": str(PREFECT_API_URL.value()),  # the session's test harness
            "OPENAI_API_KEY": API_KEY,
        }
        script = (
            "from methyl_distill.flows.extract import extract_flow\n"
            f"extract_flow({str(papers)!r}, {str(output)!r}, teacher_base_url={server.base_url!r},"
            f" cache_dir={str(cache)!r}, max_concurrency=1)\n"
        )
        process = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=Path(__file__).parent.parent)
        try:
            deadline = time.monotonic() + 120
            records_file = output / "records.jsonl"
            # The aggregate files follow the run: the kill comes once two papers show in records.jsonl.
            while not records_file.exists() or len(records_file.read_text(encoding="utf-8").splitlines()) < 2:
                assert process.poll() is None, "the flow ended before it could be killed"
                assert time.monotonic() < deadline, "records.jsonl did not show 2 papers within 2 minutes"
                time.sleep(0.05)
            process.send_signal(signal.SIGKILL)
        finally:
            process.wait(timeout=30)
        finished = len(list(cache.glob("extract-*")))
        assert 2 <= finished < 8
        # Whatever the killed run had written is whole, and shows what it finished.
        for written in (output / "processed_files").glob("*.txt"):
            assert written.read_text(encoding="utf-8").startswith("# ")
        shown = [
            PaperRecord.model_validate_json(line) for line in records_file.read_text("utf-8").splitlines()
        ]
        assert 2 <= len(shown) <= finished
        all_results = json.loads((output / "all_results.json").read_text(encoding="utf-8"))
        assert {entry["file_id"] for entry in all_results} == {record.file_id for record in shown}
        requests_before = server.stats().requests

        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("OPENAI_API_KEY", API_KEY)
            summary = extract_flow(
                str(papers),
                str(output),
                teacher_base_url=server.base_url,
                cache_dir=str(cache),
                max_concurrency=4,
            )
        assert summary.cached >= finished and summary.cached + summary.extracted == 8 and summary.failed == 0
        assert server.stats().requests - requests_before == summary.extracted
        assert len(_records(summary)) == 8
        assert list(output.rglob(".*.tmp")) == []


def test_a_mixed_folder_every_format_read_every_bad_file_accounted_for(
    server: ServerHandle, tmp_path: Path
) -> None:
    from tests.pdf_fixtures import encrypted_paper, image_only_paper, truncated_paper

    fixtures = Path(__file__).resolve().parent / "fixtures" / "papers"
    papers = tmp_path / "papers"
    _copy_papers(
        papers,
        ["sdc2_stool_colorectal_adenoma.pdf", "pax1_cervical_screening.xml", "gstp1_prostate_cancer.txt"],
    )
    shutil.copy(fixtures / "publisher_article_page.html", papers / "saved page.html")
    (papers / "scanned.pdf").write_bytes(image_only_paper())
    (papers / "locked.pdf").write_bytes(encrypted_paper())
    (papers / "cut.pdf").write_bytes(truncated_paper())
    (papers / "manuscript.docx").write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    shutil.copy(fixtures / "not_an_article_pom.xml", papers / "pom.xml")
    shutil.copy(fixtures / "navigation_only_page.html", papers / "nav.html")
    (papers / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")

    summary = _run(server, papers, tmp_path)

    assert (summary.files_found, summary.papers, summary.extracted, summary.rejected) == (10, 4, 4, 6)
    assert summary.files_by_format == {"html": 1, "jats": 1, "pdf": 1, "text": 1}
    assert summary.hidden_skipped == 1
    records = {record.file_id: record for record in _records(summary)}
    pdf = records["sdc2-stool-colorectal-adenoma-pdf"]
    assert (pdf.source.format, pdf.source.pages) == ("pdf", 2)
    assert pdf.source.title and pdf.source.title.startswith("SDC2 promoter hypermethylation in stool DNA")
    jats = records["pax1-cervical-screening-xml"]
    assert (jats.source.format, jats.source.doi) == ("jats", "10.5555/md.sample.0001")
    assert records[file_id_of("saved page.html")].source.format == "html"
    # The teacher did not read the reference lists; the tokens saved are counted per paper and in total.
    assert "References" in pdf.source.omitted_sections and "References" in jats.source.omitted_sections
    assert summary.back_matter_tokens_left_out == sum(r.source.omitted_tokens for r in records.values()) > 300
    # Evidence quotes are grounded in the text the teacher read, whatever the format.
    assert all(marker.evidence for record in records.values() for marker in record.markers)

    reasons = {failure.source_path: failure.reason for failure in _failures(summary)}
    expected_starts = {
        "scanned.pdf": "no text layer: scanned, needs OCR",
        "locked.pdf": "encrypted: password needed",
        "cut.pdf": "corrupt or truncated PDF",
        "manuscript.docx": ".docx files (Word document) are not supported",
        "pom.xml": "XML that is not a journal article (root element <project>)",
        "nav.html": "HTML page with no article text",
    }
    assert set(reasons) == set(expected_starts)
    for name, start in expected_starts.items():
        assert reasons[name].startswith(start), (name, reasons[name])
    assert all(failure.stage == "read" for failure in _failures(summary))

    entries = {
        entry["file_id"]: entry for entry in json.loads(Path(summary.all_results_path).read_text("utf-8"))
    }
    assert entries["pax1-cervical-screening-xml"]["doi"] == "10.5555/md.sample.0001"
    assert entries["sdc2-stool-colorectal-adenoma-pdf"]["format"] == "pdf"
    processed = (Path(summary.processed_files_dir) / "sdc2-stool-colorectal-adenoma-pdf.txt").read_text(
        "utf-8"
    )
    assert "Source: sdc2_stool_colorectal_adenoma.pdf (pdf, 2 pages, read by pdf/1)" in processed
    table = {row["file_id"]: row for row in _latest_artifact_data("extraction-papers")}  # type: ignore[union-attr]
    assert table["scanned-pdf"]["status"] == "rejected" and "OCR" in table["scanned-pdf"]["note"]
    assert table["sdc2-stool-colorectal-adenoma-pdf"]["tokens_left_out"] == pdf.source.omitted_tokens > 0
