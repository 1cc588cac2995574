"""The rules every stage shares (`methyl_distill.text`): sentences, quote matching, "not reported", hashes."""

from __future__ import annotations

import hashlib
import itertools
import random
from pathlib import Path

import pytest

from methyl_distill.extraction.grounding import EvidenceChecker
from methyl_distill.extraction.papers import content_sha256
from methyl_distill.text.hashing import sha256_of_file, sha256_of_text, update_with_file
from methyl_distill.text.not_reported import NOT_REPORTED, is_not_reported
from methyl_distill.text.quotes import FoldedText, fold, fold_quote, fold_with_offsets
from methyl_distill.text.sentences import sentence_boundaries, sentence_spans, split_sentences

# --- sentences ----------------------------------------------------------------------------------------


def test_abbreviations_initials_and_numbers_end_no_sentence() -> None:
    text = (
        "We studied 206 patients (e.g. 120 men) with glioma. MGMT was methylated (Fig. 2) in 45%. "
        "Smith et al. (2019) and J. Doe agreed, i.e. 3 of 4 studies. Methylated tumours responded "
        "better (p < 0.001). The AUC was 0.84 vs. 0.61 for the panel. Why? Because approx. the same."
    )
    assert split_sentences(text) == [
        "We studied 206 patients (e.g. 120 men) with glioma.",
        "MGMT was methylated (Fig. 2) in 45%.",
        "Smith et al. (2019) and J. Doe agreed, i.e. 3 of 4 studies.",
        "Methylated tumours responded better (p < 0.001).",
        "The AUC was 0.84 vs. 0.61 for the panel.",
        "Why?",
        "Because approx. the same.",
    ]


def test_a_sentence_ends_after_closing_quotes_and_brackets_and_before_opening_ones() -> None:
    text = 'The gene was "silenced." The next (SEPT9) was not.) [In plasma] it was. \u201cQuoted\u201d too.'
    assert split_sentences(text) == [
        'The gene was "silenced."',
        "The next (SEPT9) was not.)",
        "[In plasma] it was.",
        "\u201cQuoted\u201d too.",
    ]
    # A lower-case word after a full stop continues the sentence, unless it has a capital or digit in it.
    assert split_sentences("Values were ca. 5 and then. and more.") == [
        "Values were ca. 5 and then. and more."
    ]
    assert split_sentences("It was confirmed. ddPCR found 3. p16 was lost. e.g. cfDNA too.") == [
        "It was confirmed.",
        "ddPCR found 3.",
        "p16 was lost. e.g. cfDNA too.",
    ]
    # A lone capital is an initial only before a capitalised word.
    assert split_sentences("Stored at -80 \u00b0C. DNA was extracted by J. Smith in group A. 12 more.") == [
        "Stored at -80 \u00b0C.",
        "DNA was extracted by J. Smith in group A.",
        "12 more.",
    ]


def test_line_breaks_end_sentences_unless_turned_off() -> None:
    text = "Methods\nWe measured hyper-\nmethylation of MGMT.\n\n  Results were clear. Fig.\n2 shows it."
    assert split_sentences(text) == [
        "Methods",
        "We measured hyper-",
        "methylation of MGMT.",
        "Results were clear.",
        "Fig.",
        "2 shows it.",
    ]
    assert split_sentences(text, line_breaks=False) == [
        "Methods\nWe measured hyper-\nmethylation of MGMT.",
        "Results were clear.",
        "Fig.\n2 shows it.",
    ]


def test_spans_are_stripped_offsets_and_boundaries_can_be_searched_in_a_window() -> None:
    rng = random.Random(5)
    words = ["MGMT", "was", "methylated.", "e.g.", "The", "(p", "<", "0.001).", "Fig.", "2", "why?", "\n"]
    for _ in range(300):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(0, 40)))
        spans = sentence_spans(text)
        assert all(text[start:end] == text[start:end].strip() != "" for start, end in spans)
        assert all(previous[1] <= current[0] for previous, current in itertools.pairwise(spans))
        covered = {index for start, end in spans for index in range(start, end)}
        assert all(char.isspace() for index, char in enumerate(text) if index not in covered)
    text = "First one. Second one. Third one."
    assert list(sentence_boundaries(text)) == [(10, 11), (22, 23)]
    assert list(sentence_boundaries(text, 12)) == [(22, 23)]
    assert list(sentence_boundaries(text, 0, 11)) == []  # the next sentence's capital lies outside
    # A range that starts inside the white space of a line break still ends the sentence at its stop.
    assert list(sentence_boundaries("End here.\n\n\nNext", 11)) == [(9, 12)]
    assert sentence_spans("   ") == [] and split_sentences("") == []


