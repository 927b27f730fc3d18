"""One writer per store: a lease object (``locks/<name>.json``) created exclusively, renewed while held.

Indexing, compaction and gc take it, whether run from the CLI, a Prefect deployment or a notebook, so two
runs never interleave their writes. A holder that dies leaves its lease behind: it is taken over at once
when the holder was a process on this host that no longer exists, and otherwise once it has not been
renewed for ``ttl`` seconds.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from mmrag_core.storage.store import Store

LOCKS = "locks"


class StoreLocked(RuntimeError):
    """Another run holds the store's lock."""


@dataclass
class Lease:
    owner: str  # what holds it, for messages: "mmrag index on host pid 123"
    token: str
    host: str
    pid: int
    started: str  # the holder process's start time, so a recycled pid is not mistaken for it
    acquired_at: float
    expires_at: float


def _process_start(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        return ""


def _holder_is_gone(lease: Lease, now: float) -> bool:
    if now > lease.expires_at:
        return True
    if lease.host != socket.gethostname():
        return False
    return _process_start(lease.pid) != lease.started  # no such process, or another one under that pid


def _read(store: Store, key: str) -> Lease | None:
    try:
        return Lease(**json.loads(store.read_bytes(key)))
    except FileNotFoundError:
        return None


@contextmanager
def store_lock(store: Store, what: str, name: str = "index", ttl: float = 300.0, wait: float = 0.0,
               poll: float = 2.0) -> Iterator[Lease]:
    """Hold the store's ``name`` lock for the block; wait up to ``wait`` seconds for it, then raise
    StoreLocked saying who holds it. The lease is renewed every ``ttl / 3`` seconds while held."""
    key = f"{LOCKS}/{name}.json"
    deadline = time.time() + wait
    while True:
        now = time.time()
        lease = Lease(what, uuid.uuid4().hex, socket.gethostname(), os.getpid(), _process_start(os.getpid()),
                      now, now + ttl)
        try:
            store.create_exclusive(key, json.dumps(asdict(lease)).encode())
            break
        except FileExistsError:
            held = _read(store, key)
            if held is None:
                continue  # released between our attempt and the read
            if _holder_is_gone(held, now):
                again = _read(store, key)
                if again is not None and again.token == held.token:
                    store.delete(key)
                continue
            if time.time() >= deadline:
                since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(held.acquired_at))
                raise StoreLocked(f"store {store.uri} is locked by {held.owner} (host {held.host}, pid {held.pid}) "
                                  f"since {since}: another run is writing to it. Try again when it ends"
                                  + (f" (waited {wait:.0f} s)" if wait else "")) from None
            time.sleep(poll)
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(store, key, lease, ttl, stop), daemon=True)
    renewer.start()
    try:
        yield lease
    finally:
        stop.set()
        renewer.join()
        held = _read(store, key)
        if held is not None and held.token == lease.token:
            store.delete(key)


def _renew(store: Store, key: str, lease: Lease, ttl: float, stop: threading.Event) -> None:
    while not stop.wait(ttl / 3):
        held = _read(store, key)
        if held is None or held.token != lease.token:
            return  # taken over (we were presumed dead): nothing left to renew
        lease.expires_at = time.time() + ttl
        store.write_bytes(key, json.dumps(asdict(lease)).encode())
