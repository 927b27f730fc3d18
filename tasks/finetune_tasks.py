"""Fine-tuning an encoder (the text space's, or CLIP's towers for the image space): data preparation and the Ray
Train driver (a ``TorchTrainer`` running :func:`mmrag_core.learn.training.train_loop` on ``finetune_workers``
workers, GPUs where the cluster has them), then the versioned model written to the store. Plain functions (``finetune``) for the CLI and tests, Prefect tasks
for the ``finetune`` flow."""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, replace
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from mmrag_core.config import Settings
from mmrag_core.learn.finetune import Prepared, build_examples, prepare
from mmrag_core.learn.image_finetune import ClipBase, clip_base, prepare_figures
from mmrag_core.learn.registry import publish_model
from mmrag_core.learn.training import Runtime, TrainConfig, read_result, train_loop
from mmrag_core.query.engine import open_engine
from mmrag_core.storage.store import open_store, storage_options_for

log = logging.getLogger(__name__)


def train_config(settings: Settings, run_key: str, use_gpu: bool = False, max_steps: int | None = None,
                 clip: ClipBase | None = None) -> TrainConfig:
    """The training settings of a run, with what a worker needs to open the store; with ``clip``, a run of the
    image space (a projection of that CLIP's towers)."""
    s = settings.learn
    if clip is not None:
        return replace(train_config(settings, run_key, use_gpu, max_steps), space="image", base=clip.name,
                       base_pretrained=clip.pretrained, base_config=clip.model_config, method="projection")
    return TrainConfig(
        base=s.finetune_base, method=s.finetune_method, run_key=run_key, store_root=settings.store,
        storage_options=storage_options_for(settings.store, settings.s3_endpoint_url), cache_dir=settings.cache_dir,
        rank=s.finetune_lora_rank, alpha=s.finetune_lora_alpha, batch_size=s.finetune_batch_size, lr=s.finetune_lr,
        max_steps=max_steps or s.finetune_max_steps, eval_every=s.finetune_eval_every, patience=s.finetune_patience,
        scale=s.finetune_scale, label_weight=s.finetune_label_weight, max_length=s.finetune_max_length,
        identity_weight=s.finetune_identity_weight, blend=s.finetune_blend,
        seed=s.finetune_seed, threads=s.finetune_threads,
        use_gpu=use_gpu)


class _RayRuntime(Runtime):
    """A Ray Train worker: its rank, its device, DDP, and metrics reported to the trainer."""

    def __init__(self) -> None:
        import ray.train

        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()

    def device(self, use_gpu: bool) -> str:
        import ray.train.torch

        return str(ray.train.torch.get_device()) if use_gpu else "cpu"

    def prepare(self, model: Any) -> Any:
        import ray.train.torch

        return ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})

    def report(self, metrics: dict) -> None:
        import ray.train

        ray.train.report(metrics)


def ray_train_loop(config: dict) -> dict:
    """The loop a Ray Train worker runs."""
    return train_loop(config, _RayRuntime())


