"""Query a published snapshot as a flow: from the Prefect UI (a typed run form) or from other flows."""
from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.params import SettingsOverrides, run_settings
from tasks.query_tasks import query_snapshot


@flow(name="query", log_prints=True)
def query_flow(text: str | None = None, image: str | None = None, k: int | None = None,
               snapshot: str | None = None, store: str | None = None,
               overrides: SettingsOverrides | None = None, strategy: str | None = None,
               filters: dict | None = None) -> list[dict]:
    """Search a published snapshot; returns the hits as dicts and shows them as a table artifact.

    Args:
        text: Query text.
        image: Query image: a file path or s3:// URI readable by the worker.
        k: Hits to return (default: settings.k).
        snapshot: Snapshot id to search (default: LATEST).
        store: Store to search, a folder or s3://bucket/prefix (default: the worker's MMRAG_STORE).
        overrides: Settings for this run only; an empty field keeps the worker's setting.
        strategy: How ranked lists are produced and combined: late, early, cascade or unified (default:
            settings.fusion_strategy).
        filters: Metadata filters applied inside the search: {"source": URI prefix(es), "doc": file name(s),
            name(s) or sha256, "kind": chunk/figure/image, "pages": "A-B" (0-based)}.
    """
    if not (text and text.strip()) and not image:
        raise ValueError("a query needs text, an image, or both")
    settings = run_settings(store, overrides)
    hits = query_snapshot(settings, text, image, k, snapshot, strategy, filters)
    sid = hits[0]["snapshot"] if hits else snapshot or "LATEST"
    get_run_logger().info("%d hit(s) from snapshot %s of %s", len(hits), sid, settings.store)
    create_table_artifact(
        key="query-hits",
        table=[{"rank": n, "score": h["score"], "kind": h["kind"], "source": h["source_uri"], "page": h["page"],
                "snippet": h["snippet"]} for n, h in enumerate(hits, 1)],
        description=f"Hits for {text or ''}{' + image ' + image if image else ''} from snapshot {sid} (pages 0-based)",
    )
    return hits
