"""Command-line options made from a parameter model: names, types, help texts and defaults written once.

`add_model_options` adds one `--<field>` option per scalar field of a pydantic model (str, int,
float, bool, a Literal of strings as choices; optional ones too), with the field's description as
help and its default shown from the model. Options default to None, "not given", so
`given_options` hands the flow only what the user typed and every default stays the model's.
Nested models (a teacher or dataset configuration) have no option: they come from the environment
or from files.
"""

from __future__ import annotations

import argparse
import types
from collections.abc import Iterable
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

_SCALARS = (str, int, float, bool)


_LONGEST_DEFAULT_SHOWN = 40


def _without_none(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        members = [member for member in get_args(annotation) if member is not type(None)]
        return members[0] if len(members) == 1 else None
    return annotation


def scalar_type(info: FieldInfo) -> type | None:
    """str, int, float or bool for a field of that type, or str for a Literal of strings (each also
    with None); None for anything else."""
    annotation = _without_none(info.annotation)
    if get_origin(annotation) is Literal and all(isinstance(value, str) for value in get_args(annotation)):
        return str
    return annotation if annotation in _SCALARS else None  # type: ignore[no-any-return]


def choices_of(info: FieldInfo) -> tuple[str, ...] | None:
    annotation = _without_none(info.annotation)
    return get_args(annotation) if get_origin(annotation) is Literal else None


def field_help(info: FieldInfo, extra: str = "") -> str:
    """The field's description, then its default unless it has none worth showing."""
    text = (info.description or "").rstrip(".") + extra
    shown = str(info.default)
    has_default = not info.is_required() and info.default_factory is None
    if has_default and info.default not in (None, False) and len(shown) <= _LONGEST_DEFAULT_SHOWN:
        text += f" (default {shown})"
    return text + "."


def parse_bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _converter(kind: type) -> Any:
    def convert(value: str) -> Any:
        try:
            return kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a valid {kind.__name__}: {value!r}") from None

    return convert


def add_model_options(
    parser: argparse.ArgumentParser,
    model: type[BaseModel],
    *,
    only: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    bool_values: bool = False,
) -> list[str]:
    """One option per scalar field of `model` (those in `only`, in that order, when given) not in
    `exclude`; returns the field names added. Booleans are switches (`--refresh`), or, with
    `bool_values`, take true/false (`--gradient_checkpointing false`, for fields that default to true)."""
    added = []
    skipped = set(exclude)
    names = list(only) if only is not None else list(model.model_fields)
    for name in names:
        info = model.model_fields[name]
        kind = scalar_type(info)
        if name in skipped or kind is None:
            if only is not None and name not in skipped:
                raise ValueError(f"{model.__name__}.{name} is not a scalar field: it cannot be an option")
            continue
        if kind is bool and bool_values:
            parser.add_argument(
                f"--{name}", type=parse_bool, default=None, metavar="true|false", help=field_help(info)
            )
        elif kind is bool:
            parser.add_argument(f"--{name}", action="store_true", default=None, help=field_help(info))
        else:
            parser.add_argument(
                f"--{name}",
                type=_converter(kind),
                choices=choices_of(info),
                default=None,
                required=info.is_required(),
                help=field_help(info),
            )
        added.append(name)
    return added


def given_options(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The options among `names` that the user gave (not None)."""
    return {name: value for name in names if (value := getattr(args, name, None)) is not None}
