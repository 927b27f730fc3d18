"""Fine-tuning the image space (``mmrag finetune --space image``): (caption, printed words or page text, figure)
pairs with the other figures of the same document as hard negatives, a projection of a tiny random open_clip
model's towers trained by the same loop as the text space, the versioned model in ``models/image/<id>/``, and an
index built with it (``clip_model: store:models/image/<id>``) that records it and queries with it.

No real CLIP weights exist on these machines, so this tests the path, not the quality gain."""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest

from mmrag_core.config import load_settings
from mmrag_core.storage.items import Item, ItemKind, item_id
from mmrag_core.storage.store import Store
from tests.tiny_models import force_hf_offline, make_tiny_clip

# Each kind of figure looks alike across documents (shape, colour) and is described alike (its words).
KINDS = {
    "bar": ((200, 40, 40), "bar chart of revenue by segment"),
    "pie": ((40, 160, 40), "pie chart of the sales mix by region"),
    "line": ((40, 40, 200), "line graph of the share price over five years"),
    "map": ((200, 180, 40), "map of plants and offices around the world"),
}
DOCS = {"ACME_2020_10K": 0, "BOLT_2021_10K": 1, "CRUX_2022_10K": 2}


def _png(kind: str, variant: int) -> bytes:
    """A 48x48 picture of ``kind``: its colour and shape, shifted a little per document."""
    from PIL import Image, ImageDraw

    colour, _ = KINDS[kind]
    img = Image.new("RGB", (48, 48), (250, 250, 250))
    d = ImageDraw.Draw(img)
    o = 2 * variant
    if kind == "bar":
        for i, h in enumerate((20, 32, 14)):
            d.rectangle([6 + 13 * i + o, 44 - h, 14 + 13 * i + o, 44], fill=colour)
    elif kind == "pie":
        d.pieslice([6 + o, 6, 42 + o, 42], 0, 250, fill=colour)
    elif kind == "line":
        d.line([(4, 40 - o), (16, 28), (28, 32), (44, 8 + o)], fill=colour, width=3)
    else:
        d.ellipse([4, 12 + o, 20, 24 + o], fill=colour)
        d.polygon([(24, 10), (44, 14 - o), (40, 38), (26, 34)], fill=colour)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def corpus_items() -> list[tuple[str, str, list[Item]]]:
    """(sha256, uri, items): per document two pages, each with a chunk (a "Figure n:" caption line) and two
    figures with words printed inside; some figures carry a generated caption."""
    docs = []
    for name, variant in DOCS.items():
        sha = hashlib.sha256(name.encode()).hexdigest()
        uri = f"/corpus/{name}.pdf"
        issuer = name.split("_")[0].title()
        items: list[Item] = []
        for page, kinds in enumerate((("bar", "pie"), ("line", "map"))):
            lines = [f"{issuer} annual report, page {page + 1}."]
            for n, kind in enumerate(kinds):
                words = KINDS[kind][1]
                lines.append(f"Figure {2 * page + n + 1}: {issuer} {words}")
                box = (72.0, 100.0 + 300 * n, 540.0, 360.0 + 300 * n)
                items.append(Item(item_id(sha, "figure", page, n), ItemKind.FIGURE, uri, sha, page, box,
                                  f"{kind} {words.split(' of ')[-1]}", text_source="text_layer", ordinal=n,
                                  width=48, height=48, image_png=_png(kind, variant),
                                  caption=f"a {words}" if (variant + n) % 2 == 0 else None))
            items.append(Item(item_id(sha, "chunk", page, 0), ItemKind.CHUNK, uri, sha, page,
                              (72.0, 60.0, 540.0, 740.0), "\n".join(lines)))
        docs.append((sha, uri, items))
    return docs


