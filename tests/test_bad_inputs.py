"""Every bad input of issue 10 (items 4, 8, 9) as an operator meets it: the real command in a
subprocess, and the README's promise checked the same way for each: the documented exit code,
exactly one non-empty line on stderr, no traceback anywhere, and no output file (or temp file)
left behind. One table, so a new command or a new bad input is one row.

Fixtures are tiny SQLite files built once per module; the whole table runs in well under a minute.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
DEV_FULL = Path("/dev/full")
HAS_DEV_FULL = DEV_FULL.exists() and stat.S_ISCHR(DEV_FULL.stat().st_mode)
H = 3_600_000
T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z


# ------------------------------------------------------------------ fixtures (built once)
class Fx:
    """Paths of the shared inputs; every case writes only below its own tmp dir."""

    def __init__(self, root: Path):
        self.root = root
        self.cfg = REPO / "config" / "strategy_overrides.yaml.example"
        self.good = _good_candles(root / "candles_1h.db")
        self.cols = _sqlite(root / "cols.db", "CREATE TABLE candles (symbol TEXT, t INTEGER, c REAL)",
                            "INSERT INTO candles VALUES ('BTC', 1735689600000, 100.0)")
        self.notable = _sqlite(root / "notable.db", "CREATE TABLE other (x)", "INSERT INTO other VALUES (1)")
        self.afile = root / "a_file"
        self.afile.write_text("not a directory\n")
        self.adir = root / "a_dir"
        self.adir.mkdir()
        self.spec = root / "spec.yaml"
        self.spec.write_text("axes:\n  - path: trade.sl_atr_mult\n    values: [2.0, 3.0]\nlookback: 50\n"
                             "initial_balance: 10000\n")
        self.bytes = root / "random.bin"
        self.bytes.write_bytes(os.urandom(4096))
        self.empty = root / "empty.db"
        self.empty.write_bytes(b"")
        self.no_trades = _fresh_trading_db(root / "no_trades.db")
        self.trading = _trading_db(root / "trading.db")
        self.blockers = {name: _blocker(root / f"blocker_{name}.json", value)
                         for name, value in (("nan", "NaN"), ("inf", "Infinity"), ("big", "1e400"))}
        self.reg_bytes = _registry(root / "art_bytes", os.urandom(3000))
        self.reg_json = _registry(root / "art_json", b'{"runs": []}\n')
        self.bad_event = _bad_deploy_event(root / "art_event")
        self.dead_url = f"http://127.0.0.1:{_free_port()}"
        self.good_dir = _candle_dir(root / "trader_good", self.good)
        self.cols_dir = _candle_dir(root / "trader_cols", self.cols)


def _candle_dir(folder: Path, db: Path) -> Path:
    """A trader's AI_QUANT_CANDLES_DB_DIR holding `db` as candles_1h.db, in rollback-journal mode so
    that reading it writes nothing (the disk-full case must fail on the trading DB, not here)."""
    folder.mkdir()
    target = folder / "candles_1h.db"
    target.write_bytes(db.read_bytes())
    with sqlite3.connect(target) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
    return folder


def _sqlite(path: Path, *sql: str) -> Path:
    conn = sqlite3.connect(path)
    for stmt in sql:
        conn.execute(stmt)
    conn.commit()
    conn.close()
    return path


def _good_candles(path: Path) -> Path:
    """300 plausible 1h bars of BTC: enough to warm indicators and trade a little."""
    from marketdata.candles import write_candles

    rows, price = [], 100.0
    for i in range(300):
        step = 1.0 + 0.01 * ((i * 7919) % 11 - 5) / 5
        close = price * step
        rows.append({"symbol": "BTC", "t": T0 + i * H, "o": price, "h": max(price, close) * 1.002,
                     "l": min(price, close) * 0.998, "c": close, "v": 1000.0 + i})
        price = close
    write_candles(path, rows, "1h")
    return path


def _fresh_trading_db(path: Path) -> Path:
    from live.trading_db import open_trading_db

    open_trading_db(path).close()
    return path


def _trading_db(path: Path) -> Path:
    from live.trading_db import insert_trade, open_trading_db

    conn = open_trading_db(path)
    insert_trade(conn, {"symbol": "BTC", "type": "LONG", "action": "OPEN", "price": 100.0, "size": 1.0,
                        "balance": 1000.0})
    conn.close()
    return path


def _blocker(path: Path, generated_at: str) -> Path:
    path.write_text(f'{{"schema_version": 1, "generated_at_ms": {generated_at}, "blocked": false, '
                    '"reason_codes": []}\n')
    return path


def _registry(artifacts: Path, content: bytes) -> Path:
    (artifacts / "registry").mkdir(parents=True)
    (artifacts / "registry" / "registry.sqlite").write_bytes(content)
    return artifacts


def _bad_deploy_event(artifacts: Path) -> Path:
    deploy = artifacts / "deployments" / "paper" / "20250101T000000000Z_abcdefabcdef"
    deploy.mkdir(parents=True)
    (deploy / "prev_config.yaml").write_text("global: {}\n")
    (deploy / "deploy_event.json").write_text("[1, 2, 3]\n")
    return artifacts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> Fx:
    return Fx(tmp_path_factory.mktemp("bad_inputs"))


# ------------------------------------------------------------------ the table
BACKTESTER = [PY, "-m", "tools.backtester"]
FACTORY = [PY, "-m", "factory.cli", "run", "--profile", "smoke", "--no-deploy", "--no-progress"]


def tool(name: str) -> list[str]:
    return [PY, str(REPO / "tools" / name)]


@dataclass(frozen=True)
class Case:
    """argv(fx, out): the command; `out` is this case's output path, which must not exist afterwards."""

    id: str
    argv: Callable[[Fx, Path], list[str]]
    code: int
    needle: str = ""                     # a phrase the one stderr line must contain
    env: Callable[[Fx, Path], dict] = field(default=lambda fx, out: {})
    fsize_limit: int | None = None       # RLIMIT_FSIZE in bytes: every larger write fails (EFBIG)
    needs_dev_full: bool = False
    opens_registry: bool = False         # the deploy tools open (create) the registry before the gate


