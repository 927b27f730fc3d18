"""One ``mmrag index`` run over a folder of bad inputs (built here) beside a few good documents: the run
completes, the good documents are queryable, every bad file is exactly one failure row with a clear reason,
and no control character of a file name reaches the output raw.

Run without root's read capabilities (``setpriv``), as tests/test_sources.py does, so a mode-000 file is
really unreadable."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_bad_inputs import png_header_only

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
GOOD = {
    "good/rivers.pdf": "The Danube flows through ten countries before it reaches the Black Sea delta.",
    "good/volcano.pdf": "Magma chambers beneath the volcano feed eruptions of basaltic lava every decade.",
}
EVIL = "evil\nINFO forged line \x1b[31mred\x1b[0m.pdf"


def _pdf(path: Path, texts: list[str], size: tuple[float, float] | None = None, blank_pages: int = 0) -> bytes:
    import pymupdf

    with pymupdf.open() as pdf:
        for text in texts:
            pdf.new_page().insert_textbox(pymupdf.Rect(72, 72, 540, 400), text, fontsize=11)
        for _ in range(blank_pages):
            pdf.new_page(width=size[0], height=size[1]) if size else pdf.new_page()
        data = pdf.tobytes()
    path.write_bytes(data)
    return data


def _image(fmt: str, size: tuple[int, int] = (64, 64)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.effect_noise(size, 60).convert("RGB").save(buf, fmt)
    return buf.getvalue()


def _build(root: Path) -> tuple[Path, dict[str, str]]:
    """The corpus, and for each bad file (its uri) a word its failure reason must contain."""
    import pymupdf
    from PIL import Image

    corpus = root / "corpus"
    (corpus / "good").mkdir(parents=True)
    bad: dict[str, str] = {}
    good_pdf = b""
    for rel, text in GOOD.items():
        good_pdf = _pdf(corpus / rel, [text])
    Image.new("RGB", (96, 64), (30, 120, 200)).save(corpus / "good" / "sky.png")

    def put(name: str, data: bytes, reason: str) -> None:
        (corpus / name).write_bytes(data)
        bad[str(corpus / name)] = reason

    put("empty.pdf", b"", "empty")
    put("truncated.pdf", good_pdf[: len(good_pdf) // 2], "")
    put("not_a_pdf.pdf", b"hello, I am plain text\n" * 20, "")
    put("garbage.pdf", b"%PDF-1.7\n" + os.urandom(2000), "")
    put("zero_pages.pdf", b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]"
        b"/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n", "")
    with pymupdf.open() as pdf:
        pdf.new_page().insert_text((72, 72), "secret")
        put("encrypted.pdf", pdf.tobytes(encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="u", owner_pw="o"),
            "encrypted")
    huge = _pdf(root / "huge.pdf", [], size=(14400, 14400), blank_pages=1)
    put("huge_blank_page.pdf", huge, "no text or images")
    put("blank_2000_pages.pdf", _pdf(root / "blank.pdf", [], blank_pages=2000), "no text or images")
    frames = [Image.new("1", (32, 32), 1) for _ in range(500)]
    buf = io.BytesIO()
    frames[0].save(buf, "TIFF", save_all=True, append_images=frames[1:])
    put("blank_500_frames.tiff", buf.getvalue(), "no text or images")
    put("bomb.png", png_header_only(50_000, 50_000), "pixels")
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg"), ("TIFF", "tiff"), ("WEBP", "webp"), ("BMP", "bmp"),
                     ("GIF", "gif")):
        data = _image(fmt)
        put(f"truncated.{ext}", data[: len(data) // 2], "unsupported" if ext == "gif" else "decoded")
    put("fake.png", b"not a png at all", "")
    put("zero.png", b"", "empty")
    put("noise.jpg", b"\xff\xd8\xff\xe0" + os.urandom(3000), "decoded")
    put("report.docx", b"PK\x03\x04" + os.urandom(64), "unsupported")
    put("notes.xyz", b"what is this", "unsupported")
    put(EVIL, b"%PDF-1.4 broken", "")
    (corpus / "dangling.pdf").symlink_to(corpus / "nowhere.pdf")
    bad[str(corpus / "dangling.pdf")] = "link"
    (corpus / "loop_a.pdf").symlink_to(corpus / "loop_b.pdf")
    (corpus / "loop_b.pdf").symlink_to(corpus / "loop_a.pdf")
    bad[str(corpus / "loop_a.pdf")] = "loop"
    bad[str(corpus / "loop_b.pdf")] = "loop"
    (corpus / "folder_link.pdf").symlink_to(corpus / "good")
    bad[str(corpus / "folder_link.pdf")] = "folder"
    put("unreadable.pdf", good_pdf, "permission")
    os.chmod(corpus / "unreadable.pdf", 0)
    # not failures: hidden files are not listed, a duplicate is indexed once
    (corpus / ".hidden.pdf").write_bytes(b"ignored")
    (corpus / ".hidden_dir").mkdir()
    (corpus / ".hidden_dir" / "x.pdf").write_bytes(b"ignored")
    shutil.copy(corpus / "good" / "rivers.pdf", corpus / "rivers_copy.pdf")
    return corpus, bad


def _without_read_caps() -> list[str]:
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: a mode-000 file would be readable")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]


def test_one_run_over_bad_inputs(tmp_path: Path, prefect_server) -> None:
    corpus, bad = _build(tmp_path)
    assert len(bad) >= 25
    store = tmp_path / "store"
    env = {**os.environ, **prefect_server.env(), "MMRAG_STORE": str(store), "MMRAG_CLIP_MODEL": "off",
           "MMRAG_MAX_DOC_SECONDS": "60"}
    proc = subprocess.run([*_without_read_caps(), sys.executable, "-m", "flows.cli", "index", str(corpus)], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=600, start_new_session=True, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    assert "\x1b" not in output, "an ANSI escape from a file name reached the output"
    assert "INFO forged line" not in output.replace("\\nINFO forged line", "")  # only ever escaped
    assert "evil\\nINFO forged line \\x1b[31mred\\x1b[0m.pdf" in proc.stdout  # the failure list, escaped

    show = subprocess.run([sys.executable, "-m", "flows.cli", "snapshots", "show", "--json"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=True)
    manifest = json.loads(show.stdout)
    rows: dict[str, list[dict]] = {}
    for f in manifest["failures"]:
        rows.setdefault(f["source_uri"], []).append(f)
    missing = sorted(set(bad) - set(rows))
    assert not missing, f"bad files without a failure row: {missing}"
    for uri, want in bad.items():
        assert len(rows[uri]) == 1, (uri, rows[uri])
        reason = rows[uri][0]["reason"]
        assert reason and want.lower() in reason.lower(), (uri, reason)
    extra = sorted(set(rows) - set(bad))
    assert not extra, f"failure rows of good or ignored files: {extra}"
    assert manifest["counts"]["documents"] == 3  # two PDFs and the PNG; the copy is a duplicate
    assert not any("hidden" in f["source_uri"] for f in manifest["failures"])

    for rel, text in GOOD.items():
        query = subprocess.run([sys.executable, "-m", "flows.cli", "query", text.split(" before")[0], "--json"],
                               env=env, cwd=REPO, capture_output=True, text=True, timeout=300, check=True)
        hits = json.loads(query.stdout[query.stdout.index("{"):])["hits"]
        assert hits[0]["source_uri"] in (str(corpus / rel), str(corpus / "rivers_copy.pdf")), hits[:2]
