"""Storage: the store (a local folder or s3://bucket/prefix), its lock, the persisted per-document records
(items and vectors, keyed by document hash), item ids and schema, checksums and crash markers.

The bottom of the core: every later stage reads and writes through it. It imports only ``config``
and third-party libraries.
"""
