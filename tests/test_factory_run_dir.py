"""Run directory: naming, refusal to reuse, resume guard, and a real SIGTERM mid-step."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime

import pytest

from factory.run_dir import RunDir, RunDirError, default_run_id

NOW = datetime(2025, 6, 1, 0, 50, 7, tzinfo=UTC)


def test_run_id_and_dated_layout(tmp_path):
    assert default_run_id("daily", NOW) == "20250601T005007Z_daily"
    rd = RunDir.open(tmp_path, "r1", profile="smoke", args={"profile": "smoke"}, now=NOW)
    assert rd.path == tmp_path / "2025-06-01" / "run_r1"
    meta = json.loads(rd.metadata_path.read_text())
    assert meta["run_id"] == "r1" and meta["status"] == "running" and meta["steps"] == []
    assert meta["generated_at_ms"] == int(NOW.timestamp() * 1000)
    for sub in ("logs", "sweeps", "configs", "replays", "gates", "reports", "data_checks"):
        assert (rd.path / sub).is_dir()


def test_refuses_existing_dir_without_resume_and_guards_args(tmp_path):
    RunDir.open(tmp_path, "r1", profile="smoke", args={"profile": "smoke", "interval": "1h"}, now=NOW)
    with pytest.raises(RunDirError, match="already exists: pass --resume"):
        RunDir.open(tmp_path, "r1", profile="smoke", args={}, now=NOW)
    with pytest.raises(RunDirError, match="'interval' differs"):
        RunDir.open(tmp_path, "r1", profile="smoke", args={"profile": "smoke", "interval": "5m"}, resume=True,
                    guarded_args=("interval",))
    with pytest.raises(RunDirError, match="no run dir"):
        RunDir.open(tmp_path, "nope", profile="smoke", args={}, resume=True)


def test_steps_record_failure_and_resume_skips_finished(tmp_path):
    rd = RunDir.open(tmp_path, "r1", profile="smoke", args={}, now=NOW)
    calls = []
    assert rd.run_step("a", ["a", "--x"], lambda log: calls.append("a") or {"n": 1}) == {"n": 1}
    with pytest.raises(ZeroDivisionError):
        rd.run_step("b", ["b"], lambda log: 1 / 0)
    rd.finish("failed", "b broke")
    meta = json.loads(rd.metadata_path.read_text())
    assert [(s["name"], s["exit_code"]) for s in meta["steps"]] == [("a", 0), ("b", 1)]
    assert meta["status"] == "failed" and meta["failure_reason"] == "b broke"
    assert "ZeroDivisionError" in (rd.path / "logs" / "b.log").read_text()
    rd2 = RunDir.open(tmp_path, "r1", profile="smoke", args={}, resume=True)
    assert rd2.run_step("a", ["a"], lambda log: calls.append("again") or {"n": 2}) == {"n": 1}
    assert rd2.run_step("b", ["b"], lambda log: {"ok": True}) == {"ok": True}
    rd2.finish("ok")
    meta = json.loads(rd2.metadata_path.read_text())
    assert calls == ["a"] and meta["status"] == "ok" and meta["resume_count"] == 1
    assert [(s["name"], s["exit_code"]) for s in meta["steps"]] == [("a", 0), ("b", 0)]
    assert set(meta["steps"][0]) == {"name", "argv", "exit_code", "elapsed_s", "log_path", "timed_out"}


SCRIPT = textwrap.dedent("""
    import sys, time
    from factory.run_dir import RunDir, RunInterrupted
    rd = RunDir.open(sys.argv[1], "sig", profile="smoke", args={}, resume=len(sys.argv) > 2)
    rd.install_signal_handlers()
    try:
        rd.run_step("fast", ["fast"], lambda log: {"v": 1})
        rd.run_step("slow", ["slow"], lambda log: time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 60) or {"v": 2})
        rd.finish("ok")
    except RunInterrupted as exc:
        rd.finish("interrupted", str(exc))
        sys.exit(130)
