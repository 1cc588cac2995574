"""JSON schema → GBNF grammar for llama.cpp's raw `grammar` request field.

llama.cpp's OpenAI-compatible server rejects `response_format={"type": "json_schema", ...}` but
accepts a GBNF grammar that constrains sampling token by token. Its own schema converter has two
pitfalls with small models (FACTS.md): its string rule `[^"\\]` admits raw control characters
(SmolLM2 then writes raw newlines inside strings: invalid JSON), and unbounded arrays let a model
repeat an item until `max_tokens` truncates the output. This converter therefore

- excludes control characters from strings (`[^"\\\x7f\x00-\x1f]`; escapes such as `\n` remain),
- bounds every array (`maxItems`, or the defaults when the schema sets none): a small model
  otherwise repeats an item until `max_tokens` cuts the JSON off; lists of scalars (evidence
  quotes, CpG ids...) get a tighter default than lists of objects,
- bounds the length of strings (`maxLength`, or the default) and the digits of numbers,
- allows at most one space (or, with whitespace "flexible", a newline and an indent) between
  tokens, so no output budget is spent on layout,
- resolves local `$ref`s (`#/$defs/...`, `#/definitions/...`, recursion included), nullable unions
  (`anyOf` with `null`, type lists, `nullable`), enums, `const` and pydantic `Literal`s.

Keywords that only narrow values inside a type (`pattern`, `format`, `minimum`, `maximum`,
`multipleOf`) are not enforced by the grammar: the output is still validated with pydantic.
Properties are emitted in schema order; properties outside `properties` are never generated.
The bounds are `GrammarLimits`, part of the teacher's configuration (`TeacherConfig.grammar`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["GrammarError", "GrammarLimits", "schema_to_gbnf"]

# The shared primitive rules. `char` is the important one: no raw control characters, no DEL.
_WHITESPACE = {"compact": '" "?', "flexible": '| " " | "\\n" [ \\t]{0,16}'}
_PRIMITIVES: dict[str, str] = {
    "ws": _WHITESPACE["compact"],
    "char": '[^"\\\\\\x7F\\x00-\\x1F] | "\\\\" (["\\\\/bfnrt] | "u" [0-9a-fA-F]{4})',
    "boolean": '"true" | "false"',
    "null": '"null"',
    "integer": '"-"? ("0" | [1-9] [0-9]{0,15})',
    "number": '"-"? ("0" | [1-9] [0-9]{0,15}) ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})?',
}
_PRIMITIVE_DEPENDENCIES: dict[str, tuple[str, ...]] = {"string": ("char",)}

_IGNORED_KEYWORDS = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "$schema",
        "$id",
        "$comment",
        "deprecated",
        "readOnly",
        "writeOnly",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "uniqueItems",
        "discriminator",
        "$defs",
        "definitions",
        "additionalProperties",
    }
)
_RULE_NAME = re.compile(r"[a-zA-Z0-9-]+")
_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_TYPES = ("string", "number", "integer", "boolean", "null", "object", "array")


class GrammarError(ValueError):
    """The schema uses something that cannot be turned into a grammar."""


class GrammarLimits(BaseModel):
    """Bounds the grammar puts on what the schema leaves open.

    None means unbounded. The defaults suit mid-sized local models; the embedded SmolLM2 teacher
    runs with tighter ones (`methyl_distill.teacher.llama_cpp_server`). From the environment they
    are the TEACHER_GRAMMAR_* variables (`methyl_distill.teacher.config`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_array_items: int | None = Field(
        default=16, ge=0, description="Items of an array of objects or arrays without maxItems."
    )
    max_scalar_array_items: int | None = Field(
        default=4,
        ge=0,
        description="Items of an array of strings, numbers, booleans or enums without maxItems.",
    )
    max_string_length: int | None = Field(
        default=400, ge=0, description="Characters of a string without maxLength."
    )
    whitespace: Literal["compact", "flexible"] = Field(
        default="compact",
        description="compact: at most one space between tokens; flexible: also a newline and a short indent.",
    )
    property_enums: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Restrict string properties of these names to these values, e.g. "
        '{"question_id": ["markers", "assays"]}: what the caller knows and the schema cannot say.',
    )
    property_max_items: dict[str, int] = Field(
        default_factory=dict,
        description='Items of the array properties of these names, e.g. {"answers": 6}; '
        "overrides the defaults.",
    )
    property_min_items: dict[str, int] = Field(
        default_factory=dict,
        description='Least items of the array properties of these names, e.g. {"evidence": 1}.',
    )
    last_properties: list[str] = Field(
        default_factory=list,
        description='Properties of these names come last in their object, e.g. ["answer"] so a model '
        "writes its evidence before the answer it supports (JSON objects are unordered: the schema "
        "still holds).",
    )
    verbatim_properties: list[str] = Field(
        default_factory=list,
        description='String properties (or lists of strings) of these names, e.g. ["evidence"], may only '
        "be quotes of the request's source text (its sentences or clauses) when a source text is given.",
    )
    symbol_properties: list[str] = Field(
        default_factory=list,
        description='String properties of these names, e.g. ["gene"], may only be symbol-like words of '
        "the request's source text (SEPT9, CDKN2A...) when a source text is given (null stays allowed).",
    )


