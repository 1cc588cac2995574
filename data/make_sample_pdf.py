"""Write data/papers/sdc2_stool_colorectal_adenoma.pdf, the sample PDF paper (our own invented text).

The paper is laid out by `tests/pdf_fixtures.py:sample_paper` in reportlab's invariant mode, so
rebuilding gives the same bytes; `tests/test_pdf_reader.py` checks that the file is what it builds.

Run from the repository root: `.venv/bin/python data/make_sample_pdf.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.pdf_fixtures import sample_paper  # noqa: E402

SAMPLE_PATH = REPO / "data" / "papers" / "sdc2_stool_colorectal_adenoma.pdf"


def main() -> None:
    data = sample_paper()
    SAMPLE_PATH.write_bytes(data)
    print(f"wrote {SAMPLE_PATH.relative_to(REPO)} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
