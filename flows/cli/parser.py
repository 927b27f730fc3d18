"""The ``mmrag`` argument parser, one function per command, so each command's flags read in one place."""
from __future__ import annotations

import argparse

from mmrag_core.query.engine import FUSION_METHODS, STRATEGIES


def add_common(p: argparse.ArgumentParser) -> None:
    """``--store`` and ``--config``, which every command takes."""
    p.add_argument("--store", help="store folder (default: settings.store, MMRAG_STORE)")
    p.add_argument("--config", help="YAML settings file (also MMRAG_CONFIG)")


def build_parser() -> argparse.ArgumentParser:
    """The whole ``mmrag`` parser; ``args.command`` names the subcommand."""
    parser = argparse.ArgumentParser(prog="mmrag",
                                     description="Multimodal RAG: index PDFs and images, query snapshots.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_index, _query, _eval, _ask, _snapshots, _compact, _config, _serve, _deploy, _worker):
        add(sub)
    return parser


def _index(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="index a folder or file and publish a snapshot")
    p.add_argument("source", help="folder or file to index")
    add_common(p)
    p.add_argument("--strict", action="store_true", help="exit 1 if any file or page failed")
    p.add_argument("--clip-model", help="open_clip model name (MMRAG_CLIP_MODEL); 'off' disables the image space")
    p.add_argument("--clip-pretrained", help="open_clip tag, checkpoint path or 'none' (MMRAG_CLIP_PRETRAINED)")
    p.add_argument("--ocr-lang", help="tesseract language(s), e.g. eng+deu")
    p.add_argument("--num-cpus", type=int, help="CPUs for the local Ray")
    p.add_argument("--retrain", action="store_true",
                   help="train new codecs on the whole corpus and encode every document again")
    p.add_argument("--json", action="store_true", help="print the run report (with the manifest) as JSON")


def _query(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser("query", help="query the latest (or a pinned) snapshot")
    q.add_argument("text", nargs="?", default=None, help="query text")
    q.add_argument("--image", help="query image file")
    q.add_argument("-k", type=int, help="number of hits (default 10)")
    q.add_argument("--snapshot", help="snapshot id (default: LATEST)")
    add_common(q)
    q.add_argument("--json", action="store_true", help="print hits as JSON")
    q.add_argument("--strategy", choices=STRATEGIES,
                   help="how ranked lists are produced and combined (default: settings.fusion_strategy)")
    q.add_argument("--fusion", choices=FUSION_METHODS,
                   help="late fusion: rrf or weighted (default: settings.fusion_method)")
    q.add_argument("--filter-source", action="append", metavar="PREFIX", help="only hits whose source URI starts "
                   "with PREFIX (repeat for any of several)")
    q.add_argument("--filter-doc", action="append", metavar="DOC", help="only hits of this document: file name, "
                   "name without extension or sha256 (repeatable)")
    q.add_argument("--filter-kind", action="append", metavar="KIND", help="only hits of this kind: chunk, figure, "
                   "image (repeatable)")
    q.add_argument("--pages", metavar="A-B", help="only hits on pages A to B (0-based, inclusive; 'A-', '-B', 'A')")
    q.add_argument("--all-items", action="store_true", help="every matching item, not one hit per page")


def _eval(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("eval", help="measure retrieval quality of a snapshot against qrels, beside a BM25 baseline")
    e.add_argument("--queries", required=True, help="queries JSON-lines file ({\"query_id\", \"text\", ...} a line)")
    e.add_argument("--qrels", required=True, help="relevance judgements TSV: query_id, corpus_id, score")
    e.add_argument("--snapshot", help="snapshot id (default: LATEST)")
    add_common(e)
    e.add_argument("--systems", help="comma-separated, among bm25,text,image,lexical,outline,hybrid,routed,late,early,"
                   "cascade,default "
                   "(default: all the snapshot allows)")
    e.add_argument("--json", metavar="PATH", help="write the rows (and per-query rankings) as JSON")
    e.add_argument("--plot", metavar="PATH", help="write a PNG of the Recall@k curves")
    e.add_argument("--answers", action="store_true",
                   help="also generate a cited answer per query with a reference 'answer' and score it (slow on a CPU)")
    e.add_argument("--answers-limit", type=int, metavar="N", help="with --answers: only the first N such queries")


def _ask(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("ask", help="answer a question from the latest (or a pinned) snapshot, citing its sources")
    a.add_argument("question", help="the question")
    a.add_argument("--image", help="an image that helps find the sources (the generator reads text only)")
    a.add_argument("-k", type=int, help="hits given to the generator as sources (settings.answer_k)")
    a.add_argument("--snapshot", help="snapshot id (default: LATEST)")
    add_common(a)
    a.add_argument("--generator", choices=["local", "openai"], help="settings.generator (MMRAG_GENERATOR)")
    a.add_argument("--model", help="settings.generator_model (MMRAG_GENERATOR_MODEL)")
    a.add_argument("--max-new-tokens", type=int, help="settings.generator_max_new_tokens")
    a.add_argument("--json", action="store_true", help="print the answer, its citations and sources as JSON")


def _snapshots(sub: argparse._SubParsersAction) -> None:
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
        add_common(sp)


def _compact(sub: argparse._SubParsersAction) -> None:
    k = sub.add_parser("compact", help="rewrite LATEST's shards without tombstones as a new snapshot")
    add_common(k)


def _config(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("config", help="print the effective settings")
    add_common(c)


def _serve(sub: argparse._SubParsersAction) -> None:
    sv = sub.add_parser("serve", help="serve the HTTP query API and search page (swaps to each new snapshot)")
    add_common(sv)
    sv.add_argument("--host", help="listen address (settings.service_host, default 127.0.0.1)")
    sv.add_argument("--port", type=int, help="listen port (settings.service_port, default 8000)")
    sv.add_argument("--snapshot", help="serve this snapshot only (default: LATEST, followed as it moves)")


def _deployments(sub: argparse._SubParsersAction, name: str, what: str) -> argparse.ArgumentParser:
    """``deploy`` and ``worker`` share their flags: both build the deployments."""
    d = sub.add_parser(name, help=what)
    d.add_argument("--source", help="default source of the scheduled re-index runs (settings.source, MMRAG_SOURCE)")
    add_common(d)
    return d


def _deploy(sub: argparse._SubParsersAction) -> None:
    _deployments(sub, "deploy", "register the Prefect deployments (reindex, full-rebuild, compact, gc-snapshots, "
                                "evaluate) with the server PREFECT_API_URL names")


def _worker(sub: argparse._SubParsersAction) -> None:
    d = _deployments(sub, "worker", "serve the Prefect deployments: run their scheduled and UI-triggered flow runs")
    d.add_argument("--limit", type=int, help="flow runs executed at a time (settings.worker_limit)")
