"""The `backtester` console script: replay and indicators (cpu_replay) plus the sweep (gpu).

tools/ is the only layer allowed to join packages that must not import each other.
"""

from __future__ import annotations

from cpu_replay.cli import app

try:  # the sweep command lives in gpu/; the replay must still work if it fails to import
    from gpu.cli import sweep_command
except ImportError:  # pragma: no cover - only while gpu/ is incomplete
    sweep_command = None

if sweep_command is not None:
    app.command("sweep")(sweep_command)

if __name__ == "__main__":
    app()
