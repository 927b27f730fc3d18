"""Which items go into which encoder: (ids, inputs) per space, and captions stored back on their items."""
from __future__ import annotations

import numpy as np

from mmrag_core.storage.items import Item, ItemKind


def text_inputs(items: list[Item], with_context: bool = False) -> tuple[np.ndarray, list[str]]:
    """(ids, texts) for the ``text`` space: every chunk with some text (``with_context``: with its context prefix
    when it has one, ``Item.indexed_text``; setting ``chunk_context_embedded``); then every page outline (its own
    text: the document's facts and the page's headings); then every captioned figure, page
    or image, as its caption (the item itself is the hit, so a caption match leads to the picture, with its page
    and box)."""
    chosen = [it for it in items if it.kind == ItemKind.CHUNK and it.text.strip()]
    outlines = [it for it in items if it.kind == ItemKind.OUTLINE and it.text.strip()]
    captioned = [it for it in items
                 if it.kind not in (ItemKind.CHUNK, ItemKind.OUTLINE) and it.caption and it.caption.strip()]
    return (np.array([it.id for it in chosen + outlines + captioned], dtype=np.int64),
            [it.indexed_text() if with_context else it.text for it in chosen] + [it.text for it in outlines]
            + [it.caption for it in captioned])


def image_inputs(items: list[Item]) -> tuple[np.ndarray, list[bytes]]:
    """(ids, PNG bytes) for the ``image`` space: figures, page renders and image files."""
    chosen = [it for it in items if it.image_png]
    return np.array([it.id for it in chosen], dtype=np.int64), [it.image_png for it in chosen]


def caption_inputs(items: list[Item]) -> tuple[list[Item], list[bytes]]:
    """The items to caption (figures, page renders, image files: those with image bytes) and their PNG bytes."""
    chosen = [it for it in items if it.image_png]
    return chosen, [it.image_png for it in chosen]


def set_captions(items: list[Item], captions: list[str]) -> None:
    """Store each caption on its item; an empty caption is none."""
    if len(items) != len(captions):
        raise ValueError(f"{len(captions)} captions for {len(items)} images")
    for it, caption in zip(items, captions):
        it.caption = caption.strip() or None
