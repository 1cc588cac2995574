"""Data-parallel fine-tuning: the launch plan from job variables, the torchrun command, and a real
two-process run of the tiny Mistral on CPU (gloo), started as a CUDA deployment's job would start it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from methyl_distill.training.distributed_launch import (
    DistributedLaunchError,
    LaunchPlan,
    launch_plan,
    launcher_environment,
    torchrun_command,
)
from methyl_distill.training.finetune import FinetuneConfig, LoraFinetuneRecipe
from tests.test_finetune import QA, tiny_config, write_chat_file


def test_the_gpu_count_comes_from_the_config_then_the_job_variable_then_ms_swifts_variable() -> None:
    assert launch_plan(None, {}) == LaunchPlan(nproc_per_node=1)
    assert not launch_plan(None, {}).distributed
    assert launch_plan(None, {"NPROC_PER_NODE": "2"}).nproc_per_node == 2
    assert launch_plan(None, {"METHYL_DISTILL_GPUS": "4", "NPROC_PER_NODE": "2"}).nproc_per_node == 4
    assert launch_plan(8, {"METHYL_DISTILL_GPUS": "4"}).nproc_per_node == 8
    assert launch_plan(None, {"METHYL_DISTILL_GPUS": " "}).nproc_per_node == 1  # empty: unset


def test_multi_node_settings_are_read_and_checked() -> None:
    plan = launch_plan(
        None,
        {
            "METHYL_DISTILL_GPUS": "8",
            "NNODES": "2",
            "NODE_RANK": "1",
            "MASTER_ADDR": "finetune-0.finetune",
            "MASTER_PORT": "29500",
        },
    )
    assert (plan.world_size, plan.writes_outputs) == (16, False)
    with pytest.raises(DistributedLaunchError, match="NNODES=2 needs MASTER_ADDR"):
        launch_plan(None, {"NNODES": "2"})
    with pytest.raises(DistributedLaunchError, match="NODE_RANK=2 must be below NNODES=2"):
        launch_plan(None, {"NNODES": "2", "NODE_RANK": "2", "MASTER_ADDR": "a"})
    with pytest.raises(DistributedLaunchError, match=r"METHYL_DISTILL_GPUS='two' is not a whole number"):
        launch_plan(None, {"METHYL_DISTILL_GPUS": "two"})
    with pytest.raises(DistributedLaunchError, match=r"NPROC_PER_NODE='0' must be 1 or more"):
        launch_plan(None, {"NPROC_PER_NODE": "0"})


def test_the_launch_command_is_ms_swifts_torchrun_on_our_entry_point() -> None:
    plan = LaunchPlan(nproc_per_node=4, nnodes=2, node_rank=0, master_addr="10.0.0.5", master_port=29500)
    command = torchrun_command(plan, Path("/o/launch/sft_arguments.json"), Path("/o/launch/sft_result.json"))
    assert command == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "4",
        "--nnodes",
        "2",
        "--node_rank",
        "0",
        "--master_addr",
        "10.0.0.5",
        "--master_port",
        "29500",
        "-m",
        "methyl_distill.training.distributed_launch",
        "/o/launch/sft_arguments.json",
        "/o/launch/sft_result.json",
    ]
    single_node = torchrun_command(LaunchPlan(nproc_per_node=2), Path("a.json"), Path("r.json"))
    assert single_node[3:6] == ["--nproc_per_node", "2", "-m"]
    env = launcher_environment(LaunchPlan(nproc_per_node=2), {"NNODES": "3", "NODE_RANK": "1", "HOME": "/h"})
    assert env == {"HOME": "/h", "NPROC_PER_NODE": "2"}  # a stale multi-node setting is not inherited


def test_deepspeed_on_cpu_and_a_node_other_than_rank_0_fail_before_loading(
    tmp_path: Path,
) -> None:
    write_chat_file(tmp_path / "train.jsonl", QA, repeat=2)
    recipe = LoraFinetuneRecipe(
        tmp_path, tmp_path / "out", preset="tiny-mistral", config=tiny_config(deepspeed="zero2")
    )
    with pytest.raises(ValueError, match="deepspeed zero2 needs CUDA GPUs"):
        recipe.setup()
    other_node = LaunchPlan(nproc_per_node=1, nnodes=2, node_rank=1, master_addr="a")
    recipe = LoraFinetuneRecipe(tmp_path, tmp_path / "out", preset="tiny-mistral", launch=other_node)
    with pytest.raises(ValueError, match="NODE_RANK=1: the fine-tune recipe runs on the rank-0 machine"):
        recipe.setup()
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError):
        FinetuneConfig(num_gpus=0)
    with pytest.raises(ValueError):
        FinetuneConfig(deepspeed="zero1")  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.flow
def test_two_processes_train_one_adapter_when_the_job_asks_for_two(
    tmp_path: Path, prefect_harness: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """METHYL_DISTILL_GPUS=2, as the CUDA deployments' job variables set it: the fine-tune flow runs
    ms-swift in two torchrun processes (gloo on CPU), each on its half of every step's batch."""
    from methyl_distill.flows.finetune import finetune_flow

    dataset = tmp_path / "dataset"
    dataset.mkdir()
    write_chat_file(dataset / "train.jsonl", QA, repeat=8)  # 32 samples
    monkeypatch.setenv("METHYL_DISTILL_GPUS", "2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    config = tiny_config(max_steps=4, save_steps=4, batch_size=2)
    summary = finetune_flow(
        str(dataset), str(tmp_path / "out"), preset="tiny-mistral", config=config, cache_dir=str(tmp_path)
    )
    assert summary.global_step == 4
    assert (Path(summary.adapter_path) / "adapter_model.safetensors").is_file()
    history = [json.loads(line) for line in Path(summary.training_log_path).read_text().splitlines()]
    # 4 steps x 2 samples per process x 2 processes = 16 of 32 samples: half an epoch. One process
    # would have seen a quarter.
    assert history[-1]["epoch"] == pytest.approx(0.5)
    arguments = json.loads((tmp_path / "out" / "launch" / "sft_arguments.json").read_text())
    assert arguments["per_device_train_batch_size"] == 2 and arguments["use_cpu"] is True
    # The process count is not part of what is learnt: a rerun asking for one finds the run done.
    one_process = config.model_copy(update={"num_gpus": 1})
    again = finetune_flow(
        str(dataset),
        str(tmp_path / "out"),
        preset="tiny-mistral",
        config=one_process,
        cache_dir=str(tmp_path),
    )
    assert again.adapter_path == summary.adapter_path and again.global_step == 4
