"""Reading the dataset stage's chat files: `{"messages": [{"role": ..., "content": ...}, ...]}` per line.

Training reads them through ms-swift; this module checks them before any expensive work starts and
gives inference and evaluation the prompt (everything before the last assistant turn) and the
reference answer (the last assistant turn). A question file may also hold `{"question": "..."}` lines.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict

ROLES = ("system", "user", "assistant")


class ChatExample(BaseModel):
    """One line of a chat file: the prompt messages and, when the line has one, the reference answer."""

    model_config = ConfigDict(extra="forbid")

    line: int
    prompt: list[dict[str, str]]
    reference: str | None

    @property
    def question(self) -> str:
        """The last user message of the prompt."""
        return next(m["content"] for m in reversed(self.prompt) if m["role"] == "user")


class ChatFileError(ValueError):
    """A chat file line that is not what the stages agreed on; the message names the file and line."""


def _parse_messages(raw: object, where: str) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise ChatFileError(f"{where}: 'messages' must be a non-empty list")
    messages: list[dict[str, str]] = []
    for index, message in enumerate(raw):
        if not isinstance(message, dict):
            raise ChatFileError(f"{where}: message {index} is not an object")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ChatFileError(f"{where}: message {index} has role {role!r}; expected one of {ROLES}")
        if not isinstance(content, str):
            raise ChatFileError(f"{where}: message {index} ({role}) has no text content")
        if role == "system" and index != 0:
            raise ChatFileError(f"{where}: a system message may only come first")
        messages.append({"role": role, "content": content})
    return messages


def iter_chat_examples(path: Path, *, require_reference: bool = False) -> Iterator[ChatExample]:
    """Examples of a chat JSONL file (blank lines skipped); raises `ChatFileError` naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such chat file")
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(text)
            except ValueError as exc:
                raise ChatFileError(f"{where}: not valid JSON ({exc})") from exc
            if not isinstance(row, dict):
                raise ChatFileError(f"{where}: expected a JSON object")
            if "messages" in row:
                messages = _parse_messages(row["messages"], where)
            elif isinstance(row.get("question"), str):
                messages = [{"role": "user", "content": row["question"]}]
                if isinstance(row.get("answer"), str):
                    messages.append({"role": "assistant", "content": row["answer"]})
            else:
                raise ChatFileError(f"{where}: expected a 'messages' list or a 'question' string")
            reference = None
            if messages[-1]["role"] == "assistant":
                reference = messages[-1]["content"]
                messages = messages[:-1]
            if not any(m["role"] == "user" for m in messages):
                raise ChatFileError(f"{where}: no user message before the answer")
            if require_reference and reference is None:
                raise ChatFileError(f"{where}: the last message must be the assistant's reference answer")
            yield ChatExample(line=number, prompt=messages, reference=reference)


def read_chat_examples(path: Path, *, require_reference: bool = False) -> list[ChatExample]:
    return list(iter_chat_examples(path, require_reference=require_reference))


def count_training_samples(path: Path) -> int:
    """Check every line of a training file (each must end with an assistant answer); return the count."""
    return sum(1 for _ in iter_chat_examples(path, require_reference=True))
