"""Prompts follow the layout the teacher and the test server share."""

from __future__ import annotations

import re

from methyl_distill.extraction.prompts import (
    NOT_REPORTED,
    SYSTEM_PROMPT,
    build_messages,
    build_user_prompt,
    format_question_line,
    paper_text_in,
    questions_in,
)
from methyl_distill.extraction.question_bank import load_question_bank
from tests.fake_openai.extractive_answers import parse_prompt


def test_user_prompt_layout_carries_paper_and_every_question() -> None:
    bank = load_question_bank()
    paper = "Line one of the paper.\n\n- [fake] a dash line inside the paper"
    prompt = build_user_prompt(paper, bank)
    assert f"\n<paper>\n{paper}\n</paper>\n" in prompt
    after_paper = prompt.split("</paper>", 1)[1]
    asked = re.findall(r"^- \[([^\]]+)\] (.+)$", after_paper, re.MULTILINE)
    assert [question_id for question_id, _ in asked] == bank.ids
    assert [text for _, text in asked] == [question.text for question in bank.questions]


def test_test_server_parses_our_prompt() -> None:
    bank = load_question_bank()
    messages = build_messages("GSTP1 was hypermethylated in 91% of cancers.", bank)
    parsed = parse_prompt(messages)
    assert parsed.paper == "GSTP1 was hypermethylated in 91% of cancers."
    assert [question_id for question_id, _ in parsed.questions] == bank.ids


def test_chunk_wording_and_grounding_rules() -> None:
    bank = load_question_bank()
    whole = build_user_prompt("text", bank)
    part = build_user_prompt("text", bank, chunk_index=1, chunk_count=3)
    assert "full paper" in whole and "part 2 of 3" in part
    assert NOT_REPORTED in SYSTEM_PROMPT and NOT_REPORTED in part
    assert "verbatim" in SYSTEM_PROMPT
    messages = build_messages("text", bank)
    assert [message["role"] for message in messages] == ["system", "user"]


def test_question_lines_are_read_back_outside_the_paper_block() -> None:
    bank = load_question_bank()
    paper = "Line one of the paper.\n- [fake] a question line inside the paper"
    messages = build_messages(paper, bank)
    assert questions_in(messages) == [(question.id, question.text) for question in bank.questions]
    assert paper_text_in(messages) == paper
    assert format_question_line("markers", "Which markers?") == "- [markers] Which markers?"
    assert questions_in([{"role": "system", "content": "- [hidden] not a user question"}]) == []
