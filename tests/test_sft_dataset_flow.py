"""The dataset flow under the session's Prefect test harness: artifacts, caching, rebuild."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from methyl_distill.sft_dataset import DatasetConfig
from methyl_distill.sft_dataset.synthetic_records import write_synthetic_corpus

pytestmark = pytest.mark.flow


def test_flow_builds_caches_and_rebuilds_when_files_are_gone(
    prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from methyl_distill.flows.dataset import build_dataset_flow
    from prefect.client.orchestration import get_client

    from methyl_distill.sft_dataset import build as build_module

    monkeypatch.setenv("METHYL_DISTILL_CACHE_DIR", str(tmp_path / "cache"))
    papers_dir, records_path = write_synthetic_corpus(tmp_path / "corpus", 12, seed=4)
    output = tmp_path / "dataset"
    config = DatasetConfig(seed=21)

    builds = []
    real_build = build_module.build_sft_dataset

    def counting_build(*args, **kwargs):  # type: ignore[no-untyped-def]
        builds.append(args)
        return real_build(*args, **kwargs)

    monkeypatch.setattr("methyl_distill.tasks.dataset.build_sft_dataset", counting_build)

    first = build_dataset_flow([str(records_path)], str(output), str(papers_dir), config)
    assert first.files_exist() and first.total_samples > 0 and len(builds) == 1
    train_before = Path(first.train_jsonl).read_bytes()

    # Same inputs: served from the cache, no rebuild.
    second = build_dataset_flow([str(records_path)], str(output), str(papers_dir), config)
    assert len(builds) == 1 and second.splits == first.splits

    # The files were deleted: the cached result is not trusted, the dataset is rebuilt.
    shutil.rmtree(output)
    third = build_dataset_flow([str(records_path)], str(output), str(papers_dir), config)
    assert len(builds) == 2 and Path(third.train_jsonl).read_bytes() == train_before

    # The files were rewritten since (another build into the folder, an edit): rebuilt too.
    Path(third.val_jsonl).write_text("", encoding="utf-8")
    fourth = build_dataset_flow([str(records_path)], str(output), str(papers_dir), config)
    assert len(builds) == 3 and fourth.files_exist()

    # A changed records file changes the cache key.
    with records_path.open("a", encoding="utf-8") as handle:
        handle.write("\n")
    build_dataset_flow([str(records_path)], str(output), str(papers_dir), config)
    assert len(builds) == 4

    async def artifacts() -> list[str]:
        async with get_client() as client:
            found = await client.read_artifacts()
            return [artifact.key for artifact in found if artifact.key]

    import asyncio

    keys = asyncio.run(artifacts())
    assert "dataset-splits" in keys and "dataset-statistics" in keys
