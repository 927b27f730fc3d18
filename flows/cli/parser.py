"""The ``mmrag`` argument parser, one function per command, so each command's flags read in one place."""
from __future__ import annotations

import argparse
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from mmrag_core.config import Settings
from mmrag_core.query.engine import FUSION_METHODS, STRATEGIES

# Examples shown under each command's --help (``mmrag <command> --help``): what to type, not what it means.
EXAMPLES: dict[str, list[str]] = {
    "index": ["mmrag index ./docs", "mmrag index s3://bucket/corpus --store s3://bucket/store --strict"],
    "query": ['mmrag query "operating margin 2023" -k 5', "mmrag query --image chart.png --json"],
    "eval": ["mmrag eval --queries q.jsonl --qrels qrels.tsv --plot recall.png"],
    "ask": ['mmrag ask "What was the net income in 2023?"', 'mmrag ask "..." --generator openai --json'],
    "snapshots": ["mmrag snapshots list --json", "mmrag snapshots verify --all", "mmrag snapshots gc --dry-run"],
    "compact": ["mmrag compact --store ./.store"],
    "config": ["mmrag config --config mmrag.yaml", "MMRAG_STORE=s3://bucket/store mmrag config"],
    "serve": ["mmrag serve --port 8000", "MMRAG_SERVICE_TOKEN=secret mmrag serve --host 0.0.0.0"],
    "deploy": ["mmrag deploy --source ./docs --store ./.store   # then: mmrag worker"],
    "worker": ["mmrag worker --limit 2   # runs the runs of the deployments 'mmrag deploy' registered"],
    "finetune": ["mmrag finetune --synthetic --max-steps 100", "mmrag finetune --queries q.jsonl --qrels qrels.tsv",
                 "mmrag finetune --synthetic --promote   # LATEST moves to the new model only if it evaluates better"],
    "rerank-train": ["mmrag rerank-train --queries q.jsonl --qrels qrels.tsv   # then MMRAG_RERANK_MODEL=store:models/rerank/<id>"],
    "models": ["mmrag models fetch --to ./models", "mmrag models fetch --config mmrag.yaml --to /srv/models"],
}


def default(name: str) -> Any:
    """A setting's default value, for help texts that show values rather than setting names."""
    info = Settings.model_fields[name]
    return info.default_factory() if info.default_factory is not None else info.default


def add_common(p: argparse.ArgumentParser) -> None:
    """``--store`` and ``--config``, which every command takes."""
    p.add_argument("--store", help=f"store: a folder or s3://bucket/prefix (default: {default('store')}; "
                                   "MMRAG_STORE)")
    p.add_argument("--config", help="YAML settings file (also MMRAG_CONFIG)")


