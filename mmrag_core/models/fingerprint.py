"""Checksums of model weights, so a manifest says exactly which weights built an index."""
from __future__ import annotations

from pathlib import Path

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
