"""The structured-output mode of one endpoint: decided once, on the endpoint's own word.

The modes, most to least strict (`structured_output.MODES`): `json_schema`, `json_object` with the
schema in the prompt, the prompt only. A configured mode is used as it is. `auto` starts with
`json_schema` and moves one step down only when the endpoint answers that it does not support the
`response_format` it was sent (`says_output_mode_unsupported`): OpenAI's 400 "Invalid parameter:
'response_format' of type 'json_schema' is not supported with this model", llama.cpp's
"response_format type must be one of ...", the request validation error of vLLM or llama-cpp-python
("Input should be 'text' or 'json_object'", as a 400, a 422 or a 500), LM Studio's "must be
'json_schema' or 'text'". The first reply the endpoint answers in a mode settles it.

Nothing else moves it: a 400 for one request's content, server errors, timeouts, a page that is no
completion, a schema the endpoint calls invalid (that is the schema's fault, and a weaker mode would
only hide it). Falling back on any error made one refused request before the first success switch
every later request of the run to a weaker mode, whose answers were then cached like strict ones.

One `EndpointOutputMode` serves every request of a run (the teacher client holds it) and is
thread-safe: concurrent requests that meet the same refusal move it down once.
"""

from __future__ import annotations

import logging
import re
import threading

from methyl_distill.teacher.config import OutputModeSetting
from methyl_distill.teacher.protocol import OutputMode
from methyl_distill.teacher.structured_output import MODES

logger = logging.getLogger(__name__)

# Statuses an endpoint answers an unknown response_format with: OpenAI and llama.cpp 400, FastAPI
# servers 422 (or 400, vLLM), llama-cpp-python 500 (its error handler wraps the validation error).
_REFUSAL_STATUSES = frozenset({400, 404, 415, 422, 500, 501})
_UNSUPPORTED_WORDING = re.compile(
    r"not supported|unsupported|n['o]t support|does not support|not implemented|not available|"
    r"not allowed|not permitted|invalid parameter|invalid value|unknown|unrecogni[sz]ed|"
    r"input should be|must be|expected one of",
    re.IGNORECASE,
)
# "Invalid schema for response_format ...": the endpoint knows the mode and rejects our schema.
_SCHEMA_PROBLEM = re.compile(r"invalid schema|invalid json schema", re.IGNORECASE)


def says_output_mode_unsupported(status: int, message: str, mode: OutputMode) -> bool:
    """Whether an error answer to a request sent in `mode` says the endpoint does not support that
    response_format (not that something else about the request was wrong)."""
    if mode == "prompt" or status not in _REFUSAL_STATUSES:
        return False  # the prompt mode sends no response_format to refuse
    text = message.lower()
    names_the_format = "response_format" in text or "response format" in text or mode in text
    return (
        names_the_format
        and _UNSUPPORTED_WORDING.search(message) is not None
        and _SCHEMA_PROBLEM.search(message) is None
    )


class EndpointOutputMode:
    """The mode every request of a run uses (see the module docstring)."""

    def __init__(self, setting: OutputModeSetting) -> None:
        self.setting = setting
        self._auto = setting == "auto"
        self._mode: OutputMode = MODES[0] if self._auto else _as_mode(setting)
        self._settled = not self._auto
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"EndpointOutputMode(setting={self.setting!r}, mode={self.current!r}, settled={self.settled})"

    @property
    def current(self) -> OutputMode:
        """The mode the next request uses."""
        with self._lock:
            return self._mode

    @property
    def settled(self) -> OutputMode | None:
        """The configured mode, or in `auto` the mode the endpoint answered in; None until it has."""
        with self._lock:
            return self._mode if self._settled else None

    def answered(self, mode: OutputMode) -> None:
        """The endpoint answered a request sent in `mode`: in `auto`, that settles the mode."""
        with self._lock:
            if self._settled or mode != self._mode:
                return
            self._settled = True
        logger.info("the endpoint answers in output mode %s; every request of the run uses it", mode)

    def refused(self, mode: OutputMode, detail: str) -> bool:
        """The endpoint said it does not support `mode` (`says_output_mode_unsupported`). True when the
        request should be sent again in `current` (one step down, or where another request already
        moved it); False when the refusal stands (a configured or settled mode, or nothing weaker)."""
        with self._lock:
            if mode != self._mode:
                # A concurrent request met the same refusal and moved the mode already (and may have
                # been answered in it, settling it, before this refusal came back).
                return True
            if self._settled:
                return False
            if mode == MODES[-1]:
                return False
            self._mode = MODES[MODES.index(mode) + 1]
            following = self._mode
        logger.warning("the endpoint does not support output mode %s (%s): using %s", mode, detail, following)
        return True


def _as_mode(setting: OutputModeSetting) -> OutputMode:
    for mode in MODES:
        if mode == setting:
            return mode
    raise ValueError(f"unknown output mode {setting!r}: one of auto, {', '.join(MODES)}")
