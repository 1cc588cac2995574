"""Answers from the base or the tuned student: streaming chat and batch answers, greedy (temperature 0).

This is what `swift infer --adapters ADAPTER --infer_backend pt --temperature 0 --max_new_tokens 2048
--stream true` does, as a library: ms-swift's `TransformersEngine` loads the base model named in the
adapter's args.json, applies the adapter and the same chat template and system prompt as training.
Without an adapter the preset's base model answers through the same template (for evaluation).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from methyl_distill.training.chat_jsonl import read_chat_examples
from methyl_distill.training.presets import get_preset, resolve_model
from methyl_distill.training.runtime_device import DeviceRequest, choose_device

logger = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = 2048


def read_adapter_arguments(adapter_path: Path) -> dict[str, Any]:
    """ms-swift's args.json of a trained adapter: base model, model type, template, system prompt."""
    args_file = Path(adapter_path) / "args.json"
    if not (Path(adapter_path) / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter_path}: no adapter_config.json; not a LoRA adapter folder")
    if not args_file.is_file():
        raise FileNotFoundError(f"{args_file}: missing; the adapter does not name its base model")
    arguments = json.loads(args_file.read_text(encoding="utf-8"))
    if not arguments.get("model"):
        raise ValueError(f"{args_file}: names no base model")
    return dict(arguments)


class ChatModel:
    """A loaded model that answers chat messages greedily, whole or streamed."""

    def __init__(self, engine: Any, *, label: str, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> None:
        self.engine = engine
        self.label = label
        self.max_new_tokens = max_new_tokens

    def _request_config(self, *, stream: bool, max_new_tokens: int | None) -> Any:
        from swift import RequestConfig

        return RequestConfig(
            max_tokens=max_new_tokens or self.max_new_tokens, temperature=0.0, stream=stream, seed=0
        )

    def stream(
        self, messages: Sequence[dict[str, str]], *, max_new_tokens: int | None = None
    ) -> Iterator[str]:
        """The answer to `messages`, piece by piece as it is generated."""
        from swift import InferRequest

        request = InferRequest(messages=[dict(m) for m in messages])
        config = self._request_config(stream=True, max_new_tokens=max_new_tokens)
        (generator,) = self.engine.infer([request], config, use_tqdm=False)
        for chunk in generator:
            if chunk is None or not chunk.choices:
                continue
            delta = chunk.choices[0].delta.content
            if delta:
                yield delta

    def answer(self, messages: Sequence[dict[str, str]], *, max_new_tokens: int | None = None) -> str:
        return self.answer_many([messages], max_new_tokens=max_new_tokens)[0]

    def answer_many(
        self, conversations: Sequence[Sequence[dict[str, str]]], *, max_new_tokens: int | None = None
    ) -> list[str]:
        """Greedy answers to many conversations (batched by the engine's max_batch_size)."""
        from swift import InferRequest

        if not conversations:
            return []
        requests = [InferRequest(messages=[dict(m) for m in messages]) for messages in conversations]
        config = self._request_config(stream=False, max_new_tokens=max_new_tokens)
        responses = self.engine.infer(requests, config, use_tqdm=len(requests) > 1)
        return [str(response.choices[0].message.content or "") for response in responses]


def load_chat_model(
    *,
    adapter_path: Path | None = None,
    preset: str | None = None,
    cache_dir: Path | None = None,
    model_source: str | None = None,
    device: DeviceRequest = "auto",
    system: str | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    max_batch_size: int = 8,
    base_only: bool = False,
) -> ChatModel:
    """The tuned model (`adapter_path`) or a preset's base model, ready to answer.

    With an adapter, model, template and system prompt come from its args.json, as ms-swift's infer does;
    `base_only` loads that same base model, template and system prompt without the adapter (the fair
    baseline). `system` overrides the system prompt for prompts that carry none.
    """
    import torch
    from swift import TransformersEngine

    choice = choose_device(device)
    engine_kwargs: dict[str, Any] = {
        "torch_dtype": getattr(torch, choice.torch_dtype),
        "attn_impl": choice.attn_impl,
        "use_hf": True,
        "max_batch_size": max_batch_size,
        "device_map": "cpu" if choice.device == "cpu" else None,
    }
    if adapter_path is not None:
        arguments = read_adapter_arguments(Path(adapter_path))
        base_model = str(arguments["model"])
        if Path(base_model).is_absolute() and not Path(base_model).exists():
            raise FileNotFoundError(f"{adapter_path}/args.json: its base model {base_model} no longer exists")
        engine = TransformersEngine(
            base_model,
            adapters=[] if base_only else [str(Path(adapter_path).resolve())],
            model_type=arguments.get("model_type"),
            template_type=arguments.get("template"),
            **engine_kwargs,
        )
        default_system = arguments.get("system")
        label = f"base ({Path(base_model).name})" if base_only else f"tuned ({Path(base_model).name} + LoRA)"
    else:
        if preset is None:
            raise ValueError("give an adapter path or a model preset")
        resolved = resolve_model(preset, cache_dir=cache_dir, model_source=model_source)
        engine = TransformersEngine(
            resolved.model,
            model_type=resolved.swift_model_type,
            template_type=resolved.swift_template,
            **engine_kwargs,
        )
        default_system = get_preset(preset).default_system
        label = f"base ({preset})"
    chosen_system = system if system is not None else default_system
    if chosen_system is not None:
        engine.template.template_meta.default_system = chosen_system
    logger.info("Loaded %s on %s (%s)", label, choice.name, choice.torch_dtype)
    return ChatModel(engine, label=label, max_new_tokens=max_new_tokens)


def interactive_chat(
    model: ChatModel,
    *,
    read_line: Callable[[str], str] = input,
    output: TextIO = sys.stdout,
    system: str | None = None,
) -> int:
    """A streaming chat loop: `/reset` clears the history, `/exit` (or end of input) leaves. Returns turns."""
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    turns = 0
    output.write(f"Chatting with the {model.label} model. /reset clears the history, /exit leaves.\n")
    while True:
        try:
            line = read_line("<<< ").strip()
        except EOFError:
            output.write("\n")
            return turns
        if not line:
            continue
        if line == "/exit":
            return turns
        if line == "/reset":
            history = history[:1] if system else []
            output.write("(history cleared)\n")
            continue
        history.append({"role": "user", "content": line})
        output.write(">>> ")
        pieces: list[str] = []
        for piece in model.stream(history):
            pieces.append(piece)
            output.write(piece)
            output.flush()
        output.write("\n")
        history.append({"role": "assistant", "content": "".join(pieces)})
        turns += 1


def answer_questions_file(
    model: ChatModel,
    questions_path: Path,
    output_path: Path,
    *,
    max_new_tokens: int | None = None,
) -> int:
    """Answer every line of a chat or question JSONL; write one JSON line per question. Returns the count.

    Output lines: `{"line", "question", "messages", "answer", "reference"}` (reference when the input
    line ends with an assistant message).
    """
    examples = read_chat_examples(Path(questions_path))
    answers = model.answer_many([example.prompt for example in examples], max_new_tokens=max_new_tokens)
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    staging = output_path.with_name(output_path.name + ".partial")
    with staging.open("w", encoding="utf-8") as handle:
        for example, answer in zip(examples, answers, strict=True):
            row = {
                "line": example.line,
                "question": example.question,
                "messages": example.prompt,
                "answer": answer,
                "reference": example.reference,
            }
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    staging.replace(output_path)
    return len(examples)
