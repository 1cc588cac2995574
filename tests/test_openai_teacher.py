"""OpenAITeacher against the project's OpenAI-compatible test server: real HTTP, the real openai SDK."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import SecretStr

from methyl_distill.extraction.records import TeacherExtraction, TokenUsage
from methyl_distill.teacher.config import (
    TeacherConfig,
    redact_endpoint,
    resolve_api_key,
    teacher_config_from_environment,
)
from methyl_distill.teacher.grammar import GrammarLimits
from methyl_distill.teacher.openai_client import OpenAITeacher, TeacherRequestError
from methyl_distill.teacher.protocol import RequestTooLargeError, TeacherError
from methyl_distill.teacher.token_bucket import LocalTokenBucket
from tests.fake_openai.server import OpenAITestServerConfig, ServerHandle, running_test_server
from tests.fake_openai.state import FaultRule
from tests.tracked_bucket import TrackedBucket

SECRET = "sk-proj-THIS-KEY-MUST-NEVER-BE-LOGGED-0123456789"

PAPER = """\
SEPT9 methylation in plasma for colorectal cancer screening

Methylated SEPT9 in plasma cell-free DNA was measured by real-time PCR in 1,544 screening participants.
The SEPT9 promoter was hypermethylated in colorectal cancer compared with colonoscopy-negative controls.
The assay detected colorectal cancer with a sensitivity of 68% and a specificity of 79%.
Combining SEPT9 with NDRG4 methylation in stool raised the AUC to 0.91.
"""


def messages(paper: str = PAPER) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You extract DNA-methylation facts from papers."},
        {
            "role": "user",
            "content": f"<paper>\n{paper}\n</paper>\n\n- [markers] Which methylation markers are reported?\n"
            "- [performance] What sensitivity and specificity are reported?",
        },
    ]


class Sleeps:
    """Records the backoff the teacher asks for and waits only a token amount of it."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        time.sleep(min(seconds, 0.01))


def make_teacher(handle: ServerHandle, sleeps: Sleeps | None = None, **settings: object) -> OpenAITeacher:
    values: dict[str, object] = {
        "base_url": handle.base_url,
        "timeout_s": 5.0,
        "max_retries": 4,
        "max_reasks": 2,
    }
    values.update(settings)
    config = TeacherConfig.model_validate(values)
    return OpenAITeacher(config, api_key=SecretStr(SECRET), sleep=sleeps or Sleeps())


@pytest.fixture()
def server() -> Iterator[ServerHandle]:
    with running_test_server(OpenAITestServerConfig(slow_s=2.0, retry_after_s=0.5)) as handle:
        yield handle


def test_structured_reply_in_strict_json_schema_mode(server: ServerHandle) -> None:
    teacher = make_teacher(server)
    reply = teacher.complete_structured(messages(), TeacherExtraction, max_tokens=2000)
    assert reply.parsed is not None and reply.error is None
    assert reply.mode == "json_schema" and reply.attempts == 1
    assert {answer.question_id for answer in reply.parsed.answers} == {"markers", "performance"}
    assert any(marker.gene == "SEPT9" for marker in reply.parsed.markers)
    assert reply.usage.requests == 1 and reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    stats = server.stats()
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (
        stats.prompt_tokens,
        stats.completion_tokens,
    )


@pytest.mark.parametrize("support", ["rejected_400", "rejected_500"])
def test_falls_back_to_json_object_and_remembers_it(support: str) -> None:
    with running_test_server(OpenAITestServerConfig(json_schema=support)) as handle:
        teacher = make_teacher(handle)
        first = teacher.complete_structured(messages(), TeacherExtraction, max_tokens=2000)
        assert first.parsed is not None and first.mode == "json_object"
        # The endpoint's "not supported" answer (OpenAI's 400, llama-cpp-python's 500) is counted and
        # believed at once: it says why, so it is not retried.
        assert first.usage.requests == 2
        second = teacher.complete_structured(messages(), TeacherExtraction, max_tokens=2000)
        assert second.mode == "json_object" and second.usage.requests == 1
        assert teacher.mode == "json_object" and teacher.settled_output_mode == "json_object"
        assert handle.stats().response_formats == ["json_schema", "json_object", "json_object"]


