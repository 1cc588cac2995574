"""Chunking: every chunk fits its budget, boundaries are natural, overlap is bounded, nothing is lost."""

from __future__ import annotations

import itertools
import re

import pytest
from pydantic import ValidationError

from methyl_distill.extraction.chunking import (
    MIN_CHUNK_TOKENS,
    ChunkBudgetError,
    ChunkingConfig,
    chunk_token_budget,
    split_into_chunks,
)
from methyl_distill.text.token_count import estimate_tokens


def _paper(paragraphs: int = 30, sentences: int = 6) -> str:
    return "\n\n".join(
        " ".join(
            f"Paragraph {p} sentence {s} reports SEPT9 hypermethylation in plasma of cohort {p * 10 + s}."
            for s in range(sentences)
        )
        for p in range(paragraphs)
    )


def _words(text: str) -> list[str]:
    return text.split()


def test_short_text_is_one_unchanged_chunk() -> None:
    text = "MGMT promoter methylation.\n\nTemozolomide response."
    assert split_into_chunks(text, 1000, 100) == [text]
    assert split_into_chunks("   ", 1000) == []


@pytest.mark.parametrize(("max_tokens", "overlap"), [(200, 0), (200, 60), (700, 150), (60, 20)])
def test_chunks_fit_cover_the_text_in_order_and_overlap_boundedly(max_tokens: int, overlap: int) -> None:
    text = _paper()
    chunks = split_into_chunks(text, max_tokens, overlap)
    assert len(chunks) > 1
    assert all(estimate_tokens(chunk) <= max_tokens for chunk in chunks)
    # Every sentence of the paper is in some chunk, and chunks advance through the text.
    sentences = re.findall(r"Paragraph \d+ sentence \d+", text)
    seen = [re.findall(r"Paragraph \d+ sentence \d+", chunk) for chunk in chunks]
    assert set(sentences) == {sentence for chunk in seen for sentence in chunk}
    starts = [sentences.index(chunk[0]) for chunk in seen]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    for previous, current in itertools.pairwise(seen):
        shared = set(previous) & set(current)
        if overlap == 0:
            assert not shared
        else:
            shared_text = " ".join(s for s in current if s in shared)
            assert estimate_tokens(shared_text) <= overlap


def test_paragraph_boundaries_are_preferred() -> None:
    text = _paper(paragraphs=8, sentences=3)
    paragraph_tokens = estimate_tokens(text.split("\n\n")[0])
    chunks = split_into_chunks(text, paragraph_tokens * 2 + 4)
    for chunk in chunks:
        for paragraph in chunk.split("\n\n"):
            assert paragraph in text.split("\n\n")  # whole paragraphs only


def test_long_paragraph_splits_on_sentences_then_words() -> None:
    paragraph = _paper(paragraphs=1, sentences=40)
    chunks = split_into_chunks(paragraph, 120)
    assert all(chunk.endswith(".") for chunk in chunks)  # sentence boundaries
    one_giant_sentence = " ".join(["methylated"] * 500) + "."
    word_chunks = split_into_chunks(one_giant_sentence, 50)
    assert all(estimate_tokens(chunk) <= 50 for chunk in word_chunks)
    assert _words(" ".join(word_chunks)) == _words(one_giant_sentence)
    unbroken = "ACGT" * 2000  # no whitespace at all
    cut = split_into_chunks(unbroken, 64)
    assert "".join(cut) == unbroken and all(estimate_tokens(chunk) <= 64 for chunk in cut)


def test_budget_is_what_context_and_tpm_leave() -> None:
    budget = chunk_token_budget(
        framing_tokens=1500,
        max_output_tokens=4096,
        context_tokens=128_000,
        request_token_limit=10_000,
        max_chunk_tokens=12_000,
    )
    assert budget <= 10_000 - 1500 - 4096
    assert budget > 10_000 - 1500 - 4096 - 200
    assert (
        chunk_token_budget(
            framing_tokens=1500,
            max_output_tokens=4096,
            context_tokens=128_000,
            request_token_limit=None,
            max_chunk_tokens=12_000,
        )
        == 12_000
    )
    with pytest.raises(ChunkBudgetError, match="max_tokens reserves 8000"):
        chunk_token_budget(
            framing_tokens=1500,
            max_output_tokens=8000,
            context_tokens=128_000,
            request_token_limit=9000,
            max_chunk_tokens=12_000,
        )


def test_config_validation() -> None:
    assert ChunkingConfig().overlap_tokens < ChunkingConfig().max_chunk_tokens
    with pytest.raises(ValidationError, match="at most half"):
        ChunkingConfig(max_chunk_tokens=1000, overlap_tokens=600)
    with pytest.raises(ValidationError):
        ChunkingConfig(max_chunk_tokens=MIN_CHUNK_TOKENS - 1)
    with pytest.raises(ValidationError):
        ChunkingConfig(unknown=1)  # type: ignore[call-arg]


def test_sentence_cuts_keep_closing_quotes_and_brackets_and_abbreviations() -> None:
    sentence = 'Paragraph sentence {} reports "SEPT9 hypermethylation (e.g. 120 men)." '
    paragraph = "".join(sentence.format(index) for index in range(40)).strip()
    chunks = split_into_chunks(paragraph, 120)
    assert len(chunks) > 1
    assert all(chunk.endswith('men)."') for chunk in chunks)  # cut after the closers, never inside
    assert _words(" ".join(chunks)) == _words(paragraph)
