"""Parameter counts, LoRA sizes and memory plans, checked against models built on the meta device."""

from __future__ import annotations

import pytest

from methyl_distill.training.model_spec import (
    COMMON_GPUS,
    ArchitectureShape,
    build_model_spec,
    count_lora_parameters,
    count_parameters,
    fitting_gpus,
    format_model_spec,
    plan_memory,
    resolve_target_modules,
    training_flops_per_token,
)
from methyl_distill.training.presets import PRESET_NAMES, get_preset, preset_config

MISTRAL_7B_PUBLISHED = 7_241_732_096


def _meta_model(config):
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def test_mistral_7b_count_is_the_published_one() -> None:
    shape = ArchitectureShape.from_config(preset_config("mistral-7b"))
    assert (shape.num_attention_heads, shape.num_key_value_heads, shape.sliding_window) == (32, 8, 4096)
    assert count_parameters(shape).total == MISTRAL_7B_PUBLISHED


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_formula_matches_the_instantiated_model(preset: str) -> None:
    config = preset_config(preset)
    model = _meta_model(config)
    # Tied weights are one tensor: count unique parameters, as the published figures do.
    instantiated = sum(p.numel() for p in model.parameters())
    assert count_parameters(ArchitectureShape.from_config(config)).total == instantiated


def test_smollm2_matches_its_published_size() -> None:
    total = count_parameters(ArchitectureShape.from_config(preset_config("smollm2-135m"))).total
    assert total == 134_515_008


def test_lora_count_matches_peft() -> None:
    from peft import LoraConfig, get_peft_model

    config = preset_config("mistral-7b")
    shape = ArchitectureShape.from_config(config)
    for rank, targets in ((8, ["all-linear"]), (16, ["q_proj", "v_proj"]), (4, ["all-mlp"])):
        model = _meta_model(config)
        modules = list(resolve_target_modules(targets))
        peft_model = get_peft_model(model, LoraConfig(r=rank, target_modules=modules))
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        assert count_lora_parameters(shape, rank, targets) == trainable
    assert count_lora_parameters(shape, 8, ["all-linear"]) == 20_971_520


def test_target_modules_are_checked() -> None:
    assert resolve_target_modules(["all-attention", "q_proj"]) == ("q_proj", "k_proj", "v_proj", "o_proj")
    with pytest.raises(ValueError, match="unknown LoRA target module 'lm_head'"):
        resolve_target_modules(["lm_head"])
    with pytest.raises(ValueError, match="rank"):
        count_lora_parameters(ArchitectureShape.from_config(preset_config("tiny-mistral")), 0, ["all-linear"])


def test_memory_plan_for_mistral_7b() -> None:
    shape = ArchitectureShape.from_config(preset_config("mistral-7b"))
    common = {"lora_rank": 16, "targets": ["all-linear"], "max_length": 4096, "batch_size": 1}
    with_ckpt = plan_memory(shape, gradient_checkpointing=True, **common)
    without = plan_memory(shape, gradient_checkpointing=False, **common)
    assert with_ckpt.weights_bytes == MISTRAL_7B_PUBLISHED * 2
    assert with_ckpt.optimizer_bytes == count_lora_parameters(shape, 16, ["all-linear"]) * 8
    assert with_ckpt.activation_bytes * 4 < without.activation_bytes
    assert with_ckpt.total_bytes == sum(
        getattr(with_ckpt, name)
        for name in (
            "weights_bytes",
            "adapter_bytes",
            "optimizer_bytes",
            "activation_bytes",
            "logits_bytes",
            "runtime_overhead_bytes",
        )
    )
    # bf16 weights alone are 13.5 GiB: checkpointing fits a 24 GB card, 4k tokens without it do not.
    assert 14 < with_ckpt.total_gib < 22 * 0.9
    fit_names = [card.name for card in fitting_gpus(with_ckpt)]
    assert fit_names == [card.name for card in COMMON_GPUS]
    assert COMMON_GPUS[0].name not in [card.name for card in fitting_gpus(without)]
    assert COMMON_GPUS[-1].name in [card.name for card in fitting_gpus(without)]
    # Doubling the batch doubles activations and logits, nothing else.
    doubled = plan_memory(shape, gradient_checkpointing=False, **{**common, "batch_size": 2})
    assert doubled.activation_bytes == 2 * without.activation_bytes
    assert doubled.weights_bytes == without.weights_bytes


def test_training_flops() -> None:
    shape = ArchitectureShape.from_config(preset_config("mistral-7b"))
    flops = training_flops_per_token(shape, 4096, lora=True)
    non_embedding = count_parameters(shape).non_embedding
    assert flops["model_6n"] == pytest.approx(6 * non_embedding + flops["attention"])
    assert flops["required"] == pytest.approx(4 * non_embedding + flops["attention"])
    # At 4096 tokens with a 4096 window the mask is plain causal: mean span (S+1)/2.
    assert flops["attention"] == pytest.approx(12 * 32 * 4096 * (4096 + 1) / 2)
    longer = training_flops_per_token(shape, 8192, lora=True)["attention"]
    assert longer < 2 * flops["attention"]  # the sliding window caps the span


def test_spec_report_prints_the_numbers() -> None:
    shape = ArchitectureShape.from_config(preset_config("mistral-7b"))
    spec = build_model_spec("mistral-7b", shape, lora_rank=8, max_length=4096, batch_size=1)
    text = format_model_spec(spec)
    assert "7,241,732,096" in text
    assert "20,971,520" in text
    assert "KV heads 8" in text and "sliding window 4096" in text
    assert "fits with gradient checkpointing" in text
    assert spec.model_dump_json()


def test_presets() -> None:
    assert get_preset("mistral-7b").swift_model_type == "mistral"
    assert get_preset("smollm2-135m").swift_template == "chatml"
    with pytest.raises(ValueError, match="unknown model preset"):
        get_preset("gpt-5")


def test_local_mistral_folders_are_checked(tmp_path) -> None:
    import json

    from methyl_distill.training.presets import check_mistral_7b_folder, resolve_model

    folder = tmp_path / "mistral"
    folder.mkdir()
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        check_mistral_7b_folder(folder)
    config = preset_config("mistral-7b").to_dict()
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 30}))
    with pytest.raises(ValueError, match=r"num_hidden_layers 30 \(expected 32\)"):
        check_mistral_7b_folder(folder)
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "x.Y"}}))
    with pytest.raises(ValueError, match="custom model code"):
        check_mistral_7b_folder(folder)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(FileNotFoundError, match="no weight files"):
        check_mistral_7b_folder(folder)
    (folder / "model.safetensors").write_bytes(b"")
    resolved = resolve_model("mistral-7b", model_source=str(folder))
    assert resolved.is_local and resolved.model == str(folder.resolve())
    assert resolve_model("mistral-7b", model_source="org/some-mistral").model == "org/some-mistral"
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        resolve_model("mistral-7b", model_source="/nonexistent/mistral")
    with pytest.raises(ValueError, match="takes no model source"):
        resolve_model("tiny-mistral", model_source="x")
