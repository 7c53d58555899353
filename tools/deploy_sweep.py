#!/usr/bin/env python3
"""Deploy the rank-N row of a sweep as overrides over a base config, to paper.

Live targets are refused unless --allow-live (promote through paper instead). The replay release
blocker is enforced by factory.deploy.deploy_sweep_row; exit 0 deployed, 1 bad input, 2 refused
(blocked by the replay gate, a live target, or a row whose config_id is not the merged config's:
--allow-config-id-mismatch overrides that last one).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from factory.deploy import ConfigIdMismatch, DeployError, ReplayGateBlocked, deploy_sweep_row
from factory.registry import LifecycleError, Registry, RegistryError, default_registry_path

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    sweep_results: Path = typer.Option(..., "--sweep-results", help="sweep_results.jsonl (or a JSON list of rows)"),
    rank: int = typer.Option(1, "--rank", help="1 = best row by --sort-by"),
    base_config: Path = typer.Option(Path("config/strategy_overrides.yaml"), "--base-config"),
    target_yaml: Path = typer.Option(None, "--target-yaml", help="default: the base config itself"),
    sort_by: str = typer.Option("total_pnl", "--sort-by", help="row metric, descending"),
    reason: str = typer.Option("deploy_sweep", "--reason"),
    allow_live: bool = typer.Option(False, "--allow-live", help="allow a target YAML whose name says live"),
    artifacts_dir: Path = typer.Option(Path("artifacts"), "--artifacts-dir"),
    registry_path: Path = typer.Option(None, "--registry"),
    dry_run: bool = typer.Option(False, "--dry-run"),
    ignore_replay_gate: bool = typer.Option(False, "--ignore-replay-gate"),
    replay_gate_blocker_file: Path = typer.Option(None, "--replay-gate-blocker-file"),
    max_replay_gate_age_minutes: float = typer.Option(None, "--max-replay-gate-age-minutes"),
    allow_config_id_mismatch: bool = typer.Option(False, "--allow-config-id-mismatch",
                                                  help="deploy even if the row's config_id is not the merged config's"),
) -> None:
    """Deploy sweep row --rank as overrides over --base-config to --target-yaml (paper)."""
    try:
        res = deploy_sweep_row(sweep_results, rank, base_config=base_config, target_yaml=target_yaml or base_config,
                               artifacts_dir=artifacts_dir, reason=reason, sort_by=sort_by,
                               registry=Registry(registry_path or default_registry_path(artifacts_dir)),
                               allow_live=allow_live, ignore_replay_gate=ignore_replay_gate, dry_run=dry_run,
                               blocker_file=replay_gate_blocker_file, max_age_minutes=max_replay_gate_age_minutes,
                               allow_config_id_mismatch=allow_config_id_mismatch)
    except ReplayGateBlocked as exc:
        typer.echo(f"refused: {exc}; fix the replay gate or pass --ignore-replay-gate", err=True)
        raise typer.Exit(2) from None
    except ConfigIdMismatch as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(2) from None
    except DeployError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2 if "refuses live targets" in str(exc) else 1) from None
    except (LifecycleError, RegistryError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(res.gate_line)
    typer.echo(res.message)
    typer.echo(f"overrides: {json.dumps(res.event['source']['overrides'], sort_keys=True)}")
    if res.restart_required:
        typer.echo("restart required: global.engine.interval changed")


if __name__ == "__main__":
    app()
