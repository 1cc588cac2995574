"""The project's own log records in the Prefect UI's run logs, at their own levels.

The plain core logs through `logging.getLogger(__name__)` (`methyl_distill.teacher.openai_client`:
retries and 429s, `methyl_distill.extraction...`: skipped answers, ...). Prefect sends to its API
only the records of its run loggers and of the loggers named in its setting
`PREFECT_LOGGING_EXTRA_LOGGERS`, to which it gives its API handler when it sets up logging (at
`import prefect`, `prefect/logging/configuration.py`). So the setting must hold `methyl_distill`
in the environment of every process that runs a flow before Prefect is imported there: the command
line sets it first thing (`route_project_logs_to_prefect`), and the deployments' job variables, the
work pools' base job templates (`methyl-distill setup-prefect`) and the Docker images set it for
runs on workers (`PREFECT_LOGGING_ENVIRONMENT`).

Two more settings come with it:
- `PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW=ignore`: the project also logs outside any run (the
  command before its flow starts, a helper thread); Prefect would warn about each such record
  reaching its API handler. They still reach the console.
- the level: an extra logger keeps its own level, and in a worker's run process the root logger's
  is WARNING, so the project's INFO records would never be made. `set_project_log_level` (called
  when the package is imported in a process where the setting names it) gives the `methyl_distill`
  logger Prefect's own level, `PREFECT_LOGGING_LEVEL` (INFO by default), unless it has one already.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping

PROJECT_LOGGER = "methyl_distill"
EXTRA_LOGGERS_SETTING = "PREFECT_LOGGING_EXTRA_LOGGERS"
MISSING_FLOW_SETTING = "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"

# What a process that runs the project's flows needs in its environment (job variables, images).
PREFECT_LOGGING_ENVIRONMENT: dict[str, str] = {
    EXTRA_LOGGERS_SETTING: PROJECT_LOGGER,
    MISSING_FLOW_SETTING: "ignore",
}


def with_project_logger(extra_loggers: str | None) -> str:
    """The comma-separated logger names of `extra_loggers` with `methyl_distill` among them."""
    names = [name.strip() for name in (extra_loggers or "").split(",") if name.strip()]
    if PROJECT_LOGGER not in names:
        names.append(PROJECT_LOGGER)
    return ",".join(names)


def names_project_logger(environ: MutableMapping[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    value = environ.get(EXTRA_LOGGERS_SETTING, "")
    return PROJECT_LOGGER in [name.strip() for name in value.split(",")]


def route_project_logs_to_prefect(environ: MutableMapping[str, str] | None = None) -> None:
    """Add `methyl_distill` to Prefect's extra loggers in `environ` (the process's environment), keeping
    loggers named there already. Prefect reads it once, when it is imported: call this before."""
    environ = os.environ if environ is None else environ
    environ[EXTRA_LOGGERS_SETTING] = with_project_logger(environ.get(EXTRA_LOGGERS_SETTING))
    environ.setdefault(MISSING_FLOW_SETTING, "ignore")


def set_project_log_level(environ: MutableMapping[str, str] | None = None) -> None:
    """Give the `methyl_distill` logger Prefect's level when Prefect routes it and it has none."""
    environ = os.environ if environ is None else environ
    project = logging.getLogger(PROJECT_LOGGER)
    if not names_project_logger(environ) or project.level != logging.NOTSET:
        return
    level = logging.getLevelName(environ.get("PREFECT_LOGGING_LEVEL", "INFO").strip().upper())
    project.setLevel(level if isinstance(level, int) else logging.INFO)
