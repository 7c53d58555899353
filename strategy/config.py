"""Load, check and merge the strategy YAML into one immutable effective config.

Everything that runs the strategy (sweep, replay, live daemon) goes through here, so that
every execution sees the same numbers and the same ``config_id``. A bad file is rejected as a
whole, with every problem named by its YAML path, because a half-applied config is worse than
none. The schema itself (types, ranges, defaults) is in ``strategy.config_schema``.

Merge order per symbol: code defaults <- ``global`` <- ``symbols.<SYM>`` <- ``live`` (only with
``live=True``) <- ``modes.<mode>`` (its ``global`` part, then its ``symbols`` part).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import ValidationError

from strategy.config_schema import (
    GLOBAL_ONLY_KEYS,
    INERT_KEYS,
    INERT_MESSAGE,
    MODE_ALIASES,
    MODE_NAMES,
    OVERLAY_KEYS,
    SYMBOL_SECTIONS,
    TOP_LEVEL_KEYS,
    GlobalConfig,
    field_names,
    is_section_field,
    key_problem,
    leaf_adapter,
    section_model,
    validation_problems,
)
from strategy.files import write_text_atomic
from strategy.params import PARAM_PATHS, WINDOW_PATHS, encode_value

_log = logging.getLogger("strategy.config")

MODE_ENV = "AI_QUANT_STRATEGY_MODE"
NO_MODE = "none"  # pass as `mode` to ignore AI_QUANT_STRATEGY_MODE and apply no overlay

Problem = tuple[str, str]


class ConfigError(ValueError):
    """A config that must not be used. ``str()`` is one line; ``.problems`` lists them all."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = [(path, _one_line(msg)) for path, msg in problems]
        super().__init__(self._summary())

    def __reduce__(self):  # keep source and problems across process pools
        return (type(self), (self.source, self.problems))

    def lines(self) -> list[str]:
        return [_format_problem(self.source, path, msg) for path, msg in self.problems]

    def _summary(self) -> str:
        if not self.problems:
            return f"{self.source}: invalid config"
        first = self.lines()[0]
        more = len(self.problems) - 1
        return first if more == 0 else f"{first} (+{more} more problem{'s' if more > 1 else ''})"


def _format_problem(source: str, path: str, msg: str) -> str:
    return f"{source}: {path}: {msg}" if path else f"{source}: {msg}"


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", str(text)).strip()


# --- YAML -------------------------------------------------------------------------------------

_FLOAT_1_2 = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and reads 1e-3 as a number (YAML 1.1 would not)."""

    def construct_mapping(self, node, deep=False):  # noqa: ANN001
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            if isinstance(key, (str, int, float, bool)):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _Dumper(yaml.SafeDumper):
    pass


for _cls in (_Loader, _Dumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_1_2, list("-+0123456789"))


def read_yaml(path: str | Path) -> Any:
    """The parsed YAML document; any I/O or syntax problem becomes a one-line ConfigError."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, [("", "file not found")]) from None
    except IsADirectoryError:
        raise ConfigError(source, [("", "is a directory, not a YAML file")]) from None
    except PermissionError:
        raise ConfigError(source, [("", "cannot read the file (permission denied)")]) from None
    except UnicodeDecodeError:
        raise ConfigError(source, [("", "not UTF-8 text")]) from None
    except OSError as exc:
        raise ConfigError(source, [("", f"cannot read the file ({exc.strerror})")]) from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [(where, f"invalid YAML: {what}")]) from None


# --- structural check: keys and shapes ---------------------------------------------------------


