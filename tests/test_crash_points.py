"""SIGKILL the indexing core at each stage of a publish (first build and incremental), run it again, and
compare with an uninterrupted run: the same items, ids, search results; nothing lost, nothing twice.

The job is tests/crash_job.py in a subprocess (synthetic vectors, IVF-PQ codec, no models), so each crash
costs seconds; tests/test_crash_resume.py does the same through the real CLI, Prefect and Ray.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmrag_core.storage.store import Store
from tests.crash_job import visible_content

REPO = Path(__file__).resolve().parents[1]
AFTER_FILES = ["shard-files-written", "snapshot-files-written", "manifest-written"]
# (step, point): a first build also trains codecs; an incremental run reuses them and trains none.
CASES = [(1, "codec-written")] + [(step, point) for step in (1, 2) for point in AFTER_FILES]


def _job(store: Path, step: int, crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MMRAG_CRASH_AT"}
    if crash_at:
        env["MMRAG_CRASH_AT"] = crash_at
    return subprocess.run([sys.executable, "-m", "tests.crash_job", str(store), str(step)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, start_new_session=True, check=False)


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Uninterrupted runs: the store after step 1 (kept for step-2 crashes) and each step's content."""
    base = tmp_path_factory.mktemp("crash-ref")
    store = base / "store"
    _ok(_job(store, 1))
    after_1 = visible_content(Store(store))
    shutil.copytree(store, base / "after-1")
    _ok(_job(store, 2))
    return {1: after_1, 2: visible_content(Store(store)), "after-1": base / "after-1"}


@pytest.mark.parametrize(("step", "point"), CASES)
def test_killed_and_resumed_equals_uninterrupted(reference: dict, tmp_path: Path, step: int, point: str) -> None:
    store = tmp_path / "store"
    if step == 2:
        shutil.copytree(reference["after-1"], store)
    crashed = _job(store, step, point)
    assert crashed.returncode == -9, f"did not die at {point}: {crashed.stderr[-2000:]}"
    _ok(_job(store, step))
    assert visible_content(Store(store)) == reference[step]