@pytest.mark.parametrize(
    ("status", "message", "mode"),
    [
        # OpenAI, a model without structured outputs
        (
            400,
            "Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model.",
            "json_schema",
        ),
        # llama-cpp-python's server: the request model's validation error, as a 500
        (
            500,
            "[{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
            "'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}]",
            "json_schema",
        ),
        # llama.cpp's own server (older builds)
        (
            400,
            'response_format type must be one of "text" or "json_object", but got: json_schema',
            "json_schema",
        ),
        # vLLM (older builds), FastAPI's 400 for an unknown response_format type
        (
            400,
            "1 validation error for ChatCompletionRequest\nresponse_format.type\n  Input should be "
            "'text' or 'json_object' [type=literal_error, input_value='json_schema']",
            "json_schema",
        ),
        # LM Studio, which knows json_schema but not json_object
        (400, "'response_format.type' must be 'json_schema' or 'text'", "json_object"),
        (422, "json_schema response format is unsupported by this backend", "json_schema"),
        (400, "This server does not support response_format", "json_object"),
    ],
)
def test_explicit_unsupported_response_format_answers_are_recognised(
    status: int, message: str, mode: str
) -> None:
    from methyl_distill.teacher.output_mode import says_output_mode_unsupported

    assert says_output_mode_unsupported(status, message, mode)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "message", "mode"),
    [
        (
            400,
            "Invalid prompt: your prompt was flagged as potentially violating our usage policy.",
            "json_schema",
        ),
        (500, "Internal Server Error", "json_schema"),
        (503, "The engine is currently overloaded, please try again later.", "json_schema"),
        (
            400,
            "This model's maximum context length is 128000 tokens. Please reduce the length of the messages.",
            "json_schema",
        ),
        # A schema the endpoint rejects is the schema's fault, not the mode's: moving down would hide it.
        (
            400,
            "Invalid schema for response_format 'TeacherExtraction': In context=(), "
            "'additionalProperties' is required to be supplied and to be false.",
            "json_schema",
        ),
        (400, "Invalid parameter: 'temperature' is not supported with this model.", "json_schema"),
        (
            400,
            "Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model.",
            "prompt",
        ),
    ],
)
def test_other_errors_are_not_taken_for_an_unsupported_output_mode(
    status: int, message: str, mode: str
) -> None:
    from methyl_distill.teacher.output_mode import says_output_mode_unsupported

    assert not says_output_mode_unsupported(status, message, mode)  # type: ignore[arg-type]


def test_a_refused_request_before_any_success_leaves_the_output_mode_alone(server: ServerHandle) -> None:
    """One request's content refused (400) and server errors before the first success say nothing
    about the endpoint's structured outputs: every request stays in json_schema."""
    teacher = make_teacher(server)
    server.inject("content_rejected", count=1)
    with pytest.raises(TeacherRequestError, match="HTTP 400"):
        teacher.complete_structured(messages(), TeacherExtraction, max_tokens=2000)
    assert teacher.mode == "json_schema" and teacher.settled_output_mode is None
    server.inject("server_error", count=2)
    reply = teacher.complete_structured(messages(), TeacherExtraction, max_tokens=2000)
    assert reply.parsed is not None and reply.mode == "json_schema" and reply.usage.requests == 3
    assert teacher.settled_output_mode == "json_schema"
    assert server.stats().response_formats == ["json_schema"] * 4


def test_a_200_that_is_not_a_completion_is_retried_and_settled() -> None:
    with running_test_server(OpenAITestServerConfig()) as handle:
        sleeps = Sleeps()
        bucket = TrackedBucket(200_000)
        config = TeacherConfig(base_url=handle.base_url, max_retries=2, timeout_s=5.0)
        teacher = OpenAITeacher(config, api_key=SecretStr(SECRET), budget=bucket, sleep=sleeps)
        handle.inject("html_200", count=1)
        reply = teacher.complete_structured(messages(), TeacherExtraction, max_tokens=2000)
        assert reply.parsed is not None and reply.mode == "json_schema"
        assert reply.usage.requests == 2 and len(sleeps.calls) == 1
        handle.inject("html_200")  # every request, until the retries run out
        with pytest.raises(TeacherRequestError, match="not a chat completion") as caught:
            teacher.complete_structured(messages(), TeacherExtraction, max_tokens=2000)
        assert "502 Bad Gateway" in str(caught.value) and caught.value.usage.requests == 3
    assert len(bucket.reservations) == 5 and bucket.unsettled() == []


