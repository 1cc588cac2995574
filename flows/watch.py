"""A small flow that scans an input folder once and announces new papers as `paper.added` events.

Deploy it with an interval schedule (deployments/prefect.yaml: `watch-papers`) when no long-running
`methyl-distill watch` process is wanted; the pipeline deployment's trigger on `paper.added` then
reruns the pipeline, whose extraction cache limits the work to the new papers.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from pydantic import BaseModel, ConfigDict

from methyl_distill.ops.paper_watch import watch_once


class WatchSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    announced: list[str]
    known: int
    unreadable: list[str]


@flow(name="watch-papers", log_prints=False)
def watch_papers_flow(input_directory: str, state_file: str | None = None) -> WatchSummary:
    """Emit `paper.added` for every paper content in `input_directory` not announced before."""
    logger = get_run_logger()
    report = watch_once(input_directory, state_file)
    for paper in report.announced:
        logger.info("paper.added: %s (%s)", paper.relative_path, paper.sha256[:12])
    if report.unreadable:
        logger.warning("Not announced (unreadable): %s", ", ".join(report.unreadable))
    logger.info("%d new paper(s) announced; %d known", len(report.announced), report.known)
    return WatchSummary(
        announced=[paper.relative_path for paper in report.announced],
        known=report.known,
        unreadable=report.unreadable,
    )
