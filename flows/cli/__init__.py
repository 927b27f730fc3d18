"""The ``mmrag`` command line: index a source, query a snapshot, ask for a cited answer, evaluate retrieval
(and answers), list snapshots, show settings. The parser lives in ``parser``, each group of commands in its
own module; ``main`` maps errors the commands raise to exit codes."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from flows.cli.evaluate import cmd_eval
from flows.cli.index import cmd_compact, cmd_index
from flows.cli.parser import build_parser
from flows.cli.query import cmd_ask, cmd_query
from flows.cli.service import cmd_config, cmd_deploy, cmd_serve, cmd_worker
from flows.cli.snapshots import cmd_snapshots
from mmrag_core.snapshot.open import NothingToPublish, SnapshotError
from mmrag_core.storage.lock import StoreLocked

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "index": cmd_index, "query": cmd_query, "ask": cmd_ask, "eval": cmd_eval, "snapshots": cmd_snapshots,
    "compact": cmd_compact, "serve": cmd_serve, "config": cmd_config, "deploy": cmd_deploy, "worker": cmd_worker,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mmrag`` console script: 1 nothing to publish, 2 bad input or snapshot, 3 store
    locked; otherwise the command's own exit status."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Prefect's temporary API server migrates its database on first start; 20 s (its default) is not
    # enough on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    args = build_parser().parse_args(argv)
    handler = COMMANDS[args.command]

    try:
        return handler(args)
    except NothingToPublish as e:
        print(f"mmrag {args.command}: {e}", file=sys.stderr)
        return 1
    except StoreLocked as e:
        print(f"mmrag {args.command}: {e}", file=sys.stderr)
        return 3
    except (FileNotFoundError, ValueError, SnapshotError) as e:
        print(f"mmrag {args.command}: {e}", file=sys.stderr)
        return 2
