"""LoRA supervised fine-tuning with ms-swift, as a recipe: setup (fail-fast checks), train, save.

The dataset stage's `train.jsonl` (and `val.jsonl`, when present) go to ms-swift as they are. The
output folder holds:

    checkpoints/checkpoint-<step>/   ms-swift / HF Trainer checkpoints (adapter, optimizer, RNG state)
    adapter/                         the final LoRA adapter (PEFT format) with ms-swift's args.json
    merged/                          the base model with the adapter merged in (when `merge_lora`)
    finetune_request.json            preset, base model, config and dataset fingerprints of this run
    training_log.jsonl               the trainer's log history (loss, eval loss, learning rate...)
    loss_curve.png                   training and validation loss by step
    finetune_summary.json            `FinetuneSummary`; written last, it marks the run complete

An interrupted run resumes from its newest complete checkpoint when started again with the same request;
a completed run is returned as it is. A different request (new data, new hyper-parameters) into the same
folder, as a scheduled pipeline rerun makes, moves the earlier run to `superseded/<UTC time>/` and starts
afresh; a non-empty folder that holds no fine-tune is refused.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from methyl_distill.extraction.outputs import atomic_write_text
from methyl_distill.ops.run_progress import reporting
from methyl_distill.text.hashing import sha256_of_file
from methyl_distill.training.chat_jsonl import count_training_samples
from methyl_distill.training.distributed_launch import LaunchPlan, run_distributed_sft
from methyl_distill.training.model_spec import ArchitectureShape, count_parameters, resolve_target_modules
from methyl_distill.training.presets import ResolvedModel, get_preset, preset_config, resolve_model
from methyl_distill.training.runtime_device import DeviceChoice, DeviceRequest, choose_device
from methyl_distill.training.telemetry import TENSORBOARD_DIR_VARIABLE, report_targets, tensorboard_directory
from methyl_distill.training.training_progress import SWIFT_LOG_FILE, TrainingLogProgress

logger = logging.getLogger(__name__)

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "additional_config.json", "args.json")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Where the outputs of an earlier run with a different request go when a new one starts in its folder.
SUPERSEDED_DIR = "superseded"


def _read_json_object(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None (with a warning) when it is torn or not an object: written by an
    earlier version that did not write atomically, or damaged."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        logger.warning("%s cannot be read (%s): ignoring it", path, exc)
        return None
    return value if isinstance(value, dict) else None


def _read_summary(path: Path) -> FinetuneSummary | None:
    """The finished run's summary, or None when there is none or it cannot be read (then the run
    resumes from its last checkpoint and writes it again)."""
    if not path.is_file():
        return None
    try:
        return FinetuneSummary.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValidationError) as exc:
        logger.warning("%s cannot be read (%s): finishing the run again from its last checkpoint", path, exc)
        return None


class FinetuneConfig(BaseModel):
    """Hyper-parameters of a LoRA SFT run (ms-swift argument names in the descriptions)."""

    model_config = ConfigDict(extra="forbid")

    lora_rank: int = Field(default=8, ge=1, le=1024, description="LoRA rank r (--lora_rank).")
    lora_alpha: float = Field(default=32.0, gt=0, description="LoRA scaling alpha (--lora_alpha).")
    lora_dropout: float = Field(
        default=0.05, ge=0, lt=1, description="Dropout on the LoRA input (--lora_dropout)."
    )
    target_modules: list[str] = Field(
        default_factory=lambda: ["all-linear"],
        description="Modules that get adapters: all-linear, all-attention, all-mlp or names like q_proj.",
    )
    learning_rate: float = Field(default=1e-4, gt=0, description="Peak learning rate (--learning_rate).")
    num_train_epochs: float = Field(default=3.0, gt=0, description="Epochs, when max_steps is not set.")
    max_steps: int | None = Field(
        default=None, ge=1, description="Optimizer steps; overrides num_train_epochs."
    )
    batch_size: int = Field(default=1, ge=1, description="Sequences per device per micro-batch.")
    gradient_accumulation_steps: int = Field(
        default=1, ge=1, description="Micro-batches per optimizer step (ms-swift's own default is 16)."
    )
    max_length: int | None = Field(
        default=None, ge=16, description="Max tokens per sample; None: the preset's."
    )
    packing: bool = Field(
        default=False, description="Pack samples into max_length sequences (needs FlashAttention)."
    )
    gradient_checkpointing: bool = Field(
        default=True, description="Recompute activations in backward (saves memory)."
    )
    warmup_ratio: float = Field(
        default=0.05, ge=0, lt=1, description="Share of steps spent warming up the LR."
    )
    lr_scheduler_type: str = Field(
        default="cosine", description="HF scheduler name (cosine, linear, constant...)."
    )
    weight_decay: float = Field(default=0.1, ge=0, description="AdamW weight decay.")
    logging_steps: int = Field(default=1, ge=1, description="Log the loss every N optimizer steps.")
    save_steps: int = Field(
        default=50, ge=1, description="Checkpoint (and validate) every N optimizer steps."
    )
    save_total_limit: int = Field(default=2, ge=1, description="Checkpoints kept on disk.")
    seed: int = Field(default=42, description="Seed of initialisation, shuffling and dropout.")
    merge_lora: bool = Field(
        default=False, description="Also write the base model with the adapter merged in."
    )
    device: DeviceRequest = Field(default="auto", description="auto: CUDA when available, else CPU.")
    attn_impl: str = Field(default="auto", description="auto, flash_attention_2 or sdpa.")
    system: str | None = Field(
        default=None, description="System prompt for samples without one; None: the preset's."
    )
    dataloader_num_workers: int = Field(default=0, ge=0, description="Data loader worker processes.")
    num_gpus: int | None = Field(
        default=None,
        ge=1,
        description="GPUs of this machine to train on, data-parallel (torchrun, as NPROC_PER_NODE=N "
        "swift sft); None: METHYL_DISTILL_GPUS from the environment, else 1.",
    )
    deepspeed: Literal["zero2", "zero3"] | None = Field(
        default=None, description="DeepSpeed ZeRO stage for several GPUs (--deepspeed); needs deepspeed."
    )

    @model_validator(mode="after")
    def _check(self) -> FinetuneConfig:
        resolve_target_modules(self.target_modules)
        if self.attn_impl not in ("auto", "flash_attention_2", "sdpa"):
            raise ValueError(f"attn_impl must be auto, flash_attention_2 or sdpa, not {self.attn_impl!r}")
        return self


class FinetuneSummary(BaseModel):
    """What a fine-tune produced: string paths (they cross process and deployment boundaries)."""

    model_config = ConfigDict(extra="forbid")

    output_directory: str
    adapter_path: str
    merged_model_path: str | None
    loss_curve_path: str
    training_log_path: str
    args_path: str
    preset: str
    base_model: str
    device: str
    torch_dtype: str
    attn_impl: str
    train_samples: int
    val_samples: int
    global_step: int
    first_train_loss: float | None
    final_train_loss: float | None
    final_eval_loss: float | None
    train_runtime_s: float | None
    trainable_parameters: str | None = Field(description="ms-swift's parameter summary of the PEFT model.")
    resumed_from: str | None
    tensorboard_path: str | None = Field(
        default=None, description="TensorBoard event files of the run: tensorboard --logdir <this>."
    )


class FinetuneOutputConflict(ValueError):
    """The output folder holds something that is not a fine-tune of ours."""


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest checkpoint that was written completely (trainer state and adapter weights present)."""
    if not checkpoints_dir.is_dir():
        return None
    complete: list[tuple[int, Path]] = []
    for child in checkpoints_dir.iterdir():
        match = _CHECKPOINT.match(child.name)
        if (
            match
            and not child.is_symlink()
            and (child / "trainer_state.json").is_file()
            and (child / "adapter_model.safetensors").is_file()
        ):
            complete.append((int(match.group(1)), child))
    return max(complete)[1] if complete else None


