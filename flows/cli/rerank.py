"""``mmrag rerank-train``: fit the page re-ranker (:mod:`mmrag_core.query.rerank`) on a store's snapshot and keep
it in the store as ``models/rerank/<id>/``; ``rerank_model: store:models/rerank/<id>`` then turns it on."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from flows.cli.common import check_labelled, command_settings


def cmd_rerank_train(args: argparse.Namespace) -> int:
    """Train, print the held-out folds and the setting that uses the model (JSON with ``--json PATH``)."""
    from mmrag_core.learn.finetune import build_examples
    from mmrag_core.learn.rerank_training import sample_examples, train_reranker
    from mmrag_core.query.engine import open_engine
    from mmrag_core.query.rerank import FEATURES
    from mmrag_core.storage.store import open_store

    check_labelled(args)
    drop = {f for f in (args.drop or "").split(",") if f}
    unknown = drop - set(FEATURES)
    if unknown:
        raise ValueError(f"unknown feature(s) {sorted(unknown)}; the features are {', '.join(FEATURES)}")
    settings = command_settings(args, rerank_model="off")  # candidates come from the fused order, not a re-ranker
    engine = open_engine(settings, args.snapshot)
    examples = sample_examples(build_examples(engine, args.queries, args.qrels, synthetic=args.synthetic),
                               args.synthetic_limit)
    result = train_reranker(engine, open_store(settings), examples, depth=args.depth, l2=args.l2,
                            label_weight=args.label_weight, features=tuple(f for f in FEATURES if f not in drop),
                            provenance={"store": settings.store, "queries": args.queries, "qrels": args.qrels,
                                        "synthetic": args.synthetic or not args.queries})
    t = result["trained_on"]
    print(f"{t['n_queries']} training queries, {t['with_positive']} with a relevant page in the first "
          f"{result['depth']} pages")
    for l2, r in result["folds"].items():
        if r["queries"]:
            print(f"  l2 {l2:>6}: held-out labelled queries nDCG@5 {r['ndcg@5_fused']:.3f} (fused) -> "
                  f"{r['ndcg@5_reranked']:.3f} (re-ranked), {r['queries']} queries")
    print(f"model {result['model_id']}; use it: MMRAG_RERANK_MODEL={result['path']} (setting rerank_model)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    return 0
