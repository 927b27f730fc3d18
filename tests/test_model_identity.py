"""Query-time model identity: the engine compares the loaded encoder's weights fingerprint (``state_sha256``)
with the one the snapshot's manifest recorded, and refuses (or, with ``model_mismatch: warn``, warns about) a
snapshot built with other weights. Index-time and query-time encoders are built separately, as in production."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest

from mmrag_core.config.sections import QuerySettings
from mmrag_core.query.engine import ModelMismatch, QueryEngine
from mmrag_core.snapshot.open import open_snapshot
from mmrag_core.storage.items import Item, item_id
from mmrag_core.storage.store import Store
from tests.query_corpus import publish_docs, sample_images
from tests.tiny_models import make_tiny_clip_checkpoint, one_torch_thread  # noqa: F401 - an autouse fixture

pytest.importorskip("open_clip")


def _publish_random_clip_snapshot(base: Path, model: str, describe_edit: dict | None = None) -> Store:
    """Publish three pictures embedded by a CLIP of seeded random weights (``pretrained='none'``, a tiny model
    config), the manifest recording that encoder's description (edited by ``describe_edit``)."""
    from mmrag_core.models.clip_encoder import ClipEncoder

    config, _ = make_tiny_clip_checkpoint(base / "clip", model)
    indexer = ClipEncoder(model, "none", model_config=str(config))
    pngs = sample_images()
    sha = hashlib.sha256(b"album.png").hexdigest()
    images = [Item(item_id(sha, "image", 0, o), "image", "/corpus/album.png", sha, 0, (0.0, 0.0, 48.0, 48.0),
                   f"picture {o}", text_source="none", ordinal=o, width=48, height=48, image_png=png)
              for o, png in enumerate(pngs)]
    vectors = {"image": (np.array([it.id for it in images]), indexer.encode_images(pngs))}
    models = {"image": {**indexer.describe(), "model_config": str(config), **(describe_edit or {})}}
    store = Store(base / "store")
    publish_docs(store, [(sha, "/corpus/album.png", images, vectors)], models)
    return store


def test_identical_image_found_first_with_random_clip_weights(tmp_path: Path) -> None:
    store = _publish_random_clip_snapshot(tmp_path, "mmrag-tiny-identity")
    snapshot = open_snapshot(store)
    recorded = snapshot.manifest["models"]["image"]
    assert recorded["random_weights"] is True and recorded["state_sha256"]
    engine = QueryEngine(snapshot).load_models()  # a query-time encoder of its own, built from the manifest
    assert engine.clip is not None and engine.clip.state_sha256 == recorded["state_sha256"]
    pngs = sample_images()
    for which, png in enumerate(pngs):
        hits = engine.search(image=png, k=3)
        assert hits[0].snippet == f"picture {which}"
        assert hits[0].similarities["image:image"] == pytest.approx(1.0, abs=1e-4)


def test_snapshot_of_other_weights_is_refused(tmp_path: Path) -> None:
    store = _publish_random_clip_snapshot(tmp_path, "mmrag-tiny-other", {"state_sha256": "0123456789abcdef"})
    engine = QueryEngine(open_snapshot(store))
    with pytest.raises(ModelMismatch) as refused:
        engine.load_models()
    message = str(refused.value)
    assert "0123456789abcdef" in message and "other weights" in message and "'image'" in message
    assert "model_mismatch=warn" in message
    with pytest.raises(ModelMismatch):  # and at the first query, when the models are loaded lazily
        QueryEngine(open_snapshot(store)).search(image=sample_images()[0], k=1)


def test_snapshot_of_other_weights_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = _publish_random_clip_snapshot(tmp_path, "mmrag-tiny-warned", {"state_sha256": "0123456789abcdef"})
    engine = QueryEngine(open_snapshot(store), QuerySettings(model_mismatch="warn"))
    with caplog.at_level(logging.WARNING, logger="mmrag_core.query.engine"):
        engine.load_models()
    warned = [r.getMessage() for r in caplog.records if r.name == "mmrag_core.query.engine"]
    assert any("0123456789abcdef" in w and engine.clip.state_sha256 in w for w in warned)
    assert engine.search(image=sample_images()[0], k=1)  # queried anyway


def test_older_snapshot_without_fingerprint_is_accepted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = _publish_random_clip_snapshot(tmp_path, "mmrag-tiny-older", {"state_sha256": None})
    with caplog.at_level(logging.DEBUG, logger="mmrag_core.query.engine"):
        engine = QueryEngine(open_snapshot(store)).load_models()
    assert engine.clip is not None
    assert any("records no state_sha256" in r.getMessage() for r in caplog.records)
