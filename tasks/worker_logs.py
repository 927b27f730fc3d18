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


class ConsoleSafety(logging.Filter):
    """On a handler: control characters in a record's message are escaped (a file name holding a newline or an
    ANSI escape must not break or forge a log line), and an out-of-space error keeps its one line, not a
    traceback (the command says where space ran out)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from mmrag_core.storage.names import printable
        from tasks.retries import disk_full

        if record.exc_info and record.exc_info[1] is not None and disk_full(record.exc_info[1]) is not None:
            record.exc_info, record.exc_text = None, None
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is the logging module's to report
            return True
        safe = printable(message)
        if safe != message:
            record.msg, record.args = safe, ()
        return True


class _DropMessages(logging.Filter):
    """Drops records whose message starts with one of ``prefixes``."""

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


class _BelowLevel(logging.Filter):
    """Drops records below ``level``."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level


# Libraries' lines that say nothing a user can act on in a normal run (the run's own log says what matters).
_QUIET_LEVELS = {"bm25s": logging.WARNING, "transformers": logging.ERROR, "huggingface_hub": logging.ERROR}
_RAY_TOKEN_LOGGER = "ray._private.authentication.authentication_token_setup"


def quiet_library_logs() -> None:
    """Silence known noise: bm25s's DEBUG lines, transformers' and the hub's chatter, and Ray's notice that a
    local cluster uses token authentication (it stays on; the notice is dropped). Idempotent."""
    for name, level in _QUIET_LEVELS.items():  # a filter, not a level: bm25s sets DEBUG on its import
        logger = logging.getLogger(name)
        if not any(isinstance(f, _BelowLevel) for f in logger.filters):
            logger.addFilter(_BelowLevel(level))
    ray_token = logging.getLogger(_RAY_TOKEN_LOGGER)
    if not any(isinstance(f, _DropMessages) for f in ray_token.filters):
        ray_token.addFilter(_DropMessages("Token authentication is enabled"))


def install_console_safety() -> None:
    """Add :class:`ConsoleSafety` to every handler configured so far (the root's, Prefect's console and API
    handlers), once each."""
    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, ConsoleSafety) for f in handler.filters):
                handler.addFilter(ConsoleSafety())