def _replay(fx: Fx, *extra: str) -> list[str]:
    return [*BACKTESTER, "replay", "--config", str(fx.cfg), "--interval", "1h", *extra]


def _sweep(fx: Fx, *extra: str) -> list[str]:
    return [*BACKTESTER, "sweep", "--config", str(fx.cfg), "--sweep-spec", str(fx.spec), "--backend", "cpu",
            "--interval", "1h", "--no-progress", *extra]


def _slippage(fx: Fx, *extra: str) -> list[str]:
    return [*tool("slippage_stress.py"), "--config", str(fx.cfg), "--interval", "1h", *extra]


TRADER = [PY, "-m", "live", "--mode", "paper", "--until-caught-up"]


def _trader_env(fx: Fx, out: Path, candles: Path | None = None, db: Path | None = None,
                lock: Path | None = None) -> dict:
    """A paper trader whose DB would be `out` (which must not exist afterwards) and lock beside it."""
    return {"AI_QUANT_STRATEGY_YAML": str(fx.cfg), "AI_QUANT_CANDLES_DB_DIR": str(candles or fx.good_dir),
            "AI_QUANT_INTERVAL": "1h", "AI_QUANT_DB_PATH": str(db or out),
            "AI_QUANT_LOCK_PATH": str(lock or out.with_name("paper.lock"))}


def _rollback(fx: Fx, art: Path, *extra: str) -> list[str]:
    return [*tool("rollback_to_last_good.py"), "--reason", "test", "--artifacts-dir", str(art), *extra]


