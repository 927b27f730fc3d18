"""Fine-tuning the text encoder as a flow, for the ``finetune`` deployment: mine hard negatives from a store's
snapshot, train an adapter on Ray Train (checkpointed to the store, so a rerun resumes), and write the versioned
model to ``models/text/<id>/`` of the same store, ready for ``text_model: store:models/text/<id>``."""
from __future__ import annotations

from prefect import flow, get_run_logger

from flows.params import SettingsOverrides, run_settings
from tasks.finetune_tasks import finetune_task


@flow(name="finetune", log_prints=True)
def finetune_flow(store: str | None = None, queries: str | None = None, qrels: str | None = None,
                  synthetic: bool = False, max_steps: int | None = None, space: str = "text",
                  overrides: SettingsOverrides | None = None) -> dict:
    """Fine-tune the text encoder on the store's LATEST snapshot and publish the model in the store.

    Args:
        store: Store whose snapshot is mined and where the model is written (default: the worker's MMRAG_STORE).
        queries: Labelled questions on the worker (JSON lines: query_id, text, answer); none: self-supervised only.
        qrels: Their relevant pages on the worker (TSV: query_id, corpus_id = <doc_name>#p<page>, 0-based, score).
        synthetic: Also train on self-supervised pairs from the corpus (headings, statement line items).
        max_steps: Most optimisation steps (default: settings.finetune_max_steps).
        space: The space whose encoder is fine-tuned (text only).
        overrides: Settings for this run only (finetune_* settings); an empty field keeps the worker's setting.
    """
    settings = run_settings(store, overrides)
    result = finetune_task(settings, queries, qrels, synthetic, max_steps, space)
    get_run_logger().info("fine-tuned model %s (%d pairs, %d steps, validation loss %.4f -> %.4f)",
                          result["path"], result["pairs"], result["steps"], result["val_loss_before"],
                          result["val_loss_after"])
    return result
