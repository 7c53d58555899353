"""Transient exchange errors (5xx, dropped replies) on reads and leverage updates never end the
live trader: reads are retried with backoff; when the exchange stays unreachable the bar's entries
are skipped with an audit event, and an error that escapes a loop sends the engine back to its last
checkpoint (as a restart would) and the bar is re-run, with nothing sent twice."""

from __future__ import annotations

from test_live_e2e import HOUR, LiveWorld, append_bars, assert_agree, audits, run_until_position


def quick_retries(world: LiveWorld) -> LiveWorld:
    world.env["AI_QUANT_HL_RETRY_BASE_S"] = "0.01"
    return world


def step_riding_out(world: LiveWorld) -> None:
    """world.step, but through the run loop's guard (loop_once itself lets errors escape)."""
    row = world.rows[world.next_bar]
    world.ex.advance(1)
    append_bars(world.candles, [row])
    world.wall.set_wall_ms(row[2] + HOUR + 2_500)
    world.next_bar += 1
    world.daemon._loop_riding_out_exchange_errors()


def test_one_failed_read_of_each_kind_is_retried_and_trading_goes_on(tmp_path):
    world = quick_retries(LiveWorld(tmp_path))
    try:
        world.start()
        kinds = ("meta", "updateLeverage", "userFills")  # read on the way to the first position
        for action in kinds:
            world.ex.faults.fail_next(action, status=502)
        run_until_position(world)
        assert [world.ex.faults.take(a) for a in kinds] == [None] * 3, "every planted 502 was met by a read"
        world.ex.faults.fail_next("clearinghouseState", status=502)  # read by the close's size check
        for _ in range(40):  # through the first close as well
            world.step()
        assert world.ex.faults.take("clearinghouseState") is None, "the planted 502 was met by a read"
        assert_agree(world)
        assert audits(tmp_path / "live.db", "EXCHANGE_UNREACHABLE") == []
    finally:
        world.stop()


def test_exchange_unreachable_for_a_bar_skips_its_entries_then_trades_again(tmp_path):
    world = quick_retries(LiveWorld(tmp_path))
    try:
        world.start()
        world.ex.faults.fail_next("updateLeverage", status=503, n=10_000)
        for _ in range(150):
            step_riding_out(world)
            if audits(tmp_path / "live.db", "ENTRIES_SKIPPED"):
                break
        skipped = audits(tmp_path / "live.db", "ENTRIES_SKIPPED")
        assert skipped and skipped[0]["why"] == "exchange unreachable"
        refused = audits(tmp_path / "live.db", "EXCHANGE_UNREACHABLE")
        assert refused and "updateLeverage: HTTP 503 after 4 attempt(s)" in refused[0]["error"]
        assert world.ex.fills(world.wallet.address) == [] and world.daemon._engine_positions() == {}
        world.ex.faults.clear()
        run_until_position(world)
        assert_agree(world)
    finally:
        world.stop()


def test_an_error_escaping_the_loop_rewinds_to_the_checkpoint_and_sends_nothing_twice(tmp_path):
    world = quick_retries(LiveWorld(tmp_path))
    try:
        world.start()
        run_until_position(world)
        # every position read fails from now on: the close's size check is refused, its retry
        # read escapes the loop; the trader stays up and re-runs the bar once reads work again
        world.ex.faults.fail_next("clearinghouseState", status=502, n=10_000)
        for _ in range(60):
            step_riding_out(world)
            if world.daemon.errors:
                break
        world.ex.faults.clear()
        for _ in range(60):
            step_riding_out(world)
        fills = world.ex.fills(world.wallet.address)
        assert len({f["tid"] for f in fills}) == len(fills)
        assert_agree(world)
        rewinds = [a for a in audits(tmp_path / "live.db", "EXCHANGE_UNREACHABLE") if a.get("then")]
        assert rewinds and rewinds[0]["then"] == "re-run from checkpoint"
    finally:
        world.stop()
