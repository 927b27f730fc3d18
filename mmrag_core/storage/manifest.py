"""The snapshot manifest (``manifest.json``) as typed models, so every stage reads it by attribute instead of by
string key. Here in ``storage`` because ``index`` (codecs, lexical shards of the parent) reads it too.

The JSON is unchanged: :meth:`Manifest.to_json` writes the same keys as before, keys an older manifest lacks
stay absent, and unknown keys (a newer writer's) are kept.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

FORMAT_VERSION = 2  # the manifest format this code writes and reads


class _Json(BaseModel):
    """Keeps unknown keys, and writes only the keys that were given (read or passed by keyword)."""

    model_config = ConfigDict(extra="allow")

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)

    def __getitem__(self, key: str) -> Any:
        """Transitional: ``manifest["models"]`` for code not yet moved to attributes (query/engine.py)."""
        return getattr(self, key)


class FileMeta(_Json):
    """One file a snapshot needs, as listed in ``files``."""

    sha256: str
    bytes: int


class SpaceMeta(_Json):
    """A vector space of a snapshot: its codec and shards (their own ``to_dict`` form) and statistics."""

    codec: dict[str, Any]
    shards: list[dict[str, Any]]
    dim: int
    metric: str
    index_type: str
    count: int  # live vectors
    stored: int  # vectors in the shards, dead ones included
    tombstoned: int
    nprobe: int | None = None
    k_factor: int | float | None = None
    recall_at_10: float | None = None
    retrain_recommended: bool = False
    retrain_reason: str | None = None


class LexicalMeta(_Json):
    """The BM25 index of a snapshot. Only ``format`` is required: an index of another format is read (and then
    not searched, see :func:`mmrag_core.index.lexical.compatible`), not refused."""

    format: int
    tokenizer: dict[str, Any] | None = None
    method: str | None = None
    k1: float | None = None
    b: float | None = None
    shards: list[dict[str, Any]] = []
    files: dict[str, str] = {}  # BM25 file name -> store key
    count: int = 0
    stored: int = 0
    vocabulary: int = 0
    avgdl: float = 0.0
    seconds_build: float | None = None
    tombstoned: int = 0
    compacted: str | None = None  # written only when the shards were compacted


class Counts(_Json):
    documents: int
    pages_with_items: int
    items: int
    items_by_kind: dict[str, int]
    failures: int
    documents_failed: int


class Manifest(_Json):
    """A published snapshot: what it holds, how it was built, and every file it needs (with sha256 and size)."""

    format: int
    id: str
    parent: str | None
    created_at: str  # ISO 8601, as written
    source: str
    models: dict[str, dict[str, Any]]  # space -> model description, or {"skipped": reason}
    record_key: str
    config_key: str
    next_id: int
    spaces: dict[str, SpaceMeta]
    lexical: LexicalMeta | None = None  # absent in snapshots indexed before the lexical index existed
    tombstones: int
    files: dict[str, FileMeta]  # store key -> sha256 and size
    counts: Counts
    stats: dict[str, Any]
    failures: list[dict[str, Any]]  # Failure rows
    compacted: dict[str, str] | None = None  # space -> why it was compacted; written only when it was

    def to_json(self) -> dict[str, Any]:
        """The manifest as written to ``manifest.json`` (optional keys that are None left out)."""
        out = super().to_json()
        for key in ("lexical", "compacted"):
            if out.get(key, ...) is None:
                del out[key]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        return cls.model_validate(data)

    @classmethod
    def of(cls, manifest: Manifest | dict[str, Any]) -> Manifest:
        """``manifest`` as a model: for callers that still hold the JSON document (run reports, the CLI)."""
        return manifest if isinstance(manifest, Manifest) else cls.from_json(manifest)
