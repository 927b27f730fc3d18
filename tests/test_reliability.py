"""Issue 18, in-process: out-of-space errors (named path, not retried, no temporary file left), gc of orphaned
temporary files, control characters kept out of human output and logs, honest image-bomb sizes, the exposed
``mmrag serve`` warning."""
from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from pathlib import Path

import pytest
import ray

from flows.cli.service import exposure_warning
from mmrag_core.service.guards import check_image
from mmrag_core.snapshot.retention import plan_gc, run_gc
from mmrag_core.storage.names import printable
from mmrag_core.storage.store import Store, is_temp_key
from tasks.artifacts import failure_rows, summary_markdown
from tasks.retries import disk_full, is_transient
from tasks.worker_logs import ConsoleSafety
from tests.synthetic_docs import make_doc, publish_docs
from tests.test_bad_inputs import png_header_only

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _ray_task_error(cause: BaseException) -> BaseException:
    error = ray.exceptions.RayTaskError("_run_shard_job_remote", "\x1b[36mTraceback ...\x1b[39m", cause)
    return error.as_instanceof_cause()


def test_disk_full_behind_a_ray_task_error_is_found_and_not_retried() -> None:
    cause = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/store/shards/text/1/index.faiss")
    wrapped = _ray_task_error(cause)
    assert isinstance(wrapped, OSError) and wrapped.errno is None  # what made it look transient before
    assert disk_full(wrapped) is cause
    assert not is_transient(wrapped)
    assert is_transient(_ray_task_error(ConnectionResetError(errno.ECONNRESET, "reset")))
    assert disk_full(RuntimeError("x")) is None and disk_full(OSError(errno.EIO, "io")) is None


def test_write_bytes_out_of_space_names_the_file_and_leaves_no_temp(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path / "store")
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(ENOSPC))
    with pytest.raises(OSError) as raised:
        store.write_bytes("docs/abc.parquet", b"x" * 1000)
    assert raised.value.errno == errno.ENOSPC
    assert raised.value.filename == str(tmp_path / "store" / "docs" / "abc.parquet")
    assert os.listdir(tmp_path / "store" / "docs") == []


def test_put_file_out_of_space_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path / "store")
    local = tmp_path / "index.faiss"
    local.write_bytes(b"y" * 5000)

    def half_copy(src: str, dst: str) -> None:
        Path(dst).write_bytes(Path(src).read_bytes()[:100])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src), None, str(dst))

    monkeypatch.setattr(shutil, "copyfile", half_copy)
    with pytest.raises(OSError) as raised:
        store.put_file(local, "shards/text/1/index.faiss")
    assert raised.value.filename == store.path("shards/text/1/index.faiss")
    assert os.listdir(tmp_path / "store" / "shards" / "text" / "1") == []


def test_temp_names() -> None:
    temp = ["docs/.abc.parquet.k3j_x9q2", "shards/t/1/.index.faiss.tmp-24731", "shards/t/1/index.faiss.tmp",
            "shards/t/1/index.faiss.refine.f16.npy.tmp.npy", ".LATEST.ab12cd34", "locks/.index.json.zz9_aa01"]
    real = ["docs/abc.parquet", "snapshots/1/manifest.json", "locks/index.json", "LATEST",
            "shards/t/1/index.faiss.refine.ids.npy", "lexical/1/vocab.index.json", "shards/t/1/shard.json"]
    assert all(is_temp_key(k) for k in temp) and not any(is_temp_key(k) for k in real)


