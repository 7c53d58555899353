"""The run directory: one folder per factory run, with a step log that survives crashes.

Why a step log: a nightly run takes hours, and an operator who finds it killed (OOM, reboot,
Ctrl-C) must see exactly which steps finished, how long each took and where its log is — and must
be able to continue with ``--resume`` instead of redoing the sweep. Each finished step stores its
JSON result under ``state/<step>.json``; on resume a finished step is not re-run, its stored
result is returned instead. ``run_metadata.json`` is rewritten atomically after every change, so
it is always a complete, parseable document.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from factory.jsonio import read_json, write_json_atomic

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
RUN_ID_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
RUN_DIR_SUBDIRS = ("logs", "state", "data_checks", "sweeps", "configs", "replays", "gates", "reports")


class RunDirError(ValueError):
    """A user-facing problem with the run directory (exists, missing, args mismatch): one line."""


class RunInterrupted(BaseException):
    """Raised in the main thread by SIGINT/SIGTERM; BaseException so no `except Exception` eats it."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


class StepFailed(Exception):
    """A step could not do its job; the message is the one-line reason shown to the operator."""


class RunDirWriteError(Exception):
    """The run directory could not be created (disk full, read-only, quota): one line, exit 1."""


def check_run_id(run_id: str) -> None:
    """A run id becomes a directory name: letters, digits, '.', '_' and '-' only, not starting with
    '.', no '..', at most 128 characters, so `--run-id ../../x` can never leave the artifacts root."""
    if not isinstance(run_id, str) or not RUN_ID_RE.fullmatch(run_id) or ".." in run_id:
        raise RunDirError(f"--run-id {run_id!r}: use 1-128 letters, digits, '.', '_' or '-' "
                          "(no path separators, no '..', not starting with '.')")


def contained_run_path(root: Path, date_dir: str, run_id: str) -> Path:
    """root/<date>/run_<id>, refused unless it resolves inside root (symlinks included): defence in
    depth behind check_run_id, checked before anything is created."""
    check_run_id(run_id)
    path = root / date_dir / f"run_{run_id}"
    real_root = root.resolve()
    if not path.resolve().is_relative_to(real_root) or path.resolve() == real_root:
        raise RunDirError(f"run dir {path} resolves outside the artifacts root {real_root}")
    return path


def _check_artifacts_root(root: Path) -> None:
    """A root that is, or lies below, a regular file can never hold a run: bad input (exit 2), said
    before anything is created rather than as a mkdir error half-way."""
    for path in (root, *root.parents):
        if path.exists():
            if not path.is_dir():
                raise RunDirError(f"--artifacts-dir {root}: {path} is not a directory")
            return


def utc_now() -> datetime:
    return datetime.now(UTC)


def default_run_id(profile: str, now: datetime | None = None) -> str:
    now = now or utc_now()
    return f"{now:%Y%m%dT%H%M%SZ}_{profile}"


def find_existing_run_dir(artifacts_dir: Path, run_id: str) -> Path | None:
    """A run id names one run whatever day it started, so resume finds it under any date folder."""
    if not artifacts_dir.is_dir():
        return None
    hits = sorted(p for p in artifacts_dir.glob(f"*/run_{run_id}") if p.is_dir())
    return hits[-1] if hits else None


