"""The promotion gate of a fine-tuned text model: a candidate snapshot (the source indexed again with the new
model, published without moving LATEST) replaces LATEST only when it retrieves better on the same questions.

The questions are the store's configured ones (``finetune_eval_queries`` / ``finetune_eval_qrels``) or, without
them, the training run's held-out validation pairs (rebuilt from the model's recorded training data and split,
and checked against its data fingerprint), each scored as retrieval of its positive page(s). Both snapshots run
the same systems through :func:`~mmrag_core.eval.retrieval.evaluate`; the decision compares one metric of one
system (``finetune_promote_system``, ``finetune_promote_metric``) and needs a gain above
``finetune_promote_min_gain``. A candidate that loses stays published, readable by id, and LATEST stays.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from mmrag_core.config import Settings
from mmrag_core.eval.data import Qrels, load_qrels, load_queries
from mmrag_core.eval.retrieval import available_systems, evaluate
from mmrag_core.learn.finetune import build_examples, train_val_split
from mmrag_core.learn.pairs import Example, fingerprint
from mmrag_core.models.stored import MODEL_META, STORE_PREFIX
from mmrag_core.query.engine import open_engine
from mmrag_core.snapshot.promote import LatestMoved, promote_snapshot
from mmrag_core.storage.store import Store, open_store

log = logging.getLogger(__name__)

# Systems shown beside the gate's own: the text space alone is where a new text model shows first.
SHOWN_SYSTEMS: tuple[str, ...] = ("text", "hybrid", "default")


@dataclass
class GateQuestions:
    """What both snapshots are asked, with where the questions came from."""

    queries: dict[str, str]
    qrels: Qrels
    origin: str


@dataclass
class GateDecision:
    """The comparison the gate decides on: ``promote`` when the candidate's value exceeds the current one's by
    more than ``min_gain``."""

    system: str
    metric: str
    min_gain: float
    current_value: float
    candidate_value: float

    @property
    def gain(self) -> float:
        return round(self.candidate_value - self.current_value, 6)

    @property
    def promote(self) -> bool:
        return self.gain > self.min_gain

    def reason(self) -> str:
        return (f"{self.system} {self.metric} {self.current_value:.4f} -> {self.candidate_value:.4f} "
                f"(gain {self.gain:+.4f} {'>' if self.promote else '<='} required {self.min_gain:+.4f})")


@dataclass
class GateResult:
    """The gate's outcome: ``decision`` is ``promoted`` (LATEST moved to the candidate), ``kept`` (the candidate
    lost; LATEST stays) or ``stale`` (it won, but LATEST moved meanwhile: nothing changed)."""

    decision: str
    reason: str
    current: str
    candidate: str
    model: str
    questions: int
    origin: str
    comparison: GateDecision
    rows: dict[str, list[dict]] = field(default_factory=dict)  # "current" / "candidate" -> one row per system

    @property
    def promoted(self) -> bool:
        return self.decision == "promoted"

    def to_json(self) -> dict:
        out = asdict(self)
        out["comparison"] |= {"gain": self.comparison.gain, "promote": self.comparison.promote}
        return out | {"promoted": self.promoted}


def heldout_questions(examples: Sequence[Example]) -> tuple[dict[str, str], Qrels]:
    """Queries and page-level qrels of examples: each query's positive page(s), grade 1."""
    queries: dict[str, str] = {}
    qrels: Qrels = {}
    for e in examples:
        queries.setdefault(e.query_id, e.query)
        for page in e.pages or (e.page,):
            qrels.setdefault(e.query_id, {})[f"{e.doc}#p{page}"] = 1.0
    return queries, qrels


def stored_model_meta(store: Store, model: str) -> dict:
    """The metadata a fine-tuning run wrote beside a ``store:models/text/<id>`` model."""
    if not model.startswith(STORE_PREFIX):
        raise ValueError(f"{model!r} is not a model of the store (store:models/text/<id>)")
    return json.loads(store.read_bytes(f"{model.removeprefix(STORE_PREFIX).strip('/')}/{MODEL_META}"))


