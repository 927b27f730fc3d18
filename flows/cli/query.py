"""``mmrag query`` and ``mmrag ask``: search a snapshot, or answer a question from it with citations. The engine
and the generator load inside the commands, so the other commands start without them."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from flows.cli.common import command_settings


def cmd_query(args: argparse.Namespace) -> int:
    """Print the hits of a text and/or image query (2 when neither is given)."""
    from mmrag_core.query.engine import open_engine
    from mmrag_core.query.filters import QueryFilters

    settings = command_settings(args)
    if not args.text and not args.image:
        print("mmrag query: give query text, --image PATH, or both", file=sys.stderr)
        return 2
    filters = QueryFilters.parse({"source": args.filter_source, "doc": args.filter_doc, "kind": args.filter_kind,
                                  "pages": args.pages})
    engine = open_engine(settings, args.snapshot)
    snap = engine.snapshot
    strategy = args.strategy or engine.strategy
    hits = engine.search(args.text, args.image, args.k or settings.k, strategy=strategy, filters=filters,
                         fusion=args.fusion, dedupe=False if args.all_items else None)
    if args.json:
        print(json.dumps({"snapshot": snap.id, "query": args.text, "strategy": strategy, "filters": filters.to_dict(),
                          "hits": [h.to_dict() for h in hits]}, indent=2))
        return 0
    print(f"snapshot {snap.id} - {len(hits)} hits, strategy {strategy} (pages are 0-based)")
    for n, h in enumerate(hits, 1):
        spaces = ", ".join(f"{s}#{r}" for s, r in h.ranks.items())
        print(f"{n:2d}. {h.score:.4f} [{h.kind}] {h.source_uri} page {h.page} ({spaces})")
        if h.snippet:
            print(f"      {h.snippet}")
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    """Stream a cited answer, then its sources (or print it all as JSON); 1 when no answer could be generated."""
    from mmrag_core.answer.answering import ask
    from mmrag_core.query.engine import open_engine
    from mmrag_core.answer.generators import GenerationError, make_generator
    from mmrag_core.models import ModelUnavailable

    settings = command_settings(args, generator=args.generator, generator_model=args.model,
                                generator_max_new_tokens=args.max_new_tokens)
    engine = open_engine(settings, args.snapshot)
    try:
        generator = make_generator(settings.answer, settings.models.device)
        answer = ask(engine, args.question, generator, settings, args.image, args.k,
                     None if args.json else lambda piece: print(piece, end="", flush=True))
    except (GenerationError, ModelUnavailable) as e:
        print(f"\nmmrag ask: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answer.to_dict(), indent=2))
    else:
        _print_answer_sources(answer)
    return 0


def _print_answer_sources(answer: Any) -> None:
    """After the streamed answer: its numbered sources (file, 0-based page), the cited ones marked, and a
    warning for each citation that names no source."""
    cited = set(answer.citations)
    print(f"\n\nsources (snapshot {answer.snapshot}; pages are 0-based; * = cited):")
    for s in answer.sources:
        print(f"{'*' if s.number in cited else ' '} [{s.number}] {s.file} page {s.page} ({s.kind})  {s.source_uri}")
    for note in answer.notes:
        print(f"note: {note}", file=sys.stderr)
    if answer.sources and not answer.citations:
        print("warning: the answer cites no source", file=sys.stderr)
    if answer.invalid_citations:
        numbers = ", ".join(f"[{n}]" for n in answer.invalid_citations)
        print(f"warning: the answer cites {numbers}, which name(s) no source (there are {len(answer.sources)})",
              file=sys.stderr)