def _version() -> str:
    try:
        return version("mmrag")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The whole ``mmrag`` parser; ``args.command`` names the subcommand."""
    parser = argparse.ArgumentParser(prog="mmrag",
                                     description="Multimodal RAG: index PDFs and images, query snapshots.")
    parser.add_argument("--version", action="version", version=f"mmrag {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_index, _query, _eval, _ask, _snapshots, _compact, _config, _serve, _deploy, _worker, _finetune,
                _rerank_train, _models):
        add(sub)
    for name, cmd in sub.choices.items():
        _with_examples(cmd, EXAMPLES.get(name, []))
    parser.epilog = "examples:\n  mmrag index ./docs\n  mmrag query \"net income 2023\"\n\n" \
                    "'mmrag COMMAND --help' shows a command's flags and examples."
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def _with_examples(p: argparse.ArgumentParser, examples: list[str]) -> None:
    """Examples as the epilog of a command (and of its subcommands), line breaks kept."""
    if examples:
        p.epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)
        p.formatter_class = argparse.RawDescriptionHelpFormatter
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _with_examples(child, examples)


def _index(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="index a folder, a file or s3://bucket/prefix and publish a snapshot")
    p.add_argument("source", help="folder, file or s3://bucket/prefix to index")
    add_common(p)
    p.add_argument("--strict", action="store_true", help="exit 1 if any file or page failed")
    p.add_argument("--clip-model", help=f"open_clip model name (default: {default('clip_model')}; "
                   "MMRAG_CLIP_MODEL); 'off' disables the image space")
    p.add_argument("--clip-pretrained", help=f"open_clip tag, checkpoint path or 'none' "
                   f"(default: {default('clip_pretrained')}; MMRAG_CLIP_PRETRAINED)")
    p.add_argument("--ocr-lang", help=f"tesseract language(s), e.g. eng+deu (default: {default('ocr_lang')})")
    p.add_argument("--text-model", help="text space model (MMRAG_TEXT_MODEL): a name, a folder, or a fine-tuned "
                   "model of the store, store:models/text/<id> (switching re-embeds each document once)")
    p.add_argument("--num-cpus", type=int, help="CPUs for the local Ray (default: all)")
    p.add_argument("--retrain", action="store_true",
                   help="train new codecs on the whole corpus and encode every document again")
    p.add_argument("--json", action="store_true", help="print the run report (with the manifest) as JSON")


def _query(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser("query", help="query the latest (or a pinned) snapshot")
    q.add_argument("text", nargs="?", default=None, help="query text")
    q.add_argument("--image", help="query image file")
    q.add_argument("-k", type=int, help=f"number of hits (default: {default('k')})")
    q.add_argument("--snapshot", help="snapshot id (default: LATEST)")
    add_common(q)
    q.add_argument("--json", action="store_true", help="print hits as JSON")
    q.add_argument("--strategy", choices=STRATEGIES,
                   help=f"how ranked lists are produced and combined (default: {default('fusion_strategy')})")
    q.add_argument("--fusion", choices=FUSION_METHODS,
                   help=f"late fusion: rrf or weighted (default: {default('fusion_method')})")
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
                   help="also answer each query with a reference 'answer' and judge it (a generator is slow on a CPU)")
    e.add_argument("--answers-limit", type=int, metavar="N", help="with --answers: only the first N such queries")
    e.add_argument("--answerers", metavar="LIST", help="with --answers: comma-separated among extractive,generator "
                   f"(default: {default('answerer')}); each answer judged against the reference "
                   "(answer_rows in --json)")


def _ask(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("ask", help="answer a question from the latest (or a pinned) snapshot, citing its sources")
    a.add_argument("question", help="the question")
    a.add_argument("--image", help="an image that helps find the sources (the generator reads text only)")
    a.add_argument("-k", type=int, help=f"hits given as sources (default: {default('extractive_k')}, or "
                   f"{default('answer_k')} for a generator)")
    a.add_argument("--snapshot", help="snapshot id (default: LATEST)")
    add_common(a)
    a.add_argument("--generator", choices=["local", "openai"], help="answer with this generator instead of the "
                   "extractive answerer (MMRAG_ANSWERER; MMRAG_GENERATOR)")
    a.add_argument("--model", help=f"generator model (default: {default('generator_model')}; "
                                   "MMRAG_GENERATOR_MODEL)")
    a.add_argument("--max-new-tokens", type=int,
                   help=f"most tokens of an answer (default: {default('generator_max_new_tokens')})")
    a.add_argument("--json", action="store_true", help="print the answer, its citations and sources as JSON")


def _snapshots(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("snapshots", help="list, show, verify and garbage-collect snapshots")
    ssub = s.add_subparsers(dest="action")
    s_list = ssub.add_parser("list", help="published snapshots, oldest first (the default action)")
    s_list.add_argument("--json", action="store_true", help="print the snapshots as a JSON list")
    s_show = ssub.add_parser("show", help="a snapshot's manifest summary")
    s_show.add_argument("snapshot", nargs="?", help="snapshot id (default: LATEST)")
    s_show.add_argument("--json", action="store_true", help="print the whole manifest")
    s_verify = ssub.add_parser("verify", help="check every file of a snapshot against its sha256")
    s_verify.add_argument("snapshot", nargs="?", help="snapshot id (default: LATEST)")
    s_verify.add_argument("--all", action="store_true", help="verify every published snapshot")
    s_gc = ssub.add_parser("gc", help="delete snapshots outside the retention rule and unreferenced files")
    s_gc.add_argument("--keep-last", type=int, help=f"keep the newest N snapshots (default: {default('keep_last')})")
    s_gc.add_argument("--keep-days", type=float,
                      help=f"keep snapshots younger than D days (default: {default('keep_days')})")
    s_gc.add_argument("--grace-seconds", type=float,
                      help=f"leave unreferenced files younger than this (default: {default('gc_grace_seconds')} s)")
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
    sv.add_argument("--host", help=f"listen address (default: {default('service_host')})")
    sv.add_argument("--port", type=int, help=f"listen port (default: {default('service_port')})")
    sv.add_argument("--snapshot", help="serve this snapshot only (default: LATEST, followed as it moves)")


# One Prefect convention: ``deploy`` registers the deployments on a work pool, a ``worker`` of that pool runs
# their flow runs. The worker registers nothing, so it never overwrites what ``deploy`` (or prefect.yaml) set.
CONVENTION = ("Deployments follow Prefect's work-pool convention: 'mmrag deploy' registers them on a process "
              "work pool (created when missing), and 'mmrag worker' runs that pool's flow runs; the worker registers "
              "nothing, so the parameters and schedules of 'mmrag deploy' (or of 'prefect deploy' with "
              "infra/prefect.yaml) stay as they were set.")


def _pool(d: argparse.ArgumentParser) -> None:
    d.add_argument("--pool", default="mmrag", help="Prefect work pool (default: mmrag)")


def _deploy(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("deploy", description=CONVENTION,
                       help="register the Prefect deployments (reindex, full-rebuild, compact, gc-snapshots, "
                            "evaluate, finetune) on a work pool of the server PREFECT_API_URL names")
    d.add_argument("--source", help="default source of the scheduled re-index runs, a folder or s3://bucket/prefix "
                                    "(default: none, schedules inactive; MMRAG_SOURCE)")
    add_common(d)
    _pool(d)


def _worker(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("worker", description=CONVENTION,
                       help="run the flow runs (scheduled or from the UI) of the deployments 'mmrag deploy' "
                            "registered on the work pool")
    d.add_argument("--config", help="YAML settings file the flow runs read (also MMRAG_CONFIG)")
    _pool(d)
    d.add_argument("--limit", type=int, help=f"flow runs executed at a time (default: {default('worker_limit')})")


def _labelled(p: argparse.ArgumentParser) -> None:
    """``--queries`` and ``--qrels``: labelled questions in FinanceBench's format."""
    p.add_argument("--queries", help="labelled questions, JSON lines (query_id, text, answer); with --qrels")
    p.add_argument("--qrels", help="their relevant pages, TSV: query_id, corpus_id (<doc_name>#p<page>, 0-based)")


