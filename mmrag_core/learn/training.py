"""Contrastive fine-tuning of an encoder with a small adapter: the training loop one Ray Train worker runs
(and that runs as plain Python too, for tests and single-process use). The text space trains a LoRA adapter or a
projection of the text encoder; the image space a projection of each CLIP tower
(:mod:`mmrag_core.learn.clip_projection`), through the same loop: queries are texts, candidates are texts (text
space) or figures (image space), and what masks a candidate is its page (text) or its figure (image).

Loss: for a batch of B queries, each query's candidates are the B positives (its own and the others', in-batch
negatives) and the batch's mined hard negatives; cross-entropy over scaled cosine similarities (multiple
negatives ranking loss). A candidate that is a positive page of another query of the batch is masked out.
Only the adapter trains (~1 MB at rank 8), so the artifact is small and the base model stays shared.

Resumable: every ``eval_every`` steps rank 0 writes a checkpoint (adapter, optimiser, step, early-stopping state,
best adapter) to the store, ``<run_key>/checkpoint.pt``; a run started again with the same key continues from it.
Batches are drawn from a generator seeded by (seed, step, rank), so a resumed run sees the batches it would have.
"""
from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmrag_core.storage.faults import crash_point

log = logging.getLogger(__name__)

LORA_TARGETS = ["query", "key", "value", "output.dense", "intermediate.dense"]  # BERT blocks; not the pooler
PROJECTION_FILE = "projection.safetensors"
OUTLINE_SHARE = 0.3  # how often a query's positive is its page's outline rather than its best chunk


@dataclass
class TrainConfig:
    """What one training run needs (picklable: it travels to the Ray Train workers)."""

    base: str  # text: the text model; image: the open_clip model name of the CLIP base
    run_key: str  # store folder of the run: checkpoint.pt, best/ (the adapter), result.json
    store_root: str
    storage_options: dict | None = None
    cache_dir: str | None = None
    method: str = "lora"  # lora | projection
    rank: int = 8
    alpha: float = 16.0
    batch_size: int = 16
    lr: float = 2e-4
    max_steps: int = 300
    eval_every: int = 25
    patience: int = 4
    scale: float = 20.0
    label_weight: float = 1.0
    identity_weight: float = 0.0  # projection: L2 penalty on the residual (W, b), keeps the map near the identity
    blend: float = 1.0  # projection: share of the learned residual the saved map keeps, x + blend * (W x + b)
    max_length: int = 192
    seed: int = 0
    threads: int | None = None
    use_gpu: bool = False
    space: str = "text"  # text | image
    base_pretrained: str | None = None  # image: the CLIP base's pretrained tag or checkpoint
    base_config: str | None = None  # image: its open_clip model-config JSON, when it needs one


@dataclass
class Group:
    """One training query: its text, positive passages (best chunk, outline) and mined hard negatives, each
    passage with its page, so that a batch never uses one query's positive page as another's negative."""

    query: str
    page: str
    positives: list[str]
    negatives: list[tuple[str, str]]  # (page, text)
    labelled: bool = False


def groups_from_mined(rows: list[dict]) -> list[Group]:
    """Group mined rows (one per negative) by query and positive. A row's ``unit`` / ``negative_unit`` (figure
    rows) name what a candidate is masked by; without them it is the page, ``<doc>#<page>``."""
    by_key: dict[tuple[str, str], Group] = {}
    for r in rows:
        unit = r.get("unit") or f"{r['doc']}#{r['page']}"
        key = (r["query_id"], unit)
        g = by_key.get(key)
        if g is None:
            positives = [r["positive"]] + ([r["outline"]] if r.get("outline") else [])
            g = by_key[key] = Group(r["query"], unit, positives, [], r.get("source") == "labelled")
        if r.get("negative"):
            g.negatives.append((r.get("negative_unit") or f"{r['negative_doc']}#{r['negative_page']}",
                                r["negative"]))
    return list(by_key.values())


def _open_store(cfg: TrainConfig):
    from mmrag_core.storage.store import Store

    return Store(cfg.store_root, cfg.storage_options, cfg.cache_dir)


