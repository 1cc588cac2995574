"""The files and batches endpoints of the OpenAI test server: OpenAI's Batch API, in memory.

Routes (`BatchEndpoints.handle`, called from `server.TestServerApp`):

- `POST /v1/files` (multipart: `file`, `purpose`), `GET /v1/files/{id}`, `GET /v1/files/{id}/content`;
- `POST /v1/batches`, `GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`, `GET /v1/batches`.

The bodies are those of OpenAI's API, so the real openai SDK parses them (`openai.types.FileObject`,
`openai.types.Batch`). A batch moves through `validating`, `in_progress`, `finalizing` and `completed`
(or `failed`, `cancelling`/`cancelled`) on the timing of `BatchServerConfig`, in fractions of a
second for tests. Each line is answered by the same completion code as the online endpoint
(`TestServerApp._completion`, run on a state of its own so that batch lines never touch the online
TPM bucket), its output going to the output file and failed lines (a status other than 200) to the
error file, as OpenAI does.

Faults come from the server's fault rules (`FaultRule`, by count, probability or marker), for the
kinds a batch line can meet: `server_error` / `service_unavailable` (a failed line, 500 / 503),
`content_rejected` (a failed line, 400), `invalid_json`, `truncated`, `empty_content` (the reply's
content, status 200), and `drop_connection`: the line is in neither file.

The enqueued-token limit (`queue_tokens`): a batch whose prompt tokens (the server's own count) do
not fit beside the batches in progress fails at the end of validation with `token_limit_exceeded`,
as OpenAI's does.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.fake_openai.state import TestServerState, server_count_tokens

if TYPE_CHECKING:
    from tests.fake_openai.server import TestServerApp

BATCH_ENDPOINT = "/v1/chat/completions"
OPEN = ("validating", "in_progress", "finalizing", "cancelling")
# Fault kinds that apply to a batch line; the others are the online endpoint's.
LINE_FAULTS = frozenset(
    {
        "server_error",
        "service_unavailable",
        "content_rejected",
        "invalid_json",
        "truncated",
        "empty_content",
        "drop_connection",
    }
)


class BatchServerConfig(BaseModel):
    """Timing and limits of the batches endpoints."""

    model_config = ConfigDict(extra="forbid")

    validating_s: float = Field(default=0.05, ge=0, description="Time a batch spends validating.")
    in_progress_s: float = Field(default=0.1, ge=0, description="Time in progress, whatever the lines.")
    seconds_per_line: float = Field(default=0.0, ge=0, description="Added time in progress per line.")
    finalizing_s: float = Field(default=0.05, ge=0, description="Time a batch spends finalizing.")
    queue_tokens: int | None = Field(
        default=None, gt=0, description="Enqueued-token limit (prompt tokens of unfinished batches)."
    )


def _error(
    message: str, code: str | None = None, status: int = 400, param: str | None = None
) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """The server's prompt count of a request, as the chat endpoint counts it."""
    texts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
    return sum(server_count_tokens(text) + 4 for text in texts) + 3


@dataclass
class BatchStats:
    """What the batches endpoints did (read with `BatchEndpoints.stats`)."""

    files_uploaded: int = 0
    batches_created: int = 0
    lines_answered: int = 0
    lines_failed: int = 0
    lines_dropped: int = 0
    token_limit_failures: int = 0
    cancelled: int = 0
    max_enqueued_tokens: int = 0
    batch_sizes: list[int] = field(default_factory=list)


@dataclass
class _Batch:
    body: dict[str, Any]
    tokens: int = 0
    cancel_requested: bool = False


