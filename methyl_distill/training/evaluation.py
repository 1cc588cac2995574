"""Base vs tuned on the held-out test split, scored against the teacher's answers; JSON + markdown report.

Both models answer greedily (temperature 0) through the same chat template and system prompt (those
the adapter was trained with); the base model is the adapter's base without the adapter. Writes to
the output folder:

    answers.jsonl         one line per test example: question, reference, base and tuned answers, scores
    evaluation.json       `EvaluationReport`: aggregate scores per model and the per-example rows
    evaluation.md         summary table, side-by-side examples, where tuning helped and hurt most
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from methyl_distill.training.chat_jsonl import ChatExample, read_chat_examples
from methyl_distill.training.evaluation_metrics import AggregateScores, AnswerScore, aggregate, score_answer
from methyl_distill.training.runtime_device import DeviceRequest

logger = logging.getLogger(__name__)

MODELS = ("base", "tuned")


class EvaluatedExample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    line: int
    question: str
    reference: str
    answers: dict[str, str]
    scores: dict[str, AnswerScore]


class EvaluationReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    test_path: str
    adapter_path: str
    base_model: str
    max_new_tokens: int
    aggregates: dict[str, AggregateScores]
    examples: list[EvaluatedExample]


class EvaluationSummary(BaseModel):
    """Where the report went and the headline numbers (string paths: they cross process boundaries)."""

    model_config = ConfigDict(extra="forbid")

    output_directory: str
    report_json_path: str
    report_markdown_path: str
    answers_path: str
    examples: int
    metrics: dict[str, AggregateScores] = Field(description="Aggregate scores by model: base and tuned.")


def score_examples(examples: list[ChatExample], answers: dict[str, list[str]]) -> list[EvaluatedExample]:
    """Score every model's answers against each example's reference."""
    rows: list[EvaluatedExample] = []
    for index, example in enumerate(examples):
        assert example.reference is not None
        by_model = {name: answers[name][index] for name in answers}
        rows.append(
            EvaluatedExample(
                line=example.line,
                question=example.question,
                reference=example.reference,
                answers=by_model,
                scores={name: score_answer(example.reference, text) for name, text in by_model.items()},
            )
        )
    return rows


def build_report(
    rows: list[EvaluatedExample], *, test_path: Path, adapter_path: Path, base_model: str, max_new_tokens: int
) -> EvaluationReport:
    names = list(rows[0].answers) if rows else list(MODELS)
    return EvaluationReport(
        test_path=str(test_path),
        adapter_path=str(adapter_path),
        base_model=base_model,
        max_new_tokens=max_new_tokens,
        aggregates={name: aggregate([row.scores[name] for row in rows]) for name in names},
        examples=rows,
    )


def _cell(text: str, limit: int = 220) -> str:
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _number(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.1f}%" if percent else f"{value:.3f}"


def render_markdown(report: EvaluationReport, *, examples_shown: int = 10) -> str:
    """The report as markdown: summary table, side-by-side answers, largest gains and losses."""
    base, tuned = report.aggregates.get("base"), report.aggregates.get("tuned")
    lines = [
        "# Evaluation: base vs tuned student",
        "",
        f"Test split `{report.test_path}` ({len(report.examples)} examples), "
        f"adapter `{report.adapter_path}`, base model `{report.base_model}`; "
        f"greedy decoding, at most {report.max_new_tokens} new tokens.",
        "",
        "| metric | base | tuned | change |",
        "| --- | --- | --- | --- |",
    ]
    metrics = (
        ("ROUGE-L F1 (mean)", "rouge_l_f1", False),
        ("marker recall (genes + CpG ids)", "marker_recall", True),
        ("methylation direction agreement", "direction_agreement", True),
    )
    for label, key, percent in metrics:
        b = getattr(base, key) if base else None
        t = getattr(tuned, key) if tuned else None
        change = "n/a" if b is None or t is None else _number(t - b, percent)
        if change != "n/a" and not change.startswith("-"):
            change = "+" + change
        lines.append(f"| {label} | {_number(b, percent)} | {_number(t, percent)} | {change} |")
    if tuned:
        lines += [
            "",
            f"Marker recall is over the {tuned.examples_with_markers} example(s) whose reference names a "
            f"gene or CpG id; direction agreement over the {tuned.examples_with_direction} whose reference "
            "states a direction.",
        ]
    lines += [
        "",
        "## Side by side",
        "",
        "| # | question | reference | base | tuned |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in report.examples[:examples_shown]:
        lines.append(
            f"| {row.line} | {_cell(row.question, 120)} | {_cell(row.reference)} | "
            f"{_cell(row.answers.get('base', ''))} | {_cell(row.answers.get('tuned', ''))} |"
        )
    if base and tuned and report.examples:
        by_gain = sorted(
            report.examples, key=lambda r: r.scores["tuned"].rouge_l_f1 - r.scores["base"].rouge_l_f1
        )

        def gain(row: EvaluatedExample) -> float:
            return row.scores["tuned"].rouge_l_f1 - row.scores["base"].rouge_l_f1

        helped = [row for row in by_gain[::-1][:3] if gain(row) > 0]
        hurt = [row for row in by_gain[:3] if gain(row) < 0]
        for title, picked in (("Tuning helped most", helped), ("Tuning hurt most", hurt)):
            lines += ["", f"## {title} (ROUGE-L)", ""]
            if not picked:
                lines.append("No example.")
            for row in picked:
                lines += [
                    f"**Line {row.line}** (ROUGE-L {gain(row):+.3f}): {_cell(row.question, 300)}",
                    "",
                    f"- reference: {_cell(row.reference, 600)}",
                    f"- base: {_cell(row.answers['base'], 600)}",
                    f"- tuned: {_cell(row.answers['tuned'], 600)}",
                    "",
                ]
    return "\n".join(lines).rstrip() + "\n"


def write_report(report: EvaluationReport, output_directory: Path) -> EvaluationSummary:
    output_directory = Path(output_directory)
    output_directory.mkdir(parents=True, exist_ok=True)
    answers_path = output_directory / "answers.jsonl"
    with answers_path.open("w", encoding="utf-8") as handle:
        for row in report.examples:
            handle.write(row.model_dump_json() + "\n")
    json_path = output_directory / "evaluation.json"
    json_path.write_text(report.model_dump_json(indent=2), encoding="utf-8")
    markdown_path = output_directory / "evaluation.md"
    markdown_path.write_text(render_markdown(report), encoding="utf-8")
    return EvaluationSummary(
        output_directory=str(output_directory.resolve()),
        report_json_path=str(json_path.resolve()),
        report_markdown_path=str(markdown_path.resolve()),
        answers_path=str(answers_path.resolve()),
        examples=len(report.examples),
        metrics=report.aggregates,
    )


def evaluate(
    test_path: Path,
    adapter_path: Path,
    output_directory: Path,
    *,
    max_new_tokens: int = 512,
    limit: int | None = None,
    device: DeviceRequest = "auto",
    max_batch_size: int = 8,
) -> EvaluationSummary:
    """Answer the test split with the base and the tuned model and score both against the references."""
    import gc

    from methyl_distill.training.inference import load_chat_model, read_adapter_arguments

    test_path, adapter_path = Path(test_path), Path(adapter_path)
    base_model = str(read_adapter_arguments(adapter_path)["model"])
    examples = read_chat_examples(test_path, require_reference=True)
    if limit is not None:
        examples = examples[:limit]
    if not examples:
        raise ValueError(f"{test_path}: no test examples to evaluate")
    prompts = [example.prompt for example in examples]
    answers: dict[str, list[str]] = {}
    for name in MODELS:
        model = load_chat_model(
            adapter_path=adapter_path,
            base_only=name == "base",
            device=device,
            max_new_tokens=max_new_tokens,
            max_batch_size=max_batch_size,
        )
        logger.info("Answering %d test questions with the %s model", len(prompts), model.label)
        answers[name] = model.answer_many(prompts)
        del model
        gc.collect()
        _release_cuda_cache()
    rows = score_examples(examples, answers)
    report = build_report(
        rows,
        test_path=test_path,
        adapter_path=adapter_path,
        base_model=base_model,
        max_new_tokens=max_new_tokens,
    )
    summary = write_report(report, output_directory)
    logger.info("Evaluation report: %s", json.dumps({k: v.model_dump() for k, v in summary.metrics.items()}))
    return summary


def _release_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
