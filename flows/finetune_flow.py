"""Fine-tuning the text encoder as a flow, for the ``finetune`` deployment: mine hard negatives from a store's
snapshot, train an adapter on Ray Train (checkpointed to the store, so a rerun resumes), and write the versioned
model to ``models/text/<id>/`` of the same store, ready for ``text_model: store:models/text/<id>``.

With ``promote`` (the deployment's default) the loop closes: the source is indexed again with the new model into a
candidate snapshot that does not move LATEST, both snapshots are evaluated on the same questions, and LATEST moves
to the candidate only when it wins (:mod:`mmrag_core.eval.promotion`); the run's artifact shows the comparison."""
from __future__ import annotations

from prefect import flow, get_run_logger

from flows.index_flow import run_index
from flows.params import SettingsOverrides, run_settings
from mmrag_core.config import Settings
from tasks.finetune_tasks import finetune_task
from tasks.promotion_tasks import candidate_settings, candidate_source, promotion_gate


@flow(name="finetune", log_prints=True)
def finetune_flow(store: str | None = None, queries: str | None = None, qrels: str | None = None,
                  synthetic: bool = False, max_steps: int | None = None, space: str = "text",
                  overrides: SettingsOverrides | None = None, promote: bool | None = None,
                  source: str | None = None) -> dict:
    """Fine-tune the text encoder on the store's LATEST snapshot and publish the model in the store; with
    ``promote``, index a candidate snapshot with it and move LATEST there only when it evaluates better.

    Args:
        store: Store whose snapshot is mined and where the model is written (default: the worker's MMRAG_STORE).
        queries: Labelled questions on the worker (JSON lines: query_id, text, answer); none: self-supervised only.
        qrels: Their relevant pages on the worker (TSV: query_id, corpus_id = <doc_name>#p<page>, 0-based, score).
        synthetic: Also train on self-supervised pairs from the corpus (headings, statement line items).
        max_steps: Most optimisation steps (default: settings.finetune_max_steps).
        space: The space whose encoder is fine-tuned (text only).
        overrides: Settings for this run only (finetune_* settings); an empty field keeps the worker's setting.
        promote: Re-index with the new model into a candidate snapshot, evaluate it against LATEST and promote it
            when it wins (default: settings.finetune_promote).
        source: What the candidate indexes (default: the source LATEST was indexed from).
    """
    settings = run_settings(store, overrides)
    result = finetune_task(settings, queries, qrels, synthetic, max_steps, space)
    get_run_logger().info("fine-tuned model %s (%d pairs, %d steps, validation loss %.4f -> %.4f)",
                          result["path"], result["pairs"], result["steps"], result["val_loss_before"],
                          result["val_loss_after"])
    if settings.finetune_promote if promote is None else promote:
        result["promotion"] = promote_model(settings, result["path"], source, result.get("space", space))
    return result


def promote_model(settings: Settings, model: str, source: str | None = None, space: str = "text") -> dict:
    """Index ``source`` (default: LATEST's) with ``model`` as a candidate snapshot, then the promotion gate."""
    report = run_index(candidate_source(settings, source), candidate_settings(settings, model, space),
                       move_latest=False)
    gate = promotion_gate(settings, report, model)
    get_run_logger().info("promotion gate: %s (%s)", gate["decision"], gate["reason"])
    return gate
