"""Log records made inside a Ray task, carried back with its result and written again into the Prefect run's log.

Ray's ``log_to_driver`` copies a worker's output to the driver's terminal only: a run watched in the Prefect UI,
or run by a deployment whose workers are other machines, would never show what a worker logged. So the task
collects its own records (mmrag's loggers, INFO and up) and returns them; the Prefect task that waited for it
logs them through the run logger, prefixed with the host they came from.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

CAPTURED_LOGGERS = ("mmrag_core", "tasks")  # what a Ray task of ours logs through


@dataclass(frozen=True)
class WorkerLog:
    """One log record, reduced to what pickles small and reads alone."""

    level: int
    logger: str
    message: str


class _Collector(logging.Handler):
    def __init__(self, into: list[WorkerLog], limit: int) -> None:
        super().__init__(logging.INFO)
        self.into, self.limit, self.dropped = into, limit, 0

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.into) >= self.limit:  # a pathological document must not turn its result into a log dump
            self.dropped += 1
            return
        try:
            message = record.getMessage()
        except Exception as e:  # noqa: BLE001 - a bad format string is still worth seeing
            message = f"{record.msg!r} (unformattable: {e})"
        self.into.append(WorkerLog(record.levelno, record.name, message))


@contextmanager
def captured_logs(limit: int = 200) -> Iterator[list[WorkerLog]]:
    """Collect what :data:`CAPTURED_LOGGERS` log at INFO and up inside the block (at most ``limit`` records; one
    more says how many were dropped)."""
    records: list[WorkerLog] = []
    collector = _Collector(records, limit)
    loggers = [logging.getLogger(name) for name in CAPTURED_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(collector)
        if lg.getEffectiveLevel() > logging.INFO:
            lg.setLevel(logging.INFO)
    try:
        yield records
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(collector)
            lg.setLevel(level)
        if collector.dropped:
            records.append(WorkerLog(logging.WARNING, __name__, f"{collector.dropped} more log records dropped"))


def replay(records: list[WorkerLog], logger: logging.Logger | logging.LoggerAdapter, where: str) -> None:
    """Write worker records into ``logger`` (a Prefect run logger), each with the host and logger it came from."""
    for r in records:
        logger.log(r.level, "[%s] %s: %s", where, r.logger, r.message)