def _publish(store: Store, clip, docs: list[tuple[str, str, list[Item]]]) -> dict:
    """Records with MiniLM text vectors and ``clip``'s image vectors, published as the next snapshot."""
    from mmrag_core.ingest.encoder_inputs import image_inputs, text_inputs
    from mmrag_core.models.text_encoder import TextEncoder
    from mmrag_core.storage.records import build_record
    from tests.published import publish_records

    text = TextEncoder("all-MiniLM-L6-v2")
    records = []
    for sha, uri, items in docs:
        tids, texts = text_inputs(items)
        iids, pngs = image_inputs(items)
        records.append(build_record(sha, uri, items, {"text": (tids, text.encode(texts)),
                                                      "image": (iids, clip.encode_images(pngs))}, [], "k", {}))
    models = {"text": text.describe(), "image": {**clip.describe(), "model_config": None}}
    return publish_records(store, records, models)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A store whose snapshot has the figures above in an image space built by a tiny random CLIP."""
    from mmrag_core.models.clip_encoder import ClipEncoder

    root = tmp_path_factory.mktemp("figures")
    mp = pytest.MonkeyPatch()
    force_hf_offline(mp)
    try:
        clip_model = f"local-dir:{make_tiny_clip(root / 'clip')}"
        _publish(Store(root / "store"), ClipEncoder(clip_model, None), corpus_items())
    finally:
        mp.undo()
    return root / "store", clip_model


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    force_hf_offline(monkeypatch)


def _settings(store: Path, clip_model: str, **kw: object):
    base = {"clip_model": clip_model, "finetune_batch_size": 8, "finetune_lr": 5e-2, "finetune_max_steps": 30,
            "finetune_eval_every": 10, "finetune_patience": 10, "finetune_val_fraction": 0.3, "finetune_scale": 10.0}
    return load_settings(store=str(store), **{**base, **kw})


def test_figure_pairs_take_captions_printed_words_and_page_text(corpus: tuple[Path, str]) -> None:
    """Every figure is described by its words, the caption line next to it on its page and, when it has one, its
    generated caption; its hard negatives are the other figures of its document, never itself."""
    from mmrag_core.learn.figure_pairs import figure_examples, figure_rows
    from mmrag_core.snapshot.open import open_snapshot

    examples = figure_examples(open_snapshot(Store(corpus[0])).items)
    refs = {e.ref for e in examples}
    assert len(refs) == 12
    assert {e.source for e in examples} == {"caption", "figure_text", "page_text"}
    page_texts = {e.query for e in examples if e.source == "page_text"}
    assert "Figure 1: Acme bar chart of revenue by segment" in page_texts
    assert "Figure 4: Crux map of plants and offices around the world" in page_texts
    rows = figure_rows(examples, per_query=3)
    doc_of = {e.ref: e.doc_sha256 for e in examples}
    assert all(r["negative"] != r["positive"] and doc_of[r["negative"]] == doc_of[r["positive"]] for r in rows)
    assert {len([r for r in rows if r["query_id"] == e.query_id]) for e in examples} == {3}


def test_training_the_image_space_changes_clip_and_lowers_the_validation_loss(corpus: tuple[Path, str]) -> None:
    """A few plain (single-process) steps: the validation loss falls; the model is written to
    ``models/image/<id>/`` with each file's sha256, the data and settings fingerprints, the validation metrics,
    its parent and its CLIP base; loaded by name it embeds figures and queries differently from the base."""
    from mmrag_core.models.clip_encoder import ClipEncoder
    from mmrag_core.models.stored import check_files, read_meta
    from tasks.finetune_tasks import finetune

    store_path, clip_model = corpus
    out = finetune(_settings(store_path, clip_model), space="image", use_ray=False)
    assert out["space"] == "image" and out["steps"] == 30 and out["pairs"] >= 10
    assert out["val_loss_after"] < out["val_loss_before"]
    assert out["path"] == f"store:models/image/{out['model_id']}"
    store = Store(store_path)
    folder = Path(store.path(out["path"].removeprefix("store:")))
    meta = read_meta(folder)
    check_files(folder, meta)
    assert set(meta["files"]) == {"projection.safetensors", "adapter_config.json"}
    assert meta["space"] == "image" and meta["kind"] == "projection" and meta["base"] == clip_model
    assert meta["parent"] == clip_model and meta["clip"]["base_state_sha256"]
    assert meta["training"]["data_fingerprint"] and meta["settings_fingerprint"]
    assert meta["training"]["negatives"].startswith("learn/figure_pairs/")
    assert meta["validation"]["loss_after"] < meta["validation"]["loss_before"]

    tuned, base = ClipEncoder(out["path"], None, store=store), ClipEncoder(clip_model, None)
    assert tuned.state_sha256 != base.state_sha256 and tuned.dim == base.dim
    pngs = [_png("bar", 0), _png("map", 1)]
    assert not np.allclose(tuned.encode_images(pngs), base.encode_images(pngs), atol=1e-4)
    assert not np.allclose(tuned.encode_texts(["bar chart"]), base.encode_texts(["bar chart"]), atol=1e-4)
    assert tuned.describe()["fine_tuned"]["id"] == out["model_id"]


def test_indexing_with_the_stored_clip_records_it_and_queries_with_it(corpus: tuple[Path, str],
                                                                     tmp_path: Path) -> None:
    """``clip_model: store:models/image/<id>``: the embedding actor loads it from the store (the records' key
    changes), the manifest names it, the query engine loads it from the snapshot's store and checks its
    fingerprint; a file that no longer matches its sha256 is refused."""
    from mmrag_core.ingest.encoder_inputs import image_inputs
    from mmrag_core.ingest.record_keys import config_key
    from mmrag_core.models import ModelUnavailable
    from mmrag_core.models.clip_encoder import ClipEncoder
    from mmrag_core.query.engine import open_engine
    from tasks.embed import _EncoderActor
    from tasks.finetune_tasks import finetune

    store_path, clip_model = corpus
    out = finetune(_settings(store_path, clip_model, finetune_max_steps=10), space="image", use_ray=False)
    settings = _settings(store_path, out["path"])
    assert config_key(settings) != config_key(_settings(store_path, clip_model))  # switching models re-embeds
    actor = _EncoderActor("image", settings)
    desc = actor.describe()
    assert desc["name"] == out["path"] and desc["fine_tuned"]["id"] == out["model_id"]

    store = Store(store_path)
    docs = corpus_items()
    _, pngs = image_inputs(docs[0][2])
    assert np.allclose(actor.encode(pngs), ClipEncoder(out["path"], None, store=store).encode_images(pngs))
    manifest = _publish(store, actor.encoder, docs)
    assert manifest["models"]["image"]["name"] == out["path"]
    assert manifest["models"]["image"]["fine_tuned"]["id"] == out["model_id"]
    engine = open_engine(settings)
    assert engine.clip is not None and engine.clip.state_sha256 == actor.encoder.state_sha256
    hits = engine.search("bar chart of revenue by segment", k=3, spaces=["image:text"])
    assert hits and all(h.kind == "figure" for h in hits)

    copy = Store(tmp_path / "copy")
    key = out["path"].removeprefix("store:")
    for name in ("mmrag_model.json", "adapter_config.json", "projection.safetensors"):
        copy.write_bytes(f"{key}/{name}", store.read_bytes(f"{key}/{name}"))
    data = bytearray(copy.read_bytes(f"{key}/projection.safetensors"))
    data[-1] ^= 1
    copy.write_bytes(f"{key}/projection.safetensors", bytes(data))
    with pytest.raises(ModelUnavailable, match="sha256"):
        ClipEncoder(out["path"], None, store=copy)


def test_what_the_image_space_cannot_train_on_is_refused_clearly(corpus: tuple[Path, str], tmp_path: Path) -> None:
    """Page labels, a LoRA adapter, or a snapshot without figures are clear errors, not a failed run."""
    from tasks.finetune_tasks import finetune

    store_path, clip_model = corpus
    labels = tmp_path / "q.jsonl"
    labels.write_text("")
    with pytest.raises(ValueError, match="label pages"):
        finetune(_settings(store_path, clip_model), str(labels), str(labels), space="image", use_ray=False)
    with pytest.raises(ValueError, match="projection"):
        finetune(_settings(store_path, clip_model, finetune_method="lora"), space="image", use_ray=False)
    with pytest.raises(ValueError, match="unknown space"):
        finetune(_settings(store_path, clip_model), space="audio", use_ray=False)
    from tests.learn_corpus import publish_corpus

    text_only = publish_corpus(tmp_path / "text-only")  # no figures, no image space
    with pytest.raises(ValueError, match="pairs"):
        finetune(_settings(text_only.root, clip_model), space="image", use_ray=False)


@pytest.mark.slow
def test_image_space_steps_on_ray_train(corpus: tuple[Path, str]) -> None:
    """The same driver as the text space: a Ray Train ``TorchTrainer`` (one CPU worker) trains the towers."""
    from mmrag_core.models.stored import read_meta
    from tasks.finetune_tasks import finetune

    store_path, clip_model = corpus
    out = finetune(_settings(store_path, clip_model, finetune_max_steps=20, finetune_seed=1, num_cpus=2),
                   space="image", use_ray=True)
    assert out["steps"] == 20 and out["val_loss_after"] < out["val_loss_before"]
    meta = read_meta(Store(store_path).path(out["path"].removeprefix("store:")))
    assert meta["run"]["workers"] == 1 and meta["space"] == "image"


def _figure_pdfs(folder: Path) -> Path:
    """The corpus as real PDFs: per page two placed pictures, each with its "Figure n:" caption line below it."""
    import pymupdf
    from PIL import Image

    folder.mkdir(parents=True)
    for name, variant in DOCS.items():
        issuer = name.split("_")[0].title()
        doc = pymupdf.open()
        for page_no, kinds in enumerate((("bar", "pie"), ("line", "map"))):
            page = doc.new_page()
            page.insert_text((72, 60), f"{issuer} annual report, page {page_no + 1}.", fontsize=11)
            for n, kind in enumerate(kinds):
                big = io.BytesIO()
                Image.open(io.BytesIO(_png(kind, variant))).resize((240, 240)).save(big, format="PNG")
                top = 90 + 340 * n
                page.insert_image(pymupdf.Rect(150, top, 450, top + 280), stream=big.getvalue())
                page.insert_text((72, top + 300), f"Figure {2 * page_no + n + 1}: {issuer} {KINDS[kind][1]}",
                                 fontsize=10)
        doc.set_metadata({})  # no creation date, and no new file id below: the same bytes (and item ids, hence the
        doc.save(folder / f"{name}.pdf", no_new_id=True)  # same train/validation split) on every run
    return folder


@pytest.mark.slow
def test_finetune_the_image_space_then_index_with_it_through_the_cli(tmp_path: Path) -> None:
    """``mmrag index`` with a tiny CLIP, ``mmrag finetune --space image`` (Ray Train), then ``mmrag index
    --clip-model store:models/image/<id>``: the figures are embedded again with the model, the new manifest names
    it, and ``mmrag query`` searches the image space with it."""
    import json
    import os
    import subprocess
    import sys

    src = _figure_pdfs(tmp_path / "src")
    clip_model = f"local-dir:{make_tiny_clip(tmp_path / 'clip')}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PREFECT_HOME": str(tmp_path / "prefect"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MMRAG_CLIP_MODEL": clip_model,
           "MMRAG_FINETUNE_BATCH_SIZE": "8", "MMRAG_FINETUNE_EVAL_EVERY": "5", "MMRAG_FINETUNE_LR": "0.05",
           "MMRAG_FINETUNE_VAL_FRACTION": "0.3"}
    store = str(tmp_path / "store")
    repo = Path(__file__).resolve().parents[1]

    def mmrag(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, f"mmrag {args[0]}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        return proc

    mmrag("index", str(src), "--store", store)
    mmrag("finetune", "--store", store, "--space", "image", "--max-steps", "20", "--json", str(tmp_path / "ft.json"))
    ft = json.loads((tmp_path / "ft.json").read_text())
    assert ft["space"] == "image" and ft["steps"] == 20 and ft["path"] == f"store:models/image/{ft['model_id']}"
    assert ft["val_loss_after"] < ft["val_loss_before"]
    proc = mmrag("index", str(src), "--store", store, "--clip-model", ft["path"], "--json")
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    image = report["manifest"]["models"]["image"]
    assert image["name"] == ft["path"] and image["fine_tuned"]["id"] == ft["model_id"]
    q = mmrag("query", "bar chart of revenue by segment", "--store", store, "--filter-kind", "figure", "--json")
    assert '"figure"' in q.stdout and "image space not searched" not in q.stdout + q.stderr
