"""kill -9 `mmrag index` at several stages and at a random moment, run it again, compare with an uninterrupted run.

Every process of the job (the CLI, Ray head and workers) is SIGKILLed together, at injected points
(MMRAG_CRASH_AT) and at a random moment; the runs report to a Prefect server that outlives them, as a
deployment's runs do. The resumed run must publish the same content: the same
documents with the same ids, the same items, the same search results; nothing lost, nothing twice.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmrag_core.storage.faults import kill_session
from mmrag_core.storage.store import Store
from tests.crash_job import visible_content

pytestmark = pytest.mark.slow

MMRAG = [sys.executable, "-m", "flows.cli"]
REPO = Path(__file__).resolve().parents[1]
CORPUS = [
    "pdfs/born_digital/financial_statement_notes.pdf",
    "pdfs/born_digital/tracemonkey_pldi09.pdf",
    "pdfs/born_digital/arxiv_2201.00069_p5_frbs.pdf",
    "images/coral/parrot.jpg",
]
# Stages in the order a cold run reaches them; each crash run gets further than the one before.
# The stages between (codec, snapshot files) are covered in-process, faster: tests/test_crash_points.py.
CRASH_SEQUENCE = ["record-written:2", "shard-files-written", "manifest-written"]


def _index(corpus: Path, store: Path, env: dict, crash_at: str | None = None) -> subprocess.CompletedProcess:
    run_env = {**env, "MMRAG_STORE": str(store)}
    run_env.pop("MMRAG_CRASH_AT", None)
    if crash_at:
        run_env["MMRAG_CRASH_AT"] = crash_at
    return subprocess.run(MMRAG + ["index", str(corpus), "--json"], env=run_env, cwd=REPO, capture_output=True,
                          text=True, timeout=900, start_new_session=True, check=False)


def _ok(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout[proc.stdout.index("{"):])


def _content(store: Path) -> dict:
    return visible_content(Store(store))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, test_data: Path, prefect_server) -> dict:
    base = tmp_path_factory.mktemp("crash")
    corpus = base / "corpus"
    corpus.mkdir()
    for rel in CORPUS:
        shutil.copy(test_data / rel, corpus)
    env = {**os.environ, "MMRAG_CLIP_MODEL": "off", "MMRAG_EXTRACT_BATCH_DOCS": "1",
           **prefect_server.env()}
    reference = base / "reference"
    _ok(_index(corpus, reference, env))
    return {"base": base, "corpus": corpus, "env": env, "reference": _content(reference)}


def test_resume_after_kills_at_every_stage(setup: dict) -> None:
    store = setup["base"] / "staged"
    for point in CRASH_SEQUENCE:
        proc = _index(setup["corpus"], store, setup["env"], point)
        assert proc.returncode == -9, f"no crash at {point}: rc={proc.returncode}\n{proc.stderr[-3000:]}"
    report = _ok(_index(setup["corpus"], store, setup["env"]))
    assert report["published"]
    assert report["manifest"]["stats"]["documents_processed"] == 0, "every record survived the crashes"
    assert _content(store) == setup["reference"]


def test_resume_after_a_kill_at_a_random_moment(setup: dict) -> None:
    store = setup["base"] / "random"
    delay = random.Random(os.environ.get("MMRAG_CRASH_SEED", time.time_ns())).uniform(4.0, 25.0)
    proc = subprocess.Popen(MMRAG + ["index", str(setup["corpus"])], env={**setup["env"], "MMRAG_STORE": str(store)},
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(delay)
    kill_session(proc.pid)
    proc.wait(timeout=60)
    _ok(_index(setup["corpus"], store, setup["env"]))
    assert _content(store) == setup["reference"], f"differs after a kill at {delay:.1f} s"
