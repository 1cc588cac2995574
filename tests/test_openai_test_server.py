"""The project's OpenAI-compatible test server, over real HTTP with the real openai SDK as client."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from methyl_distill.extraction.records import TeacherExtraction
from methyl_distill.teacher.structured_output import strict_json_schema
from tests.fake_openai.server import (
    OpenAITestServerConfig,
    ServerHandle,
    _parse_fault,
    running_test_server,
    strict_schema_problem,
)
from tests.fake_openai.state import TEST_SERVER_MODEL

PAPER = """\
Promoter methylation of MGMT in glioblastoma

Background
MGMT promoter hypermethylation silences the DNA repair enzyme in glioblastoma tumour tissue.
We studied 206 patients treated with temozolomide and radiotherapy.
Methylation was measured by methylation-specific PCR and confirmed by pyrosequencing.
Patients with a methylated MGMT promoter had longer overall survival and a better response to temozolomide.
The probe cg12434587 in the MGMT promoter was hypermethylated in 45% of tumours.
In plasma cell-free DNA, MGMT methylation reached a sensitivity of 60% and a specificity of 95%.
"""

QUESTIONS = [
    ("markers", "Which DNA methylation markers does the study report?"),
    ("sample_types", "Which tissue or sample types were analysed?"),
    ("performance", "What sensitivity, specificity or AUC is reported?"),
    ("absent", "Which zebrafish xenografts were imaged?"),
]


def paper_messages(paper: str = PAPER) -> list[dict[str, str]]:
    questions = "\n".join(f"- [{qid}] {text}" for qid, text in QUESTIONS)
    return [
        {"role": "system", "content": "Extract methylation facts as JSON."},
        {"role": "user", "content": f"<paper>\n{paper}\n</paper>\n\nAnswer these questions:\n{questions}"},
    ]


@pytest.fixture()
def server() -> Iterator[ServerHandle]:
    with running_test_server(OpenAITestServerConfig(tokens_per_minute=200_000, slow_s=3.0)) as handle:
        yield handle


def client_for(handle: ServerHandle, timeout: float = 10.0) -> openai.OpenAI:
    return openai.OpenAI(base_url=handle.base_url, api_key="sk-test", max_retries=0, timeout=timeout)


def ask(client: openai.OpenAI, **overrides: object) -> openai.types.chat.ChatCompletion:
    arguments: dict = {"model": "gpt-4o", "messages": paper_messages(), "max_tokens": 2000}
    arguments.update(overrides)
    return client.chat.completions.create(**arguments)


def test_models_and_a_grounded_structured_answer(server: ServerHandle) -> None:
    client = client_for(server)
    assert [model.id for model in client.models.list()] == ["gpt-4o"]
    # A request may name gpt-4o; the answer says the test server wrote it, never a real model.
    assert ask(client).model == TEST_SERVER_MODEL != "gpt-4o"
    schema = strict_json_schema(TeacherExtraction)
    completion = ask(
        client,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "TeacherExtraction", "strict": True, "schema": schema},
        },
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    extraction = TeacherExtraction.model_validate_json(choice.message.content or "")
    assert [answer.question_id for answer in extraction.answers] == [qid for qid, _ in QUESTIONS]
    answers = {answer.question_id: answer for answer in extraction.answers}
    assert answers["absent"].answer == "Not reported in the paper." and answers["absent"].evidence == []
    assert "tissue" in answers["sample_types"].answer or "plasma" in answers["sample_types"].answer
    quotes = [q for a in extraction.answers for q in a.evidence]
    quotes += [q for m in extraction.markers for q in m.evidence] + [
        q for p in extraction.additional_qa for q in p.evidence
    ]
    assert quotes and all(quote in PAPER for quote in quotes)  # grounded: verbatim sentences
    mgmt = next(marker for marker in extraction.markers if marker.gene == "MGMT")
    assert mgmt.direction == "hypermethylated"
    assert mgmt.region == "promoter"
    assert "cg12434587" in mgmt.cpg_sites
    assert mgmt.condition == "glioblastoma"
    assert mgmt.performance.sensitivity == pytest.approx(0.60)
    assert mgmt.performance.specificity == pytest.approx(0.95)
    assert completion.usage is not None and completion.usage.prompt_tokens > 0


def test_every_response_carries_rate_limit_headers(server: ServerHandle) -> None:
    client = client_for(server)
    ok = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=paper_messages(), max_tokens=1000
    )
    remaining = int(ok.headers["x-ratelimit-remaining-tokens"])
    usage = ok.parse().usage
    assert usage is not None
    # Settled to actual usage (the admission charge of prompt estimate + max_tokens was refunded).
    assert 200_000 - usage.total_tokens - 50 <= remaining <= 200_000 - usage.total_tokens + 50
    assert ok.headers["x-ratelimit-limit-tokens"] == "200000"
    assert ok.headers["x-ratelimit-reset-tokens"].endswith("s")
    server.inject("server_error", count=1)
    with pytest.raises(openai.InternalServerError) as caught:
        ask(client)
    assert caught.value.response.headers["x-ratelimit-limit-tokens"] == "200000"


def test_tpm_is_enforced_at_admission_and_large_requests_are_refused() -> None:
    with running_test_server(OpenAITestServerConfig(tokens_per_minute=6_000)) as handle:
        client = client_for(handle)
        ask(client, max_tokens=2500)
        ask(client, max_tokens=2500)  # settled to actual usage, so a second one fits
        with pytest.raises(openai.RateLimitError) as caught:
            ask(client, max_tokens=4500)
        error = caught.value
        assert "Rate limit reached for gpt-4o" in error.message and "Limit 6000" in error.message
        assert float(error.response.headers["retry-after"]) >= 1
        assert int(error.response.headers["retry-after-ms"]) > 0
        with pytest.raises(openai.RateLimitError) as too_large:
            ask(client, max_tokens=7000)
        assert (
            "Request too large" in too_large.value.message
            and "Limit 6000, Requested" in too_large.value.message
        )
        stats = handle.stats()
        assert stats.rate_limited == 1 and stats.too_large == 1 and stats.completed == 2
        assert stats.responses_429 == 2


def test_rpm_is_enforced() -> None:
    with running_test_server(OpenAITestServerConfig(requests_per_minute=2)) as handle:
        client = client_for(handle)
        first = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=paper_messages(), max_tokens=500
        )
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        ask(client, max_tokens=500)
        with pytest.raises(openai.RateLimitError):
            ask(client, max_tokens=500)


def test_context_window_and_bad_requests(server: ServerHandle) -> None:
    client = client_for(server)
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, max_tokens=150_000)
    assert caught.value.code == "context_length_exceeded"
    with pytest.raises(openai.NotFoundError):
        ask(client, model="gpt-5-imaginary")
    with pytest.raises(openai.BadRequestError) as schema_error:
        ask(
            client,
            response_format={
                "type": "json_schema",
                "json_schema": {
                    "name": "Loose",
                    "strict": True,
                    "schema": TeacherExtraction.model_json_schema() | {"additionalProperties": True},
                },
            },
        )
    assert "additionalProperties" in schema_error.value.message


def test_strict_schema_check_walks_nested_definitions() -> None:
    strict = strict_json_schema(TeacherExtraction)
    assert strict_schema_problem(strict) is None
    strict["$defs"]["MarkerPerformance"]["required"].remove("auc")
    assert "auc" in (strict_schema_problem(strict) or "")


@pytest.mark.parametrize("support", ["rejected_400", "rejected_500"])
def test_json_schema_can_be_rejected_like_llama_cpp(support: str) -> None:
    with running_test_server(OpenAITestServerConfig(json_schema=support)) as handle:
        client = client_for(handle)
        schema = strict_json_schema(TeacherExtraction)
        with pytest.raises(openai.APIStatusError) as caught:
            ask(
                client,
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "T", "strict": True, "schema": schema},
                },
            )
        assert caught.value.status_code == (400 if support == "rejected_400" else 500)
        # Either way the answer says what is not supported.
        assert "response_format" in caught.value.message and "json_schema" in caught.value.message
        reply = ask(
            client,
            response_format={"type": "json_object", "schema": schema},
            extra_body={"grammar": "root ::= x"},
        )
        TeacherExtraction.model_validate_json(reply.choices[0].message.content or "")
        assert handle.stats().grammar_requests == 1


def test_prompt_mode_wraps_json_in_fences(server: ServerHandle) -> None:
    content = ask(client_for(server)).choices[0].message.content or ""
    assert content.startswith("```json\n") and content.endswith("\n```")
    TeacherExtraction.model_validate_json(content[len("```json\n") : -len("\n```")])


def test_each_fault_shows_as_the_client_would_see_it(server: ServerHandle) -> None:
    client = client_for(server, timeout=1.0)
    server.inject("rate_limit", count=1)
    with pytest.raises(openai.RateLimitError) as limited:
        ask(client)
    assert limited.value.response.headers["retry-after"] == "1"
    server.inject("service_unavailable", count=1)
    with pytest.raises(openai.InternalServerError) as unavailable:
        ask(client)
    assert unavailable.value.status_code == 503
    server.inject("drop_connection", count=1)
    with pytest.raises(openai.APIConnectionError):
        ask(client)
    server.inject("slow", count=1)
    with pytest.raises(openai.APITimeoutError):
        ask(client)
    server.inject("invalid_json", count=1)
    with pytest.raises(json.JSONDecodeError):
        json.loads(ask(client, response_format={"type": "json_object"}).choices[0].message.content or "")
    server.inject("truncated", count=1)
    truncated = ask(client, response_format={"type": "json_object"}).choices[0]
    assert truncated.finish_reason == "length"
    server.inject("empty_content", count=1)
    assert ask(client).choices[0].message.content == ""
    server.inject("html_200", count=1)
    page = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=paper_messages(), max_tokens=2000
    )
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert isinstance(page.parse(), str)  # the SDK hands back the text: no completion to read
    server.inject("content_rejected", count=1)
    with pytest.raises(openai.BadRequestError) as refused:
        ask(client, response_format={"type": "json_object"})
    assert refused.value.code == "invalid_prompt" and "response_format" not in refused.value.message
    assert ask(client).choices[0].finish_reason == "stop"  # every count used up
    stats = server.stats()
    assert stats.faults == {
        "rate_limit": 1,
        "service_unavailable": 1,
        "drop_connection": 1,
        "slow": 1,
        "invalid_json": 1,
        "truncated": 1,
        "empty_content": 1,
        "html_200": 1,
        "content_rejected": 1,
    }
    assert stats.response_formats.count("json_object") == 3 and len(stats.response_formats) == 10


def test_small_max_tokens_truncates_like_a_real_model(server: ServerHandle) -> None:
    completion = ask(client_for(server), max_tokens=40)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens <= 40


def test_marker_faults_hit_only_the_marked_paper_and_probability_is_seeded() -> None:
    config = OpenAITestServerConfig(seed=7, faults=[_parse_fault("server_error:marker=POISON-PAPER")])
    with running_test_server(config) as handle:
        client = client_for(handle)
        for _ in range(2):
            with pytest.raises(openai.InternalServerError):
                ask(client, messages=paper_messages(PAPER + "\nPOISON-PAPER\n"))
        ask(client)
    outcomes = []
    for _ in range(2):
        with running_test_server(
            OpenAITestServerConfig(seed=3, faults=[_parse_fault("empty_content:p=0.5")])
        ) as handle:
            client = client_for(handle)
            outcomes.append([ask(client, max_tokens=300).choices[0].message.content == "" for _ in range(8)])
    assert outcomes[0] == outcomes[1] and 0 < sum(outcomes[0]) < 8


def test_control_endpoints_over_http(server: ServerHandle) -> None:
    control = server.base_url.removesuffix("/v1")
    added = httpx.post(f"{control}/control/faults", json=[{"kind": "server_error", "count": 2}])
    assert added.json() == {"added": 1}
    assert httpx.post(f"{control}/control/faults", json={"kind": "nonsense"}).status_code == 400
    client = client_for(server)
    with pytest.raises(openai.InternalServerError):
        ask(client)
    assert httpx.delete(f"{control}/control/faults").json() == {"cleared": True}
    ask(client)
    stats = httpx.get(f"{control}/control/stats").json()
    assert stats["requests"] == 2 and stats["faults"] == {"server_error": 1}
    assert stats["ledger"], "the token ledger records admission charges and settlements"


def test_hundreds_of_slow_requests_are_served_concurrently() -> None:
    with running_test_server(
        OpenAITestServerConfig(tokens_per_minute=10_000_000, latency_s=(0.8, 1.0))
    ) as handle:
        client = client_for(handle, timeout=20)
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=100) as pool:
            results = list(pool.map(lambda _: ask(client, max_tokens=300), range(100)))
        elapsed = time.monotonic() - started
        assert len(results) == 100
        assert handle.stats().max_in_flight >= 50
        assert elapsed < 15  # one at a time would take 80-100 s
