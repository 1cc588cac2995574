"""SHA-256 digests of files and texts: the identities caches and records are keyed by.

A text is hashed as its UTF-8 bytes; a file as its bytes, read in 1 MiB blocks so a file of any size
is hashed in constant memory. `update_with_file` feeds a file into a digest that covers more than
one file (a fingerprint of several files, or of files and settings).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

__all__ = ["sha256_of_file", "sha256_of_text", "update_with_file"]

_BLOCK_BYTES = 1 << 20


class Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...


def update_with_file(digest: Digest, path: str | Path) -> None:
    """Feed the bytes of the file at `path` into `digest`, block by block."""
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK_BYTES):
            digest.update(block)


def sha256_of_file(path: str | Path) -> str:
    """Hex SHA-256 of the bytes of the file at `path`."""
    digest = hashlib.sha256()
    update_with_file(digest, path)
    return digest.hexdigest()


def sha256_of_text(text: str) -> str:
    """Hex SHA-256 of `text` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
