"""Sweep specs: which config paths vary, over which values, under which constraints.

A spec is validated completely (paths, every value, gates, constraints) before any data is loaded,
so a typo costs a second, not a night. Errors are one line: ``<file>: <field>: <problem>``.

Two forms come from the earlier implementation's specs (../shared/spec/reference/sweep_*.yaml):
numeric codes for booleans and enumerations (decoded in gpu/spec_codes.py) and conditional axes,
``gate: {path: P, eq: V}``: the axis varies only in candidates where axis P holds V and keeps the
base config's value elsewhere (docs/GPU.md, "Sweep specs"). Axes over keys that do not act
(strategy.config_schema.INERT_KEYS) are held out and named in ``SweepSpec.inert``.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field, replace
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
class Gate:
    """``gate: {path: P, eq: V}`` on an axis: the axis varies only in candidates whose axis P holds V;
    elsewhere its key keeps the base config's value (and TPE does not sample it)."""

    path: str      # the gating axis's path (relative to global)
    axis: int      # its position in spec.axes
    eq: Any        # the (decoded) value it must hold
    eq_index: int  # the index of ``eq`` in the gating axis's values


@dataclass(frozen=True)
class Axis:
    """One swept config path. ``path`` is relative to ``global`` (the form apply_overrides takes).

    A gated axis has one more value index than values: ``base_slot`` (= len(values)) stands for
    "gate off: the base config's value", so every candidate stays one integer row."""

    path: str
    values: tuple[Any, ...]
    kind: str  # "param" (kernel parameter vector) or "window" (selects precomputed indicators)
    index: int  # column in the parameter vector or the window vector
    gate: Gate | None = None

    @property
    def leaf(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    @property
    def base_slot(self) -> int:
        return len(self.values)

    @property
    def slots(self) -> int:
        """Value indices a candidate may hold: the values, plus the base slot when gated."""
        return len(self.values) + (1 if self.gate is not None else 0)

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
    # axes over keys that do not act (strategy.config_schema.INERT_KEYS), held out of the search
    inert: tuple[str, ...] = ()
    # the base config's (global) value of every axis: what a gated axis holds where its gate is off
    base: tuple[Any, ...] | None = field(default=None, compare=False)

    @property
    def gated(self) -> tuple[int, ...]:
        return tuple(k for k, a in enumerate(self.axes) if a.gate is not None)

    def blocks(self) -> list[tuple[list[int], np.ndarray]]:
        """The grid as independent blocks: (axis columns, rows of value indices). An ungated axis
        that gates nothing is a block of its own; a gating axis forms one block with the axes it
        gates, holding only the rows where each gated axis varies exactly when its gate holds."""
        blocks = []
        for k, axis in enumerate(self.axes):
            if axis.gate is not None:
                continue
            followers = [g for g in self.gated if self.axes[g].gate.axis == k]
            cols = [k, *followers]
            rows = []
            for j in range(len(axis.values)):
                choices = [range(len(self.axes[g].values)) if self.axes[g].gate.eq_index == j
                           else (self.axes[g].base_slot,) for g in followers]
                rows.extend((j, *combo) for combo in _product(choices))
            blocks.append((cols, np.array(rows, dtype=np.int64).reshape(len(rows), len(cols))))
        return blocks

    @property
    def grid_size_unconstrained(self) -> int:
        """Candidates of the full grid before constraints (a gated axis varies only under its gate)."""
        return math.prod(len(rows) for _, rows in self.blocks())

    def axis_names(self) -> list[str]:
        return [a.path for a in self.axes]

    def table(self, k: int) -> np.ndarray:
        """Encoded values of axis k by value index (a gated axis: its base slot is the base value)."""
        axis = self.axes[k]
        enc = axis.encoded()
        if axis.gate is None:
            return enc
        if self.base is None:
            raise SweepSpecError(f"{self.source}: axes[{k}]: a gated axis needs the base config "
                                 "(gpu.spec.bind_base) before candidates are encoded")
        return np.append(enc, encode_value(axis.path, self.base[k]))

    def gate_off(self, value_idx: np.ndarray) -> np.ndarray:
        """bool[n, naxes]: where a gated axis's gate does not hold (it must sit on its base slot)."""
        off = np.zeros(value_idx.shape, dtype=bool)
        for k in self.gated:
            gate = self.axes[k].gate
            off[:, k] = value_idx[:, gate.axis] != gate.eq_index
        return off

    def close_gates(self, value_idx: np.ndarray) -> np.ndarray:
        """``value_idx`` (in place and returned) with every gated axis whose gate is off moved to
        its base slot: any row of value indices becomes a candidate of this spec."""
        off = self.gate_off(value_idx)
        for k in self.gated:
            value_idx[off[:, k], k] = self.axes[k].base_slot
        return value_idx

    def satisfies(self, encoded_columns: np.ndarray) -> np.ndarray:
        """Boolean mask over rows of encoded axis values [n, naxes] that pass every constraint."""
        ok = np.ones(encoded_columns.shape[0], dtype=bool)
        for expr in self._compiled:
            ok &= np.asarray(expr.evaluate(encoded_columns), dtype=bool)
        return ok


def _product(choices: list) -> list[tuple]:
    out: list[tuple] = [()]
    for options in choices:
        out = [prefix + (o,) for prefix in out for o in options]
    return out


def bind_base(spec: SweepSpec, base_cfg: Any) -> SweepSpec:
    """The spec with the base config's global value of every axis (gated axes need it)."""
    if base_cfg is None or not spec.gated:
        return spec
    return replace(spec, base=tuple(base_cfg.get(a.path) for a in spec.axes))


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
    return values


def _classify(source: str, where: str, path: str) -> tuple[str, int]:
    from strategy.config import ConfigError, is_config_path, validate_override_path

    rel = _normalise_path(path)
    if rel in PARAM_INDEX:
        return "param", PARAM_INDEX[rel]
    if rel in WINDOW_PATHS:
        return "window", WINDOW_PATHS.index(rel)
    if not is_config_path(path):
        try:
            validate_override_path(path, None)
        except ConfigError as exc:  # the schema's own reason: unknown, or not implemented yet
            reason = exc.problems[0][1] if exc.problems else "unknown key"
            if reason.startswith("unknown key"):
                raise _fail(source, f"{where}.path", f"unknown config path '{path}'") from None
            raise _fail(source, f"{where}.path", f"config path '{path}': {reason}") from None
    raise _fail(source, f"{where}.path", f"config path '{path}' is not sweepable "
                "(only kernel parameters and indicator windows are)")


def _decoded_values(source: str, where: str, path: str, kind: str, values: list[Any]) -> list[Any]:
    """The values as config values (reference codes decoded, gpu/spec_codes.py), each validated."""
    from gpu.spec_codes import CodeError, decode_value
    from strategy.config import ConfigError, validate_override_path

    out = []
    for j, raw in enumerate(values):
        try:
            value = decode_value(_normalise_path(path), raw)
        except CodeError as exc:
            raise _fail(source, f"{where}.values[{j}]", str(exc)) from None
        try:
            validate_override_path(path, value)
        except ConfigError as exc:
            raise _fail(source, f"{where}.values[{j}]", str(exc).splitlines()[0]) from None
        if kind == "window" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise _fail(source, f"{where}.values[{j}]", f"window must be a positive integer, got {value!r}")
        if path in ENUMS and str(value) not in ENUMS[path]:
            raise _fail(source, f"{where}.values[{j}]", f"{value!r} not one of {sorted(ENUMS[path])}")
        out.append(value)
    if len(out) != len({(type(v) is bool, repr(v)) for v in out}):
        raise _fail(source, f"{where}.values", "duplicate values")
    return out


def _is_inert(path: str) -> bool:
    from strategy.config_schema import INERT_KEYS

    parent, _, name = _normalise_path(path).rpartition(".")
    return name in INERT_KEYS.get(parent, ())


def _parse_axis(source: str, i: int, raw: Any) -> Axis | None:
    """The axis (its gate still unresolved), or None for an axis over a key that does not act."""
    where = f"axes[{i}]"
    if not isinstance(raw, dict) or "path" not in raw or not isinstance(raw["path"], str):
        raise _fail(source, where, "each axis needs a 'path' string")
    unknown = set(raw) - {"path", "values", "range", "gate"}
    if unknown:
        raise _fail(source, where, f"unknown key(s) {sorted(unknown)}")
    path = raw["path"]
    if _is_inert(path):
        _axis_values(source, where, raw)
        return None
    kind, index = _classify(source, where, path)
    values = _decoded_values(source, where, path, kind, _axis_values(source, where, raw))
    return Axis(path=_normalise_path(path), values=tuple(values), kind=kind, index=index)


def _same(a: Any, b: Any) -> bool:
    return (type(a) is bool) == (type(b) is bool) and a == b


def _resolve_gate(source: str, i: int, raw_axes: list, axes: list[Axis | None], inert: set[str]) -> Gate:
    """``gate: {path, eq}``: ``path`` names another axis of this spec (ungated), ``eq`` one of its
    values (a reference code is decoded like the axis's own values)."""
    from gpu.spec_codes import CodeError, decode_value

    where, raw = f"axes[{i}].gate", raw_axes[i]["gate"]
    if not isinstance(raw, dict) or set(raw) != {"path", "eq"}:
        extra = sorted(set(raw) - {"path", "eq"}) if isinstance(raw, dict) else []
        problem = f"unknown key(s) {extra}" if extra else "a gate is {path: <axis path>, eq: <value>}"
        raise _fail(source, where, problem)
    if not isinstance(raw["path"], str):
        raise _fail(source, f"{where}.path", f"expected an axis path, got {raw['path']!r}")
    path = _normalise_path(raw["path"])
    if path in inert:
        raise _fail(source, f"{where}.path", f"'{path}' does not act (an inert key), so it cannot gate")
    hits = [k for k, a in enumerate(axes) if a is not None and a.path == path]
    if not hits:
        raise _fail(source, f"{where}.path", f"'{raw['path']}' is not an axis of this spec "
                    "(a gate reads the value of another swept axis)")
    k = hits[0]
    if k == i:
        raise _fail(source, f"{where}.path", "an axis cannot gate itself")
    gating = axes[k]
    if "gate" in raw_axes[k]:
        raise _fail(source, f"{where}.path", f"'{path}' has a gate of its own (gates do not chain)")
    try:
        eq = decode_value(path, raw["eq"])
    except CodeError as exc:
        raise _fail(source, f"{where}.eq", str(exc)) from None
    idx = [j for j, v in enumerate(gating.values) if _same(v, eq)]
    if not idx:
        raise _fail(source, f"{where}.eq", f"{raw['eq']!r} is not one of the values of axis '{path}' "
                    f"{list(gating.values)}")
    return Gate(path=path, axis=k, eq=eq, eq_index=idx[0])


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
    parsed = [_parse_axis(source, i, a) for i, a in enumerate(raw_axes)]
    inert = {_normalise_path(raw_axes[i]["path"]) for i, a in enumerate(parsed) if a is None}
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_axes):
        path = _normalise_path(raw["path"])
        if path in seen:
            raise _fail(source, f"axes[{i}].path", f"'{path}' already swept by axes[{seen[path]}]")
        seen[path] = i
    gates = {i: _resolve_gate(source, i, raw_axes, parsed, inert)
             for i, a in enumerate(parsed) if a is not None and "gate" in raw_axes[i]}
    kept = [i for i, a in enumerate(parsed) if a is not None]
    if not kept:
        raise _fail(source, "axes", "every axis is over a key that does not act; nothing to sweep")
    position = {i: n for n, i in enumerate(kept)}
    axes = tuple(
        replace(parsed[i], gate=replace(gates[i], axis=position[gates[i].axis])) if i in gates else parsed[i]
        for i in kept
    )
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
                     constraints=tuple(raw_constraints), source=source, _compiled=compiled,
                     inert=tuple(sorted(inert)))


def load_sweep_spec(path: str | Path, base_cfg: Any = None) -> SweepSpec:
    """Read and validate a sweep spec YAML; with ``base_cfg`` its gated axes know their base values."""
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
    return bind_base(parse_sweep_spec(data, source), base_cfg)


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