class LoraFinetuneRecipe:
    """One LoRA SFT run: `setup()` checks cheaply first, `train()` runs ms-swift, `save()` writes outputs."""

    def __init__(
        self,
        dataset_directory: Path,
        output_directory: Path,
        *,
        preset: str = "smollm2-135m",
        config: FinetuneConfig | None = None,
        cache_dir: Path | None = None,
        model_source: str | None = None,
        launch: LaunchPlan | None = None,
    ) -> None:
        self.dataset_directory = Path(dataset_directory)
        self.output_directory = Path(output_directory)
        self.preset = get_preset(preset)
        self.config = config or FinetuneConfig()
        self.cache_dir = cache_dir
        self.model_source = model_source
        # One process unless the caller's plan (the fine-tune task reads it from the environment) or
        # config.num_gpus asks for more: see methyl_distill/training/distributed_launch.py.
        self.launch = launch or LaunchPlan(nproc_per_node=self.config.num_gpus or 1)
        self.checkpoints_dir = self.output_directory / "checkpoints"
        self.summary_path = self.output_directory / "finetune_summary.json"
        self.request_path = self.output_directory / "finetune_request.json"
        self.train_file = self.dataset_directory / "train.jsonl"
        self.val_file = self.dataset_directory / "val.jsonl"
        self.model: ResolvedModel | None = None
        self.device: DeviceChoice | None = None
        self.train_samples = 0
        self.val_samples = 0
        self.resume_checkpoint: Path | None = None
        self.result: dict[str, Any] | None = None

    # ---- setup: cheap checks before any expensive work -------------------------------------------
    def setup(self) -> FinetuneSummary | None:
        """Validate data, device and output folder; resolve the model. Returns the summary if already done."""
        config = self.config
        self.train_samples = count_training_samples(self.train_file)
        if self.train_samples == 0:
            raise ValueError(f"{self.train_file}: no training samples")
        has_val = self.val_file.is_file() and self.val_file.stat().st_size > 0
        self.val_samples = count_training_samples(self.val_file) if has_val else 0
        self.device = choose_device(config.device, attn_impl=config.attn_impl)
        if config.packing and self.device.attn_impl != "flash_attention_2":
            raise ValueError(
                "packing needs FlashAttention 2 on a CUDA GPU (ms-swift packs with padding-free attention); "
                f"this run would use {self.device.attn_impl} on {self.device.device}: set packing false"
            )
        self._check_memory_fits()
        self._check_launch()
        report_targets()  # W&B configured where wandb is not installed fails here, before the model loads
        request = self._request()
        if self.request_path.is_file():
            previous = _read_json_object(self.request_path)
            if previous != request:
                changed = sorted(k for k in request if (previous or {}).get(k) != request[k]) or ["request"]
                kept = self._supersede_previous_run()
                logger.warning(
                    "%s held a fine-tune with a different %s: moved it to %s and starting afresh",
                    self.output_directory,
                    ", ".join(changed),
                    kept,
                )
            elif (summary := _read_summary(self.summary_path)) is not None:
                if not (Path(summary.adapter_path) / "adapter_model.safetensors").is_file():
                    raise FileNotFoundError(
                        f"{self.summary_path}: the finished run's adapter {summary.adapter_path} is gone; "
                        "delete the summary to save it again from the last checkpoint, or use a new directory"
                    )
                logger.info("Fine-tune in %s is already complete", self.output_directory)
                return summary
        elif self.output_directory.is_dir() and any(
            child.name != SUPERSEDED_DIR for child in self.output_directory.iterdir()
        ):
            raise FinetuneOutputConflict(
                f"{self.output_directory}: not empty and holds no fine-tune request; use an empty directory"
            )
        self.model = resolve_model(self.preset.name, cache_dir=self.cache_dir, model_source=self.model_source)
        if self.model.is_local:
            # Everything is on disk: never let ms-swift or transformers wait on a hub.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.resume_checkpoint = latest_checkpoint(self.checkpoints_dir)
        if self.resume_checkpoint is not None:
            logger.info("Resuming the interrupted fine-tune from %s", self.resume_checkpoint)
        self.output_directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.request_path, json.dumps(request, indent=2, sort_keys=True))
        return None

    def _supersede_previous_run(self) -> Path:
        """Move an earlier run's outputs into superseded/<UTC time>/ (nothing is deleted)."""
        from datetime import UTC, datetime

        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        destination = self.output_directory / SUPERSEDED_DIR / stamp
        destination.mkdir(parents=True)
        for child in list(self.output_directory.iterdir()):
            if child.name != SUPERSEDED_DIR:
                child.rename(destination / child.name)
        return destination

    def _request(self) -> dict[str, Any]:
        return {
            "preset": self.preset.name,
            "model_source": self.model_source,
            # How many GPUs share the work is not what is learnt: another count resumes the same run.
            "config": self.config.model_dump(mode="json", exclude={"num_gpus"}),
            "train_sha256": sha256_of_file(self.train_file),
            "val_sha256": sha256_of_file(self.val_file) if self.val_samples else None,
        }

    def _check_launch(self) -> None:
        """Refuse more training processes than GPUs, and DeepSpeed where it cannot run, before loading."""
        assert self.device is not None
        if not self.launch.writes_outputs:
            raise ValueError(
                f"NODE_RANK={self.launch.node_rank}: the fine-tune recipe runs on the rank-0 machine only; "
                "the other machines run torchrun on the arguments file it writes (docs/deployments.md)"
            )
        if self.device.device == "cuda":
            import torch

            visible = torch.cuda.device_count()
            if self.launch.nproc_per_node > visible:
                raise RuntimeError(
                    f"{self.launch.nproc_per_node} GPUs were asked for (num_gpus / METHYL_DISTILL_GPUS) but "
                    f"torch sees {visible} on this machine"
                )
        if self.config.deepspeed is not None:
            import importlib.util

            if self.device.device != "cuda":
                raise ValueError(f"deepspeed {self.config.deepspeed} needs CUDA GPUs; this run is on CPU")
            if importlib.util.find_spec("deepspeed") is None:
                raise ModuleNotFoundError(f"deepspeed {self.config.deepspeed} needs the deepspeed package")

    def _check_memory_fits(self) -> None:
        """Refuse a model whose weights alone would not fit in the CPU's memory (e.g. Mistral-7B in fp32)."""
        assert self.device is not None
        if self.device.device != "cpu":
            return
        params = count_parameters(ArchitectureShape.from_config(preset_config(self.preset.name))).total
        needed = params * 4 * 3  # fp32 weights, plus loading copies and activations
        total_ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if needed > total_ram:
            raise RuntimeError(
                f"the {self.preset.name} preset ({params / 1e9:.1f}B parameters) needs a CUDA GPU: "
                f"fine-tuning it on this CPU would need about {needed / 1024**3:.0f} GiB of "
                f"{total_ram / 1024**3:.0f} GiB memory"
            )

    def swift_arguments(self) -> dict[str, Any]:
        """The keyword arguments of ms-swift's `SftArguments` for this run."""
        assert self.model is not None and self.device is not None, "call setup() first"
        config, model, device = self.config, self.model, self.device
        steps_between_saves = config.save_steps
        arguments: dict[str, Any] = {
            "model": model.model,
            "model_type": model.swift_model_type,
            "use_hf": True,
            "tuner_type": "lora",
            "lora_rank": config.lora_rank,
            "lora_alpha": config.lora_alpha,
            "lora_dropout": config.lora_dropout,
            "target_modules": list(config.target_modules),
            "dataset": [str(self.train_file.resolve())],
            "val_dataset": [str(self.val_file.resolve())] if self.val_samples else [],
            "output_dir": str(self.checkpoints_dir.resolve()),
            "add_version": False,
            "learning_rate": config.learning_rate,
            "num_train_epochs": config.num_train_epochs,
            "max_steps": config.max_steps if config.max_steps is not None else -1,
            "per_device_train_batch_size": config.batch_size,
            "per_device_eval_batch_size": config.batch_size,
            "gradient_accumulation_steps": config.gradient_accumulation_steps,
            "max_length": config.max_length or self.preset.max_length,
            "packing": config.packing,
            "gradient_checkpointing": config.gradient_checkpointing,
            "warmup_ratio": config.warmup_ratio,
            "lr_scheduler_type": config.lr_scheduler_type,
            "weight_decay": config.weight_decay,
            "logging_steps": config.logging_steps,
            "save_strategy": "steps",
            "save_steps": steps_between_saves,
            "save_total_limit": config.save_total_limit,
            "eval_strategy": "steps" if self.val_samples else "no",
            "eval_steps": steps_between_saves,
            "seed": config.seed,
            "data_seed": config.seed,
            "torch_dtype": device.torch_dtype,
            "attn_impl": device.attn_impl,
            "system": config.system if config.system is not None else model.default_system,
            "dataloader_num_workers": config.dataloader_num_workers,
            "check_model": False,
            # TensorBoard event files in the run's folder; W&B too when configured (training/telemetry.py).
            "report_to": report_targets(),
            "logging_dir": str(tensorboard_directory(self.output_directory).resolve()),
        }
        if model.swift_template:
            arguments["template"] = model.swift_template
        if device.device == "cpu":
            arguments["use_cpu"] = True
        if config.deepspeed is not None:
            arguments["deepspeed"] = config.deepspeed
        if self.resume_checkpoint is not None:
            arguments["resume_from_checkpoint"] = str(self.resume_checkpoint.resolve())
        return arguments

    # ---- train ------------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        from swift import SftArguments, sft_main

        arguments = self.swift_arguments()
        logger.info(
            "LoRA fine-tune of %s on %s (%s, %s): %d train / %d val samples",
            self.preset.name,
            self.device.name if self.device else "?",
            arguments["torch_dtype"],
            arguments["attn_impl"],
            self.train_samples,
            self.val_samples,
        )
        # transformers reads it (ms-swift sets it only when unset: a later run in this process would
        # write into the first run's folder); launched processes inherit it.
        os.environ[TENSORBOARD_DIR_VARIABLE] = arguments["logging_dir"]
        if self.launch.distributed:
            logger.info(
                "Data-parallel over %d process(es) on each of %d machine(s)",
                self.launch.nproc_per_node,
                self.launch.nnodes,
            )
            self.result = run_distributed_sft(arguments, self.launch, self.output_directory / "launch")
        else:
            self.result = sft_main(SftArguments(**arguments))
        return self.result

    # ---- save -------------------------------------------------------------------------------------
    def save(self) -> FinetuneSummary:
        from methyl_distill.training.loss_plot import plot_loss_curve

        assert self.result is not None and self.model is not None and self.device is not None
        last = self.result.get("last_model_checkpoint")
        if not last or not Path(last).is_dir():
            raise RuntimeError(f"ms-swift reported no saved checkpoint (last_model_checkpoint={last!r})")
        adapter_dir = self.output_directory / "adapter"
        if adapter_dir.exists():
            shutil.rmtree(adapter_dir)
        adapter_dir.mkdir(parents=True)
        for name in ADAPTER_FILES:
            if (Path(last) / name).is_file():
                shutil.copy2(Path(last) / name, adapter_dir / name)
        log_history = self._full_log_history(Path(last))
        training_log = self.output_directory / "training_log.jsonl"
        atomic_write_text(training_log, "".join(json.dumps(entry) + "\n" for entry in log_history))
        loss_curve = plot_loss_curve(
            log_history,
            self.output_directory / "loss_curve.png",
            title=f"LoRA r={self.config.lora_rank} on {self.preset.name}",
        )
        merged = self._merge(adapter_dir) if self.config.merge_lora else None
        train_losses = [e["loss"] for e in log_history if isinstance(e.get("loss"), int | float)]
        eval_losses = [e["eval_loss"] for e in log_history if isinstance(e.get("eval_loss"), int | float)]
        runtime = next((e["train_runtime"] for e in reversed(log_history) if "train_runtime" in e), None)
        tensorboard = tensorboard_directory(self.output_directory)
        summary = FinetuneSummary(
            output_directory=str(self.output_directory.resolve()),
            adapter_path=str(adapter_dir.resolve()),
            merged_model_path=str(merged.resolve()) if merged else None,
            loss_curve_path=str(loss_curve.resolve()),
            training_log_path=str(training_log.resolve()),
            args_path=str((adapter_dir / "args.json").resolve()),
            preset=self.preset.name,
            base_model=self.model.model,
            device=self.device.name,
            torch_dtype=self.device.torch_dtype,
            attn_impl=self.device.attn_impl,
            train_samples=self.train_samples,
            val_samples=self.val_samples,
            global_step=int(self.result.get("global_step") or 0),
            first_train_loss=train_losses[0] if train_losses else None,
            final_train_loss=train_losses[-1] if train_losses else None,
            final_eval_loss=eval_losses[-1] if eval_losses else None,
            train_runtime_s=runtime,
            trainable_parameters=self.result.get("model_parameter_info"),
            resumed_from=str(self.resume_checkpoint.resolve()) if self.resume_checkpoint else None,
            tensorboard_path=str(tensorboard.resolve()) if tensorboard.is_dir() else None,
        )
        if summary.final_train_loss is not None and not math.isfinite(summary.final_train_loss):
            raise RuntimeError(f"training diverged: final loss {summary.final_train_loss}")
        atomic_write_text(self.summary_path, summary.model_dump_json(indent=2))
        return summary

    def _full_log_history(self, last_checkpoint: Path) -> list[dict[str, Any]]:
        """The whole run's log: a resumed run's trainer state carries the steps before the interruption."""
        history = list(self.result.get("log_history") or []) if self.result else []
        state_file = last_checkpoint / "trainer_state.json"
        if state_file.is_file():
            saved = json.loads(state_file.read_text(encoding="utf-8")).get("log_history") or []
            seen = {(e.get("step"), tuple(sorted(e))) for e in saved}
            history = saved + [e for e in history if (e.get("step"), tuple(sorted(e))) not in seen]
        return history

    def _merge(self, adapter_dir: Path) -> Path:
        from swift import ExportArguments, export_main

        merged_dir = self.output_directory / "merged"
        if merged_dir.exists():
            shutil.rmtree(merged_dir)
        assert self.device is not None
        export_main(
            ExportArguments(
                adapters=[str(adapter_dir.resolve())],
                merge_lora=True,
                output_dir=str(merged_dir.resolve()),
                torch_dtype=self.device.torch_dtype,
                use_hf=True,
            )
        )
        if not (merged_dir / "config.json").is_file():
            raise RuntimeError(f"{merged_dir}: ms-swift's merge wrote no model")
        return merged_dir

    def run(self) -> FinetuneSummary:
        done = self.setup()
        if done is not None:
            return done
        # Followed on the command's console, if one watches: phase, step of the total, loss.
        progress = TrainingLogProgress(self.checkpoints_dir / SWIFT_LOG_FILE)
        with reporting(progress):
            self.train()
            progress.phase = "saving"
            return self.save()


def finetune(
    dataset_directory: Path,
    output_directory: Path,
    *,
    preset: str = "smollm2-135m",
    config: FinetuneConfig | None = None,
    cache_dir: Path | None = None,
    model_source: str | None = None,
    launch: LaunchPlan | None = None,
) -> FinetuneSummary:
    """Fine-tune `preset` with LoRA on the dataset folder's train.jsonl (and val.jsonl), on one process
    or data-parallel as `launch` (default: `config.num_gpus` processes on this machine) says."""
    recipe = LoraFinetuneRecipe(
        dataset_directory,
        output_directory,
        preset=preset,
        config=config,
        cache_dir=cache_dir,
        model_source=model_source,
        launch=launch,
    )
    return recipe.run()
