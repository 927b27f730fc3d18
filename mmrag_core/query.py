"""Answer a text and/or image query from an opened snapshot: encode, search each space, fuse, hydrate."""
from __future__ import annotations

import io
import logging
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mmrag_core.fusion import reciprocal_rank_fusion
from mmrag_core.models import ModelUnavailable
from mmrag_core.snapshot import Snapshot

log = logging.getLogger(__name__)

# The ranked lists a query can fuse: the text space, and the image space queried by text (CLIP text
# tower) or by image (CLIP image tower).
RANKED_LISTS: tuple[str, ...] = ("text", "image:text", "image:image")


@dataclass
class Hit:
    """One result with its provenance. ``page`` is 0-based; ``bbox`` is (x0, y0, x1, y1) in PDF points
    (pixels for image files)."""

    id: int  # index id within this snapshot's lineage
    score: float
    kind: str
    source_uri: str
    page: int
    bbox: list[float] | None
    snippet: str
    ocr_confidence: float | None
    text_source: str
    ranks: dict[str, int] = field(default_factory=dict)
    similarities: dict[str, float] = field(default_factory=dict)
    key: int | None = None  # the item's content-derived id: the same item has the same key in every snapshot
    caption: str | None = None  # a generated caption of a figure or image, when the snapshot has one

    def to_dict(self) -> dict:
        return asdict(self)


def snippet_of(text: str | None, limit: int = 240) -> str:
    """A one-line excerpt for display."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


class QueryEngine:
    """Loads the encoders a snapshot was built with (once) and answers queries against it."""

    def __init__(self, snapshot: Snapshot, device: str = "cpu", rrf_k: int = 60, search_depth: int = 50) -> None:
        self.snapshot = snapshot
        self.rrf_k = rrf_k
        self.search_depth = search_depth
        self.device = device
        self._row = {int(i): n for n, i in enumerate(snapshot.items.column("id").to_pylist())}
        self._text_encoder = None
        self._clip = None
        self._clip_failed: str | None = None

    @property
    def text_encoder(self):
        if self._text_encoder is None:
            from mmrag_core.models.text_encoder import TextEncoder

            self._text_encoder = TextEncoder(self.snapshot.manifest["models"]["text"]["name"], device=self.device)
        return self._text_encoder

    @property
    def clip(self):
        if self._clip is None and self._clip_failed is None and "image" in self.snapshot.indexes:
            from mmrag_core.models.clip_encoder import ClipEncoder

            m = self.snapshot.manifest["models"]["image"]
            try:
                self._clip = ClipEncoder(m["name"], m["pretrained"], m.get("model_config"), device=self.device)
            except ModelUnavailable as e:
                self._clip_failed = str(e)
                log.warning("image space not searched: %s", e)
        return self._clip

    def load_models(self, previous: QueryEngine | None = None) -> QueryEngine:
        """Load the encoders now rather than at the first query, taking ``previous``'s where it runs the same
        models (name and weight checksums), so that a service can swap to this engine fully ready."""
        models = self.snapshot.manifest["models"]
        if previous is not None:
            before = previous.snapshot.manifest["models"]
            if _same_model(before.get("text"), models.get("text")):
                self._text_encoder = previous._text_encoder
            if _same_model(before.get("image"), models.get("image")):
                self._clip, self._clip_failed = previous._clip, previous._clip_failed
        if "text" in self.snapshot.indexes:
            _ = self.text_encoder
        _ = self.clip
        return self

    def search(
        self,
        text: str | None = None,
        image: str | Path | bytes | None = None,
        k: int = 10,
        spaces: Collection[str] | None = None,
    ) -> list[Hit]:
        """Top-``k`` hits for a text, an image, or both, fused by reciprocal rank over spaces.

        ``spaces`` selects which ranked lists are fused, among :data:`RANKED_LISTS`: ``"text"`` (the
        text space), ``"image:text"`` (the query text through CLIP's text tower into the image space),
        ``"image:image"`` (the query image into the image space). ``None`` (the default) fuses every
        list the query and the snapshot allow. An explicit selection that leaves nothing to search is
        a ``ValueError``.
        """
        if not (text and text.strip()) and image is None:
            raise ValueError("a query needs text, an image, or both")
        if spaces is not None:
            unknown = set(spaces) - set(RANKED_LISTS)
            if unknown:
                raise ValueError(f"unknown ranked list(s) {sorted(unknown)}; choose among {list(RANKED_LISTS)}")
        wanted = set(RANKED_LISTS if spaces is None else spaces)
        has_text = bool(text and text.strip())
        ranked: dict[str, list[tuple[int, float]]] = {}
        if has_text and "text" in wanted and "text" in self.snapshot.indexes:
            ranked["text"] = self._search_space("text", self.text_encoder.encode([text]))
        needs_clip = (has_text and "image:text" in wanted) or (image is not None and "image:image" in wanted)
        clip = self.clip if needs_clip else None
        if clip is None and image is not None and not has_text and "image:image" in wanted:
            reason = self._clip_failed or "the snapshot has no image space"
            raise ValueError(f"image queries need the image space, which cannot be searched: {reason}")
        if clip is not None:
            if has_text and "image:text" in wanted:
                ranked["image:text"] = self._search_space("image", clip.encode_texts([text]))
            if image is not None and "image:image" in wanted:
                ranked["image:image"] = self._search_space("image", clip.encode_images([_image_input(image)]))
        if spaces is not None and not ranked:
            reason = f" ({self._clip_failed})" if self._clip_failed else ""
            raise ValueError(f"none of the selected ranked lists {sorted(wanted)} can be searched for this query "
                             f"in snapshot {self.snapshot.id}{reason}")
        fused = reciprocal_rank_fusion(ranked, k=self.rrf_k)[:k]
        return [self._hydrate(f.id, f.score, f.ranks, f.similarities) for f in fused]

    def item(self, item: int) -> dict | None:
        """The metadata row of item ``item`` (an index id of this snapshot), or None when it has none."""
        row = self._row.get(int(item))
        return None if row is None else self.snapshot.items.slice(row, 1).to_pylist()[0]

    def _search_space(self, space: str, query_vec: np.ndarray) -> list[tuple[int, float]]:
        scores, ids = self.snapshot.indexes[space].search(query_vec, self.search_depth)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def _hydrate(self, item: int, score: float, ranks: dict, sims: dict) -> Hit:
        row = self.item(item)
        return Hit(
            id=item,
            score=round(score, 6),
            kind=row["kind"],
            source_uri=row["source_uri"],
            page=row["page"],
            bbox=[round(float(v), 2) for v in row["bbox"]] if row["bbox"] is not None else None,
            snippet=snippet_of(row["text"]),
            ocr_confidence=row["ocr_confidence"],
            text_source=row["text_source"],
            ranks=dict(ranks),
            similarities={s: round(v, 6) for s, v in sims.items()},
            key=row.get("item_key"),
            caption=row.get("caption"),
        )


def _same_model(a: dict | None, b: dict | None) -> bool:
    keys = ("name", "pretrained", "model_config", "weights_sha256")
    return bool(a and b) and all(a.get(k) == b.get(k) for k in keys)


def _image_input(image: str | Path | bytes) -> bytes:
    """Image bytes from a path or bytes, validated by Pillow before it reaches the model."""
    from PIL import Image

    data = image if isinstance(image, (bytes, bytearray)) else Path(image).read_bytes()
    try:
        Image.open(io.BytesIO(data)).verify()
    except Exception as e:  # Pillow raises many types for bad images
        raise ValueError(f"query image could not be decoded: {e}") from e
    return bytes(data)
