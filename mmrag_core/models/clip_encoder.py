"""The ``image`` space encoder: open_clip, for images/figures and, through its text tower, queries.

Weights come from an open_clip pretrained tag, a checkpoint path, or a ``local-dir:`` model folder
(``open_clip_config.json`` + weights). ``none`` builds random weights, which only tests should use.
"""
from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np

from mmrag_core.models import ModelUnavailable

log = logging.getLogger(__name__)

RANDOM_SEED = 0  # random weights (tests, smoke runs) are seeded, so an index and its queries share them

HOW_TO_PROVIDE = (
    "Provide CLIP weights with MMRAG_CLIP_PRETRAINED=/path/to/checkpoint.pt (open_clip format) or "
    "MMRAG_CLIP_MODEL=local-dir:/path/to/folder (open_clip_config.json + open_clip_model.safetensors), "
    "or allow the open_clip tag to download (unset HF_HUB_OFFLINE, network needed once)."
)


def _random_weights(pretrained: str | None) -> bool:
    return pretrained is None or pretrained.strip().lower() in ("", "none", "random")


def _first_sentence(e: Exception, limit: int = 160) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    text = text.split(". ")[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ClipEncoder:
    """Batched, L2-normalised float32 CLIP embeddings of images (PNG/JPEG bytes or PIL) and texts."""

    def __init__(
        self,
        model_name: str,
        pretrained: str | None,
        model_config: str | None = None,
        device: str = "cpu",
        batch_size: int = 32,
    ) -> None:
        import open_clip
        import torch

        if model_config:
            open_clip.add_model_config(Path(model_config))
        random = _random_weights(pretrained) and not model_name.startswith(("local-dir:", "hf-hub:"))
        if random:
            log.warning(
                "!!! CLIP model %s is built with RANDOM weights (MMRAG_CLIP_PRETRAINED=none): the image space "
                "is meaningless; use this for tests only !!!", model_name,
            )
        try:
            with torch.random.fork_rng(devices=[]):  # random weights are the same in every process (seed 0)
                torch.manual_seed(RANDOM_SEED)
                model, _, preprocess = open_clip.create_model_and_transforms(
                    model_name,
                    pretrained=None if random or model_name.startswith(("local-dir:", "hf-hub:")) else pretrained,
                    device="cpu" if random else device,
                    require_pretrained=not random,
                )
            model = model.to(device)
            self.tokenizer = open_clip.get_tokenizer(model_name)
        except (RuntimeError, OSError, ValueError, KeyError) as e:
            raise ModelUnavailable(
                f"CLIP weights for model {model_name!r} (pretrained {pretrained!r}) could not be loaded: "
                f"{_first_sentence(e)}. {HOW_TO_PROVIDE}"
            ) from e
        self.model = model.eval()
        self.preprocess = preprocess
        self.model_name = model_name
        self.pretrained = "none" if random else pretrained
        self.random_weights = random
        self.device = device
        self.batch_size = batch_size
        self._torch = torch
        self._state_sha256: str | None = None
        with torch.inference_mode():
            self.dim = int(self.model.encode_text(self.tokenizer(["probe"]).to(device)).shape[-1])

    def encode_images(self, images: list) -> np.ndarray:
        """Embed images given as encoded bytes or PIL images; (n, dim) float32, unit-norm rows."""
        from PIL import Image

        torch = self._torch
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = images[start : start + self.batch_size]
                pils = [Image.open(io.BytesIO(b)) if isinstance(b, (bytes, bytearray)) else b for b in batch]
                x = torch.stack([self.preprocess(p.convert("RGB")) for p in pils]).to(self.device)
                feats = torch.nn.functional.normalize(self.model.encode_image(x).float(), dim=-1)
                out[start : start + len(batch)] = feats.cpu().numpy()
        return out

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Embed query texts into the image space; (n, dim) float32, unit-norm rows."""
        torch = self._torch
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = texts[start : start + self.batch_size]
                tokens = self.tokenizer(batch).to(self.device)
                feats = torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1)
                out[start : start + len(batch)] = feats.cpu().numpy()
        return out

    def describe(self) -> dict:
        """Model, weights source and checksums, for the manifest."""
        from mmrag_core.models.fingerprint import weights_checksums

        source = self.model_name[len("local-dir:"):] if self.model_name.startswith("local-dir:") else self.pretrained
        return {
            "name": self.model_name,
            "pretrained": self.pretrained,
            "random_weights": self.random_weights,
            "dim": self.dim,
            "weights_sha256": weights_checksums(source) if source and Path(source).exists() else {},
            "state_sha256": self.state_sha256,
        }

    @property
    def state_sha256(self) -> str:
        """The fingerprint of the loaded weights (computed once): what a query checks against the manifest."""
        if self._state_sha256 is None:
            from mmrag_core.models.fingerprint import state_fingerprint

            self._state_sha256 = state_fingerprint(self.model)
        return self._state_sha256
