"""Data-parallel fine-tuning on N GPUs of one machine (or on several machines), as ms-swift launches it.

`NPROC_PER_NODE=N swift sft ...` makes ms-swift's launcher run `python -m torch.distributed.run
--nproc_per_node N [--nnodes --node_rank --master_addr --master_port] swift/cli/sft.py ...`: N processes,
one per GPU, each training the same LoRA adapter on its share of every batch (DDP; DeepSpeed ZeRO-2/3
when the recipe sets `deepspeed`). `run_distributed_sft` starts that same torchrun command, with the same
environment variables, on this module's `main` instead of `swift/cli/sft.py`: `main` calls ms-swift's
`sft_main` with the recipe's own `SftArguments` keywords (a JSON file, so nothing is re-spelled as
command-line flags) and rank 0 writes `sft_main`'s result (last checkpoint, log history, parameter
summary) to a JSON file the recipe's `save()` reads, which `swift sft` would print and drop.

One process (`LaunchPlan.distributed` false) is not launched at all: the recipe calls `sft_main` in
its own process, as before. Several machines: every node runs the same fine-tune with NNODES,
NODE_RANK (0 on the node whose outputs count), MASTER_ADDR and MASTER_PORT set, the variables
ms-swift's launcher reads (docs/deployments.md, multi-node on Kubernetes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# The variable a deployment's job variables set to choose N (e.g. `env: {METHYL_DISTILL_GPUS: "4"}`).
GPUS_VARIABLE = "METHYL_DISTILL_GPUS"
# ms-swift's launcher variables (swift/cli/main.py), passed to torchrun as --nproc_per_node, ...
LAUNCHER_VARIABLES = ("NPROC_PER_NODE", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedLaunchError(RuntimeError):
    """The distributed launch was misconfigured or one of its processes failed."""


class LaunchPlan(BaseModel):
    """How many training processes, on how many machines: torchrun's rendezvous settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    nproc_per_node: int = Field(default=1, ge=1, description="Processes (one per GPU) on this machine.")
    nnodes: int = Field(default=1, ge=1, description="Machines taking part (NNODES).")
    node_rank: int = Field(default=0, ge=0, description="This machine's rank, 0 on the first (NODE_RANK).")
    master_addr: str | None = Field(default=None, description="Address of the rank-0 machine (MASTER_ADDR).")
    master_port: int | None = Field(
        default=None, ge=1, le=65535, description="Rendezvous port on it (MASTER_PORT)."
    )

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    @property
    def distributed(self) -> bool:
        """More than one training process: launched through torchrun."""
        return self.world_size > 1

    @property
    def writes_outputs(self) -> bool:
        """Whether this machine holds the run's outputs (the rank-0 node)."""
        return self.node_rank == 0


def _whole_number(name: str, value: str, lowest: int = 1) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise DistributedLaunchError(f"{name}={value!r} is not a whole number") from None
    if number < lowest:
        raise DistributedLaunchError(f"{name}={value!r} must be {lowest} or more")
    return number


def launch_plan(num_gpus: int | None = None, environ: Mapping[str, str] | None = None) -> LaunchPlan:
    """The plan for this run: `num_gpus` if given, else METHYL_DISTILL_GPUS, else NPROC_PER_NODE, else 1
    process; NNODES, NODE_RANK, MASTER_ADDR and MASTER_PORT from `environ` (read at the edge: the
    fine-tune task passes os.environ, where a deployment's job variables put them)."""
    given = {key: value.strip() for key, value in (environ or {}).items() if value.strip()}
    if num_gpus is not None:
        nproc = num_gpus
    elif GPUS_VARIABLE in given:
        nproc = _whole_number(GPUS_VARIABLE, given[GPUS_VARIABLE])
    elif "NPROC_PER_NODE" in given:
        nproc = _whole_number("NPROC_PER_NODE", given["NPROC_PER_NODE"])
    else:
        nproc = 1
    nnodes = _whole_number("NNODES", given["NNODES"]) if "NNODES" in given else 1
    node_rank = _whole_number("NODE_RANK", given["NODE_RANK"], lowest=0) if "NODE_RANK" in given else 0
    master_addr = given.get("MASTER_ADDR")
    master_port = _whole_number("MASTER_PORT", given["MASTER_PORT"]) if "MASTER_PORT" in given else None
    if node_rank >= nnodes:
        raise DistributedLaunchError(f"NODE_RANK={node_rank} must be below NNODES={nnodes}")
    if nnodes > 1 and master_addr is None:
        raise DistributedLaunchError(
            f"NNODES={nnodes} needs MASTER_ADDR: the address of the NODE_RANK=0 machine, which every "
            "node can reach"
        )
    return LaunchPlan(
        nproc_per_node=nproc,
        nnodes=nnodes,
        node_rank=node_rank,
        master_addr=master_addr,
        master_port=master_port,
    )