def test_under_a_quarter_of_faults_every_request_stays_strict_and_every_reservation_is_settled() -> None:
    """Concurrent requests, a quarter of them answered by an HTML page with status 200, and one whose
    content is refused: every other request is answered, all in json_schema, and the bucket holds no
    reservation that was never settled."""
    config = OpenAITestServerConfig(
        seed=11,
        faults=[
            FaultRule(kind="content_rejected", count=1),
            FaultRule(kind="html_200", probability=0.25),
            FaultRule(kind="server_error", probability=0.05),
        ],
    )
    with running_test_server(config) as handle:
        bucket = TrackedBucket(200_000)
        teacher = OpenAITeacher(
            TeacherConfig(base_url=handle.base_url, max_retries=8, retry_max_wait_s=0.05),
            api_key=SecretStr(SECRET),
            budget=bucket,
            sleep=Sleeps(),
        )

        def ask(_: int) -> str:
            try:
                return teacher.complete_structured(messages(), TeacherExtraction, max_tokens=2000).mode
            except TeacherRequestError as exc:
                return str(exc)

        with ThreadPoolExecutor(max_workers=8) as pool:
            outcomes = list(pool.map(ask, range(24)))
        stats = handle.stats()
    refused = [outcome for outcome in outcomes if outcome != "json_schema"]
    assert len(refused) == 1 and "HTTP 400" in refused[0]
    assert stats.faults["html_200"] >= 4 and set(stats.response_formats) == {"json_schema"}
    assert teacher.settled_output_mode == "json_schema"
    assert bucket.unsettled() == [] and len(bucket.reservations) == stats.requests


def test_concurrent_first_requests_agree_on_the_fallback() -> None:
    with running_test_server(OpenAITestServerConfig(json_schema="rejected_500")) as handle:
        # Eight requests at once on two loaded cores: a generous timeout, the test is about agreement.
        teacher = make_teacher(handle, timeout_s=60.0)
        with ThreadPoolExecutor(max_workers=8) as pool:
            replies = list(
                pool.map(
                    lambda _: teacher.complete_structured(messages(), TeacherExtraction, max_tokens=2000),
                    range(8),
                )
            )
        assert all(reply.parsed is not None for reply in replies)
        assert teacher.mode == "json_object"


def test_a_refusal_that_comes_back_after_the_weaker_mode_settled_is_sent_again() -> None:
    """The race behind the test above: request A (json_schema) is refused only after request B,
    moved down by another refusal, was answered in json_object and settled the mode."""
    from methyl_distill.teacher.output_mode import EndpointOutputMode

    modes = EndpointOutputMode("auto")
    assert modes.refused("json_schema", "HTTP 500") and modes.current == "json_object"
    modes.answered("json_object")
    assert modes.settled == "json_object"
    assert modes.refused("json_schema", "HTTP 500")  # A goes again, in json_object
    assert not modes.refused("json_object", "HTTP 500")  # a refusal of the settled mode stands
    assert modes.current == "json_object"


def test_prompt_mode_parses_fenced_json_and_can_send_a_grammar(server: ServerHandle) -> None:
    teacher = make_teacher(server, output_mode="prompt", grammar=GrammarLimits())
    reply = teacher.complete_structured(messages(), TeacherExtraction, max_tokens=2000)
    assert reply.parsed is not None and reply.mode == "prompt"
    assert server.stats().grammar_requests == 1


