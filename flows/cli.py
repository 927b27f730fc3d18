"""The ``mmrag`` command line: index a source, query a snapshot, evaluate retrieval, list snapshots, show
settings."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from mmrag_core.config import Settings, load_settings


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", help="store folder (default: settings.store, MMRAG_STORE)")
    p.add_argument("--config", help="YAML settings file (also MMRAG_CONFIG)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmrag", description="Multimodal RAG: index PDFs and images, query snapshots.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="index a folder or file and publish a snapshot")
    p.add_argument("source", help="folder or file to index")
    _common(p)
    p.add_argument("--strict", action="store_true", help="exit 1 if any file or page failed")
    p.add_argument("--clip-model", help="open_clip model name (MMRAG_CLIP_MODEL); 'off' disables the image space")
    p.add_argument("--clip-pretrained", help="open_clip tag, checkpoint path or 'none' (MMRAG_CLIP_PRETRAINED)")
    p.add_argument("--ocr-lang", help="tesseract language(s), e.g. eng+deu")
    p.add_argument("--num-cpus", type=int, help="CPUs for the local Ray")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")

    q = sub.add_parser("query", help="query the latest (or a pinned) snapshot")
    q.add_argument("text", nargs="?", default=None, help="query text")
    q.add_argument("--image", help="query image file")
    q.add_argument("-k", type=int, help="number of hits (default 10)")
    q.add_argument("--snapshot", help="snapshot id (default: LATEST)")
    _common(q)
    q.add_argument("--json", action="store_true", help="print hits as JSON")

    e = sub.add_parser("eval", help="measure retrieval quality of a snapshot against qrels, beside a BM25 baseline")
    e.add_argument("--queries", required=True, help="queries JSON-lines file ({\"query_id\", \"text\", ...} a line)")
    e.add_argument("--qrels", required=True, help="relevance judgements TSV: query_id, corpus_id, score")
    e.add_argument("--snapshot", help="snapshot id (default: LATEST)")
    _common(e)
    e.add_argument("--systems", help="comma-separated, among bm25,text,image,default (default: all available)")
    e.add_argument("--json", metavar="PATH", help="write the rows (and per-query rankings) as JSON")
    e.add_argument("--plot", metavar="PATH", help="write a PNG of the Recall@k curves")

    s = sub.add_parser("snapshots", help="list published snapshots")
    _common(s)

    c = sub.add_parser("config", help="print the effective settings")
    _common(c)
    return parser


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    return load_settings(args.config, store=args.store, **extra)


def cmd_index(args: argparse.Namespace) -> int:
    from flows.index_flow import index_flow

    settings = _settings(args, clip_model=args.clip_model, clip_pretrained=args.clip_pretrained,
                         ocr_lang=args.ocr_lang, num_cpus=args.num_cpus)
    t0 = time.perf_counter()
    manifest = index_flow(args.source, settings.store, settings.model_dump(exclude_defaults=True))
    wall = time.perf_counter() - t0
    if args.json:
        print(json.dumps(manifest, indent=2))
    else:
        _print_index_summary(manifest, wall)
    return 1 if args.strict and manifest["failures"] else 0


def _print_index_summary(m: dict, wall: float) -> None:
    c, st = m["counts"], m["stats"]
    print(f"\nsnapshot {m['id']} published in {wall:.1f} s")
    print(f"  documents: {c['documents']} indexed ({st['documents_processed']} processed, "
          f"{st['documents_reused']} reused), pages processed: {st['pages_processed']} "
          f"({st['ocr_pages']} OCR'd)")
    print("  since the last snapshot: " + ", ".join(f"{n} {k}" for k, n in st["changes"].items()))
    print(f"  items: {c['items']} {c['items_by_kind']}")
    for space, meta in m["spaces"].items():
        print(f"  space {space}: {meta['count']} vectors, dim {meta['dim']}")
    if "skipped" in m["models"].get("image", {}):
        print(f"  space image: SKIPPED - {m['models']['image']['skipped']}")
    if m["failures"]:
        print(f"  failures: {len(m['failures'])}")
        for f in m["failures"]:
            page = f" p{f['page']}" if f.get("page") is not None else ""
            print(f"    - {f['source_uri']}{page} [{f['stage']}]: {f['reason']}")


def cmd_query(args: argparse.Namespace) -> int:
    from mmrag_core.query import QueryEngine
    from mmrag_core.snapshot import open_snapshot
    from mmrag_core.store import Store

    settings = _settings(args)
    if not args.text and not args.image:
        print("mmrag query: give query text, --image PATH, or both", file=sys.stderr)
        return 2
    snap = open_snapshot(Store(settings.store), args.snapshot)
    engine = QueryEngine(snap, settings.device, settings.rrf_k, settings.search_depth)
    hits = engine.search(args.text, args.image, args.k or settings.k)
    if args.json:
        print(json.dumps({"snapshot": snap.id, "query": args.text, "hits": [h.to_dict() for h in hits]}, indent=2))
        return 0
    print(f"snapshot {snap.id} - {len(hits)} hits (pages are 0-based)")
    for n, h in enumerate(hits, 1):
        spaces = ", ".join(f"{s}#{r}" for s, r in h.ranks.items())
        print(f"{n:2d}. {h.score:.4f} [{h.kind}] {h.source_uri} page {h.page} ({spaces})")
        if h.snippet:
            print(f"      {h.snippet}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from mmrag_core import evaluation
    from mmrag_core.query import QueryEngine
    from mmrag_core.snapshot import open_snapshot
    from mmrag_core.store import Store

    settings = _settings(args)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()] if args.systems else None
    queries, qrels = evaluation.load_queries(args.queries), evaluation.load_qrels(args.qrels)
    snap = open_snapshot(Store(settings.store), args.snapshot)
    engine = QueryEngine(snap, settings.device, settings.rrf_k, settings.search_depth)
    result = evaluation.evaluate(engine, queries, qrels, systems)
    print(f"snapshot {result.snapshot} - {result.queries} queries, {result.level}-level qrels (pages are 0-based)\n")
    print(evaluation.markdown_table(result.rows))
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        evaluation.write_json(result, args.json)
    if args.plot:
        evaluation.plot_recall(result, args.plot)
    return 0


def cmd_snapshots(args: argparse.Namespace) -> int:
    from mmrag_core.snapshot import read_manifest
    from mmrag_core.store import Store

    store = Store(_settings(args).store)
    latest = store.latest_id()
    for sid in store.list_snapshots():
        m = read_manifest(store, sid)
        mark = " (LATEST)" if sid == latest else ""
        print(f"{sid}{mark}  items={m['counts']['items']} docs={m['counts']['documents']} "
              f"failures={m['counts']['failures']}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    print(json.dumps(_settings(args).model_dump(), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mmrag`` console script."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    handler = {"index": cmd_index, "query": cmd_query, "eval": cmd_eval, "snapshots": cmd_snapshots,
               "config": cmd_config}[args.command]
    from mmrag_core.snapshot import NothingToPublish, SnapshotError

    try:
        return handler(args)
    except NothingToPublish as e:
        print(f"mmrag {args.command}: {e}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError, SnapshotError) as e:
        print(f"mmrag {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
