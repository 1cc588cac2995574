"""Configuration of the dataset stage: one validated, documented pydantic model.

`DatasetConfig.from_toml` loads the shipped `dataset.toml` next to this module (or a copy of
yours); every field has a default, so an empty file (or no file) is a valid configuration.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_SYSTEM_PROMPT = (
    "You are an expert in DNA methylation biomarkers. Answer precisely and only with what the evidence "
    "supports: name markers by gene symbol or CpG probe id, state the direction of methylation, the "
    "condition, the sample type, the assay and the reported performance."
)
DEFAULT_GROUNDED_TEMPLATE = "Excerpt from a research paper:\n\n{excerpt}\n\nQuestion: {question}"
DEFAULT_EXTRACTION_TEMPLATE = (
    "Extract every DNA methylation marker reported in this excerpt of a research paper as JSON: "
    '{{"markers": [...]}}, one record per marker with its gene, CpG sites, region, direction, condition, '
    "sample types, assays, clinical uses, performance, related findings and verbatim evidence quotes.\n\n"
    "Excerpt:\n\n{excerpt}"
)


class DatasetConfigError(ValueError):
    """A dataset configuration file or value that cannot be used."""


class SampleMix(BaseModel):
    """How Q&A pairs and marker records become samples of the three styles."""

    model_config = ConfigDict(extra="forbid")

    closed_book: float = Field(
        default=1.0,
        ge=0,
        description=(
            "Weight of closed-book samples (the question alone -> the answer) among Q&A pairs whose question "
            "stands on its own (names a marker of the paper and does not refer to 'the paper' or 'the "
            "study'). Each such pair becomes one sample, closed-book or grounded, drawn by these weights."
        ),
    )
    grounded: float = Field(
        default=1.0,
        ge=0,
        description=(
            "Weight of grounded samples (a paper excerpt around the evidence + the question -> the answer). "
            "Questions that need their paper ('Which assay did the study use?') are always grounded, "
            "unless this weight is 0, which drops them."
        ),
    )
    extraction: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description=(
            "Share of papers (0-1) that yield structured-extraction samples: excerpts -> the JSON marker "
            "records whose evidence they contain."
        ),
    )

    @model_validator(mode="after")
    def _something_selected(self) -> SampleMix:
        if self.closed_book == 0 and self.grounded == 0 and self.extraction == 0:
            raise ValueError("sample mix selects nothing: closed_book, grounded and extraction are all 0")
        return self


# Settings that were fields of DatasetConfig before publishing moved to methyl_distill.ops.hub_publish.
_MOVED_HUB_SETTINGS = ("push_to_hub", "hub_repo_id", "hub_private", "hub_token_env")


class DatasetConfig(BaseModel):
    """Everything that shapes the fine-tuning dataset; part of the build's cache key."""

    model_config = ConfigDict(extra="forbid")

    mix: SampleMix = Field(default_factory=SampleMix, description="Sample styles and their proportions.")
    system_prompt: str = Field(
        default=DEFAULT_SYSTEM_PROMPT,
        description="System message of every sample; '' writes samples without a system message.",
    )
    grounded_template: str = Field(
        default=DEFAULT_GROUNDED_TEMPLATE,
        description="User message of grounded samples; must contain {excerpt} and {question}.",
    )
    extraction_template: str = Field(
        default=DEFAULT_EXTRACTION_TEMPLATE,
        description="User message of structured-extraction samples; must contain {excerpt}.",
    )
    excerpt_chars: int = Field(
        default=1500,
        ge=200,
        description="Characters of a grounded sample's excerpt: the evidence plus the context around it.",
    )
    extraction_excerpt_chars: int = Field(
        default=3000,
        ge=200,
        description="Budget in characters of one structured-extraction excerpt; markers are packed in order "
        "(a marker whose evidence is longer gets an excerpt of its evidence alone).",
    )
    not_reported_share: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description=(
            "Answers saying the paper does not report something are kept only as grounded samples (with the "
            "paper's opening as excerpt), at most this share of the grounded Q&A samples; the rest are "
            "dropped as 'not_reported'. Closed-book they would be meaningless."
        ),
    )
    seed: int = Field(default=13, description="Seed of the style draw and of the train/val/test split.")
    val_fraction: float = Field(
        default=0.05, ge=0, lt=1, description="Share of papers in the validation split."
    )
    test_fraction: float = Field(default=0.05, ge=0, lt=1, description="Share of papers in the test split.")
    grounding: Literal["drop", "flag"] = Field(
        default="drop",
        description=(
            "Samples whose evidence quotes are not all found in the source paper (or whose paper file is "
            "missing): 'drop' them, or 'flag' them (kept, with the reason in meta.flags)."
        ),
    )
    min_quote_chars: int = Field(
        default=12,
        ge=1,
        description="Quotes with fewer letters and digits than this are too short to count as evidence.",
    )
    length_policy: Literal["drop", "truncate"] = Field(
        default="drop",
        description=(
            "Q&A samples longer than max_length tokens: 'drop' them, or 'truncate' their excerpt around the "
            "evidence until they fit (samples without an excerpt that are too long are dropped). Extraction "
            "samples are always split into fewer markers and shorter excerpts until they fit."
        ),
    )
    max_length: int = Field(
        default=2048,
        ge=64,
        description="The student's training max length in tokens (whole conversation); the pipeline sets "
        "the student's training length unless this is set.",
    )
    student_tokenizer: str | None = Field(
        default=None,
        description=(
            "A LOCAL folder with the student's tokenizer (transformers AutoTokenizer) to count tokens "
            "exactly; without it, tokens are estimated (methyl_distill.text.token_count)."
        ),
    )
    near_duplicate_threshold: float = Field(
        default=0.85,
        gt=0,
        le=1,
        description=(
            "Estimated Jaccard similarity of word-bigram shingles above which two samples are near "
            "duplicates (MinHash/LSH); 1.0 removes exact duplicates only."
        ),
    )
    minhash_permutations: int = Field(default=64, ge=8, le=512, description="MinHash signature length.")
    corrupt_lines: Literal["skip", "fail"] = Field(
        default="skip",
        description="A records line that is not a valid PaperRecord: 'skip' it (logged, counted) or 'fail'.",
    )
    workers: int = Field(
        default=0,
        ge=0,
        description=(
            "Processes that build samples in parallel (shards of 1000 papers); 0 = one per CPU core, at "
            "most 8. The dataset is the same for any number of workers."
        ),
    )
    include_meta: bool = Field(
        default=True,
        description=(
            "Write a 'meta' object (paper, style, flags) beside 'messages' in each line; ms-swift ignores it."
        ),
    )
    card_license: str = Field(
        default="other",
        description="License id in the dataset card's metadata (a Hub license id such as cc-by-4.0); 'other' "
        "when the papers' licenses differ.",
    )

    @model_validator(mode="before")
    @classmethod
    def _moved_hub_settings(cls, data: Any) -> Any:
        moved = sorted(set(_MOVED_HUB_SETTINGS) & set(data)) if isinstance(data, dict) else []
        if moved:
            raise ValueError(
                f"{', '.join(moved)}: publishing is no longer part of the dataset configuration; use "
                "`build-dataset --push_to_hub OWNER/NAME` (the token comes from HF_TOKEN, a Prefect Secret "
                "block or the huggingface_hub login; docs/dataset.md#publishing-to-the-hub)"
            )
        return data

    @model_validator(mode="after")
    def _check(self) -> DatasetConfig:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must leave papers for training (sum < 1)")
        for name, placeholders in (
            ("grounded_template", ("{excerpt}", "{question}")),
            ("extraction_template", ("{excerpt}",)),
        ):
            template = getattr(self, name)
            missing = [p for p in placeholders if p not in template]
            if missing:
                raise ValueError(f"{name} lacks {', '.join(missing)}")
            try:
                template.format(excerpt="", question="")
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(f"{name} is not a valid format string: {exc!r}") from exc
        return self

    def fingerprint(self) -> str:
        """Canonical JSON of the configuration (for cache keys and the dataset card)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    @classmethod
    def from_toml(cls, path: str | Path) -> DatasetConfig:
        path = Path(path)
        try:
            data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise DatasetConfigError(f"{path}: dataset config file not found") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise DatasetConfigError(f"{path}: not valid TOML: {exc}") from exc
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise DatasetConfigError(f"{path}: invalid dataset config:\n{exc}") from exc
