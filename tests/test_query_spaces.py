"""QueryEngine.search(spaces=...): fuse only the selected ranked lists; the default fuses them all."""
from __future__ import annotations

import pytest

from tests.test_query_engine import built  # noqa: F401 - the shared snapshot fixture
from tests.tiny_models import one_torch_thread  # noqa: F401 - an autouse fixture


def test_default_fuses_every_list(built: dict) -> None:  # noqa: F811
    engine = built["engine"]
    default = engine.search(text="espresso coffee", image=built["pngs"][0], k=20)
    explicit = engine.search(text="espresso coffee", image=built["pngs"][0], k=20,
                             spaces=("text", "image:text", "image:image", "lexical", "routed"))
    assert [(h.id, h.score, h.ranks) for h in default] == [(h.id, h.score, h.ranks) for h in explicit]
    assert {s for h in default for s in h.ranks} == {"text", "image:text", "image:image", "lexical", "routed"}


def test_text_space_alone(built: dict) -> None:  # noqa: F811
    hits = built["engine"].search(text="storm damage closed the bridge", k=20, spaces=["text"])
    assert hits and all(set(h.ranks) == {"text"} and h.kind == "chunk" for h in hits)
    assert hits[0].snippet.startswith("The bridge was closed")
    assert len(hits) == 6  # every text chunk, none of the images


def test_image_space_by_text_alone(built: dict) -> None:  # noqa: F811
    hits = built["engine"].search(text="a red picture", k=20, spaces={"image:text"}, dedupe=False)
    assert len(hits) == 3 and all(set(h.ranks) == {"image:text"} and h.kind == "image" for h in hits)


def test_selection_ignores_lists_the_query_cannot_feed(built: dict) -> None:  # noqa: F811
    # a text query with image:image selected too: only the text list exists
    hits = built["engine"].search(text="vaccine volunteers", k=5, spaces=("text", "image:image"))
    assert all(set(h.ranks) == {"text"} for h in hits)
    hits = built["engine"].search(text="vaccine", image=built["pngs"][1], k=5, spaces=("image:image",))
    assert hits[0].key == built["images"][1].id and all(set(h.ranks) == {"image:image"} for h in hits)


def test_bad_or_empty_selection_is_an_error(built: dict) -> None:  # noqa: F811
    engine = built["engine"]
    with pytest.raises(ValueError, match="unknown ranked list"):
        engine.search(text="x", spaces=["bm25"])
    with pytest.raises(ValueError, match="none of the selected"):
        engine.search(text="x", spaces=[])
    with pytest.raises(ValueError, match="none of the selected"):
        engine.search(image=built["pngs"][0], spaces=["text"])
