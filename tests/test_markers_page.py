"""markers.html in a real browser: Debian's Chromium, headless, driven by playwright.

The page is built from records with known findings (tests/marker_records.py) and opened from a
file:// URL. The test reads the rows, filters, sorts, opens a finding's evidence, checks that the
page asked the network for nothing, and leaves a screenshot: in the test's tmp_path and, for a
person to look at, copied to outputs/test-screenshots/ (the path is printed; `pytest -s` shows it).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from methyl_distill.markers import build_marker_table
from tests.marker_records import SEPT9_QUOTE, sample_corpus, write_records
from tests.markers_screenshot import CHROMIUM, open_markers_page

SCREENSHOTS = Path(__file__).resolve().parent.parent / "outputs" / "test-screenshots"

pytestmark = pytest.mark.integration


@pytest.fixture
def markers_page(tmp_path: Path) -> Path:
    if not CHROMIUM.is_file():
        message = f"{CHROMIUM} is missing: `make setup` installs Debian's chromium (as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    pytest.importorskip("playwright", reason="playwright is in the dev extra: make setup")
    records = write_records(tmp_path / "records.jsonl", sample_corpus())
    return Path(build_marker_table([records], tmp_path / "markers").page)


def _column(page, table: str, column: str) -> list[str]:  # type: ignore[no-untyped-def]
    return page.locator(f'#{table}-table tbody tr.row td[data-column="{column}"]').all_inner_texts()


def test_the_page_loads_filters_sorts_and_shows_evidence_offline(markers_page: Path, tmp_path: Path) -> None:
    with open_markers_page(markers_page) as (page, traffic):
        # Loaded: the header's counts and the marker/condition pairs, the conflict flagged.
        assert page.locator("#stats").inner_text().split() == [
            "PAPERS", "5", "FINDINGS", "5", "MARKERS", "3", "MARKER", "×", "CONDITION", "3", "CONFLICTS", "1",
        ]  # fmt: skip
        assert _column(page, "groups", "marker")[0].startswith("RASSF1")
        assert _column(page, "groups", "direction") == ["⚠ conflict", "▲ hyper", "unknown"]
        assert page.locator("#row-count").inner_text() == "Showing 3 of 3 marker/condition pairs"
        assert "1 of 5 papers report no marker" in page.locator("#papers-without-markers").inner_text()

        # The findings: one row each; a metric not reported is a dash, never a number.
        page.click("#tab-findings")
        assert page.locator("#findings-table tbody tr.row").count() == 5
        assert page.locator("#groups-table").is_hidden()
        assert sorted(_column(page, "findings", "sensitivity")) == ["68%", "81%", "—", "—", "—"]

        # Filtering narrows the rows to those that match every word, and back.
        page.fill("#filter", "septin9")
        assert [text.split("\n")[0] for text in _column(page, "findings", "marker")] == [
            "SEPT9 promoter",
            "SEPTIN9",
        ]
        assert page.locator("#row-count").inner_text() == "Showing 2 of 5 findings"
        page.fill("#filter", "breast hypomethylated")
        assert _column(page, "findings", "marker") == ["RASSF1"]
        page.fill("#filter", "no such marker anywhere")
        assert page.locator("#findings-table tbody tr.row").count() == 0
        assert page.locator("#empty").is_visible()
        page.fill("#filter", "")
        assert page.locator("#findings-table tbody tr.row").count() == 5

        # Sorting: numbers largest first on the first click, then smallest first; blanks stay last.
        sensitivity_header = page.locator('#findings-table th[data-column="sensitivity"]')
        sensitivity_header.locator(".sort").click()
        assert _column(page, "findings", "sensitivity") == ["81%", "68%", "—", "—", "—"]
        assert sensitivity_header.get_attribute("aria-sort") == "descending"
        sensitivity_header.locator(".sort").click()
        assert _column(page, "findings", "sensitivity") == ["68%", "81%", "—", "—", "—"]
        assert sensitivity_header.get_attribute("aria-sort") == "ascending"

        # One click opens a finding's evidence: the verbatim quote, visible.
        quote = page.get_by_text(SEPT9_QUOTE)
        assert quote.count() == 0
        page.locator('#findings-table tr.row[data-id="sept9-plasma#1"] button.evidence-toggle').click()
        quote.wait_for(state="visible")
        assert quote.is_visible()
        details = page.locator('#findings-table tr.detail[data-detail-for="sept9-plasma#1"]').inner_text()
        assert "10.5555/sept9.2024" in details and "12345678" in details

        screenshot = tmp_path / "markers_page.png"
        page.screenshot(path=str(screenshot))

        # The conflict, from the group down to both sides' papers.
        page.click("#tab-groups")
        page.select_option("#direction", "conflict")
        assert _column(page, "groups", "marker") == ["RASSF1\nRASSF1A"]
        page.locator("#groups-table tbody tr.row button.evidence-toggle").click()
        sides = page.locator("#groups-table tr.detail .sides").inner_text()
        assert "RASSF1A promoter hypermethylation in breast tumours" in sides
        assert "RASSF1 hypomethylation in a breast cancer cohort" in sides
        page.get_by_text("Show the 2 findings with every quote").click()
        assert page.locator("#findings-table tbody tr.row").count() == 2
        assert page.locator("#scope").inner_text().lower().startswith("rassf1 · breast cancer")

    assert traffic.network_requests == [] and traffic.refused == []
    assert traffic.errors == []
    assert screenshot.stat().st_size > 20_000
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    kept = SCREENSHOTS / "markers_page.png"
    shutil.copyfile(screenshot, kept)
    print(f"markers.html screenshot: {kept}")


def test_a_large_table_is_drawn_in_pages_but_filtered_and_sorted_whole(tmp_path: Path) -> None:
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing")
    from tests.marker_records import marker, paper

    records = [
        paper(
            f"p{index:03}", [marker(f"GENE{index}", sensitivity=index / 1000, evidence=[f"Quote {index}."])]
        )
        for index in range(700)
    ]
    summary = build_marker_table([write_records(tmp_path / "r.jsonl", records)], tmp_path / "out")
    with open_markers_page(Path(summary.page)) as (page, traffic):
        page.click("#tab-findings")
        rows = page.locator("#findings-table tbody tr.row")
        assert (
            rows.count() == 300 and page.locator("#row-count").inner_text() == "Showing 700 of 700 findings"
        )
        page.get_by_text("Show 300 more").click()
        assert rows.count() == 600
        page.locator(
            '#findings-table th[data-column="sensitivity"] .sort'
        ).click()  # largest first, of all 700
        assert _column(page, "findings", "sensitivity")[:2] == ["69.9%", "69.8%"]
        page.fill("#filter", "gene699")
        assert _column(page, "findings", "marker") == ["GENE699"] and page.locator("#more").is_hidden()
    assert traffic.network_requests == [] and traffic.errors == []
