"""The catalog diff that decides what a re-index must do."""
from __future__ import annotations

from mmrag_core.catalog import catalog_table, diff_catalog
from mmrag_core.sources import DocRef


def _docs(*pairs: tuple[str, str]) -> list[DocRef]:
    return [DocRef(uri=u, size=len(s), sha256=s) for u, s in pairs]


def test_first_run_adds_everything() -> None:
    diff = diff_catalog(None, _docs(("a.pdf", "h1"), ("b.png", "h2")))
    assert diff.counts() == {"added": 2, "changed": 0, "removed": 0, "unchanged": 0}


def test_added_changed_removed_unchanged() -> None:
    before = catalog_table(_docs(("a.pdf", "h1"), ("b.png", "h2"), ("c.pdf", "h3")))
    diff = diff_catalog(before, _docs(("a.pdf", "h1"), ("b.png", "h2-new"), ("d.pdf", "h4")))
    assert diff.unchanged == ["a.pdf"]
    assert diff.changed == ["b.png"]
    assert diff.added == ["d.pdf"]
    assert diff.removed == ["c.pdf"]


def test_a_rename_is_a_removal_plus_an_addition_of_the_same_content() -> None:
    before = catalog_table(_docs(("old/a.pdf", "h1")))
    diff = diff_catalog(before, _docs(("new/a.pdf", "h1")))
    assert diff.added == ["new/a.pdf"] and diff.removed == ["old/a.pdf"]


def test_catalog_table_round_trips_rows() -> None:
    table = catalog_table(_docs(("a.pdf", "h1")))
    assert table.to_pylist() == [{"uri": "a.pdf", "sha256": "h1", "size": 2}]
