"""The local-server helper (`ops.local_server`) against a real child: a tiny Python HTTP server that
lists one model at /v1/models, started in its own process group.

The child can be told to wait before listening, to fail at start-up, to ignore SIGTERM and to start
a grandchild that ignores SIGTERM, so ready detection, start-up errors and stopping the whole group
are checked on real processes. The last tests run the two users of the helper (the embedded
teacher's llama.cpp server and `swift deploy`) with that child in place of the real server.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from methyl_distill.ops.local_server import (
    LocalServerError,
    LocalServerExited,
    LocalServerProcess,
    LocalServerStartTimeout,
    free_loopback_port,
    process_group_members,
    read_log_tail,
)

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="process checks read /proc (Linux)")

# argv: PORT MODEL [--delay S] [--fail] [--ignore-term] [--grandchild PID_FILE]
CHILD_SERVER = r"""
import json, os, signal, subprocess, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer

port, model, options = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
print(f"child server for {model} starting, pid {os.getpid()}", flush=True)
if "--fail" in options:
    print("fatal: cannot load model weights from broken.gguf", file=sys.stderr, flush=True)
    sys.exit(3)
if "--ignore-term" in options:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if "--grandchild" in options:
    pid_file = options[options.index("--grandchild") + 1]
    stubborn = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "open(sys.argv[1], 'w').write('ready'); time.sleep(600)"
    )
    grandchild = subprocess.Popen([sys.executable, "-c", stubborn, pid_file + ".ready"])
    while True:  # listen only once the grandchild ignores SIGTERM
        try:
            open(pid_file + ".ready").close()
            break
        except OSError:
            time.sleep(0.02)
    open(pid_file, "w").write(str(grandchild.pid))
if "--delay" in options:
    time.sleep(float(options[options.index("--delay") + 1]))