def schema_to_gbnf(
    schema: dict[str, Any],
    limits: GrammarLimits | None = None,
    quotes: Sequence[str] = (),
    symbols: Sequence[str] = (),
) -> str:
    """A GBNF grammar whose sentences are JSON documents valid against `schema` (see module doc).

    `limits` defaults to `GrammarLimits()`. `quotes` (e.g.
    `quotes.quote_candidates(paper)`) are the only values of `limits.verbatim_properties`;
    likewise `symbols` (`quotes.symbol_candidates`) of `limits.symbol_properties`; without
    them those properties are ordinary strings. The start rule is `root`.
    """
    if not isinstance(schema, dict):
        raise GrammarError(f"a JSON schema must be an object, got {type(schema).__name__}")
    return _Converter(schema, limits if limits is not None else GrammarLimits(), quotes, symbols).convert()


def _literal(text: str) -> str:
    """A GBNF double-quoted literal matching `text` exactly."""
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _json_literal(value: Any) -> str:
    """A GBNF literal matching the compact JSON encoding of `value`."""
    return _literal(json.dumps(value, ensure_ascii=True, separators=(",", ":")))


def _repeat(item: str, min_count: int, max_count: int | None) -> str:
    """`item` repeated min..max times (max None: unbounded), as GBNF."""
    if max_count is None:
        return {0: f"{item}*", 1: f"{item}+"}.get(min_count, f"{item}{{{min_count},}}")
    if min_count == max_count:
        return "" if min_count == 0 else item if min_count == 1 else f"{item}{{{min_count}}}"
    if (min_count, max_count) == (0, 1):
        return f"{item}?"
    return f"{item}{{{min_count},{max_count}}}"


