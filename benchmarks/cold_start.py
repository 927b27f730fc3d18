"""Cold start of the embedded default (issue 20, item 1): what a new user waits for before anything happens.

Three commands, each a fresh process, timed from launch to exit (or to the first healthy answer):

* ``mmrag index`` of 2 small born-digital PDFs (3 pages, cut from the ``make demo`` sample corpus) into a NEW
  store, with the embedded Prefect API (no ``PREFECT_API_URL``): target <= 15 s;
* ``mmrag query --store S "TEXT"`` cold: target <= 3 s;
* ``mmrag serve --store S`` until ``GET /healthz`` answers 200: target <= 8 s.

Each is run ``--runs`` times; the table shows the median, min and max and the 1-minute load average before each
run (this machine is shared). The Prefect home is made once, by an unmeasured first index run (it creates and
migrates Prefect's database, which a user's first run ever pays once; its time is reported on its own line).
``--baseline`` measures another checkout's code (e.g. a worktree of the commit before) with the same Python, the
two taking turns run by run, for a before/after ratio under the same load. Writes
``benchmarks/results/cold_start.json``.

    python benchmarks/cold_start.py --runs 3
    git worktree add /tmp/wt-before HEAD && python benchmarks/cold_start.py --runs 3 --baseline /tmp/wt-before
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"index": 15.0, "query": 3.0, "serve": 8.0}
QUERY = "how do I adjust the brakes"
# (file of the sample corpus, first page, last page): 2 PDFs, 3 pages in all, born-digital.
PAGES = (("bicycle_maintenance_manual.pdf", 0, 1), ("coral_reef_fish_field_guide.pdf", 0, 0))


def make_corpus(folder: Path, sample: Path) -> Path:
    """The 2 small PDFs, cut from the sample corpus (generated into ``sample`` when missing)."""
    import pymupdf

    if not (sample / PAGES[0][0]).exists():
        subprocess.run([sys.executable, str(REPO / "scripts/make_sample_corpus.py"), str(sample)], check=True,
                       capture_output=True)
    folder.mkdir(parents=True, exist_ok=True)
    for name, first, last in PAGES:
        out = pymupdf.open()
        out.insert_pdf(pymupdf.open(sample / name), from_page=first, to_page=last)
        out.save(folder / name)
    return folder


def _env(prefect_home: Path) -> dict[str, str]:
    prefect_home.parent.mkdir(parents=True, exist_ok=True)  # Prefect makes its home, not the folders above
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # the embedded default
    env.update({"PREFECT_HOME": str(prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def _mmrag(repo: Path, python: str, *args: str) -> list[str]:
    return [python, "-m", "flows.cli", *args]


def time_index(repo: Path, python: str, corpus: Path, store: Path, env: dict) -> dict:
    """One ``mmrag index --json`` into a new store: wall seconds and the run's own stage times."""
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(_mmrag(repo, python, "index", str(corpus), "--store", str(store), "--json"), cwd=repo,
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"mmrag index failed:\n{proc.stderr[-4000:]}")
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    stats = report["manifest"]["stats"]
    keep = ("seconds_start_workers", "seconds_processing", "seconds_extract_tasks", "seconds_embed_calls",
            "in_process")
    return {"seconds": round(wall, 2), "load": load, "published": report["published"],
            "reported_seconds_wall": report.get("seconds_wall"), **{k: stats.get(k) for k in keep}}


