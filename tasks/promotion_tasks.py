"""The promotion gate's steps in the ``finetune`` flow: the settings and source of the candidate re-index, the
gate itself (:func:`mmrag_core.eval.promotion.run_gate`) as a Prefect task, and the artifacts its run shows either
way: a markdown comparison (metric per system, current vs candidate, and the decision) and the same rows as a table.
"""
from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from mmrag_core.config import Settings
from mmrag_core.eval.promotion import run_gate
from mmrag_core.eval.retrieval import METRICS
from mmrag_core.snapshot.open import SnapshotError, read_latest_manifest
from mmrag_core.storage.store import open_store
from tasks.artifacts import store_key

SUMMARY_KEY = "mmrag-finetune-gate"
ROWS_KEY = "mmrag-finetune-gate-rows"
QUALITY = METRICS[:6]  # recall@1 .. ndcg@10; the latencies are not what the gate weighs
MODEL_SETTING = {"text": "text_model", "image": "clip_model"}  # the setting that names a space's model


def candidate_settings(settings: Settings, model: str, space: str = "text") -> Settings:
    """The run's settings with the fine-tuned model as the space's model (records are keyed on it: all embedded
    again)."""
    return settings.model_copy(update={MODEL_SETTING[space]: model})


def candidate_source(settings: Settings, source: str | None = None) -> str:
    """What the candidate indexes: ``source`` when given, else the source LATEST was indexed from."""
    if source:
        return source
    latest = read_latest_manifest(open_store(settings))
    if latest is None:
        raise SnapshotError(f"no snapshot published in store {settings.store}: nothing to re-index")
    return latest["source"]


@task(name="promotion-gate", cache_policy=NO_CACHE)
def promotion_gate(settings: Settings, index_report: dict, model: str) -> dict:
    """Compare the candidate ``index_report`` published with LATEST it was built against and promote it when it
    wins; publish the comparison as artifacts either way. Returns the gate's result (JSON)."""
    if not index_report["published"]:  # LATEST was indexed with this very model: nothing to compare
        result = {"decision": "unchanged", "promoted": False, "current": index_report["snapshot"], "candidate": None,
                  "model": model, "reason": f"LATEST {index_report['snapshot']} was already indexed with {model}"}
    else:
        result = run_gate(settings, index_report["manifest"]["parent"], index_report["snapshot"], model).to_json()
    publish_gate_artifacts(result, settings.store)
    return result


def gate_rows(result: dict) -> list[dict]:
    """One row per (system, metric): current, candidate, gain, and whether the gate decides on it."""
    if not result.get("rows"):
        return []
    gate = result["comparison"]
    current = {r["system"]: r for r in result["rows"]["current"]}
    out = []
    for row in result["rows"]["candidate"]:
        system = row["system"]
        for metric in QUALITY:
            before, after = current[system][metric], row[metric]
            out.append({"system": system, "metric": metric, "current": before, "candidate": after,
                        "gain": round(after - before, 4),
                        "gate": system == gate["system"] and metric == gate["metric"]})
    return out


def gate_markdown(result: dict, store_uri: str) -> str:
    """The gate's outcome for people: the decision, the rule, the questions and the comparison table."""
    current, candidate = result["current"], result["candidate"]
    title = {"promoted": f"candidate `{candidate}` promoted to LATEST (was `{current}`)",
             "kept": f"candidate `{candidate}` not promoted; LATEST stays `{current}`",
             "stale": f"candidate `{candidate}` won but LATEST moved meanwhile; not promoted",
             "unchanged": f"no candidate; LATEST `{current}` already uses the model"}[result["decision"]]
    parts = [f"# Promotion gate: {title}", "", f"- store: `{store_uri}`", f"- model: `{result['model']}`",
             f"- decision: **{result['decision']}**: {result['reason']}"]
    if result.get("rows"):
        gate = result["comparison"]
        parts += [f"- rule: {gate['system']} {gate['metric']} must exceed LATEST's by more than "
                  f"{gate['min_gain']:+.4f}", f"- questions: {result['questions']} ({result['origin']})", "",
                  f"| system | metric | current `{current}` | candidate `{candidate}` | gain |",
                  "|---|---|---:|---:|---:|"]
        for r in gate_rows(result):
            mark = "**" if r["gate"] else ""
            parts.append(f"| {mark}{r['system']}{mark} | {mark}{r['metric']}{mark} | {r['current']:.4f} | "
                         f"{r['candidate']:.4f} | {r['gain']:+.4f} |")
        if result["questions"] < 20:
            parts += ["", f"- note: only {result['questions']} questions: a small gain may be noise"]
    return "\n".join(parts)


def publish_gate_artifacts(result: dict, store_uri: str) -> None:
    create_markdown_artifact(gate_markdown(result, store_uri), key=store_key(SUMMARY_KEY, store_uri),
                             description=f"promotion gate of {result['model']}: {result['decision']}")
    rows = gate_rows(result)
    if rows:
        create_table_artifact(rows, key=store_key(ROWS_KEY, store_uri),
                              description="current vs candidate snapshot, per system and metric (JSON rows)")
