"""Structured-output plumbing shared by the teacher client: schemas, instructions, JSON extraction.

`strict_json_schema` turns a pydantic model's schema into what OpenAI's strict json_schema mode
accepts (every object closed with `additionalProperties: false`, every property required, no
`default`s). The json_object and prompt-only modes carry the same schema inside the system prompt
instead (`with_schema_instruction`), and `json_text` digs the JSON object out of a reply that wraps
it in code fences or prose, as models without an enforced format often do.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from pydantic import BaseModel

from methyl_distill.teacher import ChatMessage, OutputMode

# Most to least strict: the order `auto` mode falls back in.
MODES: tuple[OutputMode, ...] = ("json_schema", "json_object", "prompt")

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n(.*?)\n?```", re.DOTALL)


def _close_objects(node: Any) -> Any:
    if isinstance(node, dict):
        node = {key: _close_objects(value) for key, value in node.items() if key != "default"}
        if node.get("type") == "object" or "properties" in node:
            node["additionalProperties"] = False
            node["required"] = list(node.get("properties", {}))
        return node
    if isinstance(node, list):
        return [_close_objects(item) for item in node]
    return node


@lru_cache(maxsize=64)
def _strict_schema_text(model: type[BaseModel]) -> str:
    return json.dumps(_close_objects(model.model_json_schema()))


def strict_json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema in the form OpenAI's strict structured outputs require (a fresh copy)."""
    return json.loads(_strict_schema_text(model))


def schema_instruction(schema: dict[str, Any]) -> str:
    return (
        "Reply with a single JSON object, and nothing else, that validates against this JSON schema "
        "(every property is required; use null where the schema allows it and the text says nothing):\n"
        + json.dumps(schema, separators=(",", ":"))
    )


def with_schema_instruction(messages: list[ChatMessage], instruction: str) -> list[ChatMessage]:
    """The messages with `instruction` appended to the system message (or a new one first)."""
    result = [dict(message) for message in messages]
    for message in result:
        if message.get("role") == "system":
            message["content"] = f"{message.get('content', '')}\n\n{instruction}"
            return result
    return [{"role": "system", "content": instruction}, *result]


def json_text(content: str) -> str:
    """The JSON object in a reply: the whole reply, a fenced block, or the outermost {...}."""
    stripped = content.strip()
    if stripped.startswith("{"):
        return stripped
    fenced = _FENCE.search(stripped)
    if fenced:
        return fenced.group(1).strip()
    start, end = stripped.find("{"), stripped.rfind("}")
    if start != -1 and end > start:
        return stripped[start : end + 1]
    return stripped
