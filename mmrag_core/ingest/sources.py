"""Discover the documents of a source (a folder or a single file, through fsspec) and hash them.

Hashing streams the bytes (sha256), so a document's identity is its content: renamed or copied
files are recognised, and unchanged files are never extracted twice.
"""
from __future__ import annotations

import errno
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
from mmrag_core.storage.names import file_name


@dataclass(frozen=True)
class DocRef:
    """A document found in the source."""

    uri: str
    size: int
    sha256: str

    @property
    def name(self) -> str:
        return file_name(self.uri)


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
        name = file_name(path)
        if name.startswith(".") or any(part.startswith(".") for part in path[len(root):].split("/")[:-1]):
            continue
        uri = _uri(fs, path)
        try:
            refusal, size = _refusal(fs, path, name, include, max_file_bytes)
            digest = None if refusal else sha256_stream(fs, path)
        except OSError as exc:  # a broken or looping link, an unreadable file: this file fails, the run goes on
            refusal, digest = _os_error_reason(exc), None
        if refusal:
            out.failures.append(Failure(uri, "discover", refusal))
            continue
        if digest in seen:
            out.duplicates[uri] = seen[digest]
            continue
        seen[digest] = uri
        out.docs.append(DocRef(uri=uri, size=size, sha256=digest))
    return out


def _refusal(fs: fsspec.AbstractFileSystem, path: str, name: str, include: list[str],
             max_file_bytes: int) -> tuple[str | None, int]:
    """(why the file is refused before extraction or None, its size). Raises OSError when it cannot be read."""
    if fs.isdir(path):  # a symbolic link to a folder: listed, not followed (it could loop)
        return "symbolic link to a folder (not followed: link the files, or index the folder itself)", 0
    if not any(fnmatch.fnmatch(name.lower(), pat.lower()) for pat in include):
        ext = name.rsplit(".", 1)[-1] if "." in name else "(none)"
        return f"unsupported file type '.{ext}' (not in include patterns)", 0
    size = int(fs.size(path))
    if size == 0:  # refused here, so that a run of nothing but empty files starts no workers
        return "empty file (0 bytes)", 0
    if size > max_file_bytes:
        return f"file is {size} bytes, over the limit of {max_file_bytes} (max_file_bytes)", size
    return None, size


def _os_error_reason(exc: OSError) -> str:
    """What an OSError from listing, sizing or hashing one file means, in words."""
    if exc.errno == errno.ELOOP:
        return "symbolic link loop (too many levels of symbolic links)"
    if isinstance(exc, FileNotFoundError):
        return "broken symbolic link or file removed during the run (no such file)"
    if isinstance(exc, PermissionError):
        return "permission denied: the file is not readable by this process"
    return f"cannot read the file: {exc.strerror or type(exc).__name__} (errno {exc.errno})"


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
