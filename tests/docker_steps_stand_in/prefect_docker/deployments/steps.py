"""`build_docker_image` and `push_docker_image` with prefect-docker's signatures and outputs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def _record(step: str, **values: Any) -> None:
    log = os.environ.get("DOCKER_STEPS_STAND_IN_LOG")
    if log:
        with Path(log).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": step, "cwd": os.getcwd(), **values}) + "\n")


def build_docker_image(
    image_name: str,
    dockerfile: str = "Dockerfile",
    tag: str | None = None,
    additional_tags: list[str] | None = None,
    **build_kwargs: Any,
) -> dict[str, Any]:
    # What prefect-docker refuses too: an empty name part (an unset registry variable gives "/name").
    if not image_name or any(not part for part in image_name.split("/")):
        raise ValueError(f"invalid image name {image_name!r}")
    if not Path(dockerfile).is_file():
        raise FileNotFoundError(f"{dockerfile} does not exist in {os.getcwd()}")
    tag = tag or "stand-in"
    _record("build", image_name=image_name, dockerfile=dockerfile, tag=tag, build_kwargs=build_kwargs)
    return {
        "image_name": image_name,
        "tag": tag,
        "image": f"{image_name}:{tag}",
        "image_id": "sha256:stand-in",
        "additional_tags": additional_tags or [],
    }


def push_docker_image(
    image_name: str,
    tag: str | None = None,
    credentials: dict[str, Any] | None = None,
    additional_tags: list[str] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    _record("push", image_name=image_name, tag=tag)
    return {
        "image_name": image_name,
        "tag": tag,
        "image": f"{image_name}:{tag}",
        "additional_tags": additional_tags or [],
    }
