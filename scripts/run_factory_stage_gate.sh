#!/usr/bin/env bash
# Factory stage gate: dry -> smoke -> real, each validated by the selection hard gate.
#
# Why a script and not a factory flag: the gate must judge the factory from the outside, from the
# files it wrote, and stop before the next (more expensive, possibly deploying) stage when anything
# is off. It writes one manifest, <artifacts>/<prefix>_<ts>.evidence.json, to attach to the
# promotion ticket (OPS_RUNBOOK §7); each entry carries the run's walk-forward (out-of-sample) and
# overfitting (PBO, deflated Sharpe) figures. Exit 0 all stages passed, 1 a stage failed, 2 usage.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$SCRIPT_DIR")"

usage() {
  cat <<'EOF'
usage: run_factory_stage_gate.sh --run-prefix P [--dry-profile smoke] [--smoke-profile smoke]
         [--real-profile daily] [--config config/strategy_overrides.yaml] [--artifacts-dir artifacts]
         [--candles-db PATHS] [--funding-db PATH]
         [--allow-real-deploy] [--factory-cmd "factory"] [--python PY] [-- extra factory args]

Runs `factory run --profile <p> --run-id <P>_<stage>_<ts> --no-deploy ...` for dry, smoke and real
(real without --no-deploy only with --allow-real-deploy or ALLOW_REAL_DEPLOY=1), validates each
reports/selection.json with scripts/validate_factory_selection_gate.py, stops at the first failure
and writes <artifacts-dir>/<P>_<ts>.evidence.json.

--candles-db / --funding-db are passed to every stage (the daily and deep profiles require
--candles-db; only smoke falls back to the demo data). Extra args after `--` also apply to every stage.
EOF
}

die_usage() { echo "error: $1" >&2; usage >&2; exit 2; }

RUN_PREFIX=""
DRY_PROFILE="smoke"
SMOKE_PROFILE="smoke"
REAL_PROFILE="daily"
CONFIG="config/strategy_overrides.yaml"
ARTIFACTS_DIR="artifacts"
ALLOW_REAL="${ALLOW_REAL_DEPLOY:-0}"
FACTORY_CMD="factory"
if [[ -x "$REPO_DIR/.venv/bin/python" ]]; then PYTHON="$REPO_DIR/.venv/bin/python"; else PYTHON="python3"; fi
CANDLES_DB=""
FUNDING_DB=""
EXTRA=()

need_value() { [[ $# -ge 2 && -n "$2" ]] || die_usage "$1 needs a value"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --run-prefix) need_value "$@"; RUN_PREFIX="$2"; shift 2 ;;
    --dry-profile) need_value "$@"; DRY_PROFILE="$2"; shift 2 ;;
    --smoke-profile) need_value "$@"; SMOKE_PROFILE="$2"; shift 2 ;;
    --real-profile) need_value "$@"; REAL_PROFILE="$2"; shift 2 ;;
    --config) need_value "$@"; CONFIG="$2"; shift 2 ;;
    --artifacts-dir) need_value "$@"; ARTIFACTS_DIR="$2"; shift 2 ;;
    --candles-db) need_value "$@"; CANDLES_DB="$2"; shift 2 ;;
    --funding-db) need_value "$@"; FUNDING_DB="$2"; shift 2 ;;
    --factory-cmd) need_value "$@"; FACTORY_CMD="$2"; shift 2 ;;
    --python) need_value "$@"; PYTHON="$2"; shift 2 ;;
    --allow-real-deploy) ALLOW_REAL=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die_usage "unknown argument: $1" ;;
  esac
done

[[ -n "$RUN_PREFIX" ]] || die_usage "--run-prefix is required"
[[ "$RUN_PREFIX" =~ ^[A-Za-z0-9._-]+$ ]] || die_usage "--run-prefix may only contain letters, digits, . _ -"
[[ "$ALLOW_REAL" == "1" || "$ALLOW_REAL" == "0" ]] || die_usage "ALLOW_REAL_DEPLOY must be 0 or 1"

TS="$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$ARTIFACTS_DIR"
MANIFEST="$ARTIFACTS_DIR/${RUN_PREFIX}_${TS}.evidence.json"
ENTRIES_DIR="$(mktemp -d "${TMPDIR:-/tmp}/stage_gate.XXXXXX")"
trap 'rm -rf "$ENTRIES_DIR"' EXIT
read -r -a FACTORY_ARGV <<<"$FACTORY_CMD"
DATA_ARGS=()
if [[ -n "$CANDLES_DB" ]]; then DATA_ARGS+=(--candles-db "$CANDLES_DB"); fi
if [[ -n "$FUNDING_DB" ]]; then DATA_ARGS+=(--funding-db "$FUNDING_DB"); fi