class _Encoder:
    """What trains, over the base model's mean-pooled embeddings (pooled as the text encoder pools).

    ``lora``: a fresh LoRA adapter inside the encoder's blocks (every step runs the encoder forward and backward).
    ``projection``: the encoder frozen, a residual linear map ``x + W x`` (zero at the start) on its normalised
    embeddings; each text is encoded once and cached, so a step costs a matrix product (CPU-friendly).
    """

    def __init__(self, cfg: TrainConfig, device: str) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        from mmrag_core.models.text_encoder import resolve_text_model

        path = resolve_text_model(cfg.base)
        torch.manual_seed(cfg.seed)
        self.method = cfg.method
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        base = AutoModel.from_pretrained(path)
        self.device, self.torch = device, torch
        self.cache: dict[tuple[str, int], object] = {}
        if cfg.method == "projection":
            self.base = base.to(device).eval()
            for p in self.base.parameters():
                p.requires_grad_(False)
            dim = int(base.config.hidden_size)
            self.model = torch.nn.Linear(dim, dim).to(device)
            torch.nn.init.zeros_(self.model.weight)
            torch.nn.init.zeros_(self.model.bias)
        else:
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=0.05, target_modules=LORA_TARGETS)
            self.model = get_peft_model(base, lora).to(device)
        self.module = self.model  # DDP wraps ``model``; ``module`` stays the adapter

    def _pooled(self, model, texts: list[str], max_length: int):
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=max_length,
                             return_tensors="pt").to(self.device)
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return self.torch.nn.functional.normalize(pooled, p=2, dim=1)

    def frozen(self, texts: list[str], max_length: int):
        """The frozen encoder's embeddings of ``texts`` (projection), each computed once."""
        torch = self.torch
        todo = sorted({t for t in texts if (t, max_length) not in self.cache}, key=len)
        with torch.inference_mode():
            for start in range(0, len(todo), 32):
                part = todo[start:start + 32]
                for t, v in zip(part, self._pooled(self.base, part, max_length), strict=True):
                    self.cache[(t, max_length)] = v.clone()
        return torch.stack([self.cache[(t, max_length)] for t in texts])

    def encode(self, texts: list[str], max_length: int):
        if self.method == "projection":
            x = self.frozen(texts, max_length)
            return self.torch.nn.functional.normalize(x + self.model(x), p=2, dim=1)
        return self._pooled(self.model, texts, max_length)

    def encode_pair(self, queries: list[str], cands: list[str], max_length: int):
        """Embeddings of a batch's queries and candidates (both texts, one encoder)."""
        return self.encode(queries, max_length), self.encode(cands, max_length)

    def adapter_config(self, state: dict) -> dict:
        """What ``adapter_config.json`` of a projection says."""
        return {"method": "projection", "dim": int(state["weight"].shape[0])}


def make_encoder(cfg: TrainConfig, device: str):
    """What trains for ``cfg.space``: the text encoder's adapter, or CLIP's tower projections (image space)."""
    if cfg.space == "image":
        if cfg.method != "projection":
            raise ValueError(f"the image space trains a projection adapter only, not {cfg.method!r}")
        from mmrag_core.learn.clip_projection import ClipProjection

        return ClipProjection(cfg, device, _open_store(cfg))
    if cfg.space != "text":
        raise ValueError(f"unknown space {cfg.space!r}: fine-tuning knows 'text' and 'image'")
    return _Encoder(cfg, device)


def batch_of(groups: list[Group], size: int, rng: np.random.Generator, train: bool = True,
             label_weight: float = 1.0) -> tuple[list[str], list[str], list[str], list[int]]:
    """Queries, candidate passages (positives first, then hard negatives), their pages (to mask a candidate that
    is another query's positive page), and the groups drawn; labelled groups are drawn ``label_weight`` times as
    often as self-supervised ones."""
    if train:
        w = np.asarray([label_weight if g.labelled else 1.0 for g in groups], dtype=float)
        idx = rng.choice(len(groups), size=min(size, len(groups)), replace=False, p=w / w.sum())
    else:
        idx = np.arange(len(groups))
    queries, cands, pages = [], [], []
    negs = []
    for i in idx:
        g = groups[int(i)]
        queries.append(g.query)
        use_outline = train and len(g.positives) > 1 and rng.random() < OUTLINE_SHARE
        cands.append(g.positives[1] if use_outline else g.positives[0])
        pages.append(g.page)
        if g.negatives:
            negs.append(g.negatives[int(rng.integers(len(g.negatives)))] if train else g.negatives[0])
    for page, text in negs:
        cands.append(text)
        pages.append(page)
    return queries, cands, pages, [int(i) for i in idx]


