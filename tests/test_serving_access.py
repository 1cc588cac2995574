"""Who may use `methyl-distill serve`: loopback without a key, any other host only with one."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from methyl_distill.cli import main
from methyl_distill.training.serving import (
    SERVE_API_KEY_VARIABLE,
    check_host_needs_key,
    deploy_command,
    is_loopback_host,
)


def test_loopback_hosts() -> None:
    assert all(is_loopback_host(host) for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"))
    assert not any(is_loopback_host(host) for host in ("0.0.0.0", "::", "10.0.0.5", "example.org", ""))


def test_serve_refuses_a_public_host_without_a_key_before_anything_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(SERVE_API_KEY_VARIABLE, raising=False)
    missing = tmp_path / "no-adapter-here"  # nothing is read: the host is refused first
    started = time.monotonic()
    assert main(["serve", "--adapter", str(missing), "--host", "0.0.0.0"]) == 1
    assert time.monotonic() - started < 5
    error = capsys.readouterr().err
    assert "--host 0.0.0.0" in error and "--api_key" in error and SERVE_API_KEY_VARIABLE in error
    with pytest.raises(ValueError, match="API key"):
        check_host_needs_key("::", SecretStr(""))
    check_host_needs_key("0.0.0.0", SecretStr("k"))  # with a key it may listen anywhere
    check_host_needs_key("127.0.0.1", None)


def test_serve_takes_the_key_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(SERVE_API_KEY_VARIABLE, "sk-serve-key")
    # Past the host check: it now fails on the missing adapter instead.
    assert main(["serve", "--adapter", str(tmp_path / "no-adapter-here"), "--host", "0.0.0.0"]) == 1
    error = capsys.readouterr().err
    assert "--host" not in error and "sk-serve-key" not in error


def test_the_key_is_not_on_the_deploy_command_line() -> None:
    command = deploy_command(
        Path("adapter"), host="0.0.0.0", port=8000, model_name="m", max_new_tokens=8, torch_dtype="float32"
    )
    assert "--api_key" not in command and command[2] == "methyl_distill.training.serving"
