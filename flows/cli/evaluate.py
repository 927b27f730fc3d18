"""``mmrag eval``: retrieval quality of a snapshot against qrels (and, optionally, answer quality), as tables
on stdout and, on request, JSON and a Recall@k plot."""
from __future__ import annotations

import argparse
import sys

from flows.cli.common import command_settings


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate the systems named by ``--systems`` (default: all the snapshot allows) and print the tables."""
    from mmrag_core.eval import report, retrieval

    settings = command_settings(args)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()] if args.systems else None
    result = retrieval.run_evaluation(settings, args.queries, args.qrels, args.snapshot, systems,
                                      answers=args.answers, answers_limit=args.answers_limit,
                                      on_answer=_answer_progress)
    print(f"snapshot {result.snapshot} - {result.queries} queries, {result.level}-level qrels (pages are 0-based)\n")
    print(report.markdown_table(result.rows))
    if result.answers is not None:
        print("\n" + report.answers_markdown_table(result.answers.summary))
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        report.write_json(result, args.json)
    if args.plot:
        report.plot_recall(result, args.plot)
    return 0


def _answer_progress(done: int, total: int, row: dict) -> None:
    print(f"answer {done}/{total} ({row['query_id']}): {row['seconds']:.1f} s", file=sys.stderr, flush=True)
