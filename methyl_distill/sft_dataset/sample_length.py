"""Sample length in tokens, with the student's tokenizer or estimated, and the drop/truncate rule.

`EstimatedTokenCounter` gives exactly `methyl_distill.token_count.estimate_chat_tokens`, computed
with numpy over many texts at once (the regex version runs at ~15 MB/s, too slow for hundreds of
thousands of samples). `TokenizerTokenCounter` counts with a transformers tokenizer loaded from a
local folder, plus the chat template's framing measured once on a probe conversation.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Protocol

import numpy as np

from methyl_distill.sft_dataset.config import DatasetConfig
from methyl_distill.sft_dataset.paper_text import PaperText
from methyl_distill.sft_dataset.sample_builder import Sample, render_user
from methyl_distill.token_count import CHARS_PER_TOKEN, TOKENS_PER_MESSAGE, TOKENS_REPLY_PRIMING

logger = logging.getLogger(__name__)

_SPACE, _LETTER, _DIGIT, _OTHER = 0, 1, 2, 3


@cache
def _classes() -> np.ndarray:
    """Character classes of token_count's piece regex for the BMP: \\s, [A-Za-z], \\d, anything else."""
    import re

    space, digit = re.compile(r"\s"), re.compile(r"\d")
    table = np.full(0x10000, _OTHER, dtype=np.int8)
    for code in range(0x10000):
        char = chr(code)
        if space.match(char):
            table[code] = _SPACE
        elif digit.match(char):
            table[code] = _DIGIT
    for code in list(range(ord("A"), ord("Z") + 1)) + list(range(ord("a"), ord("z") + 1)):
        table[code] = _LETTER
    return table


_CHUNK_CHARS = 1 << 21  # moderate arrays: allocator-cached memory instead of fresh page faults


def estimate_tokens_many(texts: Sequence[str]) -> np.ndarray:
    """`token_count.estimate_tokens` of every text, vectorised: max(chars / 3.6, BPE-like pieces)."""
    out = np.zeros(len(texts), dtype=np.int64)
    begin = 0
    while begin < len(texts):
        end, size = begin, 0
        while end < len(texts) and (end == begin or size + len(texts[end]) < _CHUNK_CHARS):
            size += len(texts[end]) + 1
            end += 1
        out[begin:end] = _estimate_chunk(texts[begin:end])
        begin = end
    return out


