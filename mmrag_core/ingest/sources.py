"""Discover the documents of a source (a folder or a single file, through fsspec) and hash them.

Hashing streams the bytes (sha256), so a document's identity is its content: renamed or copied
files are recognised, and unchanged files are never extracted twice.
"""
from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import fsspec

from mmrag_core.storage.items import Failure


@dataclass(frozen=True)
class DocRef:
    """A document found in the source."""

    uri: str
    size: int
    sha256: str

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]


@dataclass
class Discovery:
    """What a listing found: documents to index, files refused up front, and duplicate copies."""

    docs: list[DocRef] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    duplicates: dict[str, str] = field(default_factory=dict)  # duplicate uri -> uri of the kept copy


def _uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    return fs.unstrip_protocol(path) if fs.protocol not in ("file", ("file", "local")) else path


def sha256_stream(fs: fsspec.AbstractFileSystem, path: str, chunk_bytes: int = 1 << 20) -> str:
    """sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def discover(source: str, include: list[str], max_file_bytes: int,
             storage_options: dict[str, Any] | None = None) -> Discovery:
    """List ``source`` recursively; hash files matching ``include`` (name globs, case-insensitive).

    Hidden files are ignored; other files, empty files and files over ``max_file_bytes`` become failures.
    """
    fs, root = fsspec.core.url_to_fs(source, **(storage_options or {}))
    if not fs.exists(root):
        raise FileNotFoundError(f"source not found: {source}")
    paths = [root] if fs.isfile(root) else sorted(fs.find(root))
    out = Discovery()
    seen: dict[str, str] = {}
    for path in paths:
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if name.startswith(".") or any(part.startswith(".") for part in path[len(root):].split("/")[:-1]):
            continue
        uri = _uri(fs, path)
        if not any(fnmatch.fnmatch(name.lower(), pat.lower()) for pat in include):
            ext = name.rsplit(".", 1)[-1] if "." in name else "(none)"
            out.failures.append(Failure(uri, "discover", f"unsupported file type '.{ext}' (not in include patterns)"))
            continue
        size = int(fs.size(path))
        if size == 0:  # refused here, so that a run of nothing but empty files starts no workers
            out.failures.append(Failure(uri, "discover", "empty file (0 bytes)"))
            continue
        if size > max_file_bytes:
            out.failures.append(
                Failure(uri, "discover", f"file is {size} bytes, over the limit of {max_file_bytes} (max_file_bytes)")
            )
            continue
        digest = sha256_stream(fs, path)
        if digest in seen:
            out.duplicates[uri] = seen[digest]
            continue
        seen[digest] = uri
        out.docs.append(DocRef(uri=uri, size=size, sha256=digest))
    return out


@contextmanager
def local_path(uri: str, storage_options: dict[str, Any] | None = None) -> Iterator[str]:
    """A local file path for ``uri``: the path itself for local files, else a temporary copy
    (extractors such as pymupdf and tesseract need a real file)."""
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    if "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        yield path
        return
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix="mmrag-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as out, fs.open(path, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
        yield tmp
    finally:
        os.unlink(tmp)
