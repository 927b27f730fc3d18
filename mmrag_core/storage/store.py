"""The store: one root (a local folder or ``s3://bucket/prefix``) and its layout, with atomic writes.

    docs/<sha256>.parquet                 items + vectors of one document (the durable intermediate)
    codecs/<space>/<codec_id>/            a trained, empty FAISS codec + codec.json (written last)
    shards/<space>/<shard_id>/            an encoded shard (index + refine vectors) + shard.json (written last)
    lexical/<shard_id>/                   term counts of one run's new items + shard.json (written last)
    snapshots/<id>/                       a published snapshot's own files + manifest.json (written last)
    LATEST                                the id of the newest verified snapshot (moved last of all)

Every object is complete or absent: locally each file is written to a temporary name and renamed; on S3
a PUT is atomic per object. A unit of work (a document record, a shard, a codec, a snapshot) counts as
done only once its marker file exists, and the marker is always written after the files it lists.
"""
from __future__ import annotations

import errno
import re
import hashlib
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from mmrag_core.storage.checksums import sha256_file


class Store:
    """Read, write and list objects under one store root, local or remote (through fsspec)."""

    def __init__(self, root: str | os.PathLike[str], storage_options: dict[str, Any] | None = None,
                 cache_dir: str | os.PathLike[str] | None = None) -> None:
        root_s = str(root).removeprefix("file://")
        self.fs, base = fsspec.core.url_to_fs(root_s, **(storage_options or {}))
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.remote = "file" not in protocols
        if self.remote:
            self.base = base.rstrip("/")
            self.uri = f"{protocols[0]}://{self.base}"
        else:
            self.base = str(Path(base).expanduser().resolve())
            self.uri = self.base
        self.cache_dir = Path(cache_dir or os.environ.get("MMRAG_CACHE_DIR") or "~/.cache/mmrag").expanduser()

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    @property
    def root(self) -> Path:
        """The local root folder (local stores only)."""
        if self.remote:
            raise TypeError(f"{self.uri} is a remote store; it has no local root")
        return Path(self.base)

    def path(self, key: str) -> str:
        """The filesystem path of ``key`` (a '/'-separated key relative to the root)."""
        return f"{self.base}/{key}" if key else self.base

    def url(self, key: str) -> str:
        """A full URI for messages."""
        return f"{self.uri}/{key}"

    def root_exists(self) -> bool:
        """Whether the root folder (or a remote prefix with objects) exists: a mistyped ``--store`` is then said
        to be missing rather than read as an empty store."""
        if self.remote:
            self.fs.invalidate_cache(self.base)
        return bool(self.fs.exists(self.base))

    # ---- reading --------------------------------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        if self.remote:
            self.fs.invalidate_cache(self.path(key))
        return bool(self.fs.exists(self.path(key)))

    def size(self, key: str) -> int:
        return int(self.fs.size(self.path(key)))

    def modified(self, key: str) -> float:
        """Last-modified time (epoch seconds) of an object."""
        if not self.remote:
            return os.stat(self.path(key)).st_mtime
        info = self.fs.info(self.path(key))
        stamp = info.get("LastModified") or info.get("mtime") or info.get("last_modified")
        return stamp.timestamp() if hasattr(stamp, "timestamp") else float(stamp)

    def read_bytes(self, key: str) -> bytes:
        """The whole object; FileNotFoundError when absent."""
        try:
            return self.fs.cat_file(self.path(key))
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.url(key)} not found") from None

    def open(self, key: str) -> IO[bytes]:
        """A readable binary file object (seekable), e.g. for a Parquet footer."""
        return self.fs.open(self.path(key), "rb")

    def read_parquet(self, key: str) -> pa.Table:
        if not self.remote:
            return pq.read_table(self.path(key))
        return pq.read_table(io.BytesIO(self.read_bytes(key)))

    def find(self, prefix: str) -> list[str]:
        """Keys of every object under ``prefix`` (recursive), sorted; [] when there is none."""
        if self.remote:
            self.fs.invalidate_cache()
        base = self.path(prefix)
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        strip = len(self.base) + 1
        return sorted(p[strip:] for p in found if p.startswith(self.base + "/"))

    def children(self, prefix: str) -> list[str]:
        """Names directly under ``prefix`` (files and folders), sorted."""
        keys = self.find(prefix)
        cut = len(prefix.rstrip("/")) + 1
        return sorted({k[cut:].split("/", 1)[0] for k in keys})

    def local_file(self, key: str, sha256: str | None = None) -> Path:
        """A local path holding ``key``'s bytes: the file itself in a local store, else a copy cached under
        ``cache_dir`` by content hash (downloaded once, checked against ``sha256`` when given)."""
        if not self.remote:
            return Path(self.path(key))
        if sha256:
            cached = self.cache_dir / "objects" / sha256[:2] / sha256
            if cached.is_file():
                return cached
        tmp_dir = self.cache_dir / "objects" / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=tmp_dir)
        os.close(fd)
        try:
            self.fs.get_file(self.path(key), tmp)
            digest = sha256_file(tmp)
            if sha256 and digest != sha256:
                raise ChecksumMismatch(f"{self.url(key)} does not match its checksum")
            final = self.cache_dir / "objects" / digest[:2] / digest
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
            return final
        finally:
            Path(tmp).unlink(missing_ok=True)

    def checksum(self, key: str) -> str:
        """sha256 of an object, streamed."""
        if not self.remote:
            return sha256_file(self.path(key))
        h = hashlib.sha256()
        with self.open(key) as f:
            while block := f.read(1 << 20):
                h.update(block)
        return h.hexdigest()

    # ---- writing --------------------------------------------------------------------------------------------

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write an object atomically (temp file + fsync + rename locally; one PUT on S3)."""
        if self.remote:
            self.fs.pipe_file(self.path(key), data)
            return
        path = Path(self.path(key))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as e:
            Path(tmp).unlink(missing_ok=True)
            raise _located(e, path) from e

    def create_exclusive(self, key: str, data: bytes) -> None:
        """Create an object only if it does not exist yet (O_EXCL locally, a conditional PUT with
        ``If-None-Match: *`` on S3); FileExistsError otherwise. The primitive under the store lock."""
        if self.remote:
            try:
                self.fs.pipe_file(self.path(key), data, mode="create")
            except OSError as e:
                if "pre-condition" in str(e).lower() or "precondition" in str(e).lower():
                    raise FileExistsError(self.url(key)) from e
                raise
            return
        path = Path(self.path(key))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def write_parquet(self, key: str, table: pa.Table) -> None:
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        self.write_bytes(key, buf.getvalue())

    def put_file(self, local: str | os.PathLike[str], key: str) -> None:
        """Copy a local file into the store atomically."""
        if self.remote:
            self.fs.put_file(str(local), self.path(key))
            return
        path = Path(self.path(key))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            shutil.copyfile(local, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            raise _located(e, path) from e

    def delete(self, key: str) -> None:
        """Remove one object, or everything under a prefix; absent keys are fine."""
        path = self.path(key)
        try:
            if self.fs.isdir(path):
                self.fs.rm(path, recursive=True)
            else:
                self.fs.rm_file(path)
        except FileNotFoundError:
            pass

    # ---- the layout ------------------------------------------------------------------------------------------

    def latest_id(self) -> str | None:
        """The id LATEST points to, or None when nothing is published yet."""
        try:
            value = self.read_bytes(LATEST).decode().strip()
        except FileNotFoundError:
            return None
        return value or None

    def set_latest(self, snapshot_id: str) -> None:
        self.write_bytes(LATEST, (snapshot_id + "\n").encode())

    def list_snapshots(self) -> list[str]:
        """Published (manifest written) snapshot ids, oldest first (ids sort by time)."""
        keys = self.find(SNAPSHOTS)
        return sorted({k.split("/")[1] for k in keys
                       if k.endswith("/" + MANIFEST) and k.count("/") == 2 and not k.split("/")[1].startswith(".")})


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def _located(exc: BaseException, path: Path) -> BaseException:
    """A disk-full error that names the store file it was writing (a write to a temporary file's descriptor names
    none, or names the temporary file), so the message says which store ran out of space; others as they are."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS and exc.filename != str(path):
        return OSError(exc.errno, exc.strerror, str(path))
    return exc


