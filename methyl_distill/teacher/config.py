"""The teacher's configuration: one validated object, resolved once at the edge and passed down.

`TeacherConfig` says which endpoint and model answer, the budget (TPM, RPM, reply size, context),
how the client retries and asks for structured output, the GBNF grammar bounds for llama.cpp
servers, prices and the token bucket. It holds no API key, so it can be a Prefect flow parameter,
appear in a run's summary and be logged.

The edges build it: the CLI and the flows call `teacher_config_from_environment(...)` with what the
user passed (flags or flow parameters), which fills the rest from the environment or a `.env` file:
`OPENAI_BASE_URL` (the openai SDK's own name) and `TEACHER_<FIELD>` for every other field
(`TEACHER_MODEL`, `TEACHER_TPM`, ...), `TEACHER_GBNF_GRAMMAR=true` with `TEACHER_GRAMMAR_<BOUND>`
for the grammar. The embedded llama.cpp teacher hands back the configuration it serves
(`EmbeddedTeacherServer.teacher_config`). Below the edges nothing reads or writes the environment.

The key is resolved where the client is built (`resolve_api_key`): `OPENAI_API_KEY` from the
environment or `.env`, else the Prefect Secret block the configuration names. It never travels in
a parameter, a result or a log line.

Secrets in the endpoint: `OPENAI_BASE_URL` may carry credentials (`https://user:pass@host/v1`) or a
key in its query (`?api-key=...`). The client uses the URL as given; everything that shows or stores
the endpoint uses `redact_endpoint` (`https://***:***@host/v1?api-key=***`): `describe()`, the repr,
and the JSON form of the configuration (a flow parameter Prefect writes to its database). So a
configuration read back from JSON has a redacted endpoint: give endpoint credentials through
`OPENAI_BASE_URL` on the machine that runs the flow, never in a stored parameter.

The embedded llama.cpp teacher's per-run key is the one key that travels with the configuration:
in process only, as `session_api_key` (`api_key_source="session"`), a `SecretStr` that is excluded
from every dump, so the flow parameter Prefect stores carries none; a configuration rebuilt from
JSON has lost it and `resolve_api_key` says so.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Literal, cast
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, create_model, field_serializer
from pydantic_settings import BaseSettings, SettingsConfigDict

from methyl_distill.teacher.grammar import GrammarLimits
from methyl_distill.teacher.protocol import TokenUsage

logger = logging.getLogger(__name__)

OutputModeSetting = Literal["auto", "json_schema", "json_object", "prompt"]
BucketBackend = Literal["auto", "local", "prefect"]
ApiKeySource = Literal["environment", "none", "session"]
TeacherApi = Literal["online", "batch"]
AccountingSetting = Literal["auto", "admission", "settle"]

OPENAI_PUBLIC_HOST = "api.openai.com"


class TeacherConfig(BaseModel):
    """Everything the teacher client and its token bucket need, validated once (no key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible endpoint (OPENAI_BASE_URL), e.g. http://127.0.0.1:8080/v1; "
        "unset means api.openai.com.",
    )
    model: str = Field(default="gpt-4o", description="Model name sent with every request.")
    api_key_source: ApiKeySource = Field(
        default="environment",
        description="environment: OPENAI_API_KEY from the environment or .env, else the Secret block; "
        "none: send no key (a local server that checks none); session: `session_api_key`, handed over "
        "in process (the embedded llama.cpp teacher's per-run key).",
    )
    session_api_key: SecretStr | None = Field(
        default=None,
        exclude=True,
        repr=False,
        description="A key handed over in process with api_key_source=session (the embedded teacher's "
        "per-run key); excluded from every dump, so never in a flow parameter, summary or log.",
    )
    api_key_secret_block: str | None = Field(
        default=None,
        description="Name of a Prefect Secret block holding the key; loaded only when no OPENAI_API_KEY "
        "is set.",
    )
    tpm: int = Field(default=200_000, gt=0, description="Tokens-per-minute limit of the model.")
    rpm: int | None = Field(
        default=None, gt=0, description="Requests-per-minute limit of the model; unset means not enforced."
    )
    max_output_tokens: int = Field(
        default=4096, gt=0, description="max_tokens of one request: the reply budget of one chunk."
    )
    context_tokens: int = Field(
        default=128_000, gt=0, description="Context window of the model (gpt-4o: 128000 tokens)."
    )
    timeout_s: float = Field(default=180.0, gt=0, description="Timeout of one HTTP request.")
    max_retries: int = Field(
        default=8, ge=0, description="Retries of one request on 429, 5xx, timeouts and dropped connections."
    )
    retry_max_wait_s: float = Field(
        default=60.0, gt=0, description="Longest backoff between two retries (retry-after may ask for more)."
    )
    output_mode: OutputModeSetting = Field(
        default="auto",
        description="Structured-output mode: auto uses json_schema and moves to json_object with the "
        "schema, then to prompt-only, only when the endpoint answers that it does not support the "
        "response_format; the first answered request settles it for the run.",
    )
    max_reasks: int = Field(
        default=2,
        ge=0,
        description="Re-asks after invalid, empty or truncated output, telling the model why.",
    )
    grammar: GrammarLimits | None = Field(
        default=None,
        description="Send a GBNF `grammar` derived from the schema, with these bounds (llama.cpp servers), "
        "in the json_object and prompt modes; None sends none.",
    )
    price_input_per_mtok: float = Field(
        default=2.50, ge=0, description="USD per 1M input tokens (gpt-4o list price) for the cost estimate."
    )
    price_output_per_mtok: float = Field(
        default=10.00, ge=0, description="USD per 1M output tokens (gpt-4o list price) for the cost estimate."
    )
    bucket_backend: BucketBackend = Field(
        default="auto",
        description="prefect: a Prefect global concurrency limit shared by every process and worker using "
        "the same name; local: one in-process bucket shared by the threads of this process; auto: prefect "
        "when a Prefect server is configured (PREFECT_API_URL in the environment or the Prefect profile), "
        "local with a temporary server of one command.",
    )
    rate_limit_accounting: AccountingSetting = Field(
        default="auto",
        description="How the endpoint counts a request against the TPM limit. admission: the charge made "
        "at admission (estimated prompt + max_tokens) stays in the 60 s window, as OpenAI's rate-limit "
        "guide describes; settle: the unused part of max_tokens is given back when the reply arrives; "
        "auto: start as admission (the safe side) and follow what the x-ratelimit-remaining-tokens "
        "headers show.",
    )
    size_max_tokens: bool = Field(
        default=True,
        description="Send a max_tokens sized from the replies seen so far (with headroom, never above "
        "max_output_tokens) instead of max_output_tokens, so that the admission charge stays close to "
        "what replies use; a reply cut off at the sized budget is asked again at max_output_tokens.",
    )
    bucket_limit_name: str = Field(
        default="methyl-distill-teacher",
        description="Prefect global-concurrency-limit name of the token budget (the request budget uses "
        "the same name with '-requests' appended).",
    )
    cache_endpoint: str | None = Field(
        default=None,
        description="The endpoint as the extraction cache key names it; unset: the base URL without "
        "credentials, query or fragment. For a server whose address changes from run to run while its "
        "answers do not (the embedded teacher on a free port).",
    )
    # -- OpenAI's Batch API (methyl_distill/teacher/batch_api.py) --------------------------------
    api: TeacherApi = Field(
        default="online",
        description="online: one chat-completion request per chunk, paced by the TPM budget; batch: the "
        "requests of uncached papers go through OpenAI's Batch API (half price, its own enqueued-token "
        "limit, results within 24 h), re-asks in follow-up batches. Not part of the cache key.",
    )
    batch_queue_tokens: int = Field(
        default=90_000,
        gt=0,
        description="Enqueued-token limit of the Batch API: prompt tokens of this model's unfinished "
        "batches (gpt-4o: 90,000 at usage tier 1, 1,350,000 at tier 2, 50,000,000 at tier 3).",
    )
    batch_price_input_per_mtok: float | None = Field(
        default=None,
        ge=0,
        description="USD per 1M input tokens in batch mode; unset: half the online price.",
    )
    batch_price_output_per_mtok: float | None = Field(
        default=None,
        ge=0,
        description="USD per 1M output tokens in batch mode; unset: half the online price.",
    )
    batch_poll_min_s: float = Field(
        default=5.0, gt=0, description="First wait between two looks at the open batches."
    )
    batch_poll_max_s: float = Field(
        default=60.0,
        gt=0,
        description="Longest wait between two looks at the open batches (the wait grows while nothing "
        "changes).",
    )
    batch_online_max_requests: int = Field(
        default=4,
        ge=0,
        description="Follow-up requests (re-asks, failed lines) sent online instead of in one more batch "
        "when no more than this many are left; 0: always a batch.",
    )

    @property
    def input_price_per_mtok(self) -> float:
        """USD per 1M input tokens of this configuration's requests: the batch price in batch mode."""
        if self.api == "batch":
            batch = self.batch_price_input_per_mtok
            return batch if batch is not None else self.price_input_per_mtok / 2
        return self.price_input_per_mtok

    @property
    def output_price_per_mtok(self) -> float:
        """USD per 1M output tokens of this configuration's requests: the batch price in batch mode."""
        if self.api == "batch":
            batch = self.batch_price_output_per_mtok
            return batch if batch is not None else self.price_output_per_mtok / 2
        return self.price_output_per_mtok

    @field_serializer("base_url", when_used="json")
    def _base_url_without_secrets(self, base_url: str | None) -> str | None:
        """Prefect stores parameters as JSON: the endpoint's credentials stay out of its database."""
        return redact_endpoint(base_url) if base_url is not None else None

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, redact_endpoint(value) if name == "base_url" and value is not None else value

    @property
    def shown_endpoint(self) -> str:
        """The endpoint for logs and summaries: credentials and secret query values redacted."""
        return redact_endpoint(self.endpoint)

    @property
    def is_openai_public_endpoint(self) -> bool:
        return self.base_url is None or OPENAI_PUBLIC_HOST in self.base_url

    @property
    def endpoint(self) -> str:
        return self.base_url or f"https://{OPENAI_PUBLIC_HOST}/v1"

    def answer_identity(self) -> dict[str, Any]:
        """What of this configuration shapes the answers, for the extraction cache key: the model, the
        endpoint (`cache_endpoint`, else the URL without credentials, query or fragment, so a rotated
        key reuses every answer), the configured output mode and the grammar. Not the budget, retries,
        timeouts or prices.

        The configured mode, not the one an `auto` endpoint settles on: that is known only after the
        first reply, so a rerun whose papers are all cached would never learn it. It is the same for
        a given endpoint and model anyway: `auto` moves down only when the endpoint says it does not
        support a mode (`teacher.output_mode`), never because of one request's fate."""
        return {
            "model": self.model,
            "endpoint": self.cache_endpoint or endpoint_without_credentials(self.endpoint),
            "output_mode": self.output_mode,
            "grammar": self.grammar.model_dump(mode="json") if self.grammar is not None else None,
        }

    def estimate_cost_usd(self, usage: TokenUsage) -> float:
        """Cost of `usage` at the configured per-million-token prices (the batch prices in batch mode)."""
        input_usd = usage.prompt_tokens * self.input_price_per_mtok
        return (input_usd + usage.completion_tokens * self.output_price_per_mtok) / 1_000_000

    def describe(self, *, key_set: bool | None = None) -> str:
        """One log line about the endpoint and budget: never the key, at most whether one is set."""
        rpm = self.rpm if self.rpm is not None else "unlimited"
        key = "" if key_set is None else f" (key {'set' if key_set else 'not set'})"
        return (
            f"teacher {self.model} at {self.shown_endpoint}{key}; budget {self.tpm} TPM, {rpm} RPM, "
            f"bucket {self.bucket_backend}; output mode {self.output_mode}"
        )


