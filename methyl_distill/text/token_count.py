"""Token estimates as OpenAI counts them, without a tokenizer download.

tiktoken fetches its encodings at first use, which cannot work offline, so the estimate is a
calibrated upper bound instead: GPT-4o's o200k encoding averages about 4 characters per token on
English prose and less on dense scientific text (gene symbols, cg ids, numbers). We take the larger
of a character-based and a piece-based count, so reservations err on the safe side; the token
bucket reconciles every reservation with the `usage` the server reports.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

# Pieces a BPE tokenizer rarely merges across: words, digit runs (split in threes), punctuation.
_PIECE = re.compile(r"[A-Za-z]+|\d{1,3}|[^\sA-Za-z\d]")

CHARS_PER_TOKEN = 3.6
# OpenAI's chat format: every message costs a few tokens of framing, and the reply is primed with 3.
TOKENS_PER_MESSAGE = 4
TOKENS_REPLY_PRIMING = 3


def estimate_tokens(text: str) -> int:
    """Upper-bound estimate of the tokens `text` costs."""
    if not text:
        return 0
    by_chars = math.ceil(len(text) / CHARS_PER_TOKEN)
    by_pieces = 0
    for piece in _PIECE.findall(text):
        # Long words split into several tokens (~6 characters each for rare scientific words).
        by_pieces += 1 + (len(piece) - 1) // 6 if piece.isalpha() else 1
    return max(by_chars, by_pieces)


def estimate_chat_tokens(messages: Iterable[Mapping[str, object]]) -> int:
    """Estimated prompt tokens of a chat request, framing included."""
    total = TOKENS_REPLY_PRIMING
    for message in messages:
        total += TOKENS_PER_MESSAGE
        content = message.get("content")
        if isinstance(content, str):
            total += estimate_tokens(content)
        elif isinstance(content, list):  # content parts
            for part in content:
                if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                    total += estimate_tokens(part["text"])  # type: ignore[arg-type]
    return total
