"""Cold start of the embedded default (issue 20): a small job runs in the CLI's own process (no Ray, no model
actors), its models loading while Prefect's temporary API starts. That path must publish the same snapshot as
the Ray path, and its Prefect flow run must still be recorded. Both runs go through the real CLI with the
embedded (temporary) Prefect API, real tesseract, MiniLM and a tiny real-architecture CLIP."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pymupdf
import pytest

from mmrag_core.config import load_settings
from mmrag_core.ingest.sources import DocRef
from mmrag_core.snapshot.open import load_manifest, read_table
from mmrag_core.storage.records import read_record
from mmrag_core.storage.store import open_store
from tasks.small_jobs import runs_in_process
from tests.tiny_models import make_tiny_clip

MMRAG = [sys.executable, "-m", "flows.cli"]
REPO = Path(__file__).resolve().parents[1]


def _small_corpus(folder: Path, test_data: Path) -> Path:
    """4 pages: 2 born-digital (one PDF page twice over, as a 2-page PDF), 1 scanned (OCR) and an image."""
    folder.mkdir(parents=True)
    born = pymupdf.open()
    for _ in range(2):
        born.insert_pdf(pymupdf.open(test_data / "pdfs/born_digital/financial_statement_notes.pdf"))
    born.save(folder / "notes_twice.pdf")
    shutil.copy(test_data / "pdfs/scanned/scan_huckfinn_ch2_p22.pdf", folder / "scan.pdf")
    shutil.copy(test_data / "images/coral/parrot.jpg", folder / "parrot.jpg")
    return folder


def _index(corpus: Path, base: Path, name: str, clip: Path, extra_env: dict[str, str]) -> dict:
    """``mmrag index`` into a new store with its own Prefect home (the embedded temporary API)."""
    (base / name).mkdir()  # Prefect creates its home, not the folders above it
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MMRAG_SMALL_JOB_PAGES")}
    env.update({"MMRAG_STORE": str(base / name / "store"), "PREFECT_HOME": str(base / name / "prefect"),
                "MMRAG_CLIP_MODEL": f"local-dir:{clip}", **extra_env})
    proc = subprocess.run([*MMRAG, "index", str(corpus), "--json"], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"mmrag index failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert report["published"]
    return {"report": report, "store": base / name / "store", "prefect_home": base / name / "prefect",
            "stderr": proc.stderr}


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory, test_data: Path) -> dict[str, dict]:
    """The same corpus indexed in process (the default for 4 pages) and on Ray (``small_job_pages=0``)."""
    base = tmp_path_factory.mktemp("cold")
    corpus = _small_corpus(base / "corpus", test_data)
    clip = make_tiny_clip(base / "clip")
    return {"in_process": _index(corpus, base, "in_process", clip, {}),
            "ray": _index(corpus, base, "ray", clip, {"MMRAG_SMALL_JOB_PAGES": "0"})}


def test_each_run_took_its_path(both: dict[str, dict]) -> None:
    assert both["in_process"]["report"]["manifest"]["stats"]["in_process"] is True
    assert both["ray"]["report"]["manifest"]["stats"]["in_process"] is False
    assert "in this process" in both["in_process"]["stderr"]
    assert "Ray and the encoders ready" in both["ray"]["stderr"]


def test_in_process_snapshot_matches_the_ray_snapshot(both: dict[str, dict]) -> None:
    """Same models, record key, counts, spaces, items table, and per document the same items and vectors."""
    a, b = (both[k]["report"]["manifest"] for k in ("in_process", "ray"))
    assert a["models"] == b["models"] and "skipped" not in a["models"]["image"]
    assert a["record_key"] == b["record_key"] and a["config_key"] == b["config_key"]
    assert a["counts"] == b["counts"] and a["counts"]["items_by_kind"].get("image")
    assert a["stats"]["ocr_pages"] == b["stats"]["ocr_pages"] >= 1  # the scanned page (and the image) OCR'd
    for space in ("text", "image"):
        assert {k: a["spaces"][space][k] for k in ("count", "dim", "index_type")} == \
               {k: b["spaces"][space][k] for k in ("count", "dim", "index_type")}
    stores = [open_store(load_settings(store=str(both[k]["store"]))) for k in ("in_process", "ray")]
    items = [read_table(s, load_manifest(s), "items.parquet").to_pylist() for s in stores]
    assert items[0] == items[1]
    shas = sorted({row["doc_sha256"] for row in items[0]})
    assert len(shas) == 3
    for sha in shas:
        ra, rb = (read_record(s, sha) for s in stores)
        assert ra.record_key == rb.record_key and ra.failures == rb.failures
        vec_columns = [c for c in ra.table.column_names if c.startswith("vec_")]
        assert ra.table.drop_columns(vec_columns).equals(rb.table.drop_columns(vec_columns))
        for col in vec_columns:
            va, vb = ra.table.column(col).to_pylist(), rb.table.column(col).to_pylist()
            assert [v is None for v in va] == [v is None for v in vb]
            for x, y in zip(va, vb):
                if x is not None:  # torch's thread count differs between the paths: last-bit differences only
                    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5)


def test_the_in_process_flow_run_is_recorded(both: dict[str, dict]) -> None:
    """The temporary API started ahead of the run is the one the flow run reported to: its database holds
    a completed 'index' run, with the extraction log the in-process batch replayed into it."""
    for path in ("in_process", "ray"):
        with sqlite3.connect(both[path]["prefect_home"] / "prefect.db") as db:
            runs = db.execute("select r.id, r.state_type from flow_run r join flow f on f.id = r.flow_id "
                              "where f.name = 'index'").fetchall()
            assert [state for _, state in runs] == ["COMPLETED"], path
            logs = [m for (m,) in db.execute("select message from log where flow_run_id = ?", (runs[0][0],))]
        assert any("extracted" in m and "scan.pdf" in m for m in logs), path
        assert any("published snapshot" in m for m in logs), path


def test_small_job_choice(tmp_path: Path, test_data: Path) -> None:
    """Pages are counted (an image is one), up to ``small_job_pages``; 0, a Ray cluster or a remote source
    means Ray."""
    corpus = _small_corpus(tmp_path / "c", test_data)
    docs = [DocRef(str(p), p.stat().st_size, p.name) for p in sorted(corpus.iterdir())]
    assert runs_in_process(docs, load_settings(small_job_pages=4))
    assert not runs_in_process(docs, load_settings(small_job_pages=3))
    assert not runs_in_process(docs, load_settings(small_job_pages=0))
    assert not runs_in_process(docs, load_settings(small_job_pages=20, ray_address="127.0.0.1:6379"))
    assert not runs_in_process([DocRef("s3://bucket/a.pdf", 10, "x")], load_settings(small_job_pages=20))