def contrastive_loss(enc: _Encoder, queries: list[str], cands: list[str], pages: list[str], scale: float,
                     max_length: int):
    """Multiple-negatives ranking loss of one batch (see the module docstring), and the batch's accuracy@1."""
    torch = enc.torch
    q, c = enc.encode_pair(queries, cands, max_length)
    scores = scale * q @ c.T
    n = len(queries)
    own = [pages[i] for i in range(n)]
    mask = torch.zeros_like(scores, dtype=torch.bool)
    for i in range(n):
        for j, page in enumerate(pages):
            if j != i and page == own[i]:
                mask[i, j] = True
    scores = scores.masked_fill(mask, float("-inf"))
    target = torch.arange(n, device=scores.device)
    loss = torch.nn.functional.cross_entropy(scores, target)
    acc = (scores.argmax(1) == target).float().mean()
    return loss, float(acc)


def validation_loss(enc: _Encoder, groups: list[Group], cfg: TrainConfig) -> tuple[float, float]:
    """Mean loss and accuracy@1 over the validation groups in fixed batches (deterministic)."""
    if not groups:
        return float("nan"), float("nan")
    torch = enc.torch
    losses, accs, weights = [], [], []
    enc.model.eval()
    with torch.no_grad():
        for start in range(0, len(groups), cfg.batch_size):
            chunk = groups[start:start + cfg.batch_size]
            if len(chunk) < 2 and start:
                chunk = groups[-cfg.batch_size:]
            qs, cands, pages, _ = batch_of(chunk, len(chunk), np.random.default_rng(0), train=False)
            loss, acc = contrastive_loss(enc, qs, cands, pages, cfg.scale, cfg.max_length)
            losses.append(float(loss))
            accs.append(acc)
            weights.append(len(chunk))
    enc.model.train()
    w = np.asarray(weights, dtype=float)
    return float(np.average(losses, weights=w)), float(np.average(accs, weights=w))


def _adapter_state(enc: _Encoder) -> dict:
    if enc.method == "projection":
        return {k: v.detach().cpu().clone() for k, v in enc.module.state_dict().items()}
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(enc.module).items()}


def _load_adapter_state(enc: _Encoder, state: dict) -> None:
    if enc.method == "projection":
        enc.module.load_state_dict(state)
        return
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(enc.module, state)


def identity_penalty(enc: _Encoder):
    """Squared norm of the projection's residual (W, b): zero for the identity map. Added to the loss (times
    ``identity_weight``) it keeps the space where the training pairs do not pull (docs/evaluation.md, "A label-free
    default that keeps the captions": generic prose moves less, and the validation loss is lower)."""
    return sum(p.pow(2).sum() for p in enc.module.parameters())


def blended(state: dict, blend: float) -> dict:
    """A projection's weights with its residual scaled by ``blend``: x + blend * (W x + b), an interpolation
    between the identity (0) and the trained map (1)."""
    return {k: v * blend for k, v in state.items()}


def _save_adapter(enc: _Encoder, state: dict, store, key: str) -> None:
    """Write the adapter to ``key`` in the store: LoRA in peft's ``save_pretrained`` layout (adapter_config.json,
    adapter_model.safetensors); a projection as projection.safetensors (weight, bias) and adapter_config.json."""
    current = _adapter_state(enc)
    _load_adapter_state(enc, state)
    with tempfile.TemporaryDirectory() as tmp:
        if enc.method == "projection":
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in state.items()}, str(Path(tmp) / PROJECTION_FILE))
            (Path(tmp) / "adapter_config.json").write_text(json.dumps(enc.adapter_config(state), indent=1))
        else:
            enc.module.save_pretrained(tmp)
        for f in sorted(Path(tmp).iterdir()):
            if f.is_file():
                store.write_bytes(f"{key}/{f.name}", f.read_bytes())
    _load_adapter_state(enc, current)


class Runtime:
    """Where the loop runs: one plain process by default; the Ray Train driver (``tasks.finetune_tasks``) passes
    one that knows the worker's rank, device, DDP wrapping and metric reporting."""

    rank: int = 0
    world: int = 1

    def device(self, use_gpu: bool) -> str:
        import torch

        return "cuda" if use_gpu and torch.cuda.is_available() else "cpu"

    def prepare(self, model: Any) -> Any:
        return model

    def report(self, metrics: dict) -> None:
        pass


