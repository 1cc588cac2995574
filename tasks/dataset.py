"""The dataset task: `build_sft_dataset` with Prefect caching around it.

The cache key is everything that decides the dataset: the content (sha256) of every records file,
the papers directory's files (relative path, size and modification time: a changed paper changes
the key), the configuration, the output directory and the source of the dataset code itself (the
dataset package and the text rules it applies: quote matching, sentences, "not reported"). A
cached result is only trusted while its files exist: the flow rebuilds when they are gone.
Results are persisted as JSON beside the extraction cache (METHYL_DISTILL_CACHE_DIR or a storage
block, see methyl_distill.tasks.extraction).
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any

from prefect import task
from prefect.context import TaskRunContext

from methyl_distill.sft_dataset import DatasetConfig, DatasetSummary, build_sft_dataset
from methyl_distill.text.hashing import sha256_of_file, sha256_of_text, update_with_file


@cache
def _code_fingerprint() -> str:
    import methyl_distill.readers as readers_package
    import methyl_distill.sft_dataset as dataset_package
    import methyl_distill.text as text_package

    digest = hashlib.sha256()
    packages = (dataset_package, text_package, readers_package)
    for folder in (Path(package.__file__).parent for package in packages):  # type: ignore[arg-type]
        for path in sorted(folder.glob("*.py")):
            digest.update(f"{folder.name}/{path.name}".encode())
            update_with_file(digest, path)
    return digest.hexdigest()


def papers_fingerprint(papers_directory: str | None) -> str:
    """A digest of the files under the papers directory: relative path, size, modification time."""
    if papers_directory is None:
        return "none"
    root = Path(papers_directory)
    if not root.is_dir():
        return f"absent:{root}"
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.relative_to(root)}\x1f{stat.st_size}\x1f{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def dataset_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    config: DatasetConfig = parameters["config"]
    parts = [
        f"code={_code_fingerprint()}",
        *(f"records={sha256_of_file(path)}" for path in parameters["records"]),
        f"papers={papers_fingerprint(parameters['papers_directory'])}",
        f"config={config.fingerprint()}",
        f"output={Path(parameters['output_directory']).absolute()}",
    ]
    return "dataset-" + sha256_of_text("\n".join(parts))


@task(
    name="build-dataset",
    cache_key_fn=dataset_cache_key,
    persist_result=True,
    result_serializer="json",
    tags=["dataset"],
)
def build_dataset(
    records: list[str], output_directory: str, papers_directory: str | None, config: DatasetConfig
) -> DatasetSummary:
    """Build the SFT dataset (see methyl_distill.sft_dataset.build_sft_dataset)."""
    return build_sft_dataset(records, output_directory, papers_directory, config)
