"""The GPU LoRA benchmark script, run at tiny size (on CPU here; bf16 on CUDA where there is a GPU)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_lora_mfu.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_lora_mfu", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_card_peaks() -> None:
    bench = load_bench()
    assert bench.card_peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert bench.card_peak_tflops("NVIDIA H200") == 989.4
    assert bench.card_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bench.card_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert bench.card_peak_tflops("Some Future Card") is None


def _run_tiny(tmp_path: Path) -> dict:
    bench = load_bench()
    out = tmp_path / "bench.json"
    code = bench.main(["--tiny", "--seq_len", "64", "--steps", "2", "--warmup", "1", "--json", str(out)])
    assert code == 0
    return json.loads(out.read_text())


@pytest.mark.slow
def test_tiny_benchmark_runs_and_reports(tmp_path: Path) -> None:
    report = _run_tiny(tmp_path)
    assert report["preset"] == "tiny-mistral" and report["seq_len"] == 64
    assert [r["gradient_checkpointing"] for r in report["results"]] == [True, False]
    for result in report["results"]:
        assert result["loss_finite"] and math.isfinite(result["final_loss"])
        assert result["tokens_per_second"] > 0
        assert 0 < result["mfu_lora_exact_vs_measured_matmul"] < result["mfu_6n_vs_measured_matmul"]
    flops = report["flops_per_token"]
    assert flops["model_6n"] > flops["required"] > flops["attention"] > 0


@pytest.mark.gpu
def test_tiny_benchmark_on_cuda(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    report = _run_tiny(tmp_path)
    assert report["dtype"] == "torch.bfloat16"
    assert all(r["peak_memory_gib"] > 0 for r in report["results"])
