"""Unit tests of the dataset stage's rules: grounding, excerpts, token estimate, split, dedup."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from methyl_distill.sft_dataset.deduplication import DuplicateFinder, lsh_parameters, word_hashes
from methyl_distill.sft_dataset.paper_text import ELISION, PaperText, unwrap_text
from methyl_distill.sft_dataset.sample_builder import is_not_reported, unit_draw
from methyl_distill.sft_dataset.splitting import split_by_paper, split_sizes
from methyl_distill.sft_dataset.token_estimate import estimate_tokens_many, piece_prefix
from methyl_distill.text.quotes import fold_quote
from methyl_distill.text.token_count import estimate_tokens

PAPER = (
    "Background. DNA methylation of tumour suppressor genes is an early event in carcinogenesis.\n"
    "Promoter hyper-\nmethylation of MGMT was found in 45% of glioblastoma samples and pre-\n"
    "dicted response to temozolomide.\n\n"
    "Methods.  Bisulfite-converted DNA was analysed by methylation-specific PCR (MSP) with\n"
    "primers for the “CpG island” of MGMT; the probe cg12434587 was measured on arrays.\n"
)


# --- grounding: tolerant quote matching -------------------------------------------------------------


@pytest.mark.parametrize(
    "quote",
    [
        "Promoter hypermethylation of MGMT was found in 45% of glioblastoma samples",  # hyphenated break
        "promoter   hyper-\nmethylation of\nMGMT",  # the teacher copied the line breaks
        "Promoter hyper- methylation of MGMT",  # hyphen + space
        'primers for the "CpG island" of MGMT',  # straight quotes for typographic ones
        "PRIMERS FOR THE CPG ISLAND OF MGMT",  # case
        "was found in 45% of glioblastoma ... predicted response to temozolomide",  # ellipsis
        "predicted response to temozolomide",  # 'pre-\ndicted'
        "methylation‐specific PCR (MSP)",  # a Unicode hyphen
    ],
)
def test_quotes_are_found_despite_whitespace_hyphenation_and_typography(quote: str) -> None:
    paper = PaperText(PAPER)
    located = paper.locate(quote)
    assert located.status == "found"
    # Each span covers one fragment's words in the display text.
    assert ["".join(fold_quote(paper.text[start:end])) for start, end in located.spans] == fold_quote(quote)


@pytest.mark.parametrize(
    "quote",
    [
        "Promoter hypermethylation of MLH1 was found",  # a different gene
        "was found in 54% of glioblastoma samples",  # a different number
        "MGMT was found in 45% of glioblastoma Promoter",  # reordered words
    ],
)
def test_quotes_not_in_the_paper_are_missing(quote: str) -> None:
    assert PaperText(PAPER).locate(quote).status == "missing"


def test_too_short_quotes_do_not_count() -> None:
    paper = PaperText(PAPER)
    assert paper.locate("MGMT", min_chars=12).status == "too_short"
    assert paper.locate("MGMT", min_chars=4).status == "found"
    assert paper.locate("...", min_chars=1).status == "too_short"


def test_unwrap_joins_hyphenated_words_and_keeps_paragraphs() -> None:
    text = unwrap_text("A hyper-\nmethylated  gene\nin 5-aza-\n2'-deoxycytidine.\n\n\n  Next  paragraph.")
    assert text == "A hypermethylated gene in 5-aza-2'-deoxycytidine.\n\nNext paragraph."


def test_excerpt_contains_the_evidence_within_budget_and_marks_cuts() -> None:
    sentences = [f"Sentence {i} is about filler text for the paper body number {i}." for i in range(60)]
    sentences[30] = "The SEPT9 assay reached a sensitivity of 68% in plasma."
    paper = PaperText(" ".join(sentences))
    located = paper.locate("SEPT9 assay reached a sensitivity of 68%")
    excerpt = paper.excerpt(list(located.spans), budget=400)
    assert excerpt is not None
    assert "The SEPT9 assay reached a sensitivity of 68% in plasma." in excerpt.text
    assert excerpt.text.startswith(ELISION) and excerpt.text.endswith(ELISION)
    assert len(excerpt.text) <= 400 + 2 * len(ELISION) + 2
    # Cut at sentence boundaries: the body starts with a sentence and ends with a full stop.
    body = excerpt.text[len(ELISION) + 1 : -len(ELISION) - 1]
    assert body.startswith("Sentence") and body.endswith(".")
    # Evidence longer than the budget cannot be excerpted.
    assert paper.excerpt([(0, 500)], budget=300) is None


def test_excerpt_of_distant_evidence_has_two_windows() -> None:
    sentences = [f"Filler sentence number {i} says nothing in particular here." for i in range(80)]
    sentences[5] = "MGMT was methylated in tumours."
    sentences[70] = "RASSF1A was methylated in serum."
    paper = PaperText(" ".join(sentences))
    spans = [*paper.locate("MGMT was methylated").spans, *paper.locate("RASSF1A was methylated").spans]
    excerpt = paper.excerpt(spans, budget=600)
    assert excerpt is not None
    assert "MGMT was methylated in tumours." in excerpt.text
    assert "RASSF1A was methylated in serum." in excerpt.text
    assert f" {ELISION} " in excerpt.text


def test_excerpt_pieces_match_the_direct_estimate() -> None:
    rng = random.Random(3)
    words = ["methylation", "SEPT9", "cg05575921", "68.2%", "(AUC", "0.84)", "in", "plasma", "β-values", "a"]
    text = " ".join(rng.choice(words) for _ in range(3000))
    paper = PaperText(text)
    for _ in range(50):
        start = rng.randrange(0, len(paper.text) - 200)
        located = paper.locate(paper.text[start : start + 60])
        excerpt = paper.excerpt(list(located.spans), budget=rng.randint(200, 900))
        assert excerpt is not None
        if excerpt.pieces is not None:
            chars_estimate = -(-len(excerpt.text) * 10 // 36)
            assert max(chars_estimate, excerpt.pieces) == estimate_tokens(excerpt.text)


# --- token estimate ---------------------------------------------------------------------------------


def test_vectorised_estimate_equals_token_count() -> None:
    rng = random.Random(1)
    alphabet = "abcXYZ 0123456789.,;-\n\t αβé%()𝔸٣"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80))) for _ in range(2000)]
    texts += ["", "a", "1234", "methylation", "x" * 13, "cg05575921 hypermethylation 1,544"]
    assert estimate_tokens_many(texts).tolist() == [estimate_tokens(text) for text in texts]


def test_piece_prefix_sums_to_the_pieces_of_whole_words() -> None:
    text = "SEPT9 methylation 68.2% (AUC 0.84) hypermethylated"
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    prefix = piece_prefix(codes)
    assert max(-(-len(text) * 10 // 36), int(prefix[-1])) == estimate_tokens(text)


# --- not reported ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Not reported in the paper.", True),
        ("not stated", True),
        ("N/A", True),
        ("The paper does not report a cut-off.", True),
        ("No information on therapy response.", True),
        ("MGMT promoter methylation predicted response.", False),
        ("Non-small cell lung cancer.", False),
        ("Not only MGMT but also MLH1 was methylated.", False),
    ],
)
def test_not_reported_answers_are_recognised(answer: str, expected: bool) -> None:
    assert is_not_reported(answer) is expected


def test_unit_draw_is_deterministic_and_uniform() -> None:
    draws = [unit_draw(7, "paper", index) for index in range(4000)]
    assert draws == [unit_draw(7, "paper", index) for index in range(4000)]
    assert 0.45 < sum(draws) / len(draws) < 0.55
    assert draws != [unit_draw(8, "paper", index) for index in range(4000)]


# --- split by paper ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("papers", "expected"),
    [(0, (0, 0, 0)), (1, (1, 0, 0)), (2, (1, 0, 1)), (3, (1, 1, 1)), (10, (8, 1, 1)), (100, (90, 5, 5))],
)
def test_split_sizes_keep_training_and_give_small_corpora_a_test_split(
    papers: int, expected: tuple[int, int, int]
) -> None:
    assert split_sizes(papers, val_fraction=0.05, test_fraction=0.05) == expected


def test_split_sizes_with_zero_fractions_and_large_fractions() -> None:
    assert split_sizes(10, 0.0, 0.0) == (10, 0, 0)
    assert split_sizes(10, 0.0, 0.3) == (7, 0, 3)
    assert split_sizes(4, 0.45, 0.45) == (1, 1, 2)  # validation gives way first


def test_split_is_by_paper_deterministic_and_seeded() -> None:
    papers = [f"sha-{index}" for index in range(200)]
    first = split_by_paper(papers, 0.1, 0.1, seed=1)
    assert first == split_by_paper(list(reversed(papers)), 0.1, 0.1, seed=1)  # input order is irrelevant
    assert set(first) == set(papers)
    counts = {
        split: sum(1 for value in first.values() if value == split)
        for split in ("train", "validation", "test")
    }
    assert counts == {"train": 160, "validation": 20, "test": 20}
    assert first != split_by_paper(papers, 0.1, 0.1, seed=2)


# --- deduplication ----------------------------------------------------------------------------------


def _sentence(rng: random.Random, length: int = 40) -> str:
    vocabulary = [f"word{index}" for index in range(5000)]
    return " ".join(rng.choice(vocabulary) for _ in range(length))


def test_exact_duplicates_ignore_case_whitespace_and_punctuation() -> None:
    finder = DuplicateFinder(threshold=1.0)
    finder.add(
        ["MGMT is methylated.", "mgmt   IS methylated", "MGMT is methylated!\n", "MLH1 is methylated."]
    )
    verdict = finder.verdict()
    assert verdict.exact.tolist() == [False, True, True, False]
    assert verdict.near.tolist() == [False] * 4


def test_near_duplicates_are_found_and_distinct_texts_kept() -> None:
    rng = random.Random(0)
    originals = [_sentence(rng) for _ in range(300)]
    texts = list(originals)
    for original in originals[:100]:  # one word changed out of 40: Jaccard of bigrams ~0.9
        words = original.split()
        words[20] = "changed"
        texts.append(" ".join(words))
    for original in originals[100:150]:  # half the words changed: not a near duplicate
        words = original.split()
        words[:20] = [f"other{index}" for index in range(20)]
        texts.append(" ".join(words))
    finder = DuplicateFinder(threshold=0.8, permutations=64, seed=1)
    finder.add(texts)
    verdict = finder.verdict()
    assert not verdict.exact.any()
    assert not verdict.near[:300].any()  # the first of each group is kept
    assert verdict.near[300:400].sum() >= 95  # MinHash is probabilistic: nearly all found
    assert verdict.near[400:].sum() <= 2


def test_dedup_is_deterministic_and_handles_empty_and_one_word_texts() -> None:
    texts = ["", "MGMT", "MGMT", "mgmt.", "SEPT9", "", "a b c d e f g"]
    runs = []
    for _ in range(2):
        finder = DuplicateFinder(threshold=0.85, seed=3)
        finder.add(texts)
        verdict = finder.verdict()
        runs.append((verdict.exact.tolist(), verdict.near.tolist()))
    assert runs[0] == runs[1]
    assert runs[0][0] == [False, False, True, True, False, True, False]


def test_dedup_batches_give_the_same_answer_as_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    import methyl_distill.sft_dataset.deduplication as deduplication

    rng = random.Random(5)
    texts = [_sentence(rng, 30) for _ in range(200)]
    texts += texts[:50]
    whole = DuplicateFinder(0.85, seed=2)
    whole.add(texts)
    monkeypatch.setattr(deduplication, "_BATCH_BYTES", 1000)
    batched = DuplicateFinder(0.85, seed=2)
    batched.add(texts)
    assert whole.verdict().exact.tolist() == batched.verdict().exact.tolist()
    assert int(batched.verdict().exact.sum()) == 50


def test_word_hashes_split_on_punctuation_and_fold_case() -> None:
    hashes, counts = word_hashes(["SEPT9, in plasma!", "sept9 in PLASMA", "x"])
    assert counts.tolist() == [3, 3, 1]
    assert hashes[:3].tolist() == hashes[3:6].tolist()


def test_lsh_parameters_fit_the_permutations_and_threshold() -> None:
    bands, rows = lsh_parameters(0.85, 64)
    assert bands * rows <= 64
    # The S-curve's midpoint lies near the threshold.
    assert 0.7 < (1 / bands) ** (1 / rows) < 0.95


def test_near_duplicate_chains_do_not_remove_unlike_samples() -> None:
    from methyl_distill.sft_dataset.deduplication import _later_members

    # 0 ~ 1 and 1 ~ 2, but 0 and 2 unlike: 1 goes (it resembles kept 0); 2 stays (its only match went).
    assert _later_members(np.array([[0, 1], [2, 1]])).tolist() == [1]
    # 3 resembles both a removed (1) and a kept (0) sample: it goes.
    assert _later_members(np.array([[0, 1], [1, 3], [0, 3]])).tolist() == [1, 3]
    assert _later_members(np.zeros((0, 2), dtype=np.int64)).tolist() == []


def test_hash_powers_table_grows_without_changing_values() -> None:
    from methyl_distill.sft_dataset import deduplication

    small = deduplication._powers(deduplication._BASE, 5).copy()
    large = deduplication._powers(deduplication._BASE, (1 << 20) + 7)  # regrows the process table
    assert large.size == (1 << 20) + 7 and np.array_equal(large[:5], small)
    with np.errstate(over="ignore"):
        assert large[-1] == large[-2] * np.uint64(deduplication._BASE)
    assert small.tolist() == [pow(deduplication._BASE, k, 2**64) for k in range(5)]


def test_sample_store_reads_lines_back_exactly_in_any_order(tmp_path: Path) -> None:
    from methyl_distill.sft_dataset.sample_store import SampleStore
    from methyl_distill.sft_dataset.shard_worker import ShardOutput

    store = SampleStore(tmp_path / "spill.jsonl")
    lines = [b'{"a":1}', '{"b":"\u00e9\u2014x"}'.encode(), b"{}", b'{"c":[' + b"1," * 5000 + b"2]}"]
    store.add_shard(ShardOutput(lines=lines[:2], papers=["p", "p"]))
    store.add_shard(ShardOutput())  # an empty shard writes nothing
    store.add_shard(ShardOutput(lines=lines[2:], papers=["q", "q"]))
    store.finish_writing()
    order = [3, 0, 2, 1, 3]
    assert list(store.lines(order)) == [lines[index] + b"\n" for index in order]
    store.remove()
    assert not (tmp_path / "spill.jsonl").exists()


def test_paper_texts_indexed_together_equal_papers_indexed_alone() -> None:
    texts = [
        PAPER,
        "",
        "x",
        "Gene MGMT-\nmethylated in 12345 cases; ΣΑΣ final ς \U0001d400\U0001f600 cg0001\n\nNext 7.",
        "42\u00ad43 ﬁnal \U00010000abc" * 3,
        PAPER.upper(),
    ]
    for together, text in zip(PaperText.many(texts), texts, strict=True):
        alone = PaperText(text)
        assert together.text == alone.text and together.skeleton == alone.skeleton
        assert together._offsets.tolist() == alone._offsets.tolist()
        assert together._pieces.tolist() == alone._pieces.tolist()
        assert together.locate("MGMT was found") == alone.locate("MGMT was found")
    assert PaperText.many([]) == []