def train_loop(config: dict, runtime: Runtime | None = None) -> dict:
    """One worker's training: ``config`` holds ``cfg`` (a :class:`TrainConfig` as a dict), ``train`` and ``val``
    (mined rows). Returns (and on rank 0 writes to ``<run_key>/result.json``) the run's metrics."""
    import torch

    rt = runtime or Runtime()
    cfg = TrainConfig(**config["cfg"])
    rank, world = rt.rank, rt.world
    torch.set_num_threads(max(1, cfg.threads or (os.cpu_count() or 1) // world))
    device = rt.device(cfg.use_gpu)
    store = _open_store(cfg)
    train_groups = groups_from_mined(config["train"])
    val_groups = groups_from_mined(config["val"])
    enc = make_encoder(cfg, device)
    if world > 1:
        enc.model = rt.prepare(enc.model)
    opt = torch.optim.AdamW([p for p in enc.module.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=0.0 if cfg.method == "projection" else 0.01)
    state = {"step": 0, "best_val": None, "best_step": 0, "bad_evals": 0, "history": [], "resumed_from": None,
             "val_before": None, "best_adapter": None, "train_seconds": 0.0, "pairs_seen": 0}
    ckpt_key = f"{cfg.run_key}/checkpoint.pt"
    if store.exists(ckpt_key):
        saved = torch.load(io.BytesIO(store.read_bytes(ckpt_key)), weights_only=False)
        _load_adapter_state(enc, saved["adapter"])
        opt.load_state_dict(saved["optimizer"])
        state.update(saved["state"])
        state["resumed_from"] = state["step"]
        log.info("resuming %s from step %d", cfg.run_key, state["step"])
    if state["val_before"] is None:
        state["val_before"] = validation_loss(enc, val_groups, cfg)[0]
        state["best_val"] = state["val_before"]
        state["best_adapter"] = _adapter_state(enc)
    enc.model.train()
    stopped = "max_steps"
    while state["step"] < cfg.max_steps:
        t0 = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, state["step"], rank])
        qs, cands, pages, _ = batch_of(train_groups, cfg.batch_size, rng, label_weight=cfg.label_weight)
        loss, _ = contrastive_loss(enc, qs, cands, pages, cfg.scale, cfg.max_length)
        if cfg.method == "projection" and cfg.identity_weight > 0:
            loss = loss + cfg.identity_weight * identity_penalty(enc)
        opt.zero_grad()
        loss.backward()
        opt.step()
        state["step"] += 1
        state["pairs_seen"] += len(qs) * world
        state["train_seconds"] += time.perf_counter() - t0
        if state["step"] % cfg.eval_every == 0 or state["step"] == cfg.max_steps:
            val, acc = validation_loss(enc, val_groups, cfg)
            state["history"].append({"step": state["step"], "train_loss": float(loss.detach()), "val_loss": val,
                                     "val_acc": acc})
            if val < state["best_val"] - 1e-4:
                state.update(best_val=val, best_step=state["step"], bad_evals=0, best_adapter=_adapter_state(enc))
            else:
                state["bad_evals"] += 1
            if rank == 0:
                buf = io.BytesIO()
                torch.save({"adapter": _adapter_state(enc), "optimizer": opt.state_dict(), "state": state}, buf)
                store.write_bytes(ckpt_key, buf.getvalue())
                crash_point("finetune-checkpoint")  # crash tests: killed right after a checkpoint
            rt.report({"step": state["step"], "val_loss": val, "val_acc": acc})
            log.info("step %d: train loss %.4f, val loss %.4f (acc %.3f)", state["step"], float(loss.detach()), val,
                     acc)
            if state["bad_evals"] >= cfg.patience:
                stopped = "early_stopping"
                break
    final, val_blended = state["best_adapter"], None
    if cfg.method == "projection" and cfg.blend != 1.0:
        final = blended(final, cfg.blend)
        _load_adapter_state(enc, final)
        val_blended = validation_loss(enc, val_groups, cfg)[0]
    result = {"steps": state["step"], "best_step": state["best_step"], "val_loss_before": state["val_before"],
              "val_loss_blended": val_blended,
              "val_loss_after": state["best_val"], "history": state["history"], "stopped": stopped,
              "resumed_from": state["resumed_from"], "train_seconds": round(state["train_seconds"], 2),
              "pairs_seen": state["pairs_seen"], "train_groups": len(train_groups), "val_groups": len(val_groups),
              "workers": world, "device": device, "config": asdict(cfg)}
    if rank == 0:
        _save_adapter(enc, final, store, f"{cfg.run_key}/best")
        store.write_bytes(f"{cfg.run_key}/result.json", json.dumps(result, indent=1).encode())
    rt.report({"step": state["step"], "done": True, "val_loss": state["best_val"]})
    return result


def read_result(store: Any, run_key: str) -> dict:
    """The metrics a finished run wrote."""
    return json.loads(store.read_bytes(f"{run_key}/result.json"))