def launcher_environment(plan: LaunchPlan, environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` with ms-swift's launcher variables set to the plan (and nothing of an earlier launch)."""
    env = {key: value for key, value in environ.items() if key not in LAUNCHER_VARIABLES}
    env["NPROC_PER_NODE"] = str(plan.nproc_per_node)
    if plan.nnodes > 1:
        env["NNODES"] = str(plan.nnodes)
        env["NODE_RANK"] = str(plan.node_rank)
    if plan.master_addr is not None:
        env["MASTER_ADDR"] = plan.master_addr
    if plan.master_port is not None:
        env["MASTER_PORT"] = str(plan.master_port)
    return env


def torchrun_command(
    plan: LaunchPlan, arguments_path: Path, result_path: Path, python: str | None = None
) -> list[str]:
    """The command ms-swift's launcher builds (`swift/cli/main.py`), with this module as the script."""
    command = [
        python or sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(plan.nproc_per_node),
    ]
    if plan.nnodes > 1:
        command += ["--nnodes", str(plan.nnodes), "--node_rank", str(plan.node_rank)]
    if plan.master_addr is not None:
        command += ["--master_addr", plan.master_addr]
    if plan.master_port is not None:
        command += ["--master_port", str(plan.master_port)]
    return [*command, "-m", __name__, str(arguments_path), str(result_path)]


def run_distributed_sft(
    arguments: Mapping[str, Any],
    plan: LaunchPlan,
    work_directory: Path,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run ms-swift's SFT with `arguments` (SftArguments keywords) in `plan.world_size` processes and
    return rank 0's `sft_main` result; on a node other than rank 0, an empty result."""
    work_directory.mkdir(parents=True, exist_ok=True)
    arguments_path = work_directory / "sft_arguments.json"
    result_path = work_directory / "sft_result.json"
    arguments_path.write_text(json.dumps(dict(arguments), indent=2), encoding="utf-8")
    result_path.unlink(missing_ok=True)
    command = torchrun_command(plan, arguments_path, result_path)
    env = launcher_environment(plan, os.environ if environ is None else environ)
    completed = subprocess.run(command, env=env, check=False)
    if completed.returncode != 0:
        raise DistributedLaunchError(
            f"the distributed fine-tune ({plan.world_size} processes: {' '.join(command)}) exited with "
            f"status {completed.returncode}; its processes' output is above"
        )
    if not plan.writes_outputs:
        return {}
    if not result_path.is_file():
        raise DistributedLaunchError(f"{result_path}: rank 0 of the distributed fine-tune wrote no result")
    return dict(json.loads(result_path.read_text(encoding="utf-8")))


def main(argv: Sequence[str] | None = None) -> int:
    """One torchrun process: `python -m methyl_distill.training.distributed_launch ARGS.json RESULT.json`."""
    from swift import SftArguments, sft_main

    arguments_file, result_file = (sys.argv[1:] if argv is None else list(argv))[:2]
    arguments = json.loads(Path(arguments_file).read_text(encoding="utf-8"))
    result = sft_main(SftArguments(**arguments))
    if int(os.environ.get("RANK", "0")) == 0:
        # default=str: the result may hold non-JSON values (memory figures as tensors, paths).
        Path(result_file).write_text(json.dumps(result or {}, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
