"""Fault injection for crash tests: ``MMRAG_CRASH_AT=<point>[:<n>]`` SIGKILLs the whole job the ``n``-th
time (default 1st) this process reaches ``crash_point(<point>)``.

"The whole job" is every process of the session the job was started in (the CLI, its Prefect server, Ray's
head and workers), as a power cut or the kernel's OOM killer would: nothing gets to clean up. Inert unless
the variable is set; Linux only (it reads /proc).
"""
from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Iterator

_reached: Counter[str] = Counter()


def crash_point(name: str) -> None:
    """Die here if the environment asks for a crash at ``name``."""
    spec = os.environ.get("MMRAG_CRASH_AT")
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] >= int(nth or 1):
        kill_session(os.getsid(0))


def live_processes() -> Iterator[tuple[int, list[str]]]:
    """(pid, the /proc stat fields after "(comm)": state ppid pgrp session ...) of every live, not zombie,
    process."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            yield int(entry), fields


def session_pids(sid: int) -> list[int]:
    """Pids of every live (not zombie) process in session ``sid``."""
    return [pid for pid, fields in live_processes() if int(fields[3]) == sid]


def kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid``, this one last."""
    me = os.getpid()
    for pid in session_pids(sid):
        if pid != me:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if os.getsid(0) == sid:
        os.kill(me, signal.SIGKILL)
