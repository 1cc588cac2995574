"""Serve the tuned student as an OpenAI-compatible endpoint with ms-swift's deploy.

`swift deploy --adapters ADAPTER --infer_backend transformers` starts a FastAPI server with
`/v1/models` and `/v1/chat/completions`. It runs here as a child process in its own process group
(ms-swift starts further processes of its own), bound to loopback by default; `start` waits until
`/v1/models` answers and `stop` ends the whole group. Use it as a context manager:

    with serve_adapter(adapter_path) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused")
        client.chat.completions.create(model=server.model_name, messages=[...], temperature=0)
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from methyl_distill.training.inference import read_adapter_arguments
from methyl_distill.training.runtime_device import DeviceRequest, choose_device

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "methyl-distill-student"


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/v1"

    def log_tail(self, characters: int = 3000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-characters:]
        except OSError:
            return ""

    def wait_ready(self, timeout_s: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"swift deploy exited with code {self.process.returncode} before it was ready; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                response = httpx.get(f"{self.base_url}/models", timeout=2.0)
                if response.status_code == 200:
                    served = [entry.get("id") for entry in response.json().get("data", [])]
                    if self.model_name in served:
                        return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"swift deploy was not ready within {timeout_s:.0f} s; log {self.log_path}")

    def stop(self, grace_s: float = 15.0) -> None:
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=grace_s)
        # The group may hold children that outlive the leader: end them too.
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


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
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
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
