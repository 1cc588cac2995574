"""Where deployments get their code (fast checks; tests/test_deploy_from_git.py runs it end to end):
the shipped prefect.yaml's pull, build and push steps, the Prefect variables `setup-prefect` sets,
and a source tree importing its own flows and tasks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from methyl_distill.ops.prefect_setup import (
    BRANCH_VARIABLE,
    IMAGE_REGISTRY_VARIABLE,
    REPOSITORY_VARIABLE,
    DeploymentVariable,
    checkout_source,
    source_variables,
)
from tests.source_snapshot import GIT_IDENTITY, copy_working_tree

ROOT = Path(__file__).resolve().parent.parent


def _shipped() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text(encoding="utf-8"))


def test_process_deployments_clone_the_repository_the_variables_name() -> None:
    shipped = _shipped()
    (clone,) = shipped["pull"]
    step = clone["prefect.deployments.steps.git_clone"]
    assert step["repository"] == f"{{{{ prefect.variables.{REPOSITORY_VARIABLE} }}}}"
    assert step["branch"] == f"{{{{ prefect.variables.{BRANCH_VARIABLE} }}}}"
    for deployment in shipped["deployments"]:
        if deployment["work_pool"]["name"] == "methyl-distill-process":
            assert "pull" not in deployment, deployment["name"]  # the project's git_clone
            # Relative outputs would land in the run's temporary clone and vanish with it.
            output = deployment.get("parameters", {}).get("output_directory")
            assert output is None or Path(output).is_absolute(), deployment["name"]


def test_container_deployments_build_push_and_run_their_image() -> None:
    containers = [d for d in _shipped()["deployments"] if d["work_pool"]["name"] != "methyl-distill-process"]
    assert {d["name"] for d in containers} == {"finetune-cuda", "finetune-k8s"}
    for deployment in containers:
        (pull,) = deployment["pull"]
        assert pull == {
            "prefect.deployments.steps.set_working_directory": {"directory": "/opt/methyl-distill"}
        }
        (build,) = deployment["build"]
        built = build["prefect_docker.deployments.steps.build_docker_image"]
        assert built["image_name"].startswith(f"{{{{ prefect.variables.{IMAGE_REGISTRY_VARIABLE} }}}}/")
        assert (ROOT / built["dockerfile"]).is_file()
        (push,) = deployment["push"]
        assert push["prefect_docker.deployments.steps.push_docker_image"]["tag"] == "{{ build-image.tag }}"
        job = deployment["work_pool"]["job_variables"]
        assert job["image"] == "{{ build-image.image }}"
        gpus = int(job["env"]["METHYL_DISTILL_GPUS"])
        if "gpu_count" in job:  # Kubernetes: the GPUs requested are the GPUs trained on
            assert gpus == job["gpu_count"]
    # The job image starts no worker of its own.
    cuda = (ROOT / "docker" / "Dockerfile.cuda").read_text(encoding="utf-8")
    assert '"worker", "start"' not in cuda and 'CMD ["prefect", "flow-run", "execute"]' in cuda


def test_given_variables_are_set_found_ones_only_fill_in() -> None:
    found = ("file:///home/me/methyl-distill", "feature")
    assert source_variables(None, None, None, found) == [
        DeploymentVariable(name=REPOSITORY_VARIABLE, value=found[0], overwrite=False),
        DeploymentVariable(name=BRANCH_VARIABLE, value="feature", overwrite=False),
    ]
    # Another repository given: this checkout's branch says nothing about it.
    assert source_variables("https://git.example.org/m.git", None, "ghcr.io/org", found) == [
        DeploymentVariable(name=REPOSITORY_VARIABLE, value="https://git.example.org/m.git"),
        DeploymentVariable(name=IMAGE_REGISTRY_VARIABLE, value="ghcr.io/org"),
    ]
    assert source_variables(None, None, None, None) == []


def test_checkout_source_reads_a_real_git_checkout(tmp_path: Path) -> None:
    assert checkout_source(tmp_path) is None
    subprocess.run(["git", "init", "-q", "-b", "release", str(tmp_path)], check=True)
    (tmp_path / "sub").mkdir()
    assert checkout_source(tmp_path / "sub") == (tmp_path.resolve().as_uri(), "release")
    subprocess.run(["git", "-C", str(tmp_path), *GIT_IDENTITY, "commit", "-q", "--allow-empty", "-m", "x"])
    subprocess.run(["git", "-C", str(tmp_path), "checkout", "-q", "--detach"], check=True)
    assert checkout_source(tmp_path) == (tmp_path.resolve().as_uri(), None)


def test_a_source_tree_imports_its_own_flows_tasks_and_core(tmp_path: Path) -> None:
    """As a flow run does in a deployment's clone: the tree's folder first on sys.path."""
    tree = copy_working_tree(tmp_path / "clone")
    probe = (
        "import sys; sys.path.insert(0, '.')\n"
        "import methyl_distill as package, methyl_distill.training.finetune as core\n"
        "import methyl_distill.tasks.training as task, methyl_distill.flows.finetune as flow\n"
        "for module in (package, task, flow, core):\n"
        "    print(module.__file__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tree, capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr
    files = [Path(line) for line in result.stdout.split()]
    assert len(files) == 4 and all(tree.resolve() in path.parents for path in files), files
