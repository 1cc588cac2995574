"""Deploy from one clone, run in another folder: the worker runs the code pushed to the repository.

As CI does it: a developer's tree is committed and pushed to a (local, bare) git repository; a CI
checkout of that repository runs `methyl-distill setup-prefect --repository URL --branch main` and
`prefect deploy` with deployments/prefect.yaml; a process worker started in an empty folder runs the
`extract` deployment, whose `git_clone` pull step clones the repository. Marker lines that exist only
in the pushed commits record, from inside the flow run, which files the flow, its tasks and the core
package were imported from; a second push, with no new `prefect deploy`, is what the next run runs.
Real services throughout (the Prefect server and OpenAI-compatible test server of
tests/test_deployments.py's `stack` fixture, git, a process worker).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.source_snapshot import bare_repository_of, commit_all, copy_working_tree, git
from tests.test_deployments import BIN, ROOT, SAMPLE_PAPERS, Services, _api, stack  # noqa: F401  (stack: fixture)

pytestmark = pytest.mark.integration

# The modules a run of the extract flow imports, one from each part of the source tree.
MARKED_MODULES = ("flows/extract.py", "tasks/extraction.py", "methyl_distill/extraction/extract.py")
MARKER_LINE = (
    "\n\ndef _record_deploy_marker() -> None:  # added by tests/test_deploy_from_git.py\n"
    "    import json as _json, os as _os, pathlib as _pathlib\n"
    "    _folder = _os.environ.get('DEPLOY_MARKER_DIRECTORY')\n"
    "    if _folder:\n"
    "        _file = str(_pathlib.Path(__file__).resolve())\n"
    "        _record = {{'marker': {marker!r}, 'module': {module!r}, 'file': _file}}\n"
    "        _name = {module!r}.replace('/', '.') + '.json'\n"
    "        (_pathlib.Path(_folder) / _name).write_text(_json.dumps(_record))\n\n\n"
    "_record_deploy_marker()\n"
)


def mark(tree: Path, marker: str) -> None:
    """Append the marker recorder to each marked module of `tree` (replacing an earlier marker)."""
    for module in MARKED_MODULES:
        path = tree / module
        source = path.read_text(encoding="utf-8").split("\n\ndef _record_deploy_marker()")[0]
        path.write_text(source + MARKER_LINE.format(marker=marker, module=module), encoding="utf-8")


def markers(folder: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for path in folder.glob("*.json"):
        record = json.loads(path.read_text(encoding="utf-8"))
        found[record["module"]] = record
    return found


def test_deploy_from_a_clone_and_run_code_pulled_from_git(stack: dict[str, Any]) -> None:  # noqa: F811
    work: Path = stack["work"] / "from-git"
    work.mkdir()
    services: Services = stack["services"]
    prefect = str(BIN / "prefect")

    # The developer's tree, with the first marker, pushed to a bare repository.
    developer = copy_working_tree(work / "developer")
    mark(developer, "first-push")
    commit_all(developer, "first push")
    repository = bare_repository_of(developer, work / "methyl-distill.git")

    # CI: a fresh checkout of the repository; set-up and deploy from there.
    checkout = work / "ci-checkout"
    git(work, "clone", "--quiet", repository, str(checkout))
    setup = [str(BIN / "methyl-distill"), "setup-prefect", "--repository", repository, "--branch", "main"]
    set_up = services.run("git-setup", setup, timeout=300, cwd=checkout).stdout
    assert "prefect variable 'methyl_distill_repository'" in set_up
    assert (
        _api(
            stack, "POST", "/variables/filter", {"variables": {"name": {"any_": ["methyl_distill_branch"]}}}
        )[0]["value"]
        == "main"
    )
    papers = work / "papers"
    papers.mkdir()
    shutil.copy2(SAMPLE_PAPERS / "sept9_plasma_colorectal_screening.txt", papers)
    output = work / "outputs"
    deploy = [
        prefect,
        "--no-prompt",
        "deploy",
        "--prefect-file",
        "deployments/prefect.yaml",
        "--name",
        "extract",
    ]
    parameters = {"input_directory": str(papers), "output_directory": str(output)}
    services.run("git-deploy", [*deploy, "--params", json.dumps(parameters)], timeout=300, cwd=checkout)
    (deployment,) = _api(
        stack, "POST", "/deployments/filter", {"deployments": {"name": {"any_": ["extract"]}}}
    )
    (clone_step,) = deployment["pull_steps"]
    # Stored as a template: the repository and branch are read when each run starts.
    assert clone_step["prefect.deployments.steps.git_clone"]["repository"] == (
        "{{ prefect.variables.methyl_distill_repository }}"
    )
    shutil.rmtree(checkout)  # nothing of the CI runner's checkout is needed any more

    # A process worker in an empty folder, recording the markers of the code it imports.
    worker_folder = work / "worker"
    worker_folder.mkdir()
    recorded = work / "markers"
    recorded.mkdir()
    worker_services = Services(
        stack["work"] / "logs", {**stack["env"], "DEPLOY_MARKER_DIRECTORY": str(recorded)}
    )
    try:
        worker = worker_services.start(
            "git-worker",
            [
                prefect,
                "worker",
                "start",
                "--pool",
                "methyl-distill-process",
                "--type",
                "process",
                "--limit",
                "1",
            ],
            cwd=worker_folder,
        )
        run = [prefect, "deployment", "run", "extract/extract", "--watch", "--watch-timeout", "300"]
        first = services.run("git-run-1", run, timeout=360)
        assert "Completed" in first.stdout + first.stderr, worker_services.log("git-worker")
        assert (output / "records.jsonl").is_file()

        # The flow, its tasks and the core package all came from one clone of the pushed commit
        # (the process worker runs each flow run in a temporary folder, where the clone is made).
        found = markers(recorded)
        assert set(found) == set(MARKED_MODULES), (found, worker_services.log("git-worker"))
        clones = set()
        for module, record in found.items():
            assert record["marker"] == "first-push"
            path = Path(record["file"])
            assert path.parts[-len(Path(module).parts) :] == Path(module).parts, record
            clones.add(path.parents[len(Path(module).parts) - 1])
        (clone,) = clones
        assert clone.name == "methyl-distill-main"  # <repository>-<branch>
        assert ROOT not in clone.parents and work not in clone.parents

        # A second push, no new deploy: the next run clones (updates) and runs the new commit.
        mark(developer, "second-push")
        commit_all(developer, "second push")
        git(developer, "push", "--quiet", "origin", "main")
        for path in recorded.iterdir():
            path.unlink()
        second = services.run("git-run-2", run, timeout=360)
        assert "Completed" in second.stdout + second.stderr, worker_services.log("git-worker")
        assert {record["marker"] for record in markers(recorded).values()} == {"second-push"}
        assert worker.poll() is None, worker_services.log("git-worker")
    finally:
        worker_services.stop()
