"""Run a small ensemble (1-3 daemons, each with its own config) as one supervised unit.

It is a process runner, not an in-process multi-strategy engine: each daemon keeps its own lock,
DB and RiskManager, and shares the operator's kill switch. The ensemble lives and dies together:
when any daemon exits, the others are stopped and the runner exits with that daemon's code, so
systemd (Restart=always) restarts the whole set in a known state.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import typer
import yaml

from live.env import REPO_ROOT
from live.trading_db import atomic_write_text

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
ABSOLUTE_PREFIXES = ("global.", "symbols.", "live.", "modes.")
MODES = ("paper", "dry_live", "live")


class SpecError(ValueError):
    """One line naming the spec file and the field."""


@dataclass
class Member:
    name: str
    strategy_yaml: Path
    overrides: dict[str, object]
    env: dict[str, str]
    derived_yaml: Path | None = None
    child_env: dict[str, str] = field(default_factory=dict)


def load_spec(path: Path) -> list[Member]:
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecError(f"{path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    items = doc.get("strategies") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not 1 <= len(items) <= 3:
        raise SpecError(f"{path}: strategies must be a list of 1 to 3 entries")
    members: list[Member] = []
    for i, item in enumerate(items):
        members.append(_member(path, i, item))
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise SpecError(f"{path}: strategies[].name must be unique (got {names})")
    return members


def _member(path: Path, i: int, item: object) -> Member:
    where = f"{path}: strategies[{i}]"
    if not isinstance(item, dict):
        raise SpecError(f"{where} must be a mapping")
    unknown = set(item) - {"name", "strategy_yaml", "config", "overrides", "env"}
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {sorted(unknown)}")
    name = str(item.get("name") or "")
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise SpecError(f"{where}.name must be a non-empty word (letters, digits, - and _)")
    yaml_path = Path(str(item.get("strategy_yaml") or item.get("config") or "config/strategy_overrides.yaml"))
    yaml_path = yaml_path if yaml_path.is_absolute() else REPO_ROOT / yaml_path
    overrides = item.get("overrides") or {}
    env = item.get("env") or {}
    if not isinstance(overrides, dict):
        raise SpecError(f"{where}.overrides must be a mapping of dot paths to values")
    if not isinstance(env, dict) or not all(isinstance(v, str | int | float | bool) for v in env.values()):
        raise SpecError(f"{where}.env must be a mapping of names to scalar values")
    return Member(name, yaml_path, {str(k): v for k, v in overrides.items()},
                  {str(k): str(v) for k, v in env.items()})


def _set_path(doc: dict, path: str, value: object) -> None:
    full = path if path.startswith(ABSOLUTE_PREFIXES) else f"global.{path}"
    node = doc
    parts = full.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SpecError(f"override {path}: {part} is not a mapping in the strategy YAML")
        node = child
    node[parts[-1]] = value


def derive_yaml(member: Member, out_dir: Path) -> Path:
    try:
        doc = yaml.safe_load(member.strategy_yaml.read_text()) or {}
    except OSError as exc:
        raise SpecError(f"{member.strategy_yaml}: {exc.strerror} (strategies '{member.name}')") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{member.strategy_yaml}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(doc, dict):
        raise SpecError(f"{member.strategy_yaml}: top level must be a mapping")
    for path, value in member.overrides.items():
        _set_path(doc, path, value)
    target = out_dir / f"strategy.{member.name}.yaml"
    header = f"# derived by tools/ensemble_runner.py from {member.strategy_yaml} for '{member.name}'\n"
    atomic_write_text(target, header + yaml.safe_dump(doc, sort_keys=False))
    return target


def validate_derived(member: Member, mode: str) -> None:
    """Load the derived YAML the way the daemon will, so a bad override fails here, not at 3 am."""
    from strategy.config import ConfigError, load_config

    strategy_mode = member.child_env.get("AI_QUANT_STRATEGY_MODE") or None
    try:
        load_config(member.derived_yaml, mode=strategy_mode, live=mode != "paper")
    except ConfigError as exc:
        raise SpecError(f"strategies '{member.name}': {' '.join(str(exc).split())}") from None


def child_env(member: Member, mode: str, out_dir: Path, parent: dict[str, str]) -> dict[str, str]:
    env = dict(parent)
    env["AI_QUANT_MODE"] = mode
    env["AI_QUANT_STRATEGY_YAML"] = str(member.derived_yaml)
    env["AI_QUANT_RUN_ID"] = parent.get("AI_QUANT_RUN_ID") or f"ensemble:{member.name}"
    env["AI_QUANT_EVENT_LOG_DIR"] = str(REPO_ROOT / "artifacts" / "events" / f"ensemble_{member.name}")
    env["AI_QUANT_LOCK_PATH"] = str(out_dir / f"{member.name}.lock")
    env["AI_QUANT_DB_PATH"] = str(out_dir / f"trading_engine_{mode}_{member.name}.db")
    env.update(member.env)
    return env


def plan(spec: Path, mode: str, out_dir: Path, parent_env: dict[str, str]) -> list[Member]:
    members = load_spec(spec)
    for m in members:
        m.derived_yaml = derive_yaml(m, out_dir)
        m.child_env = child_env(m, mode, out_dir, parent_env)
        validate_derived(m, mode)
    return members


def print_plan(members: list[Member], mode: str, cmd: list[str], parent_env: dict[str, str]) -> None:
    print(f"ensemble: {len(members)} daemon(s), mode={mode}, cwd={REPO_ROOT}")
    for m in members:
        print(f"- {m.name}: {shlex.join(cmd)}")
        print(f"    strategy_yaml: {m.derived_yaml}")
        for key in sorted(k for k in m.child_env if m.child_env[k] != parent_env.get(k)):
            print(f"    {key}={m.child_env[key]}")


def _exit_code(rc: int) -> int:
    return 128 - rc if rc < 0 else rc


def _stop(procs: dict[str, subprocess.Popen], timeout_s: float) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout_s
    for proc in procs.values():
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


class _Terminated(Exception):
    pass


def supervise(members: list[Member], cmd: list[str], timeout_s: float, poll_s: float = 0.1) -> int:
    """Start every daemon; the first to exit stops the rest and gives the exit code."""
    def on_sigterm(signum, frame):
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    procs: dict[str, subprocess.Popen] = {}
    sys.stdout.flush()  # the plan first; the children share this stdout
    try:
        for m in members:
            procs[m.name] = subprocess.Popen(cmd, cwd=REPO_ROOT, env=m.child_env, start_new_session=True)
            print(f"started {m.name} (pid {procs[m.name].pid})", file=sys.stderr)
        while True:
            for name, proc in procs.items():
                rc = proc.poll()
                if rc is not None:
                    print(f"{name} exited with code {_exit_code(rc)}; stopping the others", file=sys.stderr)
                    _stop(procs, timeout_s)
                    return _exit_code(rc)
            time.sleep(poll_s)
    except KeyboardInterrupt:
        print("interrupted; stopping the ensemble", file=sys.stderr)
        _stop(procs, timeout_s)
        return 130
    except _Terminated:
        print("SIGTERM; stopping the ensemble", file=sys.stderr)
        _stop(procs, timeout_s)
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.command()
def main(
    spec: Path = typer.Option(..., help="Ensemble spec YAML (see config/ensemble.example.yaml)."),
    mode: str = typer.Option("dry_live", help="AI_QUANT_MODE of every daemon: paper, dry_live or live."),
    out_dir: Path = typer.Option(REPO_ROOT / "artifacts" / "ensemble", help="Where derived YAMLs, locks, DBs go."),
    daemon_cmd: str = typer.Option(f"{sys.executable} -m live", help="Command that runs one daemon."),
    yes: bool = typer.Option(False, "--yes", help="Launch (without it: print the plan only)."),
    terminate_timeout_s: float = typer.Option(10.0, help="Grace period before SIGKILL when stopping."),
) -> None:
    """Plan (default) or launch an ensemble of trading daemons."""
    if mode not in MODES:
        print(f"--mode {mode!r}: must be paper, dry_live or live", file=sys.stderr)
        raise typer.Exit(2)
    cmd = shlex.split(daemon_cmd)
    if not cmd:
        print("--daemon-cmd is empty", file=sys.stderr)
        raise typer.Exit(2)
    out_dir = out_dir if out_dir.is_absolute() else REPO_ROOT / out_dir
    parent_env = dict(os.environ)
    try:
        members = plan(spec, mode, out_dir, parent_env)
    except SpecError as exc:
        print(str(exc), file=sys.stderr)
        raise typer.Exit(1) from None
    print_plan(members, mode, cmd, parent_env)
    if not yes:
        print("dry run: pass --yes to launch", file=sys.stderr)
        return
    raise typer.Exit(supervise(members, cmd, terminate_timeout_s))


if __name__ == "__main__":
    app()