class _Converter:
    def __init__(
        self,
        schema: dict[str, Any],
        limits: GrammarLimits,
        quotes: Sequence[str] = (),
        symbols: Sequence[str] = (),
    ):
        self._schema = schema
        self._property_max_items = limits.property_max_items
        self._property_min_items = limits.property_min_items
        self._last_properties = limits.last_properties
        self._verbatim = {name: list(dict.fromkeys(quotes)) for name in limits.verbatim_properties if quotes}
        for name in limits.symbol_properties if symbols else ():
            self._verbatim[name] = list(dict.fromkeys(symbols))
        self._max_array_items = limits.max_array_items
        self._max_scalar_array_items = limits.max_scalar_array_items
        self._max_string_length = limits.max_string_length
        self._whitespace = _WHITESPACE[limits.whitespace]
        self._property_enums = limits.property_enums
        self._rules: dict[str, str] = {}
        self._body_to_name: dict[str, str] = {}
        self._ref_names: dict[str, str] = {}

    def convert(self) -> str:
        root_body = self._visit(self._schema, "root")
        composite = {k: v for k, v in self._rules.items() if k not in _PRIMITIVES}
        primitives = {k: v for k, v in self._rules.items() if k in _PRIMITIVES}
        rules = {"root": root_body, **composite, **primitives}
        return "".join(f"{name} ::= {body}\n" for name, body in rules.items())

    # -- rule bookkeeping -------------------------------------------------------------------

    def _primitive(self, name: str) -> str:
        for dependency in _PRIMITIVE_DEPENDENCIES.get(name, ()):
            self._primitive(dependency)
        if name not in self._rules:
            self._rules[name] = self._whitespace if name == "ws" else _PRIMITIVES[name]
        return name

    def _add_rule(self, hint: str, body: str) -> str:
        """A named rule for `body`, reusing an identical one; returns its name."""
        if body in self._body_to_name:
            return self._body_to_name[body]
        name = self._fresh_name(hint)
        self._rules[name] = body
        self._body_to_name[body] = name
        return name

    def _fresh_name(self, hint: str) -> str:
        base = re.sub(r"[^a-zA-Z0-9-]+", "-", hint).strip("-").lower() or "rule"
        if base in _PRIMITIVES or base in {"root", "value"}:
            base = f"{base}-value"
        name, counter = base, 1
        while name in self._rules:
            counter += 1
            name = f"{base}-{counter}"
        return name

    # -- schema walking ---------------------------------------------------------------------

    def _resolve(self, ref: str) -> dict[str, Any]:
        if ref == "#":
            return self._schema
        if not ref.startswith("#/"):
            raise GrammarError(f"only local $ref is supported, got {ref!r}")
        node: Any = self._schema
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                raise GrammarError(f"$ref {ref!r} does not resolve inside the schema")
            node = node[part]
        if not isinstance(node, dict):
            raise GrammarError(f"$ref {ref!r} does not point at a schema object")
        return node

    def _ref_rule(self, ref: str) -> str:
        """A named rule for a referenced schema; created once, so recursion terminates."""
        if ref not in self._ref_names:
            name = self._fresh_name(ref.rsplit("/", 1)[-1] if ref != "#" else "root-ref")
            self._ref_names[ref] = name
            self._rules[name] = ""  # reserve the name while the body is built
            self._rules[name] = self._visit(self._resolve(ref), name)
        return self._ref_names[ref]

    def _visit(self, schema: Any, hint: str) -> str:
        """The GBNF expression (a rule body) matching `schema`."""
        if schema is True or schema == {}:
            return self._any_value()
        if schema is False:
            raise GrammarError(f"schema at {hint!r} is `false`: no value can match it")
        if not isinstance(schema, dict):
            raise GrammarError(f"schema at {hint!r} must be an object, got {type(schema).__name__}")

        if schema.get("nullable") is True:
            inner = {k: v for k, v in schema.items() if k != "nullable"}
            return self._alternatives(
                [self._as_item(self._visit(inner, hint), hint), self._primitive("null")], hint
            )
        if "$ref" in schema:
            siblings = set(schema) - {"$ref"} - _IGNORED_KEYWORDS
            if siblings:
                raise GrammarError(f"$ref at {hint!r} has sibling keywords {sorted(siblings)}")
            return self._ref_rule(schema["$ref"])
        if "const" in schema:
            return _json_literal(schema["const"])
        if "enum" in schema:
            values = schema["enum"]
            if not isinstance(values, list) or not values:
                raise GrammarError(f"enum at {hint!r} must be a non-empty list")
            return " | ".join(_json_literal(value) for value in values)
        for keyword in ("anyOf", "oneOf"):
            if keyword in schema:
                options = schema[keyword]
                if not isinstance(options, list) or not options:
                    raise GrammarError(f"{keyword} at {hint!r} must be a non-empty list")
                alternatives = [
                    self._as_item(self._visit(option, f"{hint}-{i}"), f"{hint}-{i}")
                    for i, option in enumerate(options)
                ]
                return self._alternatives(alternatives, hint)
        if "allOf" in schema:
            return self._visit(self._merge_all_of(schema, hint), hint)

        schema_type = schema.get("type")
        if schema_type is None:
            if "properties" in schema:
                schema_type = "object"
            elif "items" in schema or "prefixItems" in schema:
                schema_type = "array"
            else:
                return self._any_value()
        if isinstance(schema_type, list):
            if not schema_type:
                raise GrammarError(f"type list at {hint!r} is empty")
            alternatives = [
                self._as_item(self._visit({**schema, "type": t}, f"{hint}-{t}"), f"{hint}-{t}")
                for t in schema_type
            ]
            return self._alternatives(alternatives, hint)
        if schema_type not in _JSON_TYPES:
            raise GrammarError(f"unknown type {schema_type!r} at {hint!r}")
        if schema_type == "object":
            return self._object(schema, hint)
        if schema_type == "array":
            return self._array(schema, hint)
        if schema_type == "string":
            return self._string(schema)
        return self._primitive(schema_type)

    def _alternatives(self, alternatives: list[str], hint: str) -> str:
        """A union; named after its members when they all are rules (`string-or-null`)."""
        body = " | ".join(alternatives)
        if all(_RULE_NAME.fullmatch(alternative) for alternative in alternatives):
            return self._add_rule("-or-".join(alternatives), body)
        return body

    def _as_item(self, body: str, hint: str) -> str:
        """`body` usable as one item of a sequence: a rule name, or a new rule named after `hint`."""
        if _RULE_NAME.fullmatch(body) or _LITERAL.fullmatch(body):
            return body
        return self._add_rule(hint, body)

    def _merge_all_of(self, schema: dict[str, Any], hint: str) -> dict[str, Any]:
        parts = schema["allOf"]
        if not isinstance(parts, list) or not parts:
            raise GrammarError(f"allOf at {hint!r} must be a non-empty list")
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in parts:
            while isinstance(part, dict) and "$ref" in part:
                part = {**self._resolve(part["$ref"]), **{k: v for k, v in part.items() if k != "$ref"}}
            if not isinstance(part, dict):
                raise GrammarError(f"allOf at {hint!r} holds a non-object schema")
            for key, value in part.items():
                if key == "properties":
                    merged["properties"] = {**merged.get("properties", {}), **value}
                elif key == "required":
                    merged["required"] = [*merged.get("required", []), *value]
                elif key in merged and merged[key] != value and key not in _IGNORED_KEYWORDS:
                    raise GrammarError(f"allOf at {hint!r} has conflicting {key!r}")
                else:
                    merged[key] = value
        return merged

    def _string(self, schema: dict[str, Any]) -> str:
        min_length = int(schema.get("minLength", 0))
        max_length = schema.get("maxLength", self._max_string_length)
        if max_length is not None and int(max_length) < min_length:
            raise GrammarError(f"maxLength {max_length} < minLength {min_length}")
        self._primitive("char")
        body = f'"\\"" {_repeat("char", min_length, None if max_length is None else int(max_length))} "\\""'
        return self._add_rule("string", body)

    def _array(self, schema: dict[str, Any], hint: str) -> str:
        if "prefixItems" in schema:
            raise GrammarError(f"tuple arrays (prefixItems) at {hint!r} are not supported")
        ws = self._primitive("ws")
        item_schema = schema.get("items", True)
        item = self._as_item(self._visit(item_schema, f"{hint}-item"), f"{hint}-item")
        min_items = int(schema.get("minItems", 0))
        default_max = self._max_scalar_array_items if self._is_scalar(item_schema) else self._max_array_items
        max_items = schema.get("maxItems", default_max)
        max_items = None if max_items is None else int(max_items)
        if max_items is not None and max_items < min_items:
            raise GrammarError(f"maxItems {max_items} < minItems {min_items} at {hint!r}")
        if max_items == 0:
            return f'"[" {ws} "]"'
        named_item = _RULE_NAME.fullmatch(item) is not None
        rest = _repeat(
            f'("," {ws} {item} {ws})', max(min_items - 1, 0), None if max_items is None else max_items - 1
        )
        elements = f"{item} {ws} {rest}".strip()
        if min_items == 0:
            elements = f"({elements})?"
        body = f'"[" {ws} {elements} "]"'
        return self._add_rule(f"{item}-list", body) if named_item else body

    def _is_scalar(self, schema: Any, depth: int = 0) -> bool:
        """Whether every value of `schema` is a string, number, boolean or null (not a container)."""
        if not isinstance(schema, dict) or depth > 32:
            return False
        if "$ref" in schema:
            return self._is_scalar(self._resolve(schema["$ref"]), depth + 1)
        if "const" in schema or "enum" in schema:
            values = [schema["const"]] if "const" in schema else schema["enum"]
            return all(not isinstance(value, dict | list) for value in values)
        for keyword in ("anyOf", "oneOf"):
            if keyword in schema:
                return all(self._is_scalar(option, depth + 1) for option in schema[keyword])
        types = schema.get("type")
        types = types if isinstance(types, list) else [types]
        return all(t in {"string", "number", "integer", "boolean", "null"} for t in types)

    def _object(self, schema: dict[str, Any], hint: str) -> str:
        ws = self._primitive("ws")
        properties: dict[str, Any] = schema.get("properties") or {}
        required = list(schema.get("required", []))
        unknown = [name for name in required if name not in properties]
        if unknown:
            raise GrammarError(f"object at {hint!r} requires properties it does not define: {unknown}")
        if not properties:
            additional = schema.get("additionalProperties", True)
            if additional is False:
                return f'"{{" {ws} "}}"'
            value = self._as_item(self._visit(additional, f"{hint}-value"), f"{hint}-value")
            pair = f'{self._string({})} {ws} ":" {ws} {value} {ws}'
            return f'"{{" {ws} ({pair} ("," {ws} {pair})*)? "}}"'

        # Schema order, except that `last_properties` come last.
        ordered = sorted(properties, key=lambda name: name in self._last_properties)
        properties = {name: properties[name] for name in ordered}
        pairs: dict[str, str] = {}
        for name, prop_schema in properties.items():
            if name in self._property_enums:
                prop_schema = self._restrict_to_values(prop_schema, name, hint)
            if name in self._verbatim:
                prop_schema = self._restrict_to_quotes(prop_schema, name, hint)
            if name in self._property_max_items and isinstance(prop_schema, dict):
                prop_schema = {**prop_schema, "maxItems": self._property_max_items[name]}
            if name in self._property_min_items and isinstance(prop_schema, dict):
                prop_schema = {**prop_schema, "minItems": self._property_min_items[name]}
            value = self._as_item(self._visit(prop_schema, f"{hint}-{name}"), f"{hint}-{name}")
            pairs[name] = self._add_rule(
                f"{hint}-{name}-kv", f'{_json_literal(name)} {ws} ":" {ws} {value} {ws}'
            )
        required_names = [name for name in properties if name in required]
        optional_names = [name for name in properties if name not in required]

        sequence = f' "," {ws} '.join(pairs[name] for name in required_names)
        if optional_names:
            if required_names:
                # Each optional property may follow, in schema order.
                sequence += "".join(f' ("," {ws} {pairs[name]})?' for name in optional_names)
            else:
                sequence = self._optional_only(hint, [pairs[name] for name in optional_names], ws)
        return f'"{{" {ws} {sequence} "}}"'

    def _restrict_to_values(
        self, schema: Any, name: str, hint: str, table: dict[str, list[str]] | None = None
    ) -> dict[str, Any]:
        """The string property `name` limited to the configured values (null stays allowed if it was)."""
        values = (self._property_enums if table is None else table)[name]
        if not values:
            raise GrammarError(f"property_enums[{name!r}] is empty")
        resolved = self._resolve(schema["$ref"]) if isinstance(schema, dict) and "$ref" in schema else schema
        options = resolved.get("anyOf", [resolved]) if isinstance(resolved, dict) else []
        types = {option.get("type") for option in options if isinstance(option, dict)}
        if not types or not types <= {"string", "null"} or "string" not in types:
            raise GrammarError(f"property_enums names {name!r} at {hint!r}, which is not a string property")
        restricted: dict[str, Any] = {"enum": list(values)}
        return {"anyOf": [restricted, {"type": "null"}]} if "null" in types else restricted

    def _restrict_to_quotes(self, schema: Any, name: str, hint: str) -> dict[str, Any]:
        """The string (or list-of-strings) property `name` limited to the source text's quotes."""
        if isinstance(schema, dict) and schema.get("type") == "array":
            return {
                **schema,
                "items": self._restrict_to_values(schema.get("items", {}), name, hint, self._verbatim),
            }
        return self._restrict_to_values(schema, name, hint, self._verbatim)

    def _optional_only(self, hint: str, pairs: list[str], ws: str) -> str:
        """Any subset of `pairs`, in order, comma-separated: rule `rest_i` = what may follow pair i."""
        rest_names: list[str] = []
        for index in range(len(pairs) - 1, -1, -1):
            later = [
                f'"," {ws} {pairs[j]} {rest_names[len(pairs) - 1 - j]}' for j in range(index + 1, len(pairs))
            ]
            body = " | ".join(later)
            rest_names.append(self._add_rule(f"{hint}-after-{index}", f"({body})?") if later else "")
        rest_names.reverse()
        firsts = [f"{pairs[i]} {rest_names[i]}".strip() for i in range(len(pairs))]
        return "(" + " | ".join(firsts) + ")?"

    def _any_value(self) -> str:
        """A rule for any JSON value (arrays and strings bounded as configured)."""
        if "value" in self._rules:
            return "value"
        self._rules["value"] = ""
        ws = self._primitive("ws")
        string = self._string({})
        items = _repeat(
            f'("," {ws} value {ws})', 0, None if self._max_array_items is None else self._max_array_items - 1
        )
        empty = self._max_array_items == 0
        array = f'"[" {ws} "]"' if empty else f'"[" {ws} (value {ws} {items})? "]"'
        member = f'{string} {ws} ":" {ws} value {ws}'
        obj = f'"{{" {ws} ({member} ("," {ws} {member})*)? "}}"'
        self._rules["value"] = " | ".join(
            [
                f"({obj})",
                f"({array})",
                string,
                self._primitive("number"),
                self._primitive("boolean"),
                self._primitive("null"),
            ]
        )
        return "value"
