"""LoRA training throughput and model FLOPs utilisation of the mistral-7b preset on one GPU.

Random-initialises Mistral-7B (the preset's exact config, bf16, on the GPU: no download), wraps it
with PEFT LoRA (what ms-swift trains) and times optimizer steps on full 4096-token sequences (the
shape packing produces), for each attention kernel available (PyTorch SDPA; FlashAttention 2 when
flash-attn is installed) with and without gradient checkpointing. Prints and writes as JSON:

- tokens per second and seconds per step;
- MFU against the card's dense bf16 peak (H100/H200 SXM: 989 TFLOP/s) and against a large bf16
  matmul measured on the same card, with FLOPs counted two ways:
    * `6N`: the usual MFU convention, 6 x non-embedding parameters + causal attention;
    * `LoRA-exact`: 4N + attention, since frozen weights need no weight gradients (the work done);
- peak GPU memory, next to the memory plan of `methyl-distill model-spec`.

    python bench/gpu_lora_mfu.py                 # the GPU benchmark, well under 10 minutes on an H100/H200
    python bench/gpu_lora_mfu.py --tiny          # tiny-mistral on CPU (or GPU): checks the script itself

At sequence lengths up to the sliding window (4096) Mistral's window masks nothing, so it is switched
off for SDPA by default: transformers otherwise builds an explicit mask at length >= window, which
keeps SDPA off its flash kernel (`--keep_sliding_window` measures that slower path).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from methyl_distill.training.model_spec import (
    ALL_LINEAR,
    GIB,
    ArchitectureShape,
    count_lora_parameters,
    count_parameters,
    plan_memory,
    training_flops_per_token,
)
from methyl_distill.training.presets import preset_config

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, by a substring of torch's device name.
# More specific names first.
DENSE_BF16_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989.4),
    ("H200", 989.4),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),
    ("H800", 989.4),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.1),
    ("RTX 6000 Ada", 364.2),
    ("L40", 181.0),
    ("RTX 4090", 165.2),
    ("A6000", 154.8),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
)


def card_peak_tflops(device_name: str) -> float | None:
    for key, peak in DENSE_BF16_PEAK_TFLOPS:
        if key in device_name:
            return peak
    return None


def synchronize(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_tflops(device: Any, dtype: Any, size: int, seconds: float = 3.0) -> float:
    """Achieved TFLOP/s of repeated `size` x `size` matmuls: what this card really sustains."""
    import torch

    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        torch.matmul(a, b)
    synchronize(device)
    iterations, start = 0, time.perf_counter()
    while True:
        for _ in range(10):
            torch.matmul(a, b)
        iterations += 10
        synchronize(device)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    del a, b
    return 2 * size**3 * iterations / elapsed / 1e12


def build_lora_model(preset: str, device: Any, dtype: Any, rank: int, seed: int) -> tuple[Any, Any]:
    """The preset's architecture, random weights, LoRA on all linear layers (PEFT, as ms-swift uses)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    config = preset_config(preset)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.config.use_cache = False
    lora = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.05, target_modules=list(ALL_LINEAR))
    return get_peft_model(model, lora), config


