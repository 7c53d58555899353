"""Sweep specs: which config paths vary, over which values, under which constraints.

A spec is validated completely (paths, every value, constraints) before any data is loaded, so a
typo costs a second, not a night. Errors are one line: ``<file>: <field>: <problem>``.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from strategy.params import ENUMS, PARAM_INDEX, WINDOW_PATHS, encode_value

MAX_AXIS_VALUES = 100_000


class SweepSpecError(ValueError):
    """A sweep spec the sweep cannot run; its str() is one line naming the file and field."""

    def __str__(self) -> str:  # keep the qualified name in CLI output, as operators grep for it
        return f"gpu.spec.SweepSpecError: {self.args[0]}"


@dataclass(frozen=True)
class Axis:
    """One swept config path. ``path`` is relative to ``global`` (the form apply_overrides takes)."""

    path: str
    values: tuple[Any, ...]
    kind: str  # "param" (kernel parameter vector) or "window" (selects precomputed indicators)
    index: int  # column in the parameter vector or the window vector

    @property
    def leaf(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    def encoded(self) -> np.ndarray:
        """The values as the kernel sees them (enum strings -> ints, bools -> 0/1)."""
        return np.array([encode_value(self.path, v) for v in self.values], dtype=np.float64)


@dataclass(frozen=True)
class SweepSpec:
    axes: tuple[Axis, ...]
    lookback: int = 200
    initial_balance: float = 10_000.0
    constraints: tuple[str, ...] = ()
    source: str = "<spec>"
    _compiled: tuple[Any, ...] = field(default=(), repr=False, compare=False)

    @property
    def grid_size_unconstrained(self) -> int:
        return math.prod(len(a.values) for a in self.axes)

    def axis_names(self) -> list[str]:
        return [a.path for a in self.axes]

    def satisfies(self, encoded_columns: np.ndarray) -> np.ndarray:
        """Boolean mask over rows of encoded axis values [n, naxes] that pass every constraint."""
        ok = np.ones(encoded_columns.shape[0], dtype=bool)
        for expr in self._compiled:
            ok &= np.asarray(expr.evaluate(encoded_columns), dtype=bool)
        return ok


def _normalise_path(path: str) -> str:
    return path[len("global."):] if path.startswith("global.") else path


def _fail(source: str, where: str, problem: str) -> SweepSpecError:
    return SweepSpecError(f"{source}: {where}: {problem}")


def _expand_range(source: str, where: str, rng: Any) -> list[Any]:
    """``range: {start, stop, step}`` with ``stop`` inclusive when it lands on the grid."""
    if not isinstance(rng, dict) or not {"start", "stop", "step"} <= set(rng):
        raise _fail(source, where, "range needs start, stop and step")
    start, stop, step = rng["start"], rng["stop"], rng["step"]
    for k, v in (("start", start), ("stop", stop), ("step", step)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _fail(source, f"{where}.{k}", f"expected a number, got {v!r}")
    if step <= 0:
        raise _fail(source, f"{where}.step", f"must be > 0, got {step!r}")
    if stop < start:
        raise _fail(source, f"{where}.stop", f"{stop!r} is below start {start!r}")
    count = int(math.floor((stop - start) / step + 1e-9)) + 1
    if count > MAX_AXIS_VALUES:
        raise _fail(source, where, f"{count} values (limit {MAX_AXIS_VALUES})")
    as_int = all(isinstance(v, int) for v in (start, stop, step))
    # round() keeps 0.1-step ranges free of 0.30000000000000004 artefacts in overrides/config ids
    return [start + i * step if as_int else round(start + i * step, 12) for i in range(count)]


def _axis_values(source: str, where: str, raw: dict[str, Any]) -> list[Any]:
    has_values, has_range = "values" in raw, "range" in raw
    if has_values == has_range:
        raise _fail(source, where, "give exactly one of 'values' or 'range'")
    if has_range:
        return _expand_range(source, f"{where}.range", raw["range"])
    values = raw["values"]
    if not isinstance(values, list) or not values:
        raise _fail(source, f"{where}.values", "expected a non-empty list")
    if len(values) != len({repr(v) for v in values}):
        raise _fail(source, f"{where}.values", "duplicate values")
    return values


def _classify(source: str, where: str, path: str) -> tuple[str, int]:
    from strategy.config import ConfigError, validate_override_path

    rel = _normalise_path(path)
    if rel in PARAM_INDEX:
        return "param", PARAM_INDEX[rel]
    if rel in WINDOW_PATHS:
        return "window", WINDOW_PATHS.index(rel)
    try:
        validate_override_path(path, None)
    except ConfigError:
        raise _fail(source, f"{where}.path", f"unknown config path '{path}'") from None
    except Exception:  # a known path that merely rejects None as a value
        pass
    raise _fail(source, f"{where}.path", f"config path '{path}' is not sweepable "
                "(only kernel parameters and indicator windows are)")


def _validate_values(source: str, where: str, path: str, kind: str, values: list[Any]) -> None:
    from strategy.config import ConfigError, validate_override_path

    for j, value in enumerate(values):
        try:
            validate_override_path(path, value)
        except ConfigError as exc:
            raise _fail(source, f"{where}.values[{j}]", str(exc).splitlines()[0]) from None
        if kind == "window" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise _fail(source, f"{where}.values[{j}]", f"window must be a positive integer, got {value!r}")
        if path in ENUMS and str(value) not in ENUMS[path]:
            raise _fail(source, f"{where}.values[{j}]", f"{value!r} not one of {sorted(ENUMS[path])}")


def _parse_axis(source: str, i: int, raw: Any) -> Axis:
    where = f"axes[{i}]"
    if not isinstance(raw, dict) or "path" not in raw or not isinstance(raw["path"], str):
        raise _fail(source, where, "each axis needs a 'path' string")
    unknown = set(raw) - {"path", "values", "range"}
    if unknown:
        raise _fail(source, where, f"unknown key(s) {sorted(unknown)}")
    path = raw["path"]
    kind, index = _classify(source, where, path)
    values = _axis_values(source, where, raw)
    _validate_values(source, where, path, kind, values)
    return Axis(path=_normalise_path(path), values=tuple(values), kind=kind, index=index)


def parse_sweep_spec(data: Any, source: str = "<spec>") -> SweepSpec:
    """Validate a parsed YAML mapping into a SweepSpec (raises SweepSpecError, one line)."""
    if not isinstance(data, dict):
        raise _fail(source, "<root>", "expected a mapping with 'axes'")
    unknown = set(data) - {"axes", "lookback", "initial_balance", "constraints", "description"}
    if unknown:
        raise _fail(source, "<root>", f"unknown key(s) {sorted(unknown)}")
    raw_axes = data.get("axes")
    if not isinstance(raw_axes, list) or not raw_axes:
        raise _fail(source, "axes", "expected a non-empty list")
    axes = tuple(_parse_axis(source, i, a) for i, a in enumerate(raw_axes))
    seen: dict[str, int] = {}
    for i, a in enumerate(axes):
        if a.path in seen:
            raise _fail(source, f"axes[{i}].path", f"'{a.path}' already swept by axes[{seen[a.path]}]")
        seen[a.path] = i
    lookback = data.get("lookback", 200)
    if isinstance(lookback, bool) or not isinstance(lookback, int) or lookback < 0:
        raise _fail(source, "lookback", f"expected a non-negative integer, got {lookback!r}")
    balance = data.get("initial_balance", 10_000.0)
    if isinstance(balance, bool) or not isinstance(balance, (int, float)) or balance <= 0:
        raise _fail(source, "initial_balance", f"expected a positive number, got {balance!r}")
    raw_constraints = data.get("constraints") or []
    if not isinstance(raw_constraints, list) or not all(isinstance(c, str) for c in raw_constraints):
        raise _fail(source, "constraints", "expected a list of strings")
    compiled = tuple(
        compile_constraint(c, axes, source=source, where=f"constraints[{i}]")
        for i, c in enumerate(raw_constraints)
    )
    return SweepSpec(axes=axes, lookback=lookback, initial_balance=float(balance),
                     constraints=tuple(raw_constraints), source=source, _compiled=compiled)


def load_sweep_spec(path: str | Path, base_cfg: Any = None) -> SweepSpec:
    """Read and validate a sweep spec YAML. ``base_cfg`` is accepted for interface stability."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise _fail(source, "<file>", f"cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "<yaml>"
        raise _fail(source, where, f"invalid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse_sweep_spec(data, source)


# ----------------------------------------------------------------------------------------------
# Constraints: comparisons, arithmetic, and/or/not over axis names. Parsed with ``ast`` and then
# interpreted node by node over numpy columns; nothing is ever handed to eval().

_CMP = {ast.Lt: np.less, ast.LtE: np.less_equal, ast.Gt: np.greater, ast.GtE: np.greater_equal,
        ast.Eq: np.equal, ast.NotEq: np.not_equal}
_BIN = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide}


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return None if head is None else f"{head}.{node.attr}"
    return None