def endpoint_without_credentials(url: str) -> str:
    """`url` without user, password, query or fragment, scheme and host in lower case, no trailing
    slash: `https://user:key@API.openai.com/v1/?api-version=1` -> `https://api.openai.com/v1`."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"  # IPv6
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit((parts.scheme.lower(), netloc, parts.path.rstrip("/"), "", ""))


# Query parameters whose values are credentials: api-key, key, token, access_token, sig, password...
_SECRET_QUERY_NAME = re.compile(r"key|token|secret|passw|pwd|sig|auth|credential|session", re.IGNORECASE)
REDACTED = "***"


def redact_endpoint(url: str) -> str:
    """`url` with its user, password and secret-looking query values replaced by ***, for logs,
    summaries and stored parameters: `https://u:p@host/v1?api-key=k&v=1` ->
    `https://***:***@host/v1?api-key=***&v=1`. The client keeps using the real URL."""
    parts = urlsplit(url.strip())
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{REDACTED}:{REDACTED}@{host}" if ":" in userinfo else f"{REDACTED}@{host}"
    query = "&".join(
        f"{name}={REDACTED}" if _SECRET_QUERY_NAME.search(name) and sep else piece
        for piece in parts.query.split("&")
        if piece
        for name, sep, _value in [piece.partition("=")]
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def endpoint_secrets(url: str | None) -> list[str]:
    """The secrets `redact_endpoint` hides, as they may appear in an error text: user, password and
    secret query values (raw and decoded), longest first; values under 4 characters are left out."""
    if not url:
        return []
    parts = urlsplit(url.strip())
    found = [parts.username or "", parts.password or ""]
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if _SECRET_QUERY_NAME.search(name):
            found.append(value)
    for piece in parts.query.split("&"):
        name, _, raw = piece.partition("=")
        if _SECRET_QUERY_NAME.search(name):
            found.append(raw)
    return sorted({value for value in found if len(value) >= 4}, key=len, reverse=True)


# -- the environment, read at the edges only ---------------------------------------------------------

# A `.env` file commonly holds unrelated variables (HF_TOKEN, PREFECT_API_URL...): ignore them rather
# than fail, which `extra="forbid"` would do for every such line of the file.
_ENV_FILE = SettingsConfigDict(
    env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
)


class _TeacherVariables(BaseSettings):
    model_config = SettingsConfigDict(**_ENV_FILE, env_prefix="TEACHER_")


class _GrammarVariables(BaseSettings):
    model_config = SettingsConfigDict(**_ENV_FILE, env_prefix="TEACHER_GRAMMAR_")


class _OpenAIVariables(BaseSettings):
    """The openai SDK's own variables, so a shell that already talks to OpenAI needs nothing new."""

    model_config = SettingsConfigDict(**_ENV_FILE)

    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None


