"""A tiny, random-initialised Mistral made locally: the real code path of fine-tuning without a download.

`make_tiny_mistral` writes a Hugging Face model folder that ms-swift loads with `--model_type mistral`:
a `MistralConfig` with the features that matter for the student (grouped-query attention with fewer KV
heads than heads, RoPE, a sliding window, untied embeddings), random weights, and a byte-level BPE
tokenizer trained in well under a second with `tokenizers` on a small built-in corpus. The tokenizer
carries Mistral's special tokens (`<s>`, `</s>`, `<unk>`) and Mistral-Instruct's chat template, so
`apply_chat_template` and ms-swift's `[INST] ... [/INST]` templates both work.

The folder is a cache: a complete folder made with the same settings is reused as it is; the folder
is written under a temporary name and renamed into place, so a crash never leaves a half-written
model that a later call would mistake for a complete one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Written last: its presence (with matching settings) marks a complete folder.
COMPLETE_MARKER = ".tiny-mistral-complete.json"
FORMAT_VERSION = 1

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
# Mistral-Instruct's prompt delimiters as single added tokens, so prompts stay short for a tiny model.
INSTRUCTION_TOKENS = ("[INST]", "[/INST]")

# Mistral-7B-Instruct's chat template (v0.3 style): an optional system message is put before the
# first user turn; assistant turns end with the end-of-sequence token.
MISTRAL_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}"
    "{%- else %}{%- set loop_messages = messages %}{%- endif %}"
    "{{- bos_token }}"
    "{%- for message in loop_messages %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if loop.first and system_message is defined %}"
    "{{- '[INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}"
    "{%- else %}{{- '[INST] ' + message['content'] + ' [/INST]' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}"
    "{{- ' ' + message['content'] + eos_token }}"
    "{%- else %}{{- raise_exception('Only system, user and assistant roles are supported.') }}"
    "{%- endif %}"
    "{%- endfor %}"
)

# Text the tokenizer is trained on: the vocabulary of our domain, so the tiny model's sequences stay short.
_CORPUS = (
    "DNA methylation at CpG islands in gene promoters silences tumour suppressor genes.",
    "Promoter hypermethylation of MGMT predicts response to temozolomide in glioblastoma.",
    "SEPT9 methylation in plasma cell-free DNA is used for colorectal cancer screening.",
    "The probe cg05575921 in AHRR is hypomethylated in smokers compared with non-smokers.",
    "Methylation-specific PCR, pyrosequencing and bisulfite sequencing measure CpG methylation.",
    "Sensitivity was 0.72 and specificity 0.91 with an area under the curve of 0.85 in 300 patients.",
    "GSTP1 hypermethylation is a diagnostic marker of prostate cancer in tissue and urine.",
    "MLH1 promoter methylation causes microsatellite instability in colorectal and endometrial tumours.",
    "Hypomethylation of LINE-1 repeats reflects global loss of methylation in cancer genomes.",
    "SHOX2 and PTGER4 methylation in bronchial lavage and plasma detect lung cancer.",
    "Which genes are hypermethylated? What assay was used? Which samples were studied?",
    "The marker was not reported in the paper. The study found no significant association.",
    "Answer the question about DNA methylation markers using the paper.",
    "You are an expert in epigenetics and DNA methylation biomarkers.",
    "cg00000029 cg16867657 cg22736354 cg06639320 cg24724428 chr6:1,378,000 exon 1 enhancer",
    'JSON: {"marker": "MGMT promoter", "gene": "MGMT", "direction": "hypermethylated"}',
    "Be brief. Give the gene symbol, the CpG sites, the direction of methylation and the clinical use.",
    "Hello! How are you? I am fine, thank you. Please explain the result in one sentence.",
    "The quick brown fox jumps over the lazy dog. 0123456789 + - * / = < > ( ) [ ] { } , . ; : ! ?",
)


def tiny_mistral_settings(
    *,
    seed: int = 0,
    vocab_size: int = 1024,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    sliding_window: int = 256,
    max_position_embeddings: int = 2048,
) -> dict[str, int]:
    """The settings that define a tiny Mistral folder (stored in its completion marker)."""
    if num_attention_heads % num_key_value_heads != 0:
        raise ValueError(
            f"num_attention_heads ({num_attention_heads}) must be a multiple of "
            f"num_key_value_heads ({num_key_value_heads}) for grouped-query attention"
        )
    if hidden_size % num_attention_heads != 0:
        raise ValueError(
            f"hidden_size ({hidden_size}) must be divisible by num_attention_heads ({num_attention_heads})"
        )
    if vocab_size < 300:
        raise ValueError(f"vocab_size ({vocab_size}) must leave room for the 256 bytes and special tokens")
    return {
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "num_key_value_heads": num_key_value_heads,
        "sliding_window": sliding_window,
        "max_position_embeddings": max_position_embeddings,
    }


def is_complete_tiny_mistral(folder: Path, settings: dict[str, int] | None = None) -> bool:
    """True when `folder` holds a complete tiny Mistral (made with `settings`, when given)."""
    marker = folder / COMPLETE_MARKER
    if not marker.is_file():
        return False
    try:
        stored = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    needed = ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors")
    if not all((folder / name).is_file() for name in needed):
        return False
    return settings is None or stored == settings


def make_tiny_mistral(output_dir: Path, **settings_overrides: int) -> Path:
    """Write (or reuse) a random-initialised tiny Mistral with a locally trained tokenizer.

    `settings_overrides` are keyword arguments of `tiny_mistral_settings`. Returns `output_dir`. A
    complete folder made with the same settings is reused; one made with other
    settings is replaced. A non-empty folder that is not a tiny Mistral is never touched: that raises.
    """
    output_dir = Path(output_dir)
    settings = tiny_mistral_settings(**settings_overrides)
    if is_complete_tiny_mistral(output_dir, settings):
        logger.debug("Reusing the tiny Mistral in %s", output_dir)
        return output_dir
    if output_dir.exists():
        if not output_dir.is_dir():
            raise ValueError(f"{output_dir}: exists and is not a folder; cannot write a tiny Mistral there")
        ours = (output_dir / COMPLETE_MARKER).exists()
        if any(output_dir.iterdir()) and not ours:
            raise ValueError(
                f"{output_dir}: a non-empty folder that is not a tiny Mistral made by methyl-distill; "
                "choose an empty or new folder"
            )
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the model folder is an ordinary readable folder
    try:
        _write_tiny_mistral(staging, settings)
        (staging / COMPLETE_MARKER).write_text(json.dumps(settings, sort_keys=True), encoding="utf-8")
        if output_dir.exists():
            shutil.rmtree(output_dir)
        try:
            os.rename(staging, output_dir)
        except OSError:
            # Another process finished the same folder first: theirs is as good as ours.
            if not is_complete_tiny_mistral(output_dir, settings):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("Wrote a tiny Mistral (%s) to %s", _describe(settings), output_dir)
    return output_dir


def _describe(settings: dict[str, int]) -> str:
    return (
        f"{settings['num_hidden_layers']} layers, hidden {settings['hidden_size']}, "
        f"{settings['num_attention_heads']} heads / {settings['num_key_value_heads']} KV heads, "
        f"vocab {settings['vocab_size']}, sliding window {settings['sliding_window']}"
    )


def _write_tiny_mistral(folder: Path, settings: dict[str, int]) -> None:
    import torch
    from transformers import MistralForCausalLM

    tokenizer = build_tokenizer(settings["vocab_size"])
    tokenizer.save_pretrained(folder)
    if len(tokenizer) > settings["vocab_size"]:
        raise RuntimeError(
            f"the tokenizer has {len(tokenizer)} tokens, more than vocab_size {settings['vocab_size']}"
        )
    config = tiny_mistral_config(
        settings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    # Seeded from a private generator so the weights depend on `seed` only, not on global RNG state.
    fork_devices: list[Any] = []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(settings["seed"])
        model = MistralForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder, safe_serialization=True)


def tiny_mistral_config(settings: dict[str, int] | None = None, **extra: Any) -> Any:
    """The `MistralConfig` of a tiny Mistral made with `settings` (the defaults when None)."""
    from transformers import MistralConfig

    settings = settings or tiny_mistral_settings()
    # A dict: transformers 5 no longer declares rope_theta / torch_dtype as keywords, but accepts them.
    arguments: dict[str, Any] = dict(
        vocab_size=settings["vocab_size"],
        hidden_size=settings["hidden_size"],
        intermediate_size=settings["intermediate_size"],
        num_hidden_layers=settings["num_hidden_layers"],
        num_attention_heads=settings["num_attention_heads"],
        num_key_value_heads=settings["num_key_value_heads"],
        head_dim=settings["hidden_size"] // settings["num_attention_heads"],
        max_position_embeddings=settings["max_position_embeddings"],
        sliding_window=settings["sliding_window"],
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        hidden_act="silu",
        tie_word_embeddings=False,
        **extra,
    )
    return MistralConfig(**arguments)


def build_tokenizer(vocab_size: int) -> Any:
    """A byte-level BPE tokenizer with Mistral's special tokens and chat template.

    Returns a `PreTrainedTokenizerFast`; `vocab_size` bounds its size (added tokens included).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(INSTRUCTION_TOKENS),
        special_tokens=[UNK, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=1,
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(_CORPUS) * 4, trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS)
    # Like Llama/Mistral tokenizers: a plain `encode` starts with <s>.
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        # Mistral has no pad token; padding with </s> is what its fine-tuning recipes do.
        pad_token=EOS,
        model_max_length=1_000_000,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    fast.add_tokens(list(INSTRUCTION_TOKENS))
    fast.chat_template = MISTRAL_CHAT_TEMPLATE
    return fast
