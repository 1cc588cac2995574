"""Serve the tuned student as an OpenAI-compatible endpoint with ms-swift's deploy.

`swift deploy --adapters ADAPTER --infer_backend transformers` starts a FastAPI server with
`/v1/models` and `/v1/chat/completions`. It runs here as a child process in its own process group
(ms-swift starts further processes of its own), bound to loopback by default; `start` waits until
`/v1/models` answers and `stop` ends the whole group (both through `ops.local_server`). Use it as a
context manager:

    with serve_adapter(adapter_path, api_key=SecretStr(key)) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key=key)
        client.chat.completions.create(model=server.model_name, messages=[...], temperature=0)

Authentication: with an API key, ms-swift's deploy (`--api_key`) answers every request without
`Authorization: Bearer <key>` with an error (only /health, /ping and /v1/models stay open). A host
other than loopback is refused without a key (`check_host_needs_key`), before anything loads. The
key reaches the server through the child's environment (SERVE_API_KEY_VARIABLE), never its command
line (`ps` shows that): this module, run as the child, hands it to `swift deploy` inside its own
process and redacts it from the server's output (ms-swift logs its arguments).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from pydantic import SecretStr

from methyl_distill.ops.local_server import (
    LocalServerProcess,
    LocalServerStartTimeout,
    free_loopback_port,
    start_in_own_session,
)
from methyl_distill.training.inference import read_adapter_arguments
from methyl_distill.training.runtime_device import DeviceRequest, choose_device

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "methyl-distill-student"
# The key's way to the child (its environment only); also the variable `methyl-distill serve` reads.
SERVE_API_KEY_VARIABLE = "METHYL_DISTILL_SERVE_API_KEY"


def is_loopback_host(host: str) -> bool:
    """Whether `host` accepts connections from this machine only (localhost, 127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_host_needs_key(host: str, api_key: SecretStr | None) -> None:
    """Refuse to serve beyond loopback without an API key: anyone who reaches the port could use it."""
    if not is_loopback_host(host) and (api_key is None or not api_key.get_secret_value()):
        raise ValueError(
            f"--host {host} serves beyond this machine: give an API key (--api_key or "
            f"{SERVE_API_KEY_VARIABLE}) so that requests without it are refused, or bind 127.0.0.1"
        )


def deploy_command(
    adapter_path: Path,
    *,
    host: str,
    port: int,
    model_name: str,
    max_new_tokens: int,
    torch_dtype: str,
) -> list[str]:
    """The `swift deploy` command line (run as `python -m swift.cli.deploy`) for an adapter."""
    return [
        sys.executable,
        "-m",
        "methyl_distill.training.serving",  # runs swift.cli.deploy; see _deploy_with_key_from_environment
        "--adapters",
        str(Path(adapter_path).resolve()),
        "--infer_backend",
        "transformers",
        "--host",
        host,
        "--port",
        str(port),
        "--served_model_name",
        model_name,
        "--temperature",
        "0",
        "--max_new_tokens",
        str(max_new_tokens),
        "--torch_dtype",
        torch_dtype,
        "--use_hf",
        "true",
        "--verbose",
        "false",
    ]


class ServedModel:
    """A running `swift deploy` server; `stop()` ends its whole process group."""

    def __init__(
        self, process: subprocess.Popen[bytes], *, host: str, port: int, model_name: str, log_path: Path
    ) -> None:
        self.process = process
        self.host = host
        self.port = port
        self.model_name = model_name
        self.log_path = log_path
        self._server = LocalServerProcess(
            process, base_url=self.base_url, log_path=log_path, name="swift deploy"
        )

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/v1"

    def log_tail(self, characters: int = 3000) -> str:
        return self._server.log_tail(characters=characters)

    def wait_ready(self, timeout_s: float) -> None:
        """Wait until the server lists `model_name`; on a timeout the server is stopped first."""
        try:
            self._server.wait_until_serving(self.model_name, timeout_s, poll_interval_s=0.5)
        except LocalServerStartTimeout:
            self.stop()
            raise

    def stop(self, grace_s: float = 15.0) -> None:
        self._server.stop(grace_s=grace_s)


def start_server(
    adapter_path: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    model_name: str = DEFAULT_MODEL_NAME,
    max_new_tokens: int = 2048,
    device: DeviceRequest = "auto",
    log_path: Path | None = None,
    ready_timeout_s: float = 300.0,
    api_key: SecretStr | None = None,
) -> ServedModel:
    """Start `swift deploy` for the adapter and wait until it serves `model_name`; with `api_key`,
    requests must carry it as a bearer token. A non-loopback host without a key is refused first."""
    check_host_needs_key(host, api_key)
    arguments = read_adapter_arguments(Path(adapter_path))
    base_model = str(arguments["model"])
    choice = choose_device(device)
    port = port or free_loopback_port()
    log_path = Path(log_path) if log_path else Path(adapter_path).resolve().parent / f"serve-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.pop(SERVE_API_KEY_VARIABLE, None)
    if api_key is not None and api_key.get_secret_value():
        env[SERVE_API_KEY_VARIABLE] = api_key.get_secret_value()
    if Path(base_model).exists():
        env.setdefault("HF_HUB_OFFLINE", "1")
    if choice.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    command = deploy_command(
        Path(adapter_path),
        host=host,
        port=port,
        model_name=model_name,
        max_new_tokens=max_new_tokens,
        torch_dtype=choice.torch_dtype,
    )
    logger.info("Starting swift deploy on %s:%d (log %s)", host, port, log_path)
    log_path.write_bytes(b"")  # one log per start: an earlier run on this port must not show in errors
    process = start_in_own_session(command, log_path, env)
    server = ServedModel(process, host=host, port=port, model_name=model_name, log_path=log_path)
    try:
        server.wait_ready(ready_timeout_s)
    except BaseException:
        server.stop()
        raise
    logger.info("Serving %s at %s", model_name, server.base_url)
    return server


@contextmanager
def serve_adapter(adapter_path: Path, **kwargs: object) -> Iterator[ServedModel]:
    """`start_server` as a context manager that always stops the server."""
    server = start_server(Path(adapter_path), **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()


class _RedactingStream:
    """A text stream that writes through to `stream` with `secret` replaced by ***."""

    def __init__(self, stream: TextIO, secret: str) -> None:
        self._stream = stream
        self._secret = secret

    def write(self, text: str) -> int:
        self._stream.write(text.replace(self._secret, "***"))
        return len(text)

    def __getattr__(self, name: str) -> object:  # flush, fileno, isatty, encoding...
        return getattr(self._stream, name)


def _deploy_with_key_from_environment(deploy_arguments: list[str]) -> None:
    """The child: `swift deploy` with the key from SERVE_API_KEY_VARIABLE as `--api_key`, added in
    this process only, and the key redacted from everything it prints."""
    import runpy

    api_key = os.environ.pop(SERVE_API_KEY_VARIABLE, None)
    if api_key:
        deploy_arguments = [*deploy_arguments, "--api_key", api_key]
        sys.stdout = _RedactingStream(sys.stdout, api_key)  # type: ignore[assignment]
        sys.stderr = _RedactingStream(sys.stderr, api_key)  # type: ignore[assignment]
    sys.argv = ["swift.cli.deploy", *deploy_arguments]
    runpy.run_module("swift.cli.deploy", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    _deploy_with_key_from_environment(sys.argv[1:])
