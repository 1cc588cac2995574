"""methyl-distill: DNA-methylation marker papers -> a domain-expert language model."""

from pathlib import Path as _Path

__version__ = "0.1.0"

# Imported from a source tree (a deployment's git clone, the images' /opt/methyl-distill), this
# package finds its flows and tasks there too. The wheel installs `flows/` and `tasks/` as
# methyl_distill.flows and .tasks, but in the source tree they sit beside this folder; Prefect puts
# the flow run's working directory (the clone) first on sys.path, so `methyl_distill` comes from the
# clone, and without this its `.tasks` would come from whatever copy is installed, or not at all.
_SOURCE_TREE = _Path(__file__).resolve().parent.parent
if (_SOURCE_TREE / "pyproject.toml").is_file() and (_SOURCE_TREE / "tasks" / "__init__.py").is_file():
    __path__.append(str(_SOURCE_TREE))

# In a worker's run process, where the environment routes the project's loggers to Prefect's run logs,
# their INFO records must be made too (docs in methyl_distill/ops/prefect_logging.py).
from methyl_distill.ops.prefect_logging import set_project_log_level as _set_project_log_level  # noqa: E402

_set_project_log_level()
