"""``mmrag eval``: retrieval quality of a snapshot against qrels (and, optionally, answer quality), as tables
on stdout and, on request, JSON and a Recall@k plot."""
from __future__ import annotations

import argparse
import sys

from flows.cli.common import command_settings
from mmrag_core.config import Settings


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate the systems named by ``--systems`` (default: all the snapshot allows) and print the tables."""
    from mmrag_core.eval import report, retrieval
    from mmrag_core.eval.answerers import answer_rows_markdown

    settings = command_settings(args)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()] if args.systems else None
    answerers = [a.strip() for a in args.answerers.split(",") if a.strip()] if args.answerers else None
    result = retrieval.run_evaluation(settings, args.queries, args.qrels, args.snapshot, systems,
                                      answers=args.answers or bool(answerers), answers_limit=args.answers_limit,
                                      on_answer=_answer_progress, answerers=answerers)
    print(f"snapshot {result.snapshot} - {result.queries} queries, {result.level}-level qrels (pages are 0-based)")
    models = _snapshot_models(settings, result.snapshot)
    print(f"text model: {model_line(models.get('text') or {})}\n")
    print(report.markdown_table(result.rows))
    if result.answers is not None:
        print("\n" + report.answers_markdown_table(result.answers.summary))
    if result.answer_rows is not None:
        print("\nanswers judged against the reference answers (correct, abstained, cited: rates; unsupported: answers "
              "with a number no cited source gives)\n")
        print(answer_rows_markdown(result.answer_rows) + "\n\n" + answer_rows_markdown(result.answer_rows_by_type))
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        report.write_json(result, args.json)
        _add_models(args.json, models)
    if args.plot:
        report.plot_recall(result, args.plot)
    return 0


def _answer_progress(done: int, total: int, row: dict) -> None:
    who = f"{row['answerer']} " if "answerer" in row else ""
    print(f"{who}answer {done}/{total} ({row['query_id']}): {row['seconds']:.1f} s", file=sys.stderr, flush=True)


def model_line(desc: dict) -> str:
    """A text model of a manifest in one line: its name, and for a fine-tuned one its id, kind and base."""
    ft = desc.get("fine_tuned")
    name = desc.get("name", "?")
    return f"{name} (fine-tuned {ft['kind']} {ft['id']} of {ft['base']})" if ft else name


def _snapshot_models(settings: Settings, snapshot_id: str) -> dict:
    from mmrag_core.snapshot.open import read_manifest
    from mmrag_core.storage.store import open_store

    return read_manifest(open_store(settings), snapshot_id).get("models", {})


def _add_models(path: str, models: dict) -> None:
    """Record in the JSON report which models built the snapshot (so a number names its model)."""
    import json
    from pathlib import Path

    doc = json.loads(Path(path).read_text())
    doc["models"] = {space: {k: v for k, v in m.items() if k != "path"} for space, m in models.items()}
    Path(path).write_text(json.dumps(doc, indent=1))
