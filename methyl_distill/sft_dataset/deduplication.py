"""Exact and near-duplicate removal that stays fast at hundreds of thousands of samples.

Each sample contributes a *dedup text* (its question and answer, plus evidence, or its extraction
target's evidence: what makes it the sample it is). Texts are case-folded and cut into words (runs of
ASCII letters and digits and of non-ASCII characters); everything below is numpy over whole batches:

- words are hashed with a polynomial rolling hash over the UTF-8 bytes (prefix sums with wrapping
  uint64 arithmetic), so no Python work per word and no vocabulary;
- exact duplicates: the same word sequence (a 64-bit polynomial hash of the word hashes); the first
  sample wins;
- near duplicates: one-permutation MinHash over word bigrams (each bigram hash picks one of K bins,
  the bin keeps its minimum; empty bins are filled by rotation densification for banding), LSH
  banding with bands and rows chosen for the threshold, candidate pairs verified with the
  one-permutation estimate on the bins that held shingles, and
  a sample removed when it resembles an earlier kept one. Work is linear in the text; no pair loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_BASE = 0x100000001B3  # odd, so invertible modulo 2**64
_BASE_INVERSE = pow(_BASE, -1, 2**64)
_BATCH_BYTES = 1 << 21
_VERIFY_PAIRS = 1 << 16
_EMPTY = np.uint32(0xFFFFFFFF)
# Bytes that belong to words: ASCII letters and digits, and every byte of a non-ASCII character.
_WORD_BYTE = np.zeros(256, dtype=bool)
_WORD_BYTE[[*range(48, 58), *range(65, 91), *range(97, 123), *range(128, 256)]] = True


def _mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads values over 64 bits (wrapping uint64 arithmetic)."""
    with np.errstate(over="ignore"):
        z = values + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


# Powers of a base, computed once per process and grown as needed (a batch needs as many as its bytes).
_POWERS: dict[int, np.ndarray] = {}


