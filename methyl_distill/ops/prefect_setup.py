"""One idempotent set-up of the Prefect objects methyl-distill's deployments rely on.

- a process work pool for local runs (`prefect worker start --pool methyl-distill-process`),
- CUDA work pools for fine-tuning: a Docker pool whose containers get the host's NVIDIA GPUs
  (`container_create_kwargs.device_requests`, as `docker run --gpus all`) and a Kubernetes pool
  whose jobs request `nvidia.com/gpu`; base job templates in job_templates/ next to this module.
  Creating a pool needs no Docker engine or cluster; only its workers do,
- the global concurrency limit that serves as the teacher's tokens-per-minute bucket (and the
  requests-per-minute one when TEACHER_RPM is set): limit = budget, slot decay = budget / 60 s,
- the `gpu` tag concurrency limit (1): one fine-tune per GPU at a time,
- the Prefect variables deployments/prefect.yaml reads: where the process deployments clone their
  code from (`methyl_distill_repository`, `methyl_distill_branch`) and the registry of the image
  names (`methyl_distill_image_registry`). A value given is set; a default found in the current
  git checkout (its folder as a file:// URL, its branch) is only created where none exists, so a
  run from a laptop never redirects a server's deployments.

Running it again changes nothing that is already right and updates what differs; a pool that
exists with another type is an error (Prefect cannot change a pool's type).
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger(__name__)

JOB_TEMPLATES_DIRECTORY = Path(__file__).resolve().parent / "job_templates"
DOCKER_GPU_TEMPLATE = "docker-gpu-base-job-template.json"
KUBERNETES_GPU_TEMPLATE = "k8s-gpu-base-job-template.json"
# Prefect variables read by deployments/prefect.yaml (`{{ prefect.variables.<name> }}`).
REPOSITORY_VARIABLE = "methyl_distill_repository"
BRANCH_VARIABLE = "methyl_distill_branch"
IMAGE_REGISTRY_VARIABLE = "methyl_distill_image_registry"


class DeploymentVariable(BaseModel):
    """A Prefect variable the deployments read; `overwrite` false: created only where none exists."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    value: str
    overwrite: bool = True


class PrefectSetupConfig(BaseModel):
    """What `methyl-distill setup-prefect` creates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    process_pool: str = Field(
        default="methyl-distill-process", description="Process work pool for local runs."
    )
    docker_gpu_pool: str | None = Field(
        default="methyl-distill-cuda", description="Docker work pool with GPU device requests; None: none."
    )
    docker_gpu_template: Path | None = Field(
        default=None,
        description=f"Its base job template; default: the bundled {DOCKER_GPU_TEMPLATE}.",
    )
    kubernetes_gpu_pool: str | None = Field(
        default="methyl-distill-cuda-k8s", description="Kubernetes work pool requesting GPUs; None: none."
    )
    kubernetes_gpu_template: Path | None = Field(
        default=None,
        description=f"Its base job template; default: the bundled {KUBERNETES_GPU_TEMPLATE}.",
    )
    gpu_tag: str = Field(default="gpu", description="Task tag of GPU work (the fine-tune task).")
    gpu_tag_limit: int = Field(
        default=1, ge=1, description="Task runs with that tag at once (GPUs per worker)."
    )
    teacher_limit_name: str = Field(
        default="methyl-distill-teacher", description="Global concurrency limit used as the TPM bucket."
    )
    teacher_tpm: int = Field(default=200_000, gt=0, description="Tokens per minute of the teacher model.")
    teacher_rpm: int | None = Field(default=None, gt=0, description="Requests per minute, if enforced.")
    variables: list[DeploymentVariable] = Field(
        default_factory=list,
        description="Prefect variables of deployments/prefect.yaml: code repository, branch, image registry.",
    )


@dataclass(frozen=True)
class SetupAction:
    kind: str
    name: str
    outcome: Literal["created", "updated", "unchanged"]

    def __str__(self) -> str:
        return f"{self.kind} {self.name!r}: {self.outcome}"


class PrefectSetupError(RuntimeError):
    """The Prefect API holds something that conflicts with the set-up."""


def load_base_job_template(path: str | Path) -> dict[str, Any]:
    """A base job template file: an object with `job_configuration` and `variables`."""
    template_path = Path(path)
    try:
        template = json.loads(template_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PrefectSetupError(f"base job template {template_path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise PrefectSetupError(f"base job template {template_path} is not valid JSON: {exc}") from None
    if not isinstance(template, dict) or not {"job_configuration", "variables"} <= set(template):
        raise PrefectSetupError(
            f"base job template {template_path} must be an object with 'job_configuration' and 'variables'"
        )
    undefined = sorted(
        template_placeholders(template["job_configuration"])
        - set(template["variables"].get("properties", {}))
    )
    if undefined:
        raise PrefectSetupError(f"base job template {template_path} uses undefined variables: {undefined}")
    return template


def template_placeholders(value: Any) -> set[str]:
    """The `{{ name }}` placeholders anywhere in a job configuration."""
    found: set[str] = set()
    if isinstance(value, str):
        found.update(re.findall(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", value))
    elif isinstance(value, dict):
        for item in value.values():
            found |= template_placeholders(item)
    elif isinstance(value, list):
        for item in value:
            found |= template_placeholders(item)
    return found


def gpu_pools(config: PrefectSetupConfig) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, type, base job template) of each GPU work pool the configuration asks for."""
    pools = []
    if config.docker_gpu_pool:
        docker = config.docker_gpu_template or JOB_TEMPLATES_DIRECTORY / DOCKER_GPU_TEMPLATE
        pools.append((config.docker_gpu_pool, "docker", load_base_job_template(docker)))
    if config.kubernetes_gpu_pool:
        kubernetes = config.kubernetes_gpu_template or JOB_TEMPLATES_DIRECTORY / KUBERNETES_GPU_TEMPLATE
        pools.append((config.kubernetes_gpu_pool, "kubernetes", load_base_job_template(kubernetes)))
    return pools


