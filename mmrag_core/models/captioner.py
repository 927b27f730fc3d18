"""BLIP-2 captions of images (figures, page renders, image files), through transformers.

The model is ``Blip2ForConditionalGeneration`` with its ``Blip2Processor``, loaded with ``from_pretrained`` from a
hub id or a local folder; fp16 on a GPU, fp32 on CPU. A caption continues the configured prompt ("a photo of"),
or answers it when the prompt is a question ("Question: what does this chart show? Answer:"); only the
generated words are kept.
"""
from __future__ import annotations

import copy
import io
import logging
from pathlib import Path

from mmrag_core.models import ModelUnavailable

log = logging.getLogger(__name__)

HOW_TO_PROVIDE = (
    "Set MMRAG_CAPTION_MODEL to a local folder holding a BLIP-2 model saved with save_pretrained (config.json, "
    "the weights, preprocessor_config.json and the tokenizer files), e.g. one fetched once with "
    "`huggingface-cli download Salesforce/blip2-opt-2.7b --local-dir /models/blip2-opt-2.7b`; or unset "
    "HF_HUB_OFFLINE so that transformers downloads the hub id (network needed once); or turn captioning off "
    "(MMRAG_CAPTION_ENABLED=false)."
)


def _first_line(e: Exception, limit: int = 200) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def model_folder(model: str) -> Path | None:
    """The folder the model's files are in: ``model`` itself when it is a folder, else the hub cache's snapshot
    of it (None when it is not cached), so the manifest can record the weights' checksums either way."""
    if Path(model).is_dir():
        return Path(model)
    try:
        from transformers.utils import cached_file

        config = cached_file(model, "config.json", local_files_only=True)
    except (OSError, ValueError):
        return None
    return Path(config).parent if config else None


class Captioner:
    """Batched BLIP-2 captioning; ``caption`` gives one cleaned-up string per image (may be empty)."""

    def __init__(
        self,
        model: str,
        prompt: str = "a photo of",
        device: str = "cpu",
        batch_size: int = 8,
        max_new_tokens: int = 30,
    ) -> None:
        import torch
        from transformers import Blip2ForConditionalGeneration, Blip2Processor
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.dtype = torch.float16 if device.startswith("cuda") else torch.float32
        try:
            self.processor = Blip2Processor.from_pretrained(model)
            self.model = Blip2ForConditionalGeneration.from_pretrained(model, dtype=self.dtype).to(device).eval()
        except (OSError, ValueError, KeyError) as e:
            raise ModelUnavailable(
                f"BLIP-2 caption model {model!r} could not be loaded: {_first_line(e)}. {HOW_TO_PROVIDE}"
            ) from e
        self.name = model
        self.prompt = prompt
        self.device = device
        self.batch_size = max(1, batch_size)
        self.max_new_tokens = max_new_tokens
        # The model's own generation config (generation_config.json: stop tokens, beams...), passed on explicitly:
        # BLIP-2's generate would otherwise use its language model's defaults.
        self.generation = copy.deepcopy(self.model.generation_config)
        self.generation.max_new_tokens = max_new_tokens
        self._torch = torch

    def caption(self, images: list) -> list[str]:
        """Captions of images given as encoded bytes or PIL images, in order; whitespace collapsed."""
        from PIL import Image

        out: list[str] = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size]
            pils = [(Image.open(io.BytesIO(b)) if isinstance(b, (bytes, bytearray)) else b).convert("RGB")
                    for b in batch]
            out.extend(self._caption_batch(pils))
        return out

    def _caption_batch(self, pils: list) -> list[str]:
        torch = self._torch
        # One prompt for the whole batch: every row has the same tokens, so no padding is involved.
        enc = self.processor(images=pils, text=[self.prompt] * len(pils), return_tensors="pt").to(self.device)
        enc["pixel_values"] = enc["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            generated = self.model.generate(**enc, generation_config=self.generation)
        if self.model.config.use_decoder_only_language_model:
            generated = generated[:, enc["input_ids"].shape[1] :]  # a decoder-only LM returns the prompt too
        texts = self.processor.tokenizer.batch_decode(generated, skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]

    def describe(self) -> dict:
        """Model, prompt, dtype and weight checksums, for the manifest (and the record key)."""
        from mmrag_core.models.fingerprint import weights_checksums

        folder = model_folder(self.name)
        return {
            "name": self.name,
            "path": str(folder) if folder is not None else None,
            "prompt": self.prompt,
            "max_new_tokens": self.max_new_tokens,
            "dtype": str(self.dtype).removeprefix("torch."),
            "weights_sha256": weights_checksums(folder) if folder is not None else {},
        }
