"""schema_to_gbnf: the grammar accepts exactly the JSON documents we want from a small model.

Without llama.cpp, the grammar is checked by translating it (it is not recursive for these
schemas) into a Python regular expression and matching JSON texts against it. With llama.cpp
installed, llama.cpp's own GBNF parser must accept it too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from methyl_distill.extraction.records import TeacherExtraction
from methyl_distill.teacher.config import teacher_config_from_environment
from methyl_distill.teacher.grammar import GrammarError, GrammarLimits, schema_to_gbnf

# -- a GBNF → regex translator for non-recursive grammars ----------------------------------------

_TOKEN = re.compile(
    r'\s*(?:(?P<literal>"(?:[^"\\]|\\.)*")|(?P<cls>\[(?:[^\]\\]|\\.)*\])|(?P<name>[a-zA-Z0-9-]+)'
    r"|(?P<repeat>\{\d+(?:,\d*)?\})|(?P<op>[()|?*+]))"
)


def _decode_literal(literal: str) -> str:
    body = literal[1:-1]
    return re.sub(
        r"\\(x[0-9A-Fa-f]{2}|.)",
        lambda m: (
            chr(int(m.group(1)[1:], 16))
            if m.group(1).startswith("x") and len(m.group(1)) == 3
            else {"n": "\n", "r": "\r", "t": "\t"}.get(m.group(1), m.group(1))
        ),
        body,
    )


def gbnf_to_regex(grammar: str, max_depth: int = 5) -> re.Pattern[str]:
    rules = {}
    for line in grammar.strip().splitlines():
        name, _, body = line.partition(" ::= ")
        rules[name] = body

    def translate(name: str, stack: tuple[str, ...]) -> str:
        if stack.count(name) >= max_depth:  # recursion unrolled a few levels deep, then cut off
            return "(?!)"
        body, out, position = rules[name], [], 0
        while position < len(body):
            match = _TOKEN.match(body, position)
            if match is None:
                if body[position:].strip() == "":
                    break
                raise ValueError(f"cannot tokenize {body[position:]!r}")
            position = match.end()
            if match["literal"]:
                out.append(re.escape(_decode_literal(match["literal"])))
            elif match["cls"]:
                out.append(match["cls"])
            elif match["name"]:
                out.append(f"(?:{translate(match['name'], (*stack, name))})")
            elif match["repeat"]:
                out.append(match["repeat"])
            else:
                out.append({"(": "(?:"}.get(match["op"], match["op"]))
        return "".join(out)

    return re.compile(translate("root", ()), re.DOTALL)


def accepts(grammar: str, text: str) -> bool:
    return gbnf_to_regex(grammar).fullmatch(text) is not None


# -- fixtures --------------------------------------------------------------------------------------


def _extraction(evidence_count: int = 2) -> dict:
    marker = {
        "marker": "MGMT promoter",
        "gene": "MGMT",
        "cpg_sites": ["cg12434587"],
        "region": None,
        "direction": "hypermethylated",
        "condition": "glioblastoma",
        "sample_types": ["tumour tissue"],
        "assays": ["MSP"],
        "clinical_uses": ["prediction_of_therapy_response"],
        "performance": {
            "sensitivity": 0.82,
            "specificity": None,
            "auc": 0.9,
            "cohort_size": 206,
            "notes": "",
        },
        "related": [],
        "evidence": [f"quote {i}" for i in range(evidence_count)],
    }
    return {
        "answers": [{"question_id": "markers", "answer": 'MGMT, "quoted" \\ path', "evidence": []}],
        "markers": [marker],
        "additional_qa": [{"question": "Q?", "answer": "A \u00e9\u4e2d", "evidence": ["line one\nline two"]}],
    }


@pytest.fixture(scope="module")
def teacher_grammar() -> str:
    return schema_to_gbnf(
        TeacherExtraction.model_json_schema(), GrammarLimits(max_array_items=16, max_scalar_array_items=16)
    )


# -- tests -------------------------------------------------------------------------------------------


def test_valid_extraction_is_accepted(teacher_grammar: str) -> None:
    document = _extraction()
    TeacherExtraction.model_validate(document)
    assert accepts(teacher_grammar, json.dumps(document))
    assert accepts(teacher_grammar, json.dumps(document, separators=(",", ":")))
    assert accepts(teacher_grammar, json.dumps(document, ensure_ascii=False))


def test_whitespace_compact_rejects_layout_flexible_allows_it(teacher_grammar: str) -> None:
    indented = json.dumps(_extraction(), indent=2)
    assert not accepts(teacher_grammar, indented)
    assert not accepts(teacher_grammar, json.dumps(_extraction()).replace(", ", ",   "))
    flexible = schema_to_gbnf(
        TeacherExtraction.model_json_schema(), GrammarLimits(max_scalar_array_items=16, whitespace="flexible")
    )
    assert accepts(flexible, indented)


def test_scalar_and_object_arrays_have_separate_bounds() -> None:
    limits = GrammarLimits(max_array_items=3, max_scalar_array_items=1)
    grammar = schema_to_gbnf(TeacherExtraction.model_json_schema(), limits)
    document = _extraction(evidence_count=1)
    document["additional_qa"] = document["additional_qa"] * 3
    assert accepts(grammar, json.dumps(document))
    assert not accepts(grammar, json.dumps(_extraction(evidence_count=2)))
    document["additional_qa"] = document["additional_qa"] * 2
    assert not accepts(grammar, json.dumps(document))


def test_limits_come_from_teacher_grammar_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    monkeypatch.setenv("TEACHER_GBNF_GRAMMAR", "true")
    monkeypatch.setenv("TEACHER_GRAMMAR_MAX_STRING_LENGTH", "5")
    monkeypatch.setenv("TEACHER_GRAMMAR_MAX_SCALAR_ARRAY_ITEMS", "2")
    limits = teacher_config_from_environment().grammar
    assert limits is not None and limits.max_string_length == 5
    grammar = schema_to_gbnf({"type": "array", "items": {"type": "string"}}, limits)
    assert accepts(grammar, '["abcde", "x"]')
    assert not accepts(grammar, '["abcdef"]')
    assert not accepts(grammar, '["a", "b", "c"]')
    monkeypatch.setenv("TEACHER_GRAMMAR_MAX_STRING_LENGTH", "-1")
    with pytest.raises(ValueError, match="max_string_length"):
        teacher_config_from_environment()
    monkeypatch.setenv("TEACHER_GBNF_GRAMMAR", "false")
    assert teacher_config_from_environment().grammar is None  # bounds alone send no grammar


def test_raw_control_characters_in_strings_are_rejected(teacher_grammar: str) -> None:
    text = json.dumps(_extraction())
    assert "line one\\nline two" in text
    assert not accepts(teacher_grammar, text.replace("line one\\nline two", "line one\nline two"))
    assert not accepts(teacher_grammar, text.replace("quote 0", "quote\t0"))
    assert not accepts(teacher_grammar, text.replace("quote 0", "quote\x7f0"))
    assert 'char ::= [^"\\\\\\x7F\\x00-\\x1F]' in teacher_grammar


def test_arrays_are_bounded(teacher_grammar: str) -> None:
    assert accepts(teacher_grammar, json.dumps(_extraction(evidence_count=16)))
    assert not accepts(teacher_grammar, json.dumps(_extraction(evidence_count=17)))
    tight = schema_to_gbnf(
        TeacherExtraction.model_json_schema(), GrammarLimits(max_array_items=2, max_scalar_array_items=2)
    )
    assert accepts(tight, json.dumps(_extraction(evidence_count=2)))
    assert not accepts(tight, json.dumps(_extraction(evidence_count=3)))


def test_enums_extra_keys_and_missing_keys_are_rejected(teacher_grammar: str) -> None:
    document = _extraction()
    document["markers"][0]["direction"] = "up"
    assert not accepts(teacher_grammar, json.dumps(document))
    document = _extraction()
    document["markers"][0]["clinical_uses"] = ["cure"]
    assert not accepts(teacher_grammar, json.dumps(document))
    document = _extraction()
    document["extra"] = 1
    assert not accepts(teacher_grammar, json.dumps(document))
    document = _extraction()
    del document["markers"][0]["performance"]["auc"]
    assert not accepts(teacher_grammar, json.dumps(document))


def test_numbers_and_nulls(teacher_grammar: str) -> None:
    document = _extraction()
    for value, ok in [(None, True), (0, True), (-1.5e-3, True), ("0.9", False), (True, False)]:
        document["markers"][0]["performance"]["sensitivity"] = value
        assert accepts(teacher_grammar, json.dumps(document)) is ok, value
    document = _extraction()
    document["markers"][0]["performance"]["cohort_size"] = 12.5
    assert not accepts(teacher_grammar, json.dumps(document))
    assert not accepts(teacher_grammar, json.dumps(_extraction()).replace("206", "0206"))


class _Optional(BaseModel):
    model_config = ConfigDict(extra="forbid")
    a: int = 1
    b: str | None = None
    c: Literal["x", 'y"z'] = "x"


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"a": 2},
        {"b": None},
        {"c": 'y"z'},
        {"a": 1, "c": "x"},
        {"a": 1, "b": "s", "c": "x"},
        {"b": "", "c": "x"},
    ],
)
def test_optional_properties_any_subset_in_order(document: dict) -> None:
    grammar = schema_to_gbnf(_Optional.model_json_schema())
    assert accepts(grammar, json.dumps(document))


def test_optional_properties_reject_wrong_order_and_duplicates() -> None:
    grammar = schema_to_gbnf(_Optional.model_json_schema())
    assert not accepts(grammar, '{"c": "x", "a": 1}')
    assert not accepts(grammar, '{"a": 1, "a": 1}')
    assert not accepts(grammar, '{"a": 1,}')


class _Bounded(BaseModel):
    tags: list[str] = Field(min_length=1, max_length=3)
    name: str = Field(max_length=4)
    scores: dict[str, float]


def test_schema_bounds_and_maps() -> None:
    grammar = schema_to_gbnf(
        _Bounded.model_json_schema(), GrammarLimits(max_array_items=None, max_scalar_array_items=None)
    )
    ok = {"tags": ["a"], "name": "abcd", "scores": {"x": 1.0, "y": 2}}
    assert accepts(grammar, json.dumps(ok))
    assert not accepts(grammar, json.dumps({**ok, "tags": []}))
    assert not accepts(grammar, json.dumps({**ok, "tags": ["a", "b", "c", "d"]}))
    assert not accepts(grammar, json.dumps({**ok, "name": "abcde"}))
    assert accepts(grammar, json.dumps({**ok, "scores": {}}))


def test_max_string_length_default_applies_to_unbounded_strings() -> None:
    grammar = schema_to_gbnf({"type": "string"}, GrammarLimits(max_string_length=3))
    assert accepts(grammar, '"abc"')
    assert not accepts(grammar, '"abcd"')
    assert accepts(grammar, '"\\n\\u00e9"')


def test_type_lists_const_and_untyped_values() -> None:
    grammar = schema_to_gbnf(
        {
            "type": "object",
            "properties": {"k": {"type": ["integer", "null"]}, "v": {"const": "fixed"}, "any": {}},
            "required": ["k", "v", "any"],
        }
    )
    assert accepts(grammar, '{"k": null, "v": "fixed", "any": [1, {"a": [true, null]}, "s"]}')
    assert not accepts(grammar, '{"k": 1, "v": "other", "any": 1}')


def test_recursive_refs_terminate() -> None:
    class Node(BaseModel):
        value: int
        children: list[Node]

    grammar = schema_to_gbnf(Node.model_json_schema())
    assert grammar.startswith("root ::= ")
    assert accepts(grammar, '{"value": 1, "children": [{"value": 2, "children": []}]}')
    assert not accepts(grammar, '{"value": 1, "children": [{"value": 2}]}')


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"$ref": "other.json#/x"}, "only local"),
        ({"$ref": "#/$defs/Missing"}, "does not resolve"),
        ({"type": "array", "items": {"type": "string"}, "minItems": 3, "maxItems": 2}, "maxItems"),
        ({"type": "frob"}, "unknown type"),
        ({"type": "object", "properties": {}, "required": ["x"]}, "does not define"),
        ({"enum": []}, "non-empty"),
    ],
)
def test_bad_schemas_raise_clear_errors(schema: dict, message: str) -> None:
    with pytest.raises(GrammarError, match=message):
        schema_to_gbnf(schema)


def test_every_rule_is_defined_once_and_used(teacher_grammar: str) -> None:
    names = [line.split(" ::= ")[0] for line in teacher_grammar.strip().splitlines()]
    assert len(names) == len(set(names))
    bodies = " ".join(line.split(" ::= ", 1)[1] for line in teacher_grammar.strip().splitlines())
    referenced = set(
        re.findall(
            r'(?<![\w"\\-])([a-z][a-z0-9-]*)(?![\w"-])', re.sub(r'"(?:[^"\\]|\\.)*"|\[[^\]]*\]', "", bodies)
        )
    )
    assert referenced <= set(names)
    assert set(names) - {"root"} <= referenced


def _llama_cpp_accepts(grammar: str) -> bool:
    """Whether llama.cpp's GBNF parser accepts `grammar` (it needs a vocabulary: SmolLM2's)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from methyl_distill.teacher.llama_cpp_server import smollm2_gguf_path

    model = llama_cpp.Llama(model_path=str(smollm2_gguf_path()), vocab_only=True, verbose=False)
    try:
        sampler = llama_cpp.llama_sampler_init_grammar(model._model.vocab, grammar.encode(), b"root")
        if not sampler:
            return False
        llama_cpp.llama_sampler_free(sampler)
        return True
    finally:
        model.close()


