"""`python -m live` == `trader run` (systemd units call either)."""

import sys

from live.cli import app

app(args=["run", *sys.argv[1:]], prog_name="python -m live")
