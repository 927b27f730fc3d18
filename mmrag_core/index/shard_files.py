"""Codecs and shards kept in the store, each finished by a small JSON marker written after its files.

    codecs/<space>/<codec_id>/codec.faiss + codec.json
    shards/<space>/<shard_id>/index.faiss [+ refine.ids.npy + refine.f16.npy] + shard.json

Ids are derived from what produced the object (training inputs, planned documents and id ranges, merged
parts), so a re-run after a crash computes the same id, finds the marker and skips the work. An object
without its marker is an unfinished write: it is overwritten, never read.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from mmrag_core.index.codec import CodecSpec, deserialize_codec, serialize_codec
from mmrag_core.index.faiss_runtime import faiss
from mmrag_core.storage.faults import crash_point
from mmrag_core.storage.checksums import sha256_file
from mmrag_core.index.refine import RefineStore, write_refine
from mmrag_core.index.shards import read_shard, write_shard

from mmrag_core.storage.store import CODECS, SHARDS, Store

CODEC_MARKER = "codec.json"
SHARD_MARKER = "shard.json"
INDEX_FILE = "index.faiss"
REFINE_IDS = "refine.ids.npy"
REFINE_VECS = "refine.f16.npy"


@dataclass
class StoredCodec:
    """A trained, empty codec of one space and how to search it."""

    space: str
    id: str
    spec: CodecSpec
    dim: int
    trained_vectors: int
    trained_at: str
    files: dict[str, dict] = field(default_factory=dict)  # store key -> {sha256, bytes}

    @property
    def key(self) -> str:
        return f"{CODECS}/{self.space}/{self.id}/codec.faiss"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["spec"] = self.spec.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> StoredCodec:
        return cls(**{**d, "spec": CodecSpec.from_dict(d["spec"])})


def codec_dir(space: str, codec_id: str) -> str:
    return f"{CODECS}/{space}/{codec_id}"


def save_codec(store: Store, space: str, codec_id: str, spec: CodecSpec, index: faiss.Index,
               trained_vectors: int) -> StoredCodec:
    """Write the codec's bytes, then its marker."""
    data = serialize_codec(index)
    codec = StoredCodec(space, codec_id, spec, int(index.d), int(trained_vectors),
                        datetime.now(UTC).isoformat())
    store.write_bytes(codec.key, data)
    crash_point("codec-written")
    codec.files = {codec.key: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}}
    store.write_bytes(f"{codec_dir(space, codec_id)}/{CODEC_MARKER}", json.dumps(codec.to_dict(), indent=2).encode())
    return codec


def load_codec(store: Store, space: str, codec_id: str) -> StoredCodec | None:
    """The codec whose marker exists, or None (never trained, or its write did not finish)."""
    try:
        return StoredCodec.from_dict(json.loads(store.read_bytes(f"{codec_dir(space, codec_id)}/{CODEC_MARKER}")))
    except FileNotFoundError:
        return None


def codec_bytes(store: Store, codec: StoredCodec) -> bytes:
    data = store.read_bytes(codec.key)
    if hashlib.sha256(data).hexdigest() != codec.files[codec.key]["sha256"]:
        raise ValueError(f"{store.url(codec.key)} does not match its checksum")
    return data


@dataclass
class StoredShard:
    """An encoded shard: ``count`` vectors of one space under item ids, encoded with codec ``codec_id``."""

    space: str
    id: str
    codec_id: str
    count: int
    has_refine: bool
    files: dict[str, dict] = field(default_factory=dict)  # store key -> {sha256, bytes}

    @property
    def folder(self) -> str:
        return f"{SHARDS}/{self.space}/{self.id}"

    def file_key(self, name: str) -> str:
        return f"{self.folder}/{name}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> StoredShard:
        return cls(**d)


def shard_dir(space: str, shard_id: str) -> str:
    return f"{SHARDS}/{space}/{shard_id}"


def load_shard_marker(store: Store, space: str, shard_id: str) -> StoredShard | None:
    """The finished shard ``shard_id``, or None."""
    try:
        return StoredShard.from_dict(json.loads(store.read_bytes(f"{shard_dir(space, shard_id)}/{SHARD_MARKER}")))
    except FileNotFoundError:
        return None


def save_shard(store: Store, space: str, shard_id: str, codec_id: str, index: faiss.Index,
               refine: tuple[np.ndarray, np.ndarray] | None) -> StoredShard:
    """Write a shard's index (and float16 refine vectors), then its marker. Files are written locally
    first (FAISS writes paths) and copied in, so the same code serves local and S3 stores."""
    shard = StoredShard(space, shard_id, codec_id, int(index.ntotal), refine is not None)
    with tempfile.TemporaryDirectory(prefix="mmrag-shard-") as tmp:
        local = {INDEX_FILE: write_shard(index, Path(tmp) / INDEX_FILE)}
        if refine is not None:
            vec_path, ids_path = write_refine(Path(tmp) / INDEX_FILE, refine[0], refine[1])
            local[REFINE_VECS], local[REFINE_IDS] = vec_path, ids_path
        for name, path in local.items():
            key = shard.file_key(name)
            store.put_file(path, key)
            shard.files[key] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    crash_point("shard-files-written")
    store.write_bytes(shard.file_key(SHARD_MARKER), json.dumps(shard.to_dict(), indent=2).encode())
    return shard


@dataclass
class OpenShard:
    """A shard loaded for search or merge: its index (memory-mapped where FAISS can) and refine vectors."""

    meta: StoredShard
    index: faiss.Index
    refine: tuple[np.ndarray, np.ndarray] | None  # (ids, float16 vectors), memory-mapped


def open_shard(store: Store, shard: StoredShard) -> OpenShard:
    """Load a finished shard; remote files come through the local cache, checked by sha256."""
    index = read_shard(store.local_file(shard.file_key(INDEX_FILE), shard.files[shard.file_key(INDEX_FILE)]["sha256"]))
    refine = None
    if shard.has_refine:
        ids_key, vec_key = shard.file_key(REFINE_IDS), shard.file_key(REFINE_VECS)
        refine = (np.load(store.local_file(ids_key, shard.files[ids_key]["sha256"]), mmap_mode="r"),
                  np.load(store.local_file(vec_key, shard.files[vec_key]["sha256"]), mmap_mode="r"))
    return OpenShard(shard, index, refine)


def refine_store(shards: list[OpenShard], k_factor: int, metric: str) -> RefineStore | None:
    """One RefineStore over the shards' refine vectors (None when the codec has no refine step)."""
    parts = [s.refine for s in shards if s.refine is not None]
    return RefineStore(parts, k_factor=k_factor, metric=metric) if parts else None
