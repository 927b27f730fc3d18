"""``mmrag index`` stopped by SIGTERM, and out of space: it ends at once with one clear line, exit 143 (or 4),
the store lock released, no process of its session left, and nothing behind that gc cannot remove."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmrag_core.storage.faults import kill_session, session_pids
from mmrag_core.storage.store import Store, is_temp_key

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
MMRAG = [sys.executable, "-m", "flows.cli"]


def _corpus(folder: Path, n: int = 6) -> Path:
    import pymupdf

    folder.mkdir(parents=True)
    for d in range(n):
        with pymupdf.open() as pdf:
            for p in range(3):
                pdf.new_page().insert_textbox(pymupdf.Rect(72, 72, 540, 700), f"Document {d} page {p}. "
                                              + "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 40,
                                              fontsize=9)
            pdf.save(folder / f"doc{d}.pdf")
    return folder


def _env(prefect_server, store: Path) -> dict:
    # 18 pages would be a small job, done in the CLI's process; these tests stop Ray and its workers too.
    return {**os.environ, **prefect_server.env(), "MMRAG_STORE": str(store), "MMRAG_CLIP_MODEL": "off",
            "MMRAG_EXTRACT_BATCH_DOCS": "1", "MMRAG_SMALL_JOB_PAGES": "0"}


def test_sigterm_stops_cleanly(tmp_path: Path, prefect_server) -> None:
    corpus = _corpus(tmp_path / "corpus")
    store = tmp_path / "store"
    env = _env(prefect_server, store)
    err = tmp_path / "stderr.txt"
    with open(err, "w") as stderr:
        proc = subprocess.Popen(MMRAG + ["index", str(corpus)], env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=stderr, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while "docs," not in err.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # until the first batch is done: Ray, its workers and the encoders are running
        assert proc.poll() is None, err.read_text()[-3000:]
        assert len(session_pids(proc.pid)) > 3  # the CLI, Ray's head processes and workers
        os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=90)
    finally:
        kill_session(proc.pid) if proc.poll() is None else None
    text = err.read_text()
    assert code == 143, text[-3000:]
    assert "Traceback" not in text and "C++" not in text and "SIGABRT" not in text
    last = text.strip().splitlines()[-1]
    assert last.startswith("mmrag index: stopped by SIGTERM") and "store lock released" in last, last
    assert "the next run reuses them" in last
    time.sleep(1)
    assert session_pids(proc.pid) == [], "processes of the stopped run are left"
    assert not (store / "locks" / "index.json").exists()
    rerun = subprocess.run(MMRAG + ["index", str(corpus), "--json"], env=env, cwd=REPO, capture_output=True,
                           text=True, timeout=600, start_new_session=True, check=False)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert '"documents_reused": 0' not in rerun.stdout  # what the stopped run kept was reused


def _tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                           capture_output=True, check=False).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root): no disk to fill")


def test_out_of_space_fails_fast_with_one_clear_line_and_gc_cleans_up(tmp_path: Path, prefect_server) -> None:
    corpus = _corpus(tmp_path / "corpus")
    store = tmp_path / "store"
    _tmpfs(store, "200k")  # room for the records, not for the shards
    try:
        env = _env(prefect_server, store)
        proc = subprocess.run(MMRAG + ["index", str(corpus)], env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=600, start_new_session=True, check=False)
        assert proc.returncode == 4, proc.stderr[-4000:]
        lines = proc.stderr.strip().splitlines()
        message = next(line for line in lines if line.startswith("mmrag index: out of space"))
        assert f"writing {store}/" in message and "is full" in message and "kept 6 document record(s)" in message
        assert "\x1b" not in proc.stderr and "Traceback" not in proc.stderr and "RayTaskError" not in proc.stderr
        assert "Retry" not in proc.stderr  # out of space is not retried
        assert not (store / "locks" / "index.json").exists()
        # a writer killed mid-write leaves temporary files; gc removes them once past its grace period
        leftover = store / "docs" / ".deadbeef.parquet.tmp-999"
        leftover.write_bytes(b"partial")
        os.utime(leftover, (time.time() - 7200, time.time() - 7200))
        gc = subprocess.run(MMRAG + ["snapshots", "gc", "--grace-seconds", "3600"], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=300, check=False)
        assert gc.returncode == 0, gc.stderr[-3000:]
        assert "1 orphaned temporary file(s)" in gc.stdout
        assert not [k for k in Store(store).find("") if is_temp_key(k)]
    finally:
        subprocess.run(["umount", "-l", str(store)], check=False)
