"""The device, dtype and attention kernel of a run: CUDA, bf16, FlashAttention 2 or SDPA; else CPU, fp32."""

from __future__ import annotations

import importlib.util
from typing import Literal

from pydantic import BaseModel, ConfigDict

DeviceRequest = Literal["auto", "cuda", "cpu"]


class DeviceChoice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    device: Literal["cuda", "cpu"]
    torch_dtype: Literal["bfloat16", "float16", "float32"]
    attn_impl: Literal["flash_attention_2", "sdpa"]
    name: str


def flash_attention_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def choose_device(request: DeviceRequest = "auto", *, attn_impl: str = "auto") -> DeviceChoice:
    """Resolve `request` against the hardware; raise when CUDA is asked for and absent."""
    import torch

    cuda = torch.cuda.is_available()
    if request == "cuda" and not cuda:
        raise RuntimeError("device 'cuda' was requested but torch sees no CUDA GPU")
    if request == "cpu" or not cuda:
        if attn_impl == "flash_attention_2":
            raise ValueError("FlashAttention 2 needs a CUDA GPU; use attn_impl 'sdpa' on CPU")
        return DeviceChoice(device="cpu", torch_dtype="float32", attn_impl="sdpa", name="cpu")
    dtype: Literal["bfloat16", "float16"] = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if attn_impl == "auto":
        chosen: Literal["flash_attention_2", "sdpa"] = (
            "flash_attention_2" if flash_attention_available() else "sdpa"
        )
    elif attn_impl == "flash_attention_2":
        if not flash_attention_available():
            raise ModuleNotFoundError("attn_impl 'flash_attention_2' needs the flash-attn package")
        chosen = "flash_attention_2"
    elif attn_impl == "sdpa":
        chosen = "sdpa"
    else:
        raise ValueError(f"unknown attention implementation {attn_impl!r}: use auto, flash_attention_2, sdpa")
    return DeviceChoice(
        device="cuda", torch_dtype=dtype, attn_impl=chosen, name=torch.cuda.get_device_name(0)
    )
