"""Prefect flows: thin orchestration over `pipeline` and `sla` functions.

Importing this package sets Prefect's defaults for a self-hosted, offline install before Prefect is
imported: its home under TRIAGE_HOME (never ~/.prefect by surprise), no telemetry, and a start-up
limit for the ephemeral API server that a loaded 2-core machine can meet. Explicit settings win.
"""

from __future__ import annotations

import os
from pathlib import Path

_home = Path(os.environ.get("TRIAGE_HOME", ".triage")).resolve()
os.environ.setdefault("PREFECT_HOME", str(_home / "prefect"))
# Prefect only warns when its home's parent is missing (a fresh install): make it.
Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