def _powers(base: int, count: int) -> np.ndarray:
    """base**0 .. base**(count - 1) modulo 2**64 (a read-only view of the process-wide table)."""
    table = _POWERS.get(base)
    if table is None or table.size < count:
        size = -(-count // (1 << 20)) * (1 << 20)  # whole MiB of entries: few regrowths
        table = np.full(size, base, dtype=np.uint64)
        table[0] = 1
        with np.errstate(over="ignore"):
            table = np.cumprod(table, dtype=np.uint64)
        table.flags.writeable = False
        _POWERS[base] = table
    return table[:count]


def _segment_hash(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Polynomial hash of values[start:end] for every segment, from one prefix sum (mod 2**64)."""
    forward, inverse = _powers(_BASE, values.size + 1), _powers(_BASE_INVERSE, values.size + 1)
    with np.errstate(over="ignore"):
        prefix = np.concatenate(([np.uint64(0)], np.cumsum(values * forward[:-1], dtype=np.uint64)))
        return (prefix[ends] - prefix[starts]) * inverse[starts]


def word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The hash of every word of `texts` (in order) and the number of words of each text."""
    joined = "\x00".join(texts).casefold()
    if joined.count("\x00") != len(texts) - 1:  # a text with NUL characters: make them spaces
        joined = "\x00".join(text.replace("\x00", " ") for text in texts).casefold()
    data = np.frombuffer(joined.encode("utf-8"), dtype=np.uint8)
    inside = np.concatenate(([0], _WORD_BYTE[data].view(np.int8), [0]))
    edges = np.flatnonzero(np.diff(inside))
    starts, ends = edges[0::2], edges[1::2]
    hashes = _mix64(_segment_hash(data.astype(np.uint64), starts, ends))
    owner = np.cumsum(data == 0)[starts] if starts.size else np.zeros(0, dtype=np.int64)
    return hashes, np.bincount(owner, minlength=len(texts))


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


@dataclass(frozen=True)
class Signatures:
    """What the finder keeps of a batch of texts (made where the texts are, e.g. in a worker)."""

    keys: np.ndarray  # 64-bit exact keys
    dense: np.ndarray  # (texts, bins) uint32 densified one-permutation MinHash
    filled: np.ndarray  # (texts, bins / 8) bins that held a shingle before densification, bit-packed
    has_words: np.ndarray  # bool per text


def sign_texts(texts: Sequence[str], bins: int = 64, seed: int = 0) -> Signatures:
    """Exact keys and MinHash signatures of `texts`, in batches of about 2 MB of text."""
    parts = []
    begin = 0
    while begin < len(texts):
        end, size = begin, 0
        while end < len(texts) and (end == begin or size + len(texts[end]) < _BATCH_BYTES):
            size += len(texts[end]) + 1
            end += 1
        parts.append(_sign_batch(texts[begin:end], bins, np.uint64(seed & 0xFFFFFFFF)))
        begin = end
    if not parts:
        return Signatures(
            np.zeros(0, np.uint64), np.zeros((0, bins), np.uint32), np.zeros((0, (bins + 7) // 8), np.uint8),
            np.zeros(0, bool),
        )  # fmt: skip
    return Signatures(
        *(np.concatenate([getattr(part, item.name) for part in parts]) for item in fields(Signatures))
    )


def _sign_batch(texts: Sequence[str], bins: int, salt: np.uint64) -> Signatures:
    hashes, counts = word_hashes(texts)
    mixed = _mix64(hashes ^ salt)
    text_starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    keys = _mix64(_segment_hash(mixed, text_starts, text_starts + counts) ^ counts.astype(np.uint64))
    owner = np.repeat(np.arange(len(texts)), counts)
    # Shingles: word bigrams inside a text; a one-word text is its word.
    same_text = owner[1:] == owner[:-1]
    with np.errstate(over="ignore"):
        bigrams = _mix64(mixed[:-1] * _GOLDEN + mixed[1:])[same_text]
    single = np.flatnonzero(counts == 1)
    shingles = np.concatenate((bigrams, mixed[text_starts[single]]))
    shingle_owner = np.concatenate((owner[:-1][same_text], single))
    signatures = np.full(len(texts) * bins, _EMPTY, dtype=np.uint32)
    slots = shingle_owner * bins + (shingles % np.uint64(bins)).astype(np.int64)
    np.minimum.at(signatures, slots, (shingles >> np.uint64(33)).astype(np.uint32))
    raw = signatures.reshape(len(texts), bins)
    return Signatures(keys, _densify(raw), np.packbits(raw != _EMPTY, axis=1), counts > 0)


class DuplicateFinder:
    """Collects signatures of dedup texts (keys and MinHash only) and decides at the end."""

    def __init__(self, threshold: float, permutations: int = 64, seed: int = 0) -> None:
        self.threshold = threshold
        self.bins = permutations
        self.seed = seed
        self._parts: list[Signatures] = []

    def add(self, texts: Sequence[str]) -> None:
        self.add_signed(sign_texts(texts, self.bins, self.seed))

    def add_signed(self, signatures: Signatures) -> None:
        if signatures.dense.shape[1] != self.bins:
            raise ValueError(f"signatures have {signatures.dense.shape[1]} bins, the finder {self.bins}")
        self._parts.append(signatures)

    def verdict(self) -> DuplicateVerdict:
        if not self._parts:
            empty = np.zeros(0, dtype=bool)
            return DuplicateVerdict(empty, empty.copy())
        keys = np.concatenate([part.keys for part in self._parts])
        _, first = np.unique(keys, return_index=True)
        exact = np.ones(keys.size, dtype=bool)
        exact[first] = False
        near = np.zeros(keys.size, dtype=bool)
        if self.threshold >= 1.0:
            return DuplicateVerdict(exact, near)
        signatures = np.concatenate([part.dense for part in self._parts])
        filled = np.concatenate([part.filled for part in self._parts])
        candidates = np.flatnonzero(np.concatenate([part.has_words for part in self._parts]) & ~exact)
        if candidates.size < 2:
            return DuplicateVerdict(exact, near)
        bands, rows = lsh_parameters(self.threshold, self.bins)
        coefficients = _mix64(np.arange(1, rows + 1, dtype=np.uint64))
        pairs = []
        for band in range(bands):
            block = signatures[candidates, band * rows : (band + 1) * rows].astype(np.uint64)
            with np.errstate(over="ignore"):
                keys_band = _mix64((block * coefficients).sum(axis=1, dtype=np.uint64) + np.uint64(band))
            order = np.argsort(keys_band, kind="stable")
            sorted_keys = keys_band[order]
            group_start = np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1]))
            first_of_group = order[np.maximum.accumulate(np.where(group_start, np.arange(order.size), 0))]
            members = ~group_start
            if members.any():
                pair = np.stack([candidates[first_of_group[members]], candidates[order[members]]], axis=1)
                pairs.append(pair)
        if not pairs:
            return DuplicateVerdict(exact, near)
        # Distinct (earlier, later) rows in lexicographic order, via one int64 key per pair: a plain
        # sort, much faster than np.unique(axis=0) on rows (sample counts are far below 2**31).
        stacked = np.concatenate(pairs).astype(np.int64)
        pair_keys = np.unique(stacked[:, 0] * keys.size + stacked[:, 1])
        unique_pairs = np.stack((pair_keys // keys.size, pair_keys % keys.size), axis=1)
        verified = []
        for start in range(0, len(unique_pairs), _VERIFY_PAIRS):  # bounded memory: pairs x bins at a time
            chunk = unique_pairs[start : start + _VERIFY_PAIRS]
            verified.append(chunk[self._similarity(signatures, filled, chunk) >= self.threshold])
        edges = np.concatenate(verified)
        near[_later_members(edges)] = True
        return DuplicateVerdict(exact, near)

    def _similarity(self, signatures: np.ndarray, filled: np.ndarray, pairs: np.ndarray) -> np.ndarray:
        """One-permutation Jaccard estimate of each pair on the bins as filled before densification:
        equal non-empty bins / bins non-empty in either (Li, Owen & Zhang 2012). Densified bins are
        correlated, so counting them would inflate the similarity of short texts."""
        left = np.unpackbits(filled[pairs[:, 0]], axis=1, count=self.bins).astype(bool)
        right = np.unpackbits(filled[pairs[:, 1]], axis=1, count=self.bins).astype(bool)
        matches = ((signatures[pairs[:, 0]] == signatures[pairs[:, 1]]) & left & right).sum(axis=1)
        either = (left | right).sum(axis=1)
        return matches / np.maximum(either, 1)


def _densify(signatures: np.ndarray) -> np.ndarray:
    """Rotation densification: an empty bin takes the next non-empty bin's value (circularly), offset
    by the distance, so that equal bins stay as likely as the Jaccard similarity (Shrivastava & Li)."""
    rows, bins = signatures.shape
    filled = signatures != _EMPTY
    if filled.all() or rows == 0:
        return signatures
    doubled = np.concatenate((filled, filled), axis=1)
    positions = np.where(doubled, np.arange(2 * bins), 2 * bins)
    nearest = np.minimum.accumulate(positions[:, ::-1], axis=1)[:, ::-1][:, :bins]
    empty_rows = nearest[:, 0] >= 2 * bins
    nearest[empty_rows] = np.arange(bins)  # texts without words: left as they are (never candidates)
    distance = (nearest - np.arange(bins)).astype(np.uint32)
    source = np.take_along_axis(signatures, nearest % bins, axis=1)
    with np.errstate(over="ignore"):
        dense = source + distance * np.uint32(0x9E3779B1)
    return np.where(filled | empty_rows[:, None], signatures, dense)


def _later_members(edges: np.ndarray) -> np.ndarray:
    """Samples with a verified edge to an earlier sample that is itself kept (decided in order).

    Unlike connected components, this never removes a sample for a chain of resemblances
    (A ~ B ~ C with A and C unlike): each removed sample resembles a kept, earlier one.
    """
    if edges.size == 0:
        return np.zeros(0, dtype=np.int64)
    ordered = np.sort(edges, axis=1)
    ordered = ordered[np.lexsort((ordered[:, 0], ordered[:, 1]))]
    removed: set[int] = set()
    for earlier, later in ordered.tolist():
        if later not in removed and earlier not in removed:
            removed.add(later)
    return np.array(sorted(removed), dtype=np.int64)