def test_llama_cpp_parses_the_grammar(teacher_grammar: str) -> None:
    """llama.cpp's own GBNF parser accepts the grammar (and rejects a broken one)."""
    assert _llama_cpp_accepts(teacher_grammar)
    assert _llama_cpp_accepts(schema_to_gbnf(_Optional.model_json_schema()))
    assert _llama_cpp_accepts(schema_to_gbnf({"type": "object", "properties": {"any": {}}}))
    assert not _llama_cpp_accepts('root ::= "{" undefined-rule "}"\n')


def test_property_enums_restrict_named_string_properties() -> None:
    limits = GrammarLimits(property_enums={"question_id": ["markers", "assays"], "gene": ["MGMT"]})
    grammar = schema_to_gbnf(TeacherExtraction.model_json_schema(), limits)
    document = _extraction()
    assert accepts(grammar, json.dumps(document))  # question_id "markers", gene "MGMT"
    document["answers"][0]["question_id"] = "not_in_the_bank"
    assert not accepts(grammar, json.dumps(document))
    document = _extraction()
    document["markers"][0]["gene"] = None  # still nullable
    assert accepts(grammar, json.dumps(document))
    document["markers"][0]["gene"] = "SEPT9"
    assert not accepts(grammar, json.dumps(document))
    with pytest.raises(GrammarError, match="not a string property"):
        schema_to_gbnf(
            TeacherExtraction.model_json_schema(), GrammarLimits(property_enums={"evidence": ["x"]})
        )


