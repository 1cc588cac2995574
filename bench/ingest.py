"""Ingestion: our PDF reader against three libraries for speed and fidelity; back matter left out.

Prints numbers; it is not a test. Speed: a corpus of generated two-column pages (default 300: ten
30-page papers from tests/pdf_fixtures.py, running headers and footers on every page) is read, one
library after another in this one process, and pages per second (wall clock) reported for

- `read_pdf` (methyl_distill.readers.pdf: reading order, hyphens, headers, sections),
- plain pypdfium2 (`PdfTextPage.get_text_range`, the text our reader starts from),
- pdfminer.six (`pdfminer.high_level.extract_text`, default layout analysis),
- pypdf (`PageObject.extract_text`).

Fidelity, on the two-column test paper with its hyphenated line breaks (whitespace collapsed in
every output before comparing, PDFium's line-end hyphen marker U+FFFE read as '-'): the share of
the expected sentences found verbatim, the share found in reading order (each after the one
before), words hyphenated at a line end found joined in their context (of 3), real hyphenated words
broken at their hyphen found whole (of 4), table rows with their cells in order (of 4), and running
header and footer lines that leaked into the text (of 4 on 2 pages); and the share in reading order
again for the same paper drawn word by word in a random order ('shuffled'), where the order of the
content stream says nothing.

Back matter: for each sample paper in data/papers (every format), the estimated tokens of the text
the teacher reads with and without its reference list and acknowledgements, and the share saved,
per paper and over all of them; and the wall time of reading the whole folder (`discover_papers`).

Run from the repository root: `.venv/bin/python bench/ingest.py [--pages 300]` (`make bench-ingest`;
about a minute on 2 cores, most of it pdfminer).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from methyl_distill.extraction.papers import discover_papers  # noqa: E402
from methyl_distill.readers.formats import ReadingOptions, read_paper_file  # noqa: E402
from methyl_distill.readers.pdf import read_pdf  # noqa: E402
from methyl_distill.text.sentences import split_sentences  # noqa: E402
from methyl_distill.text.token_count import estimate_tokens  # noqa: E402
from tests import pdf_fixtures  # noqa: E402

PAGES_PER_PAPER = 30


def text_by_our_reader(data: bytes) -> str:
    return read_pdf(data).text


def text_by_pypdfium2(data: bytes) -> str:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(data)
    try:
        pieces = []
        for page in pdf:
            textpage = page.get_textpage()
            pieces.append(textpage.get_text_range())
            textpage.close()
            page.close()
        return "\n".join(pieces)
    finally:
        pdf.close()


def text_by_pdfminer(data: bytes) -> str:
    from pdfminer.high_level import extract_text

    return extract_text(io.BytesIO(data))


def text_by_pypdf(data: bytes) -> str:
    from pypdf import PdfReader

    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


LIBRARIES: dict[str, Callable[[bytes], str]] = {
    "read_pdf (ours, pypdfium2)": text_by_our_reader,
    "pypdfium2 get_text_range": text_by_pypdfium2,
    "pdfminer.six extract_text": text_by_pdfminer,
    "pypdf extract_text": text_by_pypdf,
}


def _flat(text: str) -> str:
    """Whitespace collapsed, PDFium's hyphen markers as hyphens: no extractor loses for line breaks."""
    return " ".join(text.replace("\ufffe", "-").replace("\x02", "-").split())


def fidelity(text: str) -> dict[str, float | int]:
    """How faithfully `text` renders the two-column test paper."""
    flat = _flat(text)
    expected = [
        sentence
        for _, paragraphs in pdf_fixtures.expected_sections(pdf_fixtures.TWO_COLUMN_PAPER)
        for paragraph in paragraphs
        if " | " not in paragraph
        for sentence in split_sentences(paragraph)
    ]
    found = sum(sentence in flat for sentence in expected)
    in_order, cursor = 0, 0
    for sentence in expected:  # found after the sentence before it (some sentences occur twice)
        position = flat.find(sentence, cursor)
        if position >= 0:
            in_order, cursor = in_order + 1, position + len(sentence)
    table = next(
        block for block in pdf_fixtures.TWO_COLUMN_PAPER.body if isinstance(block, pdf_fixtures.Table)
    )
    running = ["Journal of Epigenetic Markers 7 (2024) 112–119", "Page 1 of 2", "Page 2 of 2"]
    return {
        "sentences_found": round(found / len(expected), 3),
        "sentences_in_order": round(in_order / len(expected), 3),
        "hyphenation_joined_of_3": sum(word in flat for word in pdf_fixtures.TWO_COLUMN_JOINED_WORDS),
        "real_hyphens_kept_of_4": sum(word in flat for word in pdf_fixtures.TWO_COLUMN_KEPT_HYPHENS),
        "table_rows_of_4": sum(
            re.search(r"\s*(?:\|\s*)?".join(re.escape(cell) for cell in row), flat) is not None
            for row in table.rows
        ),
        "running_lines_leaked_of_4": sum(flat.count(line) for line in running),
    }


