"""Debian's Chromium driven by playwright, for markers.html: the browser test's set-up, and the
README picture.

Playwright launches `/usr/bin/chromium` (installed by `make setup` / `make test` with apt-get) and
never a browser of its own: nothing is downloaded. Every request the page makes is recorded and any
that is not the page file itself is aborted, so a test can assert that the page made none.

As a command (docs/markers.md, how docs/images/markers.png was made):

    .venv/bin/python -m tests.markers_screenshot outputs/sample-markers/markers.html docs/images/markers.png
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Page, Route

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
VIEWPORT = {"width": 1440, "height": 900}


@dataclass
class PageTraffic:
    """What a page asked for: every request, and the ones refused (anything but the page itself)."""

    page_url: str
    requests: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # uncaught script errors and console errors

    @property
    def network_requests(self) -> list[str]:
        return [url for url in self.requests if url != self.page_url]


@contextlib.contextmanager
def open_markers_page(
    path: Path, viewport: dict[str, int] | None = None
) -> Iterator[tuple[Page, PageTraffic]]:
    """`path` opened from a file:// URL in headless Debian Chromium, every request recorded."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.is_file():
        raise FileNotFoundError(f"{CHROMIUM} is missing: `make setup` installs Debian's chromium (as root)")
    url = path.resolve().as_uri()
    traffic = PageTraffic(page_url=url)

    def guard(route: Route) -> None:
        if route.request.url == url:
            route.continue_()
        else:
            traffic.refused.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS))
        try:
            context = browser.new_context(viewport=viewport or VIEWPORT)  # type: ignore[arg-type]
            context.route("**/*", guard)
            page = context.new_page()
            page.on("request", lambda request: traffic.requests.append(request.url))
            page.on("pageerror", lambda error: traffic.errors.append(str(error)))
            page.on(
                "console",
                lambda message: traffic.errors.append(message.text) if message.type == "error" else None,
            )
            page.goto(url)
            page.wait_for_selector("#groups-table tbody")
            yield page, traffic
        finally:
            browser.close()


def readme_picture(page_path: Path, picture: Path) -> None:
    """The README's view: the findings, most sensitive first, the first one's evidence open."""
    with open_markers_page(page_path, {"width": 1440, "height": 1000}) as (page, traffic):
        page.click("#tab-findings")
        page.click('#findings-table th[data-column="sensitivity"] .sort')
        page.locator("#findings-table tbody tr.row button.evidence-toggle").first.click()
        picture.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(picture))
        if traffic.network_requests or traffic.errors:
            raise RuntimeError(
                f"the page made requests {traffic.network_requests} or errors {traffic.errors}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description="Screenshot markers.html for the README.")
    parser.add_argument("page", type=Path, help="markers.html")
    parser.add_argument("picture", type=Path, help="PNG to write")
    args = parser.parse_args()
    readme_picture(args.page, args.picture)
    print(args.picture)


if __name__ == "__main__":
    main()
