"""The fine-tune and evaluate flows under the Prefect test harness, the CLI, and serving over HTTP."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from methyl_distill.cli import main
from methyl_distill.training.finetune import FinetuneConfig

QA = (
    ("Which gene is hypermethylated in glioblastoma?", "MGMT promoter hypermethylation."),
    ("Which probe is hypomethylated in smokers?", "cg05575921 in AHRR is hypomethylated."),
)


def write_chat_file(path: Path, pairs, repeat: int, system: str | None = "Be brief.") -> None:
    with path.open("w", encoding="utf-8") as handle:
        for _ in range(repeat):
            for question, answer in pairs:
                messages = [{"role": "system", "content": system}] if system else []
                messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
                handle.write(json.dumps({"messages": messages}) + "\n")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("flow-dataset")
    write_chat_file(folder / "train.jsonl", QA, repeat=8)
    write_chat_file(folder / "val.jsonl", QA[:1], repeat=1)
    write_chat_file(folder / "test.jsonl", QA[:2], repeat=1, system=None)
    return folder


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


def _config(**overrides) -> FinetuneConfig:
    values = {
        "max_steps": 3,
        "save_steps": 3,
        "learning_rate": 5e-3,
        "batch_size": 4,
        "max_length": 128,
        "gradient_checkpointing": False,
        "device": "cpu",
        "seed": 0,
    }
    values.update(overrides)
    return FinetuneConfig(**values)


def assert_merged_model_equals_base_plus_adapter(base: str, adapter: str, merged: str | None) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert merged is not None
    ids = torch.tensor([[1, 40, 41, 42, 43, 44]])
    with torch.no_grad():
        tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).eval()
        expected = tuned(input_ids=ids).logits
        untuned = AutoModelForCausalLM.from_pretrained(base).eval()(input_ids=ids).logits
        got = AutoModelForCausalLM.from_pretrained(merged).eval()(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-4)
    assert not torch.allclose(got, untuned, atol=1e-4)  # training moved the adapter off its zero start


async def _artifact(key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async with get_client() as client:
        found = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return found[0] if found else None


@pytest.mark.flow
def test_finetune_and_evaluate_flows(
    prefect_harness: None, dataset: Path, model_cache: Path, tmp_path: Path
) -> None:
    import asyncio

    from methyl_distill.flows.evaluate import evaluate_flow
    from methyl_distill.flows.finetune import finetune_flow

    summary = finetune_flow(
        dataset_directory=str(dataset),
        output_directory=str(tmp_path / "finetune"),
        preset="tiny-mistral",
        config=_config(merge_lora=True),
        cache_dir=str(model_cache),
    )
    assert summary.global_step == 3 and Path(summary.adapter_path, "adapter_model.safetensors").is_file()
    assert_merged_model_equals_base_plus_adapter(
        summary.base_model, summary.adapter_path, summary.merged_model_path
    )
    artifact = asyncio.run(_artifact("finetune-loss-curve"))
    assert artifact is not None and "data:image/png;base64," in artifact.data
    assert "final validation loss" in artifact.data

    evaluation = evaluate_flow(
        test_path=str(dataset / "test.jsonl"),
        adapter_path=summary.adapter_path,
        output_directory=str(tmp_path / "evaluation"),
        max_new_tokens=4,
        device="cpu",
    )
    assert evaluation.examples == 2 and Path(evaluation.report_markdown_path).is_file()
    report = asyncio.run(_artifact("evaluation-report"))
    assert report is not None and "## Side by side" in report.data


@pytest.mark.flow
def test_cli_finetune_infer_and_model_spec(
    prefect_harness: None,
    dataset: Path,
    model_cache: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(_config(max_steps=2, save_steps=2).model_dump(mode="json")))
    output = tmp_path / "cli-run"
    code = main(
        [
            "finetune",
            "--dataset_directory",
            str(dataset),
            "--output_directory",
            str(output),
            "--preset",
            "tiny-mistral",
            "--config",
            str(config_file),
            "--lora_rank",
            "4",
            "--cache_dir",
            str(model_cache),
        ]
    )
    assert code == 0
    assert json.loads((output / "adapter" / "adapter_config.json").read_text())["r"] == 4
    assert "Adapter:" in capsys.readouterr().out

    answers = tmp_path / "answers.jsonl"
    code = main(
        [
            "infer",
            "--adapter",
            str(output / "adapter"),
            "--questions",
            str(dataset / "test.jsonl"),
            "--output",
            str(answers),
            "--max_new_tokens",
            "4",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    assert len(answers.read_text().splitlines()) == 2

    assert main(["model-spec", "mistral-7b", "--rank", "8"]) == 0
    assert "7,241,732,096" in capsys.readouterr().out
    # A bad config file is a clean error naming the file, not a traceback.
    config_file.write_text("{not json")
    arguments = ["finetune", "--dataset_directory", str(dataset), "--output_directory", str(output)]
    assert main([*arguments, "--config", str(config_file)]) == 1
    assert str(config_file) in capsys.readouterr().err


@pytest.mark.integration
def test_serve_answers_over_openai_api(dataset: Path, model_cache: Path, tmp_path: Path) -> None:
    import openai

    from methyl_distill.training.finetune import finetune
    from methyl_distill.training.inference import load_chat_model
    from methyl_distill.training.serving import serve_adapter

    summary = finetune(
        dataset, tmp_path / "run", preset="tiny-mistral", config=_config(), cache_dir=model_cache
    )
    question = [{"role": "user", "content": QA[0][0]}]
    local = load_chat_model(adapter_path=Path(summary.adapter_path), device="cpu", max_new_tokens=6).answer(
        question
    )
    from pydantic import SecretStr

    key = "sk-serve-SENTINEL-3141"
    served = serve_adapter(Path(summary.adapter_path), device="cpu", max_new_tokens=6, api_key=SecretStr(key))
    with served as server:
        stranger = openai.OpenAI(base_url=server.base_url, api_key="not-the-key", max_retries=0)
        with pytest.raises(openai.APIStatusError):  # ms-swift refuses a request without the key
            stranger.chat.completions.create(model=server.model_name, messages=question, max_tokens=6)
        client = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)
        assert [m.id for m in client.models.list().data] == [server.model_name]
        reply = client.chat.completions.create(
            model=server.model_name, messages=question, temperature=0, max_tokens=6
        )
        assert reply.choices[0].message.content.strip() == local.strip()
        assert reply.usage is not None and reply.usage.completion_tokens <= 6
        group = server.process.pid
        assert key.encode() not in Path(f"/proc/{group}/cmdline").read_bytes()
    with pytest.raises(ProcessLookupError):
        os.killpg(group, 0)  # the server's whole process group is gone
    assert key not in server.log_path.read_text(errors="replace")  # ms-swift logs its arguments

    # The command line: serves until SIGTERM (or Ctrl-C), then stops the server's process group.
    import subprocess
    import sys

    import httpx

    from methyl_distill.training.serving import free_loopback_port

    port = free_loopback_port()
    entry = "import sys; from methyl_distill.cli import main; sys.exit(main())"
    command = [sys.executable, "-c", entry, "serve", "--adapter", summary.adapter_path]
    command += ["--port", str(port), "--device", "cpu"]
    cli = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert cli.stdout is not None
        banner = cli.stdout.readline()
        assert f"http://127.0.0.1:{port}/v1" in banner, banner
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).status_code == 200
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=60) == 0
    finally:
        if cli.poll() is None:
            cli.kill()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5)