def time_query(repo: Path, python: str, store: Path, env: dict) -> dict:
    """One cold ``mmrag query``: wall seconds to its exit."""
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(_mmrag(repo, python, "query", "--store", str(store), QUERY, "-k", "5"), cwd=repo, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or "hits" not in proc.stdout:
        raise SystemExit(f"mmrag query failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return {"seconds": round(wall, 2), "load": load}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_serve(repo: Path, python: str, store: Path, env: dict, timeout: float = 180.0) -> dict:
    """``mmrag serve`` from launch until ``GET /healthz`` answers 200 (polled every 50 ms), then stopped."""
    port = _free_port()
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(_mmrag(repo, python, "serve", "--store", str(store), "--port", str(port)), cwd=repo,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None:
                raise SystemExit(f"mmrag serve exited with {proc.returncode}:\n{proc.stderr.read()[-4000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return {"seconds": round(time.perf_counter() - t0, 2), "load": load}
            except OSError:
                pass
            time.sleep(0.05)
        raise SystemExit(f"mmrag serve not healthy in {timeout} s")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def summary(runs: list[dict]) -> dict:
    secs = [r["seconds"] for r in runs]
    return {"median": round(statistics.median(secs), 2), "min": min(secs), "max": max(secs),
            "load_median": round(statistics.median(r["load"] for r in runs), 2), "runs": runs}


def measure(repos: dict[str, Path], python: str, runs: int, only: set[str], work: Path) -> dict[str, dict]:
    """Every command ``runs`` times for each checkout, the checkouts taking turns within each round, so a
    before/after ratio sees the same machine load. Each checkout gets its own Prefect home and stores."""
    corpus = make_corpus(work / "corpus", work / "sample")
    results: dict[str, dict] = {label: {} for label in repos}
    envs = {label: _env(work / label / "prefect") for label in repos}
    for label, repo in repos.items():
        first = time_index(repo, python, corpus, work / label / "store-first", envs[label])
        print(f"[{label}] first run (creates Prefect's database): {first['seconds']} s (load {first['load']:.2f})",
              flush=True)
        results[label]["index_first_run_new_prefect_home"] = first
    timers = {"index": lambda repo, env, label, i: time_index(repo, python, corpus, work / label / f"store-{i}", env),
              "query": lambda repo, env, label, i: time_query(repo, python, work / label / "store-first", env),
              "serve": lambda repo, env, label, i: time_serve(repo, python, work / label / "store-first", env)}
    for name in (n for n in TARGETS if n in only):
        rounds: dict[str, list[dict]] = {label: [] for label in repos}
        for i in range(runs):
            for label, repo in repos.items():
                rounds[label].append(timers[name](repo, envs[label], label, i))
                print(f"[{label}] {name} run {i + 1}: {rounds[label][-1]['seconds']} s "
                      f"(load {rounds[label][-1]['load']:.2f})", flush=True)
        for label in repos:
            results[label][name] = summary(rounds[label])
    return results


def print_table(results: dict[str, dict]) -> None:
    print(f"\n{'code':<10} {'command':<8} {'target':>7} {'median':>7} {'min':>6} {'max':>6} {'load':>5}  met")
    for label, res in results.items():
        for name in TARGETS:
            if name in res:
                r = res[name]
                met = "yes" if r["median"] <= TARGETS[name] else f"no (+{r['median'] - TARGETS[name]:.1f} s)"
                print(f"{label:<10} {name:<8} {TARGETS[name]:>6.0f}s {r['median']:>6.2f}s {r['min']:>5.2f}s "
                      f"{r['max']:>5.2f}s {r['load_median']:>5.2f}  {met}")
    labels = list(results)
    if len(labels) == 2:
        a, b = labels
        for name in TARGETS:
            if name in results[a] and name in results[b]:
                print(f"ratio {b}/{a} {name}: {results[b][name]['median'] / results[a][name]['median']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--baseline", type=Path, help="another checkout (e.g. a worktree of the commit before), "
                                                 "measured in turns with this one")
    ap.add_argument("--repo", type=Path, default=REPO, help="checkout whose code runs (default: this one)")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/cold_start.json")
    ap.add_argument("--only", choices=sorted(TARGETS), action="append", help="measure only these commands")
    args = ap.parse_args()
    repos = {**({"baseline": args.baseline} if args.baseline else {}), "current": args.repo}
    with tempfile.TemporaryDirectory(prefix="mmrag-cold-") as tmp:
        results = measure(repos, args.python, args.runs, set(args.only or TARGETS), Path(tmp))
    print_table(results)
    out = {"repos": {k: str(v) for k, v in repos.items()}, "runs": args.runs,
           "corpus": [f"{n} pages {a + 1}-{b + 1}" for n, a, b in PAGES],
           "clip_model": os.environ.get("MMRAG_CLIP_MODEL", "default"), "cpus": os.cpu_count(),
           "targets": TARGETS, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
