"""Extracting one paper: chunk it, ask the teacher per chunk, merge the chunks into one record.

`extract_paper` is the plain core of the extraction stage: no Prefect, no files. It returns a
`PaperRecord` or, when the paper cannot be extracted, a `FailureRecord` with the stage, the
reason, the teacher's raw output and the tokens spent. A request the teacher reports as too large
is split further, up to `ExtractionConfig.max_split_depth` times; a chunk whose answer is cut off
by max_tokens on every attempt is halved once (fewer markers, shorter answers).

Evidence quotes are checked against the paper: a quote that does not occur in the text (compared
case-, whitespace- and punctuation-style-insensitively) is dropped and counted, so every quote in a
record can be found in its paper.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field

from methyl_distill.extraction.chunking import (
    MIN_CHUNK_TOKENS,
    ChunkBudgetError,
    ChunkingConfig,
    chunk_token_budget,
    split_into_chunks,
)
from methyl_distill.extraction.grounding import EvidenceChecker
from methyl_distill.extraction.merge import merge_additional_qa, merge_answers, merge_markers
from methyl_distill.extraction.papers import Paper
from methyl_distill.extraction.prompts import PROMPT_VERSION, build_messages, prompt_template
from methyl_distill.extraction.question_bank import QuestionBank
from methyl_distill.extraction.records import (
    FailureRecord,
    FailureStage,
    PaperRecord,
    TeacherExtraction,
    TokenUsage,
)
from methyl_distill.teacher.config import TeacherConfig
from methyl_distill.teacher.protocol import RequestTooLargeError, Teacher, TeacherError
from methyl_distill.teacher.structured_output import schema_instruction, strict_json_schema
from methyl_distill.text.token_count import estimate_chat_tokens, estimate_tokens

logger = logging.getLogger(__name__)


class ExtractionConfig(BaseModel):
    """How papers are cut into requests and what a request may cost."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_output_tokens: int = Field(default=4096, ge=256, description="max_tokens of every teacher request.")
    context_tokens: int = Field(default=128_000, ge=1024, description="The teacher's context window.")
    request_token_limit: int | None = Field(
        default=200_000,
        ge=1024,
        description="Most tokens one request may reserve (the TPM limit: larger requests are rejected).",
    )
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    max_split_depth: int = Field(
        default=3, ge=0, le=8, description="How often a chunk the teacher finds too large is halved again."
    )
    input_price_per_million: float | None = Field(default=None, ge=0, description="USD per 1M prompt tokens.")
    output_price_per_million: float | None = Field(
        default=None, ge=0, description="USD per 1M completion tokens."
    )

    @classmethod
    def for_teacher(
        cls,
        teacher: TeacherConfig,
        *,
        max_chunk_tokens: int | None = None,
        chunk_overlap_tokens: int | None = None,
    ) -> ExtractionConfig:
        """The requests `teacher` can take: its reply budget, context, TPM (the largest request) and
        prices; chunks of `max_chunk_tokens` when given, with a proportionate overlap by default."""
        chunking: dict[str, int] = {}
        if max_chunk_tokens is not None:
            chunking["max_chunk_tokens"] = max_chunk_tokens
            # Small chunks get a proportionate default overlap rather than a validation error.
            default_overlap = ChunkingConfig.model_fields["overlap_tokens"].default
            chunking["overlap_tokens"] = min(default_overlap, max_chunk_tokens // 4)
        if chunk_overlap_tokens is not None:
            chunking["overlap_tokens"] = chunk_overlap_tokens
        return cls(
            max_output_tokens=teacher.max_output_tokens,
            context_tokens=teacher.context_tokens,
            request_token_limit=teacher.tpm,
            chunking=ChunkingConfig(**chunking),
            input_price_per_million=teacher.input_price_per_mtok,  # the batch prices in batch mode
            output_price_per_million=teacher.output_price_per_mtok,
        )

    def estimate_cost(self, usage: TokenUsage) -> float | None:
        if self.input_price_per_million is None or self.output_price_per_million is None:
            return None
        return (
            usage.prompt_tokens * self.input_price_per_million
            + usage.completion_tokens * self.output_price_per_million
        ) / 1_000_000


@lru_cache(maxsize=1)
def _schema_instruction_tokens() -> int:
    return estimate_tokens(schema_instruction(strict_json_schema(TeacherExtraction)))


def framing_tokens(bank: QuestionBank) -> int:
    """Estimated prompt tokens of a request without its paper text.

    The chunked wording (the longer one), plus the JSON schema the teacher client spells out in the
    prompt for endpoints without structured outputs (json_object and prompt modes): the budget must
    hold whichever mode the endpoint ends up in.
    """
    messages = build_messages("", bank, chunk_index=0, chunk_count=2)
    return estimate_chat_tokens(messages) + _schema_instruction_tokens()


def paper_chunk_budget(bank: QuestionBank, config: ExtractionConfig) -> int:
    return chunk_token_budget(
        framing_tokens=framing_tokens(bank),
        max_output_tokens=config.max_output_tokens,
        context_tokens=config.context_tokens,
        request_token_limit=config.request_token_limit,
        max_chunk_tokens=config.chunking.max_chunk_tokens,
    )


def chunking_fingerprint(text: str, bank: QuestionBank, config: ExtractionConfig) -> str:
    """What of the chunking configuration shapes this paper's requests, for the cache key.

    A paper that fits one request is asked the same way whatever the limits are ("whole"), so
    raising a limit re-extracts only the papers that were chunked.
    """
    try:
        budget = paper_chunk_budget(bank, config)
    except ChunkBudgetError:
        return "no-budget"
    if estimate_tokens(text) <= budget:
        return "whole"
    return f"chunks:{budget}:{config.chunking.overlap_tokens}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def extraction_cache_key(
    paper: Paper, bank: QuestionBank, teacher: TeacherConfig, config: ExtractionConfig
) -> str:
    """Everything that shapes a paper's extraction, by content rather than by hand-bumped versions.

    The paper's text and the reader (and its version) that produced it (a better reader re-extracts
    even where the text came out the same); the questions as the teacher reads them (id, text,
    guidance: not the bank's version); the prompt's wording (`prompts.prompt_template`); the output
    schema as it is sent; the teacher's model, endpoint, configured output mode and grammar
    (`TeacherConfig.answer_identity`, which says why the configured mode); max_tokens and the
    chunking. So an edited question or prompt is asked again though nobody bumped a version, and a
    test server answering for "gpt-4o" never fills the entries of OpenAI's gpt-4o.
    """
    questions = [
        {"id": question.id, "text": question.text, "guidance": question.guidance}
        for question in bank.questions
    ]
    schema = strict_json_schema(TeacherExtraction)
    parts = [
        f"content={paper.content_sha256}",
        f"reader={paper.source.reader}",
        f"questions={_digest(json.dumps(questions, sort_keys=True))}",
        f"prompt={_digest(prompt_template())}",
        f"schema={_digest(json.dumps(schema, sort_keys=True))}",
        f"teacher={json.dumps(teacher.answer_identity(), sort_keys=True)}",
        f"max_tokens={config.max_output_tokens}",
        f"chunking={chunking_fingerprint(paper.text, bank, config)}",
    ]
    return "extract-" + _digest("\n".join(parts))


