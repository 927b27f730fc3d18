"""Prefect flows composing the tasks: indexing and querying; the ``mmrag`` CLI sits on top."""
