"""Synthetic documents for the snapshot, incremental-indexing and retention tests: items with random unit
vectors (no models), published through the code the indexing flow runs, into a local or an S3 store.

Import the store fixtures by their function names (``store_fixture``, ``local_store_fixture``,
``s3_store_fixture``); tests ask for them as ``store`` (parametrized: local folder and S3), ``local_store``
and ``s3_store``.
"""
from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from flows.cli import main as mmrag_main
from mmrag_core.config import Settings
from mmrag_core.storage.items import Failure, Item, item_id
from mmrag_core.storage.records import DocRecord, build_record
from mmrag_core.snapshot.open import Snapshot
from mmrag_core.storage.store import Store
from tests.published import publish_records
from tests.s3server import S3Server

TEXT_DIM = 16
IMAGE_DIM = 8
MODELS = {"text": {"name": "fake-text", "dim": TEXT_DIM}, "image": {"name": "fake-clip", "dim": IMAGE_DIM}}
# Settings under which nothing is compacted automatically, so tombstones and shards stay visible.
NO_COMPACTION = {"compact_tombstone_fraction": 1.0, "compact_max_shards": 1000}


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@dataclass
class SyntheticDoc:
    """A document's items and their vectors, before they become a stored record."""

    sha: str
    uri: str
    items: list[Item]
    vectors: dict[str, tuple[np.ndarray, np.ndarray]]  # space -> (item ids, vectors)

    def record(self, failures: Sequence[Failure] = (), stats: dict | None = None,
               record_key: str = "mk-1") -> DocRecord:
        return build_record(self.sha, self.uri, self.items, self.vectors, list(failures), record_key,
                            {"pages": 3} if stats is None else stats)

    def queries(self, space: str) -> np.ndarray:
        """The document's own vectors of ``space``: searching with them must find its items first."""
        return self.vectors[space][1]


def make_doc(name: str, n_chunks: int = 3, n_images: int = 1, *, version: int = 0, uri: str | None = None,
             text_vectors: np.ndarray | None = None) -> SyntheticDoc:
    """Document ``name`` with content ``version``: another version is other bytes (another sha256), while
    the same name and version under another ``uri`` is a renamed copy (same sha256, same vectors).
    ``text_vectors`` replaces the random chunk vectors (one chunk per row)."""
    sha = hashlib.sha256(f"{name}@{version}".encode()).hexdigest()
    uri = uri or f"/corpus/{name}"
    rng = np.random.default_rng(int(sha[:12], 16))
    if text_vectors is not None:
        n_chunks = len(text_vectors)
    items = [Item(item_id(sha, "chunk", p, 0), "chunk", uri, sha, p, (10.0, 20.0 + p, 300.5, 400.25),
                  f"chunk {p} of {name}") for p in range(n_chunks)]
    items += [Item(item_id(sha, "image", 0, o), "image", uri, sha, 0, (0.0, 0.0, 64.0, 48.0), f"ocr text {o}",
                   ocr_confidence=88.5, text_source="ocr", ordinal=o, width=64, height=48,
                   image_png=b"\x89PNG fake " + name.encode())
              for o in range(n_images)]
    chunk_ids = np.array([it.id for it in items if it.kind == "chunk"], dtype=np.int64)
    image_ids = np.array([it.id for it in items if it.kind == "image"], dtype=np.int64)
    text = unit_vectors(rng, n_chunks, TEXT_DIM) if text_vectors is None else text_vectors.astype(np.float32)
    vectors = {"text": (chunk_ids, text), "image": (image_ids, unit_vectors(rng, n_images, IMAGE_DIM))}
    return SyntheticDoc(sha, uri, items, vectors)


def settings_for(store: Store, **overrides: object) -> Settings:
    return Settings(store=store.uri, **overrides)


def publish_docs(store: Store, docs: Sequence[SyntheticDoc], settings: Settings | None = None,
                 fresh: bool = False) -> dict:
    """Store the documents' records and publish them as the current corpus (incremental against LATEST)."""
    return publish_records(store, [d.record() for d in docs], MODELS, settings=settings or settings_for(store),
                           fresh=fresh)


def index_ids(snapshot: Snapshot, doc: SyntheticDoc) -> set[int]:
    """The index ids a snapshot gave the items of ``doc`` (by content: its sha256)."""
    items = snapshot.items
    return {i for i, sha in zip(items.column("id").to_pylist(), items.column("doc_sha256").to_pylist())
            if sha == doc.sha}


def id_map(snapshot: Snapshot) -> dict[int, int]:
    """Record item id (stable across snapshots) -> the index id the snapshot gave it."""
    return dict(zip(snapshot.items.column("item_key").to_pylist(), snapshot.items.column("id").to_pylist()))


def assert_finds(snapshot: Snapshot, doc: SyntheticDoc) -> None:
    """Each of the document's vectors finds its own item first, at similarity 1."""
    index_id = id_map(snapshot)
    for space, (item_ids, queries) in doc.vectors.items():
        if len(queries):
            scores, found = snapshot.indexes[space].search(queries, k=1)
            assert found[:, 0].tolist() == [index_id[i] for i in item_ids.tolist()]
            np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-3)


def search_all(snapshot: Snapshot, docs: Sequence[SyntheticDoc], k: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(scores, ids) per space for every document's vectors as queries."""
    out = {}
    for space, index in snapshot.indexes.items():
        queries = [d.queries(space) for d in docs if len(d.queries(space))]
        out[space] = index.search(np.concatenate(queries), k)
    return out


def assert_same_results(a: dict[str, tuple[np.ndarray, np.ndarray]], b: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Identical ids and scores in every space."""
    assert a.keys() == b.keys()
    for space in a:
        np.testing.assert_array_equal(a[space][1], b[space][1], err_msg=f"ids differ in space {space}")
        np.testing.assert_array_equal(a[space][0], b[space][0], err_msg=f"scores differ in space {space}")


def mmrag(store: Store, *args: str) -> int:
    """Exit code of ``mmrag snapshots ARGS --store <store>``."""
    return mmrag_main(["snapshots", *args, "--store", store.uri])


# ---- stores ---------------------------------------------------------------------------------------------


def _local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("MMRAG_CACHE_DIR", str(tmp_path / "cache"))
    return Store(tmp_path / "store", cache_dir=tmp_path / "cache")


@functools.cache
def _shared_bucket(server: S3Server) -> str:
    """One bucket for the session's store tests, each under a prefix of its own: a bucket costs ~0.25 s."""
    return server.create_bucket()


def _s3(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    server = request.getfixturevalue("s3_env")  # the CLI's `--store s3://...` finds the server through it
    monkeypatch.setenv("MMRAG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MMRAG_S3_ENDPOINT_URL", server.endpoint_url)
    root = f"s3://{_shared_bucket(server)}/{uuid.uuid4().hex[:12]}/store"
    return Store(root, server.storage_options(), cache_dir=tmp_path / "cache")


@pytest.fixture(name="local_store")
def local_store_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """A store in a local folder (with a private download cache)."""
    return _local(tmp_path, monkeypatch)


@pytest.fixture(name="s3_store")
def s3_store_fixture(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """A store under a fresh prefix on the session's S3 server, with a private download cache."""
    return _s3(request, tmp_path, monkeypatch)


@pytest.fixture(name="store", params=["local", "s3"])
def store_fixture(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """The same test against a local folder and S3. A test that needs S3 for some of its cases only
    parametrizes ``store`` itself (``indirect=["store"]``)."""
    return _local(tmp_path, monkeypatch) if request.param == "local" else _s3(request, tmp_path, monkeypatch)
