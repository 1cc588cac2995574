"""The project's log records reach the Prefect API's logs of the flow run, at their own levels.

Real processes against the session's Prefect test server: the `methyl-distill extract` command, and
a flow run in a process set up as a worker sets up a deployment's run (only the environment of the
job variables, Prefect's own logging configuration, no `logging.basicConfig`). The teacher is the
project's OpenAI test server with one injected 500, which the client retries with a warning.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from methyl_distill.ops.prefect_logging import (
    PREFECT_LOGGING_ENVIRONMENT,
    route_project_logs_to_prefect,
    set_project_log_level,
    with_project_logger,
)
from tests.fake_openai.server import OpenAITestServerConfig, running_test_server

REPOSITORY = Path(__file__).resolve().parent.parent
SAMPLE_PAPERS = REPOSITORY / "data" / "papers"
RETRY_LOGGER = "methyl_distill.teacher.openai_client"


def test_the_setting_keeps_other_extra_loggers_and_the_level_follows_prefect() -> None:
    assert with_project_logger(None) == "methyl_distill"
    assert with_project_logger("sqlalchemy, methyl_distill") == "sqlalchemy,methyl_distill"
    assert with_project_logger("sqlalchemy") == "sqlalchemy,methyl_distill"
    environ: dict[str, str] = {"PREFECT_LOGGING_EXTRA_LOGGERS": "botocore"}
    route_project_logs_to_prefect(environ)
    assert environ == {
        "PREFECT_LOGGING_EXTRA_LOGGERS": "botocore,methyl_distill",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    }
    project = logging.getLogger("methyl_distill")
    before = project.level
    try:
        project.setLevel(logging.NOTSET)
        set_project_log_level({})  # not routed to Prefect: left alone
        assert project.level == logging.NOTSET
        set_project_log_level({**environ, "PREFECT_LOGGING_LEVEL": "DEBUG"})
        assert project.level == logging.DEBUG
        set_project_log_level(environ)  # a level already set is kept
        assert project.level == logging.DEBUG
    finally:
        project.setLevel(before)


def test_runs_on_workers_get_the_setting_from_job_variables_and_images() -> None:
    shipped = yaml.safe_load((REPOSITORY / "deployments" / "prefect.yaml").read_text(encoding="utf-8"))
    for deployment in shipped["deployments"]:
        env = ((deployment.get("work_pool") or {}).get("job_variables") or {}).get("env") or {}
        for name, value in PREFECT_LOGGING_ENVIRONMENT.items():
            assert env.get(name) == value, (deployment["name"], name)
    # The images flow runs run in (Dockerfile.worker's docker worker only starts their containers).
    for image in ("Dockerfile.cpu", "Dockerfile.cuda"):
        text = (REPOSITORY / "docker" / image).read_text(encoding="utf-8")
        for name, value in PREFECT_LOGGING_ENVIRONMENT.items():
            assert f"{name}={value}" in text, (image, name)


def test_work_pools_set_up_by_the_project_default_to_the_setting() -> None:
    from methyl_distill.ops.prefect_setup import (
        DOCKER_GPU_TEMPLATE,
        JOB_TEMPLATES_DIRECTORY,
        load_base_job_template,
        with_prefect_logging_environment,
    )

    shipped = load_base_job_template(JOB_TEMPLATES_DIRECTORY / DOCKER_GPU_TEMPLATE)
    template = with_prefect_logging_environment(shipped)
    assert template["variables"]["properties"]["env"]["default"] == PREFECT_LOGGING_ENVIRONMENT
    assert "default" not in shipped["variables"]["properties"]["env"]  # the file's template is untouched
    shipped["variables"]["properties"]["env"]["default"] = {"HF_HOME": "/cache"}
    merged = with_prefect_logging_environment(shipped)["variables"]["properties"]["env"]["default"]
    assert merged == {**PREFECT_LOGGING_ENVIRONMENT, "HF_HOME": "/cache"}


def _papers(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for sample in sorted(SAMPLE_PAPERS.glob("*.txt"))[:2]:
        (folder / sample.name).write_text(sample.read_text(encoding="utf-8"), encoding="utf-8")
    return folder


async def _flow_run_logs(output_directory: Path) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, LogFilter, LogFilterFlowRunId

    async with get_client() as client:
        runs = await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["extract"])))
        [run] = [run for run in runs if run.parameters.get("output_directory") == str(output_directory)]
        return await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])), limit=200
        )


def _levels_by_logger(logs: list[Any]) -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    for log in logs:
        found.setdefault(log.name, set()).add(log.level)
    return found


@pytest.mark.integration
def test_project_warnings_and_info_are_in_the_flow_runs_logs(prefect_harness: None, tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    papers = _papers(tmp_path / "papers")
    base = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_", "OPENAI_", "TEACHER_"))
    }
    base.update(
        {
            "PREFECT_API_URL": str(PREFECT_API_URL.value()),  # the session's test server
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "OPENAI_API_KEY": "sk-test-run-logs",
            "TEACHER_BUCKET_BACKEND": "local",
        }
    )
    config = OpenAITestServerConfig(latency_s=(0.0, 0.05), retry_after_s=0.1)
    with running_test_server(config) as server:
        base["OPENAI_BASE_URL"] = server.base_url

        # 1. The command: it sets Prefect's extra loggers itself.
        server.inject("server_error", count=1)
        command_output = tmp_path / "command"
        command = [str(Path(sys.executable).with_name("methyl-distill")), "extract"]
        command += ["--input_directory", str(papers), "--output_directory", str(command_output)]
        command += ["--cache_dir", str(tmp_path / "cache-command")]
        done = subprocess.run(command, env=base, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]

        # 2. A run set up as a worker sets up a deployment's: the job variables' environment only.
        server.inject("server_error", count=1)
        worker_output = tmp_path / "worker"
        script = (
            "from methyl_distill.flows.extract import extract_flow\n"
            f"extract_flow({str(papers)!r}, {str(worker_output)!r}, cache_dir={str(tmp_path / 'w')!r})\n"
        )
        env = {**base, **PREFECT_LOGGING_ENVIRONMENT}
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr[-3000:]
    assert server.stats().faults.get("server_error") == 2

    for output in (command_output, worker_output):
        logs = asyncio.run(_flow_run_logs(output))
        levels = _levels_by_logger(logs)
        retries = [log for log in logs if log.name == RETRY_LOGGER and "retrying" in log.message]
        assert len(retries) == 1 and retries[0].level == logging.WARNING, (output.name, levels)
        assert retries[0].task_run_id is not None  # attached to the paper's task run too
        # INFO records of the project arrive as INFO (in the worker's process the root logger is at
        # WARNING: only the project logger's own level lets them be made).
        assert logging.INFO in levels.get("methyl_distill.teacher.output_mode", set()), (output.name, levels)
        assert "prefect.flow_runs" in levels  # the run's own logger, as before
