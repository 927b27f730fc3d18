"""Two `mmrag index` runs on one store at once: one indexes, the other exits at once with a clear message;
the store stays valid. (Waiting for the lock instead, MMRAG_LOCK_WAIT_SECONDS, is tested in test_lock.py.)"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import main as mmrag_main

pytestmark = pytest.mark.slow

MMRAG = [sys.executable, "-m", "flows.cli"]
REPO = Path(__file__).resolve().parents[1]
DOCS = ["pdfs/born_digital/financial_statement_notes.pdf", "pdfs/born_digital/styled_table.pdf"]


def _start(corpus: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(MMRAG + ["index", str(corpus), "--json"], env=env, cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_two_runs_on_one_store(tmp_path: Path, test_data: Path, prefect_server) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for rel in DOCS:
        shutil.copy(test_data / rel, corpus)
    store = tmp_path / "store"
    env = {**os.environ, "MMRAG_STORE": str(store), "MMRAG_CLIP_MODEL": "off", **prefect_server.env()}
    runs = [_start(corpus, env), _start(corpus, env)]
    outcomes = [(p.wait(timeout=900), *p.communicate()) for p in runs]
    assert sorted(rc for rc, _, _ in outcomes) == [0, 3], [err[-2000:] for _, _, err in outcomes]
    loser = next(err for rc, _, err in outcomes if rc == 3)
    assert "is locked by mmrag index" in loser and "another run is writing to it" in loser
    winner = next(out for rc, out, _ in outcomes if rc == 0)
    assert json.loads(winner[winner.index("{"):])["published"]
    assert len(list((store / "snapshots").iterdir())) == 1
    assert mmrag_main(["snapshots", "verify", "--all", "--store", str(store)]) == 0
    assert not (store / "locks" / "index.json").exists()
