"""Findings across papers: one row per marker and condition, with its support and its conflicts.

Findings are grouped by `marker_key` and `condition_key` (marker_names.py). Each group says how many
distinct papers support it, the range of each reported metric (with how many findings reported it,
so "0.68-0.91 (3)" is not mistaken for a consensus of ten), the sample types, assays and clinical
uses seen, and the direction:

- `hypermethylated` / `hypomethylated` / `mixed`: every finding that states a direction agrees on it;
- `unknown`: no finding states one;
- `conflict`: at least one paper reports hypermethylation and another paper hypomethylation for this
  marker in this condition. The papers on each side are listed (`hypermethylated_papers`,
  `hypomethylated_papers`), so a reader can open both and judge (a different region, sample type or
  cohort often explains it);
- `varied`: the directions differ without two papers opposing each other (one paper reporting both,
  or `mixed` beside a single direction).

A finding whose condition is not stated is grouped under the empty condition and never makes a
conflict: two papers about different diseases may well disagree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from methyl_distill.markers.findings import MarkerFinding

GroupDirection = Literal["hypermethylated", "hypomethylated", "mixed", "unknown", "conflict", "varied"]


class MetricRange(BaseModel):
    """The smallest and largest value reported, and by how many findings (None, None, 0: none)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: float | None = None
    high: float | None = None
    findings: int = 0

    @classmethod
    def of(cls, values: Iterable[float | None]) -> MetricRange:
        reported = [value for value in values if value is not None]
        if not reported:
            return cls()
        return cls(low=min(reported), high=max(reported), findings=len(reported))


class MarkerGroup(BaseModel):
    """Every finding of one marker in one condition, across papers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    marker_key: str
    condition_key: str = Field(description="'' where the findings state no condition.")
    condition: str | None = Field(description="The condition as most findings word it (None: not stated).")
    names_reported: tuple[str, ...] = Field(description="The marker's names as the papers give them.")
    papers: int = Field(description="Distinct papers reporting this marker in this condition.")
    findings: int
    paper_ids: tuple[str, ...]
    direction: GroupDirection
    conflict: bool
    hypermethylated_papers: tuple[str, ...]
    hypomethylated_papers: tuple[str, ...]
    mixed_papers: tuple[str, ...]
    unknown_papers: tuple[str, ...]
    sensitivity: MetricRange
    specificity: MetricRange
    auc: MetricRange
    cohort_size: MetricRange
    sample_types: tuple[str, ...]
    assays: tuple[str, ...]
    clinical_uses: tuple[str, ...]
    finding_ids: tuple[str, ...]


def _by_frequency(values: Iterable[str]) -> tuple[str, ...]:
    """Distinct values, the most frequent first (ties in order of first appearance)."""
    counts = Counter(values)
    return tuple(value for value, _ in counts.most_common())


def _distinct(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _papers_saying(findings: Sequence[MarkerFinding], direction: str) -> tuple[str, ...]:
    return _distinct(finding.paper_id for finding in findings if finding.direction == direction)


def group_direction(
    condition_key: str, hyper: Sequence[str], hypo: Sequence[str], stated: Collection[str]
) -> tuple[GroupDirection, bool]:
    """The group's direction label and whether it is a conflict (see the module docstring)."""
    opposed = bool(hyper) and bool(hypo) and len(set(hyper) | set(hypo)) >= 2
    if condition_key and opposed:
        return "conflict", True
    if not stated:
        return "unknown", False
    if len(stated) == 1:
        (only,) = stated
        return only, False  # type: ignore[return-value]  # one of the finding directions
    return "varied", False


def group_findings(findings: Sequence[MarkerFinding]) -> list[MarkerGroup]:
    """One `MarkerGroup` per marker and condition: most papers first, then conflicts, then by name."""
    groups: dict[tuple[str, str], list[MarkerFinding]] = {}
    for finding in findings:
        groups.setdefault((finding.marker_key, finding.condition_key), []).append(finding)
    result = [_group(marker, condition, members) for (marker, condition), members in groups.items()]
    result.sort(key=lambda group: (-group.papers, not group.conflict, group.marker_key, group.condition_key))
    return result


def _group(marker: str, condition: str, findings: Sequence[MarkerFinding]) -> MarkerGroup:
    hyper = _papers_saying(findings, "hypermethylated")
    hypo = _papers_saying(findings, "hypomethylated")
    stated = {finding.direction for finding in findings if finding.direction != "unknown"}
    direction, conflict = group_direction(condition, hyper, hypo, stated)
    conditions = _by_frequency(finding.condition for finding in findings if finding.condition)
    return MarkerGroup(
        marker_key=marker,
        condition_key=condition,
        condition=conditions[0] if conditions else None,
        names_reported=_by_frequency(finding.marker for finding in findings),
        papers=len({finding.paper_id for finding in findings}),
        findings=len(findings),
        paper_ids=_distinct(finding.paper_id for finding in findings),
        direction=direction,
        conflict=conflict,
        hypermethylated_papers=hyper,
        hypomethylated_papers=hypo,
        mixed_papers=_papers_saying(findings, "mixed"),
        unknown_papers=_papers_saying(findings, "unknown"),
        sensitivity=MetricRange.of(finding.sensitivity for finding in findings),
        specificity=MetricRange.of(finding.specificity for finding in findings),
        auc=MetricRange.of(finding.auc for finding in findings),
        cohort_size=MetricRange.of(finding.cohort_size for finding in findings),
        sample_types=_by_frequency(value for finding in findings for value in finding.sample_types),
        assays=_by_frequency(value for finding in findings for value in finding.assays),
        clinical_uses=_by_frequency(value for finding in findings for value in finding.clinical_uses),
        finding_ids=tuple(finding.finding_id for finding in findings),
    )
