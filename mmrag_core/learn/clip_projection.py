"""What trains in the image space: CLIP frozen, a residual linear map on each tower's normalised embeddings,
``x + W x + b`` for the text tower (queries) and for the image tower (figures), both zero at the start (the
identity: before the first step the model is the base CLIP). Each text and each figure is encoded once and cached,
so a step costs two small matrix products, cheap on a CPU. The image map changes what an index stores; the text
map, what a query is compared with; both are saved together as ``projection.safetensors``
(``text.weight``, ``text.bias``, ``image.weight``, ``image.bias``), which
:class:`~mmrag_core.models.clip_encoder.ClipEncoder` applies when a setting names the stored model.

The training encoder's interface is the one :func:`mmrag_core.learn.training.train_loop` drives: ``model`` (what
DDP may wrap), ``module`` (the adapter), ``method``, ``torch``, ``encode_pair`` and ``adapter_config``.
"""
from __future__ import annotations

from typing import Any

import torch

from mmrag_core.learn.figure_pairs import load_figure_images

TOWERS = ("text", "image")


class TowerProjections(torch.nn.Module):
    """One residual linear map per CLIP tower, initialised at the identity (zero residual)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.text = torch.nn.Linear(dim, dim)
        self.image = torch.nn.Linear(dim, dim)
        for layer in (self.text, self.image):
            torch.nn.init.zeros_(layer.weight)
            torch.nn.init.zeros_(layer.bias)

    def forward(self, texts: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both towers in one call (one forward per backward, as DDP wants)."""
        return texts + self.text(texts), images + self.image(images)


class ClipProjection:
    """The CLIP base of a run (``cfg.base``, ``cfg.base_pretrained``, ``cfg.base_config``) frozen, with
    :class:`TowerProjections` to train; candidates are figure refs whose pixels come from ``store``."""

    method = "projection"

    def __init__(self, cfg: Any, device: str, store: Any) -> None:
        from mmrag_core.models.clip_encoder import ClipEncoder

        torch.manual_seed(cfg.seed)
        self.torch, self.device, self.store = torch, device, store
        self.clip = ClipEncoder(cfg.base, cfg.base_pretrained, cfg.base_config, device=device)
        self.model = TowerProjections(self.clip.dim).to(device)
        self.module = self.model  # DDP wraps ``model``; ``module`` stays the adapter
        self._texts: dict[str, torch.Tensor] = {}
        self._images: dict[str, torch.Tensor] = {}

    def frozen_texts(self, texts: list[str]) -> torch.Tensor:
        """The base text tower's embeddings of ``texts``, each computed once."""
        todo = sorted({t for t in texts if t not in self._texts})
        if todo:
            for t, v in zip(todo, self.clip.encode_texts(todo), strict=True):
                self._texts[t] = torch.from_numpy(v).to(self.device)
        return torch.stack([self._texts[t] for t in texts])

    def frozen_images(self, refs: list[str]) -> torch.Tensor:
        """The base image tower's embeddings of figures (refs), each read from the store and computed once."""
        todo = sorted({r for r in refs if r not in self._images})
        if todo:
            pngs = load_figure_images(self.store, todo)
            for r, v in zip(todo, self.clip.encode_images([pngs[r] for r in todo]), strict=True):
                self._images[r] = torch.from_numpy(v).to(self.device)
        return torch.stack([self._images[r] for r in refs])

    def encode_pair(self, queries: list[str], cands: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected, unit-length embeddings of the queries (text tower) and candidate figures (image tower);
        ``max_length`` is unused (CLIP's tokenizer has its own context length)."""
        q, c = self.model(self.frozen_texts(queries), self.frozen_images(cands))
        normalize = torch.nn.functional.normalize
        return normalize(q, p=2, dim=1), normalize(c, p=2, dim=1)

    def adapter_config(self, state: dict) -> dict:
        """What ``adapter_config.json`` says: a projection of both towers of the image space."""
        return {"method": "projection", "space": "image", "towers": list(TOWERS),
                "dim": int(state["text.weight"].shape[0])}
