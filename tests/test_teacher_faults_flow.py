"""Teacher faults seen from the extraction flow: pages that are no completion, a refused request, an
endpoint without json_schema, an edited question. Real HTTP to the project's test server, the real
openai SDK, Prefect caching under the session's test harness."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from methyl_distill.flows.extract import ExtractionSummary, extract_flow

from methyl_distill.extraction.question_bank import DEFAULT_QUESTION_BANK
from methyl_distill.teacher.config import TeacherConfig, resolve_api_key
from methyl_distill.teacher.openai_client import OpenAITeacher
from tests.fake_openai.server import OpenAITestServerConfig, ServerHandle, running_test_server
from tests.tracked_bucket import TrackedBucket

pytestmark = [pytest.mark.flow, pytest.mark.usefixtures("prefect_harness")]

SAMPLE_PAPERS = Path(__file__).resolve().parent.parent / "data" / "papers"
API_KEY = "sk-test-teacher-faults-key"


@pytest.fixture()
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)  # the key comes from the environment, never a parameter


def _run(server: ServerHandle, papers: Path, tmp_path: Path, **options: object) -> ExtractionSummary:
    teacher = TeacherConfig(base_url=server.base_url, max_retries=8, retry_max_wait_s=0.1, max_reasks=1)
    options.setdefault("max_concurrency", 4)
    return extract_flow(
        input_directory=str(papers),
        output_directory=str(tmp_path / "out"),
        teacher_config=teacher,
        cache_dir=str(tmp_path / "cache"),
        **options,  # type: ignore[arg-type]
    )


def _copy_papers(target: Path, names: list[str]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(SAMPLE_PAPERS / name, target / name)


@pytest.mark.usefixtures("api_key")
def test_a_quarter_of_html_pages_and_a_refused_request_leave_every_request_strict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A quarter of the replies are a proxy's HTML page with status 200, and the first request is
    refused for its content: the pages are retried inside the client, the refused paper fails alone
    and is extracted by the next run, every request is sent in json_schema and every reservation of
    the bucket is settled."""
    import methyl_distill.flows.extract as extract_module

    buckets: list[TrackedBucket] = []

    def build_teacher(config: TeacherConfig, **stopping: Any) -> OpenAITeacher:
        buckets.append(TrackedBucket(config.tpm))
        return OpenAITeacher(config, api_key=resolve_api_key(config), budget=buckets[-1], **stopping)

    monkeypatch.setattr(extract_module, "build_teacher", build_teacher)
    papers = tmp_path / "papers"
    _copy_papers(papers, sorted(path.name for path in SAMPLE_PAPERS.glob("*.txt")))
    config = OpenAITestServerConfig(latency_s=(0.0, 0.02), seed=5)
    with running_test_server(config) as server:
        server.inject("content_rejected", count=1)
        server.inject("html_200", probability=0.25)
        first = _run(server, papers, tmp_path)
        after_first = server.stats()
        second = _run(server, papers, tmp_path)
        stats = server.stats()

    assert (first.extracted, first.failed, first.output_mode) == (7, 1, "json_schema")
    assert (second.cached, second.extracted, second.failed) == (7, 1, 0)  # every paper ends extracted
    assert second.output_mode == "json_schema"
    assert after_first.faults["content_rejected"] == 1 and stats.faults["html_200"] >= 3
    # Every request after the first success (and the refused one before it) was sent in json_schema.
    assert set(after_first.formats_after_first_completion()) == {"json_schema"}
    assert set(stats.response_formats) == {"json_schema"}
    assert len(buckets) == 2 and all(bucket.unsettled() == [] for bucket in buckets)
    assert sum(len(bucket.reservations) for bucket in buckets) == stats.requests


@pytest.mark.usefixtures("api_key")
def test_an_endpoint_without_json_schema_settles_once_and_its_papers_stay_cached(tmp_path: Path) -> None:
    papers = tmp_path / "papers"
    _copy_papers(papers, ["gstp1_prostate_cancer.txt", "mgmt_glioblastoma_temozolomide.txt"])
    with running_test_server(OpenAITestServerConfig(json_schema="rejected_400")) as server:
        first = _run(server, papers, tmp_path, max_concurrency=1)
        formats = server.stats().response_formats
        # The mode is learnt from the first reply, but the key names the configured mode (auto): a
        # rerun, whose papers make no request, finds the same entries.
        second = _run(server, papers, tmp_path)
        requests = server.stats().requests
    assert (first.extracted, first.failed, first.output_mode) == (2, 0, "json_object")
    assert formats == ["json_schema", "json_object", "json_object"]
    assert (second.cached, second.extracted, second.output_mode) == (2, 0, None)
    assert requests == len(formats)


@pytest.mark.usefixtures("api_key")
def test_an_edited_question_is_asked_again_without_a_version_bump(tmp_path: Path) -> None:
    papers = tmp_path / "papers"
    _copy_papers(papers, ["gstp1_prostate_cancer.txt"])
    text = DEFAULT_QUESTION_BANK.read_text(encoding="utf-8")
    original = "Which DNA methylation markers does the study report (genes, CpG sites, regions)?"
    assert original in text
    edited = tmp_path / "bank.toml"  # the same version string, one question reworded
    edited.write_text(text.replace(original, "Which methylation markers are reported?"), encoding="utf-8")
    with running_test_server(OpenAITestServerConfig()) as server:
        bundled = _run(server, papers, tmp_path)
        reworded = _run(server, papers, tmp_path, question_bank=str(edited))
        again = _run(server, papers, tmp_path, question_bank=str(edited))
    assert (bundled.extracted, reworded.extracted, reworded.cached) == (1, 1, 0)
    assert (again.cached, again.extracted) == (1, 0)
