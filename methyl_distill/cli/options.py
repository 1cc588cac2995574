"""Command-line options made from a parameter model: names, types, help texts and defaults written once.

`add_model_options` adds one `--<field>` option per scalar field of a pydantic model (str, int,
float, bool; optional ones too), with the field's description as help and its default shown from the
model. Options default to None, "not given", so `given_options` hands the flow only what the user
typed and every default stays the model's. Nested models (a teacher or dataset configuration) have
no option: they come from the environment or from files.
"""

from __future__ import annotations

import argparse
import types
from collections.abc import Iterable
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

_SCALARS = (str, int, float, bool)


def scalar_type(info: FieldInfo) -> type | None:
    """str, int, float or bool for a field of that type (or that type or None); None otherwise."""
    annotation = info.annotation
    if get_origin(annotation) in (Union, types.UnionType):
        members = [member for member in get_args(annotation) if member is not type(None)]
        annotation = members[0] if len(members) == 1 else None
    return annotation if annotation in _SCALARS else None  # type: ignore[return-value]


def field_help(info: FieldInfo, extra: str = "") -> str:
    """The field's description, then its default unless it has none worth showing."""
    text = (info.description or "").rstrip(".") + extra
    if not info.is_required() and info.default not in (None, False):
        text += f" (default {info.default})"
    return text + "."


def _converter(kind: type) -> Any:
    def convert(value: str) -> Any:
        try:
            return kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a valid {kind.__name__}: {value!r}") from None

    return convert


def add_model_options(
    parser: argparse.ArgumentParser, model: type[BaseModel], *, exclude: Iterable[str] = ()
) -> list[str]:
    """One option per scalar field of `model` not in `exclude`; returns the field names added."""
    added = []
    skipped = set(exclude)
    for name, info in model.model_fields.items():
        kind = scalar_type(info)
        if name in skipped or kind is None:
            continue
        if kind is bool:
            parser.add_argument(f"--{name}", action="store_true", default=None, help=field_help(info))
        else:
            parser.add_argument(
                f"--{name}",
                type=_converter(kind),
                default=None,
                required=info.is_required(),
                help=field_help(info),
            )
        added.append(name)
    return added


def given_options(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The options among `names` that the user gave (not None)."""
    return {name: value for name in names if (value := getattr(args, name, None)) is not None}
