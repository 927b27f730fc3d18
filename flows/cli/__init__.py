"""The ``mmrag`` command line: index a source, query a snapshot, ask for a cited answer, evaluate retrieval
(and answers), list snapshots, show settings. The parser lives in ``parser``, each group of commands in its
own module; ``main`` maps errors the commands raise to exit codes."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from flows.cli.evaluate import cmd_eval
from flows.cli.finetune import cmd_finetune
from flows.cli.index import EXIT_DISK_FULL, cmd_compact, cmd_index
from flows.cli.models import cmd_models
from flows.cli.parser import build_parser
from flows.cli.query import cmd_ask, cmd_query
from flows.cli.rerank import cmd_rerank_train
from flows.cli.service import cmd_config, cmd_deploy, cmd_serve, cmd_worker
from flows.cli.snapshots import cmd_snapshots
from mmrag_core.snapshot.open import NothingToPublish, SnapshotError
from mmrag_core.storage.names import printable
from mmrag_core.storage.lock import StoreLocked

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "index": cmd_index, "query": cmd_query, "ask": cmd_ask, "eval": cmd_eval, "snapshots": cmd_snapshots,
    "compact": cmd_compact, "serve": cmd_serve, "config": cmd_config, "deploy": cmd_deploy, "worker": cmd_worker,
    "finetune": cmd_finetune, "rerank-train": cmd_rerank_train, "models": cmd_models,
}


def quiet_environment() -> None:
    """Before Prefect, Ray or transformers load: no colour codes in output that is not a terminal, no
    telemetry (it fails loudly without network), no download or loading bars; then the libraries' noise."""
    if not (sys.stdout.isatty() and sys.stderr.isatty()):
        os.environ.setdefault("PREFECT_LOGGING_COLORS", "false")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from tasks.worker_logs import quiet_library_logs

    quiet_library_logs()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mmrag`` console script: 1 nothing to publish, 2 bad input or snapshot, 3 store
    locked, 4 out of space, 130/143 stopped by SIGINT/SIGTERM (``mmrag index``); otherwise the command's own
    exit status."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Prefect's temporary API server migrates its database on first start; 20 s (its default) is not
    # enough on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    quiet_environment()
    args = build_parser().parse_args(argv)
    if args.command in ("index", "query", "ask", "eval", "serve", "finetune",
                        "rerank-train"):  # the commands that load models
        from mmrag_core.models.hub import settle_hub_mode

        settle_hub_mode()
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
        print(f"mmrag {args.command}: {printable(e)}", file=sys.stderr)
        return 2
    except OSError as e:
        from tasks.retries import disk_full

        full = disk_full(e)
        if full is None:
            raise
        print(f"mmrag {args.command}: out of space: {printable(full.strerror)} writing "
              f"{printable(full.filename or '?')}: the disk (or quota) holding it is full", file=sys.stderr)
        return EXIT_DISK_FULL
