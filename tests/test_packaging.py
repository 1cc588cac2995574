"""The wheel: what it holds, and that it works installed anywhere, without the repository.

The wheel is built from a copy of the source tree (a stale `build/` or egg-info in the checkout
must not leak into it, and the build writes nothing into the checkout). It must hold one top-level
package, `methyl_distill`, with `flows/` and `tasks/` inside it, its data files, and nothing of
`tests/` (the fake OpenAI server is not shipped).

Installed into a fresh virtual environment, it must run `methyl-distill extract` from an empty
working directory against the project's fake OpenAI server. The new environment borrows the
dependencies from the project's own virtual environment through a `.pth` line naming that
environment's site-packages: a directory named in a `.pth` file joins `sys.path`, but the `.pth`
files inside it (the editable install's finder among them) are not executed, so the only
`methyl_distill` the new environment can import is the installed wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPOSITORY = Path(__file__).resolve().parent.parent
PACKAGE = "methyl_distill"
# Package data that a plain `packages = [...]` list leaves out unless package-data names it.
PACKAGE_DATA = [
    "methyl_distill/py.typed",
    "methyl_distill/extraction/question_bank.toml",
    "methyl_distill/sft_dataset/dataset.toml",
]
JOB_TEMPLATES = "methyl_distill/ops/job_templates"
# Folders of the repository that become subpackages of methyl_distill in the wheel.
MAPPED_FOLDERS = {"flows": "methyl_distill/flows", "tasks": "methyl_distill/tasks"}
SAMPLE_PAPERS = ["gstp1_prostate_cancer.txt", "mgmt_glioblastoma_temozolomide.txt"]
WHERE_IS_THE_PACKAGE = (
    "import methyl_distill, sysconfig; print(methyl_distill.__file__, sysconfig.get_paths()['purelib'])"
)
EXPECTED_FILE_IDS = {"gstp1-prostate-cancer-txt", "mgmt-glioblastoma-temozolomide-txt"}
# Not part of a wheel: virtual environments, caches, build output, run outputs.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "outputs", ".prefect", ".cache"
)


def source_files(folder: str, pattern: str) -> list[str]:
    """Paths relative to the repository of the files under `folder` matching `pattern`."""
    root = REPOSITORY / folder
    return sorted(
        str(path.relative_to(REPOSITORY))
        for path in root.rglob(pattern)
        if "__pycache__" not in path.parts and path.is_file()
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built with this interpreter's setuptools from a copy of the source tree."""
    root = tmp_path_factory.mktemp("wheel-build")
    source = root / "source"
    shutil.copytree(REPOSITORY, source, ignore=NOT_SOURCE, symlinks=True)
    began = time.monotonic()
    # No build isolation: the build uses the installed setuptools, so it needs no index.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--verbose",  # shows the build backend's warnings
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(root),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"pip wheel failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    print(f"wheel built in {time.monotonic() - began:.1f} s")
    # setuptools warns when a folder under a package (a data folder) is missing from `packages`;
    # it says such folders may be left out in future versions.
    backend_output = result.stdout + result.stderr
    assert "absent from the `packages` configuration" not in backend_output, backend_output[-6000:]
    (built,) = root.glob("methyl_distill-*.whl")
    return built


