"""Pages as they finish, across a batch's Ray task: extraction runs a batch of documents per task, so counting
documents only when a batch returns leaves a run of a few large PDFs at 0 % for most of its time. Each
extraction task reports every finished page to one small actor; the flow reads it about once a second."""
from __future__ import annotations

from typing import Any

import ray


@ray.remote(num_cpus=0)
class PageCounter:
    """Per document, the fraction of its pages done; and all pages done. Calls are fire-and-forget."""

    def __init__(self) -> None:
        self.fraction: dict[str, float] = {}
        self.pages = 0

    def page(self, doc: str, done: int, total: int) -> None:
        """Page ``done`` (1-based) of ``total`` of document ``doc`` is extracted."""
        self.pages += 1
        self.fraction[doc] = min(1.0, done / max(1, total))

    def doc_done(self, doc: str) -> None:
        """Document ``doc`` is extracted (whatever its pages said; an image or a refused file has none)."""
        self.fraction[doc] = 1.0

    def read(self) -> tuple[float, int]:
        """(documents done, counting partly extracted ones by their fraction; pages done)."""
        return sum(self.fraction.values()), self.pages


def start_page_counter() -> Any:
    """A new :class:`PageCounter` actor."""
    return PageCounter.remote()


def read_counter(counter: Any, timeout: float = 5.0) -> tuple[float, int] | None:
    """What ``counter`` says, or None when it does not answer in time (progress is for watching only)."""
    try:
        return ray.get(counter.read.remote(), timeout=timeout)
    except Exception:  # noqa: BLE001 - a lost counter must not fail the run
        return None
