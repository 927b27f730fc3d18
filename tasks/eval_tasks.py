"""The Prefect task of the ``evaluate`` flow, and the artifacts its run shows: the metrics table (markdown)
and the rows (a table artifact, one per system; one per answer with ``answers``)."""
from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from mmrag_core.eval.answerers import answer_rows_markdown
from mmrag_core.eval.report import answers_markdown_table, markdown_table
from mmrag_core.eval.retrieval import run_evaluation
from mmrag_core.config import Settings
from tasks.artifacts import store_key

SUMMARY_KEY = "mmrag-eval-summary"
ROWS_KEY = "mmrag-eval-rows"
ANSWERS_KEY = "mmrag-eval-answers"


@task(name="evaluate-snapshot", cache_policy=NO_CACHE)
def evaluate_snapshot(settings: Settings, queries: str, qrels: str, snapshot: str | None = None,
                      systems: list[str] | None = None, k: int = 10, answers: bool = False,
                      answers_limit: int | None = None, answerers: list[str] | None = None) -> dict:
    """``run_evaluation`` as a task; returns its JSON (rows, curves, rankings, answers, answer_rows)."""
    return run_evaluation(settings, queries, qrels, snapshot, systems, k, answers, answers_limit,
                          answerers=answerers).to_json()


def eval_markdown(result: dict, store_uri: str) -> str:
    """The run's summary: what was evaluated and the metrics tables, as ``mmrag eval`` prints them."""
    parts = [f"# Evaluation of snapshot `{result['snapshot']}`", "",
             f"Store `{store_uri}`: {result['queries']} queries, {result['level']}-level qrels (pages are 0-based).",
             "", markdown_table(result["rows"])]
    if result.get("answers"):
        parts += ["", "## Cited answers", "", answers_markdown_table(result["answers"]["summary"])]
    if result.get("answer_rows"):
        parts += ["", "## Answers judged", "", answer_rows_markdown(result["answer_rows"]), "",
                  answer_rows_markdown(result["answer_rows_by_type"])]
    parts += [f"\n- note: {n}" for n in result["notes"]]
    return "\n".join(parts)


def publish_eval_artifacts(result: dict, store_uri: str) -> None:
    create_markdown_artifact(eval_markdown(result, store_uri), key=store_key(SUMMARY_KEY, store_uri),
                             description=f"evaluation of snapshot {result['snapshot']}")
    create_table_artifact(result["rows"], key=store_key(ROWS_KEY, store_uri),
                          description="metrics per system (JSON rows)")
    if result.get("answers"):
        rows = [{k: v for k, v in r.items() if k != "sources"} for r in result["answers"]["rows"]]
        create_table_artifact(rows, key=store_key(ANSWERS_KEY, store_uri),
                              description="cited answers and their scores, one per query")
