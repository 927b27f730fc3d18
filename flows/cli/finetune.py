"""``mmrag finetune``: train an adapter of the text encoder (or, ``--space image``, of CLIP) on a store's snapshot
and keep the versioned model in the store (``models/<space>/<id>/``); ``--text-model store:models/text/<id>`` (or
``--clip-model store:models/image/<id>``) on ``mmrag index`` then uses it."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from flows.cli.common import check_labelled, command_settings


def cmd_finetune(args: argparse.Namespace) -> int:
    """Run the ``finetune`` flow and print its summary (and write it as JSON with ``--json PATH``)."""
    from flows.finetune_flow import finetune_flow
    from flows.params import overrides_of

    check_labelled(args)
    settings = command_settings(args, finetune_workers=args.workers, finetune_method=args.method)
    result = finetune_flow(settings.store, args.queries, args.qrels, args.synthetic, args.max_steps, args.space,
                           overrides_of(settings), promote=True if args.promote else None, source=args.source)
    print(f"model {result['model_id']} ({result['space']} space): {result['pairs']} training pairs, "
          f"{result['steps']} steps ({result['stopped']}), validation loss {result['val_loss_before']:.4f} -> "
          f"{result['val_loss_after']:.4f}, {result['pairs_per_second']:.1f} pairs/s, {result['wall_seconds']:.0f} s")
    gate = result.get("promotion")
    if gate:
        print(f"promotion gate: {gate['decision']} ({gate['reason']})")
    else:
        flag = "--clip-model" if result["space"] == "image" else "--text-model"
        print(f"use it: mmrag index SOURCE --store {settings.store} {flag} {result['path']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    return 0
