"""Discovery: listing, include globs, hashing, limits, hidden files and duplicate content."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import mmrag_core.ingest.sources as sources
from mmrag_core.ingest.sources import DocRef, discover, local_path

INCLUDE = ["*.pdf", "*.png", "*.jpg"]


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    _write(root / "a.pdf", b"%PDF-1.7 document a")
    _write(root / "nested" / "deeper" / "b.png", b"\x89PNG image b")
    _write(root / "nested" / "C.PDF", b"%PDF-1.7 upper-case extension")
    _write(root / "nested" / "photo.JpG", b"\xff\xd8 jpeg")
    _write(root / "notes.docx", b"PK\x03\x04 word")
    _write(root / "README", b"no extension")
    _write(root / ".hidden.pdf", b"%PDF hidden file")
    _write(root / ".git" / "objects" / "x.pdf", b"%PDF inside a hidden folder")
    _write(root / "nested" / ".cache" / "y.png", b"hidden folder png")
    return root


def test_discovers_nested_files_with_sha256(corpus: Path) -> None:
    found = discover(str(corpus), INCLUDE, max_file_bytes=10_000)
    by_name = {d.name: d for d in found.docs}
    assert set(by_name) == {"a.pdf", "b.png", "C.PDF", "photo.JpG"}
    for d in found.docs:
        data = Path(d.uri).read_bytes()
        assert d.sha256 == _sha(data)
        assert d.size == len(data)
    assert Path(by_name["b.png"].uri) == corpus / "nested" / "deeper" / "b.png"
    assert found.duplicates == {}
    # deterministic order (sorted listing)
    assert [d.uri for d in found.docs] == sorted(d.uri for d in found.docs)


def test_include_globs_are_case_insensitive(corpus: Path) -> None:
    found = discover(str(corpus), ["*.PDF"], max_file_bytes=10_000)
    assert sorted(d.name for d in found.docs) == ["C.PDF", "a.pdf"]


def test_unsupported_files_are_failures(corpus: Path) -> None:
    found = discover(str(corpus), INCLUDE, max_file_bytes=10_000)
    failures = {Path(f.source_uri).name: f for f in found.failures}
    assert set(failures) == {"notes.docx", "README"}
    assert all(f.stage == "discover" for f in failures.values())
    assert "unsupported" in failures["notes.docx"].reason and ".docx" in failures["notes.docx"].reason
    assert "unsupported" in failures["README"].reason


def test_hidden_files_and_folders_are_ignored(corpus: Path) -> None:
    found = discover(str(corpus), ["*"], max_file_bytes=10_000)
    names = {d.name for d in found.docs} | {Path(f.source_uri).name for f in found.failures}
    assert ".hidden.pdf" not in names
    assert "x.pdf" not in names and "y.png" not in names
    assert not any("/." in d.uri for d in found.docs)
    assert {"a.pdf", "notes.docx", "README"} <= names


def test_source_inside_a_hidden_folder_still_works(tmp_path: Path) -> None:
    root = tmp_path / ".config" / "corpus"
    _write(root / "a.pdf", b"%PDF in a folder whose parent is hidden")
    assert [d.name for d in discover(str(root), INCLUDE, 10_000).docs] == ["a.pdf"]


def test_too_large_file_is_a_failure_and_not_hashed(corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = _write(corpus / "nested" / "big.pdf", b"x" * 5000)
    hashed: list[str] = []
    real = sources.sha256_stream

    def spy(fs, path: str, chunk_bytes: int = 1 << 20) -> str:  # noqa: ANN001
        hashed.append(path)
        return real(fs, path, chunk_bytes)

    monkeypatch.setattr(sources, "sha256_stream", spy)
    found = discover(str(corpus), INCLUDE, max_file_bytes=4999)
    (failure,) = [f for f in found.failures if Path(f.source_uri).name == "big.pdf"]
    assert failure.stage == "discover"
    assert "5000" in failure.reason and "4999" in failure.reason and "max_file_bytes" in failure.reason
    assert not any(Path(p) == big for p in hashed)
    assert "big.pdf" not in {d.name for d in found.docs}
    assert len(hashed) == len(found.docs)  # only accepted files were read
    # exactly at the limit is accepted
    assert "big.pdf" in {d.name for d in discover(str(corpus), INCLUDE, max_file_bytes=5000).docs}


def test_duplicate_content_is_one_doc(tmp_path: Path) -> None:
    data = b"%PDF same bytes"
    first = _write(tmp_path / "a" / "report.pdf", data)
    second = _write(tmp_path / "b" / "copy of report.pdf", data)
    _write(tmp_path / "c.pdf", b"%PDF other bytes")
    found = discover(str(tmp_path), INCLUDE, 10_000)
    shas = [d.sha256 for d in found.docs]
    assert len(found.docs) == 2 and len(set(shas)) == 2
    assert _sha(data) in shas
    assert found.duplicates == {str(second): str(first)}  # sorted order: a/ is kept, b/ is the duplicate
    assert str(second) not in {d.uri for d in found.docs}


def test_single_file_source(tmp_path: Path) -> None:
    path = _write(tmp_path / "only.png", b"\x89PNG single")
    found = discover(str(path), INCLUDE, 10_000)
    assert found.docs == [DocRef(uri=str(path), size=len(b"\x89PNG single"), sha256=_sha(b"\x89PNG single"))]
    assert found.failures == [] and found.duplicates == {}


def test_single_unsupported_file_source(tmp_path: Path) -> None:
    path = _write(tmp_path / "doc.txt", b"text")
    found = discover(str(path), INCLUDE, 10_000)
    assert found.docs == []
    assert [(f.source_uri, f.stage) for f in found.failures] == [(str(path), "discover")]


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="source not found"):
        discover(str(tmp_path / "nope"), INCLUDE, 10_000)


def test_empty_folder(tmp_path: Path) -> None:
    found = discover(str(tmp_path), INCLUDE, 10_000)
    assert (found.docs, found.failures, found.duplicates) == ([], [], {})


def test_file_url_source(corpus: Path) -> None:
    found = discover(f"file://{corpus}", INCLUDE, 10_000)
    assert {d.name for d in found.docs} == {"a.pdf", "b.png", "C.PDF", "photo.JpG"}


def test_sha256_stream_chunks(tmp_path: Path) -> None:
    import fsspec

    data = bytes(range(256)) * 100
    path = _write(tmp_path / "f.bin", data)
    fs = fsspec.filesystem("file")
    assert sources.sha256_stream(fs, str(path), chunk_bytes=7) == _sha(data)


def test_local_path_is_the_file_itself_for_local_uris(tmp_path: Path) -> None:
    f = tmp_path / "a.pdf"
    f.write_bytes(b"%PDF-1.4")
    with local_path(str(f)) as p:
        assert p == str(f)
    assert f.exists()


def test_local_path_copies_remote_files_and_cleans_up() -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/doc.pdf", b"%PDF-1.7 remote bytes")
    with local_path("memory://bucket/doc.pdf") as p:
        assert p.endswith(".pdf") and Path(p).read_bytes() == b"%PDF-1.7 remote bytes"
    assert not Path(p).exists()


def test_empty_files_are_refused_at_discovery(tmp_path: Path) -> None:
    _write(tmp_path / "empty.pdf", b"")
    _write(tmp_path / "a.pdf", b"%PDF not empty")
    found = discover(str(tmp_path), INCLUDE, max_file_bytes=10_000)
    assert [d.name for d in found.docs] == ["a.pdf"]
    [failure] = found.failures
    assert Path(failure.source_uri).name == "empty.pdf"
    assert (failure.stage, failure.reason) == ("discover", "empty file (0 bytes)")


def _links(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "good.pdf").write_bytes(b"%PDF-1.4 good")
    (src / "dangling.pdf").symlink_to(tmp_path / "nowhere.pdf")
    (src / "loop1.pdf").symlink_to(src / "loop2.pdf")
    (src / "loop2.pdf").symlink_to(src / "loop1.pdf")
    (src / "folder-link").symlink_to(src / "sub")
    (src / "sub" / "up").symlink_to(src)  # a folder loop
    return src


def test_broken_and_looping_links_are_failures_and_the_rest_is_found(tmp_path: Path) -> None:
    src = _links(tmp_path)
    d = discover(str(src), ["*.pdf"], 10_000)
    assert [x.uri for x in d.docs] == [str(src / "good.pdf")]
    reasons = {Path(f.source_uri).name: f.reason for f in d.failures}
    assert reasons["dangling.pdf"].startswith("broken symbolic link")
    assert reasons["loop1.pdf"].startswith("symbolic link loop")
    assert reasons["loop2.pdf"].startswith("symbolic link loop")
    assert reasons["folder-link"].startswith("symbolic link to a folder")  # not "unsupported file type '.(none)'"
    assert reasons["up"].startswith("symbolic link to a folder")
    assert all(f.stage == "discover" for f in d.failures)


UNREADABLE_SCRIPT = """
import json, sys
from mmrag_core.ingest.sources import discover
d = discover(sys.argv[1], ["*.pdf"], 10_000)
print(json.dumps({"docs": [x.uri for x in d.docs], "failures": {f.source_uri: f.reason for f in d.failures}}))
"""


def test_an_unreadable_file_is_a_failure_for_an_unprivileged_process(tmp_path: Path) -> None:
    """As root, the check runs in a child without the capabilities that let root read any file."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    src = tmp_path / "src"
    src.mkdir()
    (src / "good.pdf").write_bytes(b"%PDF-1.4 good")
    (src / "secret.pdf").write_bytes(b"%PDF-1.4 secret")
    (src / "secret.pdf").chmod(0)
    cmd = [sys.executable, "-c", UNREADABLE_SCRIPT, str(src)]
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: cannot drop the capability to read any file")
        cmd = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["docs"] == [str(src / "good.pdf")]
    assert result["failures"][str(src / "secret.pdf")].startswith("permission denied")
