#!/usr/bin/env python3
"""Restore the config that ran before the last deploy (runbook §2, tool form).

Restores prev_config.yaml of the --steps-th newest deploy dir of --target (else the next older
deploy's config), writes rollbacks/<target>/<ts>_<id12>/ and records a rollback event. Running it
twice restores the same config (it never re-deploys the bad one). Like every deploy path it obeys
the replay release blocker: in an emergency pass --ignore-replay-gate. Exit 0 restored, 1 bad
input, 2 blocked by the replay gate.
"""

from __future__ import annotations

from pathlib import Path

import typer

from factory.deploy import DeployError, ReplayGateBlocked, rollback
from factory.registry import LifecycleError, Registry, RegistryError, default_registry_path

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    steps: int = typer.Option(1, "--steps", help="1 = undo the newest deploy"),
    reason: str = typer.Option(..., "--reason"),
    target: str = typer.Option("paper", "--target", help="deployments/<target>/ to roll back: paper | live"),
    target_yaml: Path = typer.Option(None, "--target-yaml", help="default: the YAML recorded in the deploy event"),
    artifacts_dir: Path = typer.Option(Path("artifacts"), "--artifacts-dir"),
    registry_path: Path = typer.Option(None, "--registry"),
    dry_run: bool = typer.Option(False, "--dry-run"),
    ignore_replay_gate: bool = typer.Option(False, "--ignore-replay-gate"),
    replay_gate_blocker_file: Path = typer.Option(None, "--replay-gate-blocker-file"),
    max_replay_gate_age_minutes: float = typer.Option(None, "--max-replay-gate-age-minutes"),
) -> None:
    """Roll the target YAML back to the config before the --steps-th newest deploy."""
    try:
        res = rollback(target, steps, artifacts_dir=artifacts_dir, target_yaml=target_yaml, reason=reason,
                       registry=Registry(registry_path or default_registry_path(artifacts_dir)),
                       ignore_replay_gate=ignore_replay_gate, dry_run=dry_run,
                       blocker_file=replay_gate_blocker_file, max_age_minutes=max_replay_gate_age_minutes)
    except ReplayGateBlocked as exc:
        typer.echo(f"refused: {exc}; in an emergency pass --ignore-replay-gate", err=True)
        raise typer.Exit(2) from None
    except (DeployError, LifecycleError, RegistryError, OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(res.gate_line)
    typer.echo(res.message if not dry_run else f"dry run: would restore {res.config_id[:12]} to {res.target_yaml}")
    if res.restart_required:
        typer.echo("restart required: global.engine.interval changed")


if __name__ == "__main__":
    app()
