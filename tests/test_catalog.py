"""The catalog a snapshot records, and the diff that decides what a re-index must do."""
from __future__ import annotations

from mmrag_core.ingest.catalog import CATALOG_SCHEMA, catalog_table, diff_catalog
from mmrag_core.ingest.sources import DocRef


def _docs(*pairs: tuple[str, str]) -> list[DocRef]:
    return [DocRef(uri=u, size=len(s), sha256=s) for u, s in pairs]


def _catalog(*pairs: tuple[str, str]) -> list[dict]:
    """Catalog rows of documents, as a snapshot lists them (id ranges left out)."""
    return [{"uri": d.uri, "sha256": d.sha256, "size": d.size} for d in _docs(*pairs)]


def test_first_run_adds_everything() -> None:
    diff = diff_catalog(None, _docs(("a.pdf", "h1"), ("b.png", "h2")))
    assert diff.counts() == {"added": 2, "changed": 0, "removed": 0, "unchanged": 0}


def test_added_changed_removed_unchanged() -> None:
    before = catalog_table(_catalog(("a.pdf", "h1"), ("b.png", "h2"), ("c.pdf", "h3")))
    diff = diff_catalog(before, _docs(("a.pdf", "h1"), ("b.png", "h2-new"), ("d.pdf", "h4")))
    assert diff.unchanged == ["a.pdf"]
    assert diff.changed == ["b.png"]
    assert diff.added == ["d.pdf"]
    assert diff.removed == ["c.pdf"]


def test_a_rename_is_a_removal_plus_an_addition_of_the_same_content() -> None:
    before = catalog_table(_catalog(("old/a.pdf", "h1")))
    diff = diff_catalog(before, _docs(("new/a.pdf", "h1")))
    assert diff.added == ["new/a.pdf"] and diff.removed == ["old/a.pdf"]


def test_catalog_table_round_trips_rows() -> None:
    row = {"uri": "a.pdf", "sha256": "h1", "size": 2, "id_start": 40, "id_count": 5,
           "vectors_text": 3, "vectors_image": 2}
    table = catalog_table([row])
    assert table.schema == CATALOG_SCHEMA
    assert table.to_pylist() == [row]


def test_catalog_table_leaves_missing_columns_null() -> None:
    table = catalog_table(_catalog(("a.pdf", "h1")))
    assert table.schema == CATALOG_SCHEMA
    assert table.to_pylist() == [{"uri": "a.pdf", "sha256": "h1", "size": 2, "id_start": None, "id_count": None,
                                  "vectors_text": None, "vectors_image": None}]
