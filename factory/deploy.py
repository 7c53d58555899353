"""Deploy a config to paper and roll back (promotion to live is factory/promotion.py): with it, the
only code that rewrites a trader's YAML.

Every path here enforces the replay release blocker itself (the old tools only checked it in the
CLI, so the factory's own deploy bypassed it), writes one deploy-dir layout
`<artifacts>/deployments/<target>/<UTC ts>_<config_id12>/{deployed_config.yaml, prev_config.yaml,
deploy_event.json}` so rollback always finds its way back, and records lifecycle and ramp state in
the registry instead of a hand-set YAML value.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from factory import release_blocker
from factory.jsonio import write_json_atomic, write_text_atomic
from factory.registry import LifecycleError, Registry
from factory.release_blocker import ReplayGateBlocked
from strategy.config import ConfigError, config_from_dict, validate_override_path

EVENT_VERSION = "deploy_event_v1"
ABSOLUTE_PREFIXES = ("global.", "symbols.", "live.", "modes.")

__all__ = ["DeployError", "ReplayGateBlocked", "DeployResult", "deploy_paper", "deploy_sweep_row", "rollback",
           "config_id_of_text"]


class DeployError(ValueError):
    """A user-facing refusal (bad config, unknown id, live target without consent); str() is one line."""


class ConfigIdMismatch(DeployError):
    """The config a sweep row would deploy is not the config the sweep evaluated."""


@dataclass
class DeployResult:
    ok: bool
    target: str
    kind: str
    config_id: str
    target_yaml: str
    deploy_dir: str | None
    dry_run: bool
    restart_required: bool
    event: dict[str, Any]
    gate_line: str = ""
    message: str = ""


# --- config identity and validation -------------------------------------------------------------
def _raw_id(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_config_yaml(text: str, source: str) -> dict:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DeployError(f"{source}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise DeployError(f"{source}: top level must be a mapping")
    return data


def identify_config(data: dict, source: str, *, strict: bool = True) -> str:
    """The effective config's config_id (what the factory and the trader report), validating it.

    strict=False (rollback) falls back to the raw-document hash when today's schema rejects an old
    config: restoring the last good file must not depend on it still validating.
    """
    try:
        return config_from_dict(data, source=source).config_id
    except ConfigError as exc:
        if strict:
            raise DeployError(str(exc).splitlines()[0]) from None
        return _raw_id(data)


def config_id_of_text(text: str, source: str = "config", *, strict: bool = True) -> str:
    return identify_config(parse_config_yaml(text, source), source, strict=strict)


def _sha256(text: str | None) -> str | None:
    return hashlib.sha256(text.encode("utf-8")).hexdigest() if text is not None else None


def _interval(data: dict | None) -> str | None:
    eng = ((data or {}).get("global") or {}).get("engine") or {}
    return eng.get("interval") if isinstance(eng, dict) else None


def _read_optional(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


# --- gate and layout ----------------------------------------------------------------------------
def check_release_gate(ignore: bool, dry_run: bool, blocker_file, max_age_minutes, now_ms) -> str:
    """Enforce the release blocker; a dry run only reports it (it changes nothing)."""
    if ignore:
        return "replay gate ignored (--ignore-replay-gate)"
    status = release_blocker.read_blocker(blocker_file, max_age_minutes, now_ms)
    if not status.ok and not dry_run:
        raise ReplayGateBlocked(status.reason_line)
    return status.reason_line


def _utc_stamp(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y%m%dT%H%M%S") + f"{ms % 1000:03d}Z"


def _deploy_dir(root: Path, ms: int, config_id: str) -> Path:
    base = root / f"{_utc_stamp(ms)}_{config_id[:12]}"
    path, n = base, 1
    while path.exists():
        path, n = base.with_name(f"{base.name}.{n}"), n + 1
    return path


def _who() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - containers without a passwd entry
        return os.environ.get("USER", "unknown")


def try_lifecycle(registry: Registry | None, config_id: str | None, state: str, reason: str) -> str:
    """Lifecycle moves that follow a deploy are bookkeeping: an impossible move is noted, not fatal."""
    if registry is None or not config_id or registry.lifecycle(config_id) is None:
        return "untracked"
    try:
        registry.set_lifecycle(config_id, state, reason)
    except LifecycleError as exc:
        return f"not moved: {exc}"
    return state


def install_config(*, target: str, kind: str, next_text: str, next_id: str, target_yaml: Path, artifacts_dir: Path,
             reason: str, registry: Registry | None, dry_run: bool, gate_line: str, now_ms: int,
             source: dict | None = None, extra_what: dict | None = None) -> DeployResult:
    """Write the deploy dir, then swap the target YAML atomically, then record it."""
    prev_text = _read_optional(target_yaml)
    prev_data = parse_config_yaml(prev_text, str(target_yaml)) if prev_text else None
    next_data = parse_config_yaml(next_text, "next config")
    prev_id = identify_config(prev_data, str(target_yaml), strict=False) if prev_data is not None else None
    interval_changed = _interval(prev_data) != _interval(next_data) and prev_data is not None
    event = {
        "version": EVENT_VERSION, "ts_utc": datetime.fromtimestamp(now_ms / 1000, UTC).isoformat(),
        "ts_ms": now_ms, "who": _who(), "why": reason, "target": target, "kind": kind, "source": source or {},
        "replay_gate": gate_line,
        "what": {"config_id": next_id, "yaml_path": str(target_yaml), "prev_config_id": prev_id,
                 "prev_sha256": _sha256(prev_text), "next_sha256": _sha256(next_text),
                 "prev_interval": _interval(prev_data), "next_interval": _interval(next_data),
                 "interval_changed": interval_changed, "restart_required": interval_changed,
                 "config_changed": _sha256(prev_text) != _sha256(next_text), **(extra_what or {})},
    }
    result = DeployResult(ok=True, target=target, kind=kind, config_id=next_id, target_yaml=str(target_yaml),
                          deploy_dir=None, dry_run=dry_run, restart_required=interval_changed, event=event,
                          gate_line=gate_line)
    if dry_run:
        result.message = f"dry run: would deploy {next_id[:12]} to {target_yaml}"
        return result
    tree = "rollbacks" if kind == "rollback" else "deployments"
    ddir = _deploy_dir(artifacts_dir / tree / target, now_ms, next_id)
    write_text_atomic(ddir / "deployed_config.yaml", next_text)
    write_text_atomic(ddir / "prev_config.yaml", prev_text or "")
    write_json_atomic(ddir / "deploy_event.json", event)
    write_text_atomic(target_yaml, next_text)
    result.deploy_dir = str(ddir)
    if registry is not None:
        registry.record_config(next_id, next_text, None)
        registry.record_deployment(target, next_id, str(ddir), kind, event, ts_ms=now_ms)
    result.message = f"deployed {next_id[:12]} to {target_yaml} ({ddir})"
    return result


def _check_not_retired(registry: Registry | None, config_id: str) -> None:
    if registry is not None and registry.lifecycle(config_id) == "retired":
        raise DeployError(f"config {config_id[:12]} is retired in the registry; refusing to deploy it")


# --- paper deploy ------------------------------------------------------------------------------
def _resolve_config(config_path_or_id: str, registry: Registry | None) -> tuple[str, str]:
    path = Path(config_path_or_id)
    if path.is_file():
        return path.read_text(encoding="utf-8"), str(path)
    if registry is not None:
        text = registry.config_yaml(config_path_or_id)
        if text is not None:
            return text, f"registry:{config_path_or_id}"
    raise DeployError(f"{config_path_or_id}: neither a YAML file nor a unique config_id in the registry")


def deploy_paper(config_path_or_id: str, *, target_yaml: str | Path, artifacts_dir: str | Path = "artifacts",
                 reason: str, registry: Registry | None = None, ignore_replay_gate: bool = False,
                 dry_run: bool = False, blocker_file: str | Path | None = None,
                 max_age_minutes: float | None = None, now_ms: int | None = None) -> DeployResult:
    """Deploy a config (file or registry id) to the paper trader's YAML; ReplayGateBlocked when red."""
    gate_line = check_release_gate(ignore_replay_gate, dry_run, blocker_file, max_age_minutes, now_ms)
    text, source = _resolve_config(config_path_or_id, registry)
    config_id = identify_config(parse_config_yaml(text, source), source)
    if source.startswith("registry:") and not config_id.startswith(config_path_or_id):
        raise DeployError(f"{source}: stored YAML re-hashes to {config_id[:12]}, not {config_path_or_id[:12]}")
    _check_not_retired(registry, config_id)
    now = int(time.time() * 1000) if now_ms is None else int(now_ms)
    result = install_config(target="paper", kind="deploy", next_text=text, next_id=config_id,
                      target_yaml=Path(target_yaml), artifacts_dir=Path(artifacts_dir), reason=reason,
                      registry=registry, dry_run=dry_run, gate_line=gate_line, now_ms=now,
                      source={"config": source})
    if not dry_run:
        _after_deploy(registry, result, "paper", f"paper deploy: {reason}")
    return result