def _estimate_chunk(texts: Sequence[str]) -> np.ndarray:
    lengths = np.fromiter((len(text) for text in texts), dtype=np.int64, count=len(texts))
    joined = "\n".join(texts)  # a separator of class 'space' ends every run at a text's end
    codes = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
    table = _classes()
    if codes.size and int(codes.max()) >= 0x10000:
        classes = table[np.minimum(codes, 0xFFFF)]
        for index in np.flatnonzero(codes >= 0x10000):  # astral characters: \d or 'other'
            classes[index] = _DIGIT if chr(int(codes[index])).isdecimal() else _OTHER
    else:
        classes = table[codes]
    text_starts = np.concatenate(([0], np.cumsum(lengths[:-1] + 1)))
    # Pieces: each 'other' character; each letter run costs 1 + (len - 1) // 6; each digit run ceil(len / 3).
    other = np.concatenate(([0], np.cumsum(classes == _OTHER, dtype=np.int64)))
    pieces = other[text_starts + lengths] - other[text_starts]
    for run_class, cost in ((_LETTER, lambda n: 1 + (n - 1) // 6), (_DIGIT, lambda n: (n + 2) // 3)):
        inside = np.concatenate(([0], (classes == run_class).view(np.int8), [0]))
        edges = np.flatnonzero(np.diff(inside))
        starts, ends = edges[0::2], edges[1::2]
        owner = np.searchsorted(text_starts, starts, side="right") - 1
        pieces += np.bincount(owner, weights=cost(ends - starts), minlength=len(texts)).astype(np.int64)
    by_chars = np.ceil(lengths / CHARS_PER_TOKEN).astype(np.int64)
    return np.maximum(by_chars, pieces)


class TokenCounter(Protocol):
    description: str

    def count(self, samples: Sequence[Sample], system_prompt: str) -> list[int]:
        """Tokens of each sample's whole conversation (system, user, assistant and framing)."""
        ...


class EstimatedTokenCounter:
    description = "estimated (methyl_distill.token_count, no tokenizer given)"

    def count(self, samples: Sequence[Sample], system_prompt: str) -> list[int]:
        texts = [text for sample in samples for text in (sample.user, sample.assistant)]
        per_text = estimate_tokens_many(texts)
        framing = TOKENS_REPLY_PRIMING + 2 * TOKENS_PER_MESSAGE
        if system_prompt:
            framing += TOKENS_PER_MESSAGE + int(estimate_tokens_many([system_prompt])[0])
        return (per_text[0::2] + per_text[1::2] + framing).tolist()


class TokenizerTokenCounter:
    """Counts with the student's tokenizer; the chat template's framing is measured once."""

    def __init__(self, tokenizer_path: str | Path) -> None:
        from transformers import AutoTokenizer

        path = Path(tokenizer_path)
        if not path.is_dir():
            raise FileNotFoundError(
                f"{path}: student tokenizer folder not found (a local folder is required)"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.description = f"student tokenizer at {path}"
        self._framing: dict[str, int] = {}

    def _encode_lengths(self, texts: list[str]) -> list[int]:
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [len(ids) for ids in encoded]

    def framing(self, system_prompt: str) -> int:
        """Tokens the chat template adds around the contents (special tokens, role markers)."""
        if system_prompt not in self._framing:
            probe = [{"role": "user", "content": "Which marker?"}, {"role": "assistant", "content": "MGMT."}]
            if system_prompt:
                probe.insert(0, {"role": "system", "content": system_prompt})
            contents = sum(self._encode_lengths([message["content"] for message in probe]))
            if getattr(self.tokenizer, "chat_template", None):
                total = len(self.tokenizer.apply_chat_template(probe, tokenize=True, return_dict=False))
            else:
                total = contents + 2 * len(probe)  # no template: a couple of special tokens per message
            self._framing[system_prompt] = max(0, total - contents)
        return self._framing[system_prompt]

    def count(self, samples: Sequence[Sample], system_prompt: str) -> list[int]:
        texts = [text for sample in samples for text in (sample.user, sample.assistant)]
        lengths = self._encode_lengths(texts) if texts else []
        fixed = self.framing(system_prompt) + (
            self._encode_lengths([system_prompt])[0] if system_prompt else 0
        )
        return [lengths[2 * i] + lengths[2 * i + 1] + fixed for i in range(len(samples))]


def make_token_counter(config: DatasetConfig) -> TokenCounter:
    if config.student_tokenizer:
        return TokenizerTokenCounter(config.student_tokenizer)
    return EstimatedTokenCounter()


_MAX_SHRINKS = 6


def enforce_max_length(
    samples: list[Sample],
    papers: dict[str, PaperText],
    counter: TokenCounter,
    config: DatasetConfig,
    drops: Counter[str],
) -> list[Sample]:
    """Set `tokens` on every sample; drop or truncate the ones over `config.max_length`."""
    kept: list[Sample] = []
    for sample, tokens in zip(samples, counter.count(samples, config.system_prompt), strict=True):
        sample.tokens = tokens
        if tokens <= config.max_length:
            kept.append(sample)
            continue
        paper = papers.get(sample.paper)
        truncatable = config.length_policy == "truncate" and sample.spans is not None and paper is not None
        if truncatable and _shrink_excerpt(sample, paper, counter, config):  # type: ignore[arg-type]
            kept.append(sample)
            continue
        drops["too_long"] += 1
    return kept


def _shrink_excerpt(sample: Sample, paper: PaperText, counter: TokenCounter, config: DatasetConfig) -> bool:
    """Cut the excerpt around the evidence until the sample fits; False if even the evidence is too long."""
    budget = sample.excerpt_budget
    tokens = sample.tokens
    for _ in range(_MAX_SHRINKS):
        budget = int(budget * min(0.95, config.max_length / tokens * 0.95))
        excerpt = paper.excerpt(list(sample.spans or ()), budget)
        if excerpt is None or budget < 50:
            return False
        trial = dataclasses.replace(sample, user=render_user(sample, config, excerpt))
        tokens = counter.count([trial], config.system_prompt)[0]
        if tokens <= config.max_length:
            sample.user, sample.tokens, sample.excerpt_budget = trial.user, tokens, budget
            sample.flags = (*sample.flags, "truncated")
            return True
    return False
