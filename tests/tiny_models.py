"""Tiny models of the real architectures, built in a temporary folder, for tests.

``make_tiny_clip(folder)`` writes an open_clip ``local-dir:`` model folder (``open_clip_config.json`` +
``open_clip_model.safetensors``) holding a 2-layer ViT CLIP with random (seeded) weights, so the real
open_clip loading path is exercised without any model hub::

    from tests.tiny_models import make_tiny_clip
    clip_dir = make_tiny_clip(tmp_path / "clip")
    ClipEncoder(f"local-dir:{clip_dir}", None)

``make_tiny_blip2(folder)`` writes a ``save_pretrained`` folder of a tiny BLIP-2 (ViT, Q-Former, OPT; random
seeded weights) with its processor and an offline-built tokenizer, loadable by ``Captioner(str(folder))``.
"""
from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

TINY_CLIP_EMBED_DIM = 32

TINY_CLIP_MODEL_CFG: dict = {
    "embed_dim": TINY_CLIP_EMBED_DIM,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def tiny_clip_model_cfg() -> dict:
    """A fresh copy of the tiny model config (open_clip mutates the dicts it is given)."""
    return copy.deepcopy(TINY_CLIP_MODEL_CFG)


def build_tiny_clip(seed: int = 0):  # noqa: ANN201 - open_clip.model.CLIP
    """An ``open_clip.model.CLIP`` of the tiny config with seeded random weights."""
    import torch
    from open_clip.model import CLIP

    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = CLIP(**tiny_clip_model_cfg())
    finally:
        torch.random.set_rng_state(gen_state)
    return model.eval()


def make_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """Write a tiny open_clip ``local-dir:`` model into ``folder`` and return ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": tiny_clip_model_cfg(), "preprocess_cfg": {}}, indent=2)
    )
    state = {k: v.detach().contiguous() for k, v in build_tiny_clip(seed).state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    return folder


def make_tiny_clip_checkpoint(folder: Path, name: str = "mmrag-tiny-vit", seed: int = 0) -> tuple[Path, Path]:
    """Write an open_clip model-config JSON (``<name>.json``, just the model config) and a
    ``torch.save``'d state dict; returns (config_json, checkpoint_pt). Load with
    ``ClipEncoder(name, str(checkpoint_pt), model_config=str(config_json))``."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"{name}.json"
    config.write_text(json.dumps(tiny_clip_model_cfg(), indent=2))
    checkpoint = folder / f"{name}.pt"
    torch.save(build_tiny_clip(seed).state_dict(), checkpoint)
    return config, checkpoint


def force_hf_offline(monkeypatch) -> None:  # noqa: ANN001 - pytest.MonkeyPatch
    """Make huggingface_hub refuse network access now (it reads HF_HUB_OFFLINE only at import)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hf_constants

    if not hf_constants.HF_HUB_OFFLINE:
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)


@contextlib.contextmanager
def single_torch_thread() -> Iterator[None]:
    """Run torch on one intra-op thread for the duration (restored after).

    The models in these tests are tiny; on a busy CI machine several OpenMP threads per process
    oversubscribe the cores and make each forward pass many times slower than one thread is.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Autouse in every test module that imports it: its models run on one torch thread (see above)."""
    with single_torch_thread():
        yield


# Words of the tiny BLIP-2's vocabulary: captions made of them read as words (a byte-level vocabulary would
# give random bytes), so a caption embedded in the text space is text a query can repeat.
TINY_BLIP2_WORDS = (
    "a", "photo", "of", "the", "an", "in", "on", "with", "and", "red", "blue", "green", "bus", "street", "chart",
    "bar", "line", "graph", "revenue", "year", "page", "text", "table", "figure", "diagram", "map", "plot", "dog",
    "cat", "tree", "house", "car", "sky", "water", "person", "people", "sign", "logo", "drawing", "scan",
    "document", "form", "Question", "Answer", "what", "does", "this", "show", "is", "are", ":", "?", ".",
)


def make_tiny_blip2(folder: Path, seed: int = 0, num_query_tokens: int = 4) -> Path:
    """Write a tiny ``Blip2ForConditionalGeneration`` (ViT vision tower, Q-Former, OPT language model; seeded
    random weights) with its ``Blip2Processor`` (a word-level tokenizer built offline, a 32-px
    ``BlipImageProcessor``) into ``folder`` with ``save_pretrained``; returns ``folder``. Its generation config
    suppresses the special tokens, so every caption has ``max_new_tokens`` words."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        Blip2QFormerConfig,
        Blip2VisionConfig,
        BlipImageProcessor,
        OPTConfig,
        PreTrainedTokenizerFast,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<pad>", "</s>", "<unk>"]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(specials + list(TINY_BLIP2_WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="</s> $A", special_tokens=[("</s>", vocab["</s>"])])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="</s>", eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>")
    processor = Blip2Processor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer,
                               num_query_tokens=num_query_tokens)  # adds the <image> token to the tokenizer
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    config = Blip2Config(
        vision_config=Blip2VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, image_size=32, patch_size=8),
        qformer_config=Blip2QFormerConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                          intermediate_size=64, vocab_size=64, max_position_embeddings=64),
        text_config=OPTConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              ffn_dim=64, max_position_embeddings=128, word_embed_proj_dim=32,
                              pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                              eos_token_id=tokenizer.eos_token_id),
        num_query_tokens=num_query_tokens,
        image_token_index=image_token,
    )
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = Blip2ForConditionalGeneration(config).eval()
    finally:
        torch.random.set_rng_state(gen_state)
    model.generation_config.suppress_tokens = [vocab["<pad>"], vocab["</s>"], vocab["<unk>"], image_token]
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
