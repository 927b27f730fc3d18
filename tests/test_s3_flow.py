"""The indexing flow with both the source and the store on a real S3 API (SeaweedFS on 127.0.0.1), through
the CLI: Ray workers read the documents from S3, shards and snapshots are written there, queries read them
back through the local cache."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import s3fs

pytestmark = pytest.mark.slow

MMRAG = [sys.executable, "-m", "flows.cli"]
REPO = Path(__file__).resolve().parents[1]
DOCS = ["pdfs/born_digital/financial_statement_notes.pdf", "pdfs/born_digital/styled_table.pdf",
        "images/coral/parrot.jpg"]


def _mmrag(args: list[str], env: dict) -> dict:
    proc = subprocess.run(MMRAG + [*args, "--json"], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=900, check=False)
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout[proc.stdout.index("{"):])


def test_index_and_query_on_s3(s3_env, s3_bucket: str, test_data: Path, tmp_path: Path,
                               prefect_server) -> None:
    fs = s3fs.S3FileSystem(**s3_env.storage_options())
    for rel in DOCS:
        fs.put_file(str(test_data / rel), f"{s3_bucket}/src/{Path(rel).name}")
    source, store = f"s3://{s3_bucket}/src", f"s3://{s3_bucket}/index"
    env = {**os.environ, "MMRAG_STORE": store, "MMRAG_S3_ENDPOINT_URL": s3_env.endpoint_url,
           "MMRAG_CLIP_MODEL": "off", "MMRAG_CACHE_DIR": str(tmp_path / "cache"),
           # the removed document is a large share of this small index: keep its ids tombstoned, not compacted away
           "MMRAG_COMPACT_TOMBSTONE_FRACTION": "0.9",
           **prefect_server.env()}

    first = _mmrag(["index", source], env)
    m = first["manifest"]
    assert first["published"] and m["counts"]["documents"] == len(DOCS)
    assert all(i["source_uri"].startswith(f"s3://{s3_bucket}/src/") for i in m["failures"]) or not m["failures"]
    assert fs.exists(f"{s3_bucket}/index/LATEST") and fs.exists(f"{s3_bucket}/index/snapshots/{m['id']}/manifest.json")
    assert all(fs.exists(f"{s3_bucket}/index/{key}") for key in m["files"])

    fs.rm_file(f"{s3_bucket}/src/styled_table.pdf")
    second = _mmrag(["index", source], env)
    assert second["published"] and second["changes"]["removed"] == 1 and second["manifest"]["tombstones"] > 0
    assert second["manifest"]["stats"]["documents_processed"] == 0

    hits = _mmrag(["query", "notes to the financial statements", "-k", "50"], env)["hits"]
    assert hits and hits[0]["source_uri"] == f"s3://{s3_bucket}/src/financial_statement_notes.pdf"
    assert not [h for h in hits if h["source_uri"].endswith("styled_table.pdf")]