@pytest.mark.parametrize(
    ("fault", "retried"),
    [
        ("rate_limit", True),
        ("server_error", True),
        ("service_unavailable", True),
        ("drop_connection", True),
        ("slow", True),
        ("invalid_json", False),
        ("truncated", False),
        ("empty_content", False),
        ("html_200", True),  # a proxy's error page with status 200: a transport fault, like a 502
    ],
)
def test_each_fault_recovers(fault: str, retried: bool) -> None:
    config = OpenAITestServerConfig(slow_s=3.0, retry_after_s=1.0)
    with running_test_server(config) as handle:
        sleeps = Sleeps()
        teacher = make_teacher(handle, sleeps, timeout_s=1.0)
        handle.inject(fault, count=1)  # type: ignore[arg-type]
        reply = teacher.complete_structured(messages(), TeacherExtraction, max_tokens=2000)
        assert reply.parsed is not None, reply.error
        assert reply.usage.requests == 2  # the failed attempt is counted too
        # HTTP failures are retried below the structured layer; bad output is re-asked above it.
        assert reply.attempts == (1 if retried else 2)
        assert len(sleeps.calls) == (1 if retried else 0)
        if fault == "rate_limit":
            assert sleeps.calls[0] >= 1.0  # retry-after honoured
        assert handle.stats().faults == {fault: 1}


def test_reask_tells_the_model_what_was_wrong(server: ServerHandle) -> None:
    seen: list[list[dict]] = []
    teacher = make_teacher(server)
    original = teacher.client.chat.completions.with_raw_response.create

    def spy(**arguments: object) -> object:
        seen.append(arguments["messages"])  # type: ignore[arg-type]
        return original(**arguments)

    teacher.client.chat.completions.with_raw_response.create = spy  # type: ignore[method-assign]
    server.inject("invalid_json", count=1)
    reply = teacher.complete_structured(messages(), TeacherExtraction, max_tokens=2000)
    assert reply.parsed is not None and reply.attempts == 2
    assert seen[1][-2]["role"] == "assistant"
    assert seen[1][-1]["role"] == "user" and "invalid JSON" in seen[1][-1]["content"]


def test_a_permanently_bad_paper_ends_as_a_clear_failure_with_raw_output() -> None:
    config = OpenAITestServerConfig(faults=[{"kind": "invalid_json", "marker": "POISON"}])  # type: ignore[list-item]
    with running_test_server(config) as handle:
        teacher = make_teacher(handle)
        reply = teacher.complete_structured(messages(PAPER + "POISON\n"), TeacherExtraction, max_tokens=2000)
        assert reply.parsed is None
        assert reply.error is not None and reply.error.startswith("invalid JSON")
        assert reply.raw_text.startswith('{"answers"')
        assert reply.attempts == 3 and reply.usage.requests == 3
        assert reply.usage.completion_tokens > 0
        good = teacher.complete_structured(messages(), TeacherExtraction, max_tokens=2000)
        assert good.parsed is not None  # other papers are unaffected


def test_persistent_truncation_says_the_input_needs_splitting(server: ServerHandle) -> None:
    teacher = make_teacher(server, max_reasks=1)
    reply = teacher.complete_structured(messages(), TeacherExtraction, max_tokens=60)
    assert reply.parsed is None and reply.attempts == 2
    assert reply.error is not None
    assert "finish_reason=length" in reply.error and "split" in reply.error


def test_persistent_server_errors_raise_after_the_retry_budget() -> None:
    config = OpenAITestServerConfig(faults=[{"kind": "service_unavailable"}])  # type: ignore[list-item]
    with running_test_server(config) as handle:
        sleeps = Sleeps()
        teacher = make_teacher(handle, sleeps, max_retries=3, retry_max_wait_s=4.0)
        with pytest.raises(TeacherRequestError, match=r"failed after 4 attempt\(s\): HTTP 503") as caught:
            teacher.complete_structured(messages(), TeacherExtraction, max_tokens=2000)
        assert handle.stats().requests == 4
        assert caught.value.usage.requests == 4  # the failed attempts are accounted for
        assert len(sleeps.calls) == 3 and all(0 <= s <= 4.0 for s in sleeps.calls)


def test_other_client_errors_are_not_retried(server: ServerHandle) -> None:
    teacher = make_teacher(server, model="no-such-model")
    with pytest.raises(TeacherError, match="HTTP 404"):
        teacher.complete_structured(messages(), TeacherExtraction, max_tokens=2000)
    assert server.stats().requests == 1


