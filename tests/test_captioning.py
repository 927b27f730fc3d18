"""BLIP-2 captioning: a tiny real-architecture BLIP-2 (random weights, offline tokenizer) loaded through the
real loading code; and an indexing run through the CLI with captioning on, whose captions land in the text
space and in the snapshot's metadata."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pymupdf
import pytest
from PIL import Image, ImageDraw

from mmrag_core.config import Settings
from mmrag_core.ingest.record_keys import config_key, record_key
from mmrag_core.models import ModelUnavailable
from mmrag_core.models.captioner import Captioner
from mmrag_core.storage.checksums import sha256_file
from tests.tiny_models import TINY_BLIP2_WORDS, force_hf_offline, make_tiny_blip2, make_tiny_clip, single_torch_thread

REPO = Path(__file__).resolve().parents[1]
MMRAG = [sys.executable, "-m", "flows.cli"]
WORDS = 6  # caption length (max_new_tokens) in these tests: the tiny model never stops early


@pytest.fixture(scope="module")
def blip2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    mp = pytest.MonkeyPatch()
    force_hf_offline(mp)
    try:
        with single_torch_thread():
            yield make_tiny_blip2(tmp_path_factory.mktemp("blip2"))
    finally:
        mp.undo()


def noisy(width: int, height: int) -> Image.Image:
    """The same random-looking picture every time (PIL's effect_noise differs from call to call)."""
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def pictures() -> list:
    """Three different pictures: PNG bytes, JPEG bytes and a PIL image (the inputs a captioner gets)."""
    red = io.BytesIO()
    Image.new("RGB", (64, 48), (210, 30, 30)).save(red, "PNG")
    noise = io.BytesIO()
    noisy(80, 80).save(noise, "JPEG")
    chart = Image.new("RGB", (120, 90), "white")
    draw = ImageDraw.Draw(chart)
    for n, h in enumerate((30, 60, 45, 80)):
        draw.rectangle((10 + 25 * n, 85 - h, 28 + 25 * n, 85), fill=(30, 30, 200))
    return [red.getvalue(), noise.getvalue(), chart]


def test_captioner_loads_the_saved_model_and_captions_in_batches(blip2: Path) -> None:
    captioner = Captioner(str(blip2), "a photo of", batch_size=2, max_new_tokens=WORDS)
    captions = captioner.caption(pictures())
    assert len(captions) == 3
    for caption in captions:
        words = caption.split()
        assert len(words) == WORDS and set(words) <= set(TINY_BLIP2_WORDS), caption
    # batching does not change a caption: one batch of three gives what batches of two and one gave
    assert Captioner(str(blip2), "a photo of", batch_size=8, max_new_tokens=WORDS).caption(pictures()) == captions
    assert captioner.caption([]) == []


def test_prompt_is_not_part_of_the_caption(blip2: Path) -> None:
    question = "Question : what does this chart show ? Answer :"  # 10 words, all in the vocabulary
    for prompt in (question, ""):
        for caption in Captioner(str(blip2), prompt, max_new_tokens=WORDS).caption(pictures()):
            assert len(caption.split()) == WORDS, (prompt, caption)  # only the generated words


def test_describe_records_weights_and_prompt(blip2: Path) -> None:
    desc = Captioner(str(blip2), "a photo of", max_new_tokens=WORDS).describe()
    assert desc["name"] == str(blip2) and desc["path"] == str(blip2)
    assert desc["weights_sha256"] == {"model.safetensors": sha256_file(blip2 / "model.safetensors")}
    assert (desc["prompt"], desc["max_new_tokens"], desc["dtype"]) == ("a photo of", WORDS, "float32")


def test_missing_weights_say_how_to_provide_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    force_hf_offline(monkeypatch)
    for model in (str(tmp_path / "no-such-folder"), "mmrag-tests/no-such-blip2"):
        with pytest.raises(ModelUnavailable, match="MMRAG_CAPTION_MODEL") as err:
            Captioner(model)
        assert model in str(err.value) and "MMRAG_CAPTION_ENABLED=false" in str(err.value)


def test_captioning_is_off_by_default_and_one_switch_turns_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().caption_enabled is False
    monkeypatch.setenv("MMRAG_CAPTION_ENABLED", "true")
    assert Settings().caption_enabled is True


def test_caption_settings_key_the_stored_records() -> None:
    models = {"text": {"name": "t"}, "image": {"name": "i"}}
    off, on = Settings(), Settings(caption_enabled=True)
    # off: the caption settings change nothing stored, so they do not change the keys
    assert config_key(off) == config_key(Settings(caption_prompt="Question: what is it? Answer:"))
    assert record_key(models, off) == record_key(models, Settings(caption_prompt="Question: what is it? Answer:"))
    # on: turning it on, or changing the prompt or the model, re-processes; the same settings reuse
    assert config_key(on) != config_key(off) and record_key(models, on) != record_key(models, off)
    assert config_key(on) == config_key(Settings(caption_enabled=True))
    assert config_key(on) != config_key(Settings(caption_enabled=True, caption_prompt="a drawing of"))
    assert config_key(on) != config_key(Settings(caption_enabled=True, caption_model="/models/other"))
    with_model = {**models, "caption": {"name": "b", "weights_sha256": {"model.safetensors": "1"}}}
    other_weights = {**models, "caption": {"name": "b", "weights_sha256": {"model.safetensors": "2"}}}
    assert record_key(with_model, on) != record_key(other_weights, on)


# ---- through the indexing flow (CLI, Prefect, Ray actors) ------------------------------------------------


def _corpus(folder: Path) -> Path:
    """A two-page PDF (text and a raster figure on page 0, text on page 1) and an image file."""
    folder.mkdir(parents=True)
    figure = io.BytesIO()
    noisy(300, 200).save(figure, "PNG")
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text((72, 72), "Figure 1 shows the harbour at dawn, before the market opens.", fontsize=11)
    page.insert_image(pymupdf.Rect(72, 120, 372, 320), stream=figure.getvalue())
    doc.new_page().insert_text((72, 72), "The second page holds only text about the fish market.", fontsize=11)
    doc.save(folder / "harbour.pdf")
    sign = Image.new("RGB", (240, 80), "white")
    ImageDraw.Draw(sign).text((10, 30), "FISH MARKET", fill="black")
    sign.save(folder / "sign.png")
    return folder


def _index(corpus: Path, env: dict) -> dict:
    proc = subprocess.run(MMRAG + ["index", str(corpus), "--json"], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=900, check=False)
    assert proc.returncode == 0, f"mmrag index failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(proc.stdout[proc.stdout.index("{"):])


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, blip2: Path) -> dict:
    """The corpus indexed with captioning off, then on, then on again (unchanged)."""
    base = tmp_path_factory.mktemp("captioned")
    corpus = _corpus(base / "corpus")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MMRAG_STORE": str(base / "store"),
           "MMRAG_CLIP_MODEL": f"local-dir:{make_tiny_clip(base / 'clip')}", "PREFECT_HOME": str(base / "prefect")}
    off = _index(corpus, env)
    env.update({"MMRAG_CAPTION_ENABLED": "true", "MMRAG_CAPTION_MODEL": str(blip2),
                "MMRAG_CAPTION_MAX_NEW_TOKENS": str(WORDS)})
    on = _index(corpus, env)
    again = _index(corpus, env)
    return {"base": base, "store": base / "store", "off": off, "on": on, "again": again}


