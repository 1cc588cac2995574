"""The PDF reader against PDFs whose every line the fixtures placed (tests/pdf_fixtures.py)."""

from __future__ import annotations

import re
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest

from methyl_distill.readers.document import ReadPaper, UnreadablePaperError, omit_back_matter
from methyl_distill.readers.pdf import READER, joins_line_break_hyphen, read_pdf
from methyl_distill.text.sentences import split_sentences
from tests import pdf_fixtures
from tests.pdf_fixtures import (
    SAMPLE_PAPER,
    TWO_COLUMN_DOI,
    TWO_COLUMN_PAPER,
    TWO_COLUMN_PMID,
    TWO_COLUMN_TITLE,
    expected_sections,
)

SAMPLE_PATH = Path(__file__).resolve().parents[1] / "data" / "papers" / "sdc2_stool_colorectal_adenoma.pdf"


@pytest.fixture(scope="module")
def two_column() -> ReadPaper:
    return read_pdf(pdf_fixtures.two_column_paper())


def _section_bodies(paper: ReadPaper) -> dict[str, str]:
    bodies = {}
    for section in paper.sections:
        piece = paper.text[section.start : section.end]
        bodies[section.title] = piece[len(section.title) :].strip() if section.title else piece
    return bodies


# --- text, reading order, hyphens --------------------------------------------------------------------


def test_every_section_reads_as_written(two_column: ReadPaper) -> None:
    bodies = _section_bodies(two_column)
    for heading, paragraphs in expected_sections(TWO_COLUMN_PAPER):
        assert bodies[heading] == "\n\n".join(paragraphs), heading


def test_sentences_come_in_order(two_column: ReadPaper) -> None:
    expected = [
        sentence
        for _, paragraphs in expected_sections(TWO_COLUMN_PAPER)
        for paragraph in paragraphs
        for sentence in split_sentences(paragraph)
    ]
    found = split_sentences(two_column.text)
    position = 0
    for sentence in expected:  # each in turn, after the one before (ValueError names one missing)
        position = found.index(sentence, position) + 1
    assert len(expected) > 50


def test_two_columns_read_left_then_right_with_full_width_blocks_in_place(two_column: ReadPaper) -> None:
    text = two_column.text
    # The left column's last line and the right column's first line are one sentence.
    assert "We confirmed the calls by bisulfite sequencing in twenty tumours." in text
    order = [
        TWO_COLUMN_TITLE,
        "Abstract",
        "1. Introduction",
        "2.1. Tumour samples",
        "Statistical analysis",  # top of the right column
        "The results by subgroup are shown in Table 1.",
        "Table 1. MLH1 methylation",  # full width, between two bands
        "MSI-high | 48 | 81.3 | 64.2",
        "4. Discussion",
        "5. Conclusions",
        "Acknowledgements",  # top of page 2
        "References",
    ]
    positions = [text.index(marker) for marker in order]
    assert positions == sorted(positions)


def test_line_break_hyphens_are_joined_and_real_hyphens_kept(two_column: ReadPaper) -> None:
    text = two_column.text
    for word in pdf_fixtures.TWO_COLUMN_KEPT_HYPHENS:
        assert word in text
    for word in pdf_fixtures.TWO_COLUMN_JOINED_WORDS:
        assert word in text
    for broken in (
        "colorec-tal",
        "colorec tal",
        "hyper-methylation",
        "methyl-ation",
        "methyl ation",
        "CpG rich",
        "LINE- 1",
    ):
        assert broken not in text
    assert "methylation-specific PCR with primers" in text  # broken at its hyphen, kept
    assert "treated with 5-aza-2'-deoxycytidine as controls" in text
    assert "The LINE-1 retrotransposon" in text