# --- quote matching -------------------------------------------------------------------------------------

PAPER = (
    "Promoter hyper-\nmethylation of MGMT was found in 45% of glioblastoma samples.\n"
    "Primers for the \u201cCpG island\u201d of MGMT were used in methylation\u2010specific PCR \u2013 "
    "with a 1.5-fold change (p < 0.05); the \ufb01nal cohort had 1\u00b75 times more SEPT9."
)


@pytest.mark.parametrize(
    "quote",
    [
        "Promoter hypermethylation of MGMT was found in 45% of glioblastoma samples",  # hyphenated break
        "promoter   hyper-\nmethylation OF mgmt",  # case, white space, line breaks
        'primers for the "CpG island" of MGMT',  # straight quotes for typographic ones
        "methylation-specific PCR - with a 1.5-fold change",  # ASCII hyphen and dash
        "found in 45% ... glioblastoma samples",  # ellipsis
        "Promoter hyper\u2026 of MGMT [...] samples",  # ellipsis character and bracketed ellipsis
        "MGMT was found . . . 45%",  # spaced ellipsis
        "(p<0.05)",  # spacing around a comparison sign
        "the final cohort had 1.5 times",  # ligature and the Lancet's decimal point
    ],
)
def test_quotes_occur_despite_typography_case_white_space_and_ellipses(quote: str) -> None:
    assert EvidenceChecker(PAPER).occurs(quote)
    located = FoldedText(PAPER).locate(quote)
    assert located.status == "found"
    folded = FoldedText(PAPER)
    assert ["".join(fold_quote(folded.text[start:end])) for start, end in located.spans] == fold_quote(quote)


@pytest.mark.parametrize(
    "quote",
    [
        "Promoter hypermethylation of MLH1",  # another gene
        "found in 54% of glioblastoma",  # another number
        "with a 15-fold change",  # the decimal point is kept: 1.5 is not 15
        "(p > 0.05)",  # the comparison sign is kept
        "p 0.05",  # ... and cannot be dropped
        "found in 45% ... zebrafish",  # one fragment missing
        "...",  # no words at all
        "",
    ],
)
def test_quotes_with_other_words_numbers_or_signs_do_not_occur(quote: str) -> None:
    assert not EvidenceChecker(PAPER).occurs(quote)


def test_fold_is_the_equality_key_and_fragments_locate_in_order() -> None:
    assert (
        fold("Non-small  cell\nLung Cancer") == fold("non small-cell lung cancer") == "nonsmallcelllungcancer"
    )
    assert fold("p \u2266 0.05") == fold("p\u22640.05") != fold("p 0.05")
    assert fold("\u03a3\u0391\u03a3 final \u03c2") == "\u03c3\u03b1\u03c3final\u03c3"
    assert fold("1.5") != fold("15") and fold("1\u00b75") == fold("1.5") and fold("5.") == "5"
    paper = FoldedText("SEPT9 in plasma. Later: SEPT9 in stool.")
    first, second = paper.locate("SEPT9 ... stool").spans
    assert first[0] == 0 and paper.text[second[0] : second[1]] == "stool"
    assert paper.locate("SEPT9", min_chars=6).status == "too_short"


def test_ascii_quotes_fold_exactly_as_the_tables_do() -> None:
    rng = random.Random(11)
    for alphabet in ("aZ09 .<>,;-_\n\t()[]%=+", "aZ09 .<>,;-_\u00b7\u00e9\u2264"):
        for _ in range(3000):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
            folded, offsets = fold_with_offsets(text)
            assert fold(text) == folded
            # Every folded character comes from the character at its offset.
            assert "".join(text[offset] for offset in offsets).lower().replace("\u00b7", ".") == folded


def test_evidence_checker_keeps_each_found_quote_once_and_counts_the_rest() -> None:
    checker = EvidenceChecker(PAPER)
    kept = checker.keep(["MGMT was found", "mgmt WAS found.", "  ", "zebrafish imaging", "SEPT9"])
    assert kept == ["MGMT was found", "SEPT9"] and checker.dropped == 1


