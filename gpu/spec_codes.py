"""Numeric codes of the reference's sweep specs, decoded to the config values our schema holds.

The earlier implementation's sweep specs (``../shared/spec/reference/sweep_*.reference.yaml``) give
every value as a number, because its sweep fed them straight into a float parameter vector:
booleans as 0/1, enumerations as small integers (their header: ``0=low, 1=medium, 2=high`` for the
confidence tiers, ``0=accel, 1=sign, 2=none`` for ``macd_hist_entry_mode``), and counts sometimes as
``14.0``. Our schema is strict on purpose (a ``1`` where ``true`` belongs is a mistake in a config),
so a spec's values are decoded here, per the schema type of the axis's key, before they are
validated: the rest of the sweep (overrides, config ids, rows) only ever sees real config values.

The code of an enumeration is the position of its label in the schema's ``Literal`` (``Confidence =
Literal["low", "medium", "high"]``): the reference's encoding, and the kernel's (strategy.layout).
tests/test_sweep_reference_specs.py reads the header of the reference file and checks both agree.
"""

from __future__ import annotations

import typing
from typing import Any

from strategy.config_schema import section_model


class CodeError(ValueError):
    """A numeric value that is no code of its key's type (its str() is the one-line reason)."""


def leaf_annotation(rel_path: str) -> Any:
    """The schema annotation of a key under ``global`` (None for a section or an unknown key)."""
    parent, _, name = rel_path.rpartition(".")
    model = section_model(parent)
    if model is None or name not in model.model_fields:
        return None
    return model.model_fields[name].annotation


def enum_labels(rel_path: str) -> tuple[str, ...] | None:
    """The labels of an enumeration key in code order (code i = labels[i]), else None."""
    ann = leaf_annotation(rel_path)
    if typing.get_origin(ann) is typing.Literal:
        return tuple(str(a) for a in typing.get_args(ann))
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _code(value: Any, count: int, meaning: str) -> int:
    if not float(value).is_integer() or not 0 <= int(value) < count:
        raise CodeError(f"code {value!r} out of range ({meaning})")
    return int(value)


def decode_value(rel_path: str, value: Any) -> Any:
    """The config value a spec value stands for: 0/1 -> false/true for a boolean key, the label of
    code i for an enumeration, 14.0 -> 14 for a count; anything else unchanged (the schema then
    judges it). Raises CodeError for a numeric code out of its type's range."""
    if not _is_number(value):
        return value
    ann = leaf_annotation(rel_path)
    if ann is bool:
        return bool(_code(value, 2, "0=false, 1=true"))
    labels = enum_labels(rel_path)
    if labels is not None:
        meaning = ", ".join(f"{i}={label}" for i, label in enumerate(labels))
        return labels[_code(value, len(labels), meaning)]
    if ann is int and isinstance(value, float) and value.is_integer():
        return int(value)
    return value