@dataclass(frozen=True)
class Constraint:
    text: str
    tree: ast.AST
    columns: dict[str, int]  # resolved name -> axis column

    def evaluate(self, cols: np.ndarray) -> np.ndarray:
        return self._eval(self.tree, cols)

    def _eval(self, node: ast.AST, cols: np.ndarray) -> Any:
        if isinstance(node, ast.Expression):
            return self._eval(node.body, cols)
        if isinstance(node, ast.BoolOp):
            parts = [np.asarray(self._eval(v, cols), dtype=bool) for v in node.values]
            out = parts[0]
            for p in parts[1:]:
                out = (out & p) if isinstance(node.op, ast.And) else (out | p)
            return out
        if isinstance(node, ast.UnaryOp):
            val = self._eval(node.operand, cols)
            return ~np.asarray(val, dtype=bool) if isinstance(node.op, ast.Not) else -val
        if isinstance(node, ast.BinOp):
            return _BIN[type(node.op)](self._eval(node.left, cols), self._eval(node.right, cols))
        if isinstance(node, ast.Compare):
            out = None
            left = node.left
            for op, right in zip(node.ops, node.comparators, strict=True):
                res = _CMP[type(op)](self._operand(left, right, cols), self._operand(right, left, cols))
                out = res if out is None else (out & res)
                left = right
            return out
        return self._operand(node, None, cols)

    def _operand(self, node: ast.AST, other: ast.AST | None, cols: np.ndarray) -> Any:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str):  # enum literal: encode against the other side's axis
                name = _dotted(other) if other is not None else None
                path = self.columns.get(f"@path:{name}")
                return encode_value(path, node.value) if path else np.nan
            return float(node.value)
        name = _dotted(node)
        if name is not None:
            return cols[:, self.columns[name]]
        return self._eval(node, cols)


