"""The tiny local Mistral: a real MistralConfig model with GQA and a sliding window, made and reused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from methyl_distill.training.tiny_mistral import COMPLETE_MARKER, make_tiny_mistral


def test_tiny_mistral_is_made_once_and_reused(tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    folder = make_tiny_mistral(tmp_path / "tiny")
    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == "mistral"
    assert config.num_key_value_heads < config.num_attention_heads
    assert config.sliding_window == 256
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert len(tokenizer) <= config.vocab_size
    text = tokenizer.apply_chat_template(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Which gene?"},
            {"role": "assistant", "content": "MGMT."},
        ],
        tokenize=False,
    )
    assert text == "<s>[INST] Be brief.\n\nWhich gene? [/INST] MGMT.</s>"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids) == text  # byte-level: nothing is lost

    weights = folder / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert make_tiny_mistral(tmp_path / "tiny") == folder
    assert weights.stat().st_mtime_ns == stamp  # reused, not rewritten

    make_tiny_mistral(tmp_path / "tiny", num_hidden_layers=3)  # other settings: rebuilt
    assert json.loads((folder / COMPLETE_MARKER).read_text())["num_hidden_layers"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tiny.")]  # no staging left behind


def test_same_seed_same_weights(tmp_path: Path) -> None:
    a = make_tiny_mistral(tmp_path / "a", seed=3)
    b = make_tiny_mistral(tmp_path / "b", seed=3)
    c = make_tiny_mistral(tmp_path / "c", seed=4)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()


def test_refuses_a_foreign_folder_and_bad_settings(tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a tiny Mistral"):
        make_tiny_mistral(foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="multiple of"):
        make_tiny_mistral(tmp_path / "bad", num_attention_heads=4, num_key_value_heads=3)
