"""The store lock: one writer at a time, a clear message for the second, dead holders taken over."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from mmrag_core.storage.lock import LOCKS, StoreLocked, store_lock
from mmrag_core.storage.store import Store
from tests.synthetic_docs import local_store_fixture, s3_store_fixture, store_fixture  # noqa: F401

KEY = f"{LOCKS}/index.json"


def test_second_holder_is_refused_with_who_holds_it(store: Store) -> None:
    with store_lock(store, "mmrag index /a"), pytest.raises(StoreLocked, match=r"locked by mmrag index /a"):
        with store_lock(store, "mmrag index /b"):
            pass
    assert not store.exists(KEY), "released on exit"
    with store_lock(store, "mmrag index /b"):
        assert json.loads(store.read_bytes(KEY))["owner"] == "mmrag index /b"


def test_waiter_gets_the_lock_when_the_holder_ends(local_store: Store) -> None:
    order = []

    def holder() -> None:
        with store_lock(local_store, "first"):
            order.append("first in")
            time.sleep(1.0)
            order.append("first out")

    t = threading.Thread(target=holder)
    t.start()
    time.sleep(0.2)
    with store_lock(local_store, "second", wait=10, poll=0.1):
        order.append("second in")
    t.join()
    assert order == ["first in", "first out", "second in"]


def test_waiting_gives_up_after_the_timeout(local_store: Store) -> None:
    with store_lock(local_store, "first"):
        t0 = time.monotonic()
        with pytest.raises(StoreLocked, match=r"waited"), store_lock(local_store, "second", wait=0.5, poll=0.1):
            pass
        assert 0.4 < time.monotonic() - t0 < 3


def test_a_dead_holder_on_this_host_is_taken_over_at_once(store: Store) -> None:
    """A process killed while holding the lock (kill -9) cannot release it; its lease names a pid that is gone."""
    code = ("import os, sys; from mmrag_core.storage.store import Store; from mmrag_core.storage.lock import store_lock\n"
            "s = Store(sys.argv[1], {k: v for k, v in (a.split('=', 1) for a in sys.argv[2:])})\n"
            "with store_lock(s, 'doomed'):\n    os._exit(0)  # dies holding it\n")
    options = [f"{k}={v}" for k, v in store.fs.storage_options.items() if isinstance(v, str)]
    subprocess.run([sys.executable, "-c", code, store.uri, *options], check=True, timeout=60)
    assert json.loads(store.read_bytes(KEY))["owner"] == "doomed"
    with store_lock(store, "survivor"):
        assert json.loads(store.read_bytes(KEY))["owner"] == "survivor"


def test_an_expired_lease_is_taken_over(local_store: Store) -> None:
    lease = {"owner": "other host", "token": "t", "host": "elsewhere", "pid": 1, "started": "1",
             "acquired_at": time.time() - 100, "expires_at": time.time() - 1}
    local_store.write_bytes(KEY, json.dumps(lease).encode())
    with store_lock(local_store, "me"):
        assert json.loads(local_store.read_bytes(KEY))["owner"] == "me"
    lease["expires_at"] = time.time() + 100
    local_store.write_bytes(KEY, json.dumps(lease).encode())
    with pytest.raises(StoreLocked, match="other host"), store_lock(local_store, "me"):
        pass


def test_the_lease_is_renewed_while_held(local_store: Store) -> None:
    with store_lock(local_store, "long", ttl=0.6):
        first = json.loads(local_store.read_bytes(KEY))["expires_at"]
        time.sleep(0.5)
        assert json.loads(local_store.read_bytes(KEY))["expires_at"] > first
