"""Exact and near-duplicate removal that stays fast at hundreds of thousands of samples.

Each sample contributes a *dedup text* (its question and answer, plus evidence, or its extraction
target: what makes it the sample it is). The text is case-folded and cut into words:

- exact duplicates: the same word sequence (a 64-bit blake2b of it); the first sample wins;
- near duplicates: MinHash over word bigrams (multiply-shift hashes, numpy, in batches), LSH banding
  with bands and rows chosen for the threshold, candidate pairs verified on the full signature, and
  connected candidates resolved to their first sample. Work is linear in the text; no pair loop.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_WORD = re.compile(r"\w+")
_MASK64 = (1 << 64) - 1
_START_ID = np.uint64(0xFFFF_FFFF_FFFF)  # a word id no real word gets: marks each text's start
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_BATCH_SHINGLES = 1 << 18


def _mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads word ids over 64 bits (wrapping uint64 arithmetic)."""
    with np.errstate(over="ignore"):
        z = values + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def lsh_parameters(threshold: float, permutations: int) -> tuple[int, int]:
    """Bands and rows (bands * rows <= permutations) minimising false positives + false negatives
    around `threshold`, as datasketch does: P(candidate | J) = 1 - (1 - J^rows)^bands."""
    grid = np.linspace(0, 1, 201)
    best, best_error = (1, permutations), float("inf")
    for bands in range(1, permutations + 1):
        rows = permutations // bands
        probability = 1 - (1 - grid**rows) ** bands
        below, above = grid < threshold, grid >= threshold
        error = float(np.trapezoid(np.where(below, probability, 0), grid)) + float(
            np.trapezoid(np.where(above, 1 - probability, 0), grid)
        )
        if error < best_error:
            best, best_error = (bands, rows), error
    return best


@dataclass(frozen=True)
class DuplicateVerdict:
    """Per sample (in the order added): removed as an exact or a near duplicate of an earlier sample."""

    exact: np.ndarray
    near: np.ndarray

    @property
    def keep(self) -> np.ndarray:
        return ~(self.exact | self.near)


class DuplicateFinder:
    """Collects dedup texts in batches (signatures only are kept) and decides at the end."""

    def __init__(self, threshold: float, permutations: int = 64, seed: int = 0) -> None:
        self.threshold = threshold
        self.permutations = permutations
        rng = np.random.default_rng(seed)
        self._a = rng.integers(1, 2**63, size=permutations, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self._b = rng.integers(0, 2**63, size=permutations, dtype=np.uint64)
        self._vocabulary: dict[str, int] = {}
        self._exact_seen: set[int] = set()
        self._exact: list[bool] = []
        self._signatures: list[np.ndarray] = []
        self._has_words: list[np.ndarray] = []
        self._pending: list[list[str]] = []
        self._pending_words = 0

    def add(self, texts: Sequence[str]) -> None:
        vocabulary = self._vocabulary
        for text in texts:
            words = _WORD.findall(text.casefold())
            key = int.from_bytes(hashlib.blake2b(" ".join(words).encode(), digest_size=8).digest(), "little")
            duplicate = key in self._exact_seen
            self._exact_seen.add(key)
            self._exact.append(duplicate)
            self._pending.append(words)
            self._pending_words += len(words) + 1
            if self._pending_words >= _BATCH_SHINGLES:
                self._flush(vocabulary)

    def _flush(self, vocabulary: dict[str, int]) -> None:
        if not self._pending:
            return
        ids: list[int] = []
        counts = np.empty(len(self._pending), dtype=np.int64)
        for index, words in enumerate(self._pending):
            ids.append(int(_START_ID))
            ids.extend([vocabulary.setdefault(word, len(vocabulary)) for word in words])
            counts[index] = len(words)
        self._pending, self._pending_words = [], 0
        sequence = np.array(ids, dtype=np.uint64)
        mixed = _mix64(sequence)
        with np.errstate(over="ignore"):
            bigrams = _mix64(mixed[:-1] * _GOLDEN + mixed[1:])
        bigrams = bigrams[sequence[1:] != _START_ID]  # drop the pairs that span two texts
        signatures = np.full((len(counts), self.permutations), np.iinfo(np.uint32).max, dtype=np.uint32)
        has_words = counts > 0
        if bigrams.size:
            starts = np.concatenate(([0], np.cumsum(counts)[:-1]))[has_words]
            with np.errstate(over="ignore"):
                hashed = ((bigrams[:, None] * self._a[None, :] + self._b[None, :]) >> np.uint64(32)).astype(
                    np.uint32
                )
            signatures[has_words] = np.minimum.reduceat(hashed, starts, axis=0)
        self._signatures.append(signatures)
        self._has_words.append(has_words)

    def verdict(self) -> DuplicateVerdict:
        self._flush(self._vocabulary)
        exact = np.array(self._exact, dtype=bool)
        near = np.zeros(len(exact), dtype=bool)
        if not self._signatures or self.threshold >= 1.0:
            return DuplicateVerdict(exact, near)
        signatures = np.concatenate(self._signatures)
        eligible = np.concatenate(self._has_words) & ~exact
        candidates = np.flatnonzero(eligible)
        if candidates.size < 2:
            return DuplicateVerdict(exact, near)
        bands, rows = lsh_parameters(self.threshold, self.permutations)
        pairs = []
        coefficients = _mix64(np.arange(rows, dtype=np.uint64))
        for band in range(bands):
            block = signatures[candidates, band * rows : (band + 1) * rows].astype(np.uint64)
            with np.errstate(over="ignore"):
                keys = _mix64((block * coefficients[None, :]).sum(axis=1, dtype=np.uint64) + np.uint64(band))
            order = np.argsort(keys, kind="stable")
            sorted_keys = keys[order]
            group_start = np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1]))
            first_of_group = order[np.maximum.accumulate(np.where(group_start, np.arange(order.size), 0))]
            members = ~group_start
            if members.any():
                pairs.append(
                    np.stack([candidates[first_of_group[members]], candidates[order[members]]], axis=1)
                )
        if not pairs:
            return DuplicateVerdict(exact, near)
        unique_pairs = np.unique(np.concatenate(pairs), axis=0)
        similarity = (signatures[unique_pairs[:, 0]] == signatures[unique_pairs[:, 1]]).mean(axis=1)
        edges = unique_pairs[similarity >= self.threshold]
        near[_later_members(edges, len(exact))] = True
        return DuplicateVerdict(exact, near)


def _later_members(edges: np.ndarray, size: int) -> np.ndarray:
    """Indices that are not the smallest of their connected component (union-find over the edges)."""
    parent: dict[int, int] = {}

    def find(node: int) -> int:
        root = node
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(node, node) != root:
            parent[node], node = root, parent[node]
        return root

    for left, right in edges.tolist():
        a, b = find(left), find(right)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return np.array([node for node in parent if find(node) != node], dtype=np.int64)
