"""The store's layout and atomic writes.

    <store>/docs/<sha256>.parquet      items + vectors of one document (the durable intermediate)
    <store>/snapshots/<id>/            an immutable published snapshot
    <store>/LATEST                     the id of the newest verified snapshot (moved last)

Every file is written to a temporary name in the same folder and renamed into place, so a reader
(or a crashed run) never sees half a file.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


class Store:
    """Paths inside one local store root."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        root_s = str(root)
        if "://" in root_s and not root_s.startswith("file://"):
            raise NotImplementedError(f"only local stores are supported so far, got {root_s!r}")
        self.root = Path(root_s.removeprefix("file://")).expanduser().resolve()

    @property
    def docs_dir(self) -> Path:
        return self.root / "docs"

    @property
    def snapshots_dir(self) -> Path:
        return self.root / "snapshots"

    @property
    def latest_path(self) -> Path:
        return self.root / "LATEST"

    def doc_path(self, doc_sha256: str) -> Path:
        return self.docs_dir / f"{doc_sha256}.parquet"

    def snapshot_dir(self, snapshot_id: str) -> Path:
        return self.snapshots_dir / snapshot_id

    def latest_id(self) -> str | None:
        """The id LATEST points to, or None when nothing is published yet."""
        try:
            value = self.latest_path.read_text().strip()
        except FileNotFoundError:
            return None
        return value or None

    def list_snapshots(self) -> list[str]:
        """Published snapshot ids, oldest first (ids sort by time)."""
        if not self.snapshots_dir.is_dir():
            return []
        return sorted(p.name for p in self.snapshots_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file + fsync + rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_parquet(path: Path, table: pa.Table) -> None:
    """Write a Parquet file via a temp file + rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
