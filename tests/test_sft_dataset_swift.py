"""The real consumer: ms-swift fine-tunes a tiny local Mistral directly on the files the stage wrote."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from methyl_distill.sft_dataset import DatasetConfig, build_sft_dataset
from methyl_distill.sft_dataset.synthetic_records import write_synthetic_corpus

pytestmark = pytest.mark.slow


def test_ms_swift_sft_trains_on_the_produced_train_and_val_jsonl(tmp_path: Path) -> None:
    pytest.importorskip("swift")
    from methyl_distill.training.tiny_mistral import make_tiny_mistral

    model = make_tiny_mistral(tmp_path / "tiny-mistral")
    papers_dir, records_path = write_synthetic_corpus(tmp_path / "corpus", 20, seed=3)
    # Count tokens with the student's own tokenizer, as a real run would.
    config = DatasetConfig(student_tokenizer=str(model), max_length=1024)
    summary = build_sft_dataset([records_path], tmp_path / "dataset", papers_dir, config)
    assert summary.token_counting.startswith("student tokenizer")
    assert summary.splits["train"].samples > 0 and summary.splits["validation"].samples > 0

    swift = Path(sys.executable).with_name("swift")
    command = [
        str(swift),
        "sft",
        "--model", str(model),
        "--model_type", "mistral",
        "--check_model", "false",
        "--tuner_type", "lora",
        "--lora_rank", "4",
        "--target_modules", "all-linear",
        "--torch_dtype", "float32",
        "--dataset", summary.train_jsonl,  # the files exactly as written: no conversion
        "--val_dataset", summary.val_jsonl,
        "--max_length", str(config.max_length),
        "--max_steps", "2",
        "--per_device_train_batch_size", "1",
        "--per_device_eval_batch_size", "1",
        "--gradient_accumulation_steps", "1",
        "--gradient_checkpointing", "false",
        "--dataloader_num_workers", "0",
        "--dataset_num_proc", "1",
        "--eval_steps", "2",
        "--save_steps", "2",
        "--logging_steps", "1",
        "--report_to", "none",
        "--output_dir", str(tmp_path / "sft"),
    ]  # fmt: skip
    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=environment, check=False
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    checkpoints = list((tmp_path / "sft").glob("v*/checkpoint-2"))
    assert len(checkpoints) == 1 and (checkpoints[0] / "adapter_config.json").exists()
    log = [
        json.loads(line)
        for line in next((tmp_path / "sft").glob("v*/logging.jsonl")).read_text().splitlines()
    ]
    losses = [float(entry["loss"]) for entry in log if "loss" in entry]
    evaluations = [float(entry["eval_loss"]) for entry in log if "eval_loss" in entry]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    assert evaluations and math.isfinite(evaluations[0])


def test_tokenizer_counts_match_the_chat_template(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from methyl_distill.sft_dataset.sample_builder import Sample
    from methyl_distill.sft_dataset.sample_length import TokenizerTokenCounter
    from methyl_distill.training.tiny_mistral import make_tiny_mistral

    model = make_tiny_mistral(tmp_path / "tiny-mistral")
    counter = TokenizerTokenCounter(model)
    tokenizer = AutoTokenizer.from_pretrained(str(model), local_files_only=True)
    samples = [
        Sample("p", "f", "closed_book", "Which gene is methylated in glioblastoma?", "MGMT.", "x"),
        Sample(
            "p", "f", "grounded", "Excerpt: SEPT9 in plasma.\n\nQuestion: Which marker?", "SEPT9, 68%.", "y"
        ),
    ]
    for system_prompt in ("You are an expert in DNA methylation.", ""):
        counted = counter.count(samples, system_prompt)
        for sample, tokens in zip(samples, counted, strict=True):
            messages = [
                {"role": "user", "content": sample.user},
                {"role": "assistant", "content": sample.assistant},
            ]
            if system_prompt:
                messages.insert(0, {"role": "system", "content": system_prompt})
            expected = len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False))
            assert abs(tokens - expected) <= 1  # BPE merges across a message boundary may differ by one
    with pytest.raises(FileNotFoundError, match="student tokenizer folder not found"):
        TokenizerTokenCounter(tmp_path / "absent")