def measure_pdf_libraries(pages: int = 300) -> dict[str, object]:
    """Pages per second of each library over a generated corpus, and each one's fidelity."""
    papers = max(1, pages // PAGES_PER_PAPER)
    corpus = [pdf_fixtures.benchmark_paper(pages=PAGES_PER_PAPER, seed=seed) for seed in range(papers)]
    corpus_pages = papers * PAGES_PER_PAPER
    two_column = pdf_fixtures.two_column_paper()
    # The same paper with each page's lines drawn in a random order, word by word: the content
    # stream's order then says nothing about the reading order.
    shuffled = pdf_fixtures.two_column_paper(word_objects=True, shuffle_seed=5)
    results: dict[str, object] = {
        "corpus": f"{papers} PDFs x {PAGES_PER_PAPER} pages, two columns, headers and footers",
        "pages": corpus_pages,
        "cpus": os.cpu_count(),
        "libraries": {},
    }
    for name, extract in LIBRARIES.items():
        extract(pdf_fixtures.benchmark_paper(pages=1, seed=99))  # imports and first-call set-up
        started, cpu_started = time.perf_counter(), time.process_time()
        characters = sum(len(extract(data)) for data in corpus)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        results["libraries"][name] = {  # type: ignore[index]
            "pages_per_second": round(corpus_pages / wall, 1),
            "cpu_seconds": round(cpu, 2),
            "characters": characters,
            **fidelity(extract(two_column)),
            "shuffled_sentences_in_order": fidelity(extract(shuffled))["sentences_in_order"],
        }
    results["load_average_1min"] = round(os.getloadavg()[0], 2)
    return results


def measure_back_matter(folder: Path = REPO / "data" / "papers") -> dict[str, object]:
    """Tokens of each sample paper with and without its back matter, and the folder's read time."""
    papers = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        whole = read_paper_file(path, ReadingOptions(keep_back_matter=True)).paper
        read = read_paper_file(path)
        tokens_whole, tokens_read = estimate_tokens(whole.text), estimate_tokens(read.paper.text)
        papers.append(
            {
                "file": path.name,
                "format": whole.format,
                "tokens_with_back_matter": tokens_whole,
                "tokens_read": tokens_read,
                "saved_share": round(1 - tokens_read / tokens_whole, 3),
                "left_out": list(read.omitted.sections),
            }
        )
    total_whole = sum(int(paper["tokens_with_back_matter"]) for paper in papers)  # type: ignore[call-overload]
    total_read = sum(int(paper["tokens_read"]) for paper in papers)  # type: ignore[call-overload]
    started = time.perf_counter()
    discovery = discover_papers(folder)
    return {
        "papers": papers,
        "saved_share_all": round(1 - total_read / total_whole, 3),
        "folder_read_seconds": round(time.perf_counter() - started, 3),
        "folder_files": discovery.file_count,
    }


def _back_matter_table(results: dict[str, object]) -> str:
    papers: list[dict[str, object]] = results["papers"]  # type: ignore[assignment]
    width = max(len(str(paper["file"])) for paper in papers) + 2
    lines = [f"{'sample paper':<{width}}{'format':>9}{'tokens':>9}{'read':>9}{'saved':>8}  left out"]
    for paper in papers:
        lines.append(
            f"{paper['file']!s:<{width}}{paper['format']!s:>9}{paper['tokens_with_back_matter']!s:>9}"
            f"{paper['tokens_read']!s:>9}{float(paper['saved_share']):>8.1%}  "  # type: ignore[arg-type]
            + (", ".join(paper["left_out"]) or "-")  # type: ignore[arg-type]
        )
    return "\n".join(lines)


def _table(results: dict[str, object]) -> str:
    libraries: dict[str, dict[str, float]] = results["libraries"]  # type: ignore[assignment]
    columns = [
        ("pages/s", "pages_per_second"),
        ("sentences", "sentences_found"),
        ("in order", "sentences_in_order"),
        ("shuffled", "shuffled_sentences_in_order"),
        ("joined/3", "hyphenation_joined_of_3"),
        ("kept/4", "real_hyphens_kept_of_4"),
        ("rows/4", "table_rows_of_4"),
        ("leaked/4", "running_lines_leaked_of_4"),
    ]
    width = max(len(name) for name in libraries) + 2
    lines = [f"{'library':<{width}}" + "".join(f"{title:>11}" for title, _ in columns)]
    for name, values in libraries.items():
        lines.append(f"{name:<{width}}" + "".join(f"{values[key]:>11}" for _, key in columns))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pages", type=int, default=300, help="pages in the speed corpus (30 a paper)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args()
    results = measure_pdf_libraries(args.pages)
    print(f"{results['corpus']}: {results['pages']} pages, {results['cpus']} CPUs")
    print(_table(results))
    print(f"load average (1 min) at the end: {results['load_average_1min']}")
    back_matter = measure_back_matter()
    print()
    print(_back_matter_table(back_matter))
    saved = float(back_matter["saved_share_all"])  # type: ignore[arg-type]
    print(
        f"back matter left out: {saved:.1%} of the tokens of all sample papers; the "
        f"{back_matter['folder_files']} files of data/papers read in {back_matter['folder_read_seconds']} s"
    )
    if args.json:
        print(json.dumps({**results, "back_matter": back_matter}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