def test_property_enums_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TEACHER_GBNF_GRAMMAR", "1")
    monkeypatch.setenv("TEACHER_GRAMMAR_PROPERTY_ENUMS", '{"question_id": ["markers"]}')
    limits = teacher_config_from_environment().grammar
    assert limits is not None and limits.property_enums == {"question_id": ["markers"]}


PAPER_QUOTES = [
    "MGMT promoter hypermethylation was measured by MSP.",
    "The promoter was methylated in 45% of tumours.",
]


def _grounded_limits() -> GrammarLimits:
    return GrammarLimits(
        verbatim_properties=["evidence"], last_properties=["answer"], property_max_items={"answers": 2}
    )


def _reordered(document: dict) -> dict:
    """`document` with every object's "answer" key moved after its other keys."""
    if isinstance(document, dict):
        items = {k: _reordered(v) for k, v in document.items() if k != "answer"}
        return {**items, "answer": document["answer"]} if "answer" in document else items
    if isinstance(document, list):
        return [_reordered(item) for item in document]
    return document


def test_verbatim_properties_admit_only_the_given_quotes() -> None:
    grammar = schema_to_gbnf(TeacherExtraction.model_json_schema(), _grounded_limits(), PAPER_QUOTES)
    document = _extraction(evidence_count=0)
    document["answers"][0]["evidence"] = [PAPER_QUOTES[1]]
    document["markers"][0]["evidence"] = [PAPER_QUOTES[0], PAPER_QUOTES[1]]
    document["additional_qa"][0]["evidence"] = []
    assert accepts(grammar, json.dumps(_reordered(document)))
    # A paraphrase, or the answer before its evidence, is not admitted.
    document["answers"][0]["evidence"] = ["The promoter was methylated in most tumours."]
    assert not accepts(grammar, json.dumps(_reordered(document)))
    document["answers"][0]["evidence"] = [PAPER_QUOTES[1]]
    assert not accepts(grammar, json.dumps(document))
    # Other strings are untouched; without quotes, evidence is an ordinary string list.
    free = schema_to_gbnf(TeacherExtraction.model_json_schema(), _grounded_limits())
    document["answers"][0]["evidence"] = ["anything at all"]
    assert accepts(free, json.dumps(_reordered(document)))
    assert _llama_cpp_accepts(grammar)