_ALLOWED = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd,
            ast.BinOp, ast.Compare, ast.Name, ast.Attribute, ast.Constant, ast.Load,
            *_CMP.keys(), *_BIN.keys())


def compile_constraint(text: str, axes: tuple[Axis, ...], *, source: str = "<spec>",
                       where: str = "constraint") -> Constraint:
    """Parse one constraint; names are axis leaf names (if unique) or axis paths."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise _fail(source, where, f"cannot parse {text!r}: {exc.msg}") from None
    by_name: dict[str, list[int]] = {}
    for i, a in enumerate(axes):
        for name in {a.path, f"global.{a.path}", a.leaf}:
            by_name.setdefault(name, []).append(i)
    columns: dict[str, Any] = {}
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise _fail(source, where, f"{type(node).__name__} is not allowed in {text!r} "
                        "(only comparisons, + - * /, and/or/not, axis names and numbers)")
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float, str)):
            raise _fail(source, where, f"literal {node.value!r} is not allowed in {text!r}")
    inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Name, ast.Attribute)):
            name = _dotted(node)
            if name is None or name in columns:
                continue
            hits = sorted(set(by_name.get(name, [])))
            if id(node) in inner:
                continue  # part of a longer dotted path; resolved with the full path
            if not hits:
                raise _fail(source, where, f"'{name}' in {text!r} is not a swept axis")
            if len(hits) > 1:
                raise _fail(source, where, f"'{name}' in {text!r} is ambiguous; use the full path")
            columns[name] = hits[0]
            columns[f"@path:{name}"] = axes[hits[0]].path
    return Constraint(text=text, tree=tree, columns=columns)