class Models(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/v1/models":
            self.send_error(404)
            return
        body = json.dumps({"object": "list", "data": [{"id": model, "object": "model"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


print(f"listening on {port}", flush=True)
HTTPServer(("127.0.0.1", port), Models).serve_forever()
"""


def child_command(port: int, model: str, *options: str) -> list[str]:
    return [sys.executable, "-c", CHILD_SERVER, str(port), model, *options]


def is_alive(pid: int) -> bool:
    """Running and not a zombie (a killed process whose parent has not reaped it yet is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.fixture
def servers() -> Iterator[list[LocalServerProcess]]:
    """Servers a test starts; whatever is left of them is killed afterwards, even when stop is broken."""
    started: list[LocalServerProcess] = []
    yield started
    for server in started:
        for pid in process_group_members(server.pid):
            os.kill(pid, signal.SIGKILL)
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(timeout=10)


def start_child(
    servers: list[LocalServerProcess], tmp_path: Path, model: str, *options: str
) -> LocalServerProcess:
    port = free_loopback_port()
    server = LocalServerProcess.start(
        child_command(port, model, *options),
        base_url=f"http://127.0.0.1:{port}/v1",
        log_path=tmp_path / "server.log",
        name="the child server",
    )
    servers.append(server)
    return server


def test_ready_only_once_the_model_is_listed(servers: list[LocalServerProcess], tmp_path: Path) -> None:
    began = time.monotonic()
    server = start_child(servers, tmp_path, "student", "--delay", "1.0")
    assert server.pid == os.getpgid(server.pid) != os.getpgrp()  # leader of its own group
    server.wait_until_serving("student", timeout_s=30)
    assert time.monotonic() - began >= 1.0  # not before the child listens
    listed = httpx.get(f"{server.base_url}/models", timeout=5).json()["data"]
    assert [entry["id"] for entry in listed] == ["student"]
    assert "listening on" in server.log_tail()
    server.stop(grace_s=5)
    assert server.process.returncode == -signal.SIGTERM
    assert process_group_members(server.pid) == []


def test_a_server_listing_another_model_times_out_and_keeps_running(
    servers: list[LocalServerProcess], tmp_path: Path
) -> None:
    server = start_child(servers, tmp_path, "someone-else")
    with pytest.raises(LocalServerStartTimeout, match=r"did not list model 'student'") as failure:
        server.wait_until_serving("student", timeout_s=1.5)
    assert isinstance(failure.value, TimeoutError)
    assert "child server for someone-else starting" in str(failure.value)  # the log's tail
    assert server.process.poll() is None  # the caller decides to stop it
    server.stop(grace_s=5)
    assert server.process.poll() is not None


def test_a_child_exiting_during_start_up_raises_with_its_log(
    servers: list[LocalServerProcess], tmp_path: Path
) -> None:
    server = start_child(servers, tmp_path, "student", "--fail")
    began = time.monotonic()
    with pytest.raises(LocalServerExited) as failure:
        server.wait_until_serving("student", timeout_s=60)
    assert time.monotonic() - began < 20  # fails fast, not at the deadline
    message = str(failure.value)
    assert "exited with code 3" in message and str(server.log_path) in message
    assert "fatal: cannot load model weights from broken.gguf" in message


def test_stop_ends_the_whole_group_with_a_grandchild_that_ignores_sigterm(
    servers: list[LocalServerProcess], tmp_path: Path
) -> None:
    pid_file = tmp_path / "grandchild.pid"
    server = start_child(servers, tmp_path, "student", "--grandchild", str(pid_file))
    server.wait_until_serving("student", timeout_s=30)
    grandchild = int(pid_file.read_text())
    try:
        assert is_alive(grandchild) and os.getpgid(grandchild) == server.pid
        assert sorted(process_group_members(server.pid)) == sorted([server.pid, grandchild])
        began = time.monotonic()
        server.stop(grace_s=1.0)
        assert time.monotonic() - began < 8
        assert server.process.returncode == -signal.SIGTERM  # the leader went on SIGTERM
        assert not is_alive(grandchild)  # the grandchild only on the group's SIGKILL
        assert process_group_members(server.pid) == []
        server.stop()  # a second stop is a no-op
    finally:
        if is_alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)


def test_stop_kills_a_leader_that_ignores_sigterm(servers: list[LocalServerProcess], tmp_path: Path) -> None:
    server = start_child(servers, tmp_path, "student", "--ignore-term")
    server.wait_until_serving("student", timeout_s=30)
    began = time.monotonic()
    server.stop(grace_s=0.5)
    assert 0.5 <= time.monotonic() - began < 8
    assert server.process.returncode == -signal.SIGKILL
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.base_url}/models", timeout=2)


def test_log_tail_keeps_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("".join(f"line {number}\n" for number in range(100)))
    assert read_log_tail(log, lines=3) == "line 97\nline 98\nline 99"
    assert read_log_tail(log, lines=3, characters=9) == "8\nline 99"
    assert read_log_tail(tmp_path / "missing.log") == "(no log)"


# The two users of the helper, with the child in place of llama.cpp's server and of swift deploy.


def test_embedded_teacher_server_runs_on_the_helper(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from methyl_distill.teacher import llama_cpp_server as embedded_teacher

    model_file = tmp_path / "model.gguf"
    model_file.write_bytes(b"GGUF")
    options: list[str] = []
    monkeypatch.setattr(embedded_teacher, "ensure_llama_cpp_server_installed", lambda: None)
    monkeypatch.setattr(
        embedded_teacher,
        "llama_server_command",
        lambda config, model_path, port: child_command(port, config.model_alias, *options),
    )
    config = embedded_teacher.EmbeddedTeacherConfig(
        model_path=model_file, log_path=tmp_path / "teacher.log", startup_timeout_s=30
    )
    with embedded_teacher.EmbeddedTeacherServer(config) as server:
        assert server._process is not None
        group = server._process.pid
        models = httpx.get(f"{server.base_url}/models", timeout=5).json()["data"]
        assert [entry["id"] for entry in models] == [config.model_alias]
    assert process_group_members(group) == [] and server._process is None

    options.append("--fail")
    failing = embedded_teacher.EmbeddedTeacherServer(config)
    with pytest.raises(embedded_teacher.EmbeddedTeacherError, match="exited with code 3") as failure:
        failing.start()
    assert isinstance(failure.value.__cause__, LocalServerError)
    assert str(config.log_path) in str(failure.value) and "broken.gguf" in str(failure.value)
    assert failing._process is None and config.log_path.is_file()


def test_swift_deploy_server_runs_on_the_helper(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from methyl_distill.training import serving

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "args.json").write_text('{"model": "tiny-base"}')
    options: list[str] = []
    monkeypatch.setattr(
        serving, "choose_device", lambda device: SimpleNamespace(device="cpu", torch_dtype="float32")
    )
    monkeypatch.setattr(
        serving,
        "deploy_command",
        lambda adapter_path, *, port, model_name, **_: child_command(port, model_name, *options),
    )
    with serving.serve_adapter(adapter, model_name="student", ready_timeout_s=30) as server:
        group = server.process.pid
        models = httpx.get(f"{server.base_url}/models", timeout=5).json()["data"]
        assert [entry["id"] for entry in models] == ["student"]
        assert server.log_path.parent == adapter.parent and "listening on" in server.log_tail()
    assert process_group_members(group) == []

    options.append("--fail")
    with pytest.raises(RuntimeError, match=r"swift deploy exited with code 3(.|\n)*broken\.gguf"):
        serving.start_server(adapter, model_name="student", ready_timeout_s=30)

    options[:] = ["--delay", "30"]
    began = time.monotonic()
    with pytest.raises(TimeoutError, match="swift deploy did not list model 'student'"):
        serving.start_server(
            adapter, model_name="student", ready_timeout_s=1.0, log_path=tmp_path / "slow.log"
        )
    assert time.monotonic() - began < 20
    # The timed-out server was stopped, not left behind.
    log_line = (tmp_path / "slow.log").read_text().splitlines()[0]
    assert log_line.startswith("child server for student starting, pid ")
    assert not is_alive(int(log_line.rsplit(" ", 1)[1]))
