"""A local OpenAI-compatible server run as a child process: free port, start, wait until ready, stop.

Two servers run this way: llama.cpp's server for the embedded teacher (`teacher.llama_cpp_server`) and
ms-swift's deploy for the tuned student (`training.serving`). Both follow the same life cycle:

- `free_loopback_port` asks the OS for a port nobody listens on.
- `LocalServerProcess.start` (through `start_in_own_session`) runs the command in its own session,
  hence its own process group, with stdout and stderr appended to a log file. Servers start children
  of their own (uvicorn workers, ms-swift's engine), and a Ctrl-C in the terminal reaches the parent
  first, which then stops the server cleanly instead of the terminal killing half of it.
- `wait_until_serving` polls `GET {base_url}/models` until the model is listed. A child that exits
  during start-up, or a deadline that passes, raises with the end of the log in the message: that
  is where the server says why.
- `stop` sends SIGTERM to the whole group, SIGKILL after a grace period, and then ends members that
  outlived the group leader.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)


class LocalServerError(RuntimeError):
    """A local server did not come up."""


class LocalServerExited(LocalServerError):
    """The server process exited before it served the model."""


class LocalServerStartTimeout(LocalServerError, TimeoutError):
    """The server did not list the model within the start-up deadline."""


def free_loopback_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def read_log_tail(log_path: Path | None, lines: int = 40, characters: int = 4000) -> str:
    """The last `lines` lines of a log file, at most `characters` long; '(no log)' without one."""
    if log_path is None:
        return "(no log)"
    try:
        text = Path(log_path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])[-characters:]


def process_group_members(group: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc; on systems without /proc, the
    group id itself while anything in the group can still be signalled."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(group, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [group]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone between listing and reading
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so split after the last ')'.
        state, _parent, process_group = stat.rsplit(")", 1)[1].split()[:3]
        if int(process_group) == group and state not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _signal_group(group: int, signal_number: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal_number)


def start_in_own_session(
    command: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Run `command` as the leader of a new session (and process group), stdout and stderr appended
    to `log_path`, stdin closed; does not wait."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )


class LocalServerProcess:
    """An OpenAI-compatible server running as the leader of its own process group (see
    `start_in_own_session`), reachable at `base_url` (ending in /v1)."""

    def __init__(self, process: subprocess.Popen[bytes], *, base_url: str, log_path: Path, name: str) -> None:
        self.process = process
        self.base_url = base_url.rstrip("/")
        self.log_path = Path(log_path)
        self.name = name
        self._stopped = False

    @classmethod
    def start(
        cls,
        command: Sequence[str],
        *,
        base_url: str,
        log_path: Path,
        name: str,
        env: Mapping[str, str] | None = None,
    ) -> LocalServerProcess:
        """Start `command` in its own session (see `start_in_own_session`); does not wait."""
        process = start_in_own_session(command, log_path, env)
        logger.info("started %s (pid %d, log %s)", name, process.pid, log_path)
        return cls(process, base_url=base_url, log_path=log_path, name=name)

    @property
    def pid(self) -> int:
        """The leader's pid, which is also the process group's id."""
        return self.process.pid

    def log_tail(self, lines: int = 40, characters: int = 4000) -> str:
        return read_log_tail(self.log_path, lines=lines, characters=characters)

    def wait_until(
        self,
        ready: Callable[[httpx.Client], bool],
        what: str,
        timeout_s: float,
        poll_interval_s: float = 0.25,
        headers: dict[str, str] | None = None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> None:
        """Poll `ready(client)` until it is true. Raises `LocalServerExited` when the process ends
        first, `LocalServerStartTimeout` after `timeout_s` (both with the log's end; the server is left
        running: the caller stops it), and `KeyboardInterrupt` when `cancelled()` (a Ctrl-C during
        start-up). HTTP errors and unreadable replies count as not ready yet."""
        import httpx  # here, not at import: `methyl-distill --help` stays fast

        deadline = time.monotonic() + timeout_s
        # trust_env=False: a proxy from the environment must not stand between us and loopback.
        with httpx.Client(timeout=2.0, trust_env=False, headers=headers or {}) as client:
            while True:
                exit_code = self.process.poll()
                if exit_code is not None:
                    raise LocalServerExited(
                        f"{self.name} exited with code {exit_code} during start-up; "
                        f"its log ({self.log_path}) ends with:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    if ready(client):
                        return
                if cancelled():
                    raise KeyboardInterrupt
                if time.monotonic() > deadline:
                    raise LocalServerStartTimeout(
                        f"{self.name} did not {what} within {timeout_s:.0f} s; "
                        f"its log ({self.log_path}) ends with:\n{self.log_tail()}"
                    )
                time.sleep(poll_interval_s)

    def wait_until_serving(
        self,
        model_name: str,
        timeout_s: float,
        poll_interval_s: float = 0.25,
        api_key: SecretStr | None = None,
    ) -> None:
        """Return once `GET {base_url}/models` lists `model_name` (asked with `api_key` as a bearer
        token when the server wants one); see `wait_until` for the errors."""
        url = f"{self.base_url}/models"

        def lists_model(client: httpx.Client) -> bool:
            response = client.get(url)
            return response.status_code == 200 and any(
                isinstance(entry, dict) and entry.get("id") == model_name
                for entry in response.json().get("data", [])
            )

        headers = {"Authorization": f"Bearer {api_key.get_secret_value()}"} if api_key is not None else None
        self.wait_until(
            lists_model, f"list model {model_name!r} at {url}", timeout_s, poll_interval_s, headers
        )
        logger.info("%s serves %s at %s", self.name, model_name, self.base_url)

    def stop(self, grace_s: float = 10.0) -> None:
        """End the whole process group: SIGTERM, SIGKILL to the group when the leader has not exited
        after `grace_s`; members that outlive the leader get the rest of the grace period, then
        SIGKILL. Calling it again does nothing."""
        if self._stopped:
            return
        self._stopped = True
        group = self.process.pid
        deadline = time.monotonic() + grace_s
        _signal_group(group, signal.SIGTERM)
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            logger.warning("%s ignored SIGTERM for %.0f s: killing its process group", self.name, grace_s)
            _signal_group(group, signal.SIGKILL)
            self.process.wait(timeout=grace_s)
        while process_group_members(group) and time.monotonic() < deadline:
            time.sleep(0.05)
        if process_group_members(group):
            _signal_group(group, signal.SIGKILL)
            kill_deadline = time.monotonic() + 5.0
            while process_group_members(group) and time.monotonic() < kill_deadline:
                time.sleep(0.05)
        logger.info("stopped %s (exit code %s)", self.name, self.process.returncode)
