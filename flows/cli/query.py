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
    from mmrag_core.storage.names import printable

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
    print(f"snapshot {snap.id} - {len(hits)} hits, strategy {strategy}")
    for n, h in enumerate(hits, 1):
        spaces = ", ".join(f"{s}#{r}" for s, r in h.ranks.items())
        print(f"{n:2d}. {h.score:.4f} [{h.kind}] {printable(h.source_uri)} p. {h.page + 1} ({spaces})")
        if h.snippet:
            print(f"      {printable(h.snippet)}")
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    """Answer extractively (the default), or stream a generated answer with ``--generator``; then the citations
    and sources (or all of it as JSON). 1 when no answer could be generated."""
    from mmrag_core.query.engine import open_engine

    settings = command_settings(args, generator=args.generator, generator_model=args.model,
                                generator_max_new_tokens=args.max_new_tokens,
                                answerer="generator" if args.generator else None)
    engine = open_engine(settings, args.snapshot)
    if settings.answerer == "extractive":
        from mmrag_core.answer.offline import ask_extractive

        result = ask_extractive(engine, args.question, settings, args.image, args.k).to_dict()
        print(json.dumps(result, indent=2) if args.json else extractive_text(result))
        return 0
    from mmrag_core.answer.answering import ask
    from mmrag_core.answer.generators import GenerationError, make_generator
    from mmrag_core.models import ModelUnavailable

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
        if answer.unsupported:
            print(f"\nunsupported: {', '.join(answer.unsupported)} (in no cited source, nor computed from one)")
            print("extractive answer from the same sources:\n" + extractive_text(answer.extractive or {}))
    return 0


def extractive_text(result: dict) -> str:
    """An extractive answer for a terminal: the answer, its formula, each citation as [n] file p. N with the
    quoted row, or, when it abstains, the closest sources."""
    lines = [result.get("answer", "")]
    if result.get("formula"):
        lines.append(f"formula: {result['formula']}")
    by_number = {s["number"]: s for s in result.get("sources", [])}
    if result.get("cited"):
        lines.append("citations:")
        for c in result["cited"]:
            lines.append(f"  [{c['number']}] {c['file']} {c['page_label']}")
            lines += [f"      \"{q}\"" for q in c["quotes"]]
    elif result.get("closest"):
        lines.append("closest sources:")
        lines += [f"  [{n}] {by_number[n]['file']} p. {by_number[n]['page'] + 1}" for n in result["closest"]
                  if n in by_number]
    if result.get("unsupported"):
        lines.append(f"unsupported: {', '.join(result['unsupported_numbers'])}")
    if result.get("snapshot"):
        lines.append(f"(snapshot {result['snapshot']}, {len(by_number)} sources, {result.get('seconds', 0):.2f} s)")
    return "\n".join(lines)


def _print_answer_sources(answer: Any) -> None:
    """After the streamed answer: its numbered sources (file, 1-based "p. N"), the cited ones marked, and a
    warning for each citation that names no source."""
    from mmrag_core.storage.names import printable

    cited = set(answer.citations)
    print(f"\n\nsources (snapshot {answer.snapshot}; * = cited):")
    for s in answer.sources:
        print(f"{'*' if s.number in cited else ' '} [{s.number}] {printable(s.file)} p. {s.page + 1} ({s.kind})  "
              f"{printable(s.source_uri)}")
    for note in answer.notes:
        print(f"note: {note}", file=sys.stderr)
    if answer.sources and not answer.citations:
        print("warning: the answer cites no source", file=sys.stderr)
    if answer.invalid_citations:
        numbers = ", ".join(f"[{n}]" for n in answer.invalid_citations)
        print(f"warning: the answer cites {numbers}, which name(s) no source (there are {len(answer.sources)})",
              file=sys.stderr)