# What the writers above leave when a process dies between creating a temporary file and renaming it:
# ``.<name>.<8 random chars>`` (write_bytes' mkstemp), ``.<name>.tmp-<pid>`` (put_file), and the ``.tmp`` /
# ``.tmp.npy`` names of the FAISS and numpy writers (index/shards.py, index/refine.py). gc removes them.
_TEMP_NAME = re.compile(r"\..+\.(?:tmp-\d+|[a-z0-9_]{8})|.+\.tmp(?:\.npy)?")


def is_temp_key(key: str) -> bool:
    """Whether ``key``'s last component is a temporary name one of the store's writers uses."""
    return bool(_TEMP_NAME.fullmatch(key.rsplit("/", 1)[-1]))


class ChecksumMismatch(RuntimeError):
    """A stored object's bytes do not match the checksum recorded for it."""


LATEST = "LATEST"
DOCS = "docs"
CODECS = "codecs"
SHARDS = "shards"
LEXICAL_SHARDS = "lexical"
SNAPSHOTS = "snapshots"
MANIFEST = "manifest.json"


def doc_key(doc_sha256: str) -> str:
    return f"{DOCS}/{doc_sha256}.parquet"


# A snapshot id is one path component of safe characters: ids come from LATEST, --snapshot and URLs, and are
# joined into store paths, so "../../etc" or "a/b" must never reach a join.
_SNAPSHOT_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


class InvalidSnapshotId(ValueError):
    """A snapshot id that is not one path component of letters, digits, '.', '_' and '-'."""


def check_snapshot_id(snapshot_id: str) -> str:
    """``snapshot_id`` itself, or InvalidSnapshotId when it could name a path outside ``snapshots/``."""
    if not isinstance(snapshot_id, str) or not _SNAPSHOT_ID.fullmatch(snapshot_id) or ".." in snapshot_id:
        shown = repr(snapshot_id)[:80]
        raise InvalidSnapshotId(f"invalid snapshot id {shown}: expected letters, digits, '.', '_' or '-' "
                                "(e.g. 20261127T210501123456Z)")
    return snapshot_id


def snapshot_key(snapshot_id: str, name: str = "") -> str:
    return f"{SNAPSHOTS}/{check_snapshot_id(snapshot_id)}/{name}".rstrip("/")


def storage_options_for(uri: str, s3_endpoint_url: str | None) -> dict[str, Any]:
    """fsspec options for ``uri``: an S3 endpoint for S3-compatible servers (credentials come from the
    usual AWS environment variables or files)."""
    if uri.startswith(("s3://", "s3a://")) and s3_endpoint_url:
        return {"endpoint_url": s3_endpoint_url}
    return {}


def open_store(settings: Any) -> Store:
    """The store that ``settings.store`` names."""
    return Store(settings.store, storage_options_for(settings.store, settings.s3_endpoint_url), settings.cache_dir)