def test_property_max_items_bounds_named_arrays() -> None:
    grammar = schema_to_gbnf(TeacherExtraction.model_json_schema(), _grounded_limits(), PAPER_QUOTES)
    document = _reordered(_extraction(evidence_count=0))
    document["additional_qa"][0]["evidence"] = []
    document["answers"] = document["answers"] * 2
    assert accepts(grammar, json.dumps(document))
    document["answers"] = document["answers"] * 2  # 4 > 2
    assert not accepts(grammar, json.dumps(document))
    at_least_one = schema_to_gbnf(
        TeacherExtraction.model_json_schema(), GrammarLimits(property_min_items={"evidence": 1})
    )
    document = _extraction(evidence_count=1)
    document["answers"][0]["evidence"] = ["quote"]
    assert accepts(at_least_one, json.dumps(document))
    document["markers"][0]["evidence"] = []
    assert not accepts(at_least_one, json.dumps(document))


def test_grounding_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TEACHER_GBNF_GRAMMAR", "true")
    monkeypatch.setenv("TEACHER_GRAMMAR_VERBATIM_PROPERTIES", '["evidence"]')
    monkeypatch.setenv("TEACHER_GRAMMAR_LAST_PROPERTIES", '["answer"]')
    monkeypatch.setenv("TEACHER_GRAMMAR_PROPERTY_MAX_ITEMS", '{"answers": 5}')
    limits = teacher_config_from_environment().grammar
    assert limits is not None
    assert limits.verbatim_properties == ["evidence"] and limits.last_properties == ["answer"]
    assert limits.property_max_items == {"answers": 5}
    with pytest.raises(GrammarError, match="not a string property"):
        schema_to_gbnf(
            TeacherExtraction.model_json_schema(), GrammarLimits(verbatim_properties=["markers"]), ["x"]
        )
