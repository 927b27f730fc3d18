"""Prefect tasks: thin wrappers that run mmrag_core functions on Ray workers."""