def run_configuration(
    model: Any,
    *,
    device: Any,
    attn_impl: str,
    checkpointing: bool,
    sliding_window: int | None,
    batch: int,
    seq_len: int,
    vocab_size: int,
    warmup: int,
    steps: int,
) -> dict[str, Any]:
    import torch

    base = model.get_base_model()
    base.set_attn_implementation(attn_impl)
    base.config.sliding_window = sliding_window
    if checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_disable()
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, fused=device.type == "cuda")
    generator = torch.Generator(device="cpu").manual_seed(0)
    input_ids = torch.randint(0, vocab_size, (batch, seq_len), generator=generator).to(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    losses: list[float] = []

    def step() -> None:
        loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))

    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {
        "attn_impl": attn_impl,
        "gradient_checkpointing": checkpointing,
        "sliding_window": sliding_window,
        "seconds_per_step": elapsed / steps,
        "tokens_per_second": batch * seq_len * steps / elapsed,
        "peak_memory_gib": None if peak is None else peak / GIB,
        "final_loss": losses[-1],
        "loss_finite": all(math.isfinite(x) for x in losses),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tiny", action="store_true", help="tiny-mistral (CPU when no GPU): a quick self-check."
    )
    parser.add_argument("--seq_len", type=int, default=None, help="Tokens per sequence (4096; tiny: 128).")
    parser.add_argument("--batch", type=int, default=1, help="Sequences per step (default 1).")
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank on all linear layers (default 16).")
    parser.add_argument(
        "--steps", type=int, default=None, help="Timed steps per configuration (10; tiny: 3)."
    )
    parser.add_argument("--warmup", type=int, default=None, help="Untimed steps first (3; tiny: 1).")
    parser.add_argument(
        "--attn", nargs="+", default=None, help="Kernels: sdpa flash_attention_2 (default all)."
    )
    parser.add_argument(
        "--checkpointing", choices=("both", "on", "off"), default="both", help="Gradient checkpointing runs."
    )
    parser.add_argument("--keep_sliding_window", action="store_true", help="Keep the window even when inert.")
    parser.add_argument(
        "--peak_tflops", type=float, default=None, help="Override the card's dense bf16 peak."
    )
    parser.add_argument(
        "--matmul_size", type=int, default=None, help="Matmul size for the measured peak (8192)."
    )
    parser.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    args = parser.parse_args(argv)

    import importlib.util

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        parser.error("no CUDA GPU: the full benchmark needs one (use --tiny to check the script on CPU)")
    preset = "tiny-mistral" if args.tiny else "mistral-7b"
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    seq_len = args.seq_len or (128 if args.tiny else 4096)
    steps = args.steps or (3 if args.tiny else 10)
    warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 3)
    kernels = args.attn or ["sdpa"] + (
        ["flash_attention_2"] if cuda and importlib.util.find_spec("flash_attn") else []
    )
    modes = {"both": [True, False], "on": [True], "off": [False]}[args.checkpointing]
    device_name = torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu"

    matmul_size = args.matmul_size or (8192 if cuda else 1024)
    measured = measure_matmul_tflops(device, dtype, matmul_size, seconds=3.0 if cuda else 1.0)
    peak = args.peak_tflops or (card_peak_tflops(device_name) if cuda else None)
    print(
        f"Device {device_name}: measured {measured:.1f} TFLOP/s on a {matmul_size}^3 {dtype} matmul; ", end=""
    )
    print(f"dense bf16 peak {peak} TFLOP/s" if peak else "no known peak for this device")

    started = time.perf_counter()
    model, config = build_lora_model(preset, device, dtype, args.rank, seed=0)
    shape = ArchitectureShape.from_config(config)
    print(
        f"Built {preset} ({count_parameters(shape).total:,} parameters, "
        f"LoRA r={args.rank}: {count_lora_parameters(shape, args.rank, ['all-linear']):,} trainable) "
        f"in {time.perf_counter() - started:.1f} s"
    )
    flops = training_flops_per_token(shape, seq_len, lora=True)
    inert_window = config.sliding_window is not None and seq_len <= config.sliding_window
    results: list[dict[str, Any]] = []
    for attn_impl in kernels:
        for checkpointing in modes:
            window = config.sliding_window if (args.keep_sliding_window or not inert_window) else None
            try:
                result = run_configuration(
                    model,
                    device=device,
                    attn_impl=attn_impl,
                    checkpointing=checkpointing,
                    sliding_window=window,
                    batch=args.batch,
                    seq_len=seq_len,
                    vocab_size=shape.vocab_size,
                    warmup=warmup,
                    steps=steps,
                )
            except torch.OutOfMemoryError:
                result = {
                    "attn_impl": attn_impl,
                    "gradient_checkpointing": checkpointing,
                    "error": "out of memory",
                }
                model.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
            if "tokens_per_second" in result:
                achieved_6n = result["tokens_per_second"] * flops["model_6n"] / 1e12
                achieved_exact = result["tokens_per_second"] * flops["required"] / 1e12
                result.update(
                    {
                        "model_tflops_6n": achieved_6n,
                        "model_tflops_lora_exact": achieved_exact,
                        "mfu_6n_vs_peak": achieved_6n / peak if peak else None,
                        "mfu_lora_exact_vs_peak": achieved_exact / peak if peak else None,
                        "mfu_6n_vs_measured_matmul": achieved_6n / measured,
                        "mfu_lora_exact_vs_measured_matmul": achieved_exact / measured,
                        "planned_memory_gib": plan_memory(
                            shape,
                            lora_rank=args.rank,
                            targets=["all-linear"],
                            max_length=seq_len,
                            batch_size=args.batch,
                            gradient_checkpointing=checkpointing,
                            weight_dtype="bfloat16" if cuda else "float32",
                        ).total_gib,
                    }
                )
            results.append(result)
            print(format_result(result), flush=True)
    if not cuda:
        print(f"Peak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2:.2f} GiB")
    report = {
        "preset": preset,
        "device": device_name,
        "dtype": str(dtype),
        "seq_len": seq_len,
        "batch": args.batch,
        "lora_rank": args.rank,
        "steps": steps,
        "flops_per_token": flops,
        "measured_matmul_tflops": measured,
        "peak_tflops": peak,
        "results": results,
        "wall_seconds": time.perf_counter() - started,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0 if all(r.get("loss_finite") for r in results) else 1


def format_result(result: dict[str, Any]) -> str:
    label = f"{result['attn_impl']:<18} checkpointing {'on ' if result['gradient_checkpointing'] else 'off'}"
    if "error" in result:
        return f"{label}: {result['error']}"

    def percent(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f}%"

    memory = "n/a" if result["peak_memory_gib"] is None else f"{result['peak_memory_gib']:.1f} GiB"
    return (
        f"{label}: {result['tokens_per_second']:,.0f} tok/s, {result['seconds_per_step']:.3f} s/step | "
        f"MFU 6N {percent(result['mfu_6n_vs_peak'])} of peak, "
        f"{percent(result['mfu_6n_vs_measured_matmul'])} of matmul | "
        f"LoRA-exact {percent(result['mfu_lora_exact_vs_peak'])} of peak, "
        f"{percent(result['mfu_lora_exact_vs_measured_matmul'])} of matmul | "
        f"peak memory {memory} (plan {result['planned_memory_gib']:.1f} GiB)"
    )


if __name__ == "__main__":
    sys.exit(main())
