"""Stopping a publishing command cleanly on SIGTERM or SIGINT: the signal becomes an exception in the main thread,
so the store lock is released as the stack unwinds; then Ray and every child process (Ray's head and workers, a
temporary Prefect server) are stopped, what was kept is printed, and the exit status is 128 + the signal's
number (143, 130), as for a shell's killed job. A run that does not unwind within ``grace`` seconds is ended
the hard way (children killed): its lease names a dead process, so the next run takes the lock over at once."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(BaseException):
    """Raised in the main thread by SIGTERM or SIGINT; a BaseException, so no ``except Exception`` (a task's
    retry, a flow's failure handling) takes it for the run's own error."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextmanager
def stop_on_signals(grace: float = 30.0) -> Iterator[None]:
    """Turn the first SIGTERM or SIGINT during the block into :class:`Stopped`; later ones are ignored while the
    run unwinds, and after ``grace`` seconds the process ends anyway (children killed first)."""
    stopping = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        if stopping.is_set():
            return
        stopping.set()
        threading.Thread(target=_deadline, args=(signum, grace), daemon=True, name="mmrag-stop-deadline").start()
        raise Stopped(signum)

    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s in STOP_SIGNALS:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _deadline(signum: int, grace: float) -> None:
    time.sleep(grace)
    print(f"mmrag: did not stop within {grace:.0f} s of {signal.Signals(signum).name}; ending now",
          file=sys.stderr, flush=True)
    terminate_children()
    os._exit(128 + signum)


def descendants(pid: int) -> list[int]:
    """Pids of every live process below ``pid`` (children, their children...), read from /proc."""
    from mmrag_core.storage.faults import live_processes

    children: dict[int, list[int]] = {}
    for child, fields in live_processes():
        children.setdefault(int(fields[1]), []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def terminate_children(wait: float = 5.0) -> int:
    """SIGTERM every descendant of this process (taken all at once, so a worker whose parent exits first is not
    missed), SIGKILL those still there after ``wait`` seconds; returns how many there were."""
    pids = descendants(os.getpid())
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for pid in pids:
            try:
                os.kill(pid, sig)
                alive.append(pid)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + (wait if sig == signal.SIGTERM else 2.0)
        while alive and time.monotonic() < deadline:
            _reap()
            alive = [p for p in alive if _alive(p)]
            time.sleep(0.05)
        pids = alive
        if not pids:
            break
    return len(pids)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _reap() -> None:
    """Collect exited children, so they do not linger as zombies of this process."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def shut_down(stopped: Stopped, message: str) -> None:
    """Stop Ray and the children, print ``message`` on stderr and end the process with ``stopped``'s status
    (``os._exit``: the threads still waiting on Ray must not run the interpreter's shutdown)."""
    if "ray" in sys.modules:
        import ray

        try:
            if ray.is_initialized():
                ray.shutdown()
        except Exception:  # noqa: BLE001 - the children are killed below either way
            pass
    terminate_children()
    print(message, file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(stopped.exit_code)
