"""Answer a question with citations as a flow: from the Prefect UI (a typed run form) or from other flows."""
from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.params import SettingsOverrides, run_settings
from tasks.answer_tasks import answer_markdown, answer_question


@flow(name="answer", log_prints=True)
def answer_flow(question: str, k: int | None = None, snapshot: str | None = None, store: str | None = None,
                overrides: SettingsOverrides | None = None) -> dict:
    """Answer a question from a published snapshot, citing the numbered sources it was given; returns the
    answer (text, citations, invalid citations, sources) and shows it as a markdown artifact.

    Args:
        question: The question to answer.
        k: Hits given to the generator as sources (default: settings.answer_k).
        snapshot: Snapshot id to answer from (default: LATEST).
        store: Store to search, a folder or s3://bucket/prefix (default: the worker's MMRAG_STORE).
        overrides: Settings for this run only (generator, generator_model, ...); an empty field keeps the
            worker's setting.
    """
    settings = run_settings(store, overrides)
    answer = answer_question(settings, question, k, snapshot)
    get_run_logger().info("answer from snapshot %s by %s in %.1f s, citing %s%s", answer["snapshot"],
                          answer["generator"], answer["seconds"], answer["citations"],
                          f" (naming no source: {answer['invalid_citations']})" if answer["invalid_citations"] else "")
    create_markdown_artifact(answer_markdown(answer), key="mmrag-answer",
                             description=f"cited answer from snapshot {answer['snapshot']}")
    return answer