def git_head(cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=5, check=False,
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


class RunDir:
    """A run directory plus its metadata; create with :meth:`open`."""

    def __init__(self, path: Path, metadata: dict[str, Any], resumed: bool):
        self.path = path
        self.metadata = metadata
        self.resumed = resumed
        self._critical = 0
        self._pending_signal: int | None = None
        self._old_handlers: dict[int, Any] = {}

    # ----- creation -------------------------------------------------------------------------
    @classmethod
    def open(
        cls, artifacts_dir: str | os.PathLike, run_id: str, *, profile: str, args: dict[str, Any],
        resume: bool = False, initial_balance: float = 10_000.0, guarded_args: tuple[str, ...] = (),
        now: datetime | None = None,
    ) -> RunDir:
        root = Path(artifacts_dir)
        check_run_id(run_id)
        _check_artifacts_root(root)
        existing = find_existing_run_dir(root, run_id)
        if existing is not None and not resume:
            raise RunDirError(f"run dir {existing} already exists: pass --resume to continue it or a new --run-id")
        if existing is None and resume:
            raise RunDirError(f"--resume: no run dir for run id {run_id!r} under {root}")
        if existing is not None:
            contained_run_path(root, existing.parent.name, run_id)
            return cls._reopen(existing, args, guarded_args)
        now = now or utc_now()
        path = contained_run_path(root, f"{now:%Y-%m-%d}", run_id)
        meta = {
            "run_id": run_id, "profile": profile, "status": "running",
            "generated_at_ms": int(now.timestamp() * 1000), "run_date_utc": f"{now:%Y-%m-%d}",
            "run_dir": str(path.resolve()), "git_head": git_head(), "args": args, "steps": [],
            "initial_balance": float(initial_balance), "sweep": {}, "candidate_configs": [],
            "resume_count": 0,
        }
        rd = cls(path, meta, resumed=False)
        rd._create()
        return rd

    def _create(self) -> None:
        """Make the directory tree and the first metadata; on a failed write (disk full) remove what
        was made, so no run dir without a readable run_metadata.json is left for --resume to trip on."""
        try:
            self.path.mkdir(parents=True, exist_ok=False)
        except OSError as exc:
            raise RunDirWriteError(f"cannot create run dir {self.path}: {exc.strerror or exc}") from None
        try:
            for sub in RUN_DIR_SUBDIRS:
                (self.path / sub).mkdir()
            self.save()
        except OSError as exc:
            shutil.rmtree(self.path, ignore_errors=True)
            raise RunDirWriteError(f"cannot write run dir {self.path}: {exc.strerror or exc}") from None

    @classmethod
    def _reopen(cls, path: Path, args: dict[str, Any], guarded_args: tuple[str, ...]) -> RunDir:
        meta_path = path / "run_metadata.json"
        try:
            meta = read_json(meta_path)
        except (OSError, ValueError) as exc:
            raise RunDirError(f"--resume: cannot read {meta_path}: {exc}") from None
        old = meta.get("args", {})
        for key in guarded_args:
            if key in old and old.get(key) != args.get(key):
                raise RunDirError(
                    f"--resume: argument {key!r} differs from the original run ({old.get(key)!r} != {args.get(key)!r})"
                )
        meta["status"] = "running"
        meta["resume_count"] = int(meta.get("resume_count", 0)) + 1
        meta.pop("failure_reason", None)
        rd = cls(path, meta, resumed=True)
        rd.save()
        return rd

    # ----- persistence ----------------------------------------------------------------------
    @property
    def metadata_path(self) -> Path:
        return self.path / "run_metadata.json"

    def save(self) -> None:
        with self.critical():
            write_json_atomic(self.metadata_path, self.metadata)

    @contextmanager
    def critical(self) -> Iterator[None]:
        """Defer a signal until the metadata write is complete, so a kill never loses a finished step."""
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
            if self._critical == 0 and self._pending_signal is not None:
                signum, self._pending_signal = self._pending_signal, None
                raise RunInterrupted(signum)

    # ----- signals --------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._old_handlers[signum] = signal.signal(signum, self._on_signal)

    def restore_signal_handlers(self) -> None:
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        self._old_handlers.clear()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self._critical:
            self._pending_signal = signum
            return
        raise RunInterrupted(signum)

    # ----- steps ----------------------------------------------------------------------------
    def finished_step(self, name: str) -> dict[str, Any] | None:
        for step in self.metadata["steps"]:
            if step["name"] == name and step["exit_code"] == 0:
                return step
        return None

    def state_path(self, name: str) -> Path:
        return self.path / "state" / f"{name}.json"

    def run_step(self, name: str, argv: list[str], fn: Callable[[IO[str]], Any]) -> Any:
        """Run ``fn(log)`` as step ``name`` once; on resume return the stored result of a finished step."""
        if self.finished_step(name) is not None and self.state_path(name).exists():
            return read_json(self.state_path(name))["result"]
        log_path = self.path / "logs" / f"{name}.log"
        start = time.monotonic()
        exit_code = EXIT_FAILED
        try:
            with _step_log(log_path) as log:
                log.write(f"# step {name} started {utc_now().isoformat()} argv={argv}\n")
                try:
                    result = fn(log)
                    with self.critical():
                        write_json_atomic(self.state_path(name), {"result": result})
                    exit_code = 0
                    return result
                except RunInterrupted as exc:
                    exit_code = EXIT_INTERRUPTED
                    _log_quietly(log, f"# {exc}\n")
                    raise
                except BaseException:
                    _log_quietly(log, traceback.format_exc())
                    raise
        finally:
            self._record_step_after(name, argv, exit_code, time.monotonic() - start, log_path)

    def _record_step_after(self, name: str, argv: list[str], exit_code: int, elapsed: float, log_path: Path) -> None:
        """Record the step; when the step itself failed and the record cannot be written either (disk
        full), the step's own error is the one to report, not a second chained one."""
        try:
            self._record_step(name, argv, exit_code, elapsed, log_path)
        except OSError:
            if exit_code == 0:
                raise

    def _record_step(self, name: str, argv: list[str], exit_code: int, elapsed: float, log_path: Path) -> None:
        entry = {
            "name": name, "argv": [str(a) for a in argv], "exit_code": exit_code,
            "elapsed_s": round(elapsed, 6), "log_path": str(log_path.relative_to(self.path)),
            "timed_out": False,
        }
        with self.critical():
            steps = [s for s in self.metadata["steps"] if s["name"] != name]
            steps.append(entry)
            self.metadata["steps"] = steps
            write_json_atomic(self.metadata_path, self.metadata)

    def finish_quietly(self, status: str, reason: str | None = None) -> str:
        """finish() on a failure path: '' when saved, else why not (the disk that failed the run may
        refuse this write too; that must not bury the run's own one-line reason)."""
        try:
            self.finish(status, reason)
        except OSError as exc:
            return f"; run_metadata.json not updated: {exc.strerror or exc}"
        return ""

    def finish(self, status: str, reason: str | None = None) -> None:
        if status not in ("ok", "failed", "interrupted"):
            raise ValueError(f"bad run status {status!r}")
        self.metadata["status"] = status
        self.metadata["finished_at_ms"] = int(time.time() * 1000)
        if reason:
            self.metadata["failure_reason"] = reason
        self.save()


@contextmanager
def _step_log(path: Path) -> Iterator[IO[str]]:
    """The step's log file, closed without raising: a close that fails to flush (disk full) would
    otherwise replace the step's own exception with a second one."""
    log = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed below
    try:
        yield log
    finally:
        try:
            log.close()
        except OSError:
            pass


def _log_quietly(log: IO[str], text: str) -> None:
    """Best effort: a step log that cannot be written (disk full) must not replace the step's error."""
    try:
        log.write(text)
        log.flush()
    except OSError:
        pass