def _after_deploy(registry: Registry | None, result: DeployResult, state: str, reason: str) -> None:
    prev_id = result.event["what"]["prev_config_id"]
    moves = {"deployed": try_lifecycle(registry, result.config_id, state, reason)}
    if prev_id and prev_id != result.config_id:
        moves["replaced"] = try_lifecycle(registry, prev_id, "paused", f"replaced by {result.config_id[:12]}")
    result.event["lifecycle"] = moves


# --- sweep row deploy --------------------------------------------------------------------------
def load_sweep_rows(path: str | Path) -> list[dict]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise DeployError(f"{p}: cannot read sweep results: {exc.strerror or exc}") from None
    try:
        rows = json.loads(text) if text.lstrip().startswith("[") else \
            [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as exc:
        raise DeployError(f"{p}: not JSON/JSONL: {exc}") from None
    if not rows or not all(isinstance(r, dict) and isinstance(r.get("overrides"), dict) for r in rows):
        raise DeployError(f"{p}: expected rows with an 'overrides' object")
    return rows


def apply_override_dict(base: dict, overrides: dict) -> dict:
    """Set dot-paths (relative to `global` unless absolute) on a copy of the base YAML mapping."""
    out = json.loads(json.dumps(base))
    for path, value in overrides.items():
        full = path if path.startswith(ABSOLUTE_PREFIXES) else f"global.{path}"
        try:
            validate_override_path(full, value)
        except ConfigError as exc:
            raise DeployError(f"override {path}: {exc}") from None
        node = out
        *parents, leaf = full.split(".")
        for key in parents:
            nxt = node.setdefault(key, {})
            if not isinstance(nxt, dict):
                raise DeployError(f"override {path}: {key} is not a mapping in the base config")
            node = nxt
        node[leaf] = value
    return out


def deploy_sweep_row(sweep_results: str | Path, rank: int, *, base_config: str | Path, target_yaml: str | Path,
                     artifacts_dir: str | Path = "artifacts", reason: str, sort_by: str = "total_pnl",
                     registry: Registry | None = None, allow_live: bool = False,
                     ignore_replay_gate: bool = False, dry_run: bool = False,
                     blocker_file: str | Path | None = None, max_age_minutes: float | None = None,
                     now_ms: int | None = None, allow_config_id_mismatch: bool = False) -> DeployResult:
    """Deploy the rank-N sweep row (1 = best by sort_by) as overrides over base_config, to paper.

    The merged config must be the config the sweep evaluated: a row whose config_id differs (another
    base config, an edited file) is refused unless allow_config_id_mismatch."""
    if not allow_live and "live" in Path(target_yaml).name.lower():
        raise DeployError(f"{target_yaml}: looks like a live config; deploy_sweep refuses live targets "
                          "(promote through paper, or pass allow_live)")
    gate_line = check_release_gate(ignore_replay_gate, dry_run, blocker_file, max_age_minutes, now_ms)
    rows = load_sweep_rows(sweep_results)
    ranked = sorted(rows, key=lambda r: float(r.get(sort_by) or float("-inf")), reverse=True)
    if not 1 <= rank <= len(ranked):
        raise DeployError(f"{sweep_results}: rank {rank} out of range 1..{len(ranked)}")
    row = ranked[rank - 1]
    base_text = Path(base_config).read_text(encoding="utf-8") if Path(base_config).is_file() else None
    if base_text is None:
        raise DeployError(f"{base_config}: base config not found")
    merged = apply_override_dict(parse_config_yaml(base_text, str(base_config)), row["overrides"])
    text = yaml.safe_dump(merged, sort_keys=False, default_flow_style=False)
    config_id = identify_config(merged, f"{base_config} + rank {rank} overrides")
    row_id = row.get("config_id")
    if row_id and str(row_id) != config_id and not allow_config_id_mismatch:
        raise ConfigIdMismatch(f"{sweep_results}: rank {rank} row config_id {str(row_id)[:12]} != {config_id[:12]} of "
                               f"{base_config} + its overrides (the sweep ran on another base config); "
                               "pass --allow-config-id-mismatch to deploy anyway")
    _check_not_retired(registry, config_id)
    now = int(time.time() * 1000) if now_ms is None else int(now_ms)
    source = {"sweep_results": str(sweep_results), "rank": rank, "sort_by": sort_by,
              "sweep_config_id": row.get("config_id"), "overrides": row["overrides"], "base_config": str(base_config),
              "config_id_mismatch_allowed": bool(row_id and str(row_id) != config_id)}
    result = install_config(target="paper", kind="deploy", next_text=text, next_id=config_id,
                      target_yaml=Path(target_yaml), artifacts_dir=Path(artifacts_dir), reason=reason,
                      registry=registry, dry_run=dry_run, gate_line=gate_line, now_ms=now, source=source)
    if not dry_run:
        _after_deploy(registry, result, "paper", f"sweep rank {rank} deploy: {reason}")
    return result


# --- rollback ----------------------------------------------------------------------------------
def _deploy_dirs(artifacts_dir: Path, target: str) -> list[Path]:
    root = artifacts_dir / "deployments" / target
    dirs = [d for d in root.iterdir() if (d / "deploy_event.json").is_file()] if root.is_dir() else []
    return sorted(dirs, key=lambda d: d.name, reverse=True)


def _read_deploy_event(path: Path) -> dict:
    """A deploy event as a dict; a corrupt one (bytes, NaN, a list) is a DeployError line, because
    rollback is the emergency path and must say which file to fix rather than crash."""
    try:
        event = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except (OSError, ValueError) as exc:
        detail = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise DeployError(f"{path}: unreadable deploy event: {detail}") from None
    if not isinstance(event, dict):
        raise DeployError(f"{path}: deploy event is a JSON {type(event).__name__}, not an object")
    return event


def _no_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name} is not JSON")


