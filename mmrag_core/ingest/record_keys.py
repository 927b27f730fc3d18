"""Record keys: digests of the models and settings that decide what a document's stored record holds.

A persisted record is reused only when its key matches the run's, so changing a model or an extraction
setting re-processes documents, and nothing else does.
"""
from __future__ import annotations

import hashlib
import json

from mmrag_core.config import Settings

# Settings that change what extraction produces; a change in any of them invalidates stored records.
EXTRACTION_SETTINGS: tuple[str, ...] = (
    "max_file_bytes", "max_image_pixels", "max_pdf_pages", "ocr_lang", "ocr_dpi", "ocr_min_text_chars",
    "ocr_rotation", "ocr_min_confidence_for_no_rotation", "figure_min_pixels", "figure_min_page_fraction",
    "figure_max_side", "chunk_tokens", "chunk_overlap", "text_model",
    "chunk_context", "chunk_context_tokens", "chunk_context_embedded", "page_outline", "table_structure",
    "page_render_px",
)
# 2: items gained ``caption`` (and ``context``) and the ``page`` kind.
RECORD_FORMAT = 2
# What decides a caption, when captioning is on (it is part of both keys only then: with it off, changing
# the prompt changes nothing stored).
CAPTION_SETTINGS: tuple[str, ...] = ("caption_model", "caption_prompt", "caption_max_new_tokens")


def caption_settings(settings: Settings) -> dict:
    """The captioning settings that records depend on: none when captioning is off."""
    return {name: getattr(settings, name) for name in CAPTION_SETTINGS} if settings.caption_enabled else {}


def record_key(models: dict, settings: Settings) -> str:
    """A digest of the models (names, weight checksums) and the extraction settings.

    A document's persisted record (items, vectors, or its failure) is reused only when this key
    matches the current run's, so changing a model or a chunking/OCR setting re-processes documents.
    """
    relevant = {
        "format": RECORD_FORMAT,
        "models": {
            space: {k: desc.get(k) for k in ("name", "pretrained", "weights_sha256", "skipped", "dim")}
            for space, desc in sorted(models.items())
        },
        "extraction": {name: getattr(settings, name) for name in EXTRACTION_SETTINGS},
    }
    if settings.caption_enabled:
        relevant["caption"] = caption_settings(settings)
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


MODEL_SETTINGS: tuple[str, ...] = ("text_model", "clip_model", "clip_pretrained", "clip_model_config", "device")


def config_key(settings: Settings) -> str:
    """A digest of the settings that decide what records hold (model choices, extraction settings).

    Unlike :func:`record_key` it needs no model loaded, so a run can tell without starting any model
    whether the previous snapshot was built the same way; ``device`` is left out (it changes speed only).
    """
    relevant = {name: getattr(settings, name) for name in (*MODEL_SETTINGS, *EXTRACTION_SETTINGS) if name != "device"}
    if settings.caption_enabled:
        relevant["caption"] = caption_settings(settings)
    return hashlib.sha256(json.dumps({"format": RECORD_FORMAT, **relevant}, sort_keys=True).encode()).hexdigest()[:16]
