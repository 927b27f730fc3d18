"""The ``image`` space encoder: open_clip, for images/figures and, through its text tower, queries.

Weights come from an open_clip pretrained tag, a checkpoint path, or a ``local-dir:`` model folder
(``open_clip_config.json`` + weights). ``none`` builds random weights, which only tests should use.

A model fine-tuned by ``mmrag finetune --space image`` is named ``store:models/image/<id>``: its
``mmrag_model.json`` names the CLIP base (model, pretrained, model config, the base weights' fingerprint) and its
``projection.safetensors`` holds a residual map per tower, applied to the base's normalised embeddings. Its files
are checked against their sha256 and the base against its fingerprint before use.
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
        store: object | None = None,
    ) -> None:
        import open_clip
        import torch

        from mmrag_core.models.stored import is_store_ref

        self.name = model_name  # what a setting and the manifest call it (a stored model: its store: name)
        self.adapter: dict | None = None
        self.projection: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
        if is_store_ref(model_name):
            self.adapter, self.projection = _stored_adapter(store, model_name)
            clip = self.adapter["clip"]  # the base it was trained on, whatever the other settings say
            model_name, pretrained = self.adapter["base"], clip.get("pretrained")
            model_config = clip.get("model_config")
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
        self.model_name = self.name
        self.base_name = model_name
        self.pretrained = "none" if random else pretrained
        self.random_weights = random
        self.device = device
        self.batch_size = batch_size
        self._torch = torch
        self._state_sha256: str | None = None
        with torch.inference_mode():
            self.dim = int(self.model.encode_text(self.tokenizer(["probe"]).to(device)).shape[-1])
        if self.adapter is not None:
            self._check_base()

    def _check_base(self) -> None:
        """A stored model's projection is only right on the base weights it was trained on."""
        from mmrag_core.models.fingerprint import state_fingerprint

        recorded = self.adapter["clip"].get("base_state_sha256")
        loaded = state_fingerprint(self.model)
        if recorded and loaded != recorded:
            raise ModelUnavailable(
                f"image model {self.name!r} was trained on CLIP {self.base_name!r} with state_sha256 {recorded}, "
                f"but the base loaded here has state_sha256 {loaded}. {HOW_TO_PROVIDE}")
        if self.projection is not None and self.projection["image"][0].shape[0] != self.dim:
            raise ModelUnavailable(f"image model {self.name!r}: its projection does not fit CLIP {self.base_name!r} "
                                   f"(dim {self.dim})")

    def _project(self, out: np.ndarray, tower: str) -> np.ndarray:
        """A stored model's residual map of ``tower`` (x + W x + b), then unit length again; else ``out``."""
        if self.projection is None:
            return out
        weight, bias = self.projection[tower]
        out = out + out @ weight.T + bias
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out.astype(np.float32, copy=False)

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
        return self._project(out, "image")

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
        return self._project(out, "text")

    def describe(self) -> dict:
        """Model, weights source and checksums, for the manifest."""
        from mmrag_core.models.fingerprint import weights_checksums

        base = self.base_name
        source = base[len("local-dir:"):] if base.startswith("local-dir:") else self.pretrained
        desc = {
            "name": self.name,
            "pretrained": self.pretrained,
            "random_weights": self.random_weights,
            "dim": self.dim,
            "weights_sha256": weights_checksums(source) if source and Path(source).exists() else {},
            "state_sha256": self.state_sha256,
        }
        if self.adapter is not None:
            desc["fine_tuned"] = {"id": self.adapter["id"], "base": base, "kind": self.adapter.get("kind"),
                                  "parent": self.adapter.get("parent"), "files": self.adapter.get("files", {}),
                                  "base_state_sha256": self.adapter["clip"].get("base_state_sha256")}
        return desc

    @property
    def state_sha256(self) -> str:
        """The fingerprint of the loaded weights (computed once): what a query checks against the manifest."""
        if self._state_sha256 is None:
            from mmrag_core.models.fingerprint import state_fingerprint

            self._state_sha256 = state_fingerprint(self.model)
            if self.projection is not None:  # the projection is part of the weights a query must match
                import hashlib

                h = hashlib.sha256(self._state_sha256.encode())
                for tower in sorted(self.projection):
                    for a in self.projection[tower]:
                        h.update(np.ascontiguousarray(a, dtype=np.float32).tobytes())
                self._state_sha256 = h.hexdigest()[:16]
        return self._state_sha256


def _stored_adapter(store: object, ref: str) -> tuple[dict, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The metadata and per-tower (weight, bias) of a fine-tuned image model in ``store`` (files checked)."""
    from safetensors.numpy import load_file

    from mmrag_core.models.stored import fetch_stored_model, read_meta

    folder = fetch_stored_model(store, ref)
    meta = read_meta(folder)
    if meta.get("space") != "image" or "clip" not in meta:
        raise ModelUnavailable(f"{ref!r} is a {meta.get('space')!r} space model, not a fine-tuned CLIP "
                               "(models/image/<id>)")
    tensors = load_file(str(folder / "projection.safetensors"))
    towers = {t: (tensors[f"{t}.weight"].astype(np.float32), tensors[f"{t}.bias"].astype(np.float32))
              for t in ("text", "image")}
    return meta, towers
