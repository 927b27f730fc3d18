"""Offline check of the extractive answerer on FinanceBench dev and train: for each question whose filing is
present, the sources are its evidence pages plus 4 other pages of the same filing, shuffled (seeded by the
question id); answers are judged by mmrag_core.eval.answer_judge and checked for unsupported numbers (an input
whose quoted row is not on the cited page, or a value that its formula and inputs do not give).

Usage: .venv/bin/python scripts/extractive_answer_check.py [--data ../shared/data] [-v]
"""
from __future__ import annotations

import argparse
import json
import os
import random
from collections import defaultdict
from pathlib import Path

import pymupdf

from mmrag_core.answer.extractive import ExtractiveAnswer, SourcePage, answer_extractively
from mmrag_core.answer.extractive.calculations import evaluate, read_question
from mmrag_core.eval.answer_judge import judge
from mmrag_core.answer.extractive.statement_rows import SCALES, page_lines


def sources_for(qid: str, doc: str, evidence: list[int], pdf: Path, extra: int = 4) -> list[SourcePage]:
    rng = random.Random(qid)
    with pymupdf.open(str(pdf)) as d:
        n = d.page_count
    others = [p for p in range(n) if p not in evidence]
    pages = list(dict.fromkeys(evidence)) + rng.sample(others, min(extra, len(others)))
    rng.shuffle(pages)
    return [SourcePage(str(pdf), p) for p in pages]


def unsupported(ans: ExtractiveAnswer, sources: list[SourcePage], question: str) -> str | None:
    """Why the answer states a number no cited source supports, or None."""
    if ans.abstained:
        return None
    for cv in ans.inputs:
        if not 1 <= cv.citation <= len(sources):
            return f"cites [{cv.citation}] of {len(sources)} sources"
        src = sources[cv.citation - 1]
        if src.page != cv.page or cv.quote not in page_lines(src.uri, src.page) or cv.cell not in cv.quote:
            return f"row {cv.quote!r} not on the cited page"
    if ans.value is not None:
        plan = read_question(question)
        if plan is None:
            return "a value without a plan"
        table = {(cv.item, cv.year): cv.value * SCALES.get(cv.unit.split(" ")[-1].rstrip("s"), 1.0)
                 for cv in ans.inputs}

        def get(item: str, year: int) -> float:
            return table[(item, year)]

        try:
            raw, _ = evaluate(plan, get)
        except (KeyError, ZeroDivisionError):
            return "the inputs do not give the value"
        scale = SCALES.get(ans.unit.split(" ")[-1].rstrip("s"), 1.0) if ans.unit.startswith("USD") else 1.0
        if ans.unit == "%":
            raw *= 100
        if not any(abs(round(raw / scale, d) - ans.value) < 1e-9 for d in range(7)):
            return f"recomputed {raw / scale} != {ans.value}"
    return None


def run(folder: Path, verbose: bool) -> dict[str, list[int]]:
    qrels: dict[str, list[int]] = defaultdict(list)
    for line in (folder / "qrels.tsv").read_text().splitlines()[1:]:
        qid, corpus, *_ = line.split("\t")
        qrels[qid].append(int(corpus.rsplit("#p", 1)[1]))
    table: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for line in (folder / "queries.jsonl").read_text().splitlines():
        q = json.loads(line)
        pdf = folder / "pdfs" / f"{q['doc_name']}.pdf"
        if not pdf.is_file():
            continue
        sources = sources_for(q["query_id"], q["doc_name"], qrels[q["query_id"]], pdf)
        ans = answer_extractively(q["text"], sources)
        verdict = judge(q["text"], q["answer"], ans.text, ans.abstained, ans.unit)
        bad = unsupported(ans, sources, q["text"])
        for key in ("overall", q["question_type"]):
            row = table[key]
            row[0] += 1
            row[1] += verdict.correct
            row[2] += ans.abstained
            row[3] += bad is not None
        if verbose:
            mark = "OK " if verdict.correct else ("ABS" if ans.abstained else "BAD")
            print(f"  {mark} {q['query_id'][-5:]} {q['question_type'][:8]} ref={q['answer'][:40]!r}")
            print(f"      -> {ans.text[:300]}")
            if bad:
                print(f"      UNSUPPORTED: {bad}")
    return table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("MMRAG_TEST_DATA", "../shared/data"))
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    total: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for name in ("financebench-dev", "financebench-train"):
        table = run(Path(args.data) / name, args.verbose)
        print(f"{name}\n  {'question_type':<20} {'n':>3} {'correct':>8} {'abstained':>9} {'unsupported':>11}")
        for key, (n, ok, ab, bad) in sorted(table.items(), key=lambda kv: kv[0] != "overall"):
            print(f"  {key:<20} {n:>3} {ok:>8} {ab:>9} {bad:>11}")
            for i, v in enumerate((n, ok, ab, bad)):
                total[key][i] += v
    print("dev+train")
    for key, (n, ok, ab, bad) in sorted(total.items(), key=lambda kv: kv[0] != "overall"):
        print(f"  {key:<20} {n:>3} {ok:>8} ({ok / n:.2f}) {ab:>9} {bad:>11}")


if __name__ == "__main__":
    main()
