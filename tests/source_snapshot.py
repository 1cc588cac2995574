"""The repository's working tree as a commit in a local bare git repository, for deployment tests.

Deployments clone their code from the repository in the Prefect variable methyl_distill_repository
(deployments/prefect.yaml). Tests point it at a bare repository holding the files of this working
tree as they are now, committed or not (what `git ls-files` lists, ignored files left out), so the
worker runs the code under test, not the last commit.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GIT_IDENTITY = ["-c", "user.name=methyl-distill tests", "-c", "user.email=tests@methyl-distill.invalid"]


def git(directory: Path, *arguments: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(directory), *GIT_IDENTITY, *arguments],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"git {' '.join(arguments)} in {directory}: {result.stderr}"
    return result.stdout.strip()


def copy_working_tree(destination: Path) -> Path:
    """The tracked and untracked, not ignored, files of this repository, copied to `destination`."""
    listed = git(ROOT, "ls-files", "--cached", "--others", "--exclude-standard", "-z")
    for relative in filter(None, listed.split("\0")):
        source = ROOT / relative
        if source.is_file():  # deleted in the working tree but still tracked: left out
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def commit_all(work_tree: Path, message: str) -> str:
    """Commit everything in `work_tree` (a git repository, made here if it is none); the commit's sha."""
    if not (work_tree / ".git").exists():
        git(work_tree, "init", "--quiet", "--initial-branch", "main")
    git(work_tree, "add", "--all")
    git(work_tree, "commit", "--quiet", "--allow-empty", "-m", message)
    return git(work_tree, "rev-parse", "HEAD")


def bare_repository_of(work_tree: Path, bare: Path) -> str:
    """A bare clone of `work_tree` at `bare`, set as its `origin` (to push to); its file:// URL."""
    git(work_tree.parent, "clone", "--quiet", "--bare", str(work_tree), str(bare))
    git(work_tree, "remote", "add", "origin", str(bare))
    return bare.resolve().as_uri()


def snapshot_repository(work: Path) -> str:
    """This working tree committed into `work/snapshot.git`; its file:// URL (branch main)."""
    tree = copy_working_tree(work / "snapshot")
    commit_all(tree, "working tree under test")
    return bare_repository_of(tree, work / "snapshot.git")
