"""Serve the tuned student as an OpenAI-compatible endpoint with ms-swift's deploy.

`swift deploy --adapters ADAPTER --infer_backend transformers` starts a FastAPI server with
`/v1/models` and `/v1/chat/completions`. It runs here as a child process in its own process group
(ms-swift starts further processes of its own), bound to loopback by default; `start` waits until
`/v1/models` answers and `stop` ends the whole group (both through `ops.local_server`). Use it as a
context manager:

    with serve_adapter(adapter_path) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused")
        client.chat.completions.create(model=server.model_name, messages=[...], temperature=0)
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
        "swift.cli.deploy",
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
) -> ServedModel:
    """Start `swift deploy` for the adapter and wait until it serves `model_name`."""
    arguments = read_adapter_arguments(Path(adapter_path))
    base_model = str(arguments["model"])
    choice = choose_device(device)
    port = port or free_loopback_port()
    log_path = Path(log_path) if log_path else Path(adapter_path).resolve().parent / f"serve-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
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