def test_gc_removes_orphaned_temp_files_past_the_grace_period(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    publish_docs(store, [make_doc("a"), make_doc("b")])
    before = set(store.find(""))
    shard_dir = next(k for k in before if k.startswith("shards/")).rsplit("/", 1)[0]
    snap_dir = next(k for k in before if k.startswith("snapshots/")).rsplit("/", 1)[0]
    old = [f"{shard_dir}/.index.faiss.tmp-4242", f"{snap_dir}/.manifest.json.abcd1234", "docs/.x.parquet.q1w2e3r4",
           ".LATEST.zzzz9999", f"{shard_dir}/index.faiss.tmp"]
    young = ["docs/.y.parquet.tmp-77"]
    for key in old + young:
        store.write_bytes(key, b"partial")
    past = time.time() - 7200
    for key in old:
        os.utime(store.path(key), (past, past))
    plan = plan_gc(store, keep_last=5, keep_days=0, grace_seconds=3600)
    assert sorted(plan.temporary) == sorted(old)
    run_gc(store, plan)
    assert set(store.find("")) == before | set(young)  # every real object stays, the young temp file too
    assert plan_gc(store, keep_last=5, keep_days=0, grace_seconds=0).temporary == young


def test_printable_escapes_controls_only() -> None:
    assert printable("report 2024 — é.pdf") == "report 2024 — é.pdf"
    shown = printable("a\nb\rc\x1b[31mred\x07\u202efdp.exe")
    assert shown == "a\\nb\\rc\\x1b[31mred\\x07\\u202efdp.exe"
    assert not any(ord(c) < 32 or c == "\u202e" for c in shown)


def test_artifacts_and_failure_rows_escape_names() -> None:
    failures = [{"source_uri": "/c/evil\n| x |\x1b[2J.pdf", "page": None, "stage": "open", "reason": "bad\nreason"}]
    row = failure_rows(failures)[0]
    assert row["file"] == "/c/evil\\n| x |\\x1b[2J.pdf" and row["reason"] == "bad\\nreason"
    text = summary_markdown({"nothing_to_publish": True, "source": "/c/\x1b[31mred`", "failures": failures},
                            "/store\nforged")
    assert "\x1b" not in text and "/store\\nforged" in text and "\\x1b[31mred'" in text


def test_console_safety_filter(caplog: pytest.LogCaptureFixture) -> None:
    record = logging.LogRecord("tasks.extract", logging.INFO, __file__, 1, "extracted %s: %d pages",
                               ("/c/a\nINFO fake\x1b[0m", 3), None)
    assert ConsoleSafety().filter(record)
    assert record.getMessage() == "extracted /c/a\\nINFO fake\\x1b[0m: 3 pages"
    try:
        raise _ray_task_error(ENOSPC)
    except OSError:
        import sys

        exc_info = sys.exc_info()
    full = logging.LogRecord("prefect", logging.ERROR, __file__, 1, "failed", (), exc_info)
    ConsoleSafety().filter(full)
    assert full.exc_info is None  # the one line, not the remote traceback


def test_image_bomb_reports_its_real_size() -> None:
    from fastapi import HTTPException

    with pytest.raises(HTTPException) as bomb:  # over twice Pillow's limit: its DecompressionBombError path
        check_image(png_header_only(50_000, 50_000), 1_000_000, 25_000_000)
    assert bomb.value.status_code == 413
    assert "2,500,000,000 pixels" in bomb.value.detail and "625,000,050,000,001" not in bomb.value.detail
    with pytest.raises(HTTPException) as big:
        check_image(png_header_only(6000, 5000), 1_000_000, 25_000_000)
    assert big.value.status_code == 413 and "6000 x 5000 = 30,000,000 pixels" in big.value.detail


@pytest.mark.parametrize("host, loud", [("127.0.0.1", False), ("localhost", False), ("::1", False),
                                        ("[::1]", False), ("0.0.0.0", True), ("::", True), ("10.1.2.3", True),
                                        ("example.org", True)])
def test_serve_warns_on_an_exposed_address_without_a_token(host: str, loud: bool) -> None:
    warning = exposure_warning(host, has_token=False)
    assert (warning is not None) == loud
    if loud:
        assert "WARNING" in warning and "MMRAG_SERVICE_TOKEN" in warning and host in warning
    assert exposure_warning(host, has_token=True) is None