def _items(run: dict, which: str) -> list[dict]:
    sid = run[which]["manifest"]["id"]
    return pq.read_table(run["store"] / "snapshots" / sid / "items.parquet").to_pylist()


@pytest.mark.slow
def test_turning_captioning_on_reprocesses_and_unchanged_settings_reuse(indexed: dict, blip2: Path) -> None:
    off, on, again = indexed["off"], indexed["on"], indexed["again"]
    assert off["published"] and "caption" not in off["manifest"]["models"]
    assert all(it["caption"] is None for it in _items(indexed, "off"))
    assert on["published"] and on["manifest"]["parent"] == off["manifest"]["id"]
    assert on["manifest"]["stats"]["documents_processed"] == 2 and on["manifest"]["stats"]["full_rebuild"]
    assert again["published"] is False and again["snapshot"] == on["manifest"]["id"]
    caption_model = on["manifest"]["models"]["caption"]
    assert caption_model["name"] == str(blip2) and caption_model["prompt"] == "a photo of"
    assert caption_model["weights_sha256"] == {"model.safetensors": sha256_file(blip2 / "model.safetensors")}


@pytest.mark.slow
def test_captions_land_in_the_text_space_and_the_metadata(indexed: dict) -> None:
    from mmrag_core.query.engine import QueryEngine
    from mmrag_core.snapshot.open import open_snapshot
    from mmrag_core.storage.store import Store

    items = _items(indexed, "on")
    pictures = [it for it in items if it["kind"] in ("figure", "page", "image")]
    kinds = sorted(it["kind"] for it in pictures)
    assert kinds == ["figure", "image", "page", "page"]  # the figure, both pages, the image file
    assert all(len(it["caption"].split()) == WORDS for it in pictures)
    assert all(it["caption"] is None for it in items if it["kind"] == "chunk")
    manifest = indexed["on"]["manifest"]
    assert manifest["stats"]["captions"] == len(pictures)
    chunks = [it for it in items if it["kind"] == "chunk"]
    outlines = [it for it in items if it["kind"] == "outline"]  # page outlines are text-space items too
    assert manifest["spaces"]["text"]["count"] == len(chunks) + len(outlines) + len(pictures)
    assert manifest["spaces"]["image"]["count"] == len(pictures)
    assert indexed["off"]["manifest"]["spaces"]["text"]["count"] == len(chunks) + len(outlines)

    engine = QueryEngine(open_snapshot(Store(indexed["store"])))
    for it in pictures:
        hits = engine.search(text=it["caption"], k=len(items), spaces=["text"])
        hit = next(h for h in hits if h.id == it["id"])  # the picture itself, found by its caption
        assert hit.similarities["text"] == pytest.approx(1.0, abs=1e-4)
        assert hit.similarities["text"] == pytest.approx(hits[0].similarities["text"], abs=1e-4)  # among the best
        assert (hit.kind, hit.page, hit.caption, hit.source_uri) == (it["kind"], it["page"], it["caption"],
                                                                      it["source_uri"])
