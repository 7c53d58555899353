#!/usr/bin/env bash
# Set up the environment, then run the main job on the bundled synthetic demo data:
# a smoke factory run (sweep -> canonical replay -> replay equivalence -> gates -> selection).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/factory run --profile smoke --no-deploy "$@"