@pytest.mark.parametrize(
    ("head", "tail", "joined"),
    [
        ("colorec-", "tal", True),  # neither part is a word
        ("(colorec-", "tal)", True),
        ("methyl-", "ation", True),  # the joined form occurs elsewhere
        ("Hyper-", "methylation", True),  # the joined form occurs elsewhere, case aside
        ("methylation-", "specific", False),  # the hyphenated form occurs elsewhere
        ("promoter-", "bound", False),  # both parts are words elsewhere
        ("LINE-", "1", False),  # a digit follows
        ("5-aza-", "2'-deoxycytidine", False),
        ("CpG-", "rich", False),  # a capital inside the first part
        ("MLH1-", "deficient", False),  # a digit inside the first part
        ("anti-", "EGFR", False),  # a capital follows
        ("co\u00ad", "hort", True),  # a soft hyphen is always a break
    ],
)
def test_hyphen_evidence(head: str, tail: str, joined: bool) -> None:
    vocabulary = Counter(
        {
            "methylation": 5,
            "hypermethylation": 2,
            "methylation-specific": 1,
            "specific": 2,
            "promoter": 4,
            "bound": 1,
            "rich": 1,
            "cpg": 3,
        }
    )
    assert joins_line_break_hyphen(head, tail, vocabulary) is joined


def test_paragraphs_unwrapped_one_per_block(two_column: ReadPaper) -> None:
    introduction = _section_bodies(two_column)["1. Introduction"]
    paragraphs = introduction.split("\n\n")
    assert len(paragraphs) == 3
    assert all("\n" not in paragraph for paragraph in paragraphs)
    assert paragraphs[1].startswith("Global hypomethylation is measured at repeated elements. The LINE-1")


def test_text_is_the_same_whatever_the_drawing_order_or_object_size() -> None:
    reference = read_pdf(pdf_fixtures.two_column_paper()).text
    assert read_pdf(pdf_fixtures.two_column_paper(word_objects=True)).text == reference
    assert read_pdf(pdf_fixtures.two_column_paper(word_objects=True, shuffle_seed=5)).text == reference


def test_ligatures_odd_spaces_and_soft_hyphens_are_normalised() -> None:
    data = pdf_fixtures.special_characters_paper()
    if data is None:
        pytest.skip(f"no {pdf_fixtures.DEJAVU_SERIF}")
    assert read_pdf(data).text == (
        "The first effect of methylation was flagged in five offices at 5 mg per kg. Each sample was "
        "hybridised overnight, and the cohort was followed for five years."
    )


# --- running headers, footers, tables ----------------------------------------------------------------


def test_running_headers_footers_and_page_numbers_are_removed(two_column: ReadPaper) -> None:
    text = two_column.text
    assert "Journal of Epigenetic Markers" not in text
    assert "Page 1 of 2" not in text and "Page 2 of 2" not in text
    assert not re.search(r"(?m)^\d+$", text)
    sample = read_pdf(pdf_fixtures.sample_paper()).text
    assert "Lindqvist et al." not in sample
    assert not re.search(r"(?m)^\d+$", sample)
    # The same words in the front matter, outside the margins, stay.
    assert "Journal of Epigenetic Markers 7 (2024) 201–202 · doi:10.5555/jem.2024.0201" in sample


def test_tables_keep_one_row_a_line(two_column: ReadPaper) -> None:
    rows = pdf_fixtures.table_rows_text(
        next(b for b in TWO_COLUMN_PAPER.body if isinstance(b, pdf_fixtures.Table))
    )
    assert rows in two_column.text
    assert "Subgroup | Tumours (n) | MLH1 methylated (%) | LINE-1 (%)" in two_column.text.split("\n")


@pytest.mark.parametrize("turn", [90, -90])
def test_landscape_pages_are_read_turned_upright(turn: int) -> None:
    text = read_pdf(pdf_fixtures.landscape_table_page(turn)).text
    rows = "\n".join(" | ".join(row) for row in pdf_fixtures.LANDSCAPE_ROWS)
    assert (
        text == f"Table 2. Methylation markers in stool DNA, by marker, in the validation cohort.\n\n{rows}"
    )


# --- sections and metadata ---------------------------------------------------------------------------


def test_sections_cover_the_text_with_roles(two_column: ReadPaper) -> None:
    sections = two_column.sections
    assert sections[0].start == 0 and sections[-1].end == len(two_column.text)
    for previous, section in pairwise(sections):
        assert two_column.text[previous.end : section.start] == "\n\n"
    roles = [(section.title, section.role) for section in sections]
    assert roles == [
        (TWO_COLUMN_TITLE, "title"),
        ("Abstract", "abstract"),
        ("1. Introduction", "body"),
        ("2. Materials and methods", "body"),
        ("2.1. Tumour samples", "body"),
        ("Statistical analysis", "body"),
        ("3. Results", "body"),
        ("4. Discussion", "body"),
        ("5. Conclusions", "body"),
        ("Acknowledgements", "back_matter"),
        ("References", "back_matter"),
    ]
    title_section = two_column.text[sections[0].start : sections[0].end]
    assert title_section.startswith(TWO_COLUMN_TITLE + "\n\nLucie Moreau, Daniel Okafor, Mei Tanaka")