def rollback(target: str = "paper", steps: int = 1, *, artifacts_dir: str | Path = "artifacts",
             target_yaml: str | Path | None = None, reason: str, registry: Registry | None = None,
             ignore_replay_gate: bool = False, dry_run: bool = False, blocker_file: str | Path | None = None,
             max_age_minutes: float | None = None, now_ms: int | None = None) -> DeployResult:
    """Restore the config that was live before the steps-th newest deploy of `target`."""
    if steps < 1:
        raise DeployError(f"steps must be >= 1, got {steps}")
    gate_line = check_release_gate(ignore_replay_gate, dry_run, blocker_file, max_age_minutes, now_ms)
    art = Path(artifacts_dir)
    dirs = _deploy_dirs(art, target)
    if len(dirs) < steps:
        raise DeployError(f"{art / 'deployments' / target}: {len(dirs)} deploy(s) recorded, cannot roll back {steps}")
    chosen = dirs[steps - 1]
    text = (chosen / "prev_config.yaml").read_text(encoding="utf-8") if (chosen / "prev_config.yaml").is_file() else ""
    if not text.strip():
        if len(dirs) <= steps:
            raise DeployError(f"{chosen}: no previous config recorded to restore")
        text = (dirs[steps] / "deployed_config.yaml").read_text(encoding="utf-8")
    event_in = _read_deploy_event(chosen / "deploy_event.json")
    what = event_in.get("what") if isinstance(event_in.get("what"), dict) else {}
    yaml_path = Path(target_yaml or what.get("yaml_path") or "")
    if not str(yaml_path):
        raise DeployError(f"{chosen}/deploy_event.json: no what.yaml_path; pass target_yaml")
    restored_id = config_id_of_text(text, f"{chosen}/prev_config.yaml", strict=False)
    now = int(time.time() * 1000) if now_ms is None else int(now_ms)
    res = install_config(target=target, kind="rollback", next_text=text, next_id=restored_id, target_yaml=yaml_path,
                   artifacts_dir=art, reason=reason, registry=None, dry_run=dry_run,
                   gate_line=gate_line, now_ms=now, source={"rolled_back_deploy_dir": str(chosen), "steps": steps})
    if not dry_run:
        if registry is not None:
            registry.record_config(restored_id, text, None)
            registry.record_deployment(target, restored_id, res.deploy_dir, "rollback", res.event, ts_ms=now)
        _after_deploy(registry, res, "paper" if target == "paper" else "live_small", f"rollback: {reason}")
        res.message = f"rolled back {target} to {restored_id[:12]} ({res.deploy_dir})"
    return res