def test_requests_too_large_for_the_budget_or_context_never_reach_the_server(server: ServerHandle) -> None:
    teacher = make_teacher(server, tpm=3_000)
    with pytest.raises(RequestTooLargeError) as over_budget:
        teacher.complete_structured(messages(), TeacherExtraction, max_tokens=3_000)
    assert over_budget.value.limit_tokens == 3_000
    small_context = make_teacher(server, context_tokens=2_000)
    with pytest.raises(RequestTooLargeError) as over_context:
        small_context.complete_structured(messages(), TeacherExtraction, max_tokens=1_900)
    assert over_context.value.limit_tokens == 2_000
    assert server.stats().requests == 0


def test_a_server_with_a_smaller_limit_than_configured_is_reported_too_large() -> None:
    with running_test_server(OpenAITestServerConfig(tokens_per_minute=4_000)) as handle:
        teacher = make_teacher(handle)  # believes in 200_000 TPM
        with pytest.raises(RequestTooLargeError) as caught:
            teacher.complete_structured(messages(), TeacherExtraction, max_tokens=5_000)
        assert caught.value.limit_tokens == 4_000
        assert handle.stats().requests == 1


def test_tpm_is_never_exceeded_under_concurrency() -> None:
    """16 threads share one teacher and one bucket against a server enforcing the same small TPM."""
    tpm = 30_000  # 500 tokens per second: the last requests wait a few seconds for the refill
    config = OpenAITestServerConfig(tokens_per_minute=tpm, latency_s=(0.05, 0.15))
    with running_test_server(config) as handle:
        teacher = make_teacher(handle, tpm=tpm)
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=16) as pool:
            replies = list(
                pool.map(
                    lambda _: teacher.complete_structured(messages(), TeacherExtraction, max_tokens=700),
                    range(54),
                )
            )
        elapsed = time.monotonic() - started
        stats = handle.stats()
    assert all(reply.parsed is not None for reply in replies)
    assert stats.responses_429 == 0 and stats.rate_limited == 0
    used = sum(reply.usage.total_tokens for reply in replies)
    assert used > tpm  # more than one bucketful: the client really had to wait for the refill
    # Never more than a full bucket plus what refilled in the meantime.
    assert stats.tokens_charged(0, stats.uptime_s + 1) <= tpm + tpm / 60 * elapsed + 1


