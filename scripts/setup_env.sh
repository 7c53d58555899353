#!/usr/bin/env bash
# Create (or refresh) the project's virtualenv in .venv from pyproject.toml. Idempotent.
# Installs the dev tools and the [plots] extra (plotly, optuna-dashboard) for HTML reports. The HTML
# pages are tested in a real headless Chromium (Debian's `chromium`): on CI (CI=true) it is installed
# with apt-get when missing; elsewhere a missing browser only skips those tests (a hint is printed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev,plots]"

have_chromium() { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }
if ! have_chromium; then
  if [ "${CI:-}" = "true" ] && command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  else
    echo "note: chromium not found: the browser tests of the HTML pages will be skipped (apt-get install chromium)" >&2
  fi
fi
