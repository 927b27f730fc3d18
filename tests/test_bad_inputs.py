"""Bad files never raise: each gives exactly one failure that says why, and no items."""
from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pymupdf
import pytest

from mmrag_core.ingest.extract.chunking import whitespace_token_counter
from mmrag_core.config import Settings
from tests.extraction import extract_as_run

SHA = "ef" * 32


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size but holds (almost) no pixels: costs nothing to build."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grey
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 8)) + chunk(b"IEND", b"")


def first_half(source: Path, target: Path) -> None:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])


def encrypted_pdf(source: Path, target: Path) -> None:
    pymupdf.open(source).save(target, encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="x", owner_pw="y")


# name -> (build the file from the data folder into a path, settings, stage, words in the reason)
CASES: dict[str, tuple[Callable[[Path, Path], object], dict[str, int], str, str]] = {
    "empty.pdf": (lambda d, p: p.write_bytes(b""), {}, "open", "empty file (0 bytes)"),
    "random.pdf": (lambda d, p: p.write_bytes(os.urandom(4096)), {}, "open", "is not a PDF"),
    "half.pdf": (
        lambda d, p: first_half(d / "pdfs/born_digital/tracemonkey_pldi09.pdf", p),
        {},
        "open",
        "PDF is damaged (pymupdf had to repair it); skipped",
    ),
    "half_of_one_page.pdf": (  # still opens with its one page: must not be half-indexed
        lambda d, p: first_half(d / "pdfs/born_digital/financial_statement_notes.pdf", p),
        {},
        "open",
        "PDF is damaged",
    ),
    "head.pdf": (
        lambda d, p: p.write_bytes((d / "pdfs/scanned/scan_huckfinn_ch2_p22.pdf").read_bytes()[:200]),
        {},
        "open",
        "PDF cannot be opened",
    ),
    "locked.pdf": (
        lambda d, p: encrypted_pdf(d / "pdfs/born_digital/financial_statement_notes.pdf", p),
        {},
        "open",
        "encrypted PDF: a password is needed",
    ),
    "report.docx": (
        lambda d, p: p.write_bytes(b"PK\x03\x04" + os.urandom(64)),  # a zip, as .docx files are
        {},
        "open",
        "unsupported file type '.docx'",
    ),
    "notes.txt": (lambda d, p: p.write_text("just text"), {}, "open", "unsupported file type '.txt'"),
    "huge.png": (
        lambda d, p: p.write_bytes(png_header_only(20000, 20000)),
        {},
        "decode",
        "image is 20000 x 20000 = 400,000,000 pixels, over the limit of 64,000,000 (max_image_pixels)",
    ),
    "big.png": (  # over our limit, under Pillow's own bomb threshold (twice the limit)
        lambda d, p: p.write_bytes(png_header_only(3000, 2000)),
        {"max_image_pixels": 5_000_000},
        "decode",
        "image is 3000 x 2000 = 6,000,000 pixels, over the limit of 5,000,000 (max_image_pixels)",
    ),
    "cut.jpg": (
        lambda d, p: first_half(d / "images/coral/hot_dog.jpg", p),
        {},
        "decode",
        "image could not be decoded",
    ),
    "noise.jpg": (
        lambda d, p: p.write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(3000)),
        {},
        "decode",
        "image could not be decoded",
    ),
    "fake.png": (lambda d, p: p.write_text("not a png"), {}, "decode", "not a supported image"),
    "too_big.pdf": (
        lambda d, p: p.write_bytes((d / "pdfs/born_digital/financial_statement_notes.pdf").read_bytes()),
        {"max_file_bytes": 1000},
        "open",
        "over the limit of 1000 (max_file_bytes)",
    ),
    "long.pdf": (
        lambda d, p: p.write_bytes((d / "pdfs/born_digital/cython_reference_guide.pdf").read_bytes()),
        {"max_pdf_pages": 5},
        "open",
        "PDF has 11 pages, over the limit of 5 (max_pdf_pages)",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_file_gives_one_clear_failure(name: str, test_data: Path, tmp_path: Path) -> None:
    build, settings, stage, reason = CASES[name]
    path = tmp_path / name
    build(test_data, path)

    result = extract_as_run(path, f"s3://bucket/{name}", SHA, Settings(**settings), whitespace_token_counter)

    assert result.items == []
    assert len(result.failures) == 1
    failure = result.failures[0]
    assert (failure.source_uri, failure.stage, failure.page) == (f"s3://bucket/{name}", stage, None)
    assert failure.doc_sha256 == SHA
    assert reason in failure.reason
    assert result.stats["seconds_extract"] >= 0


def test_missing_file_is_a_failure(tmp_path: Path) -> None:
    result = extract_as_run(tmp_path / "gone.pdf", "gone.pdf", SHA, Settings(), whitespace_token_counter)
    assert [(f.stage, f.reason.startswith("file cannot be read")) for f in result.failures] == [("open", True)]


def test_unexpected_error_is_reported_not_raised(
    test_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mmrag_core.ingest.extract as extract_package

    def explode(*args: Any) -> None:
        raise KeyError("a library broke in a new way")

    monkeypatch.setattr(extract_package, "extract_pdf", explode)
    path = test_data / "pdfs" / "born_digital" / "financial_statement_notes.pdf"
    result = extract_as_run(path, "x.pdf", SHA, Settings(), whitespace_token_counter)
    assert [(f.stage, f.reason) for f in result.failures] == [
        ("extract", "unexpected error: KeyError: 'a library broke in a new way'")
    ]
