"""``mmrag models fetch``: download the configured model weights once (on a machine with network) into a folder,
and print the settings that make mmrag read them from there, so indexing and queries then run offline."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mmrag_core.config import Settings, load_settings


def cmd_models(args: argparse.Namespace) -> int:
    """Fetch the weights (``fetch``, the only action); 2 with one line saying why when the hub is unreachable."""
    from mmrag_core.models.hub import env_flag, hub_host, hub_reachable

    settings = load_settings(args.config)
    host, port = hub_host()
    if env_flag(os.environ.get("HF_HUB_OFFLINE", "")):
        print("mmrag models fetch: HF_HUB_OFFLINE=1 is set; unset it to download (nothing downloaded)",
              file=sys.stderr)
        return 2
    if not hub_reachable(timeout=5.0):
        print(f"mmrag models fetch: cannot reach the model hub {host}:{port} (no network, or a proxy or firewall "
              "in the way); nothing downloaded", file=sys.stderr)
        return 2
    to = Path(args.to).expanduser().resolve()
    to.mkdir(parents=True, exist_ok=True)
    try:
        lines = fetch_models(settings, to)
    except Exception as e:  # noqa: BLE001 - a hub error (404, auth, a dropped connection) in one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"mmrag models fetch: download failed: {first}", file=sys.stderr)
        return 2
    print(f"models in {to}; settings that use them (environment, or the same keys in a --config YAML file):")
    for line in lines:
        print(f"  {line}")
    return 0


def fetch_models(settings: Settings, to: Path) -> list[str]:
    """Download CLIP (unless off), BLIP-2 (when captioning is on) and a hub text model into ``to``; the settings
    (``NAME=value``) that point at them, and a comment for what needs nothing."""
    from huggingface_hub import snapshot_download

    lines: list[str] = []
    clip, tag = settings.clip_model, settings.clip_pretrained
    if clip.lower() == "off" or clip.startswith(("local-dir:", "store:")) or Path(tag).exists():
        lines.append(f"# CLIP: {clip} {tag}: nothing to download")
    else:
        import open_clip

        cfg = open_clip.get_pretrained_cfg(clip, tag)
        if not cfg:
            raise ValueError(f"open_clip knows no pretrained tag {tag!r} for model {clip!r}")
        path = open_clip.download_pretrained(cfg, cache_dir=str(to / "clip"))
        lines.append(f"MMRAG_CLIP_PRETRAINED={path}")
    if settings.caption_enabled and not Path(settings.caption_model).exists():
        folder = to / settings.caption_model.replace("/", "--")
        snapshot_download(settings.caption_model, local_dir=str(folder))
        lines.append(f"MMRAG_CAPTION_MODEL={folder}")
    elif not settings.caption_enabled:
        lines.append("# BLIP-2: captioning is off (MMRAG_CAPTION_ENABLED=false): nothing to download")
    text = settings.text_model
    packaged = text.lower() in ("all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
    if packaged or Path(text).exists() or text.startswith("store:"):
        lines.append(f"# text: {text} is packaged, a folder or in the store: nothing to download")
    else:
        folder = to / text.replace("/", "--")
        snapshot_download(text, local_dir=str(folder))
        lines.append(f"MMRAG_TEXT_MODEL={folder}")
    return lines
