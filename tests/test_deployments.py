"""Deployments end to end, as a user runs them: nothing mocked, every service started by the test.

A real `prefect server start` on a loopback port (temporary PREFECT_HOME), `methyl-distill
setup-prefect`, `prefect --no-prompt deploy` from deployments/prefect.yaml, a process worker, then
`prefect deployment run 'pipeline/pipeline' --watch`: the pipeline against the project's
OpenAI-compatible test server with the tiny Mistral student, to completion. Finally `methyl-distill
watch --once` emits `paper.added` for a new paper and the deployment trigger starts a pipeline run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from methyl_distill.teacher.llama_cpp_server import free_loopback_port
from tests.source_snapshot import snapshot_repository

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SAMPLE_PAPERS = ROOT / "data" / "papers"
STUDENT_DEFAULTS = {
    "student_preset": "tiny-mistral",
    "finetune": {
        "max_steps": 2,
        "save_steps": 2,
        "learning_rate": 0.005,
        "batch_size": 2,
        "max_length": 1024,
        "gradient_checkpointing": False,
        "device": "cpu",
        "seed": 0,
    },
    "evaluation_limit": 1,
    "evaluation_max_new_tokens": 8,
}


class Services:
    """Background processes in their own process groups, stopped together; logs kept for failures."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs, self.env = logs, env
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, command: list[str], cwd: Path = ROOT) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                command, cwd=cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.processes.append((name, process))
        return process

    def run(
        self, name: str, command: list[str], timeout: float, cwd: Path = ROOT
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            command, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        (self.logs / f"{name}.log").write_text(result.stdout + result.stderr, encoding="utf-8")
        assert result.returncode == 0, (
            f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
        return result

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(encoding="utf-8", errors="replace")[-6000:] if path.exists() else ""

    def stop(self) -> None:
        for _, process in reversed(self.processes):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for _, process in reversed(self.processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def _wait_for(condition, timeout: float, what: str, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from tests.fake_openai.server import OpenAITestServerConfig, running_test_server

    work = tmp_path_factory.mktemp("deployments")
    logs = work / "logs"
    logs.mkdir()
    port = free_loopback_port()
    api = f"http://127.0.0.1:{port}/api"
    with running_test_server(OpenAITestServerConfig(latency_s=(0.0, 0.01))) as teacher:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "OPENAI_", "TEACHER_"))},
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PREFECT_HOME": str(work / "prefect-home"),
            "PREFECT_API_URL": api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OPENAI_API_KEY": "sk-test-deployments",
            "OPENAI_BASE_URL": teacher.base_url,
            "METHYL_DISTILL_CACHE_DIR": str(work / "prefect-cache"),
            "METHYL_DISTILL_MODEL_CACHE": str(work / "model-cache"),
            "XDG_CACHE_HOME": str(work / "xdg-cache"),
            # The CUDA deployments' image build and push steps, without a Docker engine.
            "PYTHONPATH": str(ROOT / "tests" / "docker_steps_stand_in"),
            "DOCKER_STEPS_STAND_IN_LOG": str(work / "docker-steps.jsonl"),
        }
        services = Services(logs, env)
        try:
            server = services.start(
                "server",
                [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            )

            def healthy() -> bool:
                assert server.poll() is None, f"prefect server exited:\n{services.log('server')}"
                with contextlib.suppress(httpx.HTTPError):
                    return httpx.get(f"{api}/health", timeout=2, trust_env=False).status_code == 200
                return False

            _wait_for(healthy, 180, "the Prefect server")
            yield {"work": work, "api": api, "services": services, "teacher": teacher, "env": env}
        finally:
            services.stop()


def _api(stack: dict[str, Any], method: str, path: str, body: dict | None = None) -> Any:
    response = httpx.request(method, f"{stack['api']}{path}", json=body, timeout=30, trust_env=False)
    response.raise_for_status()
    return response.json()


def _pipeline_runs(stack: dict[str, Any], deployment_id: str) -> list[dict[str, Any]]:
    return _api(
        stack,
        "POST",
        "/flow_runs/filter",
        {"deployments": {"id": {"any_": [deployment_id]}}, "sort": "EXPECTED_START_TIME_ASC"},
    )


def test_setup_deploy_run_and_paper_added_trigger(stack: dict[str, Any]) -> None:
    services: Services = stack["services"]
    work: Path = stack["work"]
    papers = work / "papers"
    shutil.copytree(SAMPLE_PAPERS, papers)
    output = work / "outputs"

    # Set-up is idempotent: a second run changes nothing. The process deployments' runs clone their
    # code from the repository variable: this working tree, committed into a local bare repository.
    setup = [
        str(BIN / "methyl-distill"),
        "setup-prefect",
        "--repository",
        snapshot_repository(work),
        "--image_registry",
        "registry.example.org/methyl",
    ]
    first = services.run("setup", setup, timeout=120).stdout
    assert "work pool 'methyl-distill-process': created" in first
    assert "work pool 'methyl-distill-cuda': created" in first
    assert "tag concurrency limit 'gpu': created" in first
    assert "prefect variable 'methyl_distill_repository': created" in first
    again = services.run("setup-again", setup, timeout=120).stdout
    assert again.count(": unchanged") == again.count(": ") and "created" not in again
    cuda = _api(stack, "GET", "/work_pools/methyl-distill-cuda")
    assert cuda["type"] == "docker"
    assert cuda["base_job_template"]["variables"]["properties"]["container_create_kwargs"]["default"][
        "device_requests"
    ][0]["capabilities"] == [["gpu"]]
    assert _api(stack, "GET", "/concurrency_limits/tag/gpu")["concurrency_limit"] == 1

    prefect = str(BIN / "prefect")
    deploy = [prefect, "--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml"]
    services.run("deploy-all", [*deploy, "--all"], timeout=300)
    # Local defaults for this machine: the tiny student, outputs in the test's folder.
    defaults = {"input_directory": str(papers), "output_directory": str(output), **STUDENT_DEFAULTS}
    services.run(
        "deploy-pipeline", [*deploy, "--name", "pipeline", "--params", json.dumps(defaults)], timeout=300
    )
    deployments = _api(stack, "POST", "/deployments/filter", {})
    names = {d["name"]: d for d in deployments}
    assert {
        "pipeline",
        "pipeline-gpu-finetune",
        "extract",
        "watch-papers",
        "finetune-cuda",
        "finetune-k8s",
    } <= set(names)
    assert names["finetune-cuda"]["work_pool_name"] == "methyl-distill-cuda"
    # The CUDA deployments name the image their build step made, under the registry variable.
    built = [json.loads(line) for line in (work / "docker-steps.jsonl").read_text().splitlines()]
    assert {(step["step"], step["image_name"]) for step in built} == {
        ("build", "registry.example.org/methyl/methyl-distill-cuda"),
        ("push", "registry.example.org/methyl/methyl-distill-cuda"),
    }
    for name in ("finetune-cuda", "finetune-k8s"):
        image = names[name]["job_variables"]["image"]
        assert image.startswith("registry.example.org/methyl/methyl-distill-cuda:"), (name, image)
    pipeline_id = names["pipeline"]["id"]

    # The worker runs in a folder of its own: each run clones the code there.
    (work / "worker").mkdir()
    worker = services.start(
        "worker",
        [prefect, "worker", "start", "--pool", "methyl-distill-process", "--type", "process", "--limit", "1"],
        cwd=work / "worker",
    )
    run = services.run(
        "run-pipeline",
        [prefect, "deployment", "run", "pipeline/pipeline", "--watch", "--watch-timeout", "600"],
        timeout=660,
    )
    assert worker.poll() is None, services.log("worker")
    summary = json.loads((output / "pipeline_summary.json").read_text(encoding="utf-8"))
    assert Path(summary["adapter_path"], "adapter_config.json").is_file()
    assert summary["evaluation_report_path"] and Path(summary["evaluation_report_path"]).is_file()
    assert summary["stages"]["extraction"]["extracted"] == 10  # eight text files, a PDF, a JATS article
    assert stack["teacher"].stats().requests >= 10
    assert "Completed" in run.stdout + run.stderr
    (completed,) = _pipeline_runs(stack, pipeline_id)
    assert completed["state_type"] == "COMPLETED"

    # Start watching the processed folder, then add a paper: `methyl-distill watch --once` announces
    # it and the deployment's trigger starts a pipeline run over the folder.
    state_file = work / "watch-state.json"

    def watch(name: str, flag: str) -> str:
        command = [str(BIN / "methyl-distill"), "watch", flag, "--input_directory", str(papers)]
        return services.run(name, [*command, "--state_file", str(state_file)], timeout=120).stdout

    assert "10 known paper(s)" in watch("watch-baseline", "--baseline")
    requests_before = stack["teacher"].stats().requests
    (papers / "rassf1a_followup.txt").write_text(
        "RASSF1A promoter methylation in serum DNA distinguished 40 breast cancer patients from 20 healthy "
        "women with 75% sensitivity and 95% specificity in a follow-up cohort measured by qMSP.\n",
        encoding="utf-8",
    )
    watched = watch("watch-new", "--once")
    assert "paper.added rassf1a_followup.txt" in watched
    assert "1 new paper(s) announced" in watched

    def triggered_run_finished() -> dict[str, Any] | None:
        runs = _pipeline_runs(stack, pipeline_id)
        assert worker.poll() is None, services.log("worker")
        if len(runs) >= 2 and runs[-1]["state_type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
            return runs[-1]
        return None

    triggered = _wait_for(
        triggered_run_finished, 420, "the pipeline run triggered by paper.added", interval=3
    )
    assert triggered["parameters"]["input_directory"] == str(papers.resolve())
    assert len(_pipeline_runs(stack, pipeline_id)) == 2  # one event, one run
    assert triggered["state_type"] == "COMPLETED", services.log("worker")
    # Only the new paper reached the teacher: the others came from the extraction cache.
    new_requests = stack["teacher"].stats().requests - requests_before
    assert 1 <= new_requests <= 3
    summary = json.loads((output / "pipeline_summary.json").read_text(encoding="utf-8"))
    assert (
        summary["stages"]["extraction"]["cached"] == 10 and summary["stages"]["extraction"]["extracted"] == 1
    )