CASES = [
    # -- a candle DB with the wrong schema: a candles table lacking columns, or no candles table
    Case("replay-cols", lambda fx, o: _replay(fx, "--candles-db", str(fx.cols)), 1, "cols.db"),
    Case("replay-notable", lambda fx, o: _replay(fx, "--candles-db", str(fx.notable)), 1, "no candles table"),
    Case("sweep-cols", lambda fx, o: _sweep(fx, "--candles-db", str(fx.cols), "--output", str(o)), 2, "cols.db"),
    Case("sweep-notable", lambda fx, o: _sweep(fx, "--candles-db", str(fx.notable), "--output", str(o)), 2,
         "no candles table"),
    Case("dump-cols", lambda fx, o: [*BACKTESTER, "dump-indicators", "--symbol", "BTC", "--interval", "1h",
                                     "--candles-db", str(fx.cols)], 1, "cols.db"),
    Case("dump-notable", lambda fx, o: [*BACKTESTER, "dump-indicators", "--symbol", "BTC", "--interval", "1h",
                                        "--candles-db", str(fx.notable)], 1, "no candles table"),
    Case("slippage-cols", lambda fx, o: _slippage(fx, "--candles-db", str(fx.cols)), 1, "cols.db"),
    Case("slippage-notable", lambda fx, o: _slippage(fx, "--candles-db", str(fx.notable)), 1, "no candles table"),
    Case("check-cols", lambda fx, o: [*tool("check_candle_dbs.py"), "--db-glob", str(fx.cols)], 2, "cols.db"),
    Case("check-notable", lambda fx, o: [*tool("check_candle_dbs.py"), "--db-glob", str(fx.notable)], 2,
         "no candles table"),
    Case("partition-cols", lambda fx, o: [*tool("partition_candles_db.py"), "--interval", "1h", "--src-db",
                                          str(fx.cols)], 2, "lacks column"),
    Case("partition-notable", lambda fx, o: [*tool("partition_candles_db.py"), "--interval", "1h", "--src-db",
                                             str(fx.notable)], 2, "no candles table"),
    # -- an --output that cannot be written: a directory, below a regular file, a full disk
    Case("replay-out-dir", lambda fx, o: _replay(fx, "--candles-db", str(fx.good), "--output", str(fx.adir)), 1,
         "is a directory"),
    Case("replay-out-under-file", lambda fx, o: _replay(fx, "--candles-db", str(fx.good), "--output",
                                                        str(fx.afile / "r.json")), 1, "not a directory"),
    Case("replay-out-disk-full", lambda fx, o: _replay(fx, "--candles-db", str(fx.good), "--output",
                                                       str(DEV_FULL)), 1, "No space left", needs_dev_full=True),
    Case("sweep-out-dir", lambda fx, o: _sweep(fx, "--candles-db", str(fx.good), "--output", str(fx.adir)), 2,
         "is a directory"),
    Case("sweep-out-under-file", lambda fx, o: _sweep(fx, "--candles-db", str(fx.good), "--output",
                                                      str(fx.afile / "s.jsonl")), 2, "not a directory"),
    Case("sweep-out-disk-full", lambda fx, o: _sweep(fx, "--candles-db", str(fx.good), "--output",
                                                     str(DEV_FULL)), 1, "No space left", needs_dev_full=True),
    Case("dump-out-dir", lambda fx, o: [*BACKTESTER, "dump-indicators", "--symbol", "BTC", "--interval", "1h",
                                        "--candles-db", str(fx.good), "--output", str(fx.adir)], 1,
         "is a directory"),
    Case("slippage-out-disk-full", lambda fx, o: _slippage(fx, "--candles-db", str(fx.good), "--output",
                                                           str(DEV_FULL)), 1, "No space left", needs_dev_full=True),
    Case("factory-artifacts-is-a-file", lambda fx, o: [*FACTORY, "--artifacts-dir", str(fx.afile)], 2,
         "not a directory"),
    Case("factory-artifacts-under-a-file", lambda fx, o: [*FACTORY, "--artifacts-dir", str(fx.afile / "art")], 2,
         "not a directory"),
    Case("factory-disk-full", lambda fx, o: [*FACTORY, "--artifacts-dir", str(o.parent / "art")], 1,
         "File too large", fsize_limit=300),  # every write over 300 bytes fails: the first metadata save
    # -- run ids that would leave the artifacts root (item 4)
    Case("factory-run-id-dotdot", lambda fx, o: [*FACTORY, "--artifacts-dir", str(o), "--run-id", "../x"], 2,
         "--run-id"),
    Case("factory-run-id-escape", lambda fx, o: [*FACTORY, "--artifacts-dir", str(o / "a" / "b"), "--run-id",
                                                 "../../../../x"], 2, "--run-id"),
    Case("factory-run-id-escape-resume", lambda fx, o: [*FACTORY, "--artifacts-dir", str(o), "--resume",
                                                        "--run-id", "../../../../x"], 2, "--run-id"),
    Case("factory-run-id-slash", lambda fx, o: [*FACTORY, "--artifacts-dir", str(o), "--run-id", "a/b"], 2,
         "--run-id"),
    Case("factory-run-id-hidden", lambda fx, o: [*FACTORY, "--artifacts-dir", str(o), "--run-id", ".x"], 2,
         "--run-id"),
    # -- NaN / Infinity in release_blocker.json: blocked (exit 2), never a crash in int()
    *[Case(f"rollback-blocker-{name}", lambda fx, o, name=name: _rollback(
        fx, o.parent, "--replay-gate-blocker-file", str(fx.blockers[name])), 2, "release blocker",
        opens_registry=True) for name in ("nan", "inf", "big")],
    Case("paper-deploy-blocker-nan", lambda fx, o: [
        *tool("paper_deploy.py"), "--yaml-path", str(fx.cfg), "--reason", "test", "--target-yaml", str(o),
        "--artifacts-dir", str(o.parent), "--replay-gate-blocker-file", str(fx.blockers["nan"])], 2,
        "release blocker", opens_registry=True),
    # -- check_candle_dbs --lookback-hours that is not a positive finite number
    *[Case(f"check-lookback-{value}", lambda fx, o, value=value: [
        *tool("check_candle_dbs.py"), "--db-glob", str(fx.good), "--lookback-hours", value], 2, "lookback")
      for value in ("nan", "inf", "-1")],
    # -- a corrupt registry or deploy event in rollback
    Case("rollback-registry-bytes", lambda fx, o: _rollback(fx, fx.reg_bytes, "--ignore-replay-gate"), 1,
         "registry"),
    Case("rollback-registry-json", lambda fx, o: _rollback(fx, fx.reg_json, "--ignore-replay-gate"), 1,
         "registry"),
    Case("rollback-deploy-event-json", lambda fx, o: _rollback(fx, fx.bad_event, "--ignore-replay-gate"), 1,
         "deploy_event.json"),
    # -- item 8: tools read the daemon's DB, and refuse an unusable one
    *[Case(f"export-state-{name}", lambda fx, o, name=name: [
        *tool("export_state.py"), "--source", "paper", "--output", str(o), "--db", str(getattr(fx, name))], 1, needle)
      for name, needle in (("empty", "empty file"), ("no_trades", "no trade carries a balance"),
                           ("good", "not a trading DB"), ("bytes", "unreadable"), ("adir", "not a file"))],
    Case("export-state-daemon-db-missing", lambda fx, o: [*tool("export_state.py"), "--source", "paper",
                                                          "--out", str(o)], 1, "gone.db: no such trading DB",
         env=lambda fx, o: {"AI_QUANT_DB_PATH": str(o.parent / "gone.db")}),
    Case("export-state-daemon-db-bytes", lambda fx, o: [*tool("export_state.py"), "--source", "live",
                                                        "--out", str(o)], 1, "random.bin: unreadable",
         env=lambda fx, o: {"AI_QUANT_MODE": "live", "AI_QUANT_DB_PATH": str(fx.bytes)}),
    Case("export-state-out-dir", lambda fx, o: [*tool("export_state.py"), "--source", "paper", "--db",
                                                str(fx.trading), "--output", str(fx.adir)], 1, "is a directory"),
    Case("export-csv-bytes", lambda fx, o: [*tool("export_csv.py"), "--db", str(fx.bytes), "--out", str(o)], 1,
         "unreadable"),
    Case("export-csv-daemon-db-candles", lambda fx, o: [*tool("export_csv.py"), "--out", str(o)], 1,
         "not a trading DB", env=lambda fx, o: {"AI_QUANT_DB_PATH": str(fx.good)}),
    Case("reality-check-bytes", lambda fx, o: [*tool("reality_check.py"), "--db", str(fx.bytes)], 1, "unreadable"),
    Case("reality-check-candles", lambda fx, o: [*tool("reality_check.py"), "--db", str(fx.good)], 1,
         "not a trading DB"),
    Case("reality-check-daemon-db-bytes", lambda fx, o: [*tool("reality_check.py")], 1, "random.bin",
         env=lambda fx, o: {"AI_QUANT_DB_PATH": str(fx.bytes), "AI_QUANT_LIVE_DB_PATH": str(o.parent / "no.db")}),
    Case("fetch-funding-unreachable", lambda fx, o: [*tool("fetch_funding_rates.py"), "--db", str(o), "--symbols",
                                                     "BTC", "--base-url", fx.dead_url, "--timeout-s", "5"], 3,
         "cannot reach"),
]


