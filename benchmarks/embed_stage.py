"""The embed stage of a real index run against the raw text encoder on the same texts (issue 20, item 5).

The run's encoder actors append one line per encode call to ``MMRAG_ENCODER_TRACE`` (texts, tokens, padded
tokens, threads, start, seconds, CPU seconds). Afterwards, in this process and with the run's batch size, the
same calls are encoded again standalone: at the threads the run gave each batch (the raw rate the run is held
to), and at all cores in input order, bucketed, and with the encoder as it was before bucketing (before/after).
CPU seconds as well as wall seconds: on a shared machine the wall-clock ratio moves with the load.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from mmrag_core.models.text_encoder import TextEncoder, length_batches


def read_trace(path: Path) -> list[dict]:
    """The traced encode calls of a run, in the order they started."""
    if not path.exists():
        return []
    return sorted((json.loads(line) for line in path.read_text().splitlines() if line.strip()),
                  key=lambda c: c["start"])


def busy_seconds(calls: list[dict]) -> float:
    """Seconds in which at least one encode call ran (the union of the calls' intervals)."""
    total, end = 0.0, float("-inf")
    for c in calls:
        s, e = c["start"], c["start"] + c["seconds"]
        if e > end:
            total += e - max(s, end)
            end = e
    return total


def _previous_batches(texts: list[str], batch_size: int) -> list[np.ndarray]:
    """The batches of the encoder before bucketing (4fe783f): ``batch_size`` rows in order of character length."""
    order = np.argsort([-len(t) for t in texts], kind="stable")
    return [order[s : s + batch_size] for s in range(0, len(texts), batch_size)]


def previous_encode(enc: TextEncoder, texts: list[str]) -> np.ndarray:
    """The encoder before bucketing, for the before/after table: its batches, each tokenised (and padded) again by
    the tokenizer."""
    torch = enc._torch
    out = np.zeros((len(texts), enc.dim), dtype=np.float32)
    with torch.inference_mode():
        for rows in _previous_batches(texts, enc.batch_size):
            batch = [texts[i] if texts[i].strip() else " " for i in rows]
            tok = enc.tokenizer(batch, padding=True, truncation=True, max_length=enc.max_length, return_tensors="pt")
            hidden = enc.model(**tok).last_hidden_state
            mask = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[rows] = torch.nn.functional.normalize(pooled, p=2, dim=1).float().numpy()
    return out


def fed_tokens(enc: TextEncoder, texts: list[str], bucketed: bool | None) -> int:
    """Tokens fed to the model for ``texts``, each batch padded to its longest: by ``enc.encode`` (``bucketed``
    or not), or (None) by the encoder before bucketing."""
    lengths = [len(x) for x in enc.token_ids(texts)]
    batches = (_previous_batches(texts, enc.batch_size) if bucketed is None
               else length_batches(lengths, enc.batch_size, bucketed))
    return sum(len(rows) * max(lengths[i] for i in rows) for rows in batches)


def measure(trace: Path, text_model: str, batch_size: int, stats: dict, rounds: int = 2) -> dict:
    """The run's embed stage from its trace and stats, and the standalone timings on the same calls' texts."""
    calls = read_trace(trace)
    if not calls:
        raise SystemExit(f"no encode calls traced in {trace}: did the run embed anything?")
    texts = [c["texts"] for c in calls]
    tokens = sum(c["tokens"] for c in calls)
    cores = os.cpu_count() or 1
    enc = TextEncoder(text_model, batch_size=batch_size)
    enc.encode(texts[0][:batch_size], threads=cores)  # first-call set-up (allocator, thread pool) out of the timings
    modes = {  # name -> (encode one call's texts at all cores, tokens fed to the model)
        "input order": (lambda t: enc.encode(t, bucketed=False, threads=cores),
                        sum(fed_tokens(enc, t, False) for t in texts)),
        "before: char-length order, re-tokenised": (lambda t: previous_encode(enc, t),
                                                     sum(fed_tokens(enc, t, None) for t in texts)),
        "bucketed, tokenised once": (lambda t: enc.encode(t, threads=cores),
                                     sum(fed_tokens(enc, t, True) for t in texts)),
    }
    best: dict[str, float] = {}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(rounds):  # interleaved rounds, the best of each: the machine is shared
        for mode, (fn, _fed) in modes.items():
            t0, cpu0 = time.perf_counter(), time.process_time()
            vectors[mode] = np.concatenate([fn(t) for t in texts])
            best[mode] = min(best.get(mode, float("inf")), time.perf_counter() - t0)
            best[mode + " cpu"] = min(best.get(mode + " cpu", float("inf")), time.process_time() - cpu0)
        t0, cpu0 = time.perf_counter(), time.process_time()
        for c in calls:  # the raw encoder as the run used it: each call at the thread count the run gave it
            enc.encode(c["texts"], threads=iter(c["threads"]).__next__)  # its threads, batch by batch
        best["raw"] = min(best.get("raw", float("inf")), time.perf_counter() - t0)
        best["raw cpu"] = min(best.get("raw cpu", float("inf")), time.process_time() - cpu0)
    before = vectors["before: char-length order, re-tokenised"]
    busy, caller = busy_seconds(calls), float(stats.get("seconds_embed_calls", 0.0))
    run_cpu = sum(c["cpu_seconds"] for c in calls)
    return {
        "calls": len(calls), "texts": sum(len(t) for t in texts), "tokens": tokens,
        "threads_per_batch": [c["threads"] for c in calls], "cores": cores,
        "run_fed_tokens": sum(c["padded_tokens"] for c in calls),
        "run_encode_busy_s": busy, "run_embed_calls_s": caller, "raw_at_run_threads_s": best["raw"],
        "run_encode_cpu_s": run_cpu, "raw_cpu_s": best["raw cpu"], "efficiency_cpu": best["raw cpu"] / run_cpu,
        "efficiency_encoder_busy": best["raw"] / busy,
        "efficiency_embed_calls": best["raw"] / caller if caller else None,
        "standalone_s": {m: best[m] for m in modes},
        "standalone_cpu_s": {m: best[m + " cpu"] for m in modes},
        "fed_tokens": {m: fed for m, (_fn, fed) in modes.items()},
        "min_cosine_vs_before": {m: float((v * before).sum(axis=1).min()) for m, v in vectors.items()},
    }


def rows(m: dict) -> list[tuple[str, str]]:
    """The table of the embed stage."""
    tok, busy, raw = m["tokens"], m["run_encode_busy_s"], m["raw_at_run_threads_s"]
    out = [
        ("encode calls (threads of each batch)", f"{m['calls']} {m['threads_per_batch']} on {m['cores']} cores"),
        ("texts / tokens embedded", f"{m['texts']} / {tok}"),
        ("run: encoder busy (actor side) (s)", f"{busy:.2f} ({tok / busy:.0f} tok/s)"),
        ("run: embed calls (flow side, stats) (s)", f"{m['run_embed_calls_s']:.2f}"),
        ("raw encoder, same calls and threads (s)", f"{raw:.2f} ({tok / raw:.0f} tok/s)"),
        ("EFFICIENCY raw / run encoder busy", f"{m['efficiency_encoder_busy']:.2f}"),
        ("CPU seconds: run encoder / raw encoder",
         f"{m['run_encode_cpu_s']:.2f} / {m['raw_cpu_s']:.2f}: efficiency {m['efficiency_cpu']:.2f}"),
        ("efficiency raw / run embed calls",
         f"{m['efficiency_embed_calls']:.2f}" if m["efficiency_embed_calls"] else "-"),
    ]
    for mode, s in m["standalone_s"].items():
        pad = m["fed_tokens"][mode]
        out.append((f"standalone, all cores: {mode}",
                    f"{s:.2f} s ({m['standalone_cpu_s'][mode]:.2f} CPU s), {pad} tokens fed "
                    f"(+{100 * (pad - tok) / tok:.0f}% padding), "
                    f"min cos vs before {m['min_cosine_vs_before'][mode]:.4f}"))
    return out
