"""What several commands share: their settings from ``--config``/``--store``, and the one-line summaries of a
snapshot's spaces that ``index``, ``compact`` and ``snapshots show`` print."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mmrag_core.config import Settings, load_settings


def command_settings(args: argparse.Namespace, **extra: Any) -> Settings:
    """The settings of a command: its ``--config`` file and ``--store``, then ``extra`` (None keeps a setting)."""
    return load_settings(args.config, store=args.store, **extra)


def check_labelled(args: argparse.Namespace) -> None:
    """``--queries`` and ``--qrels`` come together, and name files that exist."""
    if bool(args.queries) != bool(args.qrels):
        raise ValueError("--queries and --qrels go together")
    for path in (args.queries, args.qrels):
        if path and not Path(path).is_file():
            raise FileNotFoundError(f"no such file: {path}")


def space_line(space: str, meta: dict) -> str:
    """A vector space of a manifest in one line, with a retrain advice when its codec is stale."""
    recall = f", recall@10 {meta['recall_at_10']:.3f}" if meta.get("recall_at_10") is not None else ""
    nprobe = f", nprobe {meta['nprobe']}" if meta.get("nprobe") else ""
    line = (f"space {space}: {meta['count']} vectors (dim {meta['dim']}, {meta['index_type']}{nprobe}{recall}), "
            f"{len(meta['shards'])} shard(s), {meta['tombstoned']} tombstoned")
    if meta.get("retrain_recommended"):
        line += f"; RETRAIN RECOMMENDED ({meta['retrain_reason']}): mmrag index SOURCE --retrain"
    return line


def lexical_line(meta: dict) -> str:
    """The BM25 index of a manifest in one line."""
    return (f"lexical: {meta['count']} items (BM25, vocabulary {meta['vocabulary']}, avgdl {meta['avgdl']}), "
            f"{len(meta['shards'])} shard(s), {meta['tombstoned']} dead rows")
