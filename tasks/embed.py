"""Embedding actors: each loads its model once and encodes many batches."""
from __future__ import annotations

import logging

import numpy as np
import ray

from mmrag_core.config import Settings
from mmrag_core.models import ModelUnavailable

log = logging.getLogger(__name__)


class _EncoderActor:
    """Holds one space's encoder; when weights cannot be loaded it says why instead of failing."""

    def __init__(self, space: str, settings: Settings) -> None:
        import os

        import torch

        # Ray pins OMP_NUM_THREADS=1 in workers; a model actor should use the machine's cores.
        torch.set_num_threads(max(1, settings.num_cpus or os.cpu_count() or 1))
        self.space = space
        self.model_config = settings.clip_model_config
        self.encoder = None
        self.skipped: str | None = None
        try:
            if space == "text":
                from mmrag_core.models.text_encoder import TextEncoder

                self.encoder = TextEncoder(settings.text_model, settings.device, settings.embed_batch_size)
            else:
                from mmrag_core.models.clip_encoder import ClipEncoder

                self.encoder = ClipEncoder(settings.clip_model, settings.clip_pretrained, settings.clip_model_config,
                                           settings.device, settings.embed_batch_size)
        except ModelUnavailable as e:
            if space == "text":
                raise
            self.skipped = str(e)

    def describe(self) -> dict:
        """The model description for the manifest, or ``{"skipped": reason}``."""
        if self.encoder is None:
            return {"skipped": self.skipped}
        desc = self.encoder.describe()
        if self.space == "image":
            desc["model_config"] = self.model_config
        return desc

    def encode(self, inputs: list) -> np.ndarray:
        if self.encoder is None:
            raise RuntimeError(f"{self.space} space is skipped: {self.skipped}")
        if self.space == "text":
            return self.encoder.encode(inputs)
        return self.encoder.encode_images(inputs)


# num_cpus=0: a model actor holds no CPU slot, so extraction tasks keep every core while it idles.
EncoderActor = ray.remote(num_cpus=0)(_EncoderActor)


def start_encoders(settings: Settings) -> dict[str, ray.actor.ActorHandle]:
    """One actor per space (``text`` always; ``image`` when CLIP is enabled)."""
    spaces = ["text"] + (["image"] if settings.clip_enabled else [])
    gpu = 1 if settings.device.startswith("cuda") else 0
    return {s: EncoderActor.options(num_gpus=gpu).remote(s, settings) for s in spaces}
