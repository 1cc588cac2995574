"""The teacher's prompts.

The system prompt sets the task and the grounding rules; the user message carries the paper text
between a line `<paper>` and a line `</paper>`, and the questions as lines `- [question_id] text`
(the project's test server parses exactly this layout). The expected output is the JSON schema of
`records.TeacherExtraction`, which the teacher client sends as a structured-output schema or, for
endpoints without one, spells out itself.

The extraction cache key digests the wording itself (`prompt_template`), so a change to it
re-extracts every paper without anybody bumping a version; `PROMPT_VERSION` is a label recorded in
each record.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from methyl_distill.extraction.question_bank import Question, QuestionBank
from methyl_distill.teacher.protocol import ChatMessage
from methyl_distill.text.not_reported import NOT_REPORTED

__all__ = [
    "MAX_ADDITIONAL_QA",
    "NOT_REPORTED",
    "PROMPT_VERSION",
    "SYSTEM_PROMPT",
    "build_messages",
    "build_user_prompt",
    "format_question_line",
    "format_questions",
    "paper_text_in",
    "prompt_template",
    "questions_in",
]

PROMPT_VERSION = "1"

MAX_ADDITIONAL_QA = 5

SYSTEM_PROMPT = f"""\
You are an expert in cancer epigenetics and DNA-methylation biomarkers. You read research papers and \
extract, for researchers, exactly what a paper reports about DNA-methylation markers.

Rules:
- Use only the paper text you are given. Never add facts from memory or from other studies.
- Answer every listed question, using its id as question_id. When the text does not answer a \
question, answer exactly "{NOT_REPORTED}" with no evidence.
- Support every answer with evidence: short verbatim quotes copied character for character from the \
paper (one sentence or less each). Do not paraphrase inside a quote.
- Report numbers as the paper states them (percentages, confidence intervals, p-values, cohort sizes).
- List every methylation marker in `markers`: the marker as named, its HGNC gene symbol, CpG probe \
ids (cg########) or coordinates, region (promoter, CpG island, ...), direction of the methylation \
change in the condition relative to controls (hypermethylated, hypomethylated, mixed, or not_stated), \
condition, sample types, assays, clinical uses, performance (sensitivity, specificity and AUC as \
fractions between 0 and 1, cohort size as a count; null when not reported), related markers, \
mutations or expression changes, and verbatim evidence.
- Add up to {MAX_ADDITIONAL_QA} further question-answer pairs in `additional_qa` that a \
methylation researcher would ask about this paper and that the text answers, each with verbatim evidence.
- Reply with a single JSON object and nothing else."""


# A question line of the user message, `- [question_id] question text`: written by
# `format_question_line`, read back by `questions_in` (the test server answers from it).
_QUESTION_LINE = re.compile(r"^- \[([^\]\n]+)\] (.+?)[ \t]*$", re.MULTILINE)


def format_question_line(question_id: str, text: str) -> str:
    return f"- [{question_id}] {text}"


def format_questions(bank: QuestionBank) -> str:
    lines = []
    for question in bank.questions:
        lines.append(format_question_line(question.id, question.text))
        if question.guidance:
            lines.append(f"  Guidance: {question.guidance}")
    return "\n".join(lines)


def build_user_prompt(
    paper_text: str, bank: QuestionBank, *, chunk_index: int = 0, chunk_count: int = 1
) -> str:
    """The user message for one paper or one chunk of it (`chunk_index` counts from 0)."""
    if chunk_count > 1:
        scope = (
            f"The text below is part {chunk_index + 1} of {chunk_count} of a longer paper; neighbouring "
            "parts overlap slightly. Answer from this part only: where this part does not answer a "
            f'question, answer "{NOT_REPORTED}". Answers from all parts are merged afterwards.'
        )
    else:
        scope = "The text below is the full paper."
    return (
        f"{scope}\n\n<paper>\n{paper_text}\n</paper>\n\n"
        f"Answer each of these questions about the paper:\n{format_questions(bank)}\n\n"
        "Then list the methylation markers and add grounded question-answer pairs, as instructed."
    )


def build_messages(
    paper_text: str, bank: QuestionBank, *, chunk_index: int = 0, chunk_count: int = 1
) -> list[ChatMessage]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {
            "role": "user",
            "content": build_user_prompt(paper_text, bank, chunk_index=chunk_index, chunk_count=chunk_count),
        },
    ]


def prompt_template() -> str:
    """The prompt with placeholders for the paper and the questions, in the wording of a whole paper
    and of a chunk: everything of a request that is neither the paper nor the question bank."""
    placeholder = QuestionBank(
        version="template",
        questions=(Question(id="question_id", text="{question text}", guidance="{guidance}"),),
    )
    wordings = [
        build_messages("{paper}", placeholder),
        build_messages("{paper}", placeholder, chunk_index=0, chunk_count=2),
    ]
    return "\n\n".join(message["content"] for messages in wordings for message in messages)


_PAPER_BLOCK = re.compile(r"^<paper>\n(.*?)\n</paper>$", re.DOTALL | re.MULTILINE)


def _user_texts(messages: Sequence[ChatMessage]) -> Iterator[str]:
    for message in messages:
        content = message.get("content")
        if message.get("role") == "user" and isinstance(content, str):
            yield content


def paper_text_in(messages: Sequence[ChatMessage]) -> str | None:
    """The paper text of a request built by `build_messages` (the first user message's <paper>
    block), or None when no message carries one."""
    for content in _user_texts(messages):
        match = _PAPER_BLOCK.search(content)
        if match:
            return match.group(1)
    return None


def questions_in(messages: Sequence[ChatMessage]) -> list[tuple[str, str]]:
    """The (question_id, text) of every question line of the user messages, outside the <paper>
    block (a paper may contain such lines), in order, each id once (its first line)."""
    questions: dict[str, str] = {}
    for content in _user_texts(messages):
        match = _PAPER_BLOCK.search(content)
        if match:
            content = content[: match.start()] + content[match.end() :]
        for question_id, text in _QUESTION_LINE.findall(content):
            questions.setdefault(question_id, text)
    return list(questions.items())
