#!/usr/bin/env python3
"""Deploy a config to the paper trader's YAML (runbook: "python tools/paper_deploy.py ...").

A thin wrapper over factory.deploy.deploy_paper, which enforces the replay release blocker itself;
this CLI only turns refusals into one line and an exit code (0 deployed, 1 bad input, 2 blocked by
the replay gate).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from factory.deploy import DeployError, ReplayGateBlocked, deploy_paper
from factory.registry import LifecycleError, Registry, RegistryError, default_registry_path

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    config_id: str = typer.Option(None, "--config-id", help="config_id (or a unique >= 8-char prefix) from the registry"),
    yaml_path: Path = typer.Option(None, "--yaml-path", help="a config YAML file to deploy"),
    reason: str = typer.Option(..., "--reason", help="why (recorded in deploy_event.json)"),
    target_yaml: Path = typer.Option(Path("config/strategy_overrides.yaml"), "--target-yaml",
                                     help="the paper trader's YAML, replaced atomically"),
    artifacts_dir: Path = typer.Option(Path("artifacts"), "--artifacts-dir"),
    registry_path: Path = typer.Option(None, "--registry", help="default <artifacts-dir>/registry/registry.sqlite"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show what would change; write nothing"),
    ignore_replay_gate: bool = typer.Option(False, "--ignore-replay-gate", help="emergency override of the blocker"),
    replay_gate_blocker_file: Path = typer.Option(None, "--replay-gate-blocker-file"),
    max_replay_gate_age_minutes: float = typer.Option(None, "--max-replay-gate-age-minutes",
                                                      help="default $AI_QUANT_REPLAY_GATE_MAX_AGE_MINUTES or 360"),
) -> None:
    """Deploy a config to paper: writes deployments/paper/<ts>_<id12>/ and swaps the target YAML."""
    if (config_id is None) == (yaml_path is None):
        typer.echo("error: give exactly one of --config-id or --yaml-path", err=True)
        raise typer.Exit(1)
    try:
        registry = Registry(registry_path or default_registry_path(artifacts_dir))
        res = deploy_paper(str(yaml_path or config_id), target_yaml=target_yaml, artifacts_dir=artifacts_dir,
                           reason=reason, registry=registry, ignore_replay_gate=ignore_replay_gate, dry_run=dry_run,
                           blocker_file=replay_gate_blocker_file, max_age_minutes=max_replay_gate_age_minutes)
    except ReplayGateBlocked as exc:
        typer.echo(f"refused: {exc}; fix the replay gate or pass --ignore-replay-gate", err=True)
        raise typer.Exit(2) from None
    except (DeployError, LifecycleError, RegistryError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(res.gate_line)
    typer.echo(res.message)
    if res.restart_required:
        typer.echo("restart required: global.engine.interval changed (hot reload cannot change the interval)")
    if dry_run:
        typer.echo(json.dumps(res.event["what"], sort_keys=True, indent=2))


if __name__ == "__main__":
    app()