class BatchEndpoints:
    """The files and batches of one test server (see the module docstring)."""

    def __init__(self, app: TestServerApp, config: BatchServerConfig | None = None) -> None:
        self.app = app
        self.config = config or BatchServerConfig()
        self.files: dict[str, tuple[dict[str, Any], bytes]] = {}
        self.batches: dict[str, _Batch] = {}
        self._stats = BatchStats()
        self._lock = threading.Lock()
        self._answering_app: TestServerApp | None = None

    # -- routing --------------------------------------------------------------------------------
    @staticmethod
    def serves(path: str) -> bool:
        return path == "/v1/files" or path.startswith(("/v1/files/", "/v1/batches"))

    async def handle(self, request: Request, path: str, method: str) -> Response:
        parts = path.strip("/").split("/")  # v1, files|batches, [id], [content|cancel]
        kind, rest = parts[1], parts[2:]
        if kind == "files":
            if method == "POST" and not rest:
                return await self._upload(request)
            if method == "GET" and len(rest) == 1 and rest[0] in self.files:
                return JSONResponse(self.files[rest[0]][0])
            if method == "GET" and len(rest) == 2 and rest[1] == "content" and rest[0] in self.files:
                return Response(self.files[rest[0]][1], media_type="application/octet-stream")
            if rest and rest[0] not in self.files:
                return _error(f"No such File object: {rest[0]}", None, 404, "id")
        elif kind == "batches":
            if method == "POST" and not rest:
                return await self._create(request)
            if method == "GET" and not rest:
                return self._list(request)
            if rest and rest[0] not in self.batches:
                return _error(f"No batch found with id '{rest[0]}'.", None, 404)
            if method == "GET" and len(rest) == 1:
                return JSONResponse(self.batches[rest[0]].body)
            if method == "POST" and len(rest) == 2 and rest[1] == "cancel":
                return self._cancel(rest[0])
        return _error(f"Unknown route {method} {path}", None, 404)

    def stats(self) -> BatchStats:
        with self._lock:
            return BatchStats(**{**self._stats.__dict__, "batch_sizes": list(self._stats.batch_sizes)})

    # -- files ----------------------------------------------------------------------------------
    def _add_file(self, data: bytes, filename: str, purpose: str) -> str:
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        self.files[file_id] = (
            {
                "id": file_id,
                "object": "file",
                "bytes": len(data),
                "created_at": int(time.time()),
                "filename": filename,
                "purpose": purpose,
                "status": "processed",
                "expires_at": None,
                "status_details": None,
            },
            data,
        )
        return file_id

    async def _upload(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            return _error("Expected a multipart/form-data upload.")
        raw = await request.body()
        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw
        )
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                fields[name] = (part.get_filename(), payload)
        if "file" not in fields or "purpose" not in fields:
            return _error("'file' and 'purpose' are required.", param="file")
        filename, data = fields["file"]
        purpose = fields["purpose"][1].decode()
        if purpose != "batch":
            return _error(f"This test server takes purpose 'batch' only, not {purpose!r}.", param="purpose")
        with self._lock:
            self._stats.files_uploaded += 1
        file_id = self._add_file(data, filename or "upload.jsonl", purpose)
        return JSONResponse(self.files[file_id][0])

    # -- batches --------------------------------------------------------------------------------
    async def _create(self, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return _error("We could not parse the JSON body of your request.")
        input_file_id = body.get("input_file_id")
        if input_file_id not in self.files:
            return _error(f"No such File object: {input_file_id}", param="input_file_id")
        if body.get("endpoint") != BATCH_ENDPOINT:
            return _error(f"This test server batches {BATCH_ENDPOINT} only.", param="endpoint")
        if body.get("completion_window") != "24h":
            return _error("completion_window must be '24h'.", param="completion_window")
        now = int(time.time())
        batch_id = f"batch_{uuid.uuid4().hex[:24]}"
        self.batches[batch_id] = _Batch(
            {
                "id": batch_id,
                "object": "batch",
                "endpoint": BATCH_ENDPOINT,
                "errors": None,
                "input_file_id": input_file_id,
                "completion_window": "24h",
                "status": "validating",
                "output_file_id": None,
                "error_file_id": None,
                "created_at": now,
                "in_progress_at": None,
                "expires_at": now + 24 * 3600,
                "finalizing_at": None,
                "completed_at": None,
                "failed_at": None,
                "expired_at": None,
                "cancelling_at": None,
                "cancelled_at": None,
                "request_counts": {"total": 0, "completed": 0, "failed": 0},
                "metadata": body.get("metadata"),
            }
        )
        with self._lock:
            self._stats.batches_created += 1
        asyncio.get_running_loop().create_task(self._work(batch_id))
        return JSONResponse(self.batches[batch_id].body)

    def _list(self, request: Request) -> Response:
        limit = int(request.query_params.get("limit", 20))
        after = request.query_params.get("after")
        ordered = [batch.body for batch in reversed(list(self.batches.values()))]
        if after is not None:
            ids = [body["id"] for body in ordered]
            ordered = ordered[ids.index(after) + 1 :] if after in ids else []
        page = ordered[:limit]
        return JSONResponse(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(ordered) > limit,
            }
        )

    def _cancel(self, batch_id: str) -> Response:
        batch = self.batches[batch_id]
        status = batch.body["status"]
        if status not in OPEN or status == "cancelling":
            if status == "cancelling":
                return JSONResponse(batch.body)
            return _error(f"Cannot cancel a batch with status '{status}'.")
        batch.cancel_requested = True
        batch.body.update(status="cancelling", cancelling_at=int(time.time()))
        return JSONResponse(batch.body)

    def _enqueued_tokens(self, besides: str) -> int:
        return sum(
            batch.tokens
            for batch_id, batch in self.batches.items()
            if batch_id != besides and batch.body["status"] in ("in_progress", "finalizing", "cancelling")
        )

    async def _work(self, batch_id: str) -> None:
        batch = self.batches[batch_id]
        body = batch.body
        await self.app._sleep(self.config.validating_s)
        lines, problem = self._read_input(body["input_file_id"])
        if problem is None and not batch.cancel_requested:
            batch.tokens = sum(_prompt_tokens(line["body"].get("messages") or []) for line in lines)
            enqueued = self._enqueued_tokens(batch_id)
            limit = self.config.queue_tokens
            if limit is not None and enqueued + batch.tokens > limit:
                with self._lock:
                    self._stats.token_limit_failures += 1
                problem = {
                    "code": "token_limit_exceeded",
                    "message": f"Enqueued token limit reached for gpt-4o in organization org-test. Limit: "
                    f"{limit} enqueued tokens. Please try again once some in_progress batches have been "
                    "completed.",
                    "param": None,
                    "line": None,
                }
        if problem is not None:
            body.update(
                status="failed", failed_at=int(time.time()), errors={"object": "list", "data": [problem]}
            )
            return
        if batch.cancel_requested:
            self._end_cancelled(body, [], [])
            return
        with self._lock:
            self._stats.batch_sizes.append(len(lines))
            self._stats.max_enqueued_tokens = max(
                self._stats.max_enqueued_tokens, self._enqueued_tokens(batch_id) + batch.tokens
            )
        body.update(
            status="in_progress",
            in_progress_at=int(time.time()),
            request_counts={"total": len(lines), "completed": 0, "failed": 0},
        )
        await self._sleep_unless_cancelled(batch, self.config.in_progress_s)
        outputs: list[str] = []
        errors: list[str] = []
        for line in lines:
            if batch.cancel_requested:
                self._end_cancelled(body, outputs, errors)
                return
            await self._sleep_unless_cancelled(batch, self.config.seconds_per_line)
            result = self._answer(line)
            if result is None:
                continue
            status = result["response"]["status_code"]
            (outputs if status == 200 else errors).append(json.dumps(result))
            counts = body["request_counts"]
            counts["completed" if status == 200 else "failed"] += 1
        body.update(status="finalizing", finalizing_at=int(time.time()))
        await self.app._sleep(self.config.finalizing_s)
        self._write_results(body, outputs, errors)
        body.update(status="completed", completed_at=int(time.time()))

    async def _sleep_unless_cancelled(self, batch: _Batch, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not batch.cancel_requested and (left := end - time.monotonic()) > 0:
            await self.app._sleep(min(left, 0.02))

    def _end_cancelled(self, body: dict[str, Any], outputs: list[str], errors: list[str]) -> None:
        self._write_results(body, outputs, errors)
        body.update(status="cancelled", cancelled_at=int(time.time()))
        with self._lock:
            self._stats.cancelled += 1

    def _write_results(self, body: dict[str, Any], outputs: list[str], errors: list[str]) -> None:
        if outputs:
            body["output_file_id"] = self._add_file(
                "".join(line + "\n" for line in outputs).encode(),
                f"{body['id']}_output.jsonl",
                "batch_output",
            )
        if errors:
            body["error_file_id"] = self._add_file(
                "".join(line + "\n" for line in errors).encode(), f"{body['id']}_error.jsonl", "batch_output"
            )

    def _read_input(self, file_id: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        text = self.files[file_id][1].decode("utf-8", errors="replace")
        lines = []
        seen: set[str] = set()
        for number, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                custom_id, body = line["custom_id"], line["body"]
                if line.get("url") != BATCH_ENDPOINT or line.get("method") != "POST":
                    raise ValueError(f"url must be {BATCH_ENDPOINT} with method POST")
                if custom_id in seen:
                    raise ValueError(f"duplicate custom_id {custom_id!r}")
                if not isinstance(body, dict):
                    raise ValueError("body is not an object")
            except (ValueError, KeyError, TypeError) as exc:
                return [], {"code": "invalid_request", "message": str(exc), "param": None, "line": number}
            seen.add(custom_id)
            lines.append(line)
        if not lines:
            return [], {"code": "empty_file", "message": "The input file has no requests.", "param": None}
        return lines, None

    # -- one line -------------------------------------------------------------------------------
    def _answer(self, line: dict[str, Any]) -> dict[str, Any] | None:
        """The result line of one request, or None when the fault drops it."""
        custom_id, body = line["custom_id"], line["body"]
        config = self.app.state.config
        messages = body.get("messages")
        request_id = f"req_{uuid.uuid4().hex[:24]}"

        def failed(status: int, message: str, code: str | None) -> dict[str, Any]:
            with self._lock:
                self._stats.lines_failed += 1
            kind = "invalid_request_error" if status < 500 else "server_error"
            error = {"message": message, "type": kind, "param": None, "code": code}
            return {
                "id": f"batch_req_{uuid.uuid4().hex[:24]}",
                "custom_id": custom_id,
                "response": {"status_code": status, "request_id": request_id, "body": {"error": error}},
                "error": None,
            }

        if body.get("model") not in config.models:
            return failed(404, f"The model `{body.get('model')}` does not exist.", "model_not_found")
        if not isinstance(messages, list) or not messages:
            return failed(400, "'messages' must be a non-empty array.", None)
        response_format = body.get("response_format") or {"type": "text"}
        format_type = response_format.get("type") if isinstance(response_format, dict) else None
        if format_type == "json_schema" and config.json_schema != "supported":
            return failed(
                400,
                "Invalid parameter: 'response_format' of type 'json_schema' is not supported with this "
                "model.",
                None,
            )
        prompt_tokens = _prompt_tokens(messages)
        max_tokens = int(
            body.get("max_completion_tokens") or body.get("max_tokens") or config.default_max_tokens
        )
        if prompt_tokens + max_tokens > config.context_tokens:
            return failed(
                400,
                f"This model's maximum context length is {config.context_tokens} tokens. However, you "
                f"requested {prompt_tokens + max_tokens} tokens.",
                "context_length_exceeded",
            )
        joined = "\n".join(m["content"] for m in messages if isinstance(m.get("content"), str))
        fault = self.app.state.pick_fault(joined, LINE_FAULTS)
        if fault is not None:
            self.app.state.stats.fault(fault)
        if fault == "drop_connection":
            with self._lock:
                self._stats.lines_dropped += 1
            return None
        if fault in ("server_error", "service_unavailable"):
            status = 500 if fault == "server_error" else 503
            return failed(status, "The server had an error while processing your request.", None)
        if fault == "content_rejected":
            return failed(400, "Invalid prompt: your prompt was flagged.", "invalid_prompt")
        answering = self._answering()
        response = answering._completion(body, messages, format_type, max_tokens, prompt_tokens, 0, fault)
        with self._lock:
            self._stats.lines_answered += 1
        return {
            "id": f"batch_req_{uuid.uuid4().hex[:24]}",
            "custom_id": custom_id,
            "response": {
                "status_code": 200,
                "request_id": request_id,
                "body": json.loads(bytes(response.body)),
            },
            "error": None,
        }

    def _answering(self) -> TestServerApp:
        """An app over a state of its own, whose `_completion` answers batch lines: its settlements
        and counters are not the online endpoint's (a batch has its own limits)."""
        if self._answering_app is None:
            from tests.fake_openai.server import TestServerApp  # the server imports this module

            config = self.app.state.config.model_copy(update={"faults": [], "accounting": "admission"})
            self._answering_app = TestServerApp(TestServerState(config))
        return self._answering_app
