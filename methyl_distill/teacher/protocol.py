"""The teacher, as the extraction stage sees it: one small protocol.

`methyl_distill.teacher.openai_client.OpenAITeacher` implements it over the OpenAI SDK (any
OpenAI-compatible endpoint); tests pass fakes where they need one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel

from methyl_distill.extraction.records import TokenUsage

ModelT = TypeVar("ModelT", bound=BaseModel)
OutputMode = Literal["json_schema", "json_object", "prompt"]
ChatMessage = dict[str, str]


class TeacherError(Exception):
    """A request the teacher could not answer (after the client's own retries)."""


class RequestTooLargeError(TeacherError):
    """One request alone exceeds the token budget or the context: split the input further."""

    def __init__(self, message: str, *, requested_tokens: int, limit_tokens: int) -> None:
        super().__init__(message)
        self.requested_tokens = requested_tokens
        self.limit_tokens = limit_tokens


@dataclass
class TeacherReply(Generic[ModelT]):
    """The outcome of one structured request, re-asks included.

    `parsed` is set when the output validated; otherwise `error` says why and `raw_text` keeps the
    last raw output so the failure record can show it.
    """

    parsed: ModelT | None
    raw_text: str
    usage: TokenUsage = field(default_factory=TokenUsage)
    error: str | None = None
    mode: OutputMode = "json_schema"
    attempts: int = 1


class Teacher(Protocol):
    model: str

    def complete_structured(
        self, messages: list[ChatMessage], response_model: type[ModelT], *, max_tokens: int
    ) -> TeacherReply[ModelT]:
        """Ask for output validating against `response_model`; raise `TeacherError` if no answer came."""
        ...
