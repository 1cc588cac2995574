"""Sample length in tokens, with the student's tokenizer or estimated, and the rules that make
samples fit `max_length`: Q&A samples are dropped or truncated (`length_policy`); extraction samples
are always re-packed into smaller ones until they fit (`extraction_packing.py`).

`EstimatedTokenCounter` gives exactly `methyl_distill.text.token_count.estimate_chat_tokens`, computed
with numpy over many texts at once (the regex version runs at ~15 MB/s, too slow for hundreds of
thousands of samples). `TokenizerTokenCounter` counts with a transformers tokenizer loaded from a
local folder, plus the chat template's framing measured once on a probe conversation.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from methyl_distill.sft_dataset.config import DatasetConfig
from methyl_distill.sft_dataset.paper_text import PaperText, evidence_chars
from methyl_distill.sft_dataset.sample_builder import (
    Sample,
    sample_messages,
    split_extraction_sample,
    with_excerpt,
)
from methyl_distill.sft_dataset.token_estimate import estimate_pieces_many, estimate_tokens_many, run_class
from methyl_distill.text.token_count import CHARS_PER_TOKEN, TOKENS_PER_MESSAGE, TOKENS_REPLY_PRIMING

logger = logging.getLogger(__name__)


class TokenCounter(Protocol):
    description: str

    def count(self, samples: Sequence[Sample], system_prompt: str) -> list[int]:
        """Tokens of each sample's whole conversation (system, user, assistant and framing)."""
        ...


class EstimatedTokenCounter:
    """`token_count.estimate_chat_tokens` of each sample, exactly, without re-reading excerpts.

    An excerpt's pieces come from its paper's prefix sums (`Sample.excerpt_pieces`); the rest of the
    user message (template and question) is estimated here. That is exact when the templates keep
    their placeholders apart from letters and digits, which `__init__` checks (else: direct count).
    """

    description = "estimated (methyl_distill.text.token_count, no tokenizer given)"

    def __init__(self, config: DatasetConfig) -> None:
        self._static: dict[str, tuple[int, int] | None] = {
            "grounded": _template_static(config.grounded_template),
            "extraction": _template_static(config.extraction_template),
        }

    def count(self, samples: Sequence[Sample], system_prompt: str) -> list[int]:
        framing = TOKENS_REPLY_PRIMING + 2 * TOKENS_PER_MESSAGE
        if system_prompt:
            framing += TOKENS_PER_MESSAGE + int(estimate_tokens_many([system_prompt])[0])
        texts: list[str] = []
        composed: list[tuple[int, int, int]] = []  # (sample index, static pieces, excerpt pieces)
        for index, sample in enumerate(samples):
            static = self._static.get(sample.style)
            if static is not None and sample.excerpt_pieces is not None:
                composed.append((index, static[1], sample.excerpt_pieces))
                texts.append(sample.question or "")
            else:
                texts.append(sample.user)
            texts.append(sample.assistant)
        per_text = estimate_tokens_many(texts)
        tokens = per_text[0::2] + per_text[1::2] + framing
        if composed:
            rows = np.array([row for row, _, _ in composed], dtype=np.int64)
            question_pieces = estimate_pieces_many([texts[2 * row] for row in rows])
            pieces = question_pieces + np.array([static + excerpt for _, static, excerpt in composed])
            chars = np.fromiter((len(samples[row].user) for row in rows), dtype=np.int64, count=rows.size)
            user = np.maximum(np.ceil(chars / CHARS_PER_TOKEN).astype(np.int64), pieces)
            tokens[rows] = user + per_text[2 * rows + 1] + framing
        return tokens.tolist()


def _template_static(template: str) -> tuple[int, int] | None:
    """(chars, pieces) of a template without its placeholders, or None if a placeholder touches a
    letter or digit (pieces would not add up)."""
    for placeholder in ("{excerpt}", "{question}"):
        position = template.find(placeholder)
        if position < 0:
            continue
        end = position + len(placeholder)
        neighbours = template[position - 1 : position] + template[end : end + 1]
        if any(run_class(char) in (1, 2) for char in neighbours):
            return None
    static = template.format(excerpt="", question="")
    return len(static), int(estimate_pieces_many([static])[0])