def with_prefect_logging_environment(template: dict[str, Any]) -> dict[str, Any]:
    """`template` whose runs get the project's logs into the Prefect UI by default: the `env` job
    variable's default holds `PREFECT_LOGGING_ENVIRONMENT` (ops/prefect_logging.py). A deployment that
    sets `env` replaces the default, so the shipped prefect.yaml repeats it there."""
    from copy import deepcopy

    from methyl_distill.ops.prefect_logging import PREFECT_LOGGING_ENVIRONMENT

    template = deepcopy(template)
    env = template.get("variables", {}).get("properties", {}).get("env")
    if isinstance(env, dict):
        env["default"] = {**PREFECT_LOGGING_ENVIRONMENT, **(env.get("default") or {})}
    return template


def _ensure_work_pool(client: Any, name: str, pool_type: str, template: dict[str, Any] | None) -> SetupAction:
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.utilities.asyncutils import run_coro_as_sync
    from prefect.workers.utilities import get_default_base_job_template_for_infrastructure_type

    if template is None:
        template = run_coro_as_sync(get_default_base_job_template_for_infrastructure_type(pool_type))
        if template is None:
            raise PrefectSetupError(f"Prefect knows no base job template for work pool type {pool_type!r}")
    template = with_prefect_logging_environment(template)
    try:
        existing = client.read_work_pool(name)
    except ObjectNotFound:
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type=pool_type, base_job_template=template))
            return SetupAction("work pool", name, "created")
        except ObjectAlreadyExists:  # created concurrently
            existing = client.read_work_pool(name)
    if existing.type != pool_type:
        raise PrefectSetupError(
            f"work pool {name!r} exists with type {existing.type!r}, not {pool_type!r}: delete it "
            f"(prefect work-pool delete {name}) or choose another name"
        )
    if existing.base_job_template != template:
        client.update_work_pool(name, WorkPoolUpdate(base_job_template=template))
        return SetupAction("work pool", name, "updated")
    return SetupAction("work pool", name, "unchanged")


def _ensure_tag_limit(client: Any, tag: str, limit: int) -> SetupAction:
    from prefect.exceptions import ObjectNotFound

    try:
        existing = client.read_concurrency_limit_by_tag(tag)
    except ObjectNotFound:
        client.create_concurrency_limit(tag=tag, concurrency_limit=limit)
        return SetupAction("tag concurrency limit", tag, "created")
    if existing.concurrency_limit != limit:
        client.create_concurrency_limit(tag=tag, concurrency_limit=limit)  # upserts by tag
        return SetupAction("tag concurrency limit", tag, "updated")
    return SetupAction("tag concurrency limit", tag, "unchanged")