def _as_mapping(value: Any, path: str, problems: list[Problem]) -> dict | None:
    """A mapping node; null counts as empty (an empty `symbols:` is common and harmless)."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    problems.append((path, f"must be a mapping (got {type(value).__name__})"))
    return None


def _check_section(
    raw: Any, rel: str, path: str, problems: list[Problem], only: tuple[str, ...] = ()
) -> dict:
    """Copy of a section keeping only schema keys; every other key becomes a problem."""
    node = _as_mapping(raw, path, problems)
    model = section_model(rel)
    if node is None or model is None:
        return {}
    names = field_names(model)
    clean: dict[str, Any] = {}
    for key, value in node.items():
        sub = f"{path}.{key}"
        if not isinstance(key, str):
            problems.append((sub, "keys must be names (quote it)"))
        elif key in INERT_KEYS.get(rel, ()):
            problems.append((sub, INERT_MESSAGE))  # a warning, split off by config_from_dict
        elif key not in names:
            problems.append((sub, key_problem(rel, key, names)))
        elif only and key not in only:
            problems.append((sub, f"cannot be set per symbol (only {', '.join(only)})"))
        elif is_section_field(model, key):
            clean[key] = _check_section(value, f"{rel}.{key}".lstrip("."), sub, problems)
        else:
            clean[key] = value
    return clean


def _check_symbols(raw: Any, path: str, problems: list[Problem]) -> dict[str, dict]:
    node = _as_mapping(raw, path, problems) or {}
    out: dict[str, dict] = {}
    for sym, value in node.items():
        if not isinstance(sym, str) or not sym:
            problems.append((f"{path}.{sym}", "symbol names must be text (quote it)"))
            continue
        clean = _check_section(value, "", f"{path}.{sym}", problems, only=SYMBOL_SECTIONS)
        for key_path, why in GLOBAL_ONLY_KEYS.items():
            *sections, key = key_path.split(".")
            node = clean
            for section in sections:
                node = node.get(section) if isinstance(node, dict) else None
            if isinstance(node, dict) and key in node:
                del node[key]
                problems.append((f"{path}.{sym}.{key_path}", why))
        out[sym] = clean
    return out


def _check_overlay(raw: Any, path: str, problems: list[Problem]) -> dict:
    node = _as_mapping(raw, path, problems) or {}
    out: dict[str, Any] = {"global": {}, "symbols": {}}
    for key, value in node.items():
        if key == "global":
            out["global"] = _check_section(value, "", f"{path}.global", problems)
        elif key == "symbols":
            out["symbols"] = _check_symbols(value, f"{path}.symbols", problems)
        elif key in field_names(GlobalConfig):
            problems.append(
                (f"{path}.{key}", f"move it under {path}.global.{key} (overlays take global: and symbols:)")
            )
        else:
            problems.append((f"{path}.{key}", _top_key_problem(key, OVERLAY_KEYS)))
    return out


def _top_key_problem(key: Any, allowed: tuple[str, ...]) -> str:
    hint = key_problem("", str(key), allowed)
    return f"{hint}; expected {', '.join(allowed)}" if "did you mean" not in hint else hint


def _check_document(data: Any, problems: list[Problem]) -> dict:
    """The document split into checked parts: global, symbols, live, modes."""
    doc: dict[str, Any] = {"global": {}, "symbols": {}, "live": None, "modes": {}}
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        problems.append(("", f"top level must be a mapping with global:, symbols:, modes: (file is {kind})"))
        return doc
    for key, value in data.items():
        if key == "global":
            doc["global"] = _check_section(value, "", "global", problems)
        elif key == "symbols":
            doc["symbols"] = _check_symbols(value, "symbols", problems)
        elif key == "live":
            doc["live"] = _check_overlay(value, "live", problems)
        elif key == "modes":
            doc["modes"] = _check_modes(value, problems)
        elif key in field_names(GlobalConfig):
            problems.append((str(key), f"move it under global.{key}"))
        else:
            problems.append((str(key), _top_key_problem(key, TOP_LEVEL_KEYS)))
    return doc


def _check_modes(raw: Any, problems: list[Problem]) -> dict[str, dict]:
    node = _as_mapping(raw, "modes", problems) or {}
    out: dict[str, dict] = {}
    for name, value in node.items():
        if name not in MODE_NAMES:
            problems.append((f"modes.{name}", f"unknown mode; modes are {', '.join(MODE_NAMES)}"))
            continue
        out[name] = _check_overlay(value, f"modes.{name}", problems)
    return out


# --- merge and value validation ----------------------------------------------------------------


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """New dict: mappings merged key by key, everything else (lists included) replaced."""
    out = {k: copy.deepcopy(v) for k, v in base.items()}
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _validate(merged: dict) -> tuple[dict, list[Problem]]:
    """(model dump if valid else the input, problems with paths relative to global)."""
    try:
        return GlobalConfig.model_validate(merged).model_dump(), []
    except ValidationError as exc:
        return merged, validation_problems(exc)


class _Checker:
    """Validates layer after layer; a layer reports only what its parent layer did not already."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.seen: frozenset[Problem] = frozenset()

    def layer(
        self, merged: dict, prefix: str, parent: frozenset[Problem] = frozenset(), note: str = ""
    ) -> tuple[dict, frozenset[Problem]]:
        result, found = _validate(merged)
        for rel, msg in found:
            if (rel, msg) not in parent:
                self.problems.append((f"{prefix}.{rel}" if rel else prefix, msg + note))
        self.seen |= frozenset(found)
        return result, frozenset(found)


