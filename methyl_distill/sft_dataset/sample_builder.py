"""Turning one paper's record into chat samples of three styles, with the quality and grounding rules.

- closed-book: the question alone -> the answer. Only for questions that stand on their own: they
  name a marker of the paper (gene symbol, marker name or CpG id) and do not refer to "the paper",
  "this study" or "the authors".
- grounded: an excerpt of the paper around the answer's evidence + the question -> the answer.
- extraction: an excerpt around markers' evidence -> `{"markers": [...]}` with those marker records
  (which markers, and how they are packed into samples: `extraction_packing.py`).

Every Q&A pair or marker that does not become a sample is counted under a reason in `drops`. Each
sample records which of the paper's markers its assistant content holds (`covers`: an extraction
sample's target records, the markers a Q&A answer names), for marker coverage.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import orjson

from methyl_distill.extraction.records import MarkerRecord, PaperRecord
from methyl_distill.sft_dataset.config import DatasetConfig
from methyl_distill.sft_dataset.extraction_packing import (
    LocatedMarker,
    balanced_ranges,
    extraction_identity,
    locate_markers,
    pack_by_evidence,
)
from methyl_distill.sft_dataset.paper_text import Excerpt, LoadedPaper, PaperText, evidence_chars
from methyl_distill.text.not_reported import is_not_reported

Style = Literal["closed_book", "grounded", "extraction"]

_REFERS_TO_SOURCE = re.compile(
    r"\b(?:th(?:is|e|at)\s+(?:paper|study|article|report|manuscript|publication|text|excerpt|work|cohort|trial"
    r"|analysis|authors?)|these\s+(?:authors|patients|samples|markers))\b",
    re.IGNORECASE,
)
_WORDS = re.compile(r"[\w\-.]+")
_ALNUM = re.compile(r"[^\W_]")


def unit_draw(seed: int, *parts: object) -> float:
    """A deterministic uniform number in [0, 1) from the seed and `parts` (independent of PYTHONHASHSEED)."""
    digest = hashlib.blake2b("\x1f".join(map(str, (seed, *parts))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(slots=True)
class Sample:
    """One chat sample under construction; `spans` lets the length rules re-cut its excerpt."""

    paper: str
    file_id: str
    style: Style
    user: str
    assistant: str
    dedup_text: str
    flags: tuple[str, ...] = ()
    markers: tuple[str, ...] = ()
    spans: tuple[tuple[int, int], ...] | None = None
    question: str | None = None
    excerpt_budget: int = 0
    not_reported: bool = False
    excerpt_pieces: int | None = None  # token-estimate pieces of the excerpt in `user`, when known
    tokens: int = 0
    covers: tuple[int, ...] = ()  # indices (in the record) of the markers in the assistant content
    targets: tuple[LocatedMarker, ...] = ()  # an extraction sample's markers, to re-pack it


@dataclass
class PaperSamples:
    samples: list[Sample] = field(default_factory=list)
    drops: Counter[str] = field(default_factory=Counter)
    grounded: list[LocatedMarker] = field(default_factory=list)  # the paper's grounded markers


@dataclass(frozen=True, slots=True)
class _QA:
    question: str
    answer: str
    evidence: tuple[str, ...]
    origin: str


class _MarkerTerms:
    """Single-word names by which a text can name a marker of the paper (gene symbol, marker name,
    CpG id), case-folded: term -> display name, and term -> the indices of the markers it names."""

    __slots__ = ("indices", "names")

    def __init__(self, markers: list[MarkerRecord]) -> None:
        self.names: dict[str, str] = {}
        self.indices: dict[str, set[int]] = {}
        for index, marker in enumerate(markers):
            display = marker.gene or marker.marker
            for term in (marker.gene, marker.marker, *marker.cpg_sites):
                if term and len(term) >= 3 and " " not in term.strip():
                    key = term.strip().casefold()
                    self.names[key] = display
                    self.indices.setdefault(key, set()).add(index)

    def displays(self, words: set[str]) -> tuple[str, ...]:
        """The display names of the markers named among `words` (stripped `_WORDS`)."""
        names = self.names
        return tuple(sorted({names[word] for word in words if word in names}))

    def markers(self, words: set[str]) -> tuple[int, ...]:
        """The indices of the markers named among `words` (stripped `_WORDS`)."""
        indices = self.indices
        return tuple(sorted(set().union(*(indices[word] for word in words if word in indices))))


def _stripped(words: list[str]) -> set[str]:
    return {word.strip(".-") for word in words}


class SampleBuilder:
    """Builds the samples of one paper at a time under one configuration."""

    def __init__(self, config: DatasetConfig) -> None:
        self.config = config
        mix = config.mix
        total = mix.closed_book + mix.grounded
        self._closed_book_share = mix.closed_book / total if total else 0.0

    def build(self, record: PaperRecord, paper: LoadedPaper) -> PaperSamples:
        out = PaperSamples()
        terms = _MarkerTerms(record.markers)
        items = [
            _QA(a.question, a.answer, tuple(a.evidence), f"bank:{a.question_id}") for a in record.answers
        ]
        items += [_QA(q.question, q.answer, tuple(q.evidence), "additional") for q in record.additional_qa]
        if self.config.mix.closed_book > 0 or self.config.mix.grounded > 0:
            for index, item in enumerate(items):
                sample = self._qa_sample(record, paper, item, index, terms, out.drops)
                if sample is not None:
                    out.samples.append(sample)
        ungrounded = 0
        if record.markers and paper.text is not None:
            # Located for every paper, drawn for extraction or not: coverage counts its grounded markers.
            out.grounded, ungrounded = locate_markers(record.markers, paper.text, self.config)
        if record.markers and unit_draw(self.config.seed, record.content_sha256, "extraction") < (
            self.config.mix.extraction
        ):
            if paper.text is None:
                out.drops[f"paper_{paper.status}"] += 1
            else:
                if ungrounded:
                    out.drops["marker_ungrounded"] += ungrounded
                changed = paper.status == "changed"
                for group in pack_by_evidence(out.grounded, self.config.extraction_excerpt_chars):
                    out.samples.append(
                        extraction_sample(
                            record.content_sha256, record.file_id, paper.text, group, self.config, changed
                        )
                    )
        return out

    # --- Q&A --------------------------------------------------------------------------------------

    def _qa_sample(
        self,
        record: PaperRecord,
        paper: LoadedPaper,
        item: _QA,
        index: int,
        terms: _MarkerTerms,
        drops: Counter[str],
    ) -> Sample | None:
        config = self.config
        question, answer = item.question.strip(), item.answer.strip()
        if not question:
            drops["empty_question"] += 1
            return None
        if not answer:
            drops["empty_answer"] += 1
            return None
        if not _ALNUM.search(answer):
            drops["answer_without_content"] += 1
            return None
        # Words of each text once: for the repeat check and for the markers named (the words of
        # "question answer" are those of the question and those of the answer).
        question_words, answer_words = _WORDS.findall(question.casefold()), _WORDS.findall(answer.casefold())
        if question_words == answer_words:
            drops["answer_repeats_question"] += 1
            return None
        text = paper.text
        if is_not_reported(answer):
            if config.not_reported_share == 0 or config.mix.grounded == 0:
                drops["not_reported"] += 1
                return None
            if text is None:
                drops[f"paper_{paper.status}"] += 1
                return None
            return self._grounded(record, text, question, answer, (), (), index, not_reported=True)

        question_terms, answer_terms = _stripped(question_words), _stripped(answer_words)
        self_contained = not _REFERS_TO_SOURCE.search(question) and bool(terms.displays(question_terms))
        markers = terms.displays(question_terms | answer_terms)
        covers = terms.markers(answer_terms)  # the markers the answer (the assistant content) names
        flags: list[str] = []
        spans: list[tuple[int, int]] = []
        if paper.status == "changed":
            flags.append("paper_changed")
        if text is None:
            if config.grounding == "drop" or not self_contained or config.mix.closed_book == 0:
                drops[f"paper_{paper.status}"] += 1
                return None
            flags.append("grounding_unchecked")
        else:
            usable = 0
            missing = 0
            for quote in item.evidence:
                located = text.locate(quote, config.min_quote_chars)
                if located.status == "found":
                    usable += 1
                    spans.extend(located.spans)
                elif located.status == "missing":
                    usable += 1
                    missing += 1
            problem = "no_evidence" if usable == 0 else "ungrounded" if missing else None
            if problem is not None:
                if config.grounding == "drop":
                    drops[problem] += 1
                    return None
                flags.append(problem)

        wants_closed_book = self_contained and (
            text is None
            or unit_draw(config.seed, record.content_sha256, "style", index) < self._closed_book_share
        )
        if wants_closed_book:
            return Sample(
                paper=record.content_sha256,
                file_id=record.file_id,
                style="closed_book",
                user=question,
                assistant=answer,
                dedup_text=f"{question}\n{answer}",
                flags=tuple(flags),
                markers=markers,
                covers=covers,
            )
        if config.mix.grounded == 0:
            drops["needs_context_but_grounded_off"] += 1
            return None
        if text is None:
            drops[f"paper_{paper.status}"] += 1
            return None
        # No quote located (kept only under 'flag', flagged): the excerpt is the paper's opening.
        sample = self._grounded(record, text, question, answer, tuple(spans), markers, index, flags=flags)
        if sample is None:
            drops["evidence_exceeds_excerpt"] += 1
            return None
        sample.dedup_text = f"{question}\n{answer}\n" + "\n".join(item.evidence)
        sample.covers = covers
        return sample

    def _grounded(
        self,
        record: PaperRecord,
        text: PaperText,
        question: str,
        answer: str,
        spans: tuple[tuple[int, int], ...],
        markers: tuple[str, ...],
        index: int,
        *,
        not_reported: bool = False,
        flags: list[str] | None = None,
    ) -> Sample | None:
        budget = self.config.excerpt_chars
        excerpt = text.excerpt(list(spans), budget)
        if excerpt is None:
            return None
        return Sample(
            paper=record.content_sha256,
            file_id=record.file_id,
            style="grounded",
            user=self.config.grounded_template.format(excerpt=excerpt.text, question=question),
            assistant=answer,
            # A 'not reported' answer is told apart by the paper it is about, i.e. its excerpt.
            dedup_text=f"{question}\n{answer}\n{excerpt.text[:300]}"
            if not_reported
            else f"{question}\n{answer}",
            flags=tuple(flags or ()),
            markers=markers,
            spans=spans,
            question=question,
            excerpt_budget=budget,
            not_reported=not_reported,
            excerpt_pieces=excerpt.pieces,
        )


# --- structured extraction (which markers, and how they are packed: extraction_packing.py) ---------


def extraction_sample(
    paper: str,
    file_id: str,
    text: PaperText,
    markers: Sequence[LocatedMarker],
    config: DatasetConfig,
    changed: bool,
) -> Sample:
    """The extraction sample of `markers` (in order): an excerpt around their evidence -> their
    records. The excerpt budget is `extraction_excerpt_chars`, or the evidence itself if longer."""
    spans = tuple(span for marker in markers for span in marker.spans)
    budget = config.extraction_excerpt_chars
    if sum(marker.evidence_chars for marker in markers) > budget:  # else their union fits too
        budget = max(budget, evidence_chars(spans))
    excerpt = text.excerpt(list(spans), budget)
    assert excerpt is not None  # the budget holds the evidence
    flags = ["ungrounded"] if any(marker.partly_missing for marker in markers) else []
    if changed:
        flags.append("paper_changed")
    return Sample(
        paper=paper,
        file_id=file_id,
        style="extraction",
        user=config.extraction_template.format(excerpt=excerpt.text),
        assistant=orjson.dumps(
            {"markers": [marker.record.model_dump(mode="json") for marker in markers]}
        ).decode(),
        dedup_text=extraction_identity(markers),
        flags=tuple(flags),
        markers=tuple(sorted({marker.record.gene or marker.record.marker for marker in markers})),
        spans=spans,
        excerpt_budget=budget,
        excerpt_pieces=excerpt.pieces,
        covers=tuple(sorted(marker.position for marker in markers)),
        targets=tuple(markers),
    )


def split_extraction_sample(
    sample: Sample, text: PaperText, config: DatasetConfig, parts: int
) -> list[Sample]:
    """An extraction sample's markers as `parts` samples (fewer if it has fewer markers) of
    consecutive markers, balanced by the size of their records and evidence."""
    weights = [
        len(orjson.dumps(marker.record.model_dump(mode="json"))) + marker.evidence_chars
        for marker in sample.targets
    ]
    changed = "paper_changed" in sample.flags
    return [
        extraction_sample(sample.paper, sample.file_id, text, sample.targets[start:end], config, changed)
        for start, end in balanced_ranges(weights, parts)
    ]


def sample_messages(sample: Sample, system_prompt: str) -> list[dict[str, str]]:
    """The chat messages of a sample: system (unless empty), user, assistant."""
    messages = [{"role": "user", "content": sample.user}, {"role": "assistant", "content": sample.assistant}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def with_excerpt(sample: Sample, config: DatasetConfig, excerpt: Excerpt) -> Sample:
    """A copy of an excerpt-bearing sample with a new excerpt."""
    if sample.style == "extraction":
        user = config.extraction_template.format(excerpt=excerpt.text)
    else:
        user = config.grounded_template.format(excerpt=excerpt.text, question=sample.question)
    return dataclasses.replace(sample, user=user, excerpt_pieces=excerpt.pieces)
