"""Single-instance lock across real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from live.lock import InstanceLock, LockHeldError


def _holder(path):
    code = textwrap.dedent(f"""
        import sys, time
        from live.lock import InstanceLock
        lock = InstanceLock({str(path)!r}).acquire()
        print("locked", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_holder_is_refused_with_one_line(tmp_path):
    path = tmp_path / "ai_quant_paper.lock"
    proc = _holder(path)
    try:
        with pytest.raises(LockHeldError) as err:
            InstanceLock(path).acquire()
        assert str(err.value) == f"another trader holds {path} (pid {proc.pid}); refusing to start"
        assert "\n" not in str(err.value)
    finally:
        proc.kill()
        proc.wait()
    # the kernel released the flock with the killed process: a restart takes over at once
    with InstanceLock(path) as lock:
        assert lock.held
        assert path.read_text() == f"{os.getpid()}\n"
        with pytest.raises(LockHeldError):  # a second open in the same process is refused too
            InstanceLock(path).acquire()
    assert not lock.held
    InstanceLock(path).acquire().release()


def test_lock_creates_parent_dir_and_is_private(tmp_path):
    path = tmp_path / "state" / "x.lock"
    with InstanceLock(path):
        assert oct(path.stat().st_mode & 0o777) == "0o600"
