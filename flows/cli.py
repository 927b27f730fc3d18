"""The ``mmrag`` command line: index a source, query a snapshot, ask for a cited answer, evaluate retrieval
(and answers), list snapshots, show settings."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from mmrag_core.config import Settings, load_settings
from mmrag_core.storage.lock import StoreLocked
from mmrag_core.query.engine import FUSION_METHODS, STRATEGIES
from mmrag_core.snapshot.open import NothingToPublish, SnapshotError


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
    p.add_argument("--retrain", action="store_true",
                   help="train new codecs on the whole corpus and encode every document again")
    p.add_argument("--json", action="store_true", help="print the run report (with the manifest) as JSON")

    q = sub.add_parser("query", help="query the latest (or a pinned) snapshot")
    q.add_argument("text", nargs="?", default=None, help="query text")
    q.add_argument("--image", help="query image file")
    q.add_argument("-k", type=int, help="number of hits (default 10)")
    q.add_argument("--snapshot", help="snapshot id (default: LATEST)")
    _common(q)
    q.add_argument("--json", action="store_true", help="print hits as JSON")
    q.add_argument("--strategy", choices=STRATEGIES,
                   help="how ranked lists are produced and combined (default: settings.fusion_strategy)")
    q.add_argument("--fusion", choices=FUSION_METHODS, help="late fusion: rrf or weighted (default: settings.fusion_method)")
    q.add_argument("--filter-source", action="append", metavar="PREFIX", help="only hits whose source URI starts "
                   "with PREFIX (repeat for any of several)")
    q.add_argument("--filter-doc", action="append", metavar="DOC", help="only hits of this document: file name, "
                   "name without extension or sha256 (repeatable)")
    q.add_argument("--filter-kind", action="append", metavar="KIND", help="only hits of this kind: chunk, figure, "
                   "image (repeatable)")
    q.add_argument("--pages", metavar="A-B", help="only hits on pages A to B (0-based, inclusive; 'A-', '-B', 'A')")
    q.add_argument("--all-items", action="store_true", help="every matching item, not one hit per page")

    e = sub.add_parser("eval", help="measure retrieval quality of a snapshot against qrels, beside a BM25 baseline")
    e.add_argument("--queries", required=True, help="queries JSON-lines file ({\"query_id\", \"text\", ...} a line)")
    e.add_argument("--qrels", required=True, help="relevance judgements TSV: query_id, corpus_id, score")
    e.add_argument("--snapshot", help="snapshot id (default: LATEST)")
    _common(e)
    e.add_argument("--systems", help="comma-separated, among bm25,text,image,lexical,outline,hybrid,routed,late,early,"
                   "cascade,default "
                   "(default: all the snapshot allows)")
    e.add_argument("--json", metavar="PATH", help="write the rows (and per-query rankings) as JSON")
    e.add_argument("--plot", metavar="PATH", help="write a PNG of the Recall@k curves")
    e.add_argument("--answers", action="store_true",
                   help="also generate a cited answer per query with a reference 'answer' and score it (slow on a CPU)")
    e.add_argument("--answers-limit", type=int, metavar="N", help="with --answers: only the first N such queries")

    a = sub.add_parser("ask", help="answer a question from the latest (or a pinned) snapshot, citing its sources")
    a.add_argument("question", help="the question")
    a.add_argument("--image", help="an image that helps find the sources (the generator reads text only)")
    a.add_argument("-k", type=int, help="hits given to the generator as sources (settings.answer_k)")
    a.add_argument("--snapshot", help="snapshot id (default: LATEST)")
    _common(a)
    a.add_argument("--generator", choices=["local", "openai"], help="settings.generator (MMRAG_GENERATOR)")
    a.add_argument("--model", help="settings.generator_model (MMRAG_GENERATOR_MODEL)")
    a.add_argument("--max-new-tokens", type=int, help="settings.generator_max_new_tokens")
    a.add_argument("--json", action="store_true", help="print the answer, its citations and sources as JSON")

    s = sub.add_parser("snapshots", help="list, show, verify and garbage-collect snapshots")
    ssub = s.add_subparsers(dest="action")
    s_list = ssub.add_parser("list", help="published snapshots, oldest first (the default action)")
    s_show = ssub.add_parser("show", help="a snapshot's manifest summary")
    s_show.add_argument("snapshot", nargs="?", help="snapshot id (default: LATEST)")
    s_show.add_argument("--json", action="store_true", help="print the whole manifest")
    s_verify = ssub.add_parser("verify", help="check every file of a snapshot against its sha256")
    s_verify.add_argument("snapshot", nargs="?", help="snapshot id (default: LATEST)")
    s_verify.add_argument("--all", action="store_true", help="verify every published snapshot")
    s_gc = ssub.add_parser("gc", help="delete snapshots outside the retention rule and unreferenced files")
    s_gc.add_argument("--keep-last", type=int, help="keep the newest N snapshots (settings.keep_last)")
    s_gc.add_argument("--keep-days", type=float, help="keep snapshots younger than D days (settings.keep_days)")
    s_gc.add_argument("--grace-seconds", type=float, help="leave unreferenced files younger than this")
    s_gc.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete nothing")
    for sp in (s, s_list, s_show, s_verify, s_gc):
        _common(sp)

    k = sub.add_parser("compact", help="rewrite LATEST's shards without tombstones as a new snapshot")
    _common(k)

    c = sub.add_parser("config", help="print the effective settings")
    _common(c)

    sv = sub.add_parser("serve", help="serve the HTTP query API and search page (swaps to each new snapshot)")
    _common(sv)
    sv.add_argument("--host", help="listen address (settings.service_host, default 127.0.0.1)")
    sv.add_argument("--port", type=int, help="listen port (settings.service_port, default 8000)")
    sv.add_argument("--snapshot", help="serve this snapshot only (default: LATEST, followed as it moves)")

    for name, what in (("deploy", ("register the Prefect deployments (reindex, full-rebuild, compact, gc-snapshots, "
                                   "evaluate) with the server PREFECT_API_URL names")),
                       ("worker", "serve the Prefect deployments: run their scheduled and UI-triggered flow runs")):
        d = sub.add_parser(name, help=what)
        d.add_argument("--source", help="default source of the scheduled re-index runs (settings.source, MMRAG_SOURCE)")
        _common(d)
        if name == "worker":
            d.add_argument("--limit", type=int, help="flow runs executed at a time (settings.worker_limit)")
    return parser


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    return load_settings(args.config, store=args.store, **extra)


def cmd_index(args: argparse.Namespace) -> int:
    settings = _settings(args, clip_model=args.clip_model, clip_pretrained=args.clip_pretrained,
                         ocr_lang=args.ocr_lang, num_cpus=args.num_cpus)
    t0 = time.perf_counter()
    report = _up_to_date_report(args, settings)
    if report is None:
        # Prefect, Ray and the models load only when there is work.
        from flows.index_flow import index_flow
        from flows.params import overrides_of
        from tasks.artifacts import progress_listener

        with progress_listener(_progress_bar):
            report = index_flow(args.source, settings.store, overrides_of(settings), args.retrain)
    wall = time.perf_counter() - t0
    if args.json:
        print(json.dumps({**report, "seconds_wall": round(wall, 3)}, indent=2))
    elif report["published"]:
        _print_index_summary(report["manifest"], wall)
    else:
        print(f"\nnothing changed since snapshot {report['snapshot']} (LATEST unchanged); checked in {wall:.1f} s")
    return 1 if args.strict and report["manifest"]["failures"] else 0


def _progress_bar(done: int, total: int, elapsed: float) -> None:
    """One line on stderr per finished batch: a bar, documents done, ETA (redrawn in place on a terminal)."""
    from tasks.artifacts import format_eta

    width = 30
    filled = width * done // max(1, total)
    line = (f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} docs, {elapsed:.0f} s, "
            f"ETA {format_eta(done, total, elapsed)}")
    if sys.stderr.isatty():
        print(f"\r\033[K{line}", end="\n" if done >= total else "", file=sys.stderr, flush=True)
    else:
        print(line, file=sys.stderr, flush=True)


def _up_to_date_report(args: argparse.Namespace, settings: Settings) -> dict | None:
    """Without a Prefect server (``PREFECT_API_URL``) every flow run starts a temporary local API, ~10 s
    here; a re-run that finds nothing changed should cost the listing only, so check first."""
    if args.retrain or os.environ.get("PREFECT_API_URL"):
        return None
    from mmrag_core.snapshot.changes import check

    work = check(args.source, settings)
    if not work.up_to_date:
        return None
    return {"published": False, "snapshot": work.parent["id"], "manifest": work.parent,
            "changes": work.changes.counts(), "flow_run": None}


def _print_index_summary(m: dict, wall: float) -> None:
    c, st = m["counts"], m["stats"]
    print(f"\nsnapshot {m['id']} published in {wall:.1f} s"
          + (f" (full rebuild: {st['full_rebuild']})" if st.get("full_rebuild") else ""))
    print(f"  documents: {c['documents']} indexed ({st['documents_processed']} processed, "
          f"{st['documents_reused']} reused), pages processed: {st['pages_processed']} "
          f"({st['ocr_pages']} OCR'd)")
    print("  since the last snapshot: " + ", ".join(f"{n} {k}" for k, n in st["changes"].items()))
    print(f"  items: {c['items']} {c['items_by_kind']}")
    for space, meta in m["spaces"].items():
        print("  " + _space_line(space, meta))
    if m.get("lexical"):
        print("  " + _lexical_line(m["lexical"]))
    if m.get("compacted"):
        print(f"  compacted: {m['compacted']}")
    if "skipped" in m["models"].get("image", {}):
        print(f"  space image: SKIPPED - {m['models']['image']['skipped']}")
    if m["failures"]:
        print(f"  failures: {len(m['failures'])}")
        for f in m["failures"]:
            page = f" p{f['page']}" if f.get("page") is not None else ""
            print(f"    - {f['source_uri']}{page} [{f['stage']}]: {f['reason']}")


def cmd_query(args: argparse.Namespace) -> int:
    from mmrag_core.query.engine_open import open_engine
    from mmrag_core.query.filters import QueryFilters

    settings = _settings(args)
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


def cmd_eval(args: argparse.Namespace) -> int:
    from mmrag_core.eval import evaluation

    settings = _settings(args)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()] if args.systems else None
    result = evaluation.run_evaluation(settings, args.queries, args.qrels, args.snapshot, systems,
                                       answers=args.answers, answers_limit=args.answers_limit,
                                       on_answer=_answer_progress)
    print(f"snapshot {result.snapshot} - {result.queries} queries, {result.level}-level qrels (pages are 0-based)\n")
    print(evaluation.markdown_table(result.rows))
    if result.answers is not None:
        print("\n" + evaluation.answers_markdown_table(result.answers.summary))
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        evaluation.write_json(result, args.json)
    if args.plot:
        evaluation.plot_recall(result, args.plot)
    return 0


def _answer_progress(done: int, total: int, row: dict) -> None:
    print(f"answer {done}/{total} ({row['query_id']}): {row['seconds']:.1f} s", file=sys.stderr, flush=True)


def cmd_ask(args: argparse.Namespace) -> int:
    from mmrag_core.answer.answering import ask
    from mmrag_core.query.engine_open import open_engine
    from mmrag_core.answer.generation import GenerationError, make_generator
    from mmrag_core.models import ModelUnavailable

    settings = _settings(args, generator=args.generator, generator_model=args.model,
                         generator_max_new_tokens=args.max_new_tokens)
    engine = open_engine(settings, args.snapshot)
    try:
        generator = make_generator(settings)
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


def _space_line(space: str, meta: dict) -> str:
    recall = f", recall@10 {meta['recall_at_10']:.3f}" if meta.get("recall_at_10") is not None else ""
    nprobe = f", nprobe {meta['nprobe']}" if meta.get("nprobe") else ""
    line = (f"space {space}: {meta['count']} vectors (dim {meta['dim']}, {meta['index_type']}{nprobe}{recall}), "
            f"{len(meta['shards'])} shard(s), {meta['tombstoned']} tombstoned")
    if meta.get("retrain_recommended"):
        line += f"; RETRAIN RECOMMENDED ({meta['retrain_reason']}): mmrag index SOURCE --retrain"
    return line


def _lexical_line(meta: dict) -> str:
    return (f"lexical: {meta['count']} items (BM25, vocabulary {meta['vocabulary']}, avgdl {meta['avgdl']}), "
            f"{len(meta['shards'])} shard(s), {meta['tombstoned']} dead rows")


def cmd_snapshots(args: argparse.Namespace) -> int:
    from mmrag_core.snapshot.open import read_manifest, verify
    from mmrag_core.storage.store import open_store

    settings = _settings(args)
    store = open_store(settings)
    action = args.action or "list"
    latest = store.latest_id()
    if action == "list":
        for sid in store.list_snapshots():
            m = read_manifest(store, sid)
            mark = " (LATEST)" if sid == latest else ""
            print(f"{sid}{mark}  parent={m['parent']} items={m['counts']['items']} docs={m['counts']['documents']} "
                  f"failures={m['counts']['failures']} tombstones={m['tombstones']}")
        return 0
    if action == "show":
        m = read_manifest(store, args.snapshot)
        if args.json:
            print(json.dumps(m, indent=2))
            return 0
        print(f"snapshot {m['id']}{' (LATEST)' if m['id'] == latest else ''}, parent {m['parent']}, "
              f"created {m['created_at']}\n  source: {m['source']}\n  counts: {m['counts']}")
        for space, meta in m["spaces"].items():
            print("  " + _space_line(space, meta))
        if m.get("lexical"):
            print("  " + _lexical_line(m["lexical"]))
        print(f"  files: {len(m['files'])}, {sum(f['bytes'] for f in m['files'].values())} bytes")
        return 0
    if action == "verify":
        ids = store.list_snapshots() if args.all else [args.snapshot or latest]
        bad = 0
        for sid in ids:
            try:
                verify(store, read_manifest(store, sid))
                print(f"{sid}: ok")
            except SnapshotError as e:
                bad += 1
                print(f"{sid}: FAILED - {e}")
        return 1 if bad else 0
    from mmrag_core.snapshot.retention import collect_garbage

    plan = collect_garbage(store, settings, "mmrag snapshots gc", args.keep_last, args.keep_days, args.grace_seconds,
                           args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    print(f"kept {len(plan.kept)} snapshot(s); {verb} {len(plan.dropped_snapshots)} snapshot(s) and "
          f"{len(plan.delete)} object(s), {plan.bytes} bytes; {len(plan.young)} unreferenced unit(s) left within "
          "the grace period")
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    from flows.index_flow import compact_flow
    from flows.params import overrides_of

    settings = _settings(args)
    m = compact_flow(settings.store, overrides_of(settings))
    print(f"snapshot {m['id']} published (compaction of {m['parent']})")
    for space, meta in m["spaces"].items():
        print("  " + _space_line(space, meta))
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from flows.deployments import build_deployments, deployment_specs, register

    settings = _settings(args)
    ids = register(build_deployments(settings, args.source))
    specs = {s.name: s for s in deployment_specs(settings, args.source)}
    for full_name, dep_id in ids.items():
        spec = specs[full_name.split("/", 1)[1]]
        when = "on demand" if not spec.cron else f"cron '{spec.cron}' {settings.schedule_timezone}" + (
            "" if spec.schedule_active else " (inactive: no default source; give --source or MMRAG_SOURCE)")
        print(f"{full_name}  {dep_id}  {when}")
    print(f"registered {len(ids)} deployments (store {settings.store}); run them with: mmrag worker")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from flows.deployments import build_deployments, serve_deployments

    settings = _settings(args)
    serve_deployments(build_deployments(settings, args.source),
                      args.limit if args.limit is not None else settings.worker_limit)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from mmrag_core.service import create_app

    settings = _settings(args, service_host=args.host, service_port=args.port)
    print(f"mmrag serve: store {settings.store} on http://{settings.service_host}:{settings.service_port} "
          f"(search page /, API docs /docs)", file=sys.stderr)
    uvicorn.run(create_app(settings, pinned_snapshot=args.snapshot), host=settings.service_host,
                port=settings.service_port, log_level="info")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    print(json.dumps(_settings(args).model_dump(mode="json"), indent=2))  # secrets print as ****
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mmrag`` console script."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Prefect's temporary API server migrates its database on first start; 20 s (its default) is not
    # enough on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    args = build_parser().parse_args(argv)
    handler = {"index": cmd_index, "query": cmd_query, "ask": cmd_ask, "eval": cmd_eval, "snapshots": cmd_snapshots,
               "compact": cmd_compact, "serve": cmd_serve, "config": cmd_config, "deploy": cmd_deploy,
               "worker": cmd_worker}[args.command]

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


if __name__ == "__main__":
    sys.exit(main())