def run_trainer(settings: Settings, cfg: TrainConfig, data: Prepared) -> dict:
    """Train on Ray Train (``TorchTrainer``, ``finetune_workers`` workers, a GPU each when the cluster has one);
    the loop checkpoints to the store, so a run killed and started again resumes. Returns the run's metrics."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from tasks.ray_runtime import ensure_ray

    ensure_ray(settings)
    use_gpu = ray.cluster_resources().get("GPU", 0) >= 1
    cfg.use_gpu = use_gpu
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    workers = settings.finetune_workers
    per_worker = max(1, cpus // workers) if not use_gpu else 1
    if cfg.threads is None:
        cfg.threads = per_worker
    trainer = TorchTrainer(
        ray_train_loop,
        train_loop_config={"cfg": asdict(cfg), "train": data.train, "val": data.val},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": per_worker} if not use_gpu else None),
        run_config=RunConfig(name=cfg.run_key.replace("/", "-"),
                             storage_path=str(open_store(settings).cache_dir / "ray_train")),
    )
    trainer.fit()
    return read_result(open_store(settings), cfg.run_key)


def finetune(settings: Settings, queries: str | None = None, qrels: str | None = None, synthetic: bool = False,
             max_steps: int | None = None, space: str = "text", snapshot: str | None = None,
             use_ray: bool = True) -> dict:
    """Fine-tune the encoder of ``space`` on ``settings.store``'s snapshot and write the versioned model to the
    store, ``models/<space>/<id>/``. ``text``: on labelled and/or self-supervised queries with mined hard
    negatives; ``image``: CLIP's towers on the snapshot's (text, figure) pairs, other figures of the same document
    as hard negatives. Returns model_id, space, path (the ``store:`` name for ``text_model`` or ``clip_model``),
    pairs, steps, the validation losses before and after, and the run's details."""
    if space not in ("text", "image"):
        raise ValueError(f"unknown space {space!r}: fine-tuning knows 'text' and 'image'")
    if space == "image" and (queries or qrels):
        raise ValueError("the image space trains on the corpus's own figure texts; --queries/--qrels label pages "
                         "for the text space")
    if space == "image" and settings.learn.finetune_method != "projection":
        raise ValueError("the image space trains a projection of CLIP's towers only (finetune_method: projection)")
    t0 = time.perf_counter()
    store = open_store(settings)
    engine = open_engine(settings, snapshot)
    clip = None
    if space == "image":
        clip = clip_base(store, engine.snapshot.manifest, settings)
        data = prepare_figures(store, engine.snapshot, settings.learn, clip)
    else:
        data = prepare(store, engine, build_examples(engine, queries, qrels, synthetic), settings.learn)
    cfg = train_config(settings, data.run_key, max_steps=max_steps, clip=clip)
    if use_ray:
        result = run_trainer(settings, cfg, data)
    else:
        result = train_loop({"cfg": asdict(cfg), "train": data.train, "val": data.val})
    parent = engine.snapshot.manifest["models"].get(space) or {}
    parent_name = clip.parent if clip else (parent.get("fine_tuned") or {}).get("id") or parent.get("name")
    info = {"base": cfg.base, "method": cfg.method, "parent": parent_name, **({"clip": clip.meta()} if clip else {}),
            "training": {"snapshot": engine.snapshot.id, "store": store.uri, "negatives": data.negatives_key,
                         "data_fingerprint": data.data_fingerprint, "labelled": bool(queries and qrels),
                         "queries": queries, "qrels": qrels,
                         "synthetic": space == "image" or synthetic or not (queries and qrels), **data.counts},
            "settings_fingerprint": data.settings_fingerprint, "settings": settings.learn.model_dump(),
            "validation": {"loss_before": result["val_loss_before"], "loss_after": result["val_loss_after"],
                           "best_step": result["best_step"], "history": result["history"]},
            "run": {"key": data.run_key, "steps": result["steps"], "stopped": result["stopped"],
                    "resumed_from": result["resumed_from"], "train_seconds": result["train_seconds"],
                    "pairs_seen": result["pairs_seen"], "workers": result["workers"], "device": result["device"]}}
    model_id, name = publish_model(store, data.run_key, space, info)
    wall = time.perf_counter() - t0
    log.info("fine-tuned %s in %.0f s: %s", cfg.base, wall, name)
    pairs = len({(r["query_id"], r["doc"], r["page"]) for r in data.train})
    return {"model_id": model_id, "space": space, "path": name, "pairs": pairs,
            "steps": result["steps"], "val_loss_before": result["val_loss_before"],
            "val_loss_after": result["val_loss_after"], "best_step": result["best_step"],
            "stopped": result["stopped"], "resumed_from": result["resumed_from"],
            "train_seconds": result["train_seconds"], "pairs_seen": result["pairs_seen"],
            "pairs_per_second": round(result["pairs_seen"] / max(result["train_seconds"], 1e-9), 2),
            "wall_seconds": round(wall, 1), "run": data.run_key, "negatives": data.negatives_key,
            "counts": data.counts}


@task(name="finetune-encoder", cache_policy=NO_CACHE)
def finetune_task(settings: Settings, queries: str | None, qrels: str | None, synthetic: bool,
                  max_steps: int | None, space: str) -> dict:
    """:func:`finetune` as a Prefect task."""
    return finetune(settings, queries, qrels, synthetic, max_steps, space)