CASES += [
    # -- `trader run` (item 9): wrong-schema candles, a directory / random bytes / a candle DB as the
    #    trading DB, a directory as the lock path, a disk that cannot take the DB's first page
    Case("trader-candles-cols", lambda fx, o: TRADER, 1, "cols", env=lambda fx, o: _trader_env(fx, o, fx.cols_dir)),
    Case("trader-db-dir", lambda fx, o: TRADER, 1, "is a directory", env=lambda fx, o: _trader_env(fx, o, db=fx.adir)),
    Case("trader-db-bytes", lambda fx, o: TRADER, 1, "random.bin", env=lambda fx, o: _trader_env(fx, o, db=fx.bytes)),
    Case("trader-db-candles", lambda fx, o: TRADER, 1, "is not a trading DB",
         env=lambda fx, o: _trader_env(fx, o, db=fx.good)),
    Case("trader-lock-dir", lambda fx, o: TRADER, 1, "a_dir", env=lambda fx, o: _trader_env(fx, o, lock=fx.adir)),
    Case("trader-disk-full", lambda fx, o: TRADER, 1, "trading DB", env=lambda fx, o: _trader_env(fx, o),
         fsize_limit=1000),
]


def _clean_env(extra: dict) -> dict:
    """The test's env without AI_QUANT_* (an operator's shell must not leak in), plus the case's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_QUANT_")}
    return {**env, "AI_QUANT_STRATEGY_YAML": "/nonexistent/strategy.yaml", **extra}


def _limit_file_size(limit: int | None) -> Callable[[], None] | None:
    if limit is None:
        return None
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _files(root: Path, case: Case) -> set[str]:
    """Files below root, but for the registry a deploy tool opens before it checks the gate."""
    files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    return {f for f in files if not (case.opens_registry and "/registry/registry.sqlite" in f)}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_the_documented_exit_code(case: Case, fx: Fx, tmp_path: Path):
    if case.needs_dev_full and not HAS_DEV_FULL:
        pytest.skip("/dev/full is not a character device here")
    work = tmp_path / "work"
    work.mkdir()
    out = work / "out" / "result.json"
    before = _files(tmp_path, case)
    res = subprocess.run(case.argv(fx, out), cwd=work, capture_output=True, text=True, timeout=120,
                         env=_clean_env(case.env(fx, out)), stdin=subprocess.DEVNULL,
                         preexec_fn=_limit_file_size(case.fsize_limit))
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert "Traceback" not in res.stderr + res.stdout, res.stderr
    assert res.returncode == case.code, res.stderr
    assert len(lines) == 1, res.stderr
    assert case.needle in lines[0], lines[0]
    assert not out.exists(), "a failed command left its output behind"
    assert _files(tmp_path, case) == before, f"files left behind: {sorted(_files(tmp_path, case) - before)}"


def test_run_id_escape_writes_nothing_anywhere(fx: Fx, tmp_path: Path):
    """`--run-id ../../../../x` from a nested artifacts dir would land in tmp_path/x: nothing there,
    nothing created at all (not even the artifacts dir)."""
    art = tmp_path / "a" / "b" / "art"
    for run_id in ("../x", "../../../../x", "..", "x/../../y"):
        res = subprocess.run([*FACTORY, "--artifacts-dir", str(art), "--run-id", run_id], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60, env=_clean_env({}))
        assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert _tree(tmp_path) == set()


# ------------------------------------------------------------------ fetch_funding_rates against a fake exchange
class _FakeInfo(BaseHTTPRequestHandler):
    """Hyperliquid's /info: meta for BTC and ETH; funding history per `funding` (symbol -> rows or None = 500)."""

    funding: dict[str, list | None] = {}

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        kind = body.get("type")
        if kind == "spotMeta":
            reply = {"universe": [], "tokens": []}
        elif kind == "meta":
            reply = {"universe": [{"name": "BTC", "szDecimals": 5}, {"name": "ETH", "szDecimals": 4}]}
        elif kind == "fundingHistory" and self.funding.get(body.get("coin")) is not None:
            reply = self.funding[body["coin"]]
        else:
            self.send_response(500)
            self.end_headers()
            return
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_args):
        pass