def _optional_fields_of(model: type[BaseModel], exclude: set[str]) -> dict[str, Any]:
    """Every field of `model` as optional, unset by default: the environment names only what it sets,
    and the defaults stay where they are written, on the model."""
    return {
        name: (info.annotation | None, None)  # type: ignore[operator]
        for name, info in model.model_fields.items()
        if name not in exclude
    }


_NOT_FROM_TEACHER_VARIABLES = {"base_url", "grammar", "session_api_key"}
TeacherVariables = create_model(  # TEACHER_MODEL, TEACHER_TPM, ... and TEACHER_GBNF_GRAMMAR
    "TeacherVariables",
    __base__=_TeacherVariables,
    gbnf_grammar=(bool, False),
    **_optional_fields_of(TeacherConfig, _NOT_FROM_TEACHER_VARIABLES),
)
GrammarVariables = create_model(  # TEACHER_GRAMMAR_MAX_ARRAY_ITEMS, ...
    "GrammarVariables", __base__=_GrammarVariables, **_optional_fields_of(GrammarLimits, set())
)


def _set_values(settings: BaseSettings) -> dict[str, Any]:
    return {name: value for name, value in settings.model_dump().items() if value is not None}


def teacher_config_from_environment(**overrides: Any) -> TeacherConfig:
    """The teacher configuration: `overrides` (CLI flags, flow parameters; None means not given),
    then the environment and `.env`, then `TeacherConfig`'s defaults."""
    fields = _set_values(TeacherVariables())
    gbnf_grammar = bool(fields.pop("gbnf_grammar", False))
    base_url = _OpenAIVariables().openai_base_url
    if base_url:
        fields["base_url"] = base_url
    if gbnf_grammar:
        fields["grammar"] = GrammarLimits(**_set_values(GrammarVariables()))
    fields.update({name: value for name, value in overrides.items() if value is not None})
    return TeacherConfig(**fields)


