"""Tests for scripts/make_sample_corpus.py: file set, PDF structure, EXIF tag, determinism."""
from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

pymupdf = pytest.importorskip("pymupdf")
PIL_Image = pytest.importorskip("PIL.Image")
PIL_ImageOps = pytest.importorskip("PIL.ImageOps")

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _load_script() -> ModuleType:
    """Import scripts/make_sample_corpus.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("make_sample_corpus", SCRIPTS / "make_sample_corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_sample_corpus", module)
    spec.loader.exec_module(module)
    return module


msc = _load_script()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    written = msc.make_sample_corpus(out)
    assert [p.name for p in written] == list(msc.ALL_FILES)
    return out


def _pdf_texts(path: Path) -> list[str]:
    with pymupdf.open(path) as doc:
        return [page.get_text() for page in doc]


def test_file_set_and_size(corpus: Path) -> None:
    names = sorted(p.name for p in corpus.iterdir())
    assert names == sorted(msc.ALL_FILES)
    assert len([n for n in names if n.endswith(".pdf")]) == 4
    assert len([n for n in names if n.endswith((".png", ".jpg"))]) == 3
    assert sum(p.stat().st_size for p in corpus.iterdir()) < 2_000_000
    readme = (corpus / msc.README).read_text(encoding="utf-8")
    assert "CC0" in readme and "generated" in readme
    for name in msc.ALL_FILES:
        if name != msc.README:
            assert name in readme


def test_pdf_page_counts_and_text_layers(corpus: Path) -> None:
    for name, pages in msc.PDF_PAGES.items():
        with pymupdf.open(corpus / name) as doc:
            assert doc.page_count == pages, name
    for name in (msc.REEF_PDF, msc.BIKE_PDF, msc.COFFEE_PDF):
        texts = _pdf_texts(corpus / name)
        assert all(len(t.split()) > 100 for t in texts), name  # real prose on every page
    # the scanned PDF has no text layer, only one full-page image per page
    with pymupdf.open(corpus / msc.SCAN_PDF) as doc:
        for page in doc:
            assert page.get_text().strip() == ""
            infos = page.get_image_info()
            assert len(infos) == 1
            assert infos[0]["width"] >= 1600 and infos[0]["height"] >= 2000


def test_report_has_figure_with_caption(corpus: Path) -> None:
    with pymupdf.open(corpus / msc.COFFEE_PDF) as doc:
        page = doc[1]
        infos = page.get_image_info()
        assert len(infos) == 1
        assert infos[0]["width"] >= 400 and infos[0]["height"] >= 300
        text = page.get_text()
    assert "Figure 1." in text
    assert "4.95 million" in text and "4,950" in text


def test_images(corpus: Path) -> None:
    with PIL_Image.open(corpus / msc.SIGN_JPG) as im:
        assert im.format == "JPEG"
        assert im.getexif().get(0x0112) == 6
        stored = im.size
        upright = PIL_ImageOps.exif_transpose(im)
    assert stored[0] < stored[1] and upright.size == (stored[1], stored[0])  # portrait stored, landscape shown
    with PIL_Image.open(corpus / msc.PHOTO_JPG) as im:
        assert im.format == "JPEG" and im.size[0] >= 640
        assert 0x0112 not in im.getexif()
    with PIL_Image.open(corpus / msc.DIAGRAM_PNG) as im:
        assert im.format == "PNG" and im.size[0] >= 800


def test_deterministic(corpus: Path, tmp_path: Path) -> None:
    msc.make_sample_corpus(tmp_path)
    for name in msc.PDF_PAGES:
        assert _pdf_texts(tmp_path / name) == _pdf_texts(corpus / name), name
    for name in msc.ALL_FILES:  # same library versions in one process: byte-identical output
        a = hashlib.sha256((corpus / name).read_bytes()).hexdigest()
        b = hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
        assert a == b, name


def test_sample_queries_point_at_real_pages(corpus: Path) -> None:
    lines = (SCRIPTS / "sample_queries.txt").read_text(encoding="utf-8").splitlines()
    assert lines and not lines[0].startswith("#")
    queries = [ln for ln in lines if ln.strip() and not ln.startswith("#")]
    expected = [re.fullmatch(r"# expected: (\S+) page (\d+)", ln) for ln in lines if ln.startswith("#")]
    assert len(queries) == len(expected) >= 5 and all(expected)
    for m in expected:
        assert m is not None
        name, page = m.group(1), int(m.group(2))
        assert name in msc.ALL_FILES
        assert page < msc.PDF_PAGES.get(name, 1)


def test_main_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert msc.main([str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert msc.COFFEE_PDF in out
    assert (tmp_path / "out" / msc.SCAN_PDF).is_file()
