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
# Reinstall only when what pip reads changed (pyproject.toml, the extras, the Python): a warm
# setup costs a hash, not 5 s and a setuptools warning. EXTRAS adds extras, e.g. EXTRAS=dev,plots,bench.
EXTRAS=${EXTRAS:-dev,plots}
STAMP=.venv/.setup-stamp
want="$(cat pyproject.toml; echo "extras=$EXTRAS"; .venv/bin/python -V)"
want=$(printf '%s' "$want" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ] || ! .venv/bin/python -c "import strategy, live, factory" 2>/dev/null; then
  log=$(mktemp)
  if ! { .venv/bin/python -m pip install --quiet --upgrade pip && \
         .venv/bin/python -m pip install --quiet -e ".[$EXTRAS]"; } >"$log" 2>&1; then
    cat "$log" >&2  # pip's own words when it fails; its build warnings otherwise stay out of the way
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
  echo "$want" > "$STAMP"
fi

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
