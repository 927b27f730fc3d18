"""Checksums of model weights, so a manifest says exactly which weights built an index, and a query can
check that it encodes with the same ones."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from mmrag_core.storage.checksums import sha256_file

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf")


def weights_checksums(path: str | Path) -> dict[str, str]:
    """sha256 of each weight file at ``path`` (a file, or a folder scanned one level deep)."""
    p = Path(path)
    if p.is_file():
        return {p.name: sha256_file(p)}
    if not p.is_dir():
        return {}
    return {f.name: sha256_file(f) for f in sorted(p.iterdir()) if f.is_file() and f.suffix in _WEIGHT_SUFFIXES}


def state_fingerprint(model: Any, sample: int = 4096) -> str:
    """A 16-hex fingerprint of a torch module's loaded weights, whatever their source (a file, a pretrained tag
    in a hub cache, random init): per tensor its name, shape, dtype and an evenly spaced sample of ``sample``
    values. No sums: a reduction's rounding depends on the thread count, and the fingerprint must not. Cheap,
    and different for any other weights in practice (fine-tuning, even LoRA merged, moves whole matrices);
    unlike file checksums it also covers weights that never were a file."""
    import torch

    h = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            flat = tensor.detach().reshape(-1)
            h.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
            if flat.numel() == 0:
                continue
            step = max(1, flat.numel() // sample)
            h.update(flat[::step][:sample].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]
