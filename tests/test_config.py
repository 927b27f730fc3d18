"""Settings: defaults, MMRAG_* environment, YAML file, overrides and their precedence."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from mmrag_core.config import Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MMRAG_* / RAY_ADDRESS from the outside; MMRAG_CONFIG (which load_settings sets) is undone."""
    for name in list(os.environ):
        if name.upper().startswith("MMRAG_") or name.upper() == "RAY_ADDRESS":
            monkeypatch.delenv(name)
    # setenv records "was unset", so whatever load_settings writes is removed after the test.
    monkeypatch.setenv("MMRAG_CONFIG", "")
    monkeypatch.delenv("MMRAG_CONFIG")


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mmrag.yaml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    s = load_settings()
    assert s.store == "./.store"
    assert s.text_model == "all-MiniLM-L6-v2"
    assert s.clip_model == "ViT-B-32"
    assert s.clip_pretrained == "laion2b_s34b_b79k"
    assert s.clip_model_config is None
    assert s.k == 10 and s.rrf_k == 10 and s.search_depth == 100
    assert s.chunk_tokens == 200 and s.chunk_overlap == 40
    assert s.ray_address is None
    assert "*.pdf" in s.include and "*.png" in s.include
    assert s.max_file_bytes == 512 * 1024 * 1024
    assert s.ocr_rotation == "osd"
    assert s.clip_enabled


def test_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMRAG_CLIP_MODEL", "local-dir:/models/clip")
    monkeypatch.setenv("MMRAG_CLIP_PRETRAINED", "/models/clip.pt")
    monkeypatch.setenv("MMRAG_K", "5")
    monkeypatch.setenv("MMRAG_INCLUDE", '["*.pdf"]')
    monkeypatch.setenv("MMRAG_DEVICE", "cuda")
    s = load_settings()
    assert s.clip_model == "local-dir:/models/clip"
    assert s.clip_pretrained == "/models/clip.pt"
    assert s.k == 5 and isinstance(s.k, int)
    assert s.include == ["*.pdf"]
    assert s.device == "cuda"


def test_env_var_invalid_value_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMRAG_K", "many")
    with pytest.raises(ValidationError):
        load_settings()


def test_yaml_file(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "k: 7\nclip_model: ViT-L-14\ninclude: ['*.pdf', '*.png']\nocr_rotation: try\n")
    s = load_settings(path)
    assert s.k == 7
    assert s.clip_model == "ViT-L-14"
    assert s.include == ["*.pdf", "*.png"]
    assert s.ocr_rotation == "try"
    assert s.rrf_k == 10  # untouched fields keep their defaults
    assert os.environ["MMRAG_CONFIG"] == str(path)


def test_yaml_via_mmrag_config_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMRAG_CONFIG", str(_yaml(tmp_path, "search_depth: 99\n")))
    assert load_settings().search_depth == 99


def test_empty_yaml_file_gives_defaults(tmp_path: Path) -> None:
    assert load_settings(_yaml(tmp_path, "")).k == 10


def test_precedence_overrides_env_yaml_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _yaml(tmp_path, "k: 7\nrrf_k: 30\nsearch_depth: 20\n")
    monkeypatch.setenv("MMRAG_K", "5")
    monkeypatch.setenv("MMRAG_RRF_K", "40")
    s = load_settings(path, k=3)
    assert s.k == 3  # override > env > yaml
    assert s.rrf_k == 40  # env > yaml
    assert s.search_depth == 20  # yaml > default
    assert s.chunk_tokens == 200  # default


def test_none_overrides_are_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMRAG_K", "5")
    s = load_settings(_yaml(tmp_path, "rrf_k: 30\n"), k=None, rrf_k=None, clip_model=None)
    assert s.k == 5
    assert s.rrf_k == 30
    assert s.clip_model == "ViT-B-32"


def test_unknown_yaml_key_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="no_such_setting"):
        load_settings(_yaml(tmp_path, "k: 3\nno_such_setting: 1\n"))


def test_unknown_override_rejected() -> None:
    with pytest.raises(ValidationError):
        load_settings(no_such_setting=1)


def test_yaml_must_be_mapping(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mapping"):
        load_settings(_yaml(tmp_path, "- a\n- b\n"))


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_settings(tmp_path / "nope.yaml")
    assert "MMRAG_CONFIG" not in os.environ  # nothing half-applied


def test_ray_address_from_ray_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert load_settings().ray_address == "ray://head:10001"


def test_mmrag_ray_address_beats_ray_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "ray://other:10001")
    monkeypatch.setenv("MMRAG_RAY_ADDRESS", "ray://mine:10001")
    assert load_settings().ray_address == "ray://mine:10001"


def test_ray_address_override_beats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "ray://other:10001")
    assert load_settings(ray_address="auto").ray_address == "auto"


def test_validation_on_assignment_and_literals() -> None:
    s = load_settings()
    with pytest.raises(ValidationError):
        s.k = "lots"  # type: ignore[assignment]
    with pytest.raises(ValidationError):
        load_settings(ocr_rotation="sideways")


@pytest.mark.parametrize("name, enabled", [("ViT-B-32", True), ("off", False), ("None", False), ("", False)])
def test_clip_enabled(name: str, enabled: bool) -> None:
    assert Settings(clip_model=name).clip_enabled is enabled
