"""Check the strategy YAML before it is deployed or hot-reloaded.

The daemon keeps the last good config when a reload fails, so a bad edit can sit unnoticed
until a restart; this tool is the operator's check (OPS_RUNBOOK §2) that the file is
schema-valid under every mode overlay and sets every core key explicitly, so nobody trades on
a default they never saw.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from strategy.config import NO_MODE, ConfigError, config_from_dict, core_key_paths, read_yaml
from strategy.config_schema import MODE_NAMES
from strategy.params import PARAM_SPECS, WINDOW_SPECS

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = Path("config/strategy_overrides.yaml")
_DEFAULTS = dict(PARAM_SPECS) | dict(WINDOW_SPECS) | {"engine.interval": "1h"}

app = typer.Typer(add_completion=False, help=__doc__)


def _yaml_scalar(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _missing_core_keys(data: object) -> list[tuple[str, str]]:
    """Core keys absent from `global` (a value the operator never wrote is a value never reviewed)."""
    glob = data.get("global") if isinstance(data, dict) else None
    problems = []
    for path in core_key_paths():
        node = glob
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        if node is None:
            default = _yaml_scalar(_DEFAULTS[path])
            problems.append((f"global.{path}", f"not set; write it explicitly (code default: {default})"))
    return problems


def _schema_problems(data: object, source: str) -> tuple[list[tuple[str, str]], list[str]]:
    """Problems from loading the file once per mode (and with live on, when it has a live: section)."""
    modes = data.get("modes") if isinstance(data, dict) else None
    names = [m for m in MODE_NAMES if isinstance(modes, dict) and m in modes]
    lives = [False, True] if isinstance(data, dict) and "live" in data else [False]
    problems: list[tuple[str, str]] = []
    for mode in [NO_MODE, *names]:
        for live in lives:
            try:
                config_from_dict(data, source=source, mode=mode, live=live)
            except ConfigError as exc:
                problems.extend(p for p in exc.problems if p not in problems)
    return problems, names


class _EachMessageOnce(logging.Filter):
    """The file is loaded once per mode overlay: its warning (keys that do not act) is said once."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def _console() -> Console:
    """Wide when piped, so that each problem stays on one line for grep and for CI logs."""
    console = Console()
    return console if console.is_terminal else Console(width=240)


@app.command()
def main(
    config: Path = typer.Option(
        None,
        "--config",
        help="Strategy YAML to check (default: config/strategy_overrides.yaml in the repo root)",
    ),
) -> None:
    """Validate the strategy YAML (schema, every mode overlay, every core key explicit)."""
    path = config if config is not None else ROOT / DEFAULT_CONFIG
    if config is None and not path.exists():
        typer.echo(
            f"{DEFAULT_CONFIG} not found; create it with: cp {DEFAULT_CONFIG}.example {DEFAULT_CONFIG}",
            err=True,
        )
        raise typer.Exit(1)
    try:
        data = read_yaml(path)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    logging.getLogger("strategy.config").addFilter(_EachMessageOnce())
    problems, modes = _schema_problems(data, str(path))
    problems += [p for p in _missing_core_keys(data) if p not in problems]
    console = _console()
    if problems:
        table = Table(title=f"{path}: problems", show_lines=False)
        table.add_column("path", no_wrap=True)
        table.add_column("problem")
        for where, what in problems:
            table.add_row(where, what)
        console.print(table)
        console.print(f"FAIL: {len(problems)} problem(s) in {path}", highlight=False)
        raise typer.Exit(1)
    cfg = config_from_dict(data, source=str(path), mode=NO_MODE)
    checked = ", ".join(["base", *modes])
    console.print(
        f"OK: {path} is valid and fully explicit (checked: {checked}; config_id {cfg.config_id[:12]})",
        highlight=False,
    )


if __name__ == "__main__":
    sys.exit(app())