class TokenizerTokenCounter:
    """Counts with the student's tokenizer: each conversation rendered by its chat template and
    tokenized, in batches (exactly what `apply_chat_template(..., tokenize=True)` gives). Without a
    chat template, the contents plus the special tokens of a plain encoding per message."""

    def __init__(self, tokenizer_path: str | Path) -> None:
        from transformers import AutoTokenizer

        path = Path(tokenizer_path)
        if not path.is_dir():
            raise FileNotFoundError(
                f"{path}: student tokenizer folder not found (a local folder is required)"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.description = f"student tokenizer at {path}"
        self._has_template = bool(getattr(self.tokenizer, "chat_template", None))

    def _lengths(self, texts: list[str], special: bool) -> list[int]:
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=special)["input_ids"]]

    def count(self, samples: Sequence[Sample], system_prompt: str) -> list[int]:
        if not samples:
            return []
        if not self._has_template:
            texts = [text for sample in samples for text in (sample.user, sample.assistant)]
            lengths = self._lengths(texts, special=True)
            fixed = self._lengths([system_prompt], special=True)[0] if system_prompt else 0
            return [lengths[2 * i] + lengths[2 * i + 1] + fixed for i in range(len(samples))]
        rendered = [
            str(self.tokenizer.apply_chat_template(sample_messages(sample, system_prompt), tokenize=False))
            for sample in samples
        ]
        return self._lengths(rendered, special=False)


def make_token_counter(config: DatasetConfig) -> TokenCounter:
    if config.student_tokenizer:
        return TokenizerTokenCounter(config.student_tokenizer)
    return EstimatedTokenCounter(config)


_MAX_SHRINKS = 6
_MIN_EXCERPT_CHARS = 50


def enforce_max_length(
    samples: list[Sample],
    papers: dict[str, PaperText],
    counter: TokenCounter,
    config: DatasetConfig,
    drops: Counter[str],
) -> list[Sample]:
    """Set `tokens` on every sample; make the ones over `config.max_length` fit or drop them.

    Extraction samples are split and shortened until they fit (`fit_extraction`); the others are
    dropped, or with `length_policy = "truncate"` their excerpt is cut around the evidence."""
    kept: list[Sample] = []
    for sample, tokens in zip(samples, counter.count(samples, config.system_prompt), strict=True):
        sample.tokens = tokens
        if tokens <= config.max_length:
            kept.append(sample)
            continue
        paper = papers.get(sample.paper)
        if sample.style == "extraction" and sample.targets and paper is not None:
            kept.extend(fit_extraction(sample, paper, counter, config, drops))
            continue
        truncatable = config.length_policy == "truncate" and sample.spans is not None and paper is not None
        if truncatable and _shrink_excerpt(sample, paper, counter, config):  # type: ignore[arg-type]
            kept.append(sample)
            continue
        drops["too_long"] += 1
    return kept


def fit_extraction(
    sample: Sample, paper: PaperText, counter: TokenCounter, config: DatasetConfig, drops: Counter[str]
) -> list[Sample]:
    """An extraction sample over max_length (its `tokens` counted) as samples that fit, in order: its
    markers split into balanced groups, recursively; one marker's excerpt shortened around its
    evidence. A marker that does not fit with its evidence alone is dropped
    (`marker_evidence_too_long`)."""
    if len(sample.targets) == 1:
        if _shrink_excerpt(sample, paper, counter, config):
            return [sample]
        drops["marker_evidence_too_long"] += 1
        return []
    parts = split_extraction_sample(sample, paper, config, max(2, -(-sample.tokens // config.max_length)))
    fitted: list[Sample] = []
    for part, tokens in zip(parts, counter.count(parts, config.system_prompt), strict=True):
        part.tokens = tokens
        if tokens <= config.max_length:
            fitted.append(part)
        else:
            fitted.extend(fit_extraction(part, paper, counter, config, drops))
    return fitted


def _shrink_excerpt(sample: Sample, paper: PaperText, counter: TokenCounter, config: DatasetConfig) -> bool:
    """Cut the excerpt around the evidence until the sample fits, at the last try to the evidence
    alone; False if even that is too long."""
    spans = list(sample.spans or ())
    floor = max(_MIN_EXCERPT_CHARS, evidence_chars(spans))
    budget = sample.excerpt_budget
    tokens = sample.tokens
    for attempt in range(_MAX_SHRINKS + 1):
        if budget <= floor:
            return False  # the excerpt is already as short as it can be
        budget = max(floor, int(budget * min(0.95, config.max_length / tokens * 0.95)))
        if attempt == _MAX_SHRINKS:
            budget = floor
        excerpt = paper.excerpt(spans, budget)
        if excerpt is None:
            return False
        trial = with_excerpt(sample, config, excerpt)
        tokens = counter.count([trial], config.system_prompt)[0]
        if tokens <= config.max_length:
            sample.user, sample.tokens, sample.excerpt_budget = trial.user, tokens, budget
            sample.excerpt_pieces = trial.excerpt_pieces
            sample.flags = (*sample.flags, "truncated")
            return True
    return False
