"""Snapshot (data-flow step 7): the typed manifest, publishing an immutable snapshot (every file verified
before LATEST moves), opening and verifying one for queries, retention and gc, and the diff of a source
against the latest snapshot's catalog (what the next run must do).

May import ``index``, ``ingest``, ``models``, ``storage`` and ``config``.
"""
