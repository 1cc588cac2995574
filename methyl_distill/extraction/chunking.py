"""Splitting long papers into chunks that fit one teacher request.

A request must fit both the model's context window and the tokens-per-minute limit (OpenAI
rejects a single request larger than the TPM limit outright): prompt framing + questions + chunk
+ max_tokens <= min(context, TPM). `chunk_token_budget` computes what is left for the paper text;
`split_into_chunks` cuts the text on paragraph boundaries, then sentences, then words, and repeats
a configurable overlap between neighbouring chunks so a finding split across a boundary is seen
whole by at least one request. Sentences are those of `methyl_distill.text.sentences` without line
breaks as boundaries (inside a paragraph a line break is hard wrapping, and cutting there would cut
sentences). Token counts are the upper-bound estimates of `token_count`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

from methyl_distill.text.sentences import split_sentences
from methyl_distill.text.token_count import estimate_tokens

# Below this many tokens of paper text per request, chunking a paper is pointless.
MIN_CHUNK_TOKENS = 128
# Headroom for the gap between our estimate of the framing and the server's count.
SAFETY_MARGIN_TOKENS = 64

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


class ChunkingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_chunk_tokens: int = Field(
        default=12_000,
        ge=MIN_CHUNK_TOKENS,
        description="Most paper-text tokens per request; lowered further when the request budget is tighter.",
    )
    overlap_tokens: int = Field(
        default=200, ge=0, description="Tokens of text repeated at the start of the next chunk."
    )

    @model_validator(mode="after")
    def _overlap_below_half(self) -> ChunkingConfig:
        if self.overlap_tokens * 2 > self.max_chunk_tokens:
            raise ValueError(
                f"overlap_tokens ({self.overlap_tokens}) must be at most half of max_chunk_tokens "
                f"({self.max_chunk_tokens})"
            )
        return self


class ChunkBudgetError(ValueError):
    """The prompt framing and max_tokens leave no room for paper text in one request."""


def chunk_token_budget(
    *,
    framing_tokens: int,
    max_output_tokens: int,
    context_tokens: int,
    request_token_limit: int | None,
    max_chunk_tokens: int,
) -> int:
    """Paper-text tokens one request can carry.

    `framing_tokens` is the estimated prompt without the paper text (system prompt, questions,
    chat framing); `request_token_limit` is the most one request may cost (the TPM limit), or None.
    """
    ceiling = context_tokens if request_token_limit is None else min(context_tokens, request_token_limit)
    room = ceiling - framing_tokens - max_output_tokens - SAFETY_MARGIN_TOKENS
    budget = min(max_chunk_tokens, room)
    if budget < MIN_CHUNK_TOKENS:
        raise ChunkBudgetError(
            f"a request allows {ceiling} tokens, but the prompt framing takes ~{framing_tokens} and "
            f"max_tokens reserves {max_output_tokens}: only {max(room, 0)} left for paper text "
            f"(at least {MIN_CHUNK_TOKENS} needed); lower the max output tokens or shorten the question bank"
        )
    return budget


@dataclass(frozen=True)
class _Piece:
    text: str
    separator: str  # joins this piece to the one before it
    tokens: int


def _cost(piece: _Piece) -> int:
    # One token for the separator keeps the sum an upper bound of the joined text's estimate.
    return piece.tokens + 1


def _split_words(text: str, max_tokens: int, separator: str) -> list[_Piece]:
    pieces: list[_Piece] = []
    current: list[str] = []
    for word in text.split():
        while estimate_tokens(word) > max_tokens - 1:  # one enormous "word": cut it by characters
            cut = max(1, len(word) // 2)
            while estimate_tokens(word[:cut]) > max_tokens - 1:
                cut //= 2
            if current:
                pieces.append(_Piece(" ".join(current), separator if not pieces else " ", 0))
                current = []
            pieces.append(_Piece(word[:cut], separator if not pieces else " ", 0))
            word = word[cut:]
        if current and estimate_tokens(" ".join([*current, word])) > max_tokens - 1:
            pieces.append(_Piece(" ".join(current), separator if not pieces else " ", 0))
            current = []
        current.append(word)
    if current:
        pieces.append(_Piece(" ".join(current), separator if not pieces else " ", 0))
    return [_Piece(piece.text, piece.separator, estimate_tokens(piece.text)) for piece in pieces]


def _pieces(text: str, max_tokens: int) -> list[_Piece]:
    """Paragraphs, or sentences (or word runs) of paragraphs too long for one chunk."""
    pieces: list[_Piece] = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        separator = "\n\n" if pieces else ""
        tokens = estimate_tokens(paragraph)
        if tokens + 1 <= max_tokens:
            pieces.append(_Piece(paragraph, separator, tokens))
            continue
        for index, sentence in enumerate(split_sentences(paragraph, line_breaks=False)):
            sentence_separator = separator if index == 0 else " "
            tokens = estimate_tokens(sentence)
            if tokens + 1 <= max_tokens:
                pieces.append(_Piece(sentence, sentence_separator, tokens))
            else:
                pieces.extend(_split_words(sentence, max_tokens, sentence_separator))
    return pieces


def _join(pieces: list[_Piece]) -> str:
    return "".join((piece.separator if index else "") + piece.text for index, piece in enumerate(pieces))


def split_into_chunks(text: str, max_tokens: int, overlap_tokens: int = 0) -> list[str]:
    """Cut `text` into chunks of at most `max_tokens` estimated tokens, on the most natural boundaries.

    Consecutive chunks share up to `overlap_tokens` tokens of whole paragraphs or sentences. A text
    that fits is returned whole, unchanged.
    """
    if max_tokens < 2:
        raise ValueError(f"max_tokens must be at least 2, got {max_tokens}")
    if overlap_tokens * 2 > max_tokens:
        raise ValueError(
            f"overlap_tokens ({overlap_tokens}) must be at most half of max_tokens ({max_tokens})"
        )
    text = text.strip()
    if not text:
        return []
    if estimate_tokens(text) <= max_tokens:
        return [text]

    pieces = _pieces(text, max_tokens)
    chunks: list[str] = []
    current: list[_Piece] = []
    current_cost = 0
    fresh = 0  # pieces of `current` not already sent in the previous chunk
    for piece in pieces:
        if current and current_cost + _cost(piece) > max_tokens:
            chunks.append(_join(current))
            # Carry trailing pieces as overlap, never the whole chunk, and leave room for this piece.
            carried: list[_Piece] = []
            carried_cost = 0
            for previous in reversed(current[1:]):
                if carried_cost + _cost(previous) > overlap_tokens:
                    break
                carried.insert(0, previous)
                carried_cost += _cost(previous)
            while carried and carried_cost + _cost(piece) > max_tokens:
                carried_cost -= _cost(carried.pop(0))
            current, current_cost, fresh = carried, carried_cost, 0
        current.append(piece)
        current_cost += _cost(piece)
        fresh += 1
    if current and fresh:
        chunks.append(_join(current))
    return chunks