def test_the_key_never_appears_in_logs_reprs_or_errors(
    server: ServerHandle, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    server.inject("rate_limit", count=1)
    server.inject("invalid_json", count=1)
    teacher = make_teacher(server)
    teacher.complete_structured(messages(), TeacherExtraction, max_tokens=2000)
    failing = make_teacher(server, model="no-such-model")
    with pytest.raises(TeacherError) as caught:
        failing.complete_structured(messages(), TeacherExtraction, max_tokens=2000)
    config = teacher.config
    shown = [
        caplog.text,
        repr(teacher),
        str(config),
        repr(config),
        config.model_dump_json(),
        str(config.model_dump()),
        config.describe(key_set=True),
        str(caught.value),
    ]
    assert all(SECRET not in text for text in shown)
    assert "model_dump" not in caplog.text and "key set" in config.describe(key_set=True)


def test_endpoint_credentials_are_redacted_wherever_the_endpoint_is_shown() -> None:
    assert (
        redact_endpoint("https://user:pass@host.example/v1?api-key=k1&key=k2&token=t&api-version=2")
        == "https://***:***@host.example/v1?api-key=***&key=***&token=***&api-version=2"
    )
    assert redact_endpoint("https://sk-only@host/v1") == "https://***@host/v1"
    assert redact_endpoint("http://127.0.0.1:8080/v1") == "http://127.0.0.1:8080/v1"
    config = TeacherConfig(base_url="https://alice:pa55word@host.example/v1?api-key=QUERYKEY")
    shown = [
        config.describe(key_set=True),
        repr(config),
        str(config),
        config.model_dump_json(),
        config.shown_endpoint,
    ]
    assert all("pa55word" not in text and "QUERYKEY" not in text and "alice" not in text for text in shown)
    assert "https://***:***@host.example/v1?api-key=***" in config.describe()
    assert config.base_url is not None and "pa55word" in config.base_url  # the client still gets it


def test_a_query_key_in_the_base_url_is_sent_and_never_logged(
    server: ServerHandle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    host = server.base_url.split("://", 1)[1]
    url = f"http://{host}?api-key=QUERY-KEY-0042&api-version=1"
    teacher = make_teacher(server, base_url=url)
    # Sent as the query of every request, not glued before the path (which answered 404).
    assert teacher.complete_structured(messages(), TeacherExtraction, max_tokens=2000).parsed is not None
    assert "QUERY-KEY-0042" not in caplog.text and "api-key=***" in caplog.text
    assert teacher.redact(f"GET {url} failed") == f"GET http://{host}?api-key=***&api-version=1 failed"
    assert "QUERY-KEY-0042" not in repr(teacher)


def test_a_session_key_is_sent_but_never_serialised(server: ServerHandle) -> None:
    config = TeacherConfig(
        base_url=server.base_url, api_key_source="session", session_api_key=SecretStr("sk-session-77")
    )
    assert resolve_api_key(config) == SecretStr("sk-session-77")
    assert "sk-session-77" not in config.model_dump_json() + str(config.model_dump()) + repr(config)
    reread = TeacherConfig.model_validate_json(config.model_dump_json())
    with pytest.raises(ValueError, match="session_api_key"):
        resolve_api_key(reread)


def test_the_configuration_comes_from_flags_then_the_environment_then_a_dotenv_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "TEACHER_MODEL", "TEACHER_GBNF_GRAMMAR"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".env").write_text(
        "OPENAI_API_KEY=sk-from-dotenv\nTEACHER_MODEL=gpt-4o-mini\nUNRELATED=1\n"
        "TEACHER_GBNF_GRAMMAR=true\nTEACHER_GRAMMAR_MAX_STRING_LENGTH=64\n"
    )
    monkeypatch.setenv("TEACHER_TPM", "30000")
    monkeypatch.setenv("TEACHER_OUTPUT_MODE", "json_object")
    config = teacher_config_from_environment()
    assert config.model == "gpt-4o-mini" and config.tpm == 30_000 and config.output_mode == "json_object"
    assert config.grammar == GrammarLimits(max_string_length=64)
    assert config.rpm is None and config.max_output_tokens == TeacherConfig().max_output_tokens
    assert resolve_api_key(config) == SecretStr("sk-from-dotenv")
    assert resolve_api_key(config.model_copy(update={"api_key_source": "none"})) is None
    assert config.estimate_cost_usd(TokenUsage(prompt_tokens=1_000_000, completion_tokens=100_000)) == 3.5
    # A flag (or flow parameter) wins over the environment; None means "not given".
    flagged = teacher_config_from_environment(model="gpt-4.1", base_url=None)
    assert flagged.model == "gpt-4.1" and flagged.tpm == 30_000
    assert "key" not in TeacherConfig.model_fields and "sk-from-dotenv" not in config.model_dump_json()
    monkeypatch.setenv("TEACHER_OUTPUT_MODE", "yaml")
    with pytest.raises(ValueError, match="output_mode"):
        teacher_config_from_environment()


def test_no_key_for_the_public_api_is_a_clear_error() -> None:
    with pytest.raises(TeacherError, match="OPENAI_API_KEY"):
        OpenAITeacher(TeacherConfig())


def test_one_bucket_is_shared_by_whoever_passes_it(server: ServerHandle) -> None:
    bucket = LocalTokenBucket(200_000, clock=lambda: 0.0)  # frozen: no refill blurs the count
    config = TeacherConfig(base_url=server.base_url)
    first, second = OpenAITeacher(config, budget=bucket), OpenAITeacher(config, budget=bucket)
    first.complete_structured(messages(), TeacherExtraction, max_tokens=1000)
    second.complete_structured(messages(), TeacherExtraction, max_tokens=1000)
    spent = server.stats().prompt_tokens + server.stats().completion_tokens
    assert bucket.available_tokens() == 200_000 - spent
