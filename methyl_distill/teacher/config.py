"""Teacher settings: which endpoint, which model, which budget, from the environment or a `.env` file.

`OPENAI_API_KEY` and `OPENAI_BASE_URL` are the openai SDK's own variables, so a shell that already
talks to OpenAI (or to a local llama.cpp server) needs nothing new. Everything else is prefixed
`TEACHER_`. The key is a `SecretStr`: it never shows in `repr`, `str`, `model_dump_json` or logs.
"""

from __future__ import annotations

import logging
from typing import Literal, cast

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from methyl_distill.extraction.records import TokenUsage

logger = logging.getLogger(__name__)

OutputModeSetting = Literal["auto", "json_schema", "json_object", "prompt"]
BucketBackend = Literal["local", "prefect"]

OPENAI_PUBLIC_HOST = "api.openai.com"


class TeacherSettings(BaseSettings):
    """Everything the teacher client and its token bucket need, validated once."""

    # A `.env` file commonly holds unrelated variables (HF_TOKEN, PREFECT_API_URL...): ignore them
    # rather than fail, which `extra="forbid"` would do for every such line of the file.
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    openai_api_key: SecretStr | None = Field(
        default=None, description="API key (OPENAI_API_KEY). Optional for local servers such as llama.cpp."
    )
    openai_base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible endpoint (OPENAI_BASE_URL), e.g. http://127.0.0.1:8080/v1; "
        "unset means api.openai.com.",
    )
    teacher_api_key_secret_block: str | None = Field(
        default=None,
        description="Name of a Prefect Secret block holding the key; loaded only when set and no "
        "OPENAI_API_KEY is given.",
    )
    teacher_model: str = Field(default="gpt-4o", description="Model name sent with every request.")
    teacher_tpm: int = Field(default=200_000, gt=0, description="Tokens-per-minute limit of the model.")
    teacher_rpm: int | None = Field(
        default=None, gt=0, description="Requests-per-minute limit of the model; unset means not enforced."
    )
    teacher_max_output_tokens: int = Field(
        default=4096, gt=0, description="max_tokens of one request: the reply budget of one chunk."
    )
    teacher_context_tokens: int = Field(
        default=128_000, gt=0, description="Context window of the model (gpt-4o: 128000 tokens)."
    )
    teacher_timeout_s: float = Field(default=180.0, gt=0, description="Timeout of one HTTP request.")
    teacher_max_retries: int = Field(
        default=8, ge=0, description="Retries of one request on 429, 5xx, timeouts and dropped connections."
    )
    teacher_retry_max_wait_s: float = Field(
        default=60.0, gt=0, description="Longest backoff between two retries (retry-after may ask for more)."
    )
    teacher_output_mode: OutputModeSetting = Field(
        default="auto",
        description="Structured-output mode: auto tries json_schema, then json_object with the schema, "
        "then prompt-only, and remembers what the endpoint accepts.",
    )
    teacher_max_reasks: int = Field(
        default=2,
        ge=0,
        description="Re-asks after invalid, empty or truncated output, telling the model why.",
    )
    teacher_gbnf_grammar: bool = Field(
        default=False,
        description="Send a GBNF `grammar` derived from the schema (llama.cpp servers) in the json_object "
        "and prompt modes.",
    )
    teacher_price_input_per_mtok: float = Field(
        default=2.50, ge=0, description="USD per 1M input tokens (gpt-4o list price) for the cost estimate."
    )
    teacher_price_output_per_mtok: float = Field(
        default=10.00, ge=0, description="USD per 1M output tokens (gpt-4o list price) for the cost estimate."
    )
    teacher_bucket_backend: BucketBackend = Field(
        default="local",
        description="local: one in-process bucket shared by the threads of this process; prefect: a "
        "Prefect global concurrency limit shared by every process and worker using the same name.",
    )
    teacher_bucket_limit_name: str = Field(
        default="methyl-distill-teacher",
        description="Prefect global-concurrency-limit name of the token budget (the request budget uses "
        "the same name with '-requests' appended).",
    )

    @property
    def is_openai_public_endpoint(self) -> bool:
        return self.openai_base_url is None or OPENAI_PUBLIC_HOST in self.openai_base_url

    def resolve_api_key(self) -> SecretStr | None:
        """The key to send: OPENAI_API_KEY, else the Prefect Secret block when one is named."""
        if self.openai_api_key is not None and self.openai_api_key.get_secret_value():
            return self.openai_api_key
        if self.teacher_api_key_secret_block:
            from prefect.blocks.system import Secret  # imported only when a block is configured

            try:
                block = cast(Secret, Secret.load(self.teacher_api_key_secret_block))
                value = block.get()
            except ValueError as exc:
                raise ValueError(
                    f"Prefect Secret block {self.teacher_api_key_secret_block!r} could not be loaded "
                    f"(TEACHER_API_KEY_SECRET_BLOCK): {exc}"
                ) from None
            if not isinstance(value, str) or not value:
                raise ValueError(
                    f"Prefect Secret block {self.teacher_api_key_secret_block!r} holds no string key."
                )
            return SecretStr(value)
        return None

    def estimate_cost_usd(self, usage: TokenUsage) -> float:
        """Cost of `usage` at the configured per-million-token prices."""
        return (
            usage.prompt_tokens * self.teacher_price_input_per_mtok
            + usage.completion_tokens * self.teacher_price_output_per_mtok
        ) / 1_000_000

    def describe(self) -> str:
        """One log line about the endpoint and budget: never the key, only whether one is set."""
        endpoint = self.openai_base_url or f"https://{OPENAI_PUBLIC_HOST}/v1"
        key_state = "set" if self.openai_api_key or self.teacher_api_key_secret_block else "not set"
        rpm = self.teacher_rpm if self.teacher_rpm is not None else "unlimited"
        return (
            f"teacher {self.teacher_model} at {endpoint} (key {key_state}); budget {self.teacher_tpm} TPM, "
            f"{rpm} RPM, bucket {self.teacher_bucket_backend}; output mode {self.teacher_output_mode}"
        )