def _diff(full: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in full.items():
        if isinstance(value, Mapping):
            sub = _diff(value, base.get(key, {}))
            if sub:
                out[key] = sub
        elif key not in base or base[key] != value or type(base[key]) is not type(value):
            out[key] = copy.deepcopy(value)
    return out


def resolve_mode(mode: str | None, source: str = "<config>") -> str | None:
    """Canonical mode name from the argument or AI_QUANT_STRATEGY_MODE; None for no overlay."""
    origin = "mode"
    if mode is None:
        mode, origin = os.environ.get(MODE_ENV, ""), MODE_ENV
    name = str(mode).strip().lower()
    if name in ("", NO_MODE):
        return None
    name = MODE_ALIASES.get(name, name)
    if name not in MODE_NAMES:
        aliases = ", ".join(f"{a}={m}" for a, m in MODE_ALIASES.items())
        raise ConfigError(
            source,
            [
                (
                    origin,
                    f"unknown strategy mode {mode!r}; use one of {', '.join(MODE_NAMES)} (aliases {aliases})",
                )
            ],
        )
    return name


def _build(doc: dict, mode: str | None, live: bool, checker: _Checker) -> tuple[dict, dict[str, dict]]:
    """Canonical (global, per-symbol partial overrides), validating every layer on the way."""
    base, base_found = checker.layer(deep_merge(GlobalConfig().model_dump(), doc["global"]), "global")
    live_doc = doc["live"] or {"global": {}, "symbols": {}}
    for sym, over in doc["symbols"].items():
        checker.layer(deep_merge(base, over), f"symbols.{sym}", base_found)
    overlays = [("live", live_doc)] + [(f"modes.{n}", m) for n, m in doc["modes"].items()]
    for name, overlay in overlays:
        g, g_found = checker.layer(deep_merge(base, overlay["global"]), f"{name}.global", base_found)
        for sym, over in overlay["symbols"].items():
            checker.layer(deep_merge(g, over), f"{name}.symbols.{sym}", g_found)

    applied = ([("live", live_doc)] if live else []) + (
        [(f"modes.{mode}", doc["modes"][mode])] if mode else []
    )
    note = f" (after applying {' and '.join(n for n, _ in applied)})" if applied else ""
    glob = base
    for _, overlay in applied:
        glob = deep_merge(glob, overlay["global"])
    glob, _ = checker.layer(glob, "global", checker.seen, note)

    names = set(doc["symbols"]).union(*(o["symbols"] for _, o in applied))
    symbols: dict[str, dict] = {}
    for sym in sorted(names):
        eff = deep_merge(base, doc["symbols"].get(sym, {}))
        for _, overlay in applied:
            eff = deep_merge(deep_merge(eff, overlay["global"]), overlay["symbols"].get(sym, {}))
        eff, _ = checker.layer(eff, f"symbols.{sym}", checker.seen, note)
        partial = _diff({k: eff[k] for k in SYMBOL_SECTIONS}, glob)
        if partial:
            symbols[sym] = partial
    return glob, symbols


def config_from_dict(
    data: Any, *, source: str = "<dict>", mode: str | None = None, live: bool = False
) -> EffectiveConfig:
    """The effective config of a parsed YAML document; ConfigError lists every problem."""
    problems: list[Problem] = []
    doc = _check_document(data, problems)
    mode_name = None
    try:
        mode_name = resolve_mode(mode, source)
    except ConfigError as exc:
        problems.extend(exc.problems)
    if mode_name is not None and mode_name not in doc["modes"]:
        problems.append(
            (f"modes.{mode_name}", f"mode {mode_name!r} is selected but not defined under modes:")
        )
        mode_name = None
    checker = _Checker()
    glob, symbols = _build(doc, mode_name, live, checker)
    problems.extend(checker.problems)
    inert = [path for path, msg in problems if msg == INERT_MESSAGE]
    problems = [p for p in problems if p[1] != INERT_MESSAGE]
    if problems:
        raise ConfigError(source, problems)
    if inert:
        _log.warning("%s: keys the reference backtester never reads, accepted and not acting "
                     "(docs/STRATEGY.md): %s", source, ", ".join(inert))
    return EffectiveConfig(glob, symbols, source_path=None, mode=mode_name, live=live)


def load_config(path: str | Path, *, mode: str | None = None, live: bool = False) -> EffectiveConfig:
    """The effective config of a YAML file (see the module docstring for the merge order)."""
    cfg = config_from_dict(read_yaml(path), source=str(path), mode=mode, live=live)
    return cfg._with(source_path=Path(path))


# --- the effective config ---------------------------------------------------------------------


def config_id_of(data: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a config dict (sorted keys, compact, floats as repr)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _lookup(tree: Mapping[str, Any], rel: str) -> Iterator[Any]:
    node: Any = tree
    for part in rel.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return
        node = node[part]
    yield node


class EffectiveConfig:
    """The merged, validated config for one (file, mode, live) choice. Immutable.

    Held canonically as the full ``global`` section plus, per symbol, only the keys whose
    effective value differs from ``global``; ``config_id`` hashes exactly that.
    """

    __slots__ = ("_global", "_symbols", "source_path", "mode", "live", "_id", "_params")

    def __init__(
        self,
        glob: dict,
        symbols: dict[str, dict],
        *,
        source_path: Path | None = None,
        mode: str | None = None,
        live: bool = False,
    ):
        object.__setattr__(self, "_global", copy.deepcopy(glob))
        object.__setattr__(self, "_symbols", copy.deepcopy(symbols))
        object.__setattr__(self, "source_path", source_path)
        object.__setattr__(self, "mode", mode)
        object.__setattr__(self, "live", live)
        object.__setattr__(self, "_id", config_id_of(self.to_dict()))
        object.__setattr__(self, "_params", {})

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("EffectiveConfig is immutable; use apply_overrides()")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("EffectiveConfig is immutable")

    def __repr__(self) -> str:
        return f"EffectiveConfig(source={self.source_path}, mode={self.mode}, config_id={self._id[:12]})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EffectiveConfig) and other._id == self._id

    def __hash__(self) -> int:
        return hash(self._id)

    def _with(self, **changes: Any) -> EffectiveConfig:
        kw = {"source_path": self.source_path, "mode": self.mode, "live": self.live} | changes
        return EffectiveConfig(self._global, self._symbols, **kw)

    @property
    def source(self) -> str:
        return str(self.source_path) if self.source_path else "<config>"

    def to_dict(self) -> dict:
        return {"global": copy.deepcopy(self._global), "symbols": copy.deepcopy(self._symbols)}

    @property
    def config_id(self) -> str:
        return self._id

    @property
    def symbols(self) -> tuple[str, ...]:
        """Symbols that have overrides of their own (others use ``global``)."""
        return tuple(self._symbols)

    def symbol_dict(self, symbol: str | None) -> dict:
        """The full effective section tree for a symbol (global when it has no overrides)."""
        over = self._symbols.get(symbol, {}) if symbol is not None else {}
        return deep_merge(self._global, over)

    def get(self, path: str, symbol: str | None = None) -> Any:
        rel = path[len("global.") :] if path.startswith("global.") else path
        for found in _lookup(self.symbol_dict(symbol), rel):
            return copy.deepcopy(found)
        raise ConfigError(self.source, [(path, "no such config key")])

    def params_for(self, symbol: str | None) -> np.ndarray:
        key = symbol if symbol in self._symbols else None
        cached = self._params.get(key)
        if cached is None:
            tree = self.symbol_dict(key)
            cached = np.array(
                [encode_value(p, next(_lookup(tree, p))) for p in PARAM_PATHS], dtype=np.float64
            )
            self._params[key] = cached
        return cached.copy()

    def params_matrix(self, symbols: list[str]) -> np.ndarray:
        from strategy.params import NP

        out = np.empty((len(symbols), NP), dtype=np.float64)
        for i, sym in enumerate(symbols):
            out[i] = self.params_for(sym)
        return out

    def windows(self) -> np.ndarray:
        return np.array([next(_lookup(self._global, p)) for p in WINDOW_PATHS], dtype=np.int64)

    @property
    def interval(self) -> str:
        return self._global["engine"]["interval"]

    @property
    def entry_interval(self) -> str | None:
        return self._global["engine"]["entry_interval"]

    @property
    def exit_interval(self) -> str | None:
        return self._global["engine"]["exit_interval"]

    @property
    def watchlist_exclude(self) -> tuple[str, ...]:
        return tuple(self._global["watchlist_exclude"])


# --- overrides (sweeps, deploys, ensembles) -----------------------------------------------------


def _strip_overlay(parts: list[str]) -> list[str]:
    """The parts after a ``live.`` or ``modes.<name>.`` prefix; ValueError for a bad prefix."""
    if parts[0] == "modes":
        if len(parts) < 2 or parts[1] not in MODE_NAMES:
            raise ValueError(f"unknown mode; modes are {', '.join(MODE_NAMES)}")
        rest = parts[2:]
    else:
        rest = parts[1:]
    if not rest or rest[0] not in OVERLAY_KEYS:
        raise ValueError("an overlay path continues with global.<section>... or symbols.<SYM>.<section>...")
    return rest


def _split_override(path: str, *, overlays: bool) -> tuple[str | None, str]:
    """(symbol or None, path relative to global) of an override path; ValueError if not allowed.

    ``overlays`` admits live.* / modes.<name>.* paths, which exist in a YAML document but not
    in an effective config (there they are already applied).
    """
    parts = path.split(".")
    if parts[0] in ("live", "modes"):
        if not overlays:
            raise ValueError(
                f"{parts[0]} overlays are already applied in an effective config; override global.* instead"
            )
        parts = _strip_overlay(parts)
    if parts[0] == "global":
        return None, ".".join(parts[1:])
    if parts[0] == "symbols":
        if len(parts) < 3:
            raise ValueError("a symbol override needs symbols.<SYM>.<section>.<key>")
        if parts[2] not in SYMBOL_SECTIONS:
            raise ValueError(f"cannot be set per symbol (only {', '.join(SYMBOL_SECTIONS)})")
        rel = ".".join(parts[2:])
        if rel in GLOBAL_ONLY_KEYS:
            raise ValueError(GLOBAL_ONLY_KEYS[rel])
        return parts[1], rel
    return None, ".".join(parts)


def _path_problem(path: str, overlays: bool) -> tuple[str, str | None]:
    """(path relative to global, None) for a known key or section, else ("", why not)."""
    try:
        _, rel = _split_override(path, overlays=overlays)
    except ValueError as exc:
        return "", str(exc)
    parent, _, name = rel.rpartition(".")
    model = section_model(parent)
    if not name or model is None:
        return "", "no such config section"
    if name not in field_names(model):
        return "", key_problem(parent, name, field_names(model))
    return rel, None


def _override_problems(path: str, value: Any, *, overlays: bool) -> list[Problem]:
    """Problems with one override on its own: the key exists and the value fits its type and range."""
    rel, why = _path_problem(path, overlays)
    if why is not None:
        return [(path, why)]
    adapter = leaf_adapter(rel)
    if adapter is None:  # a whole section
        if not isinstance(value, Mapping):
            return [(path, "is a section; give a mapping of its keys")]
        return [
            p
            for key, sub in value.items()
            for p in _override_problems(f"{path}.{key}", sub, overlays=overlays)
        ]
    try:
        adapter.validate_python(value)
    except ValidationError as exc:
        return [(path, msg) for _, msg in validation_problems(exc)]
    return []


def is_config_path(path: str) -> bool:
    """Whether a dot path names a key or section (any value aside), e.g. for sweep-spec axes."""
    return _path_problem(path, overlays=True)[1] is None


def validate_override_path(path: str, value: object) -> None:
    """Check one override alone (sweep axis value, deploy edit); cross-key rules are checked on apply.

    Accepts paths relative to ``global`` and absolute ones, including live.* and modes.<name>.*
    (which only make sense when editing a YAML document, not an effective config).
    """
    problems = _override_problems(path, value, overlays=True)
    if problems:
        raise ConfigError("override", problems)


def _nest(rel: str, value: Any) -> dict:
    tree: Any = copy.deepcopy(value)
    for part in reversed(rel.split(".")):
        tree = {part: tree}
    return tree


def apply_overrides(cfg: EffectiveConfig, overrides: Mapping[str, object]) -> EffectiveConfig:
    """A new config with dot-path overrides applied and the result re-validated as a whole.

    A global override does not replace a symbol's own override of the same key: the symbol keeps
    its value, exactly as if the override had been written under ``global`` in the YAML.
    """
    problems = [
        p for path, value in overrides.items() for p in _override_problems(path, value, overlays=False)
    ]
    if problems:
        raise ConfigError("overrides", problems)
    glob_over: dict = {}
    sym_over: dict[str, dict] = {}
    for path, value in overrides.items():
        sym, rel = _split_override(path, overlays=False)
        target = glob_over if sym is None else sym_over.setdefault(sym, {})
        target.update(deep_merge(target, _nest(rel, value)))
    checker = _Checker()
    glob, _ = checker.layer(deep_merge(cfg.to_dict()["global"], glob_over), "global")
    symbols: dict[str, dict] = {}
    for sym in sorted(set(cfg.symbols) | set(sym_over)):
        own = deep_merge(cfg._symbols.get(sym, {}), sym_over.get(sym, {}))
        eff, _ = checker.layer(deep_merge(glob, own), f"symbols.{sym}", checker.seen)
        partial = _diff({k: eff[k] for k in SYMBOL_SECTIONS}, glob)
        if partial:
            symbols[sym] = partial
    if checker.problems:
        raise ConfigError("overrides", checker.problems)
    return EffectiveConfig(glob, symbols, source_path=cfg.source_path, mode=cfg.mode, live=cfg.live)


# --- writing ------------------------------------------------------------------------------------


def dump_config_yaml(cfg: EffectiveConfig, path: Path) -> None:
    """Write the resolved config (overlays already applied) atomically; reloading gives the same id."""
    path = Path(path)
    header = (
        "# Resolved strategy config: live/mode overlays are already applied, so it has no modes:.\n"
        f"# config_id: {cfg.config_id}\n"
        f"# source: {cfg.source}  mode: {cfg.mode or 'none'}  live: {str(cfg.live).lower()}\n"
    )
    body = yaml.dump(
        cfg.to_dict(), Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True
    )
    write_text_atomic(path, header + body)


def core_key_paths() -> tuple[str, ...]:
    """Every key a fully explicit file must set under ``global``."""
    return (*PARAM_PATHS, *WINDOW_PATHS, "engine.interval")
