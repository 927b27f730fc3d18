"""End to end through the real CLI: Prefect flow, local Ray, tesseract, MiniLM, a tiny real-architecture
CLIP, FAISS, a published snapshot, and queries against it."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pymupdf
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.textmetrics import cer
from tests.tiny_models import make_tiny_clip

pytestmark = pytest.mark.slow

MMRAG = [sys.executable, "-m", "flows.cli"]
REPO = Path(__file__).resolve().parents[1]

GOOD = {
    "pdfs/born_digital/tracemonkey_pldi09.pdf": "born",
    "pdfs/born_digital/financial_statement_notes.pdf": "born",
    "pdfs/scanned/scan_huckfinn_ch2_p22.pdf": "scanned",
    "pdfs/scanned/scan_linn_rotated_4ways.pdf": "scanned",
    "ocr/tesseract_test/phototest.tif": "image",
    "images/coral/parrot.jpg": "image",
}
BAD = {
    "empty.pdf": "empty",
    "corrupt.pdf": "damaged|not a valid|corrupt|cannot open|broken",
    "truncated.pdf": "damaged|truncat|repair",
    "encrypted.pdf": "encrypted",
    "notes.docx": "unsupported",
    "huge.png": "pixels",
}


def _plant_bad_files(folder: Path, a_pdf: Path) -> None:
    (folder / "empty.pdf").write_bytes(b"")
    (folder / "corrupt.pdf").write_bytes(b"%PDF-1.7\n" + os.urandom(4000))
    data = a_pdf.read_bytes()
    (folder / "truncated.pdf").write_bytes(data[: len(data) // 2])
    doc = pymupdf.open(a_pdf)
    doc.save(folder / "encrypted.pdf", encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="u", owner_pw="o")
    (folder / "notes.docx").write_bytes(b"PK\x03\x04 not really a document")
    Image.new("1", (9000, 9000), 1).save(folder / "huge.png")  # 81 Mpx > the 64 Mpx default limit


def _run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(MMRAG + args, env=env, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"mmrag {args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, test_data: Path) -> dict:
    """Index a mixed corpus with planted bad files once; the tests below read the result."""
    base = tmp_path_factory.mktemp("e2e")
    corpus = base / "corpus"
    (corpus / "nested").mkdir(parents=True)
    for rel in GOOD:
        shutil.copy(test_data / rel, corpus / ("nested" if "scanned" in rel else "") / Path(rel).name)
    _plant_bad_files(corpus, test_data / "pdfs/born_digital/financial_statement_notes.pdf")
    env = {
        **os.environ,
        "MMRAG_STORE": str(base / "store"),
        "MMRAG_CLIP_MODEL": f"local-dir:{make_tiny_clip(base / 'clip')}",
        "PREFECT_HOME": str(base / "prefect"),
    }
    proc = _run(["index", str(corpus), "--json"], env)
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert report["published"]
    return {"base": base, "corpus": corpus, "env": env, "manifest": report["manifest"], "stderr": proc.stderr}


def _items(run: dict):
    store = Path(run["env"]["MMRAG_STORE"])
    return pq.read_table(store / "snapshots" / run["manifest"]["id"] / "items.parquet").to_pylist()


def test_snapshot_is_published_and_latest(run: dict) -> None:
    store = Path(run["env"]["MMRAG_STORE"])
    m = run["manifest"]
    assert (store / "LATEST").read_text().strip() == m["id"]
    assert set(m["spaces"]) == {"text", "image"}
    assert m["models"]["text"]["name"] == "all-MiniLM-L6-v2" and m["models"]["text"]["weights_sha256"]
    assert m["models"]["image"]["weights_sha256"], "the tiny CLIP's checksum is recorded"
    assert m["counts"]["documents"] == len(GOOD)
    for name in ("items.parquet", "failures.parquet", "catalog.parquet", "tombstones.npy"):
        assert f"snapshots/{m['id']}/{name}" in m["files"]
    for space in ("text", "image"):
        assert [k for k in m["files"] if k.startswith(f"shards/{space}/") and k.endswith("/index.faiss")]
        assert m["spaces"][space]["recall_at_10"] == 1.0, "a corpus this small gets an exact index"


def test_every_page_has_items(run: dict) -> None:
    pages_seen: dict[str, set[int]] = {}
    for it in _items(run):
        pages_seen.setdefault(Path(it["source_uri"]).name, set()).add(it["page"])
    for rel in GOOD:
        name = Path(rel).name
        n_pages = pymupdf.open(run["corpus"] / ("nested" if "scanned" in rel else "") / name).page_count
        if name.endswith(".pdf"):
            assert pages_seen.get(name) == set(range(n_pages)), name
        else:
            assert pages_seen.get(name) == {0}, name


def test_scanned_pages_were_ocrd(run: dict, test_data: Path) -> None:
    items = _items(run)
    for name in ("scan_huckfinn_ch2_p22.pdf", "scan_linn_rotated_4ways.pdf"):
        ocr = [it for it in items if Path(it["source_uri"]).name == name and it["text_source"] == "ocr"]
        assert ocr and all(it["ocr_confidence"] > 50 for it in ocr), name
    assert run["manifest"]["stats"]["ocr_pages"] >= 5
    photo = next(it for it in items if it["kind"] == "image" and it["source_uri"].endswith("phototest.tif"))
    reference = (test_data / "ocr/tesseract_test/phototest.gold.txt").read_text()
    assert cer(photo["text"], reference) < 0.02


def test_a_normal_run_logs_no_noise(run: dict) -> None:
    """Output that is not a terminal: no colour codes, no DEBUG lines, no Ray token notice, no telemetry error."""
    err = run["stderr"]
    assert "\x1b[" not in err
    assert not [ln for ln in err.splitlines() if "| DEBUG" in ln or " DEBUG " in ln]
    assert "Token authentication is enabled" not in err and "Failed to send telemetry" not in err


def test_failures_list_each_planted_file(run: dict) -> None:
    failures = {Path(f["source_uri"]).name: f for f in run["manifest"]["failures"]}
    for name, reason in BAD.items():
        assert name in failures, f"{name} missing from failures: {sorted(failures)}"
        assert re.search(reason, failures[name]["reason"], re.I), failures[name]
        assert failures[name]["stage"]
    assert run["manifest"]["counts"]["failures"] >= len(BAD)


def test_query_sentence_finds_its_page(run: dict) -> None:
    pdf = run["corpus"] / "tracemonkey_pldi09.pdf"
    page_no = 3
    text = " ".join(pymupdf.open(pdf)[page_no].get_text().split())
    sentence = max(re.split(r"(?<=[.!?])\s+", text)[3:20], key=len)
    proc = _run(["query", sentence, "--json", "-k", "5"], run["env"])
    hits = json.loads(proc.stdout[proc.stdout.index("{"):])["hits"]
    assert hits[0]["source_uri"].endswith("tracemonkey_pldi09.pdf") and hits[0]["page"] == page_no, hits[0]
    for field in ("score", "kind", "source_uri", "page", "bbox", "snippet"):
        assert field in hits[0]


def test_image_query_hits_the_image_space(run: dict) -> None:
    proc = _run(["query", "--image", str(run["corpus"] / "parrot.jpg"), "--json", "-k", "3"], run["env"])
    hits = json.loads(proc.stdout[proc.stdout.index("{"):])["hits"]
    assert hits[0]["source_uri"].endswith("parrot.jpg") and hits[0]["kind"] == "image"
    assert hits[0]["similarities"]["image:image"] > 0.99


def test_unchanged_rerun_publishes_nothing(run: dict) -> None:
    proc = _run(["index", str(run["corpus"]), "--json"], run["env"])
    second = json.loads(proc.stdout[proc.stdout.index("{"):])
    discovered = len(GOOD) + len(BAD) - 2  # the .docx and the empty file are refused by the listing, not extracted
    assert run["manifest"]["stats"]["changes"]["added"] == discovered
    assert second["published"] is False and second["snapshot"] == run["manifest"]["id"]
    assert second["changes"] == {"added": 0, "changed": 0, "removed": 0, "unchanged": discovered}
    skipped = sum(reason == "unsupported" for reason in BAD.values())  # listed, counted as skipped, not failed
    assert run["manifest"]["counts"]["documents_failed"] == len(BAD) - skipped, "bad files are remembered, not retried"
    assert (Path(run["env"]["MMRAG_STORE"]) / "LATEST").read_text().strip() == run["manifest"]["id"]
    # The CLI checked without starting a flow; the flow itself (as a deployment runs it) agrees.
    assert second["flow_run"] is None
    code = ("import json, sys; from flows.index_flow import index_flow; "
            "print(json.dumps(index_flow(sys.argv[1], sys.argv[2])['changes']))")
    proc = subprocess.run([sys.executable, "-c", code, str(run["corpus"]), run["env"]["MMRAG_STORE"]],
                          env=run["env"], cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == second["changes"]
    assert (Path(run["env"]["MMRAG_STORE"]) / "LATEST").read_text().strip() == run["manifest"]["id"]


def test_strict_exits_nonzero_on_failures(run: dict) -> None:
    corpus = run["base"] / "strict"
    corpus.mkdir()
    shutil.copy(run["corpus"] / "financial_statement_notes.pdf", corpus)
    (corpus / "empty.pdf").write_bytes(b"")
    env = {**run["env"], "MMRAG_STORE": str(run["base"] / "strict-store"), "MMRAG_CLIP_MODEL": "off"}
    proc = subprocess.run(MMRAG + ["index", str(corpus), "--strict"], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "empty file" in proc.stdout
    said = (proc.stdout + proc.stderr).count("CLIP disabled")
    assert said == 1, f"the image space skipped is said once, not {said} times:\n{proc.stderr[-3000:]}"
    assert (run["base"] / "strict-store" / "LATEST").is_file(), "the good document is still published"


def test_nothing_indexed_publishes_nothing(run: dict) -> None:
    corpus = run["base"] / "all-bad"
    corpus.mkdir()
    (corpus / "empty.pdf").write_bytes(b"")
    env = {**run["env"], "MMRAG_STORE": str(run["base"] / "empty-store")}
    proc = subprocess.run(MMRAG + ["index", str(corpus)], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 1
    assert "nothing to publish" in proc.stderr and "empty file" in proc.stderr
    assert not (run["base"] / "empty-store" / "LATEST").exists()


def test_add_and_remove_a_document(run: dict) -> None:
    """Runs last: it changes the corpus. The removed document never comes back; only the new one is processed."""
    removed = run["corpus"] / "tracemonkey_pldi09.pdf"
    sentence = " ".join(pymupdf.open(removed)[3].get_text().split())[200:420]
    shutil.move(removed, run["base"] / "tracemonkey_pldi09.pdf")
    shutil.copy(run["corpus"] / "financial_statement_notes.pdf", run["corpus"] / "notes_copy_renamed.pdf")
    (run["corpus"] / "sign.png").write_bytes(_sign_png())
    proc = _run(["index", str(run["corpus"]), "--json"], run["env"])
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    m = report["manifest"]
    assert report["published"] and m["parent"] == run["manifest"]["id"]
    assert report["changes"]["removed"] == 1 and report["changes"]["added"] == 1
    assert any(u.endswith("notes_copy_renamed.pdf") for u in m["stats"]["duplicates"]), "same bytes: a duplicate"
    assert m["stats"]["documents_processed"] == 1, "only the new image is extracted and embedded"
    text_before, text = run["manifest"]["spaces"]["text"], m["spaces"]["text"]
    assert text["count"] < text_before["count"] and len(text["shards"]) == 1, "no new text; tracemonkey's is dead"
    # tracemonkey held over 20 % of the vectors: past compact_tombstone_fraction, so the run compacted.
    assert m["compacted"] and m["tombstones"] == 0 and text["stored"] == text["count"]
    proc = _run(["query", sentence, "--json", "-k", "50"], run["env"])
    hits = json.loads(proc.stdout[proc.stdout.index("{"):])["hits"]
    assert hits and not [h for h in hits if h["source_uri"].endswith("tracemonkey_pldi09.pdf")]


def _sign_png() -> bytes:
    import io

    from PIL import ImageDraw

    img = Image.new("RGB", (400, 120), "white")
    ImageDraw.Draw(img).text((20, 40), "HARBOUR MARKET OPEN DAILY", fill="black")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()