@pytest.fixture
def fake_exchange():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeInfo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _FakeInfo
    finally:
        server.shutdown()
        server.server_close()


def _fetch(url: str, db: Path, symbols: str) -> subprocess.CompletedProcess:
    return subprocess.run([*tool("fetch_funding_rates.py"), "--db", str(db), "--symbols", symbols, "--base-url",
                           url, "--days", "1", "--timeout-s", "5"], capture_output=True, text=True, timeout=60,
                          env=_clean_env({}), stdin=subprocess.DEVNULL)


def test_failed_funding_fetch_leaves_no_db_and_a_partial_one_says_so(fake_exchange, tmp_path):
    import time

    url, handler = fake_exchange
    db = tmp_path / "dbs" / "funding_rates.db"
    handler.funding = {"BTC": None, "ETH": None}
    res = _fetch(url, db, "BTC,ETH")
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.count("\n") == 1 and "no funding rows fetched" in res.stderr and "failed: BTC, ETH" in res.stderr
    assert not db.exists() and list(db.parent.iterdir()) == []  # no empty DB, no temp file
    now = int(time.time() * 1000)
    handler.funding = {"BTC": [{"coin": "BTC", "fundingRate": "0.0001", "premium": "0", "time": now - H}],
                       "ETH": None}
    res = _fetch(url, db, "BTC,ETH")
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "failed: ETH" in res.stderr, res.stderr
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT symbol FROM funding_rates").fetchall() == [("BTC",)]  # the good symbol kept
    conn.close()
    assert sorted(p.name for p in db.parent.iterdir()) == ["funding_rates.db"]
    handler.funding = {"BTC": [], "ETH": [{"coin": "ETH", "fundingRate": "0.0002", "premium": "0", "time": now}]}
    res = _fetch(url, db, "BTC,ETH")
    assert res.returncode == 0 and "inserted 1 rows" in res.stderr, res.stderr
