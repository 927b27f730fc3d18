"""Model actors: each loads its model once and serves many batches (embeddings of a space, or BLIP-2 captions);
a pool spreads them over nodes. A small job loads the same models in its own process instead
(:class:`InProcessEncoder`), called the same way."""
from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import numpy as np
import ray

from mmrag_core.config import Settings
from mmrag_core.models import ModelUnavailable
from mmrag_core.storage.items import Space
from tasks.encoder_threads import encode_threads
from tasks.ray_runtime import encoder_gpus
from tasks.refs import Resolved

log = logging.getLogger(__name__)


class _EncoderActor:
    """Holds one space's encoder (``text``, ``image``) or the captioner (``caption``: ``encode`` gives captions).
    When CLIP weights cannot be loaded it says why instead of failing; the text model and the captioner, which
    the run cannot do without, fail the actor with the reason."""

    def __init__(self, space: str, settings: Settings) -> None:
        import os

        # A limit meant for tesseract (set where OCR runs) must not cap this actor's torch threads: libgomp reads
        # it once, when torch loads.
        os.environ.pop("OMP_THREAD_LIMIT", None)
        import torch

        # Ray pins OMP_NUM_THREADS to the actor's CPU slots (1 with none); a model actor should use the cores
        # it reserved, or the node's when it reserved none.
        reserved = int(settings.encoder_num_cpus)
        torch.set_num_threads(max(1, reserved or settings.num_cpus or os.cpu_count() or 1))
        self.cores = (reserved, settings.num_cpus or os.cpu_count() or 1)  # encode_threads(*), per batch
        self.space = space
        self.model_config = settings.clip_model_config
        self.encoder = None
        self.skipped: str | None = None
        try:
            if space == "text":
                from mmrag_core.models.stored import text_model_store
                from mmrag_core.models.text_encoder import TextEncoder

                self.encoder = TextEncoder(settings.text_model, settings.device, settings.embed_batch_size,
                                           store=text_model_store(settings))
            elif space == "caption":
                from mmrag_core.models.captioner import Captioner

                self.encoder = Captioner(settings.caption_model, settings.caption_prompt, settings.device,
                                         settings.caption_batch_size, settings.caption_max_new_tokens)
            else:
                from mmrag_core.models.clip_encoder import ClipEncoder
                from mmrag_core.models.stored import model_store

                self.encoder = ClipEncoder(settings.clip_model, settings.clip_pretrained, settings.clip_model_config,
                                           settings.device, settings.embed_batch_size,
                                           store=model_store(settings, settings.clip_model))
        except ModelUnavailable as e:
            if space != "image":
                raise
            self.skipped = str(e)

    def describe(self) -> dict:
        """The model description for the manifest, or ``{"skipped": reason}``."""
        if self.encoder is None:
            return {"skipped": self.skipped}
        desc = self.encoder.describe()
        if self.space == Space.IMAGE:
            desc["model_config"] = self.model_config
        return desc

    def node_id(self) -> str:
        """The Ray node this actor lives on."""
        return ray.get_runtime_context().get_node_id()

    def encode(self, inputs: list) -> np.ndarray | list[str]:
        """Vectors of ``inputs`` (texts or image bytes), or for ``caption`` one caption per image."""
        if self.encoder is None:
            raise RuntimeError(f"{self.space} space is skipped: {self.skipped}")
        if self.space == "text":
            # In the driver's own process (a small job, no Ray) the threads set at load stay: nothing runs beside it.
            threads = (lambda: encode_threads(*self.cores)) if ray.is_initialized() else None  # per batch
            return self.encoder.encode(inputs, threads=threads)
        if self.space == "caption":
            return self.encoder.caption(inputs)
        return self.encoder.encode_images(inputs)


# num_cpus=0 by default: a model actor holds no CPU slot, so extraction tasks keep every core while it idles.
# Encoding is a pure function of its inputs, so an actor lost with its node is restarted (reloading its model)
# and the calls it had are retried there: a lost worker costs a reload, not the run.
EncoderActor = ray.remote(num_cpus=0, max_restarts=2, max_task_retries=2)(_EncoderActor)


