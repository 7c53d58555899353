"""The `backtester` console script: replay and indicators (cpu_replay) plus the sweep (gpu).

tools/ is the only layer allowed to join packages that must not import each other.
"""

from __future__ import annotations

from cpu_replay.cli import app
from gpu.cli import sweep_command

app.command("sweep")(sweep_command)

if __name__ == "__main__":
    app()
