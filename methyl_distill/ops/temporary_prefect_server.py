"""The command line's temporary Prefect server, in a process group of its own.

Without `PREFECT_API_URL`, Prefect starts a temporary local server as a plain child process: in the
terminal's process group, so a Ctrl-C killed it at once, while the run still had states, logs and
events to send; the client then retried against the dead server for minutes. `prefect_api` starts
the same server (Prefect's command, environment and health check) through
`local_server.LocalServerProcess`, i.e. as the leader of its own session, points Prefect at it for
the duration (`PREFECT_API_URL`, in the environment: the command line is the edge), and at the
end sends what the client still holds (bounded by `FLUSH_TIMEOUT_S`) before it stops the server.
With `PREFECT_API_URL` set nothing is started.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from methyl_distill.ops.local_server import (
    LocalServerProcess,
    free_loopback_port,
)

logger = logging.getLogger(__name__)

# The longest wait for the client's queued logs and events, each, at the end of a command.
FLUSH_TIMEOUT_S = 5.0

# Prefect records task runs from the events clients send, through an in-memory queue of 10,000
# messages; its recorder writes one task run per transaction by default and fell behind an all-cached
# rerun of 10,000 papers (~40 a second here: a third of the runs never recorded). In batches it keeps
# up (bench/extract_10k.py). Defaults: the environment's own values win. Set them on a server of your
# own too (docs/extraction.md, "Ten thousand papers").
TASK_RUN_RECORDER_SETTINGS = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "200",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
}

# The URLs of the temporary servers this process runs now: they serve this command alone, so nothing
# there is shared with another process (the teacher's token bucket stays local).
_RUNNING_URLS: set[str] = set()


def is_temporary_api(url: str) -> bool:
    """Whether `url` is a temporary server this process started for one command."""
    return url in _RUNNING_URLS


def flush_prefect_client(timeout_s: float = FLUSH_TIMEOUT_S) -> None:
    """Send the logs and events Prefect's client still holds, waiting at most `timeout_s` for each."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (APILogWorker, EventsWorker):
        try:
            service.drain_all(timeout=timeout_s)
        except Exception as exc:  # a flush is not worth failing a command for
            logger.warning("could not flush Prefect's %s: %s", service.__name__, exc)


@contextlib.contextmanager
def prefect_api(cancelled: Callable[[], bool] = lambda: False) -> Iterator[str | None]:
    """The Prefect API of a command: `PREFECT_API_URL` when set (yields None), else a temporary
    server of our own, started in its own session and stopped on the way out (yields its URL).
    `cancelled` ends the wait for a starting server (a Ctrl-C during start-up)."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        get_current_settings,
    )

    if PREFECT_API_URL.value():
        yield None
        return
    import prefect

    port = free_loopback_port()
    log_folder = Path(tempfile.mkdtemp(prefix="methyl-distill-prefect-"))
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(prefect.__module_path__.parent),
        "--factory",
        "prefect.server.api.server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]
    # As Prefect's own temporary server (prefect.server.api.server.SubprocessASGIServer).
    environment = {
        **TASK_RUN_RECORDER_SETTINGS,
        **os.environ,
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
        **get_current_settings().to_environment_variables(exclude_unset=True),
    }
    api_url = f"http://127.0.0.1:{port}/api"
    server = LocalServerProcess.start(
        command,
        base_url=api_url,
        log_path=log_folder / "server.log",
        name="temporary Prefect server",
        env=environment,
    )
    started = False
    try:
        server.wait_until(
            lambda client: client.get(f"{api_url}/health").status_code == 200,
            f"answer {api_url}/health",
            PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value(),
            poll_interval_s=0.1,
            cancelled=cancelled,
        )
        started = True
        logger.info("temporary Prefect server at %s (pid %d)", api_url, server.pid)
        # In the environment, not only in this thread's settings context: threads started without
        # it (a progress reporter, Prefect's own workers) read the process-wide settings.
        _RUNNING_URLS.add(api_url)
        with _environment_variable("PREFECT_API_URL", api_url):
            try:
                yield api_url
            finally:
                flush_prefect_client()
                _RUNNING_URLS.discard(api_url)
    finally:
        server.stop(grace_s=5.0)
        if started:
            shutil.rmtree(log_folder, ignore_errors=True)
        else:  # the error names it; kept for a look
            logger.info("the temporary Prefect server's log: %s", server.log_path)


@contextlib.contextmanager
def _environment_variable(name: str, value: str) -> Iterator[None]:
    """`name=value` in the environment and in Prefect's process-wide settings, restored afterwards."""
    from prefect.context import refresh_global_settings_context

    previous = os.environ.get(name)
    os.environ[name] = value
    refresh_global_settings_context()
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous
        refresh_global_settings_context()
