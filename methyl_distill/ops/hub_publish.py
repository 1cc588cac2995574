"""Publishing to the Hugging Face Hub: where the token comes from, and one commit per push.

What is pushed is decided elsewhere (the dataset stage's folder, `methyl_distill.training.model_release`);
this module only knows the Hub. Every push is ONE commit made with `HfApi.create_commit`: the card
(README.md) and the files it describes arrive together, so the Hub never shows a card that names
files it does not hold, and a push that fails leaves the repository as it was. `create_commit` is
the call `upload_folder` ends in, without its folder walk: we name each file, so nothing in the
folder that is not ours (a checkpoint, a stray `.env`) can slip into a public repository.

The token (never a parameter, never logged, never in a result) is looked up when it is needed, in
this order:

1. `HF_TOKEN` in the environment (or the `.env` file of the working directory),
2. the Prefect Secret block named by `HF_TOKEN_SECRET_BLOCK` (set for the project: it wins over a
   login that happens to be on the worker's machine; a named block that cannot be loaded is an
   error, not a fall-through),
3. the `huggingface_hub` login (`hf auth login`: its token file, `HF_TOKEN_PATH` or `$HF_HOME/token`).

`HubTarget` says where to push (repository, privacy, branch, commit message) and carries the two
settings read at the edge (`HF_TOKEN_SECRET_BLOCK`, `HF_ENDPOINT`) so that a flow parameter holds
everything but the secret. huggingface_hub reads `HF_HUB_OFFLINE` once, when it is imported; this
module imports it at the top so that the user's setting is the one in force, not the
`HF_HUB_OFFLINE=1` that the fine-tune sets for itself after loading a local model.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, NamedTuple, cast

import huggingface_hub
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import HfHubHTTPError
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

logger = logging.getLogger(__name__)

RepoType = Literal["model", "dataset"]
TOKEN_VARIABLE = "HF_TOKEN"
TOKEN_SECRET_BLOCK_VARIABLE = "HF_TOKEN_SECRET_BLOCK"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
# Text files this small are searched for the token before they leave the machine.
_SCANNED_FILE_BYTES = 16 * 1024 * 1024


def check_repo_id(value: str) -> str:
    """`value` when it is a Hub repository id ('owner/name'), else a ValueError naming it."""
    if not _REPO_ID.match(value) or ".." in value or value.endswith((".git", ".")):
        raise ValueError(f"{value!r} is not a Hub repository id: expected 'owner/name'")
    return value


class HubTokenError(ValueError):
    """No token, or the configured source of one cannot give it."""


class HubPublishError(RuntimeError):
    """The Hub cannot be reached or refused the push."""


class HubTarget(BaseModel):
    """Where a push goes. Holds no secret, so it can be a flow parameter and appear in a summary."""

    model_config = ConfigDict(extra="forbid")

    repo_id: str = Field(description="Hub repository, 'owner/name' (created when missing).")
    private: bool = Field(
        default=True, description="Create the repository private (an existing one keeps its visibility)."
    )
    revision: str | None = Field(
        default=None, description="Branch to commit to (created from main when missing); None: main."
    )
    commit_message: str | None = Field(default=None, description="Commit title; None: a generated one.")
    token_secret_block: str | None = Field(
        default=None,
        description="Prefect Secret block holding the token (HF_TOKEN_SECRET_BLOCK); used when HF_TOKEN "
        "is unset.",
    )
    endpoint: str | None = Field(
        default=None, description="Hub endpoint (HF_ENDPOINT); None: huggingface_hub's default."
    )

    @field_validator("repo_id")
    @classmethod
    def _check_repo_id(cls, value: str) -> str:
        return check_repo_id(value)

    def url(self, repo_type: RepoType) -> str:
        base = (self.endpoint or hub_constants.ENDPOINT).rstrip("/")
        prefix = "datasets/" if repo_type == "dataset" else ""
        return f"{base}/{prefix}{self.repo_id}"


class _HubVariables(BaseSettings):
    """The environment (and .env) as the publishing edge reads it; unrelated lines are ignored."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    hf_token: SecretStr | None = None
    hf_token_secret_block: str | None = None
    hf_endpoint: str | None = None


def hub_target_from_environment(
    repo_id: str,
    *,
    private: bool = True,
    revision: str | None = None,
    commit_message: str | None = None,
) -> HubTarget:
    """A target for `repo_id` with the settings read from the environment: for the CLI and the flows."""
    variables = _HubVariables()
    return HubTarget(
        repo_id=repo_id,
        private=private,
        revision=revision or None,
        commit_message=commit_message or None,
        token_secret_block=variables.hf_token_secret_block or None,
        endpoint=variables.hf_endpoint or None,
    )


class HubToken(NamedTuple):
    value: SecretStr
    source: str  # where it came from, for messages: never the value


