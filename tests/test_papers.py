"""Paper discovery: decoding, rejection reasons, stable ids, identical content grouped."""

from __future__ import annotations

from pathlib import Path

import pytest

from methyl_distill.extraction.papers import (
    UnreadablePaperError,
    assign_file_ids,
    content_sha256,
    decode_paper_bytes,
    discover_papers,
    normalise_text,
    slugify_path,
)

SAMPLE_PAPERS = Path(__file__).resolve().parent.parent / "data" / "papers"


def test_decoding_accepts_utf8_bom_crlf_and_utf16() -> None:
    text = "MGMT promoter méthylation\r\nwas frequent.  \r\n"
    assert decode_paper_bytes(text.encode("utf-8")) == "MGMT promoter méthylation\nwas frequent."
    assert decode_paper_bytes(b"\xef\xbb\xbf" + text.encode("utf-8")) == normalise_text(text)
    assert decode_paper_bytes(text.encode("utf-16")) == normalise_text(text)
    # NFC: a decomposed é and a composed é are the same paper.
    assert content_sha256(normalise_text("me\u0301thylation")) == content_sha256(
        normalise_text("méthylation")
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"  \n\t\r\n ", "only whitespace"),
        (b"\xef\xbb\xbf   \n", "only whitespace"),
        (b"%PDF-1.7\n\x00\x01\x02binary", "NUL bytes"),
        ("Résumé of a paper on café drinkers".encode("latin-1"), "not valid UTF-8 (byte 0xe9"),
        (bytes(range(1, 32)) * 10 + b"text", "control characters"),
    ],
)
def test_decoding_rejects_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(UnreadablePaperError, match=reason.replace("(", r"\(")):
        decode_paper_bytes(data)


def test_file_ids_are_stable_readable_and_never_collide() -> None:
    assert slugify_path("Lung/SHOX2 study.txt") == "lung-shox2-study-txt"
    ids = assign_file_ids(["a b.txt", "a-b.txt", "x/MGMT.md", "Ünïcode.txt"])
    assert ids["x/MGMT.md"] == "x-mgmt-md"
    assert len(set(ids.values())) == 4
    assert ids["a b.txt"].startswith("a-b-txt-") and ids["a-b.txt"].startswith("a-b-txt-")
    assert ids["Ünïcode.txt"].startswith("unicode-txt-")  # lossy slug: hash of the exact path added
    # Stable: the same paths give the same ids, in any order.
    assert assign_file_ids(reversed(list(ids))) == ids
    long_ids = assign_file_ids(["a" * 300 + ".txt", "a" * 300 + ".md"])
    assert len(set(long_ids.values())) == 2 and all(len(value) < 140 for value in long_ids.values())


def test_discovery_reports_bad_files_and_groups_identical_content(tmp_path: Path) -> None:
    (tmp_path / "nested" / "deeper").mkdir(parents=True)
    paper = "SEPT9 methylation in plasma.\n\nSensitivity was 72%."
    (tmp_path / "b_first.txt").write_text(paper, encoding="utf-8")
    (tmp_path / "nested" / "deeper" / "copy.md").write_bytes(
        b"\xef\xbb\xbf" + paper.replace("\n", "\r\n").encode()
    )
    (tmp_path / "other.md").write_text("GSTP1 is hypermethylated in prostate cancer.", encoding="utf-8")
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    (tmp_path / "latin1.txt").write_bytes("Méthylation".encode("latin-1"))
    (tmp_path / "ignored.pdf").write_bytes(b"%PDF")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "secret.txt").write_text("not a paper", encoding="utf-8")

    discovery = discover_papers(tmp_path)

    assert discovery.file_count == 6
    rejected = {item.source_path: item.reason for item in discovery.rejected}
    assert set(rejected) == {"empty.txt", "binary.txt", "latin1.txt"}
    assert rejected["empty.txt"] == "empty file"
    assert "NUL" in rejected["binary.txt"] and "UTF-8" in rejected["latin1.txt"]
    by_id = {paper.file_id: paper for paper in discovery.papers}
    assert set(by_id) == {"b-first-txt", "other-md"}
    duplicated = by_id["b-first-txt"]
    assert duplicated.file_ids == ("b-first-txt", "nested-deeper-copy-md")
    assert duplicated.source_paths == ("b_first.txt", "nested/deeper/copy.md")
    assert duplicated.content_sha256 == content_sha256(normalise_text(paper))


def test_missing_input_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        discover_papers(tmp_path / "absent")
    (tmp_path / "file.txt").write_text("x", encoding="utf-8")
    with pytest.raises(NotADirectoryError):
        discover_papers(tmp_path / "file.txt")


def test_bundled_sample_papers_are_usable() -> None:
    discovery = discover_papers(SAMPLE_PAPERS)
    assert len(discovery.papers) == 8 and not discovery.rejected
    for paper in discovery.papers:
        assert 400 <= len(paper.text.split()) <= 900, paper.file_id
        assert "methylat" in paper.text.lower()
