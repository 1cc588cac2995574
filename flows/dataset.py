"""The dataset flow: extraction records -> train/val/test JSON lines, a DatasetDict and a card.

Engineer-facing entry: `build_dataset_flow(records, output_directory, papers_directory, config)`
returns a `DatasetSummary` whose string paths the fine-tuning stage reads (train_jsonl, val_jsonl).
"""

from __future__ import annotations

from methyl_distill.tasks.dataset import build_dataset
from methyl_distill.tasks.extraction import resolve_cache_storage
from methyl_distill.tasks.publishing import check_hub_access_task, push_dataset_task
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from methyl_distill.ops.hub_publish import HubTarget
from methyl_distill.sft_dataset import DatasetConfig, DatasetSummary
from methyl_distill.sft_dataset.dataset_card import statistics_markdown


@flow(name="build-dataset", log_prints=False)
def build_dataset_flow(
    records: list[str],
    output_directory: str,
    papers_directory: str | None = None,
    config: DatasetConfig | None = None,
    refresh: bool = False,
    push_to_hub: HubTarget | None = None,
) -> DatasetSummary:
    """Build the fine-tuning dataset from one or more records.jsonl files (cached on its inputs);
    with `push_to_hub`, publish it with its card (docs/dataset.md#publishing-to-the-hub)."""
    logger = get_run_logger()
    config = config or DatasetConfig()
    if push_to_hub is not None:
        check_hub_access_task(push_to_hub)  # a missing or refused token fails before the build
    task = build_dataset.with_options(result_storage=resolve_cache_storage(), refresh_cache=refresh)
    summary = task(records, output_directory, papers_directory, config)
    if not summary.files_exist():
        logger.info(
            "The cached dataset's files in %s are gone or were rewritten since: rebuilding",
            summary.output_directory,
        )
        summary = task.with_options(refresh_cache=True)(records, output_directory, papers_directory, config)
    create_table_artifact(
        key="dataset-splits",
        table=[
            {
                "split": split,
                "papers": stats.papers,
                "samples": stats.samples,
                "tokens": stats.tokens,
                "max_tokens": stats.max_tokens,
                **{f"style_{style}": count for style, count in stats.styles.items()},
            }
            for split, stats in summary.splits.items()
        ],
        description=f"Dataset splits written to {summary.output_directory}",
    )
    create_markdown_artifact(
        key="dataset-statistics",
        markdown=f"# Dataset in `{summary.output_directory}`\n\n{statistics_markdown(summary)}",
        description="Dataset statistics: splits, tokens, marker coverage, drops by reason, flags",
    )
    coverage = summary.marker_coverage
    logger.info(
        "Dataset: %d train / %d validation / %d test samples in %s; %d of %d grounded markers covered",
        summary.splits["train"].samples,
        summary.splits["validation"].samples,
        summary.splits["test"].samples,
        summary.output_directory,
        coverage.covered,
        coverage.grounded,
    )
    if (warning := coverage.warning()) is not None:  # also for a cached build, whose core did not run
        logger.warning("%s", warning)
    if push_to_hub is not None:  # after the build and outside its cache: a cached build is pushed too
        push_dataset_task(summary, push_to_hub)
    return summary