# --- not reported ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (NOT_REPORTED, True),
        ("Not reported in this part.", True),
        ("  not   stated", True),
        ('"Not reported."', True),
        ("- not specified", True),
        ("N/A", True),
        ("NA.", True),
        ("Unknown", True),
        ("No information on therapy response.", True),
        ("None reported.", True),
        ("The study does not mention a cut-off.", True),
        ("\uff2e\uff4f\uff54 \uff52\uff45\uff50\uff4f\uff52\uff54\uff45\uff44", True),  # full-width
        ("", True),
        ("\u2014", True),
        ("...", True),
        ("Not only MGMT but also MLH1 was methylated.", False),
        ("Non-small cell lung cancer.", False),
        ("None of the 20 controls was methylated.", False),
        ("Unknown primary tumours were excluded.", False),
        ("No.", False),
        ("MGMT promoter methylation predicted response.", False),
    ],
)
def test_not_reported_answers_are_recognised(answer: str, expected: bool) -> None:
    assert is_not_reported(answer) is expected


# --- hashing --------------------------------------------------------------------------------------------


def test_text_and_file_hashes_agree_and_content_hashes_are_unchanged(tmp_path: Path) -> None:
    text = "MGMT promoter methylation \u00e9\u03b2 in glioblastoma.\n"
    path = tmp_path / "paper.txt"
    path.write_bytes(text.encode("utf-8"))
    assert sha256_of_text(text) == hashlib.sha256(text.encode("utf-8")).hexdigest() == sha256_of_file(path)
    assert sha256_of_text("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert content_sha256(text) == hashlib.sha256(text.encode("utf-8")).hexdigest()  # the cache identity
    assert sha256_of_file(str(path)) == sha256_of_file(path)


class _RecordingDigest:
    def __init__(self) -> None:
        self.inner = hashlib.sha256()
        self.sizes: list[int] = []

    def update(self, data: bytes, /) -> None:
        self.sizes.append(len(data))
        self.inner.update(data)


def test_large_files_are_hashed_block_by_block(tmp_path: Path) -> None:
    data = random.Random(2).randbytes(3 * (1 << 20) + 7)
    first, second = tmp_path / "big.bin", tmp_path / "small.bin"
    first.write_bytes(data)
    second.write_bytes(b"tail")
    assert sha256_of_file(first) == hashlib.sha256(data).hexdigest()
    digest = _RecordingDigest()
    update_with_file(digest, first)
    update_with_file(digest, second)
    assert digest.sizes == [1 << 20, 1 << 20, 1 << 20, 7, 4]  # never the whole file at once
    assert digest.inner.hexdigest() == hashlib.sha256(data + b"tail").hexdigest()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert sha256_of_file(empty) == hashlib.sha256(b"").hexdigest()


# --- signs: what a marker or a number says ---------------------------------------------------------


@pytest.mark.parametrize(
    ("quote", "found"),
    [
        ("higher in ER- tumours", True),
        ("higher in ER+ tumours", False),  # the sign is the marker
        ("fold change -2.5", True),
        ("fold change 2.5", False),  # the sign is the number
        ("fold change \u22122.5", True),  # the Unicode minus sign is a minus
        ("hypermethylation of MGMT", True),  # a hyphen at a line break is hyphenation
        ("methylation specific PCR", True),  # a hyphen inside a word is not a sign
        ("promoter hypermethylation in CD34- cells", True),
        ("promoter hyper- methylation in CD34- cells", True),  # hyphenation after a lower-case word
        ("promoter hypermethylation in CD34+ cells", False),
    ],
)
def test_signs_are_kept_where_they_change_the_meaning(quote: str, found: bool) -> None:
    from methyl_distill.text.quotes import FoldedText

    paper = FoldedText(
        "Methylation was higher in ER- tumours (fold change -2.5). Hyper-\nmethylation of MGMT was "
        "measured by methylation-specific PCR. Promoter hyper- methylation in CD34- cells."
    )
    assert paper.occurs(quote) is found


def test_the_ascii_fold_and_the_table_fold_agree() -> None:
    import random
    import unicodedata

    from methyl_distill.text.quotes import fold, fold_with_offsets

    rng = random.Random(7)
    alphabet = "aZ9 -+.<>\n\r(),\u2212\u00e9\u00c9"
    for _ in range(5000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        assert fold(text) == fold_with_offsets(unicodedata.normalize("NFKC", text))[0], repr(text)


def test_a_quote_covers_whole_words_of_the_text() -> None:
    from methyl_distill.text.quotes import FoldedText

    paper = FoldedText("The greatest hypermethylation was seen in a test cohort.")
    assert not FoldedText("The greatest effect.").occurs("a test")  # the fold has no spaces
    assert paper.occurs("a test cohort") and paper.occurs("greatest hypermethylation")
    assert not paper.occurs("methylation was seen")  # starts inside a word
    located = paper.locate("a test")
    assert located.status == "found" and paper.text[slice(*located.spans[0])] == "a test"
