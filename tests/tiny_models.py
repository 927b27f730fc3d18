"""Tiny models of the real architectures, built in a temporary folder, for tests.

``make_tiny_clip(folder)`` writes an open_clip ``local-dir:`` model folder (``open_clip_config.json`` +
``open_clip_model.safetensors``) holding a 2-layer ViT CLIP with random (seeded) weights, so the real
open_clip loading path is exercised without any model hub::

    from tests.tiny_models import make_tiny_clip
    clip_dir = make_tiny_clip(tmp_path / "clip")
    ClipEncoder(f"local-dir:{clip_dir}", None)
"""
from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from pathlib import Path

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
