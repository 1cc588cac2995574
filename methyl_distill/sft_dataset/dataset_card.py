"""The dataset card (README.md): Hugging Face metadata, counts, tokens, markers, drops, config.

The metadata is `huggingface_hub.DatasetCardData`; its one `default` config names the split files
that hold samples, the same files `methyl_distill.ops.hub_publish` pushes beside the card, so the
card in the output folder and the card on the Hub are the same bytes and name only files that are
there.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from huggingface_hub import DatasetCard, DatasetCardData

from methyl_distill.sft_dataset.dataset_writer import SPLIT_FILES

if TYPE_CHECKING:
    from methyl_distill.sft_dataset.build import DatasetSummary

_SPLIT_TITLES = {"train": "train", "validation": "validation", "test": "test"}
_TOP_MARKERS = 40
_COVERAGE_PAPERS = 20


def _size_category(samples: int) -> str:
    for limit, label in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ):
        if samples < limit:
            return label
    return "1M<n<10M"


def _table(header: tuple[str, ...], rows: Sequence[tuple[object, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def coverage_markdown(summary: DatasetSummary) -> str:
    """How many grounded markers of the records are in a written sample, and the papers missing some."""
    coverage = summary.marker_coverage
    if coverage.grounded == 0:
        return "No marker of the records is grounded in its paper."
    lines = [
        f"{coverage.covered} of {coverage.grounded} grounded markers ({coverage.share:.1%}) are in at least "
        f"one sample (an extraction target or named in an answer); {coverage.complete_papers} of "
        f"{coverage.papers} papers have all their grounded markers in samples."
    ]
    if coverage.incomplete:
        shown = list(coverage.incomplete.items())[:_COVERAGE_PAPERS]
        rows = [
            (file_id, paper.grounded, paper.covered, ", ".join(paper.missing)) for file_id, paper in shown
        ]
        lines.append(_table(("paper", "grounded", "covered", "missing markers"), rows))
        if len(coverage.incomplete) > len(shown):
            lines.append(f"... and {len(coverage.incomplete) - len(shown)} more papers (stats.json).")
    return "\n\n".join(lines)


def statistics_markdown(summary: DatasetSummary) -> str:
    """Splits, marker coverage, drops and flags as markdown tables (also the Prefect artifact)."""
    split_rows: list[tuple[object, ...]] = []
    for split, stats in summary.splits.items():
        mean = stats.tokens / stats.samples if stats.samples else 0
        styles = ", ".join(f"{style} {count}" for style, count in stats.styles.items()) or "-"
        split_rows.append(
            (split, stats.papers, stats.samples, stats.tokens, f"{mean:.0f}", stats.max_tokens, styles)
        )
    parts = [
        "## Splits",
        _table(("split", "papers", "samples", "tokens", "mean tokens", "max tokens", "styles"), split_rows),
        f"Tokens are {summary.token_counting}; max length {summary.config.max_length}.",
        "## Marker coverage",
        coverage_markdown(summary),
        "## Left out",
        _table(("reason", "count"), list(summary.drops.items()))
        if summary.drops
        else "Nothing was left out.",
        "## Kept with a flag",
        _table(("flag", "samples"), list(summary.flags.items()))
        if summary.flags
        else "No sample is flagged.",
    ]
    return "\n\n".join(parts)


def hub_split_files(summary: DatasetSummary) -> dict[str, str]:
    """Split -> file name of the splits that hold samples: what the card's `configs` name and what a
    push uploads (an empty JSON lines file is no split `load_dataset` can read)."""
    return {split: SPLIT_FILES[split] for split, stats in summary.splits.items() if stats.samples > 0}


def card_metadata(summary: DatasetSummary) -> DatasetCardData:
    """The card's Hub metadata: license, language, tasks, size, and one config naming the split files."""
    return DatasetCardData(
        pretty_name="methyl-distill SFT dataset",
        license=summary.config.card_license,
        language=["en"],
        task_categories=["text-generation", "question-answering"],
        size_categories=[_size_category(summary.total_samples)],
        tags=["dna-methylation", "biomarkers", "sft", "methyl-distill"],
        configs=[
            {
                "config_name": "default",
                "data_files": [
                    {"split": split, "path": path} for split, path in hub_split_files(summary).items()
                ],
            }
        ],
    )


def render_card(summary: DatasetSummary) -> str:
    """The dataset card, README.md of the output folder and of the Hub repository alike."""
    total = summary.total_samples
    status = ", ".join(f"{name} {count}" for name, count in summary.paper_status.items())
    records = "\n".join(f"- `{path}` (sha256 `{sha}`)" for path, sha in summary.records_files.items())
    markers = list(summary.markers_covered.items())
    files = ", ".join(f"`{path}`" for path in hub_split_files(summary).values())
    marker_lines = (
        _table(("marker", "samples"), markers[:_TOP_MARKERS])
        + (f"\n\n... and {len(markers) - _TOP_MARKERS} more." if len(markers) > _TOP_MARKERS else "")
        if markers
        else "No marker is named in the samples."
    )
    missing = ""
    if summary.missing_papers:
        shown = "\n".join(f"- {line}" for line in summary.missing_papers[:20])
        more = (
            f"\n- ... and {len(summary.missing_papers) - 20} more" if len(summary.missing_papers) > 20 else ""
        )
        missing = f"\n\nPapers that could not be read for grounding:\n\n{shown}{more}"
    corrupt = ""
    if summary.corrupt_lines:
        corrupt = "\n\nCorrupt record lines skipped:\n\n" + "\n".join(
            f"- {line}" for line in summary.corrupt_lines[:20]
        )
    body = f"""# methyl-distill SFT dataset

Chat samples distilled from teacher extractions of DNA-methylation marker papers, in the
`{{"messages": [...]}}` format that ms-swift, TRL and OpenAI fine-tuning read. Each line also carries a
`meta` object (paper file id, sample style, flags, markers, tokens) unless `include_meta` is off.
`load_dataset` reads the JSON lines files named in this card's metadata ({files}); the build's
output folder also holds the same splits as a Hugging Face `DatasetDict` (`dataset_dict/`, not
pushed to the Hub). Splits are by paper: no paper contributes samples to two splits.

Sample styles: **closed_book** (the question alone -> the answer), **grounded** (a paper excerpt
around the evidence + the question -> the answer), **extraction** (an excerpt -> JSON marker records).

{total} samples from {summary.papers} papers. License of the dataset: `{summary.config.card_license}`;
the excerpts quote the papers, which keep their own licenses.

{statistics_markdown(summary)}

## Samples per marker

{len(markers)} distinct markers named in samples.

{marker_lines}

## Inputs

Records files ({summary.records_read} lines read, {summary.superseded_records} superseded by newer
records of the same paper, {len(summary.corrupt_lines)} corrupt):

{records}

Papers: {status}.{missing}{corrupt}

## Configuration

```json
{json.dumps(summary.config.model_dump(mode="json"), indent=2, sort_keys=True)}
```

Built in {summary.build_seconds:.1f} s.
"""
    return str(DatasetCard(f"---\n{card_metadata(summary).to_yaml()}\n---\n\n{body}"))