def resolve_hub_token(target: HubTarget) -> HubToken:
    """The token to push with: HF_TOKEN, else the target's Prefect Secret block, else the login."""
    from_environment = _HubVariables().hf_token
    if from_environment is not None and from_environment.get_secret_value().strip():
        return HubToken(SecretStr(from_environment.get_secret_value().strip()), f"${TOKEN_VARIABLE}")
    if target.token_secret_block:
        return HubToken(_token_from_secret_block(target.token_secret_block), "Prefect Secret block")
    login = huggingface_hub.get_token()
    if login:
        return HubToken(SecretStr(login), "huggingface_hub login")
    raise HubTokenError(
        f"pushing to the Hub ({target.repo_id}) needs a token with write access, and none was found: "
        f"${TOKEN_VARIABLE} is not set, no Prefect Secret block is named in ${TOKEN_SECRET_BLOCK_VARIABLE}, "
        f"and there is no huggingface_hub login ({hub_constants.HF_TOKEN_PATH} does not exist). Set one of "
        "them (`hf auth login` writes the login)."
    )


def _token_from_secret_block(name: str) -> SecretStr:
    from prefect.blocks.system import Secret  # imported only when a block is configured

    try:
        block = cast(Secret, Secret.load(name))
        value = block.get()
    except ValueError as exc:
        raise HubTokenError(
            f"Prefect Secret block {name!r} (${TOKEN_SECRET_BLOCK_VARIABLE}) could not be loaded: {exc}"
        ) from None
    if not isinstance(value, str) or not value.strip():
        raise HubTokenError(f"Prefect Secret block {name!r} (${TOKEN_SECRET_BLOCK_VARIABLE}) holds no token")
    return SecretStr(value.strip())


def _check_online() -> None:
    if hub_constants.is_offline_mode():
        raise HubPublishError(
            "pushing to the Hub, but HF_HUB_OFFLINE is set in this process: unset it (and "
            "TRANSFORMERS_OFFLINE)"
        )


def check_hub_access(target: HubTarget) -> str:
    """Resolve the token and ask the Hub whose it is, before any long work; returns the user name.
    A token the Hub refuses is an error here, not after an hour of training."""
    _check_online()
    token = resolve_hub_token(target)
    api = HfApi(endpoint=target.endpoint, token=token.value.get_secret_value())
    try:
        user = api.whoami()
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise HubPublishError(
            f"the Hub refused the token from {token.source} (HTTP {status}) for {target.repo_id}"
        ) from None
    name = str(user.get("name", "?"))
    role = (user.get("auth") or {}).get("accessToken", {}).get("role")
    if role == "read":
        raise HubPublishError(
            f"the token from {token.source} (user {name}) can only read: pushing to {target.repo_id} needs "
            "a token with write access"
        )
    logger.info("Hub token from %s: user %s", token.source, name)
    return name


class PushResult(BaseModel):
    """What a push committed (no token)."""

    model_config = ConfigDict(extra="forbid")

    repo_id: str
    repo_type: RepoType
    revision: str
    url: str
    commit_url: str
    commit_oid: str
    files: list[str] = Field(description="Paths in the repository that this commit wrote.")


def _check_no_token_inside(files: Mapping[str, Path | bytes], token: str) -> None:
    """Refuse to upload a small file that contains the token (a config that recorded its environment)."""
    needle = token.encode()
    for path_in_repo, content in files.items():
        if isinstance(content, Path):
            if content.stat().st_size > _SCANNED_FILE_BYTES:
                continue
            content = content.read_bytes()
        if needle in content:
            raise HubPublishError(f"{path_in_repo} contains the Hub token: not pushing it")


def push_files(
    target: HubTarget,
    repo_type: RepoType,
    files: Mapping[str, Path | bytes],
    *,
    default_message: str,
) -> PushResult:
    """Create the repository (and branch) when missing and commit `files` (path in repo -> local
    file or bytes) in one commit; files already on the Hub with the same content are not sent again."""
    if "README.md" not in files:
        raise ValueError("a push must carry its card (README.md)")
    for path_in_repo, content in files.items():
        if isinstance(content, Path) and not content.is_file():
            raise FileNotFoundError(f"{content}: missing, cannot push it as {path_in_repo}")
    _check_online()
    token = resolve_hub_token(target)
    secret = token.value.get_secret_value()
    _check_no_token_inside(files, secret)
    api = HfApi(endpoint=target.endpoint, token=secret)
    revision = target.revision or hub_constants.DEFAULT_REVISION
    try:
        api.create_repo(target.repo_id, repo_type=repo_type, private=target.private, exist_ok=True)
        if revision != hub_constants.DEFAULT_REVISION:
            api.create_branch(target.repo_id, repo_type=repo_type, branch=revision, exist_ok=True)
        operations = [
            CommitOperationAdd(path_in_repo=path_in_repo, path_or_fileobj=content)
            for path_in_repo, content in sorted(files.items())
        ]
        commit = api.create_commit(
            target.repo_id,
            operations=list(operations),
            commit_message=target.commit_message or default_message,
            repo_type=repo_type,
            revision=revision,
        )
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise HubPublishError(
            f"the Hub refused the push to {target.repo_id} ({repo_type}, branch {revision}; token from "
            f"{token.source}): HTTP {status}: {exc.server_message or exc}"
        ) from None
    logger.info(
        "Pushed %d file(s) to %s (%s, branch %s): %s",
        len(files),
        target.repo_id,
        repo_type,
        revision,
        commit.commit_url,
    )
    return PushResult(
        repo_id=target.repo_id,
        repo_type=repo_type,
        revision=revision,
        url=target.url(repo_type),
        commit_url=str(commit.commit_url),
        commit_oid=str(commit.oid),
        files=sorted(files),
    )