def resolve_teacher_config(
    given: TeacherConfig | None,
    base_url: str | None = None,
    model: str | None = None,
    api: TeacherApi | None = None,
) -> TeacherConfig:
    """`given`, or the environment's configuration when None, with `base_url` / `model` / `api` (when
    given) taking precedence: how a flow parameter or CLI flag meets the environment."""
    if given is None:
        return teacher_config_from_environment(base_url=base_url, model=model, api=api)
    overrides = {
        name: value for name, value in {"base_url": base_url, "model": model, "api": api}.items() if value
    }
    return given.model_copy(update=overrides) if overrides else given


def api_key_in_environment() -> bool:
    """Whether OPENAI_API_KEY is set (environment or .env): the pipeline's 'auto' teacher choice."""
    key = _OpenAIVariables().openai_api_key
    return key is not None and bool(key.get_secret_value())


def resolve_api_key(config: TeacherConfig) -> SecretStr | None:
    """The key to send: OPENAI_API_KEY (environment or .env), else the Prefect Secret block the
    configuration names; None with `api_key_source="none"` or when neither is set. With
    `api_key_source="session"`, the `session_api_key` handed over in process."""
    if config.api_key_source == "none":
        return None
    if config.api_key_source == "session":
        if config.session_api_key is None:
            raise ValueError(
                "api_key_source='session' but no session_api_key: that key is handed over in process "
                "and never serialised (a configuration read back from JSON has lost it)"
            )
        return config.session_api_key
    key = _OpenAIVariables().openai_api_key
    if key is not None and key.get_secret_value():
        return key
    if config.api_key_secret_block:
        from prefect.blocks.system import Secret  # imported only when a block is configured

        try:
            block = cast(Secret, Secret.load(config.api_key_secret_block))
            value = block.get()
        except ValueError as exc:
            raise ValueError(
                f"Prefect Secret block {config.api_key_secret_block!r} could not be loaded "
                f"(TEACHER_API_KEY_SECRET_BLOCK): {exc}"
            ) from None
        if not isinstance(value, str) or not value:
            raise ValueError(f"Prefect Secret block {config.api_key_secret_block!r} holds no string key.")
        return SecretStr(value)
    return None
