"""Structured-output plumbing shared by the teacher client: schemas, instructions, JSON extraction.

`strict_json_schema` turns a pydantic model's schema into what OpenAI's strict json_schema mode
accepts (every object closed with `additionalProperties: false`, every property required, no
`default`s). The json_object mode carries the same schema inside the system prompt instead
(`with_schema_instruction`); the prompt-only mode carries an outline of it (`outline_instruction`:
no `$defs`, which small models copy into their answers), and `json_text` digs the JSON object out
of a reply that wraps it in code fences or prose, as models without an enforced format often do.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from pydantic import BaseModel

from methyl_distill.teacher.protocol import ChatMessage, OutputMode

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


def _outline(node: Any, root: dict[str, Any], last: Sequence[str], depth: int = 0) -> str:
    if depth > 32 or not isinstance(node, dict):
        return "value"
    while "$ref" in node and isinstance(node["$ref"], str) and node["$ref"].startswith("#/"):
        target: Any = root
        for part in node["$ref"][2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        node = target
    if "enum" in node or "const" in node:
        values = node["enum"] if "enum" in node else [node["const"]]
        return " | ".join(json.dumps(value) for value in values)
    for keyword in ("anyOf", "oneOf"):
        if keyword in node:
            return " | ".join(_outline(option, root, last, depth + 1) for option in node[keyword])
    kind = node.get("type")
    if isinstance(kind, list):
        return " | ".join(_outline({**node, "type": t}, root, last, depth + 1) for t in kind)
    if kind == "object" or "properties" in node:
        properties: dict[str, Any] = node.get("properties", {})
        names = sorted(properties, key=lambda name: name in last)
        members = (
            f"{json.dumps(name)}: {_outline(properties[name], root, last, depth + 1)}" for name in names
        )
        return "{" + ", ".join(members) + "}"
    if kind == "array":
        return f"[{_outline(node.get('items', {}), root, last, depth + 1)}, ...]"
    return str(kind) if kind in {"string", "number", "integer", "boolean", "null"} else "value"


def schema_outline(schema: dict[str, Any], last_properties: Sequence[str] = ()) -> str:
    """`schema` as one compact line of JSON with type names for values (`$ref`s inlined), e.g.
    `{"answers": [{"question_id": string, "gene": string | null}, ...]}`: what a model without
    structured outputs can follow, where the raw schema's `$defs` and `$ref`s invite small models
    to copy them into the answers. Keys named in `last_properties` come last in their object (as
    the grammar orders them, `teacher.grammar.GrammarLimits.last_properties`)."""
    return _outline(schema, schema, last_properties)


def outline_instruction(schema: dict[str, Any], last_properties: Sequence[str] = ()) -> str:
    """The prompt-mode counterpart of `schema_instruction`: the schema as an outline."""
    return (
        "Reply with a single JSON object, and nothing else, of this shape (the words string, number, "
        "integer stand for values of that type; [x, ...] is a list of x; every key is required; use null "
        "only where shown and the text says nothing):\n" + schema_outline(schema, last_properties)
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
