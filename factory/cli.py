"""`factory run --profile smoke|daily|deep`: the nightly pipeline from a terminal or a timer.

Thin on purpose: flags become RunOptions, factory.pipeline does the work. Exit codes: 0 ok,
1 a step failed, 2 bad input, 130 interrupted (SIGINT/SIGTERM; continue with --resume).
"""

from __future__ import annotations

import typer

from factory.pipeline import RunOptions, run_factory

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Strategy factory: sweep, canonical replay, replay equivalence, gates, selection.",
)


@app.callback()
def _main() -> None:
    """Strategy factory (see OPS_RUNBOOK.md §7)."""


def _time_ms(value: str | None, flag: str) -> int | None:
    from marketdata.intervals import MarketDataError, parse_time_ms

    try:
        return parse_time_ms(value, flag)
    except MarketDataError as exc:
        typer.echo(f"factory: {exc}", err=True)
        raise typer.Exit(2) from None


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value is not None else None


@app.command("run")
def run(
    profile: str = typer.Option("smoke", help="smoke | daily | deep (config/factory_profiles.yaml)."),
    config: str = typer.Option(
        None, help="Base strategy YAML [config/strategy_overrides.yaml, else .example]."
    ),
    candles_db: str = typer.Option(
        None, help="Candle DB file(s)/partition dirs, comma-separated [smoke: demo data]."
    ),
    exit_candles_db: str = typer.Option(
        None,
        help="Candle DB(s) of the config's engine.exit_interval "
        "[candles_<exit>.db beside --candles-db; smoke: demo data].",
    ),
    funding_db: str = typer.Option(None, help="Funding rates DB."),
    interval: str = typer.Option(None, help="Candle interval, e.g. 1h [profile]."),
    sweep_spec: str = typer.Option(None, help="Sweep spec YAML [profile]."),
    backend: str = typer.Option(None, help="auto | cpu | cuda | cudasim [profile]."),
    precision: str = typer.Option(None, help="f64 | f32 [profile]."),
    tpe: bool = typer.Option(None, "--tpe/--grid", help="TPE trials instead of the grid [profile]."),
    trials: int = typer.Option(None, help="TPE trials [profile]."),
    batch: int = typer.Option(None, help="TPE candidates per kernel launch [profile]."),
    neighborhood: int = typer.Option(None, help="TPE: candidates evaluated around each proposal [profile]."),
    shortlist: int = typer.Option(None, help="Shortlist size [profile]."),
    replay: int = typer.Option(None, help="Candidates replayed and validated [profile]."),
    gates: str = typer.Option(None, help="Comma list of gates, or 'none' [profile]."),
    trace: bool = typer.Option(None, "--trace/--no-trace", help="Trade-by-trade equivalence [profile: on]."),
    min_trades: int = typer.Option(None, help="min_trades gate threshold [profile: 30]."),
    gate_mode: str = typer.Option(None, help="enforce | advisory (advisory never deploys) [profile]."),
    wf_folds: int = typer.Option(None, help="Walk-forward folds [profile walk_forward.folds]."),
    wf_scheme: str = typer.Option(None, help="Walk-forward scheme: anchored | rolling [profile]."),
    wf_embargo_bars: int = typer.Option(None, help="Bars skipped between in-sample and out-of-sample [profile]."),
    start: str = typer.Option(None, help="Data window start (epoch ms or ISO UTC)."),
    end: str = typer.Option(None, help="Data window end, exclusive (epoch ms or ISO UTC)."),
    symbols: str = typer.Option(None, help="Comma list of symbols [all in the data]."),
    artifacts_dir: str = typer.Option("artifacts", help="Artifacts root."),
    run_id: str = typer.Option(None, help="Run id [<UTC yyyymmddThhmmssZ>_<profile>]."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue an existing run after its last finished step."
    ),
    no_deploy: bool = typer.Option(False, "--no-deploy", help="Do not deploy the selected config to paper."),
    initial_balance: float = typer.Option(10_000.0, help="Initial balance (USD) for sweep and replays."),
    deploy_target: str = typer.Option(None, help="Paper config YAML the deploy step replaces."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
    plot: bool = typer.Option(False, "--plot", help="Also write replays/<candidate>.replay.html for each "
                                                    "replayed candidate (plotly; a few MB each)."),
) -> None:
    """Run the factory pipeline and write artifacts/<UTC date>/run_<run_id>/."""
    gate_list = _csv(gates)
    opts = RunOptions(
        profile=profile,
        config=config,
        candles_db=candles_db,
        exit_candles_db=exit_candles_db,
        funding_db=funding_db,
        interval=interval,
        sweep_spec=sweep_spec,
        backend=backend,
        precision=precision,
        tpe=tpe,
        trials=trials,
        batch=batch,
        neighborhood=neighborhood,
        shortlist=shortlist,
        replay=replay,
        gates=[] if gate_list == ["none"] else gate_list,
        trace=trace,
        min_trades=min_trades,
        gate_mode=gate_mode,
        wf_folds=wf_folds,
        wf_scheme=wf_scheme,
        wf_embargo_bars=wf_embargo_bars,
        start_ms=_time_ms(start, "--start"),
        end_ms=_time_ms(end, "--end"),
        symbols=_csv(symbols),
        artifacts_dir=artifacts_dir,
        run_id=run_id,
        resume=resume,
        no_deploy=no_deploy,
        initial_balance=initial_balance,
        deploy_target=deploy_target,
        progress=progress,
        plot=plot,
    )
    code = run_factory(opts)
    if code:
        raise typer.Exit(code)


if __name__ == "__main__":
    app()
