"""The teacher, as the extraction stage sees it: one small protocol.

`methyl_distill.teacher.openai_client.OpenAITeacher` implements it over the OpenAI SDK (any
OpenAI-compatible endpoint); tests pass fakes where they need one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel

if TYPE_CHECKING:
    from methyl_distill.teacher.config import TeacherConfig

ModelT = TypeVar("ModelT", bound=BaseModel)
OutputMode = Literal["json_schema", "json_object", "prompt"]
ChatMessage = dict[str, str]

# How the error of a reply cut off by max_tokens (finish_reason=length) starts.
TRUNCATED_OUTPUT = "output truncated"


class TokenUsage(BaseModel):
    """Tokens and requests spent: what every call reports and every record adds up."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            requests=self.requests + other.requests,
        )


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
    last raw output so the failure record can show it. `truncated` says that the last reply was cut
    off by max_tokens (its error then starts with `TRUNCATED_OUTPUT`): a smaller input may help.
    """

    parsed: ModelT | None
    raw_text: str
    usage: TokenUsage = field(default_factory=TokenUsage)
    error: str | None = None
    mode: OutputMode = "json_schema"
    attempts: int = 1
    truncated: bool = False


class Teacher(Protocol):
    model: str
    # The endpoint, model, output mode and grammar the answers come from: the extraction cache key
    # is made of them (`TeacherConfig.answer_identity`).
    config: TeacherConfig

    def complete_structured(
        self,
        messages: list[ChatMessage],
        response_model: type[ModelT],
        *,
        max_tokens: int,
        source_text: str | None = None,
    ) -> TeacherReply[ModelT]:
        """Ask for output validating against `response_model`; raise `TeacherError` if no answer came.

        `source_text` is the text the messages ask about (a paper or a chunk of it), given as it is:
        a client that grounds its output in the source (a grammar of the text's sentences) uses it.
        """
        ...
