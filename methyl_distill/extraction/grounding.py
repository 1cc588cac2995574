"""Evidence grounding: every quote in a record can be found in its paper.

Whether a quote occurs is the project's one quote rule (`methyl_distill.text.quotes`): the quote and
the paper are compared by their folds (case, white space, line breaks, hyphenation, quote and dash
styles and Unicode forms do not matter; words, numbers and their order do), and an ellipsis inside a
quote separates fragments that must each occur. The dataset stage finds evidence by the same rule.
`EvidenceChecker` keeps the quotes that occur and counts the ones dropped.
"""

from __future__ import annotations

from collections.abc import Iterable

from methyl_distill.text.quotes import FoldedText, fold


class EvidenceChecker:
    """Keeps the quotes that occur in the paper; counts the ones dropped."""

    def __init__(self, paper_text: str) -> None:
        self._paper = FoldedText(paper_text)
        self.dropped = 0

    def occurs(self, quote: str) -> bool:
        return self._paper.occurs(quote)

    def keep(self, quotes: Iterable[str]) -> list[str]:
        """The quotes that occur, in order, each once (quotes with equal folds count as one)."""
        kept: list[str] = []
        seen: set[str] = set()
        for quote in quotes:
            quote = quote.strip()
            if not quote or fold(quote) in seen:
                continue
            if self.occurs(quote):
                kept.append(quote)
                seen.add(fold(quote))
            else:
                self.dropped += 1
        return kept