# Appends one stage's manifest entry (from the files on disk) as ENTRIES_DIR/<n>.json.
record_entry() {
  local n="$1" stage="$2" profile="$3" run_id="$4" selection="$5" factory_rc="$6" gate_rc="$7" no_deploy="$8"
  "$PYTHON" - "$ENTRIES_DIR/$n.json" "$stage" "$profile" "$run_id" "$selection" "$factory_rc" "$gate_rc" "$no_deploy" <<'PY'
import json, sys
from pathlib import Path
out, stage, profile, run_id, selection, factory_rc, gate_rc, no_deploy = sys.argv[1:9]
sel = {}
if selection and Path(selection).is_file():
    try:
        sel = json.loads(Path(selection).read_text(encoding="utf-8"))
    except ValueError:
        sel = {}
selected = sel.get("selected") if isinstance(sel.get("selected"), dict) else {}
best = sel.get("best_candidate") if isinstance(sel.get("best_candidate"), dict) else {}
wf = sel.get("walk_forward") if isinstance(sel.get("walk_forward"), dict) else None
ov = sel.get("overfitting") if isinstance(sel.get("overfitting"), dict) else None
summary = Path(selection).parent / f"selection_gate_summary_{stage}.json" if selection else None
entry = {
    "stage": stage, "profile": profile, "run_id": run_id, "no_deploy": no_deploy == "1",
    "factory_exit_code": int(factory_rc), "gate_exit_code": int(gate_rc) if gate_rc else None,
    "gate_ok": gate_rc == "0", "selection_json": selection or None,
    "selection_stage": sel.get("selection_stage"), "deploy_stage": sel.get("deploy_stage"),
    "promotion_stage": sel.get("promotion_stage"),
    "evidence_bundle_paths": sel.get("evidence_bundle_paths"),
    "selected": {"config_id": selected.get("config_id"),
                 "canonical_cpu_verified": selected.get("canonical_cpu_verified"),
                 "replay_equivalence_status": selected.get("replay_equivalence_status")},
    "selection_gate_summary_json": str(summary) if summary and summary.is_file() else None,
    "best_candidate": {"config_id": best.get("config_id"), "reasons": sel.get("best_candidate_reasons")} if best else None,
    "synthetic_data": bool((sel.get("data") or {}).get("synthetic")),
    "walk_forward": None if wf is None else {k: wf.get(k) for k in ("folds", "passed", "efficiency",
                                                                     "wf_median_oos_daily_return", "oos_total_return")},
    "overfitting": None if ov is None else {k: ov.get(k) for k in ("pbo", "deflated_sharpe", "n_trials")},
}
Path(out).write_text(json.dumps(entry), encoding="utf-8")
PY
}

write_manifest() {
  "$PYTHON" - "$MANIFEST" "$ENTRIES_DIR" <<'PY'
import json, sys
from pathlib import Path
from factory.jsonio import write_json_atomic
manifest, entries_dir = sys.argv[1], Path(sys.argv[2])
files = sorted(entries_dir.glob("*.json"), key=lambda p: int(p.stem))
write_json_atomic(manifest, [json.loads(p.read_text(encoding="utf-8")) for p in files])
PY
  echo "evidence manifest: $MANIFEST"
}

STAGES=(dry smoke real)
PROFILES=("$DRY_PROFILE" "$SMOKE_PROFILE" "$REAL_PROFILE")
for i in 0 1 2; do
  stage="${STAGES[$i]}"
  profile="${PROFILES[$i]}"
  run_id="${RUN_PREFIX}_${stage}_${TS}"
  deploy_flag=(--no-deploy)
  no_deploy=1
  if [[ "$stage" == "real" && "$ALLOW_REAL" == "1" ]]; then deploy_flag=(); no_deploy=0; fi
  echo "== stage $stage: profile=$profile run_id=$run_id no_deploy=$no_deploy"
  factory_rc=0
  "${FACTORY_ARGV[@]}" run --profile "$profile" --run-id "$run_id" "${deploy_flag[@]}" \
    --config "$CONFIG" --artifacts-dir "$ARTIFACTS_DIR" ${DATA_ARGS[@]+"${DATA_ARGS[@]}"} \
    ${EXTRA[@]+"${EXTRA[@]}"} || factory_rc=$?
  selection=""
  shopt -s nullglob
  found=("$ARTIFACTS_DIR"/*/run_"$run_id"/reports/selection.json)
  shopt -u nullglob
  if [[ ${#found[@]} -gt 0 ]]; then selection="${found[-1]}"; fi
  gate_rc=""
  if [[ "$factory_rc" -ne 0 ]]; then
    echo "stage $stage FAILED: factory exited $factory_rc" >&2
  elif [[ -z "$selection" ]]; then
    echo "stage $stage FAILED: no reports/selection.json for run $run_id under $ARTIFACTS_DIR" >&2
  else
    gate_rc=0
    PYTHONPATH="$REPO_DIR${PYTHONPATH:+:$PYTHONPATH}" \
      "$PYTHON" "$SCRIPT_DIR/validate_factory_selection_gate.py" --selection-json "$selection" --stage "$stage" \
      || gate_rc=$?
  fi
  PYTHONPATH="$REPO_DIR${PYTHONPATH:+:$PYTHONPATH}" record_entry "$i" "$stage" "$profile" "$run_id" "$selection" "$factory_rc" "$gate_rc" "$no_deploy"
  if [[ "$gate_rc" != "0" ]]; then
    PYTHONPATH="$REPO_DIR${PYTHONPATH:+:$PYTHONPATH}" write_manifest
    echo "stage gate FAILED at stage $stage" >&2
    exit 1
  fi
done
PYTHONPATH="$REPO_DIR${PYTHONPATH:+:$PYTHONPATH}" write_manifest
echo "stage gate OK: dry -> smoke -> real"