def _ensure_global_limit(client: Any, name: str, per_minute: int) -> SetupAction:
    from prefect.exceptions import ObjectNotFound

    from methyl_distill.teacher.token_bucket import ensure_limit

    try:
        before = client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        before = None
    ensure_limit(name, per_minute, per_minute / 60.0)
    if before is None:
        return SetupAction("global concurrency limit", name, "created")
    after = client.read_global_concurrency_limit_by_name(name)
    changed = (before.limit, before.slot_decay_per_second, before.active) != (
        after.limit,
        after.slot_decay_per_second,
        after.active,
    )
    return SetupAction("global concurrency limit", name, "updated" if changed else "unchanged")


def checkout_source(directory: Path) -> tuple[str, str | None] | None:
    """(file:// URL, branch) of the git checkout holding `directory`, or None outside one (or without git).
    The branch is None on a detached HEAD (the clone then takes the repository's default branch)."""

    def git(*arguments: str) -> str | None:
        try:
            result = subprocess.run(
                ["git", "-C", str(directory), *arguments], capture_output=True, text=True, check=False
            )
        except OSError:
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if not top:
        return None
    branch = git("symbolic-ref", "--quiet", "--short", "HEAD")  # fails on a detached HEAD
    return Path(top).resolve().as_uri(), branch or None


def source_variables(
    repository: str | None,
    branch: str | None,
    image_registry: str | None,
    checkout: tuple[str, str | None] | None,
) -> list[DeploymentVariable]:
    """The variables to ensure: those given are set; the checkout's repository and branch fill in,
    created only where the server has none."""
    variables: list[DeploymentVariable] = []
    found_repository, found_branch = checkout if checkout else (None, None)
    for name, given, found in (
        (REPOSITORY_VARIABLE, repository, found_repository),
        (BRANCH_VARIABLE, branch, found_branch if repository is None else None),
        (IMAGE_REGISTRY_VARIABLE, image_registry, None),
    ):
        if given is not None:
            variables.append(DeploymentVariable(name=name, value=given))
        elif found is not None:
            variables.append(DeploymentVariable(name=name, value=found, overwrite=False))
    return variables


def _ensure_variable(client: Any, variable: DeploymentVariable) -> SetupAction:
    from prefect.client.schemas.actions import VariableCreate, VariableUpdate

    existing = client.read_variable_by_name(variable.name)
    if existing is None:
        client.create_variable(VariableCreate(name=variable.name, value=variable.value))
        return SetupAction("prefect variable", variable.name, "created")
    if existing.value != variable.value and variable.overwrite:
        client.update_variable(VariableUpdate(name=variable.name, value=variable.value))
        return SetupAction("prefect variable", variable.name, "updated")
    return SetupAction("prefect variable", variable.name, "unchanged")


def setup_prefect(config: PrefectSetupConfig | None = None) -> list[SetupAction]:
    """Create or update every object (see module doc) on the configured Prefect API."""
    from prefect.client.orchestration import get_client

    config = config or PrefectSetupConfig()
    pools = gpu_pools(config)  # bad template files fail before anything is created
    actions: list[SetupAction] = []
    with get_client(sync_client=True) as client:
        actions.append(_ensure_work_pool(client, config.process_pool, "process", None))
        for name, pool_type, template in pools:
            actions.append(_ensure_work_pool(client, name, pool_type, template))
        actions.append(_ensure_global_limit(client, config.teacher_limit_name, config.teacher_tpm))
        if config.teacher_rpm is not None:
            actions.append(
                _ensure_global_limit(client, f"{config.teacher_limit_name}-requests", config.teacher_rpm)
            )
        actions.append(_ensure_tag_limit(client, config.gpu_tag, config.gpu_tag_limit))
        for variable in config.variables:
            actions.append(_ensure_variable(client, variable))
    for action in actions:
        logger.debug("%s", action)
    return actions
