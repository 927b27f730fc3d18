"""The Prefect task that answers a question with citations from a published snapshot, for flows and runs
started from the Prefect UI; the answerer (extractive, or the generator and its model) is the one the settings
select."""
from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from mmrag_core.answer.answering import ask
from mmrag_core.config import Settings
from mmrag_core.answer.generators import make_generator
from mmrag_core.answer.offline import ask_extractive
from mmrag_core.storage.store import open_store
from tasks.artifacts import _table
from tasks.query_tasks import engine_for


@task(name="answer-question", cache_policy=NO_CACHE)
def answer_question(settings: Settings, question: str, k: int | None = None, snapshot: str | None = None) -> dict:
    """A cited answer (its ``to_dict()``) from the top ``k`` hits of ``snapshot`` or LATEST: extractive
    (default ``settings.extractive_k`` hits) or generated (``settings.answer_k``). The query engine and a local
    generator model stay loaded in the process."""
    engine = engine_for(open_store(settings), settings, snapshot)
    if settings.answerer == "extractive":
        return ask_extractive(engine, question, settings, k=k).to_dict()
    return ask(engine, question, make_generator(settings.answer, settings.models.device), settings, k=k).to_dict()


def answer_markdown(answer: dict) -> str:
    """The answer, its citation check and its numbered sources, as the flow run's artifact."""
    cited = set(answer["citations"])
    lines = [f"# {answer['question']}", "", answer["answer"] or "(empty answer)", "",
             f"Generator `{answer['generator']}`, snapshot `{answer['snapshot']}`, {answer['seconds']} s."]
    if answer["invalid_citations"]:
        lines.append(f"**Citations naming no source:** {answer['invalid_citations']}")
    if answer.get("unsupported"):
        lines.append(f"**Unsupported numbers:** {', '.join(answer['unsupported_numbers'])}")
    rows = [[f"[{s['number']}]", "yes" if s["number"] in cited else "", s["file"], s["page"], s["kind"]]
            for s in answer["sources"]]
    return "\n".join([*lines, "", _table(["source", "cited", "file", "page (0-based)", "kind"], rows)])
