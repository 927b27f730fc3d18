"""The typed manifest reads and writes exactly today's ``manifest.json``: same keys, optional keys absent when
they were, unknown keys kept, so a store written before the model existed opens after it."""
from __future__ import annotations

import copy

from mmrag_core.index.lexical import compatible
from mmrag_core.storage.manifest import FORMAT_VERSION, Manifest

SPACE = {"codec": {"id": "c1", "space": "text", "dim": 4, "files": {}}, "shards": [{"id": "s1", "count": 3}],
         "dim": 4, "metric": "ip", "index_type": "Flat", "count": 3, "stored": 3, "tombstoned": 0, "nprobe": None,
         "k_factor": 1.0, "recall_at_10": 1.0, "retrain_recommended": False, "retrain_reason": None}
LEXICAL = {"format": 1, "tokenizer": {"name": "alnum-runs", "version": 1, "lower": True,
                                      "stopwords": "bm25s.STOPWORDS_EN", "split_letter_digit": True},
           "method": "lucene", "k1": 1.5, "b": 0.75, "shards": [{"id": "l1", "count": 3, "files": {}}],
           "files": {"ids.npy": "snapshots/S2/lexical/ids.npy"}, "count": 3, "vocabulary": 9, "avgdl": 2.5,
           "stored": 3, "seconds_build": 0.01, "tombstoned": 0}
TODAY = {
    "format": FORMAT_VERSION, "id": "S2", "parent": "S1", "created_at": "2026-11-27T21:05:01.123456+00:00",
    "source": "/corpus", "models": {"text": {"name": "fake-text"}, "image": {"skipped": "off"}},
    "record_key": "rk", "config_key": "ck", "next_id": 7, "spaces": {"text": SPACE}, "lexical": LEXICAL,
    "tombstones": 2, "files": {"snapshots/S2/items.parquet": {"sha256": "ab" * 32, "bytes": 10}},
    "counts": {"documents": 2, "pages_with_items": 2, "items": 3, "items_by_kind": {"chunk": 3}, "failures": 1,
               "documents_failed": 0},
    "stats": {"changes": {"added": 1}, "removed": []},
    "failures": [{"source_uri": "/corpus/b.pdf", "stage": "ocr", "reason": "x", "page": 3, "doc_sha256": "cd"}],
    "compacted": {"text": "requested"},
}


def test_todays_manifest_round_trips() -> None:
    m = Manifest.from_json(copy.deepcopy(TODAY))
    assert m.to_json() == TODAY
    assert m.spaces["text"].count == 3 and m.files["snapshots/S2/items.parquet"].bytes == 10
    assert m.counts.items_by_kind == {"chunk": 3} and compatible(m.lexical)


def test_older_manifests_keep_their_shape() -> None:
    """A first snapshot without the lexical index or compaction (stores indexed before the lexical index), and
    one whose lexical index has another format: read, not searched, written back unchanged."""
    before_lexical = {k: v for k, v in TODAY.items() if k not in ("lexical", "compacted")} | {"parent": None}
    m = Manifest.from_json(copy.deepcopy(before_lexical))
    assert m.lexical is None and m.compacted is None and m.to_json() == before_lexical
    old_lexical = TODAY | {"lexical": {"format": 0, "shards": []}}
    m = Manifest.from_json(copy.deepcopy(old_lexical))
    assert not compatible(m.lexical) and m.to_json() == old_lexical


def test_unknown_keys_are_kept() -> None:
    newer = TODAY | {"future": {"x": 1}, "spaces": {"text": SPACE | {"extra_stat": 2}}}
    assert Manifest.from_json(copy.deepcopy(newer)).to_json() == newer
