"""Grounding aids for the embedded teacher: quote candidates, the prompt-mode outline, and the
per-request grammar the teacher client sends when evidence must be verbatim."""

from __future__ import annotations

import json

import pytest

from methyl_distill.extraction.prompts import build_messages, paper_text_in
from methyl_distill.extraction.question_bank import load_question_bank
from methyl_distill.extraction.records import TeacherExtraction
from methyl_distill.teacher.config import TeacherConfig
from methyl_distill.teacher.grammar import GrammarLimits
from methyl_distill.teacher.openai_client import OpenAITeacher
from methyl_distill.teacher.quotes import quote_candidates, symbol_candidates
from methyl_distill.teacher.structured_output import outline_instruction, schema_outline, strict_json_schema

PAPER = """\
MGMT promoter methylation in glioblastoma

We studied 206 patients (e.g. 120 men) with newly diagnosed glioblastoma. MGMT promoter \
hypermethylation was measured in tumour tissue by methylation-specific PCR (MSP), which detects \
methylated alleles after bisulfite conversion, and by pyrosequencing of four CpG sites in the promoter, \
which quantifies the methylation level at each site, in all 206 tumours; both agreed in 95% of cases.
Methylated tumours responded better (p < 0.001).
"""


def test_quote_candidates_are_verbatim_sentences_within_bounds() -> None:
    candidates = quote_candidates(PAPER, max_chars=120)
    assert candidates[0] == "MGMT promoter methylation in glioblastoma"
    assert "We studied 206 patients (e.g. 120 men) with newly diagnosed glioblastoma." in candidates
    assert "Methylated tumours responded better (p < 0.001)." in candidates
    assert all(candidate in PAPER and 12 <= len(candidate) <= 120 for candidate in candidates)
    # The long sentence is cut at clause boundaries; nothing of it is lost.
    long_pieces = [c for c in candidates if c.startswith("MGMT promoter hyper") or "pyrosequencing" in c]
    assert len(long_pieces) >= 2
    assert "which quantifies the methylation level at each site," in " ".join(candidates)
    assert len(candidates) == len(set(candidates))
    assert quote_candidates(PAPER + "\n" + PAPER) == quote_candidates(PAPER)
    with pytest.raises(ValueError, match="at least"):
        quote_candidates(PAPER, max_chars=5)


def test_paper_text_in_finds_the_paper_block() -> None:
    bank = load_question_bank(None)
    messages = build_messages(PAPER.strip(), bank, chunk_index=1, chunk_count=3)
    assert paper_text_in(messages) == PAPER.strip()
    assert paper_text_in([{"role": "user", "content": "no paper here"}]) is None
    assert paper_text_in([{"role": "system", "content": "<paper>\nx\n</paper>"}]) is None


def test_outline_has_no_schema_references_and_keeps_enums() -> None:
    schema = strict_json_schema(TeacherExtraction)
    outline = schema_outline(schema)
    assert "$defs" not in outline and "$ref" not in outline and "#/" not in outline
    assert '"direction": "hypermethylated" | "hypomethylated" | "mixed" | "not_stated"' in outline
    assert '"gene": string | null' in outline and '"cohort_size": integer | null' in outline
    assert outline.startswith(
        '{"answers": [{"question_id": string, "answer": string, "evidence": [string, ...]}'
    )
    reordered = schema_outline(schema, last_properties=["answer"])
    assert '{"question_id": string, "evidence": [string, ...], "answer": string}' in reordered
    assert schema_outline(schema) in outline_instruction(schema)


def _teacher(**limits: object) -> OpenAITeacher:
    grammar = GrammarLimits.model_validate(limits)
    return OpenAITeacher(
        TeacherConfig(base_url="http://127.0.0.1:9/v1", output_mode="prompt", grammar=grammar)
    )


def test_prompt_mode_sends_the_outline_json_object_mode_the_schema() -> None:
    messages = build_messages(PAPER, load_question_bank(None))
    prompt = _teacher()._request_arguments(messages, TeacherExtraction, 1000, "prompt", PAPER)
    system = prompt["messages"][0]["content"]
    assert "$defs" not in system and schema_outline(strict_json_schema(TeacherExtraction)) in system
    json_object = _teacher()._request_arguments(messages, TeacherExtraction, 1000, "json_object", PAPER)
    assert (
        json.dumps(strict_json_schema(TeacherExtraction), separators=(",", ":"))
        in (json_object["messages"][0]["content"])
    )
    strict = _teacher()._request_arguments(messages, TeacherExtraction, 1000, "json_schema", PAPER)
    assert strict["messages"] == messages and "extra_body" not in strict


