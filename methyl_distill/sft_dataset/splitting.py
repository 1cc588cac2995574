"""Train / validation / test split by paper: no paper's samples in two splits; seeded and deterministic."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Literal

SplitName = Literal["train", "validation", "test"]
SPLITS: tuple[SplitName, ...] = ("train", "validation", "test")


def split_sizes(papers: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """Papers per split. Training always keeps at least one paper; a non-zero fraction gets at least
    one paper when the corpus allows it (test before validation: 2 papers -> 1 train, 1 test)."""
    if papers <= 0:
        return 0, 0, 0
    test = round(papers * test_fraction)
    val = round(papers * val_fraction)
    if test_fraction > 0 and papers >= 2:
        test = max(test, 1)
    if val_fraction > 0 and papers >= 3:
        val = max(val, 1)
    while test + val > papers - 1:  # leave at least one paper for training
        if val > 0:
            val -= 1
        else:
            test -= 1
    return papers - val - test, val, test


def split_by_paper(
    papers: Iterable[str], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, SplitName]:
    """Assign each paper (its content sha256) to a split.

    Papers are ordered by a seeded hash of their id (independent of input order and of
    PYTHONHASHSEED); the first ones go to test, the next to validation, the rest to training.
    """
    unique = sorted(set(papers))
    ordered = sorted(unique, key=lambda paper: hashlib.blake2b(f"{seed}\x1f{paper}".encode()).digest())
    _, val, test = split_sizes(len(ordered), val_fraction, test_fraction)
    assignment: dict[str, SplitName] = {}
    for position, paper in enumerate(ordered):
        assignment[paper] = "test" if position < test else "validation" if position < test + val else "train"
    return assignment