""")


def test_real_sigterm_marks_interrupted_and_resume_finishes(tmp_path):
    script = tmp_path / "runner.py"
    script.write_text(SCRIPT)
    art = tmp_path / "artifacts"
    proc = subprocess.Popen([sys.executable, str(script), str(art)], env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 20
    meta_path = None
    while time.monotonic() < deadline:
        found = list(art.glob("*/run_sig/run_metadata.json"))
        if found and '"fast"' in found[0].read_text():
            meta_path = found[0]
            break
        time.sleep(0.05)
    assert meta_path is not None, "runner never finished its first step"
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 130
    meta = json.loads(meta_path.read_text())
    assert meta["status"] == "interrupted" and "SIGTERM" in meta["failure_reason"]
    assert [(s["name"], s["exit_code"]) for s in meta["steps"]] == [("fast", 0), ("slow", 130)]
    out = subprocess.run([sys.executable, str(script), str(art), "0.01"], timeout=30)
    assert out.returncode == 0
    meta = json.loads(meta_path.read_text())
    assert meta["status"] == "ok" and [(s["name"], s["exit_code"]) for s in meta["steps"]] == [("fast", 0), ("slow", 0)]


def _opts(tmp_path, **kw):
    from factory.pipeline import RunOptions

    bad_db = tmp_path / "candles_1h.db"
    if not bad_db.exists():
        bad_db.write_bytes(b"not a sqlite file" * 64)  # the run stops at its first step: fast
    base = dict(profile="smoke", candles_db=str(bad_db), artifacts_dir=str(tmp_path / "art"), run_id="r",
                progress=False, profiles_path=str(tmp_path / "profiles.yaml"))
    return RunOptions(**{**base, **kw})


def _meta(tmp_path):
    (path,) = (tmp_path / "art").glob("*/run_r/run_metadata.json")
    return json.loads(path.read_text())


@pytest.mark.parametrize("kw, needle", [
    ({"initial_balance": float("nan")}, "--initial-balance must be a finite number > 0 (got nan)"),
    ({"initial_balance": 0.0}, "--initial-balance must be a finite number > 0 (got 0.0)"),
    ({"initial_balance": float("inf")}, "--initial-balance must be a finite number > 0 (got inf)"),
    ({"interval": "7x"}, "--interval: unknown interval '7x'"),
])
def test_bad_balance_or_interval_is_refused_up_front(tmp_path, capsys, kw, needle):
    from factory.pipeline import run_factory
    from factory.profiles import REPO_ROOT

    (tmp_path / "profiles.yaml").write_text((REPO_ROOT / "config" / "factory_profiles.yaml").read_text())
    assert run_factory(_opts(tmp_path, **kw)) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "art").exists()  # nothing created for a bad flag
    assert run_factory(_opts(tmp_path)) == 1  # a real run dir (stopped by the unreadable DB)
    assert run_factory(_opts(tmp_path, resume=True, **kw)) == 2  # resumed with the bad flag: on record
    meta = _meta(tmp_path)
    assert meta["status"] == "failed" and needle in meta["failure_reason"]


def test_resume_refuses_a_profile_that_resolves_differently(tmp_path, capsys):
    from factory.pipeline import run_factory
    from factory.profiles import REPO_ROOT

    profiles = tmp_path / "profiles.yaml"
    text = (REPO_ROOT / "config" / "factory_profiles.yaml").read_text()
    profiles.write_text(text)
    assert run_factory(_opts(tmp_path)) == 1
    stored = _meta(tmp_path)["profile_resolved"]
    assert stored["name"] == "smoke" and stored["shortlist"] == 20
    profiles.write_text(text.replace("    shortlist: 20\n", "    shortlist: 7\n", 1))  # edited between runs
    capsys.readouterr()
    assert run_factory(_opts(tmp_path, resume=True)) == 2
    err = capsys.readouterr().err
    assert "--resume: the resolved profile 'smoke' differs from run r's (shortlist: 20 -> 7)" in err
    assert len(err.strip().splitlines()) == 1
    assert _meta(tmp_path)["profile_resolved"] == stored and _meta(tmp_path)["resume_count"] == 0
    profiles.write_text(text)
    assert run_factory(_opts(tmp_path, resume=True)) == 1  # the same profile resumes (and fails on the DB again)
    assert _meta(tmp_path)["resume_count"] == 1


# ------------------------------------------------------------------ run ids and a full disk (issue 10, items 4 and 9)
@pytest.mark.parametrize("run_id", ["../x", "../../../../x", "..", ".hidden", "a/b", "a\\b", "", "x" * 129,
                                    "a..b", "run*", "a b", "/abs"])
def test_unsafe_run_ids_are_refused_before_anything_is_written(tmp_path, run_id):
    art = tmp_path / "a" / "art"
    with pytest.raises(RunDirError, match="--run-id"):
        RunDir.open(art, run_id, profile="smoke", args={}, now=NOW)
    with pytest.raises(RunDirError, match="--run-id"):
        RunDir.open(art, run_id, profile="smoke", args={}, resume=True, now=NOW)
    assert list(tmp_path.rglob("*")) == []


def test_safe_run_ids_are_accepted():
    from factory.run_dir import check_run_id

    for run_id in ("r1", "20250601T005007Z_daily", "P_smoke_2025-06-01.1", "-x", "a.b-c_d", "x" * 128):
        check_run_id(run_id)


def test_a_date_dir_symlinked_outside_the_artifacts_root_is_refused(tmp_path):
    art, outside = tmp_path / "art", tmp_path / "outside"
    art.mkdir()
    outside.mkdir()
    (art / "2025-06-01").symlink_to(outside)
    with pytest.raises(RunDirError, match="outside the artifacts root"):
        RunDir.open(art, "r1", profile="smoke", args={}, now=NOW)
    assert list(outside.iterdir()) == []


def _disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_creating_leaves_no_half_run_dir(tmp_path, monkeypatch):
    from factory import run_dir as run_dir_mod

    monkeypatch.setattr(run_dir_mod, "write_json_atomic", _disk_full)
    with pytest.raises(run_dir_mod.RunDirWriteError, match="No space left on device"):
        RunDir.open(tmp_path, "r1", profile="smoke", args={}, now=NOW)
    assert not (tmp_path / "2025-06-01" / "run_r1").exists()


def test_disk_full_in_a_step_raises_the_steps_error_only(tmp_path, monkeypatch):
    """The step fails on the full disk, then the step record and the final status cannot be written
    either: the step's own error comes out, unchained, and finish_quietly says what was not saved."""
    from factory import run_dir as run_dir_mod

    rd = RunDir.open(tmp_path, "r1", profile="smoke", args={}, now=NOW)
    monkeypatch.setattr(run_dir_mod, "write_json_atomic", _disk_full)
    first = OSError(errno.ENOSPC, "No space left on device")

    def step(_log):
        raise first

    with pytest.raises(OSError) as info:
        rd.run_step("sweep", ["sweep"], step)
    assert info.value is first and info.value.__context__ is None
    assert rd.finish_quietly("failed", "disk full") == "; run_metadata.json not updated: No space left on device"


def test_disk_full_mid_run_is_one_line_exit_1(tmp_path, capsys, monkeypatch):
    from factory import pipeline
    from factory import run_dir as run_dir_mod
    from factory.profiles import REPO_ROOT

    (tmp_path / "profiles.yaml").write_text((REPO_ROOT / "config" / "factory_profiles.yaml").read_text())

    def prepare(_opts):  # the disk fills up once the run dir exists
        monkeypatch.setattr(run_dir_mod, "write_json_atomic", _disk_full)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pipeline, "prepare_inputs", prepare)
    assert pipeline.run_factory(_opts(tmp_path)) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("factory: file system error: No space left on device (run dir ")
    assert err.rstrip().endswith("; run_metadata.json not updated: No space left on device")


def test_run_factory_refuses_an_unsafe_run_id_before_touching_the_named_run(tmp_path, capsys):
    """`--resume --run-id ../x` must not even mark another run's metadata as failed."""
    from factory.pipeline import run_factory

    assert run_factory(_opts(tmp_path, run_id="../x", resume=True)) == 2
    err = capsys.readouterr().err
    assert err.startswith("factory: --run-id '../x'") and len(err.splitlines()) == 1
    assert not (tmp_path / "art").exists()