def test_verbatim_evidence_grammar_is_built_per_request_from_its_source_text() -> None:
    teacher = _teacher(verbatim_properties=["evidence"], last_properties=["answer"])
    bank = load_question_bank(None)
    first = teacher._request_arguments(build_messages(PAPER, bank), TeacherExtraction, 1000, "prompt", PAPER)
    another = "Another paper about SEPT9 in plasma cfDNA."
    other = teacher._request_arguments(
        build_messages(another, bank), TeacherExtraction, 1000, "prompt", another
    )
    first_grammar, other_grammar = first["extra_body"]["grammar"], other["extra_body"]["grammar"]
    assert json.dumps("Methylated tumours responded better (p < 0.001).").replace('"', '\\"') in first_grammar
    assert "Another paper about SEPT9" in other_grammar and "Methylated tumours" not in other_grammar
    # The outline shows the order the grammar enforces: evidence, then the answer.
    assert '"evidence": [string, ...], "answer": string}' in first["messages"][0]["content"]
    # The source text is what the caller says it is, never parsed back out of the prompt: without
    # one the grammar is the schema's own (evidence unrestricted), whatever the messages hold.
    plain = teacher._request_arguments(build_messages(PAPER, bank), TeacherExtraction, 1000, "prompt", None)
    assert "Methylated tumours" not in plain["extra_body"]["grammar"]


def test_the_embedded_teacher_configuration_grounds_the_evidence() -> None:
    from methyl_distill.teacher.llama_cpp_server import EmbeddedTeacherConfig, embedded_teacher_config

    config = embedded_teacher_config("http://127.0.0.1:9/v1", question_ids=["markers"])
    assert config.api_key_source == "none" and config.output_mode == "prompt"
    limits = config.grammar
    assert limits is not None and limits.property_enums == {"question_id": ["markers"]}
    assert limits.verbatim_properties == ["evidence", "answer"] and limits.last_properties == ["answer"]
    assert limits.property_max_items == {"answers": EmbeddedTeacherConfig().grammar_max_answers}
    assert limits.property_min_items == {
        "evidence": 1,
        "answers": EmbeddedTeacherConfig().grammar_min_answers,
    }
    assert limits.symbol_properties == ["gene"]
    plain = embedded_teacher_config(
        "http://127.0.0.1:9/v1", EmbeddedTeacherConfig(grammar_grounding=False)
    ).grammar
    assert plain is not None
    assert plain.verbatim_properties == plain.last_properties == plain.symbol_properties == []
    abstractive = embedded_teacher_config(
        "http://127.0.0.1:9/v1", EmbeddedTeacherConfig(grammar_extractive_answers=False)
    ).grammar
    assert abstractive is not None and abstractive.verbatim_properties == ["evidence"]
    with pytest.raises(ValueError, match="exceeds grammar_max_answers"):
        EmbeddedTeacherConfig(grammar_min_answers=4, grammar_max_answers=3)


def test_symbol_candidates_are_gene_like_words() -> None:
    text = "SEPT9 and CDKN2A (p16INK4a) were methylated; MGMT-STP27 and the PCR assay. SEPT9 again, A B."
    assert symbol_candidates(text) == ["SEPT9", "CDKN2A", "MGMT-STP27", "PCR"]


def test_gene_symbols_are_restricted_per_request() -> None:
    grammar = _teacher(symbol_properties=["gene"])._request_arguments(
        build_messages(PAPER, load_question_bank(None)), TeacherExtraction, 1000, "prompt", PAPER
    )["extra_body"]["grammar"]
    gene_rule = next(line for line in grammar.splitlines() if line.startswith("markerrecord-gene-0 "))
    assert gene_rule.endswith('::= "\\"MGMT\\"" | "\\"PCR\\"" | "\\"MSP\\""')
    assert "markerrecord-gene-0-or-null ::= markerrecord-gene-0 | null" in grammar


def test_long_sentences_are_not_cut_inside_parentheses() -> None:
    sentence = (
        "Patients with a methylated promoter lived longer than patients with an unmethylated promoter "
        "(hazard ratio 0.55; 95% CI 0.31 to 0.84), and the benefit was confined to those who received "
        "temozolomide with radiotherapy."
    )
    candidates = quote_candidates(sentence, max_chars=160)
    assert all(candidate.count("(") == candidate.count(")") for candidate in candidates)
    assert any("(hazard ratio 0.55; 95% CI 0.31 to 0.84)," in candidate for candidate in candidates)
