"""The project's own OpenAI-compatible HTTP server, for tests and benchmarks.

It speaks the parts of the Chat Completions API the teacher uses (`/v1/models`,
`/v1/chat/completions`, non-streaming; the Batch API's files and batches: `tests.fake_openai.batches`)
and enforces TPM and RPM as OpenAI documents it: a request is
charged at admission (estimated prompt tokens + max_tokens), one request alone above the TPM limit
is refused outright ("Request too large"), the charge is settled to the actual usage when the
response completes (`accounting="settle"`) or kept for the whole window as OpenAI's rate-limit guide
describes (`accounting="admission"`), the buckets refill continuously, and every response carries
`x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (429s also `retry-after`).

Its answers are grounded `TeacherExtraction` JSON (`tests.fake_openai.extractive_answers`), and every
completion names the server itself as the model that answered (`reported_model`), whichever of its
model aliases the request named: its replies never pass for a real model's. Faults are
injected on demand, by count, by seeded probability or by a marker string in the request text:
see `FaultRule`. Stats (requests, 429s, tokens charged over time, faults) are readable in-process
from `ServerHandle.stats()` or over HTTP at `GET /control/stats`.

In tests: `with running_test_server(OpenAITestServerConfig(...)) as server: server.base_url`.
From a shell: `python -m tests.fake_openai.server --port 8123 --tpm 200000 --latency 10 20`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, get_args

import uvicorn
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from methyl_distill.teacher.rate_limit_headers import format_reset_duration
from tests.fake_openai.batches import BatchEndpoints, BatchServerConfig
from tests.fake_openai.extractive_answers import extract_grounded, parse_prompt
from tests.fake_openai.state import (
    FaultKind,
    FaultRule,
    OpenAITestServerConfig,
    RateLimitAccounting,
    StatsSnapshot,
    TestServerState,
    cut_to_tokens,
    server_count_tokens,
)

# What a reverse proxy in front of a model server may send, with status 200, when the upstream fails.
PROXY_ERROR_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
    "<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>\n"
)

# Every fault but a 429, which is decided before admission: these hit requests the limits let in.
ADMITTED_REQUEST_FAULTS: frozenset[str] = frozenset(get_args(FaultKind)) - {"rate_limit"}


def _message_texts(messages: list[dict[str, Any]]) -> list[str]:
    texts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(part["text"] for part in content if isinstance(part, dict) and "text" in part)
    return texts


def _error_body(message: str, error_type: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def strict_schema_problem(schema: Any, path: str = "#") -> str | None:
    """Why a schema is not valid for OpenAI's strict mode, or None: every object needs
    additionalProperties false and all its properties required."""
    if isinstance(schema, dict):
        if schema.get("type") == "object" or "properties" in schema:
            properties = schema.get("properties", {})
            if schema.get("additionalProperties") is not False:
                return (
                    f"In context={path}, 'additionalProperties' is required to be supplied and to be false."
                )
            missing = sorted(set(properties) - set(schema.get("required", [])))
            if missing:
                return (
                    f"In context={path}, 'required' is required to include every property; missing {missing}."
                )
        for key, value in schema.items():
            problem = strict_schema_problem(value, f"{path}/{key}")
            if problem:
                return problem
    elif isinstance(schema, list):
        for index, value in enumerate(schema):
            problem = strict_schema_problem(value, f"{path}/{index}")
            if problem:
                return problem
    return None


class TestServerApp:
    """The ASGI application."""

    __test__ = False

    def __init__(self, state: TestServerState, batch_config: BatchServerConfig | None = None) -> None:
        self.state = state
        self.shutdown = asyncio.Event()
        self.batches = BatchEndpoints(self, batch_config)  # /v1/files and /v1/batches

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        path, method = scope["path"].rstrip("/"), scope["method"]
        required = self.state.config.api_key
        sent = request.headers.get("authorization", "").removeprefix("Bearer ")
        if required is not None and path.startswith("/v1/") and sent != required:
            response: Response | None = JSONResponse(
                _error_body(
                    f"Incorrect API key provided: {sent}.", "invalid_request_error", "invalid_api_key"
                ),
                401,
            )
        elif path == "/v1/chat/completions" and method == "POST":
            response = await self.chat_completions(request, receive)
        elif path == "/v1/models" and method == "GET":
            response = JSONResponse(
                {
                    "object": "list",
                    "data": [
                        {"id": m, "object": "model", "created": 0, "owned_by": "methyl-distill"}
                        for m in self.state.config.models
                    ],
                }
            )
        elif path == "/control/stats" and method == "GET":
            response = JSONResponse(self.state.stats.snapshot().model_dump(mode="json"))
        elif path == "/control/faults" and method == "POST":
            response = await self.add_faults(request)
        elif path == "/control/faults" and method == "DELETE":
            self.state.clear_faults()
            response = JSONResponse({"cleared": True})
        elif BatchEndpoints.serves(path):
            response = await self.batches.handle(request, path, method)
        else:
            response = JSONResponse(
                _error_body(f"Unknown route {method} {path}", "invalid_request_error"), 404
            )
        if response is not None:
            await response(scope, receive, send)

    async def add_faults(self, request: Request) -> Response:
        try:
            body = await request.json()
            rules = [FaultRule.model_validate(item) for item in (body if isinstance(body, list) else [body])]
        except (ValueError, ValidationError) as exc:
            return JSONResponse(_error_body(f"Invalid fault rule: {exc}", "invalid_request_error"), 400)
        for rule in rules:
            self.state.add_fault(rule)
        return JSONResponse({"added": len(rules)})

    def _json(self, body: dict, status: int = 200, extra: dict[str, str] | None = None) -> JSONResponse:
        headers = self.state.rate_limit_headers()
        headers["x-request-id"] = f"req_{uuid.uuid4().hex[:24]}"
        headers.update(extra or {})
        self.state.stats.response(status)
        return JSONResponse(body, status, headers=headers)

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.shutdown.wait(), timeout=seconds)

    async def _drop(self, receive: Any) -> None:
        """Close the socket without sending a response (uvicorn's cycle owns the transport)."""
        cycle = getattr(receive, "__self__", None)
        transport = getattr(cycle, "transport", None)
        if transport is None:
            raise ConnectionAbortedError("dropped connection (transport not reachable)")
        transport.close()
        for _ in range(20):  # let connection_lost mark the cycle disconnected, so uvicorn sends no 500
            if getattr(cycle, "disconnected", True):
                break
            await asyncio.sleep(0)

    def _too_many(self, wait_s: float, charge: int, model: str) -> JSONResponse:
        self.state.stats.rate_limited()
        limit = self.state.config.tokens_per_minute
        used = self.state.used_tokens()
        message = (
            f"Rate limit reached for {model} in organization org-test on tokens per min (TPM): "
            f"Limit {limit}, Used {used}, Requested {charge}. "
            f"Please try again in {format_reset_duration(wait_s)}."
        )
        return self._json(
            _error_body(message, "tokens", "rate_limit_exceeded"),
            429,
            {"retry-after": str(max(1, math.ceil(wait_s))), "retry-after-ms": str(math.ceil(wait_s * 1000))},
        )

    async def chat_completions(self, request: Request, receive: Any) -> Response | None:
        state, config = self.state, self.state.config
        state.stats.request()
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("body is not an object")
        except ValueError as exc:
            return self._json(
                _error_body(
                    f"We could not parse the JSON body of your request: {exc}", "invalid_request_error"
                ),
                400,
            )
        model, messages = body.get("model"), body.get("messages")
        if model not in config.models:
            return self._json(
                _error_body(
                    f"The model `{model}` does not exist or you do not have access to it.",
                    "invalid_request_error",
                    "model_not_found",
                ),
                404,
            )
        if not isinstance(messages, list) or not messages:
            return self._json(
                _error_body(
                    "'messages' must be a non-empty array.", "invalid_request_error", param="messages"
                ),
                400,
            )
        if body.get("stream"):
            return self._json(
                _error_body(
                    "stream=true is not supported by this test server.",
                    "invalid_request_error",
                    param="stream",
                ),
                400,
            )
        response_format = body.get("response_format") or {"type": "text"}
        format_type = response_format.get("type") if isinstance(response_format, dict) else None
        state.stats.request_format(str(format_type))
        if format_type == "json_schema":
            if config.json_schema == "rejected_500":
                # What llama-cpp-python's server answers: its request model knows text and json_object
                # only, and its error handler turns the validation error into a 500.
                message = (
                    "[{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
                    "'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}]"
                )
                return self._json(
                    {
                        "error": {
                            "message": message,
                            "type": "internal_server_error",
                            "param": None,
                            "code": None,
                        }
                    },
                    500,
                )
            if config.json_schema == "rejected_400":
                return self._json(
                    _error_body(
                        "Invalid parameter: 'response_format' of type 'json_schema' is not "
                        "supported with this model.",
                        "invalid_request_error",
                        param="response_format",
                    ),
                    400,
                )
            spec = response_format.get("json_schema") or {}
            problem = strict_schema_problem(spec.get("schema")) if spec.get("strict") else None
            if problem or not isinstance(spec.get("schema"), dict):
                return self._json(
                    _error_body(
                        f"Invalid schema for response_format '{spec.get('name')}': "
                        f"{problem or 'schema missing'}",
                        "invalid_request_error",
                        param="response_format",
                    ),
                    400,
                )
        elif format_type not in ("json_object", "text"):
            return self._json(
                _error_body(
                    f"Invalid value for 'response_format.type': {format_type!r}.",
                    "invalid_request_error",
                    param="response_format",
                ),
                400,
            )
        if body.get("grammar"):
            state.stats.grammar_request()

        texts = _message_texts(messages)
        joined = "\n".join(texts)
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or config.default_max_tokens
        admission_prompt = sum(math.ceil(len(text) / 4) + 4 for text in texts) + 3  # OpenAI's rough estimate
        charge = admission_prompt + int(max_tokens)
        if charge > config.tokens_per_minute:
            state.stats.too_large()
            message = (
                f"Request too large for {model} in organization org-test on tokens per min (TPM): "
                f"Limit {config.tokens_per_minute}, Requested {charge}. The input or output tokens must "
                "be reduced in order to run successfully."
            )
            return self._json(_error_body(message, "tokens", "rate_limit_exceeded"), 429)
        prompt_tokens = sum(server_count_tokens(text) + 4 for text in texts) + 3
        if prompt_tokens + int(max_tokens) > config.context_tokens:
            message = (
                f"This model's maximum context length is {config.context_tokens} tokens. However, you "
                f"requested {prompt_tokens + int(max_tokens)} tokens ({prompt_tokens} in the messages, "
                f"{max_tokens} in the completion). Please reduce the length of the messages or completion."
            )
            return self._json(
                _error_body(message, "invalid_request_error", "context_length_exceeded", "messages"), 400
            )

        if state.pick_fault(joined, {"rate_limit"}):
            state.stats.fault("rate_limit")
            wait = config.retry_after_s
            return self._json(
                _error_body("Rate limit reached (injected).", "requests", "rate_limit_exceeded"),
                429,
                {"retry-after": f"{wait:g}", "retry-after-ms": str(round(wait * 1000))},
            )
        wait = state.admit(charge)
        if wait > 0:
            return self._too_many(wait, charge, model)

        state.stats.enter()
        try:
            fault = state.pick_fault(joined, ADMITTED_REQUEST_FAULTS)
            if fault:
                state.stats.fault(fault)
            await self._sleep(config.slow_s if fault == "slow" else state.latency())
            if fault == "content_rejected":
                state.settle(charge, 0)
                message = (
                    "Invalid prompt: your prompt was flagged as potentially violating our usage policy. "
                    "Please try again with a different prompt."
                )
                return self._json(_error_body(message, "invalid_request_error", "invalid_prompt"), 400)
            if fault == "html_200":
                state.settle(charge, prompt_tokens)  # a failed request still costs its prompt
                state.stats.response(200)
                return HTMLResponse(PROXY_ERROR_PAGE, 200)
            if fault in ("server_error", "service_unavailable", "drop_connection"):
                state.settle(charge, prompt_tokens)  # failed requests still cost their prompt
                if fault == "drop_connection":
                    await self._drop(receive)
                    return None
                status = 500 if fault == "server_error" else 503
                message = (
                    "The server had an error while processing your request. Sorry about that!"
                    if status == 500
                    else "The engine is currently overloaded, please try again later."
                )
                return self._json(_error_body(message, "server_error"), status)
            return self._completion(
                body, messages, format_type, int(max_tokens), prompt_tokens, charge, fault
            )
        finally:
            state.stats.leave()

    def _completion(
        self,
        body: dict,
        messages: list[dict[str, Any]],
        format_type: str | None,
        max_tokens: int,
        prompt_tokens: int,
        charge: int,
        fault: str | None,
    ) -> JSONResponse:
        prompt = parse_prompt(messages)
        extraction = extract_grounded(prompt.paper, prompt.questions)
        content: str | None = extraction.model_dump_json()
        if format_type == "text" and self.state.config.prompt_mode_fences:
            content = f"```json\n{content}\n```"
        finish_reason = "stop"
        assert content is not None
        completion_tokens = server_count_tokens(content)
        if fault == "invalid_json":
            content = content[: len(content) // 2] + ' "unterminated'
        elif fault == "empty_content":
            content, completion_tokens = "", 0
        if fault == "truncated" or completion_tokens > max_tokens:
            keep = max_tokens if completion_tokens > max_tokens else completion_tokens // 2
            content = cut_to_tokens(content, keep)
            completion_tokens, finish_reason = server_count_tokens(content), "length"
        self.state.settle(charge, prompt_tokens + completion_tokens)
        self.state.stats.completed(prompt_tokens, completion_tokens)
        return self._json(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.state.config.reported_model,
                "system_fingerprint": "fp_methyl_distill_test",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": None},
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )


class ServerHandle:
    """A running server: its base URL and its controls."""

    def __init__(self, base_url: str, state: TestServerState, batches: BatchEndpoints | None = None) -> None:
        self.base_url = base_url
        self.state = state
        self.batches = batches

    def stats(self) -> StatsSnapshot:
        return self.state.stats.snapshot()

    def inject(
        self,
        kind: FaultKind,
        *,
        count: int | None = None,
        probability: float | None = None,
        marker: str | None = None,
    ) -> None:
        self.state.add_fault(FaultRule(kind=kind, count=count, probability=probability, marker=marker))

    def clear_faults(self) -> None:
        self.state.clear_faults()


@contextlib.contextmanager
def running_test_server(
    config: OpenAITestServerConfig | None = None, batch_config: BatchServerConfig | None = None
) -> Iterator[ServerHandle]:
    """Serve on a free loopback port in a background thread; stop (cancelling slow requests) on exit."""
    state = TestServerState(config or OpenAITestServerConfig())
    app = TestServerApp(state, batch_config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="critical",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
            backlog=2048,
            timeout_keep_alive=30,
        )
    )
    loop_box: dict[str, asyncio.AbstractEventLoop] = {}

    async def serve() -> None:
        loop_box["loop"] = asyncio.get_running_loop()
        await server.serve(sockets=[sock])

    thread = threading.Thread(
        target=asyncio.run, args=(serve(),), name=f"openai-test-server-{port}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the OpenAI test server did not start on port {port}")
        time.sleep(0.01)
    try:
        yield ServerHandle(f"http://127.0.0.1:{port}/v1", state, app.batches)
    finally:
        loop = loop_box.get("loop")
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(app.shutdown.set)
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def _parse_fault(text: str) -> FaultRule:
    """'kind', 'kind:count=3', 'kind:p=0.05' or 'kind:marker=FAIL-ME'."""
    kind, _, condition = text.partition(":")
    fields: dict[str, Any] = {"kind": kind}
    if condition:
        key, _, value = condition.partition("=")
        key = {"p": "probability"}.get(key, key)
        fields[key] = value if key == "marker" else json.loads(value)
    return FaultRule.model_validate(fields)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="OpenAI-compatible test server with TPM/RPM limits and faults."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--tpm", type=int, default=200_000, help="Tokens-per-minute limit.")
    parser.add_argument("--rpm", type=int, default=None, help="Requests-per-minute limit.")
    parser.add_argument("--latency", type=float, nargs=2, default=(0.0, 0.0), metavar=("MIN_S", "MAX_S"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--model", action="append", default=None, help="Model id a request may name (repeatable)."
    )
    parser.add_argument(
        "--json-schema", choices=["supported", "rejected_400", "rejected_500"], default="supported"
    )
    parser.add_argument(
        "--accounting",
        choices=get_args(RateLimitAccounting),
        default="settle",
        help="settle: charges settled to usage when answered; admission: kept for the window.",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        type=_parse_fault,
        help="kind[:count=N|:p=P|:marker=TEXT]; kinds: " + ", ".join(get_args(FaultKind)),
    )
    args = parser.parse_args(argv)
    config = OpenAITestServerConfig(
        tokens_per_minute=args.tpm,
        requests_per_minute=args.rpm,
        latency_s=tuple(args.latency),
        seed=args.seed,
        models=args.model or ["gpt-4o"],
        json_schema=args.json_schema,
        accounting=args.accounting,
        faults=args.fault,
    )
    app = TestServerApp(TestServerState(config))
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        backlog=2048,
        timeout_graceful_shutdown=2,
        # Longer than httpx's 5 s keep-alive expiry: the client, not the server, retires idle
        # connections, so a request never races the server closing the connection under it.
        timeout_keep_alive=30,
    )


if __name__ == "__main__":
    main()
