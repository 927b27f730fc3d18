"""``mmrag snapshots [list|show|verify|gc]``: read, check and garbage-collect the published snapshots of a
store, one function per action."""
from __future__ import annotations

import argparse
import json

from flows.cli.common import command_settings, lexical_line, space_line
from mmrag_core.config import Settings
from mmrag_core.snapshot.open import SnapshotError, read_manifest, verify
from mmrag_core.storage.store import Store, open_store


def cmd_snapshots(args: argparse.Namespace) -> int:
    """Run the ``snapshots`` action (``list`` when none is given)."""
    settings = command_settings(args)
    store = open_store(settings)
    if not store.root_exists():
        raise FileNotFoundError(f"store {store.uri} does not exist (check --store, MMRAG_STORE or the config file)")
    action = args.action or "list"
    latest = store.latest_id()
    if action == "list":
        return _list(store, latest, getattr(args, "json", False))
    if action == "show":
        return _show(store, latest, args)
    if action == "verify":
        return _verify(store, latest, args)
    return _gc(store, settings, args)


def _list(store: Store, latest: str | None, as_json: bool) -> int:
    """One line per snapshot, or (``--json``) a list of their ids, parents, counts and whether LATEST."""
    if as_json:
        rows = []
        for sid in store.list_snapshots():
            m = read_manifest(store, sid)
            rows.append({"id": sid, "latest": sid == latest, "parent": m["parent"], "created_at": m["created_at"],
                         "counts": m["counts"], "tombstones": m["tombstones"]})
        print(json.dumps(rows, indent=2))
        return 0
    for sid in store.list_snapshots():
        m = read_manifest(store, sid)
        mark = " (LATEST)" if sid == latest else ""
        print(f"{sid}{mark}  parent={m['parent']} items={m['counts']['items']} docs={m['counts']['documents']} "
              f"failures={m['counts']['failures']} tombstones={m['tombstones']}")
    return 0


def _show(store: Store, latest: str | None, args: argparse.Namespace) -> int:
    m = read_manifest(store, args.snapshot)
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    print(f"snapshot {m['id']}{' (LATEST)' if m['id'] == latest else ''}, parent {m['parent']}, "
          f"created {m['created_at']}\n  source: {m['source']}\n  counts: {m['counts']}")
    for space, meta in m["spaces"].items():
        print("  " + space_line(space, meta))
    if m.get("lexical"):
        print("  " + lexical_line(m["lexical"]))
    print(f"  files: {len(m['files'])}, {sum(f['bytes'] for f in m['files'].values())} bytes")
    return 0


def _verify(store: Store, latest: str | None, args: argparse.Namespace) -> int:
    """1 when any verified snapshot fails its checksums."""
    if not args.all and not (args.snapshot or latest):
        read_manifest(store)  # raises the reason: nothing published, or LATEST missing (exit 2)
    ids = store.list_snapshots() if args.all else [args.snapshot or latest]
    bad = 0
    for sid in ids:
        try:
            verify(store, read_manifest(store, sid))
            print(f"{sid}: ok")
        except SnapshotError as e:
            bad += 1
            print(f"{sid}: FAILED - {e}")
    return 1 if bad else 0


def _gc(store: Store, settings: Settings, args: argparse.Namespace) -> int:
    from mmrag_core.snapshot.retention import collect_garbage

    plan = collect_garbage(store, settings, "mmrag snapshots gc", args.keep_last, args.keep_days, args.grace_seconds,
                           args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    print(f"kept {len(plan.kept)} snapshot(s); {verb} {len(plan.dropped_snapshots)} snapshot(s) and "
          f"{len(plan.delete)} object(s) ({len(plan.temporary)} orphaned temporary file(s)), {plan.bytes} bytes; "
          f"{len(plan.young)} unreferenced unit(s) left within the grace period")
    return 0