def test_metadata_and_reader_fields(two_column: ReadPaper) -> None:
    assert two_column.metadata.title == TWO_COLUMN_TITLE
    assert two_column.metadata.doi == TWO_COLUMN_DOI
    assert two_column.metadata.pmid == TWO_COLUMN_PMID
    assert (two_column.format, two_column.reader, two_column.pages) == ("pdf", READER, 2)


@pytest.mark.parametrize("info_title", [None, "Microsoft Word - draft3.docx", "untitled"])
def test_title_falls_back_to_the_largest_text_on_page_one(info_title: str | None) -> None:
    paper = read_pdf(pdf_fixtures.two_column_paper(info_title=info_title))
    assert paper.metadata.title == TWO_COLUMN_TITLE
    assert paper.sections[0].title == TWO_COLUMN_TITLE


def test_info_title_wins_when_it_looks_real() -> None:
    paper = read_pdf(
        pdf_fixtures.two_column_paper(info_title="MLH1 methylation in colorectal cancer (preprint)")
    )
    assert paper.metadata.title == "MLH1 methylation in colorectal cancer (preprint)"
    assert paper.sections[0].title == TWO_COLUMN_TITLE  # the text keeps the title it shows


def test_omitting_back_matter_drops_references_and_acknowledgements(two_column: ReadPaper) -> None:
    kept, omitted = omit_back_matter(two_column)
    assert omitted.sections == ("Acknowledgements", "References")
    assert omitted.tokens > 20 and omitted.characters > 200
    assert "Moreau L, Okafor D." not in kept.text and "biobank" not in kept.text
    assert kept.text.endswith("and LINE-1 hypomethylation marks stable tumours.")


# --- what cannot be read -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (pdf_fixtures.image_only_paper, "no text layer: scanned, needs OCR"),
        (pdf_fixtures.encrypted_paper, "encrypted: password needed"),
        (pdf_fixtures.truncated_paper, "corrupt or truncated PDF"),
        (lambda: b"%PDF-1.7\n" + b"\x00garbage" * 100 + b"\n%%EOF\n", "corrupt or truncated PDF"),
        (lambda: b"<html>not a pdf</html>", "corrupt or truncated PDF"),
    ],
)
def test_unreadable_pdfs_say_why(make, reason: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnreadablePaperError) as caught:
        read_pdf(make())
    assert str(caught.value).startswith(reason)


def test_owner_password_only_is_readable() -> None:
    paper = read_pdf(pdf_fixtures.encrypted_paper(user_password=""))
    assert paper.metadata.doi == TWO_COLUMN_DOI
    assert "CpG-rich" in paper.text


# --- the sample paper and the benchmark corpus -------------------------------------------------------


def test_sample_paper_is_the_fixture_and_reads_whole() -> None:
    data = pdf_fixtures.sample_paper()
    assert SAMPLE_PATH.read_bytes() == data, "rebuild it: .venv/bin/python data/make_sample_pdf.py"
    paper = read_pdf(data)
    bodies = _section_bodies(paper)
    for heading, paragraphs in expected_sections(SAMPLE_PAPER):
        assert bodies[heading] == "\n\n".join(paragraphs), heading
    assert paper.metadata.title == SAMPLE_PAPER.title
    assert paper.metadata.doi == "10.5555/jem.2024.0201"
    assert 750 <= len(omit_back_matter(paper)[0].text.split()) <= 900  # short: the embedded teacher reads it


def test_benchmark_pages_read_without_running_lines() -> None:
    paper = read_pdf(pdf_fixtures.benchmark_paper(pages=4, seed=2))
    assert paper.pages == 4
    assert "Benchmark Journal" not in paper.text and "Page 3 of 4" not in paper.text
    assert "quantitative methylation-specific PCR" in paper.text
