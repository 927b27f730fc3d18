"""Run the real ``mmrag`` CLI from a benchmark and time the whole command."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def run_index(corpus: Path, store: Path) -> tuple[dict, float]:
    """Run ``mmrag index`` once; returns its run report and the command's wall time in seconds."""
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "index", str(corpus), "--store", str(store), "--json"],
                          env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"mmrag index failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout[proc.stdout.index("{"):]), wall