def gate_questions(settings: Settings, model: str) -> GateQuestions:
    """The configured questions, or the held-out validation pairs of the run that trained ``model``."""
    learn = settings.learn
    if bool(learn.finetune_eval_queries) != bool(learn.finetune_eval_qrels):
        raise ValueError("finetune_eval_queries and finetune_eval_qrels go together")
    if learn.finetune_eval_queries and learn.finetune_eval_qrels:
        return GateQuestions(load_queries(learn.finetune_eval_queries), load_qrels(learn.finetune_eval_qrels),
                             f"{learn.finetune_eval_queries} (finetune_eval_queries)")
    meta = stored_model_meta(open_store(settings), model)
    if meta.get("space", "text") != "text":
        raise ValueError(f"{model} is a {meta.get('space')} model: its gate needs finetune_eval_queries and "
                         "finetune_eval_qrels (held-out pairs are the text space's)")
    training = meta["training"]
    engine = open_engine(settings, training["snapshot"])
    examples = build_examples(engine, training.get("queries"), training.get("qrels"), bool(training.get("synthetic")))
    if fingerprint(examples) != training["data_fingerprint"]:
        raise ValueError(f"the training examples of {model} cannot be rebuilt as they were (files changed since?): "
                         "set finetune_eval_queries and finetune_eval_qrels to gate on fixed questions")
    recorded = meta.get("settings") or {}
    split_settings = learn.model_copy(update={k: recorded[k] for k in ("finetune_val_fraction", "finetune_seed")
                                              if k in recorded})
    _, held_out = train_val_split(examples, split_settings)
    queries, qrels = heldout_questions(held_out)
    return GateQuestions(queries, qrels, f"held-out validation pairs of run {meta.get('run', {}).get('key', '?')} "
                                         f"(training snapshot {training['snapshot']})")


def decide(current_rows: Sequence[Mapping], candidate_rows: Sequence[Mapping], system: str, metric: str,
           min_gain: float) -> GateDecision:
    """The comparison of ``system``'s ``metric`` between the current and the candidate snapshot's rows."""
    def value(rows: Sequence[Mapping]) -> float:
        row = next((r for r in rows if r["system"] == system), None)
        if row is None:
            raise ValueError(f"system {system!r} was not evaluated")
        return float(row[metric])

    return GateDecision(system, metric, min_gain, value(current_rows), value(candidate_rows))


def run_gate(settings: Settings, current: str, candidate: str, model: str,
             questions: GateQuestions | None = None) -> GateResult:
    """Evaluate ``current`` and ``candidate`` on the same questions, decide, and move LATEST to the candidate when
    it wins (and LATEST is still ``current``)."""
    learn = settings.learn
    questions = questions or gate_questions(settings, model)
    engines = {"current": open_engine(settings, current), "candidate": open_engine(settings, candidate)}
    system = learn.finetune_promote_system
    runnable = [set(available_systems(e)) for e in engines.values()]
    if not all(system in r for r in runnable):
        raise ValueError(f"system {system!r} (finetune_promote_system) cannot run on both snapshots")
    systems = list(dict.fromkeys(s for s in (*SHOWN_SYSTEMS, system) if all(s in r for r in runnable)))
    rows = {name: evaluate(engine, questions.queries, questions.qrels, systems).rows
            for name, engine in engines.items()}
    comparison = decide(rows["current"], rows["candidate"], system, learn.finetune_promote_metric,
                        learn.finetune_promote_min_gain)
    decision, reason = ("promoted" if comparison.promote else "kept"), comparison.reason()
    if comparison.promote:
        try:
            promote_snapshot(open_store(settings), candidate, current, ttl=settings.lock_ttl_seconds,
                             wait=settings.lock_wait_seconds)
        except LatestMoved as e:
            decision, reason = "stale", f"{reason}; {e}"
    log.info("promotion gate: candidate %s %s: %s", candidate, decision, reason)
    return GateResult(decision, reason, current, candidate, model, len(questions.qrels), questions.origin,
                      comparison, rows)
