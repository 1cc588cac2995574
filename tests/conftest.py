"""Shared test set-up: offline environment and ONE Prefect test harness for the whole session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# Nothing may reach a model hub, and Prefect must not phone home: set before Prefect is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# A real key in the developer's environment must never reach a test.
os.environ.pop("OPENAI_API_KEY", None)
os.environ.pop("OPENAI_BASE_URL", None)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect API and database shared by every flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    # The default 30 s start-up timeout is tight on 2 loaded cores (FACTS.md).
    with prefect_test_harness(server_startup_timeout=180):
        yield