def _rerank_train(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("rerank-train", help="fit the page re-ranker on the store's snapshot (labelled questions, "
                                            "and/or self-supervised ones) and keep it in the store")
    add_common(r)
    _labelled(r)
    r.add_argument("--synthetic", action="store_true", help="also self-supervised questions from the corpus "
                   "(page headings, statement line items); the only ones without labels")
    r.add_argument("--synthetic-limit", type=int, default=400, help="at most this many self-supervised questions")
    r.add_argument("--snapshot", help="snapshot whose search lists are re-ranked (default: LATEST)")
    r.add_argument("--depth", type=int, default=20, help="pages of the fused list it reorders (keep rerank_depth "
                   "the same)")
    r.add_argument("--l2", type=float, default=1e-2, help="L2 strength of the linear model")
    r.add_argument("--label-weight", type=float, default=4.0, help="weight of a labelled question against a "
                   "self-supervised one")
    r.add_argument("--drop", help="comma-separated features to leave out")
    r.add_argument("--json", metavar="PATH", help="write the model id, its setting, folds and weights as JSON")


def _finetune(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser("finetune", help="fine-tune the text encoder on the store's snapshot (hard negatives mined "
                                        "from it) and keep the versioned model in the store")
    add_common(f)
    _labelled(f)
    f.add_argument("--space", default="text", choices=["text", "image"], help="the space whose encoder is trained: "
                   "'text', or 'image' (a projection of CLIP's towers on the corpus's (caption or page text, figure) "
                   "pairs; use it with --clip-model store:models/image/<id>)")
    f.add_argument("--synthetic", action="store_true", help="also train on self-supervised pairs from the corpus "
                   "(page headings, statement line items asked with an analyst's words); the only pairs without labels")
    f.add_argument("--max-steps", type=int, help="most optimisation steps (settings.finetune_max_steps)")
    f.add_argument("--method", choices=["projection", "lora"], help="settings.finetune_method")
    f.add_argument("--workers", type=int, help="Ray Train workers (settings.finetune_workers)")
    f.add_argument("--promote", action="store_true", help="then index the source again with the new model into a "
                   "candidate snapshot and move LATEST to it only when it evaluates better (settings.finetune_promote; "
                   "questions: finetune_eval_queries/qrels, else the held-out pairs)")
    f.add_argument("--source", help="with --promote: what the candidate indexes (default: the source LATEST was "
                   "indexed from)")
    f.add_argument("--json", metavar="PATH", help="write the summary (model_id, space, path, pairs, steps, "
                   "val_loss_before, val_loss_after, ...) as JSON")


def _models(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("models", help="download the configured model weights for offline use")
    msub = m.add_subparsers(dest="action", required=True)
    f = msub.add_parser("fetch", help="download the CLIP, BLIP-2 (when captioning is on) and text weights into a "
                                      "folder and print the settings that use it")
    f.add_argument("--to", default="./models", help="folder to download into (default: ./models)")
    f.add_argument("--config", help="YAML settings file naming the models (also MMRAG_CONFIG)")