# --- the core ---------------------------------------------------------------------------------------


@dataclass
class _Failure(Exception):
    stage: FailureStage
    reason: str
    raw_output: str | None = None


@dataclass
class _Truncated(Exception):
    """Every attempt ran out of max_tokens: a smaller chunk needs a shorter answer."""

    failure: _Failure


@dataclass
class _ChunkRun:
    """The requests of one paper: a queue of chunk texts, split further on demand."""

    paper: Paper
    teacher: Teacher
    bank: QuestionBank
    config: ExtractionConfig
    usage: TokenUsage = field(default_factory=TokenUsage)
    requests_sent: int = 0

    def run(self, chunks: list[str]) -> list[TeacherExtraction]:
        # (text, splits so far, whether a truncated reply already split it)
        queue: list[tuple[str, int, bool]] = [(chunk, 0, False) for chunk in chunks]
        results: list[TeacherExtraction] = []
        while queue:
            text, depth, halved_for_length = queue.pop(0)
            index, count = len(results), len(results) + 1 + len(queue)
            try:
                results.append(self._ask(text, index, count))
            except RequestTooLargeError as exc:
                parts = self._split_further(text, depth, exc)
                queue[:0] = [(part, depth + 1, halved_for_length) for part in parts]
            except _Truncated as truncated:
                # Halving once helps when the answer grows with the text (many markers); the answers
                # to the fixed questions do not shrink further, so a second halving would only waste
                # requests.
                too_small = estimate_tokens(text) < 2 * MIN_CHUNK_TOKENS
                if halved_for_length or depth >= self.config.max_split_depth or too_small:
                    raise truncated.failure from None
                parts = split_into_chunks(text, estimate_tokens(text) // 2 + 1)
                logger.info(
                    "%s: reply truncated, split a chunk into %d parts", self.paper.file_id, len(parts)
                )
                queue[:0] = [(part, depth + 1, True) for part in parts]
        return results

    def _ask(self, text: str, index: int, count: int) -> TeacherExtraction:
        messages = build_messages(text, self.bank, chunk_index=index, chunk_count=count)
        label = f"chunk {index + 1}/{count}" if count > 1 else "paper"
        self.requests_sent += 1
        try:
            reply = self.teacher.complete_structured(
                messages, TeacherExtraction, max_tokens=self.config.max_output_tokens, source_text=text
            )
        except RequestTooLargeError:
            raise
        except TeacherError as exc:
            raise _Failure("request", f"{label}: {exc}") from exc
        self.usage = self.usage + reply.usage
        if reply.parsed is None:
            failure = _Failure(
                "validate",
                f"{label}: invalid output after {reply.attempts} attempt(s) ({reply.mode}): {reply.error}",
                reply.raw_text,
            )
            if reply.truncated:
                raise _Truncated(failure)
            raise failure
        return reply.parsed

    def _split_further(self, text: str, depth: int, exc: RequestTooLargeError) -> list[str]:
        if depth >= self.config.max_split_depth:
            raise _Failure(
                "chunk",
                f"request still too large after {depth} split(s): {exc} "
                f"(requested {exc.requested_tokens} tokens, limit {exc.limit_tokens})",
            )
        room = exc.limit_tokens - framing_tokens(self.bank) - self.config.max_output_tokens
        budget = min(estimate_tokens(text) // 2 + 1, room)
        if budget < 2:
            raise _Failure(
                "chunk",
                f"{exc}: the limit of {exc.limit_tokens} tokens leaves no room for paper text "
                f"with max_tokens={self.config.max_output_tokens}",
            )
        overlap = min(self.config.chunking.overlap_tokens, budget // 4)
        parts = split_into_chunks(text, budget, overlap)
        logger.info("%s: request too large, split a chunk into %d parts", self.paper.file_id, len(parts))
        return parts


def extract_paper(
    paper: Paper, teacher: Teacher, question_bank: QuestionBank, config: ExtractionConfig
) -> PaperRecord | FailureRecord:
    """Extract one paper with `teacher`; never raises for a paper the teacher cannot handle.

    Errors that are not the paper's fault (bugs, an unreachable infrastructure the client gave up
    on with an unexpected exception) propagate, so the caller's retries can deal with them.
    """
    run = _ChunkRun(paper, teacher, question_bank, config)

    def failure(stage: FailureStage, reason: str, raw_output: str | None = None) -> FailureRecord:
        logger.warning("%s: extraction failed at %s: %s", paper.file_id, stage, reason)
        return FailureRecord(
            file_id=paper.file_id,
            source_path=paper.source_path,
            stage=stage,
            reason=reason,
            raw_output=raw_output,
            usage=run.usage.model_copy(update={"requests": max(run.usage.requests, run.requests_sent)}),
        )

    try:
        budget = paper_chunk_budget(question_bank, config)
    except ChunkBudgetError as exc:
        return failure("chunk", str(exc))
    chunks = split_into_chunks(paper.text, budget, config.chunking.overlap_tokens)
    try:
        extractions = run.run(chunks)
    except _Failure as exc:
        return failure(exc.stage, exc.reason, exc.raw_output)

    checker = EvidenceChecker(paper.text)
    answers = merge_answers(question_bank, extractions, checker)
    markers = merge_markers(extractions, checker)
    additional = merge_additional_qa(extractions, checker)
    if checker.dropped:
        logger.info("%s: dropped %d evidence quote(s) not found in the paper", paper.file_id, checker.dropped)
    usage = run.usage.model_copy(update={"requests": max(run.usage.requests, run.requests_sent)})
    return PaperRecord(
        file_id=paper.file_id,
        file_ids=list(paper.file_ids),
        source_paths=list(paper.source_paths),
        content_sha256=paper.content_sha256,
        source=paper.source,
        question_bank_version=question_bank.version,
        prompt_version=PROMPT_VERSION,
        teacher_model=teacher.model,
        chunks=len(extractions),
        answers=answers,
        markers=markers,
        additional_qa=additional,
        usage=usage,
        estimated_cost_usd=config.estimate_cost(usage),
        dropped_evidence_quotes=checker.dropped,
    )