def test_wheel_holds_one_package_with_its_data_and_no_tests(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/", 1)[0] for name in names}
    (dist_info,) = (name for name in top_level if name.endswith(".dist-info"))
    assert top_level == {PACKAGE, dist_info}, "only methyl_distill and its .dist-info may be top-level"
    files = set(names)

    # Every module and subpackage of the source tree, so a package missing from pyproject's list fails.
    expected = source_files(PACKAGE, "*.py") + PACKAGE_DATA
    templates = source_files(JOB_TEMPLATES, "*.json")
    assert templates, f"no job templates under {JOB_TEMPLATES} in the source tree"
    expected += templates
    for folder, target in MAPPED_FOLDERS.items():
        modules = source_files(folder, "*.py")
        assert f"{folder}/__init__.py" in modules
        expected += [target + module.removeprefix(folder) for module in modules]
    missing = sorted(set(expected) - files)
    assert not missing, f"missing from the wheel: {missing}"

    assert not [name for name in names if "fake_openai" in name or name.split("/")[1:2] == ["tests"]]
    assert not [name for name in names if name.endswith((".pyc", ".log")) or "__pycache__" in name]
    entry_points = zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt").decode()
    assert "methyl-distill = methyl_distill.cli:main" in entry_points


@pytest.fixture(scope="module")
def installed_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtual environment with the wheel installed, borrowing every dependency from this
    interpreter's site-packages (without the editable install of the project)."""
    venv = tmp_path_factory.mktemp("wheel-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    dependencies = sysconfig.get_paths()["purelib"]
    (Path(purelib) / "borrowed_dependencies.pth").write_text(dependencies + "\n", encoding="utf-8")
    # This interpreter's pip installs into the new environment (which has none of its own).
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, f"pip install failed:\n{install.stdout[-4000:]}\n{install.stderr[-4000:]}"
    yield venv


def isolated_environment(venv: Path, home: Path, **extra: str) -> dict[str, str]:
    """Environment for the installed command: nothing of this session's (no PYTHONPATH, no Prefect
    API URL, no keys) beyond PATH and the variables given."""
    return {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        **extra,
    }


def run_in(cwd: Path, command: list[str], env: dict[str, str], timeout: float = 120):
    """Run `command` in `cwd` with exactly `env`, capturing its output."""
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_installed_wheel_runs_extract_from_an_empty_directory(installed_venv: Path, tmp_path: Path) -> None:
    from tests.fake_openai.server import OpenAITestServerConfig, running_test_server

    python = str(installed_venv / "bin" / "python")
    empty = tmp_path / "empty"
    empty.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    env = isolated_environment(installed_venv, home)

    # The package comes from the new environment's site-packages, never from the checkout or the
    # editable install; the repository's top-level folders are not importable.
    located = run_in(empty, [python, "-c", WHERE_IS_THE_PACKAGE], env)
    assert located.returncode == 0, located.stderr
    module_file, purelib = located.stdout.split()
    assert Path(module_file).resolve().is_relative_to(Path(purelib).resolve()), located.stdout
    assert not Path(module_file).resolve().is_relative_to(REPOSITORY)
    for name in ("flows", "tasks", "tests"):
        imported = run_in(empty, [python, "-c", f"import {name}"], env)
        assert imported.returncode != 0 and "ModuleNotFoundError" in imported.stderr, (name, imported.stderr)
    imported = run_in(empty, [python, "-c", "import methyl_distill.flows.extract"], env)
    assert imported.returncode == 0, imported.stderr

    papers = tmp_path / "papers"
    papers.mkdir()
    for name in SAMPLE_PAPERS:
        shutil.copy(REPOSITORY / "data" / "papers" / name, papers / name)
    output = tmp_path / "out"
    with running_test_server(OpenAITestServerConfig()) as server:
        env = isolated_environment(
            installed_venv,
            home,
            OPENAI_BASE_URL=server.base_url,
            OPENAI_API_KEY="test",
            METHYL_DISTILL_CACHE_DIR=str(tmp_path / "cache"),
            PREFECT_HOME=str(tmp_path / "prefect"),
            # A fresh PREFECT_HOME on two loaded cores takes ~25 s to start its temporary server.
            PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
        )
        began = time.monotonic()
        command = [
            str(installed_venv / "bin" / "methyl-distill"),
            "extract",
            "--input_directory",
            str(papers),
            "--output_directory",
            str(output),
        ]
        run = run_in(empty, command, env, timeout=600)
        print(f"methyl-distill extract ran in {time.monotonic() - began:.1f} s")
        requests = server.stats().requests
    assert run.returncode == 0, f"methyl-distill extract failed:\n{run.stdout[-6000:]}\n{run.stderr[-6000:]}"
    assert requests >= len(SAMPLE_PAPERS)
    entries = json.loads((output / "all_results.json").read_text(encoding="utf-8"))
    assert {entry["file_id"] for entry in entries} == EXPECTED_FILE_IDS
    assert all(entry["generated_answers"] for entry in entries)
    assert list(empty.iterdir()) == []  # nothing written to the working directory
