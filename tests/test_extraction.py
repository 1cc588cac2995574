"""The extraction core with a fake teacher that replies from a queue."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from methyl_distill.extraction.chunking import ChunkingConfig
from methyl_distill.extraction.extract import ExtractionConfig, extract_paper, extraction_cache_key
from methyl_distill.extraction.papers import Paper, content_sha256
from methyl_distill.extraction.prompts import NOT_REPORTED, paper_text_in
from methyl_distill.extraction.question_bank import Question, QuestionBank
from methyl_distill.extraction.records import (
    AnswerRecord,
    FailureRecord,
    MarkerPerformance,
    MarkerRecord,
    PaperRecord,
    QAPair,
    TeacherExtraction,
    TokenUsage,
)
from methyl_distill.readers.document import normalise_text
from methyl_distill.teacher.config import TeacherConfig
from methyl_distill.teacher.grammar import GrammarLimits
from methyl_distill.teacher.llama_cpp_server import embedded_teacher_config
from methyl_distill.teacher.protocol import (
    TRUNCATED_OUTPUT,
    ChatMessage,
    ModelT,
    RequestTooLargeError,
    TeacherError,
    TeacherReply,
)
from methyl_distill.teacher.structured_output import MODES

Reply = TeacherExtraction | TeacherReply[Any] | Exception | Callable[[str], TeacherExtraction]

SAMPLE_PAPERS = Path(__file__).resolve().parent.parent / "data" / "papers"

BANK = QuestionBank(
    version="test-1",
    questions=(
        Question(id="markers", text="Which methylation markers are reported?"),
        Question(id="assays", text="Which assays measured methylation?"),
        Question(id="auc", text="What AUC is reported?"),
    ),
)


class QueuedTeacher:
    """Answers each request with the next queued reply; records the paper text it was sent."""

    model = "fake-teacher"

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = list(replies)
        self.papers_seen: list[str] = []

    def complete_structured(
        self,
        messages: list[ChatMessage],
        response_model: type[ModelT],
        *,
        max_tokens: int,
        source_text: str | None = None,
    ) -> TeacherReply[ModelT]:
        # The chunk is handed over as it is, and it is the text the prompt asks about.
        assert source_text is not None and paper_text_in(messages) == source_text
        paper = source_text
        self.papers_seen.append(paper)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        if callable(reply) and not isinstance(reply, TeacherExtraction):
            reply = reply(paper)
        if isinstance(reply, TeacherReply):
            return reply
        usage = TokenUsage(prompt_tokens=1000, completion_tokens=200, requests=1)
        return TeacherReply(parsed=reply, raw_text=reply.model_dump_json(), usage=usage)  # type: ignore[arg-type]


def _paper(text: str) -> Paper:
    text = normalise_text(text)
    return Paper(
        file_id="p1",
        file_ids=("p1", "p1-copy"),
        source_paths=("p1.txt", "copy/p1.txt"),
        content_sha256=content_sha256(text),
        text=text,
    )


def _marker(**changes: Any) -> MarkerRecord:
    fields: dict[str, Any] = {
        "marker": "MGMT promoter",
        "gene": "MGMT",
        "cpg_sites": [],
        "region": "promoter",
        "direction": "hypermethylated",
        "condition": "glioblastoma",
        "sample_types": ["FFPE tumour tissue"],
        "assays": ["MSP"],
        "clinical_uses": ["prognosis"],
        "performance": MarkerPerformance(
            sensitivity=None, specificity=None, auc=None, cohort_size=206, notes=""
        ),
        "related": [],
        "evidence": [],
    }
    fields.update(changes)
    return MarkerRecord(**fields)


PAPER = (
    "MGMT promoter methylation was found in 45% of glioblastomas.\n\n"
    "Methylation was measured by methylation-specific PCR (MSP) and pyrosequencing."
)
CONFIG = ExtractionConfig(input_price_per_million=2.5, output_price_per_million=10.0)


def test_single_request_record_is_grounded_complete_and_costed() -> None:
    reply = TeacherExtraction(
        answers=[
            AnswerRecord(
                question_id="markers",
                answer="The MGMT promoter.",
                evidence=["MGMT promoter methylation was found in 45% of glioblastomas.", "invented quote"],
            ),
            AnswerRecord(
                question_id="assays",
                answer="MSP and pyrosequencing.",
                evidence=["methylation-specific PCR (MSP) and  pyrosequencing"],  # case/space-insensitive
            ),
            AnswerRecord(question_id="unknown", answer="x", evidence=[]),
        ],
        markers=[_marker(evidence=["“MGMT promoter methylation was found in 45% of glioblastomas”"])],
        additional_qa=[
            QAPair(question="How common is methylation?", answer="45%.", evidence=["found in 45% of"]),
            QAPair(question="Ungrounded?", answer="Yes.", evidence=["not in the paper"]),
        ],
    )
    teacher = QueuedTeacher([reply])
    record = extract_paper(_paper(PAPER), teacher, BANK, CONFIG)

    assert isinstance(record, PaperRecord)
    assert teacher.papers_seen == [normalise_text(PAPER)]
    assert record.chunks == 1 and record.file_ids == ["p1", "p1-copy"]
    assert record.source_paths == ["p1.txt", "copy/p1.txt"]
    assert [answer.question_id for answer in record.answers] == BANK.ids
    assert record.answers[0].question == "Which methylation markers are reported?"
    assert record.answers[0].evidence == ["MGMT promoter methylation was found in 45% of glioblastomas."]
    assert record.answers[1].evidence == ["methylation-specific PCR (MSP) and  pyrosequencing"]
    assert record.answers[2].answer == NOT_REPORTED and record.answers[2].evidence == []
    assert len(record.markers) == 1 and record.markers[0].evidence  # curly quotes still match
    assert [pair.question for pair in record.additional_qa] == ["How common is methylation?"]
    assert record.dropped_evidence_quotes == 2
    assert record.question_bank_version == "test-1" and record.teacher_model == "fake-teacher"
    assert record.usage == TokenUsage(prompt_tokens=1000, completion_tokens=200, requests=1)
    assert record.estimated_cost_usd == pytest.approx((1000 * 2.5 + 200 * 10.0) / 1e6)


LONG_PAPER = "\n\n".join(
    f"Section {index}: MGMT promoter methylation predicted temozolomide response in cohort {index}. "
    "Pyrosequencing of CpG sites 74 to 78 confirmed the MSP results in most tumours."
    for index in range(40)
)


def _chunk_reply(paper: str) -> TeacherExtraction:
    """Answers from the chunk itself: the first section it holds, and chunk-specific markers."""
    first_sentence = paper.split("\n\n")[0].split(". ")[0] + "."
    section = first_sentence.split(":")[0]
    return TeacherExtraction(
        answers=[
            AnswerRecord(question_id="markers", answer="MGMT promoter.", evidence=[first_sentence]),
            AnswerRecord(
                question_id="assays", answer=f"MSP ({section}).", evidence=["Pyrosequencing of CpG"]
            ),
            AnswerRecord(question_id="auc", answer="Not reported in this part.", evidence=[]),
        ],
        markers=[
            _marker(
                direction="not_stated" if section.endswith("0") else "hypermethylated",
                assays=["MSP", "pyrosequencing"] if section != "Section 0" else ["MSP"],
                performance=MarkerPerformance(
                    sensitivity=None if section == "Section 0" else 0.9,
                    specificity=None,
                    auc=None,
                    cohort_size=206 if section == "Section 0" else None,
                    notes="",
                ),
            ),
            _marker(marker="cg12434587", gene="MGMT", cpg_sites=["cg12434587"]),
            _marker(marker="cg12981137", gene="MGMT", cpg_sites=["cg12981137"]),
        ],
        additional_qa=[
            QAPair(question="Which CpG sites?", answer="74 to 78.", evidence=["CpG sites 74 to 78"])
        ],
    )


def test_chunks_are_merged_into_one_record() -> None:
    config = ExtractionConfig(chunking=ChunkingConfig(max_chunk_tokens=400, overlap_tokens=40))
    teacher = QueuedTeacher([_chunk_reply] * 20)
    record = extract_paper(_paper(LONG_PAPER), teacher, BANK, config)

    assert isinstance(record, PaperRecord)
    chunks = len(teacher.papers_seen)
    assert chunks > 2 and record.chunks == chunks
    assert record.usage.requests == chunks and record.usage.prompt_tokens == 1000 * chunks
    markers_answer = record.answers[0]
    assert markers_answer.answer == "MGMT promoter."  # identical answers of all chunks folded into one
    assert len(markers_answer.evidence) == chunks  # one quote per chunk, all different, all grounded
    assert record.answers[1].answer.count("MSP (Section") == chunks  # different answers joined in order
    assert record.answers[2].answer == NOT_REPORTED  # "not reported in this part" everywhere
    # One MGMT promoter record plus the two probe-level records (distinct CpG sites stay apart).
    assert [marker.marker for marker in record.markers] == ["MGMT promoter", "cg12434587", "cg12981137"]
    promoter = record.markers[0]
    assert promoter.direction == "hypermethylated"  # not_stated in chunk 1 gives way to a stated direction
    assert promoter.assays == ["MSP", "pyrosequencing"]
    assert promoter.performance.sensitivity == 0.9 and promoter.performance.cohort_size == 206
    assert len(record.additional_qa) == 1


def test_request_too_large_splits_the_chunk_further() -> None:
    too_large = RequestTooLargeError("Request too large", requested_tokens=9000, limit_tokens=5000)
    teacher = QueuedTeacher([too_large, *([_chunk_reply] * 10)])
    config = ExtractionConfig(max_output_tokens=1024, chunking=ChunkingConfig(max_chunk_tokens=2000))
    record = extract_paper(_paper(LONG_PAPER), teacher, BANK, config)
    assert isinstance(record, PaperRecord)
    first, *parts = teacher.papers_seen
    assert len(parts) >= 2 and record.chunks == len(parts)
    assert all(len(part) < len(first) for part in parts)
    assert record.usage.requests == len(teacher.papers_seen)


def test_request_too_large_every_time_fails_at_chunk_stage() -> None:
    errors: list[Reply] = [RequestTooLargeError("too large", requested_tokens=9000, limit_tokens=5000)] * 50
    teacher = QueuedTeacher(errors)
    config = ExtractionConfig(max_output_tokens=1024, max_split_depth=2)
    failure = extract_paper(_paper(LONG_PAPER), teacher, BANK, config)
    assert isinstance(failure, FailureRecord)
    assert failure.stage == "chunk" and "after 2 split(s)" in failure.reason
    assert failure.usage.requests == len(teacher.papers_seen) == 3  # depth first: whole, part, part of part


def test_invalid_output_is_kept_raw_with_usage() -> None:
    bad = TeacherReply(
        parsed=None,
        raw_text='{"answers": [',
        error="truncated (finish_reason=length)",
        mode="json_object",
        attempts=3,
        usage=TokenUsage(prompt_tokens=3000, completion_tokens=900, requests=3),
    )
    failure = extract_paper(_paper(PAPER), QueuedTeacher([bad]), BANK, CONFIG)
    assert isinstance(failure, FailureRecord)
    assert failure.stage == "validate" and failure.file_id == "p1" and failure.source_path == "p1.txt"
    assert "finish_reason=length" in failure.reason and "3 attempt(s)" in failure.reason
    assert failure.raw_output == '{"answers": ['
    assert failure.usage == TokenUsage(prompt_tokens=3000, completion_tokens=900, requests=3)


def test_teacher_error_in_a_later_chunk_fails_the_paper_with_tokens_spent() -> None:
    config = ExtractionConfig(chunking=ChunkingConfig(max_chunk_tokens=400, overlap_tokens=0))
    teacher = QueuedTeacher([_chunk_reply, TeacherError("HTTP 400: invalid model")])
    failure = extract_paper(_paper(LONG_PAPER), teacher, BANK, config)
    assert isinstance(failure, FailureRecord)
    assert failure.stage == "request" and "chunk 2/" in failure.reason and "invalid model" in failure.reason
    assert failure.usage.prompt_tokens == 1000 and failure.usage.requests == 2


def test_no_room_for_paper_text_fails_without_a_request() -> None:
    config = ExtractionConfig(max_output_tokens=4000, request_token_limit=4500)
    teacher = QueuedTeacher([])
    failure = extract_paper(_paper(PAPER), teacher, BANK, config)
    assert isinstance(failure, FailureRecord) and failure.stage == "chunk"
    assert "max_tokens reserves 4000" in failure.reason and teacher.papers_seen == []


TEACHER = TeacherConfig(model="gpt-4o")


def test_cache_key_covers_what_shapes_the_answer_and_nothing_else() -> None:
    paper = _paper(PAPER)
    key = extraction_cache_key(paper, BANK, TEACHER, CONFIG)
    assert key == extraction_cache_key(paper, BANK, TEACHER, CONFIG)
    assert key != extraction_cache_key(_paper(PAPER + " More."), BANK, TEACHER, CONFIG)
    assert key != extraction_cache_key(
        paper, BANK, TEACHER.model_copy(update={"model": "gpt-4o-mini"}), CONFIG
    )
    # Renaming a file does not change its key; prices and a higher TPM do not change a short paper's key.
    renamed = paper.model_copy(update={"file_id": "other", "file_ids": ("other",)})
    assert key == extraction_cache_key(renamed, BANK, TEACHER, CONFIG)
    richer = CONFIG.model_copy(update={"request_token_limit": 800_000, "input_price_per_million": 5.0})
    assert key == extraction_cache_key(paper, BANK, TEACHER, richer)
    # Nor do the teacher's budget, retries and prices.
    patient = TEACHER.model_copy(update={"tpm": 30_000, "max_retries": 1, "price_input_per_mtok": 9.0})
    assert key == extraction_cache_key(paper, BANK, patient, CONFIG)
    # A paper that is chunked is re-extracted when the chunking changes.
    long_paper = _paper(LONG_PAPER)
    small = ExtractionConfig(chunking=ChunkingConfig(max_chunk_tokens=400))
    smaller = ExtractionConfig(chunking=ChunkingConfig(max_chunk_tokens=500))
    assert extraction_cache_key(long_paper, BANK, TEACHER, small) != extraction_cache_key(
        long_paper, BANK, TEACHER, smaller
    )


def test_the_cache_key_follows_the_questions_not_the_bank_version() -> None:
    """An edited question is asked again though nobody bumped the version; a bump alone asks nothing."""
    paper = _paper(PAPER)
    key = extraction_cache_key(paper, BANK, TEACHER, CONFIG)
    markers, *others = BANK.questions
    reworded = BANK.model_copy(
        update={"questions": (markers.model_copy(update={"text": "Which DNA methylation markers?"}), *others)}
    )
    guided = BANK.model_copy(
        update={"questions": (markers.model_copy(update={"guidance": "Gene symbols only."}), *others)}
    )
    assert reworded.version == guided.version == BANK.version
    assert (
        len({key, *(extraction_cache_key(paper, bank, TEACHER, CONFIG) for bank in (reworded, guided))}) == 3
    )
    assert key == extraction_cache_key(paper, BANK.model_copy(update={"version": "test-2"}), TEACHER, CONFIG)


def test_the_cache_key_names_the_endpoint_output_mode_grammar_prompt_and_schema(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import methyl_distill.extraction.extract as extract_module
    import methyl_distill.extraction.prompts as prompts_module

    paper = _paper(PAPER)

    def key(teacher: TeacherConfig = TEACHER) -> str:
        return extraction_cache_key(paper, BANK, teacher, CONFIG)

    openai_key = key()
    # The project's test server answers for "gpt-4o" too: its answers never fill OpenAI's entries.
    assert key(TEACHER.model_copy(update={"base_url": "http://127.0.0.1:8800/v1"})) != openai_key
    # The endpoint without credentials, query or a trailing slash: rotating a key re-extracts nothing.
    spelled = "https://user:sk-secret@API.openai.com/v1/?api-version=2024-10-21"
    assert key(TEACHER.model_copy(update={"base_url": spelled})) == openai_key
    assert len({openai_key, *(key(TEACHER.model_copy(update={"output_mode": mode})) for mode in MODES)}) == 4
    with_grammar = key(TEACHER.model_copy(update={"grammar": GrammarLimits()}))
    tighter = key(TEACHER.model_copy(update={"grammar": GrammarLimits(max_string_length=64)}))
    assert len({openai_key, with_grammar, tighter}) == 3
    # An address that changes from run to run (the embedded teacher's free port) is not the endpoint.
    assert extraction_cache_key(
        paper, BANK, embedded_teacher_config("http://127.0.0.1:40001/v1"), CONFIG
    ) == extraction_cache_key(paper, BANK, embedded_teacher_config("http://127.0.0.1:40002/v1"), CONFIG)

    # The prompt's wording and the output schema as sent, without anybody bumping a version.
    monkeypatch.setattr(prompts_module, "SYSTEM_PROMPT", prompts_module.SYSTEM_PROMPT + " Be brief.")
    reworded_prompt = key()
    monkeypatch.undo()

    class WiderExtraction(TeacherExtraction):
        note: str

    monkeypatch.setattr(extract_module, "TeacherExtraction", WiderExtraction)
    wider_schema = key()
    monkeypatch.undo()
    assert len({openai_key, reworded_prompt, wider_schema}) == 3 and key() == openai_key


def _truncated_reply() -> TeacherReply[Any]:
    return TeacherReply(
        parsed=None,
        raw_text='{"answers": [{"question_id": "mark',
        attempts=3,
        error=f"{TRUNCATED_OUTPUT} (finish_reason=length) on every one of 3 attempt(s)",
        truncated=True,
        usage=TokenUsage(prompt_tokens=10, completion_tokens=5, requests=3),
    )


def test_truncated_answers_split_the_chunk_then_fail_with_raw_output() -> None:
    config = ExtractionConfig()  # a truncated reply halves a chunk once, whatever max_split_depth allows
    teacher = QueuedTeacher([_truncated_reply(), *([_chunk_reply] * 10)])
    record = extract_paper(_paper(LONG_PAPER), teacher, BANK, config)
    assert isinstance(record, PaperRecord) and record.chunks >= 2
    assert record.usage.requests == 3 + record.chunks

    teacher = QueuedTeacher([_truncated_reply()] * 10)
    failure = extract_paper(_paper(LONG_PAPER), teacher, BANK, config)
    assert isinstance(failure, FailureRecord) and failure.stage == "validate"
    assert "output truncated" in failure.reason and failure.raw_output is not None
    assert len(teacher.papers_seen) == 2  # the whole paper, then its first half: no second halving


def test_cache_storage_and_failure_exception(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    from methyl_distill.tasks.extraction import (
        PaperExtractionFailed,
        _retry_unless_paper_failed,
        resolve_cache_storage,
    )
    from prefect.states import Completed, Failed

    monkeypatch.delenv("METHYL_DISTILL_CACHE_STORAGE_BLOCK", raising=False)
    monkeypatch.setenv("METHYL_DISTILL_CACHE_DIR", str(tmp_path / "from-env"))
    assert resolve_cache_storage() == tmp_path / "from-env" and (tmp_path / "from-env").is_dir()
    assert resolve_cache_storage(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.setenv("METHYL_DISTILL_CACHE_STORAGE_BLOCK", "s3-bucket/extractions")
    assert resolve_cache_storage() == "s3-bucket/extractions"

    failure = FailureRecord(
        file_id="p1", source_path="p1.txt", stage="validate", reason="bad", raw_output="{"
    )
    error = PaperExtractionFailed(failure)
    assert pickle.loads(pickle.dumps(error)).failure == failure
    # The paper's own failures are final; anything else (infrastructure) is retried by Prefect.
    assert _retry_unless_paper_failed(None, None, Failed(data=error)) is False  # type: ignore[arg-type]
    assert _retry_unless_paper_failed(None, None, Failed(data=ConnectionError("api down"))) is True  # type: ignore[arg-type]
    assert _retry_unless_paper_failed(None, None, Completed(data=1)) is False  # type: ignore[arg-type]


# --- the flow's Prefect edge, without a server ----------------------------------------------------


def test_progress_updates_never_hold_up_the_run_and_the_last_one_is_sent() -> None:
    import threading
    import time

    from methyl_distill.extraction.progress import ThrottledProgress

    sent: list[float] = []
    first_update_started = threading.Event()

    def slow_send(percent: float) -> None:
        first_update_started.set()
        time.sleep(0.3)  # a busy API
        sent.append(percent)

    with ThrottledProgress(200, slow_send, interval_s=0.05) as progress:
        progress.advance()
        assert first_update_started.wait(5)
        began = time.monotonic()
        for _ in range(199):
            progress.advance()
        assert time.monotonic() - began < 0.2  # while an update is in flight
    assert sent[-1] == 100.0  # close() waited for the final value
    assert len(sent) <= 3 and sent == sorted(sent)


def test_a_failing_progress_update_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    from methyl_distill.extraction.progress import ThrottledProgress

    def failing_send(percent: float) -> None:
        raise RuntimeError("API unavailable")

    with caplog.at_level(logging.WARNING), ThrottledProgress(2, failing_send, interval_s=0.01) as progress:
        progress.advance()
        progress.advance()
    assert any("API unavailable" in record.getMessage() for record in caplog.records)


class _Future:
    """A future finished by the test, in any order: what `map_in_batches` sees of a Prefect future."""

    def __init__(self, item: int) -> None:
        self.item = item
        self.callbacks: list[Callable[[Any], None]] = []
        self.done = False

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        self.callbacks.append(fn)

    def wait(self, timeout: float | None = None) -> None:
        assert self.done

    def finish(self) -> None:
        self.done = True
        for callback in self.callbacks:
            callback(self)


def test_papers_are_mapped_in_bounded_batches_and_handed_over_as_they_finish() -> None:
    from methyl_distill.extraction.paper_batches import map_in_batches

    submitted: list[list[int]] = []
    in_flight: list[_Future] = []

    def submit(batch: Any) -> list[_Future]:
        submitted.append(list(batch))
        futures = [_Future(item) for item in batch]
        in_flight.extend(futures)
        # Finish in reverse order, on another thread's schedule: results must not wait for order.
        return futures

    import threading

    def finisher() -> None:
        import time

        while True:
            time.sleep(0.001)
            pending = [future for future in in_flight if not future.done]
            if pending:
                pending[-1].finish()
            elif len(submitted) == 4 and sum(map(len, submitted)) == 10:
                return

    thread = threading.Thread(target=finisher, daemon=True)
    thread.start()
    yielded = []
    for item, future in map_in_batches(list(range(10)), submit, batch_size=3):
        assert future.done and future.item == item
        # Never more than about two batches submitted and unfinished.
        assert sum(1 for f in in_flight if not f.done) <= 2 * 3
        yielded.append(item)
    thread.join(5)
    assert sorted(yielded) == list(range(10)) and submitted == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    with pytest.raises(ValueError, match="batch_size"):
        list(map_in_batches([1], submit, batch_size=0))


def test_cache_keys_of_the_sample_papers_are_pinned() -> None:
    """The keys the cache is filled under: a refactor that changes them would re-extract, and pay for,
    every paper of every user. They changed on purpose when the reader and its version joined the key,
    and once more when the key came to be made of content (the questions, the prompt and the schema as
    sent) and of the teacher's endpoint, output mode and grammar instead of hand-bumped versions."""
    from methyl_distill.extraction.papers import discover_papers
    from methyl_distill.extraction.question_bank import load_question_bank

    papers = {paper.file_id: paper for paper in discover_papers(SAMPLE_PAPERS).papers}
    bank = load_question_bank(None)
    embedded_like = ExtractionConfig(
        max_output_tokens=2048,
        context_tokens=8192,
        request_token_limit=1_000_000,
        chunking=ChunkingConfig(max_chunk_tokens=2048, overlap_tokens=200),
    )
    embedded = embedded_teacher_config("http://127.0.0.1:8080/v1", question_ids=bank.ids)
    openai = extraction_cache_key(
        papers["cdkn2a-p16-head-neck-txt"], bank, TeacherConfig(), ExtractionConfig()
    )
    assert openai == "extract-da1d0760f1580ac89a2b19d31705aa4a2eb44571df6ee1e120355b0d5be45bd0"
    smollm2 = extraction_cache_key(papers["shox2-ptger4-lung-cancer-txt"], bank, embedded, embedded_like)
    assert smollm2 == "extract-e8c5bb79922cc1d7dc3e8788a70d66296c4d96a06ced50b6c208f53fef2f2bad"
