"""Submit work a bounded number at a time: a flow over a million documents must not hold a million task
runs, nor every batch's extraction output, at once."""
from __future__ import annotations

import queue
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TypeVar

T = TypeVar("T")
R_co = TypeVar("R_co", covariant=True)


class Future(Protocol[R_co]):
    """What is needed of a future: a Prefect future and a ``concurrent.futures.Future`` both qualify."""

    def result(self) -> R_co: ...

    def add_done_callback(self, fn: Callable) -> None: ...


def bounded_results(submit: Callable[[int, T], Future[R_co]], items: Iterable[T], limit: int,
                    tick: Callable[[], None] | None = None, every: float = 1.0) -> Iterator[R_co]:
    """Call ``submit(n, item)`` for the items in order, keeping at most ``limit`` unfinished, and yield each
    result as its future completes (completion order). The next item is submitted before a result is
    yielded, so the caller's work on a result does not leave a slot idle. A failed future raises here, as
    ``future.result()`` does; the ones still running are left to finish. ``tick`` is called every ``every``
    seconds while waiting (progress between results)."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    done: queue.SimpleQueue = queue.SimpleQueue()
    pending = iter(enumerate(items))
    running = 0

    def fill() -> None:
        nonlocal running
        while running < limit:
            nxt = next(pending, None)
            if nxt is None:
                return
            submit(*nxt).add_done_callback(done.put)
            running += 1

    fill()
    while running:
        try:
            fut = done.get(timeout=every) if tick is not None else done.get()
        except queue.Empty:
            tick()
            continue
        running -= 1
        fill()
        yield fut.result()
