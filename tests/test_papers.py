"""Paper discovery: decoding, every file accounted for, stable ids, identical content grouped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from methyl_distill.extraction.papers import (
    assign_file_ids,
    content_sha256,
    discover_papers,
    file_id_of,
    slugify_path,
)
from methyl_distill.readers.document import UnreadablePaperError, normalise_text
from methyl_distill.readers.formats import ReadingOptions, read_paper_bytes
from methyl_distill.readers.plain_text import decode_text_bytes

SAMPLE_PAPERS = Path(__file__).resolve().parent.parent / "data" / "papers"


def test_decoding_accepts_utf8_bom_crlf_and_utf16() -> None:
    text = "MGMT promoter méthylation\r\nwas frequent.  \r\n"
    assert decode_text_bytes(text.encode("utf-8")) == (text, "utf-8")
    assert decode_text_bytes(b"\xef\xbb\xbf" + text.encode("utf-8")) == (text, "utf-8")
    assert decode_text_bytes(text.encode("utf-16")) == (text, "utf-16")
    # NFC: a decomposed é and a composed é are the same paper.
    assert content_sha256(normalise_text("me\u0301thylation")) == content_sha256(
        normalise_text("méthylation")
    )


def test_legacy_encodings_are_read_and_recorded() -> None:
    paper = (
        "Méthylation du promoteur de MGMT dans les glioblastomes traités par témozolomide. "
        "La méthylation était présente dans 45 % des tumeurs étudiées; the “SEPT9” assay – "
        "with a sensitivity of 72 % – was validated in Zürich and Besançon. "
    ) * 3
    for encoding in ("cp1252", "latin-1"):
        result = read_paper_bytes("old_export.txt", paper.encode(encoding, errors="replace"))
        assert "Méthylation du promoteur" in result.paper.text
        assert "présente dans 45 % des tumeurs" in result.paper.text
        assert result.paper.encoding is not None and result.paper.encoding != "utf-8"
    cp1252 = read_paper_bytes("old.txt", paper.encode("cp1252")).paper
    assert "“SEPT9” assay – with" in cp1252.text  # cp1252's quotes and dashes, not Latin-1 controls


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"  \n\t\r\n ", "only whitespace"),
        (b"\xef\xbb\xbf   \n", "only whitespace"),
        (b"GSTP1\x00\x01\x02binary", "NUL bytes"),
        (bytes(range(1, 32)) * 10 + b"text", "control characters"),
        (bytes(range(128, 256)) * 40, "not text in any known encoding"),
    ],
)
def test_decoding_rejects_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(UnreadablePaperError, match=reason.replace("(", r"\(")):
        decode_text_bytes(data)


def test_plain_text_sections_identifiers_and_back_matter() -> None:
    paper = (
        "SDC2 methylation in stool\n\ndoi: 10.5555/md.test.0042. PMID: 31234567\n\n"
        "Abstract\nSDC2 was hypermethylated in 81% of cancers.\n\n"
        "2. Methods\nStool DNA was bisulfite converted.\n\n"
        "Results\nSensitivity was 81.1%.\n\n"
        "Acknowledgements\nWe thank the nurses.\n\n"
        "References\n1. Smith J. Gut 2019;68:1-9.\n2. Lee K. Gut 2020;69:2-10.\n"
    )
    kept = read_paper_bytes("sdc2.txt", paper.encode(), ReadingOptions(keep_back_matter=True))
    assert kept.paper.text == normalise_text(paper)  # plain text is never reflowed
    assert [(section.title, section.role) for section in kept.paper.sections] == [
        ("", "title"),
        ("Abstract", "abstract"),
        ("2. Methods", "body"),
        ("Results", "body"),
        ("Acknowledgements", "back_matter"),
        ("References", "back_matter"),
    ]
    assert kept.paper.metadata.title == "SDC2 methylation in stool"
    assert kept.paper.metadata.doi == "10.5555/md.test.0042"
    assert kept.paper.metadata.pmid == "31234567"

    read = read_paper_bytes("sdc2.txt", paper.encode())
    assert read.paper.text.endswith("Results\nSensitivity was 81.1%.")
    assert "nurses" not in read.paper.text and "Smith J" not in read.paper.text
    assert read.omitted.sections == ("Acknowledgements", "References")
    assert 25 <= read.omitted.tokens <= 60  # 104 characters, many of them digits and punctuation
    for section in read.paper.sections:  # spans still point at their headings
        assert read.paper.text[section.start : section.end].startswith(section.title)


def test_markdown_headings_are_sections() -> None:
    paper = "# MGMT in glioma\n\nIntro text.\n\n## Results\nMGMT was methylated.\n\n## References\n1. X."
    read = read_paper_bytes("mgmt.md", paper.encode())
    assert read.paper.format == "markdown"
    assert read.paper.metadata.title == "MGMT in glioma"
    assert read.paper.text == "# MGMT in glioma\n\nIntro text.\n\n## Results\nMGMT was methylated."
    assert read.omitted.sections == ("References",)


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("paper.docx", b"PK\x03\x04" + b"\x00" * 40, ".docx files (Word document) are not supported"),
        ("paper.epub", b"PK\x03\x04" + b"\x00" * 40, ".epub files (EPUB book) are not supported"),
        ("notes.rtf", b"{\\rtf1\\ansi hello}", ".rtf files (RTF document) are not supported"),
        ("figure.png", b"\x89PNG\r\n\x1a\n\x00\x00", "image file (.png): no text to read"),
        ("scan.txt", b"BM\x36\x00\x0c\x00\x00\x00\x00\x00\x36\x00", "image file (.txt): no text to read"),
        ("data.csv", b"a,b\n1,2\n", ".csv files (table) are not supported"),
        ("script.py", b"print('hi')\n", ".py files are not supported: methyl-distill reads .pdf"),
        ("README", b"hello\n", "files without a suffix are not supported"),
        ("broken.pdf", b"<html>not a pdf</html>", "corrupt or truncated PDF: the file does not start"),
    ],
)
def test_unsupported_files_are_named(name: str, data: bytes, reason: str) -> None:
    with pytest.raises(UnreadablePaperError) as raised:
        read_paper_bytes(name, data)
    assert str(raised.value).startswith(reason)


def test_format_follows_content_before_suffix() -> None:
    from methyl_distill.readers.formats import detect_format

    assert detect_format("saved.txt", b"%PDF-1.7\n...") == "pdf"
    assert detect_format("paper", b"%PDF-1.4\n") == "pdf"
    assert detect_format("page.txt", b"<!DOCTYPE html><html><body>") == "html"
    assert detect_format("article.dat", b'<?xml version="1.0"?>\n<article>') == "jats"
    assert detect_format("nxml.nxml", b"\n<article>") == "jats"
    assert detect_format("paper.MD", b"# Title") == "markdown"
    # A bitmap starts with "BM", and so does a paper about BMP3 methylation.
    assert detect_format("bmp3.txt", b"BMP3 and HOXA9 promoter methylation in whole blood") == "text"


def test_file_ids_are_stable_readable_and_never_collide() -> None:
    assert slugify_path("Lung/SHOX2 study.txt") == "lung-shox2-study-txt"
    # Plain paths keep their plain slugs (the sample papers' ids did not change).
    assert file_id_of("mgmt_glioblastoma_temozolomide.txt") == "mgmt-glioblastoma-temozolomide-txt"
    assert file_id_of("lung/shox2_lavage.md") == "lung--shox2-lavage-md"
    # Anything else gets a hash of its exact path: `a b.txt` and `a-b.txt` never meet `a_b.txt`.
    paths = ["a b.txt", "a-b.txt", "a_b.txt", "a/b.txt", "a.b.txt", "x/MGMT.md", "Ünïcode.txt", "A_B.txt"]
    ids = assign_file_ids(paths)
    assert len(set(ids.values())) == len(paths)
    assert ids["a_b.txt"] == "a-b-txt" and ids["a/b.txt"] == "a--b-txt"
    assert ids["a b.txt"].startswith("a-b-txt-") and len(ids["a b.txt"]) == len("a-b-txt-") + 8
    assert ids["x/MGMT.md"].startswith("x-mgmt-md-") and ids["Ünïcode.txt"].startswith("unicode-txt-")
    # A file's id depends on its own path only: adding or removing other files changes nothing.
    for path, file_id in ids.items():
        assert assign_file_ids([path]) == {path: file_id}
    long_ids = assign_file_ids(["a" * 300 + ".txt", "a" * 300 + ".md", "b" * 130 + ".txt"])
    assert len(set(long_ids.values())) == 3 and all(len(value) < 140 for value in long_ids.values())


def test_discovery_reports_bad_files_and_groups_identical_content(tmp_path: Path) -> None:
    (tmp_path / "nested" / "deeper").mkdir(parents=True)
    paper = "SEPT9 methylation in plasma.\n\nSensitivity was 72%."
    (tmp_path / "b_first.txt").write_text(paper, encoding="utf-8")
    (tmp_path / "nested" / "deeper" / "copy.md").write_bytes(
        b"\xef\xbb\xbf" + paper.replace("\n", "\r\n").encode()
    )
    (tmp_path / "other.md").write_text("GSTP1 is hypermethylated in prostate cancer.", encoding="utf-8")
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "binary.txt").write_bytes(b"GSTP1\x00\x00\x00")
    (tmp_path / "latin1.txt").write_bytes(("Méthylation du promoteur de MGMT. " * 5).encode("latin-1"))
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj")
    (tmp_path / "manuscript.docx").write_bytes(b"PK\x03\x04" + b"\x00" * 30)
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "secret.txt").write_text("not a paper", encoding="utf-8")
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.txt"
    outside.write_text("DAPK1 methylation outside the input folder.", encoding="utf-8")
    (tmp_path / "escape.txt").symlink_to(outside)
    (tmp_path / "dangling.txt").symlink_to(tmp_path / "gone.txt")
    (tmp_path / "linked_folder").symlink_to(tmp_path / "nested", target_is_directory=True)
    (tmp_path / "alias.txt").symlink_to(tmp_path / "other.md")  # inside: read, a duplicate of other.md

    discovery = discover_papers(tmp_path)

    assert discovery.file_count == 12
    assert discovery.hidden_skipped == 2
    rejected = {item.source_path: item.reason for item in discovery.rejected}
    assert set(rejected) == {
        "empty.txt",
        "binary.txt",
        "broken.pdf",
        "manuscript.docx",
        "escape.txt",
        "dangling.txt",
        "linked_folder",
    }
    assert rejected["empty.txt"] == "empty file"
    assert "NUL" in rejected["binary.txt"]
    assert rejected["broken.pdf"].startswith("corrupt or truncated PDF")
    assert rejected["manuscript.docx"].startswith(".docx files (Word document) are not supported")
    assert rejected["escape.txt"].startswith("symlink leads outside the input folder")
    assert rejected["dangling.txt"].startswith("broken symlink")
    assert rejected["linked_folder"].startswith("symlink to a folder: not followed")
    assert all(item.file_id for item in discovery.rejected)
    by_id = {paper.file_id: paper for paper in discovery.papers}
    assert set(by_id) == {"b-first-txt", "alias-txt", "latin1-txt"}
    assert by_id["latin1-txt"].source.encoding == "latin-1"
    assert by_id["alias-txt"].file_ids == ("alias-txt", "other-md")
    duplicated = by_id["b-first-txt"]
    assert duplicated.file_ids == ("b-first-txt", "nested--deeper--copy-md")
    assert duplicated.source_paths == ("b_first.txt", "nested/deeper/copy.md")
    assert duplicated.content_sha256 == content_sha256(normalise_text(paper))


def test_a_folder_that_cannot_be_read_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "inside.txt").write_text("never seen", encoding="utf-8")
    (tmp_path / "ok.txt").write_text("GSTP1 hypermethylation in prostate cancer.", encoding="utf-8")
    real_scandir = os.scandir

    def scandir(path: object) -> object:  # root reads any folder, so refuse one as a permission error
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)
    discovery = discover_papers(tmp_path)
    assert [paper.source_path for paper in discovery.papers] == ["ok.txt"]
    assert [(item.source_path, item.reason) for item in discovery.rejected] == [
        ("locked/", "folder cannot be read: Permission denied")
    ]


def test_missing_input_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        discover_papers(tmp_path / "absent")
    (tmp_path / "file.txt").write_text("x", encoding="utf-8")
    with pytest.raises(NotADirectoryError):
        discover_papers(tmp_path / "file.txt")


def test_bundled_sample_papers_are_usable() -> None:
    discovery = discover_papers(SAMPLE_PAPERS)
    assert len(discovery.papers) == 10 and not discovery.rejected
    formats = sorted(paper.source.format for paper in discovery.papers)
    assert formats == ["jats", "pdf", *["text"] * 8]
    for paper in discovery.papers:
        assert 400 <= len(paper.text.split()) <= 900, paper.file_id  # short: the embedded teacher reads them
        assert "methylat" in paper.text.lower()
        assert paper.source.title and paper.source.title.split()[0] in paper.text.split("\n")[0]
    for paper in discovery.papers:
        if paper.source.format != "text":  # the PDF and the JATS paper have reference lists, left out
            assert "References" in paper.source.omitted_sections and paper.source.omitted_tokens > 100
            assert paper.source.doi and paper.source.doi.startswith("10.5555/")


@pytest.mark.parametrize("keep_back_matter", [False, True])
def test_the_dataset_stage_reads_the_text_the_teacher_read(keep_back_matter: bool) -> None:
    from methyl_distill.sft_dataset.paper_text import PaperLibrary, PaperText

    options = ReadingOptions(keep_back_matter=keep_back_matter)
    library = PaperLibrary(SAMPLE_PAPERS)
    for paper in discover_papers(SAMPLE_PAPERS, options).papers:
        loaded = library.load(list(paper.source_paths), paper.content_sha256)
        assert loaded.status == "ok", (paper.file_id, loaded.detail)
        assert loaded.text is not None and loaded.text.text == PaperText(paper.text).text
        if paper.source.format in ("pdf", "jats"):
            assert ("References" in paper.text) is keep_back_matter


def test_files_without_readable_text_or_too_large_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "invisible.txt").write_text("\u200b\u200c\u2060\ufeff \u200b\n" * 50, encoding="utf-8")
    (tmp_path / "dots.md").write_text("... --- ***\n", encoding="utf-8")
    (tmp_path / "big.txt").write_text("MGMT promoter methylation. " * 40_000, encoding="utf-8")  # 1.08 MB
    (tmp_path / "ok.txt").write_text("GSTP1 hypermethylation in prostate cancer.", encoding="utf-8")

    discovery = discover_papers(tmp_path, ReadingOptions(max_file_mb=1))

    assert [paper.source_path for paper in discovery.papers] == ["ok.txt"]
    reasons = {item.source_path: item.reason for item in discovery.rejected}
    assert reasons["invisible.txt"].startswith("no readable text in this text file: no letters or digits")
    assert reasons["dots.md"].startswith("no readable text in this markdown file")
    assert reasons["big.txt"] == "file too large: 1.1 MB, over the limit of 1 MB (max_file_mb)"
    assert [paper.source_path for paper in discover_papers(tmp_path).papers] == ["big.txt", "ok.txt"]