class _EncoderPool:
    """``embed_actors`` encoder actors of one space behind the interface of one (``describe``, ``encode``).

    The actors are placed with SPREAD, so on a cluster they land on different nodes. A call's inputs are
    cut into at most one part per actor (at least ``embed_batch_size`` inputs each) and sent to the least
    busy actors, so one large batch uses them all and concurrent batches share them. The pool owns its
    actors: killing the pool kills them (Ray ends an actor whose owner dies), so a caller that kills what
    ``start_encoders`` gave it cleans up the same way for one actor or a pool.
    """

    def __init__(self, space: str, settings: Settings) -> None:
        options = {"num_cpus": settings.encoder_num_cpus, "num_gpus": encoder_gpus(settings),
                   "scheduling_strategy": "SPREAD"}
        self.actors = [EncoderActor.options(**options).remote(space, settings)
                       for _ in range(actors_of(space, settings))]
        self.busy = [0] * len(self.actors)  # inputs sent and not yet answered, per actor
        self.min_part = max(1, settings.caption_batch_size if space == "caption" else settings.embed_batch_size)

    async def describe(self) -> dict:
        """The first actor's description, once every actor has loaded its model (all load the same one)."""
        descs = await asyncio.gather(*[a.describe.remote() for a in self.actors])
        return descs[0]

    async def node_ids(self) -> list[str]:
        """The Ray node of each actor."""
        return list(await asyncio.gather(*[a.node_id.remote() for a in self.actors]))

    async def encode(self, inputs: list) -> np.ndarray | list[str]:
        n_parts = max(1, min(len(self.actors), math.ceil(len(inputs) / self.min_part)))
        size = max(1, math.ceil(len(inputs) / n_parts))
        parts = [inputs[i : i + size] for i in range(0, len(inputs), size)] or [inputs]
        chosen = sorted(range(len(self.actors)), key=lambda i: self.busy[i])[: len(parts)]
        for i, part in zip(chosen, parts):
            self.busy[i] += len(part)
        try:
            out = await asyncio.gather(*[self.actors[i].encode.remote(p) for i, p in zip(chosen, parts)])
        finally:
            for i, part in zip(chosen, parts):
                self.busy[i] -= len(part)
        if len(out) == 1:
            return out[0]
        return np.concatenate(out) if isinstance(out[0], np.ndarray) else [c for part in out for c in part]


# An async actor answers many calls at once; it only forwards them, so it needs no CPU slot.
EncoderPool = ray.remote(num_cpus=0, max_restarts=2, max_task_retries=2)(_EncoderPool)


def actors_of(space: str, settings: Settings) -> int:
    """How many actors serve ``space``: ``caption_actors`` for the captioner, ``embed_actors`` for a space."""
    return settings.caption_actors if space == "caption" else settings.embed_actors


def model_spaces(settings: Settings) -> list[str]:
    """The models a run loads: ``text`` always, ``image`` when CLIP is enabled, ``caption`` when captioning is."""
    return ["text"] + (["image"] if settings.clip_enabled else []) + (["caption"] if settings.caption_enabled else [])


def start_encoders(settings: Settings) -> dict[str, ray.actor.ActorHandle]:
    """One encoder per space (``text`` always; ``image`` when CLIP is enabled) and the captioner (``caption``,
    when captioning is enabled): a single actor, or a pool when its actor count is above 1. All answer
    ``describe`` and ``encode``."""
    spaces = model_spaces(settings)
    options = {"num_cpus": settings.encoder_num_cpus, "num_gpus": encoder_gpus(settings)}
    return {s: EncoderPool.remote(s, settings) if actors_of(s, settings) > 1
            else EncoderActor.options(**options).remote(s, settings) for s in spaces}


class _InProcessMethod:
    def __init__(self, bound: Any) -> None:
        self.bound = bound

    def remote(self, *args: Any) -> Resolved:
        return Resolved(self.bound(*args))


class InProcessEncoder:
    """A model loaded in this process, called the way an encoder actor is (``enc.encode.remote(x)``, then
    :func:`tasks.refs.resolve`), so the index flow's tasks run the same code for a small job without Ray. It is
    the very actor class, instantiated here: the same models, settings and descriptions as in an actor."""

    def __init__(self, space: str, settings: Settings) -> None:
        self.inner = _EncoderActor(space, settings)

    def __getattr__(self, name: str) -> _InProcessMethod:
        if name.startswith("_") or not callable(getattr(_EncoderActor, name, None)):  # an actor's methods only
            raise AttributeError(name)
        return _InProcessMethod(getattr(self.inner, name))


def load_in_process_encoders(settings: Settings) -> dict[str, InProcessEncoder]:
    """The run's models (:func:`model_spaces`) loaded in this process, each once."""
    return {s: InProcessEncoder(s, settings) for s in model_spaces(settings)}
