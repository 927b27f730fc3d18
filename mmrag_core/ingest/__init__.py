"""Ingest (data-flow steps 1-2): discover a source and hash its files, diff them against a catalog,
extract items from each document (text layer or OCR, figures, page renders, chunks with their context),
say which items go into which encoder, and which settings key a stored record.

May import ``models``, ``storage`` and ``config``.
"""
