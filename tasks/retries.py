"""Which task failures are worth retrying: transient ones (I/O, the network, a Ray worker or actor lost), not
deterministic ones (a bad value, a bug), which would only fail again, later."""
from __future__ import annotations

import errno
from typing import Any

import ray.exceptions

from mmrag_core.config import Settings

# OSError subclasses that say something about the request, not about the moment it was made.
_PERMANENT_OS_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)
# Out of space (or quota, or a read-only store) does not pass in seconds: retrying only delays the message.
_PERMANENT_ERRNOS = {errno.ENOENT, errno.EEXIST, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR,
                     errno.EINVAL, errno.ENAMETOOLONG, errno.ENOSPC, errno.EDQUOT, errno.EROFS}
_RAY_TRANSIENT = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                  ray.exceptions.ObjectLostError, ray.exceptions.LocalRayletDiedError,
                  ray.exceptions.OutOfMemoryError)
_S3_TRANSIENT_CODES = {"Throttling", "ThrottlingException", "SlowDown", "RequestTimeout", "RequestTimeoutException",
                       "InternalError", "ServiceUnavailable", "RequestLimitExceeded", "TooManyRequestsException"}


def _botocore_transient(exc: BaseException) -> bool | None:
    """True/False for a botocore error, None for anything else (or without botocore)."""
    try:
        from botocore import exceptions as bx
    except ImportError:  # pragma: no cover - s3fs (and so botocore) is a dependency
        return None
    if isinstance(exc, (bx.HTTPClientError, bx.ConnectionError)):
        return True
    if isinstance(exc, bx.ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return err.get("Code") in _S3_TRANSIENT_CODES or status == 429 or status >= 500
    if isinstance(exc, bx.BotoCoreError):
        return False  # missing credentials, bad parameters, ...
    return None


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` (or the error it was raised from, or a Ray task's cause) is likely to pass."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, _RAY_TRANSIENT):
            return True
        if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(exc.cause, BaseException):
            # before the OSError test: a task's RayTaskError(OSError) is an OSError too, but one without errno
            exc = exc.cause
            continue
        boto = _botocore_transient(exc)
        if boto is not None:
            return boto
        if isinstance(exc, OSError):  # ConnectionError and TimeoutError included
            return not isinstance(exc, _PERMANENT_OS_ERRORS) and exc.errno not in _PERMANENT_ERRNOS
        exc = exc.__cause__
    return False


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def disk_full(exc: BaseException | None) -> OSError | None:
    """The out-of-space (or quota) error behind ``exc`` (itself, what it was raised from, or a Ray task's cause),
    or None: such a run cannot go on, and its message should say where space ran out, not show a traceback."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(exc.cause, BaseException):
            exc = exc.cause
            continue
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """A Prefect ``retry_condition_fn``: retry a failed task run only on a transient error."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - the failed run's own exception, re-raised by result()
        return is_transient(exc)
    return False


def retry_options(settings: Settings) -> dict[str, Any]:
    """``Task.with_options`` arguments: ``task_retries`` retries on transient errors, with exponential backoff
    starting at ``task_retry_delay_seconds``."""
    n = max(0, settings.task_retries)
    if n == 0:
        return {"retries": 0}
    return {"retries": n, "retry_delay_seconds": [settings.task_retry_delay_seconds * 2**i for i in range(n)],
            "retry_jitter_factor": 0.2, "retry_condition_fn": retry_transient}
