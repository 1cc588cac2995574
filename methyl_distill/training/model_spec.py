"""What a model costs: parameter counts computed from its config, LoRA sizes and a training memory plan.

Everything here is arithmetic on a config's shape (`ArchitectureShape`), so it runs without torch and
is checked in the tests against models instantiated on the meta device. The memory plan is an estimate
with its terms shown, not a measurement: `bench/gpu_lora_mfu.py` measures the real peak on a GPU.

Conventions: Llama/Mistral decoder blocks (RMSNorm, no biases, SwiGLU MLP, grouped-query attention),
bf16 frozen weights on GPU, LoRA adapters kept in fp32 (PEFT's default `autocast_adapter_dtype`),
AdamW with two fp32 moments, FlashAttention/SDPA kernels (no seq x seq attention matrix is stored).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

GIB = 1024**3

# The linear layers of a Llama/Mistral block, by the names PEFT's `target_modules` use.
ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")
ALL_LINEAR = ATTENTION_MODULES + MLP_MODULES

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}

# Memory the framework needs beside tensors: the CUDA context, cuBLAS/flash workspaces, allocator slack.
RUNTIME_OVERHEAD_BYTES = int(1.5 * GIB)
# Keep this share of a card free: the caching allocator fragments, and estimates are estimates.
FIT_HEADROOM = 0.90


class GpuCard(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    memory_gib: float = Field(description="Memory torch reports as total on the card, in GiB.")


# Common cards by memory size (GiB as `torch.cuda.get_device_properties(...).total_memory` reports them).
COMMON_GPUS: tuple[GpuCard, ...] = (
    GpuCard(name="24 GB (RTX 4090, L4, A10G)", memory_gib=22.0),
    GpuCard(name="40 GB (A100 40GB)", memory_gib=39.4),
    GpuCard(name="48 GB (L40S, RTX 6000 Ada, A6000)", memory_gib=44.4),
    GpuCard(name="80 GB (A100 80GB, H100 80GB)", memory_gib=79.1),
    GpuCard(name="141 GB (H200)", memory_gib=139.8),
)


class ArchitectureShape(BaseModel):
    """The numbers of a decoder-only Llama/Mistral-family config that its size depends on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    tie_word_embeddings: bool
    max_position_embeddings: int
    sliding_window: int | None = None
    rope_theta: float | None = None

    @classmethod
    def from_config(cls, config: Any) -> ArchitectureShape:
        """Read the shape from a transformers `PretrainedConfig` (Mistral, Llama, Qwen2-style)."""
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        rope_theta = getattr(config, "rope_theta", None)
        rope_parameters = getattr(config, "rope_parameters", None)
        if rope_theta is None and isinstance(rope_parameters, dict):
            rope_theta = rope_parameters.get("rope_theta")
        return cls(
            model_type=config.model_type,
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=heads,
            num_key_value_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
            max_position_embeddings=config.max_position_embeddings,
            sliding_window=getattr(config, "sliding_window", None),
            rope_theta=rope_theta,
        )

    @property
    def q_dim(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_dim

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each linear layer in one decoder block."""
        hidden, inter = self.hidden_size, self.intermediate_size
        return {
            "q_proj": (hidden, self.q_dim),
            "k_proj": (hidden, self.kv_dim),
            "v_proj": (hidden, self.kv_dim),
            "o_proj": (self.q_dim, hidden),
            "gate_proj": (hidden, inter),
            "up_proj": (hidden, inter),
            "down_proj": (inter, hidden),
        }


class ParameterCount(BaseModel):
    model_config = ConfigDict(extra="forbid")

    embedding: int
    per_layer_attention: int
    per_layer_mlp: int
    per_layer_norms: int
    layers: int
    final_norm: int
    lm_head: int
    total: int
    non_embedding: int = Field(description="Parameters that do matrix work per token (no embedding table).")


def count_parameters(shape: ArchitectureShape) -> ParameterCount:
    """Exact parameter count of a Llama/Mistral-family decoder (no biases, RMSNorm weights only)."""
    linears = shape.linear_shapes()
    attention = sum(i * o for name, (i, o) in linears.items() if name in ATTENTION_MODULES)
    mlp = sum(i * o for name, (i, o) in linears.items() if name in MLP_MODULES)
    norms = 2 * shape.hidden_size
    embedding = shape.vocab_size * shape.hidden_size
    lm_head = 0 if shape.tie_word_embeddings else embedding
    layers = shape.num_hidden_layers * (attention + mlp + norms)
    total = embedding + layers + shape.hidden_size + lm_head
    return ParameterCount(
        embedding=embedding,
        per_layer_attention=attention,
        per_layer_mlp=mlp,
        per_layer_norms=norms,
        layers=layers,
        final_norm=shape.hidden_size,
        lm_head=lm_head,
        total=total,
        # The output projection does matrix work per token even when tied; the embedding lookup does not.
        non_embedding=total - embedding + (embedding if shape.tie_word_embeddings else 0),
    )


def resolve_target_modules(targets: Iterable[str]) -> tuple[str, ...]:
    """Expand ms-swift's `all-linear` (and `all-attention` / `all-mlp`) into module names; check the rest."""
    resolved: list[str] = []
    for target in targets:
        if target == "all-linear":
            names: Sequence[str] = ALL_LINEAR
        elif target == "all-attention":
            names = ATTENTION_MODULES
        elif target == "all-mlp":
            names = MLP_MODULES
        elif target in ALL_LINEAR:
            names = (target,)
        else:
            raise ValueError(
                f"unknown LoRA target module {target!r}: use all-linear, all-attention, all-mlp "
                f"or names from {', '.join(ALL_LINEAR)}"
            )
        resolved.extend(name for name in names if name not in resolved)
    if not resolved:
        raise ValueError("no LoRA target modules given")
    return tuple(resolved)


def count_lora_parameters(shape: ArchitectureShape, rank: int, targets: Iterable[str]) -> int:
    """Trainable parameters of LoRA (A: rank x in, B: out x rank) on `targets` in every layer."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be at least 1, got {rank}")
    linears = shape.linear_shapes()
    per_layer = sum(rank * (linears[name][0] + linears[name][1]) for name in resolve_target_modules(targets))
    return shape.num_hidden_layers * per_layer


def training_flops_per_token(
    shape: ArchitectureShape, sequence_length: int, *, lora: bool
) -> dict[str, float]:
    """Matmul FLOPs per trained token, forward + backward.

    `model_6n` is the usual MFU convention (6 x non-embedding parameters: forward 2N, backward 4N);
    with LoRA the frozen weights need no weight gradients, so the work actually required is about 4N
    (`required`). Causal attention adds 12 x layers x seq x head_dim x heads / 2 per token (QK^T and
    AV, forward and backward, half the pairs masked); a sliding window caps the attended span.
    """
    params = count_parameters(shape)
    span = sequence_length if shape.sliding_window is None else min(sequence_length, shape.sliding_window)
    # Average attended keys per query under a causal mask (with a window: positions past it see `span`).
    if span >= sequence_length:
        mean_keys = (sequence_length + 1) / 2
    else:
        mean_keys = (span * (span + 1) / 2 + (sequence_length - span) * span) / sequence_length
    attention = 12 * shape.num_hidden_layers * shape.q_dim * mean_keys
    dense = params.non_embedding
    return {
        "model_6n": 6 * dense + attention,
        "required": (4 if lora else 6) * dense + attention,
        "attention": attention,
    }


class MemoryPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weights_bytes: int
    adapter_bytes: int = Field(description="LoRA weights and their gradients (fp32).")
    optimizer_bytes: int = Field(description="AdamW's two fp32 moments of the trainable parameters.")
    activation_bytes: int
    logits_bytes: int = Field(description="Logits and their fp32 loss copies for one micro-batch.")
    runtime_overhead_bytes: int
    total_bytes: int
    gradient_checkpointing: bool

    @property
    def total_gib(self) -> float:
        return self.total_bytes / GIB


def activation_elements_per_token_per_layer(shape: ArchitectureShape, *, lora_dropout: bool) -> int:
    """Tensor elements autograd keeps per token in one decoder block (no gradient checkpointing).

    Attention: block input and norm output, Q and K before and after RoPE, V, the attention output;
    MLP: block input and norm output, gate, up, SiLU(gate) and the product. LoRA dropout keeps a
    dropped-out copy of each adapted layer's input.
    """
    hidden, inter = shape.hidden_size, shape.intermediate_size
    attention = 2 * hidden + 2 * shape.q_dim + 2 * shape.kv_dim + shape.kv_dim + shape.q_dim
    mlp = 2 * hidden + 4 * inter
    dropout = 0
    if lora_dropout:
        dropout = sum(i for i, _ in shape.linear_shapes().values())
    return attention + mlp + dropout


def plan_memory(
    shape: ArchitectureShape,
    *,
    lora_rank: int,
    targets: Iterable[str],
    max_length: int,
    batch_size: int,
    gradient_checkpointing: bool,
    weight_dtype: str = "bfloat16",
    lora_dropout: bool = True,
) -> MemoryPlan:
    """Estimated peak GPU memory of LoRA fine-tuning at `max_length` tokens x `batch_size`."""
    if weight_dtype not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {weight_dtype!r}: use one of {', '.join(DTYPE_BYTES)}")
    if max_length < 1 or batch_size < 1:
        raise ValueError("max_length and batch_size must be positive")
    act_bytes = DTYPE_BYTES[weight_dtype]
    weights = count_parameters(shape).total * act_bytes
    trainable = count_lora_parameters(shape, lora_rank, targets)
    adapters = trainable * (4 + 4)  # fp32 weights + fp32 gradients
    optimizer = trainable * 8  # AdamW exp_avg + exp_avg_sq in fp32
    tokens = max_length * batch_size
    per_layer = activation_elements_per_token_per_layer(shape, lora_dropout=lora_dropout) * act_bytes * tokens
    if gradient_checkpointing:
        # Each block's input is kept; one block's activations are rebuilt at a time during backward.
        activations = shape.num_hidden_layers * shape.hidden_size * act_bytes * tokens + per_layer
    else:
        activations = shape.num_hidden_layers * per_layer
    # Logits in the model dtype, an fp32 copy for the loss and its fp32 gradient.
    logits = tokens * shape.vocab_size * (act_bytes + 4 + 4)
    total = weights + adapters + optimizer + activations + logits + RUNTIME_OVERHEAD_BYTES
    return MemoryPlan(
        weights_bytes=weights,
        adapter_bytes=adapters,
        optimizer_bytes=optimizer,
        activation_bytes=activations,
        logits_bytes=logits,
        runtime_overhead_bytes=RUNTIME_OVERHEAD_BYTES,
        total_bytes=total,
        gradient_checkpointing=gradient_checkpointing,
    )


def fitting_gpus(plan: MemoryPlan, cards: Sequence[GpuCard] = COMMON_GPUS) -> list[GpuCard]:
    """The cards whose memory holds `plan` with `FIT_HEADROOM` to spare."""
    return [card for card in cards if plan.total_bytes <= card.memory_gib * GIB * FIT_HEADROOM]


class ModelSpec(BaseModel):
    """Everything `methyl-distill model-spec` prints, as data."""

    model_config = ConfigDict(extra="forbid")

    preset: str
    shape: ArchitectureShape
    parameters: ParameterCount
    lora_rank: int
    lora_targets: tuple[str, ...]
    lora_parameters: int
    max_length: int
    batch_size: int
    plans: dict[str, MemoryPlan]
    fits: dict[str, list[str]]


def build_model_spec(
    preset: str,
    shape: ArchitectureShape,
    *,
    lora_rank: int = 8,
    targets: Sequence[str] = ("all-linear",),
    max_length: int = 4096,
    batch_size: int = 1,
    weight_dtype: str = "bfloat16",
) -> ModelSpec:
    resolved = resolve_target_modules(targets)
    plans: dict[str, MemoryPlan] = {}
    fits: dict[str, list[str]] = {}
    for label, checkpointing in (("gradient_checkpointing", True), ("no_gradient_checkpointing", False)):
        plan = plan_memory(
            shape,
            lora_rank=lora_rank,
            targets=resolved,
            max_length=max_length,
            batch_size=batch_size,
            gradient_checkpointing=checkpointing,
            weight_dtype=weight_dtype,
        )
        plans[label] = plan
        fits[label] = [card.name for card in fitting_gpus(plan)]
    return ModelSpec(
        preset=preset,
        shape=shape,
        parameters=count_parameters(shape),
        lora_rank=lora_rank,
        lora_targets=resolved,
        lora_parameters=count_lora_parameters(shape, lora_rank, resolved),
        max_length=max_length,
        batch_size=batch_size,
        plans=plans,
        fits=fits,
    )


def format_model_spec(spec: ModelSpec) -> str:
    """A plain-text report of `spec` for the terminal."""
    shape, params = spec.shape, spec.parameters
    per_layer = params.per_layer_attention + params.per_layer_mlp + params.per_layer_norms
    lines = [
        f"Preset {spec.preset}: {shape.model_type}",
        f"  layers {shape.num_hidden_layers}, hidden {shape.hidden_size}, "
        f"intermediate {shape.intermediate_size}",
        f"  attention heads {shape.num_attention_heads}, KV heads {shape.num_key_value_heads} "
        f"(grouped-query x{shape.num_attention_heads // shape.num_key_value_heads}), "
        f"head dim {shape.head_dim}",
        f"  vocab {shape.vocab_size}, max positions {shape.max_position_embeddings}, "
        f"sliding window {shape.sliding_window}, rope theta {shape.rope_theta}, "
        f"tied embeddings {shape.tie_word_embeddings}",
        "Parameters",
        f"  total            {params.total:>16,}",
        f"  embedding        {params.embedding:>16,}",
        f"  lm head          {params.lm_head:>16,}",
        f"  per layer        {per_layer:>16,}"
        f"  (attention {params.per_layer_attention:,}, MLP {params.per_layer_mlp:,})",
        f"LoRA rank {spec.lora_rank} on {', '.join(spec.lora_targets)}",
        f"  trainable        {spec.lora_parameters:>16,}  ({100 * spec.lora_parameters / params.total:.3f}%)",
        f"Memory plan: LoRA training, {spec.max_length} tokens x batch {spec.batch_size}, "
        "bf16 weights, AdamW",
    ]
    header = f"  {'':<26}{'checkpointing':>16}{'no checkpointing':>20}"
    lines.append(header)
    on, off = spec.plans["gradient_checkpointing"], spec.plans["no_gradient_checkpointing"]
    rows = (
        ("weights", "weights_bytes"),
        ("LoRA weights + grads", "adapter_bytes"),
        ("optimizer state", "optimizer_bytes"),
        ("activations", "activation_bytes"),
        ("logits + loss", "logits_bytes"),
        ("runtime overhead", "runtime_overhead_bytes"),
        ("total", "total_bytes"),
    )
    for label, field in rows:
        lines.append(
            f"  {label:<26}{getattr(on, field) / GIB:>12.2f} GiB{getattr(off, field) / GIB:>16.2f} GiB"
        )
    for label, key in (
        ("with gradient checkpointing", "gradient_checkpointing"),
        ("without", "no_gradient_checkpointing"),
    ):
        cards = spec.fits[key]
        lines.append(f"  fits {label}: {'; '.join(cards) if cards else 'none of the common cards'}")
    return "\n".join(lines)
