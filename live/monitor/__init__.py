"""`trader monitor`: a read-only live desk over the trading DBs (OPS_RUNBOOK "Services Reference").

`snapshot` turns one trading DB into a JSON-ready dict (pure reads through a `mode=ro` connection,
so the monitor can never move money or corrupt a DB it watches); `metrics` renders those dicts as
Prometheus text; `server` serves them with the security rules of spec/reference/runtime.md §7.
"""
